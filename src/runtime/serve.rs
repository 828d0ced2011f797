//! `handoff serve`: load the policy, start the listeners, reload on change or SIGHUP, stop
//! cleanly on SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::reload::{self, PolicyWatcher, Trigger};
use super::store::PolicyStore;
use super::{http, metrics};
use crate::policy;

/// How `serve` runs, beyond what the policy file says.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch the policy files for changes (SIGHUP always works).
    pub watch: bool,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: &Path, options: Options) -> anyhow::Result<()> {
    // Installed here, not in the task: a signal that came before the task first ran would get
    // its default action.
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal(term, int).await;
        let _ = stop_tx.send(true);
    });
    run_until(config, options, stop_rx).await
}

/// Runs the daemon until `stop` turns true.
pub async fn run_until(
    config: &Path,
    options: Options,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Before the first load, which takes a while for a large policy: the default action of
    // SIGHUP is to terminate, so a reload request during start-up used to kill the daemon. Now
    // it waits in the stream and becomes a reload once serving.
    let hup = signal(SignalKind::hangup());
    let config: PathBuf =
        std::path::absolute(config).with_context(|| format!("bad path {}", config.display()))?;
    let policy = policy::load(&config)?;
    let handle = metrics::install().context("cannot install the metrics recorder")?;
    let store = Arc::new(PolicyStore::new(policy));
    let snap = store.snapshot();
    metrics::policy_in_force(&snap.policy, snap.generation, snap.loaded_at);
    tracing::info!(config = %config.display(), generation = snap.generation, summary = %snap.policy.summary(), "policy loaded");
    let settings = snap.policy.settings.clone();

    // Watch before the endpoints come up: once /healthz answers, an edit is not missed. (A watch
    // started by the reload task could begin after the first edits, and those were lost.)
    let (tx, rx) = mpsc::channel(1);
    let watcher = match options.watch {
        true => PolicyWatcher::new(&config, tx.clone()).map(|mut w| {
            w.follow(&snap.policy);
            w
        }),
        false => None,
    };
    drop(snap);

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = settings.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!(address = %listener.local_addr()?, "metrics endpoint listening");
        let store = store.clone();
        let ready: http::ReadyCheck = Arc::new(move || {
            let _policy = store.snapshot();
            Ok(())
        });
        tasks.spawn(http::serve(listener, handle, ready, stopped(stop.clone())));
    }

    tasks.spawn(reload::run(
        config.clone(),
        store.clone(),
        watcher,
        rx,
        stopped(stop.clone()),
    ));
    tasks.spawn(forward_sighup(hup, tx, stopped(stop.clone())));

    stopped(stop).await;
    tracing::info!("shutting down");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Resolves when the stop flag turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn forward_sighup(
    hup: std::io::Result<Signal>,
    tx: mpsc::Sender<Trigger>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut hup = match hup {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP ({e}); reload by editing the file");
            return;
        }
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                tracing::info!("SIGHUP: reloading the policy");
                // A reload already pending will read the same files.
                let _ = tx.try_send(Trigger::Signal);
            }
        }
    }
}

async fn wait_for_stop_signal(term: std::io::Result<Signal>, int: std::io::Result<Signal>) {
    let (Ok(mut term), Ok(mut int)) = (term, int) else {
        tracing::error!("cannot install SIGTERM/SIGINT handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
