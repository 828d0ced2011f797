//! The archive index: a tantivy index derived from the journal, so that a search answers from
//! postings instead of decoding every message.
//!
//! The journal stays the only source of truth. The index can be deleted at any time and rebuilt
//! from it; each commit records the journal position it has reached ([`Position`], in the
//! commit's payload, written atomically with the documents), so whoever builds it resumes from
//! there after a crash: no record missing, none twice (documents added after the last commit
//! are discarded with it).
//!
//! - [`analysis`]: how text is cut into terms (case-folded words, CJK bigrams), shared with the
//!   journal's full scan so both find the same messages.
//! - [`document`]: the schema and the document of one record (pure).
//! - [`query`]: the scan's filters as a tantivy query (pure).
//! - [`corpus`]: a generated mail corpus for tests and benchmarks.
//! - [`verify`]: comparing the index with the journal (`archive verify`).
//! - This file: the index directory (the I/O edge) and following the journal.

pub mod analysis;
pub mod corpus;
pub mod document;
pub mod query;
pub mod verify;

use std::path::Path;

use serde::Serialize;
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::schema::Value;
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

pub use analysis::{TOKENIZER, Words};
pub use document::{Doc, Fields};
pub use query::{Search, translate};

use crate::journal::format::Hash;
use crate::journal::reader::PruneMeta;
use crate::journal::records::Problem;
use crate::journal::search::Hit;
use crate::journal::segment::{list_segments, stored_hash_before};
use crate::journal::{self, Kind, RecordId, Records, Silent};

/// Where the index has reached in the journal: every record before it is in the index, none
/// after (the journal's own resumable walk position).
pub use crate::journal::Position;

/// Memory the writer may buffer before it writes a segment (tantivy's minimum is 15 MB).
pub const WRITER_HEAP: usize = 64 * 1024 * 1024;

/// The heap of a rebuild's writer. A rebuild commits once, at the end, so its segments are
/// as large as the heap lets them be (a segment per 12,000 messages or so of the bench's
/// corpus), and it does not merge them ([`Index::rebuild_writer`]). At 100,000 messages this
/// took 8 % less CPU than [`WRITER_HEAP`] with a commit every 10,000 records, for about 170 MiB
/// more RSS; 512 MiB was no faster (2,139 against 2,313 messages per CPU-second, half the
/// segments).
pub const REBUILD_WRITER_HEAP: usize = 256 * 1024 * 1024;

/// The daemon's writer heap: it commits about once a second, so its segments are small and a
/// larger heap would only raise its memory (tantivy wants at least 15 MB per thread).
pub const DAEMON_WRITER_HEAP: usize = 16 * 1024 * 1024;

/// Journal bytes a catch-up hands the daemon's writer between two commits. tantivy queues up
/// to 10,000 documents in front of its indexing threads, whatever their size, and reading and
/// decoding outpace indexing: without a bound in bytes, what waits in that queue grows with
/// the backlog and the size of the mail. A commit waits for the queue to empty. Under load the
/// daemon's passes mostly stay below it (about a second of mail each); catching up a backlog,
/// it commits every 8 MiB of journal. Measured (README, "The index"): the daemon catching up
/// 75,548 messages peaked at 106-128 MiB RSS against 210-216 MiB with 10,000-record commits
/// only, most of the rest being mapped index files.
pub const DAEMON_COMMIT_BYTES: u64 = 8 * 1024 * 1024;

/// The same bound for [`Index::writer`] (a search or prune catching the index up): its heap.
pub const COMMIT_BYTES: u64 = WRITER_HEAP as u64;

