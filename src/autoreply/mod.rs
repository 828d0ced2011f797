//! Out-of-office replies for departed accounts: when mail reaches a departed account whose
//! policy names a template, the sender learns once (per `[autoreply] days`) that the person
//! left and whom to write to.
//!
//! This module owns everything between "the engine planned an auto-reply" and "the relay
//! accepted it":
//! - [`rules`] (pure): the RFC 3834 checks that forbid a reply, each with a named
//!   [`Suppression`] reason;
//! - [`build`] (pure): the reply message, safe against header injection;
//! - [`memory`]: who was answered, embedded (a file under `[storage] state`) or in Redis;
//! - [`rate`] (pure): the hourly caps;
//! - [`sender`]: SMTP to `[relay] address` with a null envelope sender, retried with backoff.
//!
//! It must never slow down or fail the mail path. [`AutoReplier::offer`] runs on the milter's
//! task after the message was answered: it only reads the message, applies the pure rules and
//! puts a [`Draft`] of the reply on a bounded queue (or drops it with `queue_full`). Everything
//! that waits (the memory, the journal hook, the relay) happens in the [`Worker`], and so does
//! writing the reply, once it is known to be sent: most mail to a departed account comes from
//! people it answered already.
//!
//! A reply goes: rules → queue → claim in the memory (once per sender) → hourly caps → written
//! → the journal hook → relay → confirmed in the memory. A reply the journal refuses is not sent. A
//! reply that cannot be sent releases its claim, so the sender's next message may be answered;
//! the hourly caps still count it (they brake floods, and a failing relay is not a reason to
//! try harder).

pub mod build;
pub mod dkim;
pub mod memory;
pub mod rate;
pub mod rules;
pub mod sender;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::address::Address;
use crate::engine;
use crate::metrics;
use crate::policy::OriginalSubject;
use crate::transaction::{Message, Snapshot};

pub use memory::{Memory, MemoryError, PairKey};
pub use rules::Suppression;
pub use sender::{Relay, RetryPolicy, SendError};

/// A reply about to be sent, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingReply {
    /// The departed account that answers.
    pub account: Address,
    /// The template used.
    pub template: String,
    /// The `From:` address (the account, or the template's `from`).
    pub from: Address,
    /// The original's envelope sender: the reply's only recipient. The reply's own envelope
    /// sender is always `<>`.
    pub to: Address,
    /// The reply's Message-ID, with angle brackets.
    pub message_id: String,
    /// The original's Message-ID, with angle brackets, when it had a usable one.
    pub in_reply_to: Option<String>,
    /// The original's Postfix queue id.
    pub queue_id: Option<String>,
    pub created: jiff::Timestamp,
    /// The whole reply, RFC 5322, CRLF line ends.
    pub message: Vec<u8>,
}

/// What the journal hook returns: `Ok` once the reply is durably recorded.
pub type JournalFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'static>>;

/// Records a reply before it is sent; the reply is sent only if this returns `Ok`. The archive
/// journal implements it.
pub type JournalHook = Arc<dyn Fn(&OutgoingReply) -> JournalFuture + Send + Sync>;

/// A hook that records nothing, for running without the archive journal.
pub fn no_journal() -> JournalHook {
    Arc::new(|_| Box::pin(async { Ok(()) }))
}

/// Tunables that are not policy settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Replies waiting for the worker; beyond it, `queue_full`.
    pub queue: usize,
    /// Replies being sent at once (each may be retrying).
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// SMTP session timeout towards the relay.
    pub relay_timeout: Duration,
    /// The EHLO name: `serve` passes this host's name (`runtime::listen::host_name`).
    pub helo: String,
    /// On shutdown, how long replies being sent may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            queue: 1000,
            concurrency: 4,
            retry: RetryPolicy::default(),
            relay_timeout: Duration::from_secs(30),
            helo: "localhost".into(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// One reply to send, with the settings of the policy snapshot that planned it.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: PairKey,
    pub draft: Draft,
    pub days: u32,
    pub max_per_hour: u32,
    pub max_per_hour_per_account: u32,
    pub relay: SocketAddr,
}

