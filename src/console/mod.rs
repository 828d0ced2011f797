//! The archive console: a web page and JSON API for archive administrators and auditors.
//!
//! - [`users`]: the users file (names, roles, argon2id hashes, department scopes).
//! - [`session`]: sessions and login throttling (pure, the time passed in).
//! - [`html`]: escaping and the page frame.
//! - [`routes`]: the pages and the API.
//! - this module: the shared state, the audit, TLS and the accept loop.
//!
//! The console is the only door to the archive for people who are not the postmaster: every
//! request is authenticated, checked against the user's role and scope, and audited in the
//! journal before it is answered (no audit record, no answer). It runs inside `handoff serve`
//! and appends its audit records through the daemon's journal writer.

pub mod html;
pub mod routes;
pub mod session;
pub mod totp;
pub mod users;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::index::Index;
use crate::journal::record::AuditMeta;
use crate::journal::{Body, Entry, Journal, Kind};
use crate::policy::ConsoleSettings;
use crate::runtime::store::PolicyStore;
use session::{Sessions, Throttle};
use users::Users;

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 256;
/// A client has this long for the TLS handshake and for each request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request handler shares.
pub struct Console {
    pub settings: ConsoleSettings,
    journal: Journal,
    journal_dir: PathBuf,
    index_dir: PathBuf,
    store: Arc<PolicyStore>,
    sessions: Mutex<Sessions>,
    throttle: Mutex<Throttle>,
    /// The TOTP step each user last logged in with: a code is good once (RFC 6238 section
    /// 5.2). In memory: after a restart a code of the last 90 seconds could be used again.
    totp_used: Mutex<HashMap<String, u64>>,
    /// Serializes the console's own writes of the users file (password changes).
    users_write: tokio::sync::Mutex<()>,
    users: Mutex<(Option<Stamp>, Arc<Users>)>,
    index: Mutex<Option<Arc<Index>>>,
}

/// What identifies one version of the users file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    })
}

/// Locks a mutex whose data a panic cannot leave half-changed (each critical section is one
/// table operation).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Console {
    /// The users file as it is now: read again when it changed (a removed user's sessions end
    /// at their next request). A file that cannot be used (mode, syntax) lets nobody in.
    pub fn users(&self) -> Arc<Users> {
        let now = stamp(&self.settings.users);
        let mut cached = lock(&self.users);
        if cached.0 != now || now.is_none() {
            let users = match Users::load(&self.settings.users, false) {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!("archive console: {e}; nobody can log in until it is fixed");
                    Users::default()
                }
            };
            *cached = (now, Arc::new(users));
        }
        cached.1.clone()
    }

    /// Appends an audit record and waits until it is durable. `user`: the console user (or the
    /// name typed at a failed login); the role and the source address go into the query.
    pub async fn audit(
        &self,
        user: &str,
        role: Option<users::Role>,
        source: SocketAddr,
        action: &str,
        query: serde_json::Value,
        hits: usize,
    ) -> Result<(), crate::journal::JournalError> {
        let mut q = serde_json::Map::new();
        q.insert("role".into(), role.map(users::Role::as_str).into());
        q.insert("source".into(), source.ip().to_string().into());
        match query {
            serde_json::Value::Object(m) => q.extend(m),
            serde_json::Value::Null => {}
            other => {
                q.insert("detail".into(), other);
            }
        }
        let meta = AuditMeta {
            time: jiff::Timestamp::now().to_string(),
            user: format!("console:{user}"),
            command: format!("console+{action}"),
            query: serde_json::Value::Object(q),
            hits,
        };
        let entry = Entry::new(Kind::Audit, &meta, Body::Bytes(Vec::new()));
        self.journal.append(entry).await.map(|_| ())
    }

    /// The archive index (opened at the first search; the daemon's indexer keeps it current).
    pub fn index(&self) -> Result<Arc<Index>, crate::index::IndexError> {
        let mut slot = lock(&self.index);
        if let Some(i) = slot.as_ref() {
            return Ok(i.clone());
        }
        let i = Arc::new(Index::open_for(&self.journal_dir, &self.index_dir)?);
        *slot = Some(i.clone());
        Ok(i)
    }

    pub fn journal_dir(&self) -> &Path {
        &self.journal_dir
    }

    pub fn store(&self) -> &PolicyStore {
        &self.store
    }
}

