//! `handoff explain`: what happens to mail for an address, step by step.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::common::report_load_error;
use crate::address::Address;
use crate::policy;

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

pub fn run(path: PathBuf, args: &ExplainArgs) -> ExitCode {
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