/// Why the index could not be opened, written or searched.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {dir}: {cause}")]
    Tantivy {
        dir: String,
        cause: tantivy::TantivyError,
    },
    #[error("index {dir}: unreadable journal position `{payload}` in the last commit: {reason}")]
    Payload {
        dir: String,
        payload: String,
        reason: String,
    },
    #[error("index {dir}: {cause}")]
    Io { dir: String, cause: std::io::Error },
    #[error(
        "index {dir} has other fields than this version of handoff writes (it was built by another version); `handoff archive reindex` rebuilds it"
    )]
    OtherSchema { dir: String },
    #[error(
        "index {dir} does not follow the journal's records (the journal was replaced or restored since the index was built); `handoff archive reindex` rebuilds it"
    )]
    Diverged { dir: String },
    #[error(
        "index {index} follows the journal {theirs}, not {ours} (choose --index, or `handoff archive reindex` to rebuild it for this journal)"
    )]
    OtherJournal {
        index: String,
        theirs: String,
        ours: String,
    },
    #[error("journal {dir}: segment {segment} offset {offset}: {reason}")]
    Journal {
        dir: String,
        segment: u64,
        offset: u64,
        reason: String,
    },
}

impl IndexError {
    /// Whether another writer (another process) holds the index's lock.
    pub fn is_locked(&self) -> bool {
        matches!(
            self,
            IndexError::Tantivy {
                cause: tantivy::TantivyError::LockFailure(
                    tantivy::directory::error::LockError::LockBusy,
                    _
                ),
                ..
            }
        )
    }
}

/// A page of hits and how many there are in all.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub total: usize,
    pub hits: Vec<Hit>,
}

