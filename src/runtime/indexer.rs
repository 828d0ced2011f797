//! The daemon's indexer: keeps the archive index ([`crate::index`]) up to date with what the
//! journal has made durable, on a thread of its own, so that a message is searchable a second
//! or so after Postfix heard its answer.
//!
//! It never touches the mail path: the journal's writer only publishes its durable position
//! ([`crate::journal::Durable`], after each fsynced batch) and never waits for the index. It
//! reads no further than that position, so no record that a failed batch could still cut back
//! (and whose place the next batch would reuse) reaches the index.
//!
//! When the index cannot be opened or written (disk full, a damaged index, a directory it may
//! not write, another process holding it), mail flows on and `/readyz` stays ready: the
//! failure is logged once per episode, counted ([`crate::metrics::INDEX_ERRORS`]; not when the
//! index is merely held, by a search for a moment or by `archive reindex`, which is logged as
//! information), and retried with backoff; recovery is logged too. The index is derived:
//! whatever it misses, the next pass reads from the journal (its position is in its last
//! commit).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::index::{self, Index, IndexError, Writer};
use crate::journal::{self, Durable, Position};
use crate::metrics;

/// At most one pass (and one index commit, with its fsyncs) per interval: under load each
/// pass takes all that became durable meanwhile. Also how often the lag gauges are refreshed.
const INTERVAL: Duration = Duration::from_secs(1);
/// Retry delays after a failure: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// The indexer's nice value (19, the lowest priority): its threads, and tantivy's that it
/// starts, take CPU only when the mail path leaves some, so a busy daemon answers Postfix as
/// fast as without it and the index catches up in the idle moments.
pub const NICE: i32 = 19;
/// Journal records between two commits in a long pass (the first after a start with a
/// backlog): what a crash in it would make the next pass read again.
const BATCH: u64 = 10_000;

/// Where the indexer reads and writes.
#[derive(Debug, Clone)]
pub struct Config {
    pub journal: PathBuf,
    pub index: PathBuf,
}

/// Starts the indexer's thread. It stops when `stop` turns true (work since its last commit is
/// discarded, as after a crash: the next start reads it again).
pub fn spawn(
    config: Config,
    durable: watch::Receiver<Durable>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Handle::current();
    metrics::index_started();
    std::thread::Builder::new()
        .name("handoff-indexer".into())
        .spawn(move || {
            lower_priority();
            let mut indexer = Indexer::new(config);
            indexer.run(&runtime, durable, stop);
        })
}

/// Gives the calling thread, and the threads it starts from now on (tantivy's indexing and
/// merging threads: Linux gives a new thread its creator's nice value), the priority
/// [`NICE`]. On Linux a nice value belongs to a thread (setpriority(2), NOTES: `PRIO_PROCESS`
/// with 0 is the calling thread), so the rest of the daemon keeps its own. A failure only
/// costs speed: it is logged.
fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, NICE) {
        tracing::warn!("archive index: cannot lower the indexer's CPU priority: {e}");
    }
}

struct Indexer {
    config: Config,
    /// The open index, its writer and the directory's inode when it was opened.
    open: Option<(Index, Writer, u64)>,
    /// The failure episode under way (logged once, when it began).
    failing: Option<Failing>,
    backoff: Duration,
    /// Where the index has reached in the journal (unknown before the first pass).
    reached: Option<Position>,
    /// The journal's record count (since it opened) when the last pass began: the records
    /// counted after it may not be in the index yet.
    reached_records: u64,
    /// Since when a durable record has waited for the index.
    behind_since: Option<SystemTime>,
}

/// A run of failed attempts.
#[derive(Debug, Clone, Copy)]
struct Failing {
    since: Instant,
    /// Every attempt so far found the index held by another process.
    held: bool,
}

impl Indexer {
    fn new(config: Config) -> Indexer {
        Indexer {
            config,
            open: None,
            failing: None,
            backoff: BACKOFF.0,
            reached: None,
            reached_records: 0,
            behind_since: None,
        }
    }

