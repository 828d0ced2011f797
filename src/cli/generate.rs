//! `handoff generate` (hidden): the man pages and shell completions, for packagers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

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

/// Writes what `cmd` asks for from `command`, the whole command line's clap definition.
pub fn run(cmd: &GenerateCommand, mut command: clap::Command) -> ExitCode {
    match cmd {
        GenerateCommand::Man { out } => {
            let result =
                std::fs::create_dir_all(out).and_then(|()| clap_mangen::generate_to(command, out));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("generate man: {}: {e}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(*shell, &mut command, "handoff", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