/// A reply the rules allow, not written yet: [`Draft::build`] writes it.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The departed account that answers.
    pub account: Address,
    /// The template to use.
    pub template: String,
    /// The original's envelope sender.
    pub to: Address,
    /// The original's Postfix queue id.
    pub queue_id: Option<String>,
    pub created: jiff::Timestamp,
    /// The policy that planned the reply, for the account's and the template's text.
    snapshot: Arc<Snapshot>,
    original_subject: Option<String>,
    /// Without angle brackets.
    original_message_id: Option<String>,
    /// Without angle brackets.
    original_references: Vec<String>,
}

impl Draft {
    /// Writes the reply. `NotAddressed` if the account or the template is not in the policy
    /// that planned it (the planner checked both, so only a hand-made draft fails).
    pub fn build(&self) -> Result<OutgoingReply, Suppression> {
        let policy = &self.snapshot.policy;
        let account = policy
            .account(&self.account)
            .ok_or(Suppression::NotAddressed)?;
        let template = policy
            .templates
            .get(&self.template)
            .ok_or(Suppression::NotAddressed)?;
        let unique = unique_token();
        let built = build::build(&build::ReplyParts {
            account,
            template,
            to: &self.to,
            original_subject: self.original_subject.as_deref(),
            original_message_id: self.original_message_id.as_deref(),
            original_references: &self.original_references,
            date: self.created.as_second(),
            unique: &unique,
        });
        // Signed here, before the journal hook sees it: the journal keeps exactly what leaves.
        let message = match policy.dkim.sign(built.from.domain(), &built.message) {
            Ok(Some(signed)) => signed,
            Ok(None) => built.message,
            Err(e) => {
                // Not expected with a key that loaded; the reply still goes, unsigned, as it
                // would without `[dkim]`.
                tracing::error!(account = %self.account, domain = built.from.domain(), "auto-reply not DKIM-signed: {e}");
                built.message
            }
        };
        Ok(OutgoingReply {
            account: self.account.clone(),
            template: self.template.clone(),
            from: built.from,
            to: self.to.clone(),
            message_id: built.message_id,
            in_reply_to: built.in_reply_to,
            queue_id: self.queue_id.clone(),
            created: self.created,
            message,
        })
    }
}

/// What became of one planned reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        attempts: u32,
    },
    Suppressed(Suppression),
    /// Not sent: `journal`, `relay_rejected` or `relay_unavailable`.
    Failed(&'static str),
}