    fn run(
        &mut self,
        runtime: &tokio::runtime::Handle,
        mut durable: watch::Receiver<Durable>,
        mut stop: watch::Receiver<bool>,
    ) {
        // The first pass runs at once: it reads whatever the journal holds beyond the index's
        // last commit (a backlog after a crash, a deleted index).
        let mut next = Instant::now();
        let mut idle = false;
        loop {
            // A long backoff is slept an interval at a time, so the lag gauges keep growing.
            let wait = next.saturating_duration_since(Instant::now());
            let early = wait > INTERVAL;
            let wait = wait.min(INTERVAL);
            let go_on = runtime.block_on(async {
                if *stop.borrow() {
                    return false;
                }
                if !wait.is_zero() {
                    tokio::select! {
                        _ = stop.changed() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                // Caught up: sleep until this daemon's journal writer makes something durable,
                // or an interval (another writer, `archive prune` or an import, tells nobody).
                if idle && !early {
                    tokio::select! {
                        _ = stop.changed() => return false,
                        _ = durable.changed() => {}
                        _ = tokio::time::sleep(INTERVAL) => {}
                    }
                }
                true
            });
            if !go_on {
                return;
            }
            if early {
                self.publish_lag(&durable.borrow(), false);
                continue;
            }
            let now = *durable.borrow_and_update();
            // Read under the writers' lock: every record before it is durable, whoever wrote it.
            let end = journal::writer::durable_end(&self.config.journal);
            if let Ok(end) = &end
                && self.failing.is_none()
                && self.reached.is_some_and(|r| r >= *end)
            {
                idle = true;
                self.publish_lag(&now, true);
                continue;
            }
            idle = false;
            if self.behind_since.is_none() {
                self.behind_since = Some(now.at);
            }
            let started = Instant::now();
            let pass_began = SystemTime::now();
            match end.map_err(|e| IndexError::Journal {
                dir: self.config.journal.display().to_string(),
                segment: 0,
                offset: 0,
                reason: e.to_string(),
            }) {
                Ok(end) => match self.pass(end, &durable) {
                    Ok(progress) => {
                        metrics::index_outcome(true);
                        metrics::index_added(progress.indexed);
                        if let Some(failing) = self.failing.take() {
                            tracing::info!(
                                index = %self.config.index.display(),
                                failed_for_s = failing.since.elapsed().as_secs(),
                                reached = %progress.reached,
                                "archive index: writable again, caught up with the journal"
                            );
                        }
                        self.backoff = BACKOFF.0;
                        self.reached = Some(progress.reached);
                        self.reached_records = now.records;
                        let latest = *durable.borrow();
                        let caught_up = latest.records == now.records;
                        // What became durable during the pass has waited at most since it began.
                        self.behind_since = (!caught_up).then_some(pass_began);
                        self.publish_lag(&latest, caught_up);
                        next = started + INTERVAL;
                        continue;
                    }
                    Err(e) => self.failed(e),
                },
                Err(e) => self.failed(e),
            }
            self.publish_lag(&durable.borrow(), false);
            next = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(BACKOFF.1);
        }
    }

    /// One failed attempt: counted, logged when it begins an episode. Another process holding
    /// the index (a search or `archive prune` catching it up, for a moment; `archive reindex`,
    /// for minutes) is no fault of the index: it is logged as information and not counted as
    /// an error, though the index is not writable meanwhile.
    fn failed(&mut self, e: IndexError) {
        let held = e.is_locked();
        match held {
            true => metrics::index_held(),
            false => metrics::index_outcome(false),
        }
        // Back to the last commit, keeping the writer's lock (a search then waits for this
        // indexer, or says how far behind it is, rather than racing it for the lock); a
        // writer that cannot roll back is dropped and opened again at the next attempt.
        if let Some((_, writer, _)) = &mut self.open
            && writer.rollback().is_err()
        {
            self.open = None;
        }
        // Logged once per episode, and again when one that began with the index held turns
        // into a fault (the holder went, the disk is full).
        let turned = self.failing.is_some_and(|f| f.held && !held);
        match self.failing {
            Some(_) if !turned => tracing::debug!("archive index: still failing: {e}"),
            _ if held => tracing::info!(
                index = %self.config.index.display(),
                retry_in_s = self.backoff.as_secs(),
                "archive index: held by another process (a search or prune catching it up, or \
                 a reindex); new messages become searchable when it lets go (retrying)"
            ),
            _ => tracing::error!(
                index = %self.config.index.display(),
                retry_in_s = self.backoff.as_secs(),
                "archive index: {e}; new messages are not searchable until it works again \
                 (mail is not affected; retrying)"
            ),
        }
        self.failing = Some(match self.failing {
            Some(f) => Failing {
                since: f.since,
                held: f.held && held,
            },
            None => Failing {
                since: Instant::now(),
                held,
            },
        });
    }

    /// One pass: opens the index (and its writer) if need be, indexes up to `until`, commits.
    fn pass(
        &mut self,
        until: Position,
        durable: &watch::Receiver<Durable>,
    ) -> Result<index::Progress, IndexError> {
        let mut lag = PassLag::new(durable, self.reached_records, self.behind_since);
        use std::os::unix::fs::MetadataExt;
        let dir = &self.config.index;
        let inode = || std::fs::metadata(dir).map(|m| m.ino()).ok();
        // Replaced (`archive reindex` swapped in a new one) or removed (an operator deleted it
        // to have it rebuilt): writing on would go to a directory nobody reads.
        if let Some((_, _, opened)) = &self.open
            && inode() != Some(*opened)
        {
            tracing::info!(index = %dir.display(), "archive index: the directory was replaced or removed; reopening it");
            self.open = None;
        }
        let (index, writer, _) = match &mut self.open {
            Some(open) => open,
            None => {
                let (index, emptied) = Index::open_for_or_start_over(&self.config.journal, dir)?;
                if emptied {
                    tracing::warn!(
                        index = %dir.display(),
                        "archive index: it was built by another version of handoff (other \
                         fields); rebuilding it"
                    );
                }
                let mut writer = index.daemon_writer()?;
                // The index is derived: when the journal it was built from was replaced while
                // handoff was stopped, it starts over rather than index from a position that
                // no longer means anything.
                if !index.follows(&self.config.journal)? {
                    tracing::warn!(
                        index = %dir.display(),
                        "archive index: it does not follow the journal's records (the journal \
                         was replaced or restored since it was built); rebuilding it"
                    );
                    writer.reset()?;
                }
                let opened = inode().unwrap_or_default();
                self.open.insert((index, writer, opened))
            }
        };
        let progress = index::catch_up_to(
            &self.config.journal,
            index,
            writer,
            BATCH,
            Some(until),
            &mut lag,
        )?;
        lag.finish();
        Ok(progress)
    }

    fn publish_lag(&mut self, latest: &Durable, caught_up: bool) {
        if caught_up {
            self.behind_since = None;
            metrics::index_lag(0, 0.0);
            return;
        }
        let records = latest.records.saturating_sub(self.reached_records);
        metrics::index_lag(records, waited(self.behind_since));
    }
}

/// Seconds since `since` (0 when nothing waits).
fn waited(since: Option<SystemTime>) -> f64 {
    since
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The lag gauges while a pass runs: under a load that leaves the indexer (at nice 19) few
/// moments, one pass can take several seconds, and gauges refreshed only between passes would
/// stand still meanwhile. Refreshed at most once an [`INTERVAL`], as upper bounds (the pass
/// may already have indexed some of them): the records made durable since the last pass
/// began, and the time since the oldest record the pass began behind became durable.
///
/// A pass that runs longer than [`PROGRESS_EVERY`] (catching up a backlog after a start, or
/// rebuilding the index) also logs how far it has got, once each [`PROGRESS_EVERY`] and when it
/// ends: the records it reads were written before this process started, and the lag gauges
/// count only records this process made durable.
struct PassLag<'a> {
    durable: &'a watch::Receiver<Durable>,
    /// [`Indexer::reached_records`] when the pass began.
    reached_records: u64,
    since: Option<SystemTime>,
    next: Instant,
    began: Instant,
    /// Journal bytes ahead when the pass began, bytes and records read since.
    total: u64,
    read: u64,
    records: u64,
    next_line: Instant,
    logged: bool,
}

/// How often a long pass logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

impl<'a> PassLag<'a> {
    fn new(
        durable: &'a watch::Receiver<Durable>,
        reached_records: u64,
        since: Option<SystemTime>,
    ) -> PassLag<'a> {
        let now = Instant::now();
        PassLag {
            durable,
            reached_records,
            since,
            next: now + INTERVAL,
            began: now,
            total: 0,
            read: 0,
            records: 0,
            next_line: now + PROGRESS_EVERY,
            logged: false,
        }
    }

    fn line(&self, done: bool) -> String {
        journal::progress::line(
            "archive index: catching up",
            self.read,
            self.total,
            self.records,
            self.began.elapsed(),
            done,
        )
    }

    /// The last line of a pass that logged its progress.
    fn finish(&self) {
        if self.logged {
            tracing::info!("{}", self.line(true));
        }
    }
}

impl journal::Progress for PassLag<'_> {
    fn total(&mut self, bytes: u64) {
        self.total = bytes;
    }

