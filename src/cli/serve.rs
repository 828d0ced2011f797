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
    fix_mmap_threshold();
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

/// Blocks from this size up are mapped on their own and returned to the kernel when freed.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Keeps glibc's malloc from holding on to the index writer's freed memory. glibc maps large
/// blocks on their own, but each time such a block is freed it raises that threshold to the
/// block's size (up to 32 MiB); from then on the 1 MiB pages of tantivy's indexing heap and the
/// buffers of its merges come from per-thread arenas, which keep them when they are freed, so
/// each of the indexer's and tantivy's threads held its own high-water mark. Fixing the
/// threshold (mallopt(3): setting it turns the adjustment off) took the daemon's peak RSS in
/// `bench/run` from 52.9-57.0 MiB to 36.0-43.6 MiB, and under sustained load from 59-68 MiB to
/// 46.9-56.5 MiB (the README's Performance section has the runs). An operator's own setting in the environment (`MALLOC_MMAP_THRESHOLD_`, or
/// `glibc.malloc.mmap_threshold` in `GLIBC_TUNABLES`) is left alone.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").ok();
        let own = std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some();
        if operator_set_mmap_threshold(own, tunables.as_deref()) {
            return;
        }
        // SAFETY: mallopt only sets a parameter of glibc's allocator, under the allocator's own
        // lock; it is called before the runtime starts its threads, with a valid parameter.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 1 {
            tracing::warn!("cannot set malloc's mmap threshold; memory use may be higher");
        }
    }
}

/// Whether the environment already sets glibc's mmap threshold.
fn operator_set_mmap_threshold(malloc_var: bool, glibc_tunables: Option<&str>) -> bool {
    malloc_var
        || glibc_tunables.is_some_and(|t| {
            t.split(':')
                .any(|kv| kv.starts_with("glibc.malloc.mmap_threshold="))
        })
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

#[cfg(test)]
mod tests {
    use super::operator_set_mmap_threshold;

    #[test]
    fn an_operators_mmap_threshold_is_left_alone() {
        assert!(!operator_set_mmap_threshold(false, None));
        assert!(operator_set_mmap_threshold(true, None));
        assert!(operator_set_mmap_threshold(
            false,
            Some("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=262144")
        ));
        assert!(!operator_set_mmap_threshold(
            false,
            Some("glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=262144")
        ));
    }
}
