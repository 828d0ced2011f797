//! `handoff check`: validate the policy and print a summary, or every error with its line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::common::report_load_error;
use crate::policy;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy file to check (same as --config)
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Checks the policy at `path` ([`CheckArgs::file`], else `--config`, else a default).
pub fn run(path: PathBuf) -> ExitCode {
    match policy::load(&path) {
        Ok(p) => {
            println!("{}: ok: {}", path.display(), p.summary());
            let departments = policy::departments::lines(&p.departments());
            if !departments.is_empty() {
                println!("departments (accounts, sub-departments included):");
                for line in departments {
                    // Department names are the admin's text: escaped like every name shown.
                    println!("  {}", crate::runtime::escape::escape(&line));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => report_load_error(&e),
    }
}
