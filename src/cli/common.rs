//! What several commands share. A leaf: it imports no command's file.

use std::process::ExitCode;

use crate::policy::LoadError;

/// Prints a policy that did not load (every error with its line) and fails.
pub(super) fn report_load_error(e: &LoadError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::FAILURE
}