    fn advance(&mut self, bytes: u64, records: u64) {
        self.read += bytes;
        self.records += records;
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + INTERVAL;
        let latest = self.durable.borrow().records;
        metrics::index_lag(
            latest.saturating_sub(self.reached_records),
            waited(self.since),
        );
        if now >= self.next_line {
            self.next_line = now + PROGRESS_EVERY;
            self.logged = true;
            tracing::info!("{}", self.line(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use journal::Progress;

    /// The gauge `name`'s value in Prometheus text.
    fn gauge(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    #[test]
    fn a_pass_longer_than_a_minute_logs_how_far_it_has_got() {
        let (_tx, rx) = watch::channel(Durable {
            position: Position::START,
            records: 0,
            at: SystemTime::now(),
        });
        let mut lag = PassLag::new(&rx, 0, None);
        lag.total(4096);
        lag.next = Instant::now();
        lag.advance(1024, 1);
        assert!(!lag.logged, "nothing logged in a pass's first minute");
        lag.next = Instant::now();
        lag.next_line = Instant::now();
        lag.advance(1024, 1);
        assert!(lag.logged);
        let line = lag.line(false);
        assert!(
            line.starts_with("archive index: catching up: 2.00 KiB of 4.00 KiB (50%), 2 records"),
            "{line}"
        );
        assert!(lag.line(true).contains("done in"));
    }

    #[test]
    fn a_long_pass_refreshes_the_lag_gauges_once_an_interval() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (tx, rx) = watch::channel(Durable {
            position: Position::START,
            records: 10,
            at: SystemTime::now(),
        });
        let mut lag = PassLag::new(&rx, 4, Some(SystemTime::now() - Duration::from_secs(5)));
        lag.next = Instant::now();
        let advance = |lag: &mut PassLag| {
            ::metrics::with_local_recorder(&recorder, || lag.advance(1000, 1));
            let text = handle.render();
            (
                gauge(&text, metrics::INDEX_LAG_RECORDS),
                gauge(&text, metrics::INDEX_LAG_SECONDS),
            )
        };
        let (records, seconds) = advance(&mut lag);
        assert_eq!(records, 6.0);
        assert!((5.0..60.0).contains(&seconds), "{seconds}");
        // More became durable: within the interval the gauges stay, after it they follow.
        tx.send_modify(|d| d.records = 50);
        assert_eq!(advance(&mut lag).0, 6.0);
        lag.next = Instant::now();
        assert_eq!(advance(&mut lag).0, 46.0);
    }

    #[test]
    fn the_indexer_thread_and_the_threads_it_starts_run_at_the_lowest_priority() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let (own, started) = std::thread::spawn(|| {
            lower_priority();
            let own = rustix::process::getpriority_process(None).unwrap();
            let started = std::thread::spawn(|| rustix::process::getpriority_process(None))
                .join()
                .unwrap()
                .unwrap();
            (own, started)
        })
        .join()
        .unwrap();
        assert_eq!((own, started), (NICE, NICE));
        // The rest of the process keeps its priority.
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), before);
    }
}
