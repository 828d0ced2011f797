//! `handoff serve`: load the policy, start the listeners, reload on change or SIGHUP, stop
//! cleanly on SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::reload::{self, PolicyWatcher, Trigger};
use super::store::PolicyStore;
use super::{http, notify, status};
use crate::autoreply::{self, AutoReplier, Suppression};
use crate::engine::{Decision, Rule};
use crate::journal::Journal;
use crate::lmtp;
use crate::metrics;
use crate::milter;
use crate::milter::server::{Limits, Services};
use crate::policy;
use crate::runtime::listen::{self, Listener};

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
    let handle = metrics::install(&metrics::Labels {
        decisions: &Decision::ALL.map(Decision::as_str),
        rules: &Rule::ALL.map(Rule::as_str),
        suppressions: &Suppression::ALL.map(Suppression::as_str),
    })
    .context("cannot install the metrics recorder")?;
    let loop_key = super::secret::load(&policy.settings.state_dir)
        .context("cannot read the loop-marker secret")?;
    let store = Arc::new(PolicyStore::with_loop_key(policy, loop_key));
    let snap = store.snapshot();
    reload::policy_in_force(&snap.policy, snap.generation, snap.loaded_at);
    tracing::info!(config = %config.display(), generation = snap.generation, summary = %snap.policy.summary(), "policy loaded");
    let settings = snap.policy.settings.clone();
    if !settings.autoreply.require_authenticated && !snap.policy.templates.is_empty() {
        tracing::warn!(
            "auto-replies go to any envelope sender, forged ones too: set [autoreply] authserv_id \
             to your MTA's authserv-id so that only authenticated senders are answered"
        );
    }

    // Watch before the endpoints come up: once /healthz answers, an edit is not missed. (A watch
    // started by the reload task could begin after the first edits, and those were lost.)
    let (tx, rx) = mpsc::channel(1);
    let (hup_tx, hup_rx) = watch::channel(0u64);
    let watcher = match options.watch {
        true => PolicyWatcher::new(&config, tx.clone()).map(|mut w| {
            w.follow(&snap.policy);
            w
        }),
        false => None,
    };
    drop(snap);

    let journal = match settings.archive_enabled {
        true => {
            let dir = settings.journal_dir.clone();
            let bytes = settings.segment_bytes;
            let (journal, recovery) =
                tokio::task::spawn_blocking(move || Journal::open(&dir, bytes))
                    .await
                    .context("journal open task failed")?
                    .with_context(|| {
                        format!(
                            "cannot open the archive journal in {}",
                            settings.journal_dir.display()
                        )
                    })?;
            tracing::info!(dir = %settings.journal_dir.display(), segments = recovery.segments, cut_bytes = recovery.cut_bytes, "archive journal open");
            Some(journal)
        }
        false => {
            tracing::warn!(
                "archiving is off ([archive] enabled = false): messages are not journaled"
            );
            None
        }
    };
    // The indexer follows what the journal makes durable, off the mail path.
    match (&journal, settings.indexer) {
        (Some(j), true) => {
            let config = super::indexer::Config {
                journal: settings.journal_dir.clone(),
                index: settings.index_dir.clone(),
            };
            super::indexer::spawn(config, j.durable(), stop.clone())
                .context("cannot start the archive indexer")?;
            tracing::info!(index = %settings.index_dir.display(), "archive indexer started");
        }
        (Some(_), false) => tracing::info!(
            "the archive indexer is off ([storage] indexer = false): each archive search catches the index up itself"
        ),
        (None, _) => {}
    }
    // Auto-replies: their memory opens (and a damaged file is refused) before mail is accepted.
    let memory = autoreply::Memory::open(&settings.state_dir, settings.autoreply.store.as_deref())
        .context("cannot open the auto-reply memory")?;
    // Every reply is journaled before it is sent (when archiving is on).
    let hook = journal
        .clone()
        .map_or_else(autoreply::no_journal, autoreply::journal_hook);
    let (autoreply, autoreply_worker) = AutoReplier::new(
        autoreply::Config {
            helo: super::listen::host_name(),
            ..autoreply::Config::default()
        },
        memory,
        hook,
    );
    let services = Arc::new(Services {
        store: store.clone(),
        journal: journal.clone(),
        autoreply,
    });

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(autoreply_worker.run(stopped(stop.clone())));

    // The mail listeners bind first: once the metrics endpoint answers, mail can flow.
    if let Some(addr) = &settings.milter {
        let listener = Listener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for milter connections on {addr}"))?;
        tracing::info!(address = %listener.describe(), "milter listening");
        tasks.spawn(milter::server::serve(
            listener,
            services.clone(),
            Limits::default(),
            stop.clone(),
        ));
    }

    if let Some(addr) = &settings.lmtp {
        let listener = Listener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for LMTP/SMTP connections on {addr}"))?;
        let options = &settings.lmtp_options;
        tracing::info!(address = %listener.describe(), next_hop = %lmtp::next_hop::describe(&options.next_hop), "content filter (LMTP/SMTP) listening");
        let services = Arc::new(lmtp::server::Services {
            store: store.clone(),
            journal: journal.clone(),
            next_hop: options.next_hop.clone(),
            hostname: listen::host_name(),
            spool_dir: std::env::temp_dir(),
            autoreply: services.autoreply.clone(),
        });
        tasks.spawn(lmtp::server::serve(
            listener,
            services,
            lmtp::server::Limits::from_settings(options),
            stop.clone(),
        ));
    }

    if let Some(console) = settings.console.clone() {
        let served = crate::console::start(
            console,
            journal.clone(),
            settings.index_dir.clone(),
            store.clone(),
            stop.clone(),
            hup_rx.clone(),
        )
        .await
        .context("cannot start the archive console")?;
        tasks.spawn(served);
    }

    if let Some(addr) = settings.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!(address = %listener.local_addr()?, "metrics endpoint listening");
        // Ready once listening (the policy is loaded and the milter bound before this point) and
        // while the journal takes writes.
        let j = journal.clone();
        let ready: http::ReadyCheck = Arc::new(move || match &j {
            Some(j) if !j.healthy() => Err("the archive journal's last write failed".into()),
            _ => Ok(()),
        });
        let (st, path, replier) = (store.clone(), config.clone(), services.autoreply.clone());
        // Lists the journal directory on each request and stats only the newest segment and
        // those not seen before (on the blocking pool: see `http`).
        let sizes = crate::journal::segment::UsageCache::default();
        let status: http::StatusReport = Arc::new(move || {
            let queued = replier.queued();
            status::Status::from_daemon(&path, &st.snapshot(), journal.as_ref(), queued, &sizes)
                .to_json()
        });
        let endpoints = http::Endpoints {
            metrics: handle,
            ready,
            status,
        };
        tasks.spawn(http::serve(listener, endpoints, stopped(stop.clone())));
    }
    notify::ready(&format!(
        "policy generation {}",
        store.snapshot().generation
    ));

    tasks.spawn(reload::run(
        config.clone(),
        store.clone(),
        watcher,
        rx,
        stopped(stop.clone()),
    ));
    tasks.spawn(forward_sighup(hup, tx, hup_tx, stopped(stop.clone())));

    stopped(stop).await;
    notify::stopping();
    tracing::info!("shutting down");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Resolves when the stop flag turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Each SIGHUP: a policy reload request, and a count others watch (the archive console
/// reloads its TLS certificate then).
async fn forward_sighup(
    hup: std::io::Result<Signal>,
    tx: mpsc::Sender<Trigger>,
    count: watch::Sender<u64>,
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
                count.send_modify(|n| *n += 1);
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
