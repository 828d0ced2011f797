//! The archive journal: every accepted message, written once, durably, before the MTA hears OK.
//!
//! - [`format`]: record framing and hashing (sans-IO).
//! - [`records`]: the one walk over the records, resumable from a [`Position`].
//! - [`segment`], [`reader`]: segment files; `verify` walks the whole hash chain.
//! - [`writer`]: appending with recovery, batching, fsync, sealing (synchronous).
//! - [`Journal`]: the daemon's handle: one writer thread that commits concurrent appends in
//!   groups (one fsync per batch), so durability does not cost a disk flush per message.
//! - [`spool`]: buffering a message while the MTA streams it.
//! - [`retention`]: removing old sealed segments; [`search`]: finding and exporting messages.
//! - [`audit`]: reading the audit trail (who searched, exported, pruned, and when).
//! - [`progress`]: how the long walks (`verify`, `prune`, `export`) report how far they have got.
//!
//! Fail closed: an append that is not durable returns an error, and the front end answers 4xx.

pub mod audit;
pub mod error;
pub mod format;
pub mod progress;
pub mod reader;
pub mod record;
pub mod records;
pub mod retention;
pub mod search;
pub mod segment;
pub mod spool;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot, watch};

pub use error::{EntryError, JournalError};
pub use format::Kind;
pub use progress::{Progress, Silent};
pub use records::{Position, Records, records};
pub use segment::RecordId;
pub use writer::{Body, Entry, Recovery};

use crate::metrics;

/// Appends waiting for the writer before callers wait for a place: bounds memory under overload.
const QUEUE: usize = 4096;
/// At most this many records, or this many body bytes, share one fsync.
const MAX_BATCH_RECORDS: usize = 512;
const MAX_BATCH_BYTES: u64 = 32 * 1024 * 1024;

struct Job {
    entry: Entry,
    reply: oneshot::Sender<Result<RecordId, JournalError>>,
}

/// What the journal has made durable: every record before `position` survives a crash (the
/// batch that reached it was fsynced). What lies after it on disk may still be cut back, so a
/// follower (the indexer) reads no further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    pub position: Position,
    /// Records this process made durable since the journal was opened.
    pub records: u64,
    /// When the batch that reached `position` was fsynced (the open, before the first).
    pub at: std::time::SystemTime,
}

/// The daemon's handle on the journal. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Job>,
    healthy: Arc<AtomicBool>,
    counts: Arc<Counts>,
    dir: PathBuf,
    durable: watch::Receiver<Durable>,
}

/// Totals since open: records written and fsyncs (batches) that wrote them.
#[derive(Debug, Default)]
pub struct Counts {
    pub records: AtomicU64,
    pub batches: AtomicU64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the journal in `dir` (recovering a torn tail) and starts its writer thread.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Journal, Recovery), JournalError> {
        let (writer, recovery) = writer::Writer::open(dir, segment_bytes)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let counts = Arc::new(Counts::default());
        let (durable_tx, durable) = watch::channel(Durable {
            position: writer.durable(),
            records: 0,
            at: std::time::SystemTime::now(),
        });
        let (h, c) = (healthy.clone(), counts.clone());
        std::thread::Builder::new()
            .name("handoff-journal".into())
            .spawn(move || run_writer(writer, rx, h, c, durable_tx))
            .map_err(JournalError::from)?;
        Ok((
            Journal {
                tx,
                healthy,
                counts,
                dir: dir.to_path_buf(),
                durable,
            },
            recovery,
        ))
    }

    /// Appends one record and waits until it is durable.
    pub async fn append(&self, entry: Entry) -> Result<RecordId, JournalError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Job { entry, reply })
            .await
            .map_err(|_| JournalError::Stopped)?;
        wait.await.map_err(|_| JournalError::Stopped)?
    }

    /// False after a failed batch, until a batch succeeds again (for `/readyz`).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Follows what the journal has made durable: changes after each fsynced batch.
    pub fn durable(&self) -> watch::Receiver<Durable> {
        self.durable.clone()
    }

    /// (records, fsyncs) written since open: their ratio is the group-commit factor.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.records.load(Ordering::Relaxed),
            self.counts.batches.load(Ordering::Relaxed),
        )
    }
}

/// The writer thread: takes every job waiting, writes them, fsyncs once, answers them all.
fn run_writer(
    mut writer: writer::Writer,
    mut rx: mpsc::Receiver<Job>,
    healthy: Arc<AtomicBool>,
    counts: Arc<Counts>,
    durable: watch::Sender<Durable>,
) {
    // A record the reader would refuse is answered on its own, before the batch: it must not
    // fail the messages it shares a batch with, nor mark the journal unhealthy.
    let admit = |job: Job| match job.entry.check() {
        Ok(()) => Some(job),
        Err(e) => {
            let _ = job.reply.send(Err(e.into()));
            None
        }
    };
    while let Some(first) = rx.blocking_recv() {
        let mut jobs: Vec<Job> = admit(first).into_iter().collect();
        let mut bytes = jobs.iter().map(|j| j.entry.body.len()).sum::<u64>();
        while jobs.len() < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    if let Some(job) = admit(job) {
                        bytes += job.entry.body.len();
                        jobs.push(job);
                    }
                }
                Err(_) => break,
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let (mut entries, replies): (Vec<Entry>, Vec<_>) =
            jobs.into_iter().map(|j| (j.entry, j.reply)).unzip();
        match writer.append(&mut entries) {
            Ok((ids, stats)) => {
                healthy.store(true, Ordering::Relaxed);
                counts
                    .records
                    .fetch_add(stats.records as u64, Ordering::Relaxed);
                counts.batches.fetch_add(1, Ordering::Relaxed);
                metrics::journal_batch(stats.records, stats.bytes, stats.fsync);
                // After the fsync, before the answers: nothing a follower reads can be cut.
                durable.send_replace(Durable {
                    position: writer.durable(),
                    records: counts.records.load(Ordering::Relaxed),
                    at: std::time::SystemTime::now(),
                });
                for (reply, id) in replies.into_iter().zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(e) => {
                healthy.store(false, Ordering::Relaxed);
                metrics::journal_error();
                tracing::error!(
                    records = replies.len(),
                    "journal write failed, messages tempfailed: {e}"
                );
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
