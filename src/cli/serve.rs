//! `handoff serve`: start the async runtime and the daemon, with its log on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::policy::LoadError;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Do not watch the policy files; reload only on SIGHUP (for file systems without inotify,
    /// or when a deployment tool should decide when a change goes live)
    #[arg(long)]
    pub no_watch: bool,
}

/// `--log-format`, a global option that only `serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Runs the daemon on the policy at `path` until it is told to stop.
pub fn run(path: PathBuf, format: LogFormat, args: &ServeArgs) -> ExitCode {
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
    // tantivy logs every index commit at info (and its whole schema at debug): once a second
    // under load. The indexer logs what an operator needs (failures, recovery) itself.
    let filter = match (std::env::var("HANDOFF_LOG"), "tantivy=warn".parse()) {
        (Ok(v), _) if v.contains("tantivy") => filter,
        (_, Ok(quiet)) => filter.add_directive(quiet),
        (_, Err(_)) => filter,
    };
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