/// What the rules decided for each account of a message: a job, or why not.
pub fn plan(msg: &Message, now: jiff::Timestamp) -> Vec<(Address, Result<Job, Suppression>)> {
    let policy = &msg.snapshot.policy;
    let settings = &policy.settings.autoreply;
    // Account → (template, the addresses that led to it), in message order.
    let mut wanted: Vec<(&engine::AutoReplyPlan, Vec<Address>)> = Vec::new();
    for r in &msg.recipients {
        if r.resolution.autoreplies.is_empty() {
            continue;
        }
        let forms: Vec<Address> = std::iter::once(&r.resolution.recipient)
            .chain(&r.resolution.forms)
            .cloned()
            .collect();
        for p in &r.resolution.autoreplies {
            match wanted.iter_mut().find(|(w, _)| w.account == p.account) {
                Some((_, f)) => f.extend(forms.iter().cloned()),
                None => wanted.push((p, forms.clone())),
            }
        }
    }
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut facts = rules::Facts::from_headers(&msg.headers, msg.headers_truncated);
    facts.loop_marks = msg.loop_marked.clone();
    let auth = rules::AuthPolicy {
        required: settings.require_authenticated,
        authserv_ids: &settings.authserv_ids,
    };
    // Whether a trusted result vouches for the sender, for `original_subject = "authenticated"`.
    let vouched = msg
        .sender
        .as_ref()
        .is_some_and(|s| rules::vouched_for(&facts, s, &settings.authserv_ids));
    // The accounts the sender's own address reaches: mail from an alias or a forward source
    // of an account is mail from the account. (The +detail form is the rules' own check.)
    let today = now.to_zoned(jiff::tz::TimeZone::system()).date();
    let sender_reaches: Vec<Address> = msg
        .sender
        .as_ref()
        .map(|s| {
            msg.snapshot
                .resolve(s, today)
                .accounts
                .iter()
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(wanted.len());
    for (p, forms) in wanted {
        let target = rules::Target {
            account: &p.account,
            forms: &forms,
            delimiter: policy.recipient_delimiter,
            sender_reaches: &sender_reaches,
        };
        let verdict = rules::judge(&facts, msg.sender.as_ref(), target, auth);
        let job = verdict.and_then(|()| {
            // The rules made sure of a sender; the policy loader, of the account and template.
            let to = msg.sender.as_ref().ok_or(Suppression::NullSender)?;
            policy
                .account(&p.account)
                .ok_or(Suppression::NotAddressed)?;
            let template = policy
                .templates
                .get(&p.template)
                .ok_or(Suppression::NotAddressed)?;
            // `Some("")` for a message without a Subject: the reply says so (`build`).
            let original_subject = match template.original_subject {
                OriginalSubject::Always => Some(facts.subject.clone().unwrap_or_default()),
                OriginalSubject::Authenticated if vouched => {
                    Some(facts.subject.clone().unwrap_or_default())
                }
                OriginalSubject::Authenticated | OriginalSubject::Never => None,
            };
            Ok(Job {
                key: PairKey::for_sender(&p.account, to, policy.recipient_delimiter),
                draft: Draft {
                    account: p.account.clone(),
                    template: p.template.clone(),
                    to: to.clone(),
                    queue_id: msg.queue_id.clone(),
                    created: now,
                    snapshot: msg.snapshot.clone(),
                    original_subject,
                    original_message_id: facts.message_id.clone(),
                    original_references: facts.references.clone(),
                },
                days: settings.days,
                max_per_hour: settings.max_per_hour,
                max_per_hour_per_account: settings.max_per_hour_per_account,
                relay: policy.settings.relay,
            })
        });
        out.push((p.account.clone(), job));
    }
    out
}

/// The handle the milter uses. Cheap to clone.
#[derive(Clone)]
pub struct AutoReplier {
    tx: Option<mpsc::Sender<Job>>,
}

impl AutoReplier {
    /// The handle and the worker that serves it (run it with [`Worker::run`]).
    pub fn new(config: Config, memory: Memory, journal: JournalHook) -> (AutoReplier, Worker) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let worker = Worker {
            rx,
            ctx: Arc::new(Ctx {
                memory,
                journal,
                rate: Mutex::new(rate::RateLimiter::default()),
                config,
            }),
        };
        (AutoReplier { tx: Some(tx) }, worker)
    }

    /// A handle that never replies (tests, tools).
    pub fn disabled() -> AutoReplier {
        AutoReplier { tx: None }
    }

    /// Replies waiting in the queue for the worker (not counting those being sent); `None` when
    /// auto-replies are disabled.
    pub fn queued(&self) -> Option<u64> {
        self.tx
            .as_ref()
            .map(|tx| (tx.max_capacity() - tx.capacity()) as u64)
    }

    /// Considers a message that was stored and accepted. Never blocks: the rules run here
    /// (pure, no I/O) and the replies they allow are queued for the worker. Returns, per
    /// account, `None` when a reply was queued, else why not.
    pub fn offer(&self, msg: &Message) -> Vec<(Address, Option<Suppression>)> {
        let Some(tx) = &self.tx else {
            return Vec::new();
        };
        let queue_id = msg.queue_id.as_deref().unwrap_or("-");
        let mut out = Vec::new();
        for (account, planned) in plan(msg, jiff::Timestamp::now()) {
            let verdict = match planned {
                Err(reason) => Some(reason),
                Ok(job) => match tx.try_send(job) {
                    Ok(()) => None,
                    Err(mpsc::error::TrySendError::Full(_)) => Some(Suppression::QueueFull),
                    Err(mpsc::error::TrySendError::Closed(_)) => Some(Suppression::ShuttingDown),
                },
            };
            match verdict {
                None => metrics::autoreply_queued(1.0),
                Some(reason) => suppressed(reason, &account, queue_id),
            }
            out.push((account, verdict));
        }
        out
    }
}

/// Sends what the [`AutoReplier`] queues.
pub struct Worker {
    rx: mpsc::Receiver<Job>,
    ctx: Arc<Ctx>,
}

struct Ctx {
    memory: Memory,
    journal: JournalHook,
    rate: Mutex<rate::RateLimiter>,
    config: Config,
}

impl Worker {
    /// Serves the queue until `stop` completes, then lets replies being sent finish (up to
    /// [`Config::shutdown_grace`]). Replies still queued are dropped (`shutting_down`); claims of
    /// unfinished ones lapse by themselves (see [`memory`]).
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tracing::info!(memory = %self.ctx.memory.describe(), "auto-replies ready");
        if let Some(n) = self.ctx.memory.pairs() {
            metrics::autoreply_memory_pairs(n);
        }
        let permits = Arc::new(Semaphore::new(self.ctx.config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        tokio::pin!(stop);
        loop {
            let permit = tokio::select! {
                _ = &mut stop => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let job = tokio::select! {
                _ = &mut stop => break,
                j = self.rx.recv() => match j {
                    Some(j) => j,
                    None => break,
                },
            };
            let ctx = self.ctx.clone();
            tasks.spawn(async move {
                ctx.process(job).await;
                metrics::autoreply_queued(-1.0);
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        self.rx.close();
        while let Ok(job) = self.rx.try_recv() {
            metrics::autoreply_queued(-1.0);
            let queue_id = job.draft.queue_id.as_deref().unwrap_or("-");
            suppressed(Suppression::ShuttingDown, &job.draft.account, queue_id);
        }
        let grace = tokio::time::sleep(self.ctx.config.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                _ = &mut grace => {
                    tracing::warn!(remaining = tasks.len(), "auto-replies still being sent at shutdown; abandoned (their claims lapse)");
                    tasks.abort_all();
                    break;
                }
            }
        }
    }

    /// Handles one job to its end, without the queue (for tests).
    pub async fn process_one(&self, job: Job) -> Outcome {
        self.ctx.process(job).await
    }
}

impl Ctx {
    async fn process(&self, job: Job) -> Outcome {
        let account = job.draft.account.clone();
        let queue_id = job.draft.queue_id.clone();
        let outcome = self.attempt(job).await;
        match &outcome {
            Outcome::Sent { .. } => metrics::autoreply_sent(),
            Outcome::Suppressed(reason) => {
                suppressed(*reason, &account, queue_id.as_deref().unwrap_or("-"))
            }
            Outcome::Failed(reason) => metrics::autoreply_failed(reason),
        }
        outcome
    }

    async fn attempt(&self, job: Job) -> Outcome {
        let Job {
            key,
            draft,
            days,
            max_per_hour,
            max_per_hour_per_account,
            relay,
        } = job;
        let queue_id = draft.queue_id.as_deref().unwrap_or("-").to_string();
        let queue_id = queue_id.as_str();
        let claim = match self.memory.reserve(key, days).await {
            memory::Reserve::Reserved(c) => c,
            memory::Reserve::AlreadyReplied => {
                return Outcome::Suppressed(Suppression::AlreadyReplied);
            }
            memory::Reserve::Full => return Outcome::Suppressed(Suppression::MemoryFull),
            memory::Reserve::Unavailable(why) => {
                tracing::warn!(queue_id, account = %draft.account, "auto-reply memory unavailable: {why}");
                return Outcome::Suppressed(Suppression::StoreUnavailable);
            }
        };
        let now = jiff::Timestamp::now().as_second().max(0) as u64;
        let capped = self
            .rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_acquire(&draft.account, now, max_per_hour, max_per_hour_per_account);
        if let Err(reason) = capped {
            self.memory.release(&claim).await;
            return Outcome::Suppressed(reason);
        }
        // Written only now that it will be sent; the draft's policy snapshot is let go at once,
        // not held while the relay is retried.
        let built = draft.build();
        drop(draft);
        let r = match built {
            Ok(r) => r,
            Err(reason) => {
                self.memory.release(&claim).await;
                return Outcome::Suppressed(reason);
            }
        };
        if let Err(e) = (self.journal)(&r).await {
            tracing::error!(queue_id, account = %r.account, message_id = %r.message_id, "auto-reply not journaled, so not sent: {e}");
            self.memory.release(&claim).await;
            return Outcome::Failed("journal");
        }
        let relay = Relay {
            addr: relay,
            helo: self.config.helo.clone(),
            timeout: self.config.relay_timeout,
        };
        match sender::send(&relay, &r.to, &r.message, self.config.retry).await {
            Ok(attempts) => {
                if let Err(e) = self.memory.confirm(&claim, days).await {
                    // Sent, but not remembered: a later message may be answered again (Redis:
                    // unless it answers again while the claim lives; the memory keeps trying).
                    tracing::error!(queue_id, account = %r.account, "auto-reply sent but not remembered yet: {e}");
                }
                if let Some(n) = self.memory.pairs() {
                    metrics::autoreply_memory_pairs(n);
                }
                tracing::info!(
                    queue_id,
                    account = %r.account,
                    to = %r.to,
                    message_id = %r.message_id,
                    attempts,
                    "auto-reply sent"
                );
                Outcome::Sent { attempts }
            }
            Err(e) => {
                tracing::warn!(queue_id, account = %r.account, to = %r.to, "auto-reply failed: {e}");
                self.memory.release(&claim).await;
                Outcome::Failed(e.label())
            }
        }
    }
}

/// Counts and logs one suppression.
fn suppressed(reason: Suppression, account: &Address, queue_id: &str) {
    metrics::autoreply_suppressed(reason.as_str());
    tracing::info!(queue_id, account = %account, reason = reason.as_str(), "auto-reply suppressed");
}

/// 128 random-looking bits as hex, unique per call: the Redis claim token and the left part of
/// reply Message-IDs. Seeded by the standard library's per-process random hasher keys, mixed
/// with the time and a counter.
pub(crate) fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // std::process::id() is a system call each time (glibc no longer caches getpid).
    static PID: OnceLock<u32> = OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut out = String::with_capacity(32);
    for salt in [0x9e37_79b9_7f4a_7c15u64, 0xc2b2_ae3d_27d4_eb4f] {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u128(nanos);
        h.write_u32(pid);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

#[cfg(test)]
mod tests;

/// The journal hook for the archive journal: each reply becomes a `created` record (envelope
/// sender `<>`, the original sender as its only recipient, the answering account) before it is
/// handed to the relay.
pub fn journal_hook(journal: crate::journal::Journal) -> JournalHook {
    use crate::journal::record::{MessageMeta, RecipientMeta};
    use crate::journal::{Body, Entry, Kind};
    Arc::new(move |r: &OutgoingReply| -> JournalFuture {
        let meta = MessageMeta {
            time: r.created.to_string(),
            origin: "autoreply".into(),
            queue_id: r.queue_id.clone(),
            message_id: Some(r.message_id.clone()),
            sender: String::new(),
            recipients: vec![RecipientMeta {
                address: r.to.to_string(),
                rule: "autoreply".into(),
                deliver: vec![r.to.to_string()],
                expansion: None,
            }],
            final_recipients: vec![r.to.to_string()],
            accounts: vec![r.account.to_string()],
            size: r.message.len() as u64,
            ..MessageMeta::default()
        };
        let entry = Entry::new(Kind::Created, &meta, Body::Bytes(r.message.clone()));
        let journal = journal.clone();
        Box::pin(async move {
            journal
                .append(entry)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
}
