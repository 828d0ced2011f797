//! The admin commands' edge: arguments in, [`crate::admin`] edits applied, a line per change
//! printed, and an exit code out (0 done, 1 refused or failed, 2 bad arguments).

use std::path::Path;
use std::process::ExitCode;

use crate::address::Address;
use crate::admin::{self, AccountChange, AdminError, Change, Edit};
use crate::cli::DepartArgs;
use crate::policy::{self, State};
use crate::runtime::status::{self, Status};

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

/// `handoff disable|freeze|delete|restore`.
pub fn set_state(config: &Path, address: &str, state: State) -> ExitCode {
    let Some(address) = address_arg("ADDRESS", address) else {
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

/// `handoff import --csv FILE`.
pub fn import(config: &Path, csv: &Path) -> ExitCode {
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

/// `handoff status`: from the running daemon when one answers on the policy's metrics address,
/// else from disk.
pub fn status(config: &Path, json: bool) -> ExitCode {
    let policy = match policy::load(config) {
        Ok(p) => p,
        Err(e) => return crate::cli::report_load_error(&e),
    };
    let from_daemon = match policy.settings.metrics {
        Some(addr) => match status::fetch(addr) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("status: {e}; showing what is on disk");
                None
            }
        },
        None => None,
    };
    let s = from_daemon.unwrap_or_else(|| Status::from_disk(config, &policy));
    match json {
        true => println!("{}", s.to_json()),
        false => print!("{}", s.render()),
    }
    ExitCode::SUCCESS
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
