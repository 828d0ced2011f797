//! The commands that edit the policy file (`depart`, `disable`, `freeze`, `delete`, `restore`,
//! `import`): arguments in, [`crate::admin`] edits applied, a line per change printed, and an
//! exit code out (0 done, 1 refused or failed, 2 bad arguments).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::address::Address;
use crate::admin::{self, AccountChange, AdminError, Change, Edit};
use crate::policy::State;

pub(super) const DEPART_EXAMPLES: &str = "\
Examples:
  handoff depart alice@corp.example --successor bob@corp.example
  handoff depart alice@corp.example --successor bob@corp.example --no-copy --autoreply departed
  handoff depart alice@corp.example --successor bob@corp.example --until 2027-05-01 --then deleted

The edit is validated with the whole policy (includes too) before the file is replaced; an
invalid result leaves the file untouched and exits 1. An account in an included file is edited
in that file; a new one is added to the main policy file. The running daemon reloads the file.";

#[derive(Debug, Args)]
pub struct DepartArgs {
    /// The departing account's address
    #[arg(value_name = "ADDRESS")]
    pub address: String,
    /// Who takes over: mail is forwarded there unless --forward says otherwise
    #[arg(long, value_name = "ADDRESS")]
    pub successor: String,
    /// Forward to these addresses instead of the successor
    #[arg(long, value_name = "ADDRESS", num_args = 1..)]
    pub forward: Vec<String>,
    /// Keep a copy in the departed mailbox (the default)
    #[arg(long, conflicts_with = "no_copy")]
    pub keep_copy: bool,
    /// Forward only; the departed mailbox gets nothing
    #[arg(long)]
    pub no_copy: bool,
    /// Auto-reply to senders with this template (a [templates.NAME] of the policy)
    #[arg(long, value_name = "TEMPLATE")]
    pub autoreply: Option<String>,
    /// From this date on (YYYY-MM-DD), behave as --then
    #[arg(long, value_name = "DATE", requires = "then")]
    pub until: Option<jiff::civil::Date>,
    /// The state from --until on: disabled, frozen, deleted, …
    #[arg(long, value_name = "STATE", requires = "until", value_parser = parse_state)]
    pub then: Option<State>,
}

fn parse_state(s: &str) -> Result<State, String> {
    State::parse(s).ok_or_else(|| {
        let known: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
        format!("expected one of: {}", known.join(", "))
    })
}

/// `handoff depart`.
pub fn depart(config: &Path, args: &DepartArgs) -> ExitCode {
    let (Some(address), Some(successor)) = (
        address_arg("ADDRESS", &args.address),
        address_arg("--successor", &args.successor),
    ) else {
        return ExitCode::from(2);
    };
    let mut forward = Vec::new();
    for f in &args.forward {
        match address_arg("--forward", f) {
            Some(a) => forward.push(a),
            None => return ExitCode::from(2),
        }
    }
    let keep_copy = match (args.keep_copy, args.no_copy) {
        (_, true) => Some(false),
        (true, _) => Some(true),
        _ => None,
    };
    let change = AccountChange {
        state: State::Departed,
        successor: Some(successor),
        forward,
        keep_copy,
        autoreply: args.autoreply.clone(),
        until: args.until.zip(args.then),
    };
    run(
        config,
        &[Edit {
            address,
            change: Change::Account(change),
        }],
    )
}

#[derive(Debug, Args)]
pub struct AddressArg {
    /// The account's address
    #[arg(value_name = "ADDRESS")]
    pub address: String,
}

/// `handoff disable|freeze|delete|restore`.
pub fn set_state(config: &Path, arg: &AddressArg, state: State) -> ExitCode {
    let Some(address) = address_arg("ADDRESS", &arg.address) else {
        return ExitCode::from(2);
    };
    run(
        config,
        &[Edit {
            address,
            change: Change::Account(AccountChange::state(state)),
        }],
    )
}

pub(super) const IMPORT_HELP: &str = "\
CSV columns (header row first, any order; address and state required):
  address, state, successor, forward, keep_copy, autoreply, until, then
state is active, departed, disabled, frozen, deleted, or alias (an alias's members go in
forward). forward holds addresses separated by spaces or semicolons. Every row is checked and the
whole edited policy validated before anything is written; errors name the CSV line.";

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
}

/// `handoff import --csv FILE`.
pub fn import(config: &Path, args: &ImportArgs) -> ExitCode {
    let csv = args.csv.as_path();
    let text = match std::fs::read_to_string(csv) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("import: cannot read {}: {e}", csv.display());
            return ExitCode::FAILURE;
        }
    };
    let name = csv.display().to_string();
    let rows = match admin::csv::parse(&name, &text) {
        Ok(rows) => rows,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "import: {} errors in {name}; nothing was written",
                errors.len()
            );
            return ExitCode::FAILURE;
        }
    };
    let edits: Vec<Edit> = rows.iter().map(|r| r.edit.clone()).collect();
    match admin::plan(config, &edits) {
        Ok(changed) => {
            if let Err(e) = admin::commit(&changed, config) {
                eprintln!("import: {e}");
                return ExitCode::FAILURE;
            }
            for c in &changed {
                println!("{}: edited", c.path.display());
            }
            println!("import: {} rows applied from {name}", rows.len());
            ExitCode::SUCCESS
        }
        Err(AdminError::Invalid(_) | AdminError::Edit { .. }) => {
            // Find the rows to blame: add them one at a time to the rows that work so far. Only
            // on failure, so the common case validates once.
            let mut good: Vec<Edit> = Vec::new();
            let mut errors = 0;
            for row in &rows {
                good.push(row.edit.clone());
                if let Err(e) = admin::plan(config, &good) {
                    good.pop();
                    errors += 1;
                    let why = match e {
                        AdminError::Invalid(d) => {
                            d.iter().map(|d| d.message.clone()).collect::<Vec<_>>()
                        }
                        other => vec![other.to_string()],
                    };
                    for w in why {
                        eprintln!("{name}:{}: {}: {w}", row.line, row.edit.address);
                    }
                }
            }
            if errors == 0 {
                // Each row is fine on its own but not all together.
                if let Err(e) = admin::plan(config, &edits) {
                    eprintln!("import: {e}");
                }
            }
            eprintln!("import: the rows above would make the policy invalid; nothing was written");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("import: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Path, edits: &[Edit]) -> ExitCode {
    let result = admin::plan(config, edits).and_then(|changed| {
        admin::commit(&changed, config)?;
        Ok(changed)
    });
    match result {
        Ok(changed) if changed.is_empty() => {
            println!("{}: already so; nothing changed", config.display());
            ExitCode::SUCCESS
        }
        Ok(changed) => {
            for c in &changed {
                for e in edits {
                    println!("{}: {}", c.path.display(), describe(e));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn describe(e: &Edit) -> String {
    match &e.change {
        Change::Alias(m) => format!("{} is an alias of {} addresses", e.address, m.len()),
        Change::Account(c) => {
            let mut s = format!("{} is now {}", e.address, c.state);
            if let Some(succ) = &c.successor {
                s.push_str(&format!(" (successor {succ})"));
            }
            if let Some((date, then)) = c.until {
                s.push_str(&format!(", {then} from {date}"));
            }
            s
        }
    }
}

fn address_arg(what: &str, s: &str) -> Option<Address> {
    match Address::parse_strict(s) {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!("{what}: {e}");
            None
        }
    }
}
