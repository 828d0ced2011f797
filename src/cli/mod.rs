//! The command line: the top-level clap definition and the dispatch to the commands. Each
//! command's file owns its arguments and its handler, which returns an exit code; what several
//! commands share is in `common`, which imports none of them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod admin;
pub mod archive;
mod archive_index;
pub mod check;
mod common;
pub mod console;
pub mod dkim;
pub mod explain;
pub mod generate;
pub mod import;
pub mod progress;
pub mod restore;
pub mod serve;
pub mod status;

use crate::policy::State;

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
    #[arg(long, global = true, value_enum, default_value_t = serve::LogFormat::Human)]
    pub log_format: serve::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the filter: load the policy, listen, reload on change or SIGHUP
    Serve(serve::ServeArgs),
    /// Validate the policy and print a summary, or every error with its line (exit 1)
    Check(check::CheckArgs),
    /// Show what happens to mail for an address, step by step
    Explain(explain::ExplainArgs),
    /// Search, export, verify and prune the archive journal; read its audit trail
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    /// Offboard an account: forward its mail to a successor (edits the policy file)
    #[command(after_help = admin::DEPART_EXAMPLES)]
    Depart(admin::DepartArgs),
    /// Refuse mail for an account with 550 5.2.1 (edits the policy file)
    Disable(admin::AddressArg),
    /// Hold mail for an account back with 450 4.2.1; senders retry (edits the policy file)
    Freeze(admin::AddressArg),
    /// Answer 550 5.1.1 user unknown for an account (edits the policy file)
    Delete(admin::AddressArg),
    /// Make an account active again, dropping its departure settings (edits the policy file)
    Restore(admin::AddressArg),
    /// Apply departures, state changes and aliases from a CSV file, all or nothing
    #[command(after_help = admin::IMPORT_HELP)]
    Import(admin::ImportArgs),
    /// Show the policy generation and the journal's size and last record (from the running
    /// daemon, else from disk)
    Status(status::StatusArgs),
    /// The archive console's users: add, passwd, remove, list
    #[command(subcommand)]
    Console(console::ConsoleCommand),
    /// DKIM keys for what handoff sends (auto-replies)
    #[command(subcommand)]
    Dkim(dkim::DkimCommand),
    /// Write the man page or shell completions (for packagers)
    #[command(subcommand, hide = true)]
    Generate(generate::GenerateCommand),
}

/// Parses the command line, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = || resolve_config(cli.config.as_deref());
    match cli.command {
        Command::Check(ref args) => check::run(resolve_config(
            args.file.as_deref().or(cli.config.as_deref()),
        )),
        Command::Explain(ref args) => explain::run(config(), args),
        Command::Archive(ref cmd) => archive::run(config(), cmd),
        Command::Serve(ref args) => serve::run(config(), cli.log_format, args),
        Command::Depart(ref args) => admin::depart(&config(), args),
        Command::Disable(ref a) => admin::set_state(&config(), a, State::Disabled),
        Command::Freeze(ref a) => admin::set_state(&config(), a, State::Frozen),
        Command::Delete(ref a) => admin::set_state(&config(), a, State::Deleted),
        Command::Restore(ref a) => admin::set_state(&config(), a, State::Active),
        Command::Import(ref args) => admin::import(&config(), args),
        Command::Status(ref args) => status::run(&config(), args),
        Command::Generate(ref cmd) => generate::run(cmd, command()),
        Command::Dkim(ref cmd) => dkim::run(cmd),
        Command::Console(ref cmd) => console::run(config(), cmd),
    }
}

/// The clap definition, for the man page and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
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