/// An open index directory.
pub struct Index {
    dir: String,
    index: tantivy::Index,
    fields: Fields,
    reader: IndexReader,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Index {
    /// Opens the index in `dir`, creating it (and `dir`, mode 0700: it holds message text)
    /// when there is none.
    pub fn open_or_create(dir: &Path) -> Result<Index, IndexError> {
        let name = dir.display().to_string();
        let io = |cause| IndexError::Io {
            dir: name.clone(),
            cause,
        };
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(io)?;
        let tantivy = |cause| IndexError::Tantivy {
            dir: name.clone(),
            cause,
        };
        let fields = Fields::new();
        let directory = MmapDirectory::open(dir).map_err(|e| tantivy(e.into()))?;
        let index = tantivy::Index::open_or_create(directory, fields.schema.clone()).map_err(
            |e| match e {
                tantivy::TantivyError::SchemaError(_) => {
                    IndexError::OtherSchema { dir: name.clone() }
                }
                e => tantivy(e),
            },
        )?;
        index
            .tokenizers()
            .register(TOKENIZER, TextAnalyzer::builder(Words).build());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(tantivy)?;
        Ok(Index {
            dir: name,
            index,
            fields,
            reader,
        })
    }

    fn tantivy(&self, cause: tantivy::TantivyError) -> IndexError {
        IndexError::Tantivy {
            dir: self.dir.clone(),
            cause,
        }
    }

    /// Opens the index of `journal` in `dir` (creating it, 0700), checking or writing which
    /// journal it follows ([`JOURNAL_FILE`]). Every process that writes the index opens it
    /// this way: the daemon's indexer, a search catching up, `reindex`.
    pub fn open_for(journal: &Path, dir: &Path) -> Result<Index, IndexError> {
        let io = |cause| IndexError::Io {
            dir: dir.display().to_string(),
            cause,
        };
        let ours = std::fs::canonicalize(journal).map_err(io)?;
        let ours = ours.display().to_string();
        match std::fs::read_to_string(dir.join(JOURNAL_FILE)) {
            Ok(theirs) if theirs.trim_end() != ours => {
                return Err(IndexError::OtherJournal {
                    index: dir.display().to_string(),
                    theirs: theirs.trim_end().to_string(),
                    ours,
                });
            }
            Ok(_) => return Index::open_or_create(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let index = Index::open_or_create(dir)?;
        // Written after the index exists: a directory without it is adopted by the next opener.
        std::fs::write(dir.join(JOURNAL_FILE), format!("{ours}\n")).map_err(io)?;
        Ok(index)
    }

    /// [`Index::open_for`], except that an index built by another version of handoff (other
    /// fields: [`IndexError::OtherSchema`]) is emptied and started over, as the daemon's indexer
    /// does: the index is derived from the journal. `true` when it was started over. Only the
    /// index's own files go; the directory, its mode and its journal name stay.
    pub fn open_for_or_start_over(journal: &Path, dir: &Path) -> Result<(Index, bool), IndexError> {
        match Index::open_for(journal, dir) {
            Err(IndexError::OtherSchema { .. }) => {
                let io = |cause| IndexError::Io {
                    dir: dir.display().to_string(),
                    cause,
                };
                for e in std::fs::read_dir(dir).map_err(io)? {
                    let e = e.map_err(io)?;
                    if e.file_name() != JOURNAL_FILE && e.file_type().map_err(io)?.is_file() {
                        std::fs::remove_file(e.path()).map_err(io)?;
                    }
                }
                Ok((Index::open_for(journal, dir)?, true))
            }
            r => Ok((r?, false)),
        }
    }

    /// The journal position of the last commit (the start of the journal for a new index).
    pub fn position(&self) -> Result<Position, IndexError> {
        Ok(self.mark()?.at)
    }

    /// The last commit's mark: its journal position and the hash of the record that ends there
    /// (`None` before the first commit that passed a record, and in indexes written before
    /// marks carried it).
    fn mark(&self) -> Result<Mark, IndexError> {
        let metas = self.index.load_metas().map_err(|e| self.tantivy(e))?;
        match metas.payload {
            None => Ok(Mark::default()),
            Some(p) => serde_json::from_str(&p).map_err(|e| IndexError::Payload {
                dir: self.dir.clone(),
                payload: p,
                reason: e.to_string(),
            }),
        }
    }

    /// Whether this index follows the history of `journal` it was built from: the journal
    /// still holds, just before the index's position, the hash of the record the index last
    /// passed. Not so when the journal was replaced under a stopped daemon (a damaged segment
    /// moved aside, a backup restored): the position then points into other records, and
    /// indexing on from it would skip or garble them. A segment that is gone (pruned) or a
    /// mark without a hash cannot be checked, and counts as followed.
    pub fn follows(&self, journal: &Path) -> Result<bool, IndexError> {
        let mark = self.mark()?;
        let Some(hash) = mark.hash else {
            return Ok(true);
        };
        journal_has(journal, mark.at, &hash)
    }

    /// [`Index::follows`], as an error naming the way out when it does not.
    pub fn check_follows(&self, journal: &Path) -> Result<(), IndexError> {
        match self.follows(journal)? {
            true => Ok(()),
            false => Err(IndexError::Diverged {
                dir: self.dir.clone(),
            }),
        }
    }

    /// The index's only writer (tantivy locks the directory: a second one is an error). It
    /// uses every core: tantivy's indexing threads, and as many threads decoding messages.
    ///
    /// It is the writer of a command that catches the index up and ends (a search, `archive
    /// prune`): such a command ends it with [`Writer::finish`], or each would leave a segment
    /// of its own (the merges its commit starts die with the writer) and the segments would
    /// pile up when no daemon's indexer merges them. Its merges take only small segments
    /// ([`SmallSegments`]), so that waiting for them stays short.
    pub fn writer(&self) -> Result<Writer, IndexError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let w = self.writer_of(None, WRITER_HEAP, cores, COMMIT_BYTES)?;
        w.w.set_merge_policy(Box::new(SmallSegments));
        Ok(w)
    }

    /// The daemon's writer: one indexing thread, and messages decoded on the caller's thread
    /// (the cores belong to the mail first), and [`DAEMON_WRITER_HEAP`].
    pub fn daemon_writer(&self) -> Result<Writer, IndexError> {
        self.writer_of(Some(1), DAEMON_WRITER_HEAP, 1, DAEMON_COMMIT_BYTES)
    }

    /// The writer of a rebuild (`archive reindex`, into a directory nobody searches yet):
    /// every core, and [`REBUILD_WRITER_HEAP`].
    pub fn rebuild_writer(&self) -> Result<Writer, IndexError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let w = self.writer_of(None, REBUILD_WRITER_HEAP, cores, u64::MAX)?;
        // No merges: each document is written once, in the segment its thread's heap fills.
        // Merging as it went (tantivy's log merge policy) cost 17 % of the CPU (100,000 messages: 1,930 against 2,313 messages per CPU-second),
        // for an index 21 % smaller and one segment instead of eight; queries stay far within
        // their goals on the segments (see the README's archive bench). The daemon's indexer
        // merges them later, at its low priority.
        w.w.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        Ok(w)
    }

    fn writer_of(
        &self,
        threads: Option<usize>,
        heap: usize,
        decoders: usize,
        commit_bytes: u64,
    ) -> Result<Writer, IndexError> {
        let w = match threads {
            None => self.index.writer(heap),
            Some(n) => self.index.writer_with_num_threads(n, heap),
        }
        .map_err(|e| self.tantivy(e))?;
        Ok(Writer {
            dir: self.dir.clone(),
            w,
            fields: self.fields.clone(),
            decoders,
            commit_bytes,
        })
    }

    /// Runs a search on the last commit: a page of hits, newest first, and the total. Its time
    /// goes to [`crate::metrics::INDEX_SEARCH_SECONDS`] of the process that runs it.
    pub fn search(&self, s: &Search) -> Result<Page, IndexError> {
        let started = std::time::Instant::now();
        let page = self.search_inner(s);
        crate::metrics::index_search(started.elapsed());
        page
    }

    fn search_inner(&self, s: &Search) -> Result<Page, IndexError> {
        self.reader.reload().map_err(|e| self.tantivy(e))?;
        let searcher = self.reader.searcher();
        let q = translate(&self.fields, s);
        let limit = s.limit.min(searcher.num_docs() as usize);
        let (total, top) = if limit == 0 {
            let total = searcher.search(&q, &Count).map_err(|e| self.tantivy(e))?;
            (total, Vec::new())
        } else {
            let top = TopDocs::with_limit(limit)
                .and_offset(s.offset)
                .order_by_fast_field::<i64>(document::TIME, Order::Desc);
            searcher
                .search(&q, &(Count, top))
                .map_err(|e| self.tantivy(e))?
        };
        let mut hits = Vec::with_capacity(top.len());
        for (_, address) in top {
            let d: TantivyDocument = searcher.doc(address).map_err(|e| self.tantivy(e))?;
            hits.push(self.hit(&d));
        }
        Ok(Page { total, hits })
    }

    fn hit(&self, d: &TantivyDocument) -> Hit {
        let f = &self.fields;
        let text = |field| {
            d.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let kind = text(f.kind);
        Hit {
            id: text(f.id),
            kind: [Kind::Message, Kind::Created, Kind::Imported]
                .into_iter()
                .find(|k| k.as_str() == kind)
                .map_or("unknown", Kind::as_str),
            time: text(f.time_text),
            from: text(f.sender_text),
            to: d
                .get_all(f.final_text)
                .filter_map(|v| v.as_str())
                .map(str::to_string)
                .collect(),
            subject: text(f.subject_text),
        }
    }

    /// Segments in the last commit (each is searched on its own: fewer is faster).
    pub fn segments(&self) -> Result<usize, IndexError> {
        self.reader.reload().map_err(|e| self.tantivy(e))?;
        Ok(self.reader.searcher().segment_readers().len())
    }

    /// Documents in the last commit.
    pub fn records(&self) -> Result<u64, IndexError> {
        self.reader.reload().map_err(|e| self.tantivy(e))?;
        Ok(self.reader.searcher().num_docs())
    }

    /// The record id of every document in the last commit, in no order, a record indexed twice
    /// listed twice (for comparing the index with the journal).
    pub fn ids(&self) -> Result<Vec<String>, IndexError> {
        self.reader.reload().map_err(|e| self.tantivy(e))?;
        let searcher = self.reader.searcher();
        let docs = searcher
            .search(
                &tantivy::query::AllQuery,
                &tantivy::collector::DocSetCollector,
            )
            .map_err(|e| self.tantivy(e))?;
        let mut ids = Vec::with_capacity(docs.len());
        for address in docs {
            let d: TantivyDocument = searcher.doc(address).map_err(|e| self.tantivy(e))?;
            ids.push(
                d.get_first(self.fields.id)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string(),
            );
        }
        Ok(ids)
    }
}

/// Takes the writer lock of the index directory `dir` without opening the index (which may
/// be damaged): `Some(guard)` holds it until dropped, `None` when another writer (the daemon's
/// indexer, another process) has it. For a command that replaces the whole directory
/// (`reindex`) and must not pull it from under a writer.
pub fn try_lock(dir: &Path) -> Result<Option<tantivy::directory::DirectoryLock>, IndexError> {
    use tantivy::Directory;
    use tantivy::directory::error::LockError;
    let io = |cause: std::io::Error| IndexError::Io {
        dir: dir.display().to_string(),
        cause,
    };
    let directory =
        MmapDirectory::open(dir).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    match directory.acquire_lock(&tantivy::directory::INDEX_WRITER_LOCK) {
        Ok(guard) => Ok(Some(guard)),
        Err(LockError::LockBusy) => Ok(None),
        Err(LockError::IoError(cause)) => {
            Err(io(std::io::Error::new(cause.kind(), cause.to_string())))
        }
    }
}

/// The file in the index directory naming the journal it follows (its canonical path): an
/// index caught up on another journal would resume at a position that means nothing there.
pub const JOURNAL_FILE: &str = "handoff-journal";

/// The merge policy of a command's catch-up ([`Index::writer`]): once
/// [`SmallSegments::AT_LEAST`] segments hold fewer than [`SmallSegments::DOCS`] documents each,
/// the smallest of them (at most [`SmallSegments::AT_MOST`]) are merged into one. Larger
/// segments (`reindex` writes them thousands of documents each) are left to the daemon's
/// indexer, so that a search that waits for its merges waits for little: at most about 64,000
/// documents' worth, usually a few hundred.
#[derive(Debug, Clone, Copy)]
pub struct SmallSegments;

impl SmallSegments {
    pub const DOCS: u32 = 2_000;
    pub const AT_LEAST: usize = 8;
    pub const AT_MOST: usize = 32;
}

impl tantivy::indexer::MergePolicy for SmallSegments {
    fn compute_merge_candidates(
        &self,
        segments: &[tantivy::SegmentMeta],
    ) -> Vec<tantivy::indexer::MergeCandidate> {
        let mut small: Vec<_> = segments
            .iter()
            .filter(|s| s.max_doc() < Self::DOCS)
            .collect();
        if small.len() < Self::AT_LEAST {
            return Vec::new();
        }
        small.sort_by_key(|s| s.max_doc());
        small.truncate(Self::AT_MOST);
        vec![tantivy::indexer::MergeCandidate(
            small.iter().map(|s| s.id()).collect(),
        )]
    }
}

/// Adds and deletes documents; nothing is visible, or durable, before [`Writer::commit`].
pub struct Writer {
    dir: String,
    w: IndexWriter,
    fields: Fields,
    /// Threads that decode messages while catching up (1: the caller's own).
    decoders: usize,
    /// Journal bytes a catch-up takes between two commits ([`DAEMON_COMMIT_BYTES`]);
    /// `u64::MAX` for a rebuild, which commits once.
    commit_bytes: u64,
}

impl Writer {
    fn tantivy(&self, cause: tantivy::TantivyError) -> IndexError {
        IndexError::Tantivy {
            dir: self.dir.clone(),
            cause,
        }
    }

    pub fn add(&mut self, docs: &[Doc]) -> Result<(), IndexError> {
        for doc in docs {
            self.w
                .add_document(doc.to_tantivy(&self.fields))
                .map_err(|e| self.tantivy(e))?;
        }
        Ok(())
    }

    /// Removes one record's document.
    pub fn delete(&mut self, id: RecordId) {
        self.w
            .delete_term(Term::from_field_text(self.fields.id, &id.to_string()));
    }

    /// Removes every document of a journal segment (what retention removes).
    pub fn delete_segment(&mut self, segment: u64) {
        self.w
            .delete_term(Term::from_field_u64(self.fields.segment, segment));
    }

    /// Empties the index, durably: it then starts over from the journal's first record (when
    /// it no longer [`Index::follows`] the journal).
    pub fn reset(&mut self) -> Result<(), IndexError> {
        self.w.delete_all_documents().map_err(|e| self.tantivy(e))?;
        self.commit(Position::START, None)
    }

    /// Discards everything added and deleted since the last commit (after a failed one), keeping
    /// the writer and its lock.
    pub fn rollback(&mut self) -> Result<(), IndexError> {
        self.w.rollback().map(|_| ()).map_err(|e| self.tantivy(e))
    }

    /// Ends the writer after the merges it started are done (dropping it abandons them).
    pub fn finish(self) -> Result<(), IndexError> {
        let dir = self.dir;
        self.w
            .wait_merging_threads()
            .map_err(|cause| IndexError::Tantivy { dir, cause })
    }

    /// Makes everything added and deleted durable and visible, together with `reached`: the
    /// journal position that the index now holds everything before.
    pub fn commit(&mut self, reached: Position, hash: Option<&Hash>) -> Result<(), IndexError> {
        let mark = Mark {
            at: reached,
            hash: hash.map(hex::encode),
        };
        // Serializing two integers and a string cannot fail.
        let payload = serde_json::to_string(&mark).unwrap_or_default();
        let dir = &self.dir;
        let tantivy = |cause| IndexError::Tantivy {
            dir: dir.clone(),
            cause,
        };
        let mut prepared = self.w.prepare_commit().map_err(tantivy)?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(tantivy)?;
        Ok(())
    }
}

/// What a commit's payload holds: the journal position the index holds everything before,
/// and the hash of the record that ends there (hex), which ties the position to one history
/// of the journal ([`Index::follows`]).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Mark {
    #[serde(flatten)]
    at: Position,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
}

/// What [`catch_up`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Journal records read (of every kind).
    pub records: u64,
    /// Documents added.
    pub indexed: u64,
    pub reached: Position,
}

