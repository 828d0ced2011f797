//! The command line: clap definitions, and one function per command that returns an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::address::Address;
use crate::policy::{self, LoadError};

/// Where handoff looks for its policy when no `--config` is given, in order.
pub const DEFAULT_CONFIGS: [&str; 2] = ["./handoff.toml", "/etc/handoff/handoff.toml"];

#[derive(Debug, Parser)]
#[command(
    name = "handoff",
    version,
    about = "A mail filter for Postfix that hands off departed users' mail",
    long_about = "handoff sits in Postfix's delivery path (as a milter or a content filter) and \
                  applies one TOML policy: aliases, forwards for departed users, out-of-office \
                  replies, and refusals for disabled, frozen and deleted accounts."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Policy file [default: ./handoff.toml, then /etc/handoff/handoff.toml]
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "HANDOFF_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// How `serve` writes its log to stderr: text for people, or one JSON object per line
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the filter: load the policy, listen, reload on change or SIGHUP
    Serve(ServeArgs),
    /// Validate the policy and print a summary, or every error with its line (exit 1)
    Check(CheckArgs),
    /// Show what happens to mail for an address, step by step
    Explain(ExplainArgs),
    /// Search, export, verify and prune the archive journal
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Offboard an account: forward its mail to a successor (edits the policy file)
    #[command(after_help = DEPART_EXAMPLES)]
    Depart(DepartArgs),
    /// Refuse mail for an account with 550 5.2.1 (edits the policy file)
    Disable(AddressArg),
    /// Hold mail for an account back with 450 4.2.1; senders retry (edits the policy file)
    Freeze(AddressArg),
    /// Answer 550 5.1.1 user unknown for an account (edits the policy file)
    Delete(AddressArg),
    /// Make an account active again, dropping its departure settings (edits the policy file)
    Restore(AddressArg),
    /// Apply departures, state changes and aliases from a CSV file, all or nothing
    #[command(after_help = IMPORT_HELP)]
    Import(ImportArgs),
    /// Show the policy generation and the journal's size and last record (from the running
    /// daemon, else from disk)
    Status(StatusArgs),
    /// Write the man page or shell completions (for packagers)
    #[command(subcommand, hide = true)]
    Generate(GenerateCommand),
}

const DEPART_EXAMPLES: &str = "\
Examples:
  handoff depart alice@corp.example --successor bob@corp.example
  handoff depart alice@corp.example --successor bob@corp.example --no-copy --autoreply departed
  handoff depart alice@corp.example --successor bob@corp.example --until 2027-05-01 --then deleted

The edit is validated with the whole policy (includes too) before the file is replaced; an
invalid result leaves the file untouched and exits 1. An account in an included file is edited
in that file; a new one is added to the main policy file. The running daemon reloads the file.";

const IMPORT_HELP: &str = "\
CSV columns (header row first, any order; address and state required):
  address, state, successor, forward, keep_copy, autoreply, until, then
state is active, departed, disabled, frozen, deleted, or alias (an alias's members go in
forward). forward holds addresses separated by spaces or semicolons. Every row is checked and the
whole edited policy validated before anything is written; errors name the CSV line.";

