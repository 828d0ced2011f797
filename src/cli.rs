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
    /// Log format
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
