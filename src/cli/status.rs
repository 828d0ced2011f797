//! `handoff status`: the policy generation and the journal's size and last record.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::common::report_load_error;
use crate::policy;
use crate::runtime::status::{self, Status};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `handoff status`: from the running daemon when one answers on the policy's metrics address,
/// else from disk.
pub fn run(config: &Path, args: &StatusArgs) -> ExitCode {
    let policy = match policy::load(config) {
        Ok(p) => p,
        Err(e) => return report_load_error(&e),
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
    match args.json {
        true => println!("{}", s.to_json()),
        false => print!("{}", s.render()),
    }
    ExitCode::SUCCESS
}