/// Starts the console on its listener: checks the users file and TLS files first, so that a
/// console that cannot work stops the daemon at start-up, with the reason.
pub async fn start(
    settings: ConsoleSettings,
    journal: Option<Journal>,
    index_dir: PathBuf,
    store: Arc<PolicyStore>,
    stop: watch::Receiver<bool>,
    hup: watch::Receiver<u64>,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let Some(journal) = journal else {
        anyhow::bail!(
            "the archive console needs the archive journal ([archive] enabled = true): every console action is audited in it"
        );
    };
    // Refuse to start rather than run a console nobody can use, or one whose hashes others
    // can read.
    let users = Users::load(&settings.users, false).context("archive console users")?;
    if settings.require_totp {
        let without: Vec<&str> = users
            .users
            .iter()
            .filter(|(_, u)| u.totp.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if !without.is_empty() {
            tracing::warn!(users = %without.join(","), "archive console: [console] require_totp is set and these users have no second factor: they cannot log in (`handoff console user totp NAME`)");
        }
    }
    if users.users.is_empty() {
        tracing::warn!(users = %settings.users.display(), "archive console: the users file lists nobody: nobody can log in (`handoff console user add`)");
    }
    let tls = match &settings.tls {
        Some((cert, key)) => Some(Arc::new(ArcSwap::from(tls_config(cert, key)?))),
        None if !settings.listen.ip().is_loopback() => {
            anyhow::bail!(
                "the archive console listens on {} without TLS: only loopback addresses may (set [console] tls_cert and tls_key)",
                settings.listen
            )
        }
        None => None,
    };
    let listener = TcpListener::bind(settings.listen).await.with_context(|| {
        format!(
            "cannot listen for the archive console on {}",
            settings.listen
        )
    })?;
    tracing::info!(address = %listener.local_addr()?, tls = tls.is_some(), "archive console listening");
    let console = Arc::new(Console {
        sessions: Mutex::new(Sessions::new(settings.idle, settings.max_age)),
        throttle: Mutex::new(Throttle::default()),
        totp_used: Mutex::new(HashMap::new()),
        users_write: tokio::sync::Mutex::new(()),
        users: Mutex::new((stamp(&settings.users), Arc::new(users))),
        index: Mutex::new(None),
        journal_dir: journal.dir().to_path_buf(),
        journal,
        index_dir,
        store,
        settings,
    });
    let reload = match (&tls, &console.settings.tls) {
        (Some(swap), Some((cert, key))) => Some(reload_tls(
            swap.clone(),
            cert.clone(),
            key.clone(),
            hup,
            stop.clone(),
        )),
        _ => None,
    };
    let served = serve(listener, tls, routes::router(console), stop);
    Ok(async move {
        match reload {
            Some(reload) => {
                tokio::join!(served, reload);
            }
            None => served.await,
        }
    })
}

/// Reads the certificate and key again at each SIGHUP (`hup` counts them): a pair that does
/// not load keeps the one in use, and the log says why. Connections already open keep the
/// certificate they were made with.
async fn reload_tls(
    current: Arc<ArcSwap<rustls::ServerConfig>>,
    cert: PathBuf,
    key: PathBuf,
    mut hup: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            changed = hup.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let (c, k) = (cert.clone(), key.clone());
        match tokio::task::spawn_blocking(move || tls_config(&c, &k)).await {
            Ok(Ok(config)) => {
                current.store(config);
                tracing::info!(cert = %cert.display(), "archive console: TLS certificate and key reloaded");
            }
            Ok(Err(e)) => {
                tracing::error!(
                    "archive console: TLS reload failed, keeping the certificate in use: {e:#}"
                );
            }
            Err(e) => tracing::error!("archive console: TLS reload task: {e}"),
        }
    }
}

/// The TLS configuration for a certificate chain and key in PEM files.
fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("archive console certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("archive console certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "archive console certificate {}: no certificate in it",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("archive console key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("archive console certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Resolves when the stop flag turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Accepts connections until `stop` turns true; each is served on a task of its own (HTTP/1.1,
/// TLS first when configured), at most [`MAX_CONNECTIONS`] at once.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let acquired = tokio::select! {
            _ = stopped(&mut stop) => return,
            p = permits.clone().acquire_owned() => p,
        };
        let Ok(permit) = acquired else { return };
        let (stream, peer) = tokio::select! {
            _ = stopped(&mut stop) => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("archive console: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // The configuration in force now (a SIGHUP may replace it for later connections).
        let tls = tls.as_ref().map(|t| TlsAcceptor::from(t.load_full()));
        let (app, mut stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    let app = app.clone();
                    async move { tower::ServiceExt::oneshot(app, req).await }
                },
            );
            let http = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(64 * 1024)
                .clone();
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let conn =
                                http.serve_connection(hyper_util::rt::TokioIo::new(s), service);
                            tokio::pin!(conn);
                            tokio::select! {
                                r = conn.as_mut() => r,
                                _ = stopped(&mut stop) => Ok(()),
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, "archive console: TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => {
                    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => r,
                        _ = stopped(&mut stop) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, "archive console connection: {e}");
            }
        });
    }
}
