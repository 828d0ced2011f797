//! The archive index as `handoff archive` uses it: which directory belongs to which journal,
//! catching it up before a search, and rebuilding it (`archive reindex`).
//!
//! The index is derived (see [`crate::index`]): whatever goes wrong with it, the journal still
//! answers, so the search falls back to the full scan and says why. Imports no command's file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::index::{self, Index, Page, Progress, Search};
use crate::journal::{self, writer::durable_end};

/// Journal records between two commits while catching up: a crash loses at most this much
/// work, and a commit (an fsync of the new segment files) is not paid per record.
const BATCH: u64 = 10_000;

/// The index of `journal`: `--index` when given; else `[storage] index` when the journal is
/// the policy's; else `index` beside the journal directory.
pub(super) fn index_dir(
    journal: &Path,
    index: Option<&Path>,
    policy: Option<&crate::policy::Policy>,
) -> PathBuf {
    if let Some(i) = index {
        return i.to_path_buf();
    }
    match policy {
        Some(p) if p.settings.journal_dir == journal => p.settings.index_dir.clone(),
        _ => crate::policy::default_index_dir(journal),
    }
}

/// Why the index could not answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unusable {
    #[error(transparent)]
    Index(#[from] index::IndexError),
    #[error("index {index}: {cause}")]
    Io {
        index: String,
        cause: std::io::Error,
    },
    /// Another process (the daemon's indexer) holds the index's writer and did not bring it up
    /// to the journal's end within the wait: answering would leave messages out.
    #[error(
        "index {index} is {records} records behind the journal{age} and the process that holds it \
         (the daemon's indexer, or a reindex) did not catch up within {waited} s (is the daemon \
         stalled, or its disk full? its log and handoff_index_errors_total say why); \
         --scan reads the whole journal instead"
    )]
    Behind {
        index: String,
        records: usize,
        /// ", the oldest waiting N s", when known.
        age: String,
        waited: u64,
    },
    #[error(
        "index {index} is held by another process (the daemon's indexer, or a search or reindex \
         running now): stop the daemon (or set [storage] indexer = false and reload it) before \
         rebuilding the index"
    )]
    Held { index: String },
}

fn io(dir: &Path) -> impl Fn(std::io::Error) -> Unusable + '_ {
    move |cause| Unusable::Io {
        index: dir.display().to_string(),
        cause,
    }
}

fn open(journal: &Path, dir: &Path) -> Result<Index, Unusable> {
    Ok(Index::open_for(journal, dir)?)
}

/// The end of what the journal holds durably (see [`durable_end`]), as an index error.
fn journal_end(journal: &Path) -> Result<index::Position, Unusable> {
    durable_end(journal).map_err(|e| {
        Unusable::Index(index::IndexError::Journal {
            dir: journal.display().to_string(),
            segment: 0,
            offset: 0,
            reason: e.to_string(),
        })
    })
}