/// Indexes every journal record after the index's position, committing every `batch` records
/// or as soon as the writer's bound in journal bytes is passed ([`DAEMON_COMMIT_BYTES`]), each
/// commit storing the position reached, and at the end. A prune record removes the
/// documents of the segments it names.
pub fn catch_up(
    journal: &Path,
    index: &Index,
    writer: &mut Writer,
    batch: u64,
) -> Result<Progress, IndexError> {
    catch_up_to(journal, index, writer, batch, None, &mut Silent)
}

/// [`catch_up`], reading no record that starts at or after `until` (when given): the daemon's
/// indexer stops at what the journal has made durable, since a record after it may still be
/// cut back by a failed batch and its place reused by another. `progress` is told the journal
/// bytes ahead when it starts (all of them: `until` is not counted out) and each record as it
/// reaches the index.
///
/// With a writer that may use every core ([`Index::writer`]) the messages are decoded on
/// several threads (one per core) while tantivy indexes on its own; the records still reach the
/// index, and its commits, in journal order.
pub fn catch_up_to(
    journal: &Path,
    index: &Index,
    writer: &mut Writer,
    batch: u64,
    until: Option<Position>,
    shown: &mut dyn journal::Progress,
) -> Result<Progress, IndexError> {
    let mut progress = Progress {
        reached: index.position()?,
        ..Progress::default()
    };
    let from = progress.reached;
    shown.total(Records::from(journal, from).bytes_ahead());
    let mut committed = from;
    let mut last_hash = None;
    let fields = writer.fields.clone();
    let decoders = writer.decoders;
    let mut uncommitted_bytes = 0u64;
    let mut take = |r: Decoded| -> Result<(), IndexError> {
        progress.records += 1;
        uncommitted_bytes = uncommitted_bytes.saturating_add(r.len);
        shown.advance(r.len, 1);
        last_hash = Some(r.hash);
        if let Some(doc) = r.doc {
            writer.w.add_document(doc).map_err(|e| writer.tantivy(e))?;
            progress.indexed += 1;
        }
        // Retention appends a prune record before it removes segments: their documents leave
        // the index in the commit that passes the record, whenever the indexer gets there.
        for segment in r.pruned {
            writer.delete_segment(segment);
        }
        if progress.records.is_multiple_of(batch) || uncommitted_bytes >= writer.commit_bytes {
            writer.commit(r.next, Some(&r.hash))?;
            committed = r.next;
            uncommitted_bytes = 0;
        }
        Ok(())
    };
    let reached = match decoders {
        0 | 1 => each_record(journal, from, until, |id, kind, meta, body, next, hash| {
            take(decode(&fields, id, kind, meta, body.as_deref(), next, hash))
        })?,
        n => decode_in_parallel(journal, from, until, &fields, n, &mut take)?,
    };
    // Nothing new since the last commit: no commit (each is an fsync).
    if reached != committed {
        writer.commit(reached, last_hash.as_ref())?;
    }
    progress.reached = reached;
    Ok(progress)
}