#[derive(Debug, Args)]
pub struct AddressArg {
    /// The account's address
    #[arg(value_name = "ADDRESS")]
    pub address: String,
}

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
    pub then: Option<crate::policy::State>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write handoff.1 and one page per subcommand to DIR
    Man {
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Print the completion script for SHELL
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn parse_state(s: &str) -> Result<crate::policy::State, String> {
    crate::policy::State::parse(s).ok_or_else(|| {
        let known: Vec<&str> = crate::policy::State::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        format!("expected one of: {}", known.join(", "))
    })
}

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Walk the whole hash chain; name the first bad record (exit 1) or print the head hash
    Verify(JournalArg),
    /// List matching messages (every search is recorded in the journal's audit trail)
    Search(SearchArgs),
    /// Write messages byte for byte as ID.eml files (recorded in the audit trail)
    Export(ExportArgs),
    /// Remove sealed segments older than [archive] retention_days, except legal holds
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct JournalArg {
    /// Journal directory [default: [storage] journal of the policy]
    #[arg(long, value_name = "DIR")]
    pub journal: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    /// Mail of this policy account (as sender, recipient or forward target)
    #[arg(long, value_name = "ADDRESS")]
    pub account: Option<String>,
    /// Envelope sender or From: address
    #[arg(long, value_name = "ADDRESS")]
    pub from: Option<String>,
    /// Recipient, before or after handoff's rewrites
    #[arg(long, value_name = "ADDRESS")]
    pub to: Option<String>,
    /// On or after this date (YYYY-MM-DD, local time)
    #[arg(long, value_name = "DATE")]
    pub since: Option<jiff::civil::Date>,
    /// On or before this date
    #[arg(long, value_name = "DATE")]
    pub until: Option<jiff::civil::Date>,
    /// Words that must all appear (case-insensitive)
    #[arg(long, value_name = "WORDS")]
    pub text: Option<String>,
    /// Where --text looks: subject,body,attachment [default: all three]
    #[arg(long = "in", value_name = "PARTS")]
    pub parts: Option<crate::journal::search::Parts>,
    /// Mail of accounts in this department
    #[arg(long, value_name = "NAME")]
    pub department: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Also export every hit to DIR
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    /// Record ids, as search prints them
    #[arg(long = "id", value_name = "ID", required = true, num_args = 1..)]
    pub ids: Vec<crate::journal::RecordId>,
    /// Directory to write ID.eml files to
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Do not watch the policy files; reload only on SIGHUP (for file systems without inotify,
    /// or when a deployment tool should decide when a change goes live)
    #[arg(long)]
    pub no_watch: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy file to check (same as --config)
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Recipient address
    pub address: String,
    /// Envelope sender (also checks whether it may send)
    #[arg(long, value_name = "SENDER")]
    pub from: Option<String>,
    /// Decide as on this date (YYYY-MM-DD) [default: today]
    #[arg(long, value_name = "DATE")]
    pub at: Option<jiff::civil::Date>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Parses the command line, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(ref args) => check(resolve_config(
            args.file.as_deref().or(cli.config.as_deref()),
        )),
        Command::Explain(ref args) => explain(resolve_config(cli.config.as_deref()), args),
        Command::Archive(ref cmd) => {
            crate::archive_cli::run(resolve_config(cli.config.as_deref()), cmd)
        }
        Command::Serve(ref args) => {
            serve(resolve_config(cli.config.as_deref()), cli.log_format, args)
        }
        Command::Depart(ref args) => {
            crate::admin_cli::depart(&resolve_config(cli.config.as_deref()), args)
        }
        Command::Disable(ref a) => crate::admin_cli::set_state(
            &resolve_config(cli.config.as_deref()),
            &a.address,
            crate::policy::State::Disabled,
        ),
        Command::Freeze(ref a) => crate::admin_cli::set_state(
            &resolve_config(cli.config.as_deref()),
            &a.address,
            crate::policy::State::Frozen,
        ),
        Command::Delete(ref a) => crate::admin_cli::set_state(
            &resolve_config(cli.config.as_deref()),
            &a.address,
            crate::policy::State::Deleted,
        ),
        Command::Restore(ref a) => crate::admin_cli::set_state(
            &resolve_config(cli.config.as_deref()),
            &a.address,
            crate::policy::State::Active,
        ),
        Command::Import(ref args) => {
            crate::admin_cli::import(&resolve_config(cli.config.as_deref()), &args.csv)
        }
        Command::Status(ref args) => {
            crate::admin_cli::status(&resolve_config(cli.config.as_deref()), args.json)
        }
        Command::Generate(ref cmd) => generate(cmd),
    }
}

/// The clap definition, for the man page and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn generate(cmd: &GenerateCommand) -> ExitCode {
    match cmd {
        GenerateCommand::Man { out } => {
            let result = std::fs::create_dir_all(out)
                .and_then(|()| clap_mangen::generate_to(command(), out));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("generate man: {}: {e}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(*shell, &mut command(), "handoff", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// The policy path to use: the one given, else the first default that exists, else the first
/// default (so the error names it).
fn resolve_config(given: Option<&Path>) -> PathBuf {
    if let Some(p) = given {
        return p.to_path_buf();
    }
    DEFAULT_CONFIGS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIGS[0]))
}

fn check(path: PathBuf) -> ExitCode {
    match policy::load(&path) {
        Ok(p) => {
            println!("{}: ok: {}", path.display(), p.summary());
            ExitCode::SUCCESS
        }
        Err(e) => report_load_error(&e),
    }
}

pub(crate) fn report_load_error(e: &LoadError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::FAILURE
}

fn explain(path: PathBuf, args: &ExplainArgs) -> ExitCode {
    let policy = match policy::load(&path) {
        Ok(p) => p,
        Err(e) => return report_load_error(&e),
    };
    let Some(address) = Address::from_envelope(&args.address) else {
        eprintln!("explain: `{}` is not an address", args.address);
        return ExitCode::from(2);
    };
    let date = args.at.unwrap_or_else(crate::runtime::today);
    let ex = crate::explain::explain(&policy, &address, args.from.as_deref(), date);
    if args.json {
        match serde_json::to_string_pretty(&ex) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("explain: cannot encode JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", ex.render(&policy));
    }
    ExitCode::SUCCESS
}

fn serve(path: PathBuf, format: LogFormat, args: &ServeArgs) -> ExitCode {
    init_logging(format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // One worker thread unless TOKIO_WORKER_THREADS says otherwise. handoff's own work per
    // message is tens of microseconds and the rest is waiting for Postfix, so one thread keeps up
    // with any Postfix on the same host; with one per core, every wake-up of a worker also woke
    // another to look for work it rarely found (a futex and two context switches). Measured
    // through Postfix on 2 vCPUs: 15-25 % less CPU per message, as fast or faster. Slow work
    // (policy reloads, the journal's writes and fsyncs) runs on threads of its own.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = crate::runtime::serve::Options {
        watch: !args.no_watch,
    };
    match runtime.block_on(crate::runtime::serve::run(&path, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<LoadError>() {
                Some(LoadError::Invalid(d)) => {
                    for line in d.iter() {
                        tracing::error!("{line}");
                    }
                    tracing::error!(
                        "{}: the policy is invalid ({} errors); not starting",
                        path.display(),
                        d.len()
                    );
                }
                _ => tracing::error!("{e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HANDOFF_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: under systemd, stderr goes to the journal, which would keep the
    // escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