/// Brings the index in `dir` up to the journal's durable end (showing `progress`: a search
/// after the index was deleted rebuilds it first), then runs `s` on it.
///
/// When another process holds the index's writer (the daemon's indexer, usually a second or
/// less behind), the search waits up to `wait` for it to index everything the journal held
/// when the search began, then answers from the index; if it does not get there in time, the
/// search answers nothing ([`Unusable::Behind`]): never silently incomplete.
pub(super) fn search(
    journal: &Path,
    dir: &Path,
    s: &Search,
    wait: Duration,
    progress: &mut dyn journal::Progress,
) -> Result<Page, Unusable> {
    let index = open(journal, dir)?;
    let end = journal_end(journal)?;
    match index.writer() {
        Ok(mut writer) => {
            index.check_follows(journal)?;
            index::catch_up_to(journal, &index, &mut writer, BATCH, Some(end), progress)?;
            // The merges the commit started (usually none, or a few small segments).
            writer.finish()?;
        }
        Err(e) if e.is_locked() => {
            let started = Instant::now();
            let deadline = started + wait;
            let mut said = false;
            loop {
                let gap = behind(journal, index.position()?, end);
                if gap.records == 0 {
                    break;
                }
                // Usually the daemon is there within a second; a very large message can take
                // longer: say why the search is slow.
                if !said && started.elapsed() >= SAY_WAITING && !wait.is_zero() {
                    eprintln!(
                        "handoff archive: waiting for the daemon's indexer ({} records behind; up to {} s, --wait)",
                        gap.records,
                        wait.as_secs()
                    );
                    said = true;
                }
                if Instant::now() >= deadline {
                    return Err(Unusable::Behind {
                        index: dir.display().to_string(),
                        records: gap.records,
                        age: gap
                            .oldest
                            .and_then(|t| jiff::Timestamp::now().duration_since(t).try_into().ok())
                            .map(|d: Duration| format!(", the oldest waiting {} s", d.as_secs()))
                            .unwrap_or_default(),
                        waited: wait.as_secs(),
                    });
                }
                std::thread::sleep(POLL);
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(index.search(s)?)
}

/// A search that has waited this long for the daemon's indexer says so.
const SAY_WAITING: Duration = Duration::from_secs(2);

/// How often a search waiting for the daemon's indexer re-reads the index's position.
const POLL: Duration = Duration::from_millis(50);

/// What lies between the index's position and `end`.
struct Gap {
    records: usize,
    /// The time of the oldest message among them.
    oldest: Option<jiff::Timestamp>,
}

/// Journal records from `at` up to `end` that would change the index (messages, and prune
/// records that remove some); a record that does not read counts as one (the scan will say
/// what it is).
fn behind(journal: &Path, at: index::Position, end: index::Position) -> Gap {
    use crate::journal::{Kind, Records};
    let mut gap = Gap {
        records: 0,
        oldest: None,
    };
    for r in Records::from(journal, at) {
        match r {
            Ok(info) => {
                let start = index::Position {
                    segment: info.id.segment,
                    offset: info.id.offset,
                };
                if start >= end {
                    break;
                }
                if !matches!(
                    info.header.kind,
                    Kind::Message | Kind::Created | Kind::Imported | Kind::Prune
                ) {
                    continue;
                }
                gap.records += 1;
                if gap.oldest.is_none() {
                    gap.oldest =
                        serde_json::from_slice::<crate::journal::record::MessageMeta>(&info.meta)
                            .ok()
                            .and_then(|m| m.time.parse().ok());
                }
            }
            Err(e) => {
                if (index::Position {
                    segment: e.segment,
                    offset: e.offset,
                }) < end
                {
                    gap.records += 1;
                }
                break;
            }
        }
    }
    gap
}

/// What `reindex` did.
pub(super) struct Rebuilt {
    pub progress: Progress,
    pub took: Duration,
}

/// Builds a new index of `journal` in `DIR.new` and puts it in `dir`'s place. A build that
/// is interrupted (kill -9) leaves only `DIR.new`, which no search opens and the next
/// reindex removes: a half-built index is never taken for a complete one.
pub(super) fn rebuild(
    journal: &Path,
    dir: &Path,
    progress: &mut dyn journal::Progress,
) -> Result<Rebuilt, Unusable> {
    let started = Instant::now();
    let Some(name) = dir.file_name() else {
        return Err(io(dir)(std::io::Error::other(
            "not a directory name to build beside",
        )));
    };
    let beside = |suffix: &str| {
        let mut n = name.to_os_string();
        n.push(suffix);
        dir.with_file_name(n)
    };
    let (new, old) = (beside(".new"), beside(".old"));
    for leftover in [&new, &old] {
        match std::fs::remove_dir_all(leftover) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(leftover)(e)),
        }
    }
    // The index in place stays locked until it is replaced: a daemon's indexer writing it
    // would go on writing a directory that is about to be removed.
    let held = match dir.is_dir() {
        true => Some(index::try_lock(dir)?.ok_or_else(|| Unusable::Held {
            index: dir.display().to_string(),
        })?),
        false => None,
    };
    let index = open(journal, &new)?;
    let mut writer = index.rebuild_writer()?;
    let progress = index::catch_up_to(
        journal,
        &index,
        &mut writer,
        rebuild_batch(),
        None,
        progress,
    )?;
    // Waits for the writer's threads: every file of the last commit is written. The rebuild
    // merges nothing (its segments are as large as its heap: see `Index::rebuild_writer`).
    writer.finish()?;
    drop(index);
    // Released before the swap: tantivy removes a lock's file by path, which after the renames
    // would be the new index's. A daemon that takes the old one meanwhile notices the swap
    // before its next pass (the directory is another) and reopens.
    drop(held);
    // Swap: the old index (if any) aside, the new one in, the old one removed. A crash between
    // the two renames leaves no index at all, which the next search rebuilds from the journal.
    let had_old = match std::fs::rename(dir, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(dir)(e)),
    };
    std::fs::rename(&new, dir).map_err(io(dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The renames are durable before the command says it is done.
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    if had_old {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(Rebuilt {
        progress,
        took: started.elapsed(),
    })
}

/// The journal the index in `dir` follows when it is not `journal` (its `handoff-journal`
/// file names another one), for `archive verify`; `None` when it is `journal`'s or names none.
pub(super) fn follows_other(journal: &Path, dir: &Path) -> Option<String> {
    let theirs = std::fs::read_to_string(dir.join(index::JOURNAL_FILE)).ok()?;
    let ours = std::fs::canonicalize(journal).ok()?;
    let theirs = theirs.trim_end();
    (theirs != ours.display().to_string()).then(|| theirs.to_string())
}

/// Records between two commits of `reindex`: one commit, at the end. The rebuild writes into
/// `DIR.new`, which a crash throws away whatever it holds, so intermediate commits would buy
/// nothing but segments to write and merge.
const REBUILD_BATCH: u64 = u64::MAX;

/// Test knob: records between two commits of `reindex` ([`REBUILD_BATCH`] unless set), so
/// that a test can kill a rebuild after its first commit. Not meant for operators.
const BATCH_ENV: &str = "HANDOFF_INDEX_BATCH";

fn rebuild_batch() -> u64 {
    std::env::var(BATCH_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(REBUILD_BATCH)
}

/// Brings the existing index of `journal` in `dir` up to the journal's end, for `archive
/// prune`: the documents of the segments it removed leave the index in the same command.
/// Nothing to do (`None`) when there is no index, or when another process holds its writer
/// (the daemon's indexer, which removes them itself).
pub(super) fn follow(journal: &Path, dir: &Path) -> Result<Option<Progress>, Unusable> {
    if !dir.join("meta.json").exists() {
        return Ok(None);
    }
    let index = open(journal, dir)?;
    let Ok(mut writer) = index.writer() else {
        return Ok(None);
    };
    index.check_follows(journal)?;
    let progress = index::catch_up(journal, &index, &mut writer, BATCH)?;
    writer.finish()?;
    Ok(Some(progress))
}