/// One journal record as the index takes it: its document (messages), the journal segments
/// whose documents it removes (prune records), the position after it and its hash.
struct Decoded {
    doc: Option<TantivyDocument>,
    pruned: Vec<u64>,
    next: Position,
    hash: Hash,
    /// The record's bytes in the journal, for progress.
    len: u64,
}

fn decode(
    fields: &Fields,
    id: RecordId,
    kind: Kind,
    meta: &[u8],
    body: Option<&[u8]>,
    next: Position,
    hash: &Hash,
) -> Decoded {
    let pruned = match kind {
        Kind::Prune => serde_json::from_slice::<PruneMeta>(meta)
            .map(|p| p.removed.into_iter().map(|r| r.segment).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Decoded {
        doc: body
            .and_then(|b| Doc::new(id, kind, meta, b))
            .map(|d| d.to_tantivy(fields)),
        pruned,
        next,
        hash: *hash,
        // `next` is in the record's segment (see `Position::after`).
        len: next.offset.saturating_sub(id.offset),
    }
}

/// A record as read from the journal, before decoding.
struct Raw {
    id: RecordId,
    kind: Kind,
    meta: Vec<u8>,
    body: Option<Vec<u8>>,
    next: Position,
    hash: Hash,
}

/// Records handed to a decoder at once: enough that the channels cost nothing per record.
const CHUNK_RECORDS: usize = 64;
/// ... and at most about this many bytes of them (a few large messages are one chunk), so that
/// what is in flight (two chunks per decoder each way) stays bounded whatever the mail.
const CHUNK_BYTES: usize = 4 << 20;

/// Walks the journal on one thread, decodes chunks of records on `decoders` threads (chunk `k`
/// on thread `k % decoders`) and hands every record to `take` on the caller's thread in
/// journal order. Returns what [`each_record`] returns; a decoder that panics panics here,
/// before anything after its chunk is taken.
fn decode_in_parallel(
    journal: &Path,
    from: Position,
    until: Option<Position>,
    fields: &Fields,
    decoders: usize,
    take: &mut dyn FnMut(Decoded) -> Result<(), IndexError>,
) -> Result<Position, IndexError> {
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
    std::thread::scope(|s| {
        let mut inputs: Vec<SyncSender<Vec<Raw>>> = Vec::with_capacity(decoders);
        let mut outputs: Vec<Receiver<Vec<Decoded>>> = Vec::with_capacity(decoders);
        let mut workers = Vec::with_capacity(decoders);
        for _ in 0..decoders {
            let (tx, rx) = sync_channel::<Vec<Raw>>(2);
            let (done_tx, done_rx) = sync_channel::<Vec<Decoded>>(2);
            inputs.push(tx);
            outputs.push(done_rx);
            workers.push(s.spawn(move || {
                for chunk in rx {
                    let decoded = chunk
                        .into_iter()
                        .map(|r| {
                            decode(
                                fields,
                                r.id,
                                r.kind,
                                &r.meta,
                                r.body.as_deref(),
                                r.next,
                                &r.hash,
                            )
                        })
                        .collect();
                    if done_tx.send(decoded).is_err() {
                        return;
                    }
                }
            }));
        }
        let walker = s.spawn(move || {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            let mut sent = 0usize;
            // A send fails only when the taker has stopped (an error): the walk stops too.
            let mut stopped = false;
            let reached = each_record(journal, from, until, |id, kind, meta, body, next, hash| {
                bytes += meta.len() + body.as_ref().map_or(0, Vec::len);
                chunk.push(Raw {
                    id,
                    kind,
                    meta: meta.to_vec(),
                    body,
                    next,
                    hash: *hash,
                });
                if chunk.len() >= CHUNK_RECORDS || bytes >= CHUNK_BYTES {
                    bytes = 0;
                    if inputs[sent % decoders]
                        .send(std::mem::take(&mut chunk))
                        .is_err()
                    {
                        stopped = true;
                        return Err(IndexError::Journal {
                            dir: journal.display().to_string(),
                            segment: next.segment,
                            offset: next.offset,
                            reason: "indexing stopped".into(),
                        });
                    }
                    sent += 1;
                }
                Ok(())
            });
            if !chunk.is_empty() && !stopped && inputs[sent % decoders].send(chunk).is_ok() {
                sent += 1;
            }
            (reached, sent)
        });
        // Chunk `k` comes back from decoder `k % decoders`; when the walk is over, every
        // decoder's channel closes after its last chunk.
        let mut taken = 0usize;
        while let Ok(chunk) = outputs[taken % decoders].recv() {
            for r in chunk {
                take(r)?;
            }
            taken += 1;
        }
        drop(outputs);
        for w in workers {
            if let Err(panic) = w.join() {
                std::panic::resume_unwind(panic);
            }
        }
        let (reached, sent) = match walker.join() {
            Ok(done) => done,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let reached = reached?;
        // Every chunk sent was taken (a decoder that stopped early panicked, above): nothing
        // after a chunk that was not indexed may be committed.
        assert_eq!(sent, taken, "every decoded chunk is indexed");
        Ok(reached)
    })
}

/// The journal adapter: calls `f(id, kind, meta, body, next, hash)` for each record from `from`
/// on, in order (`body` only for messages; `next` is the position after the record, `hash` the
/// record's own), and returns
/// the position after the last. A record that does not read back in the last segment is a
/// write in progress: reading stops before it. Anywhere else it is damage, and an error.
fn each_record(
    dir: &Path,
    from: Position,
    until: Option<Position>,
    mut f: impl FnMut(RecordId, Kind, &[u8], Option<Vec<u8>>, Position, &Hash) -> Result<(), IndexError>,
) -> Result<Position, IndexError> {
    let name = dir.display().to_string();
    let fail = |segment, offset, reason: String| IndexError::Journal {
        dir: name.clone(),
        segment,
        offset,
        reason,
    };
    let last = list_segments(dir)
        .map_err(|e| fail(from.segment, 0, e.to_string()))?
        .last()
        .copied();
    let mut walk = Records::from(dir, from);
    let mut reached = from;
    while let Some(info) = walk.next() {
        let info = match info {
            Ok(info) => info,
            Err(e) if Some(e.segment) == last && !matches!(e.problem, Problem::Open(_)) => {
                return Ok(reached);
            }
            // Past what is durable: a write in progress, wherever it is.
            Err(e)
                if until.is_some_and(|u| {
                    Position {
                        segment: e.segment,
                        offset: e.offset,
                    } >= u
                }) =>
            {
                return Ok(reached);
            }
            Err(e) => return Err(fail(e.segment, e.offset, e.reason())),
        };
        let start = Position {
            segment: info.id.segment,
            offset: info.id.offset,
        };
        if until.is_some_and(|u| start >= u) {
            return Ok(reached);
        }
        reached = Position::after(&info);
        let body = match info.header.kind {
            Kind::Message | Kind::Created | Kind::Imported => {
                let segment = walk
                    .segment()
                    .ok_or_else(|| fail(reached.segment, reached.offset, "no segment".into()))?;
                Some(
                    segment
                        .body(&info)
                        .map_err(|e| fail(reached.segment, reached.offset, e.to_string()))?,
                )
            }
            _ => None,
        };
        f(
            info.id,
            info.header.kind,
            &info.meta,
            body,
            reached,
            &info.hash,
        )?;
    }
    Ok(reached)
}

/// Whether the journal in `journal` holds `hash` (hex) just before `at`.
fn journal_has(journal: &Path, at: Position, hash: &str) -> Result<bool, IndexError> {
    let Ok(expected) = hex::decode(hash) else {
        return Ok(false);
    };
    match stored_hash_before(journal, at) {
        Ok(Some(stored)) => Ok(stored[..] == expected[..]),
        Ok(None) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(cause) => Err(IndexError::Io {
            dir: journal.display().to_string(),
            cause,
        }),
    }
}

#[cfg(test)]
mod tests;
