//! Appending to the journal, synchronously: recovery at open, batches written and fsynced
//! together, segments sealed when full, and the rules that keep a failed write from being
//! mistaken for a durable one.
//!
//! Several processes may append (the daemon, and `handoff archive` commands writing audit
//! records): every batch takes an exclusive lock on `DIR/lock` and first catches up with what
//! another writer may have appended since, so the hash chain stays one chain.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::error::{EntryError, JournalError, chain};
use super::format::{self, HEADER_LEN, Hash, Header, Kind, RecordHasher};
use super::reader::SegmentRules;
use super::records::{Problem, SegmentRecords, WalkError};
use super::segment::{self, ReadError, RecordId, list_segments, segment_name};
use crate::fsops::Dir;

/// The default size at which a segment is sealed and a new one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// What a record's body is read from.
#[derive(Debug)]
pub enum Body {
    Bytes(Vec<u8>),
    /// A spool file holding `len` bytes from its start (see [`super::spool`]).
    File {
        file: File,
        len: u64,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reader of the body's bytes, from the start (`archive restore` appends them).
    pub fn into_reader(self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        use std::io::{Read, Seek};
        match self {
            Body::Bytes(b) => Ok(Box::new(std::io::Cursor::new(b))),
            Body::File { mut file, len } => {
                file.seek(std::io::SeekFrom::Start(0))?;
                Ok(Box::new(file.take(len)))
            }
        }
    }
}

/// One record to append.
#[derive(Debug)]
pub struct Entry {
    pub kind: Kind,
    /// JSON.
    pub meta: Vec<u8>,
    pub body: Body,
}

impl Entry {
    pub fn new(kind: Kind, meta: &impl Serialize, body: Body) -> Entry {
        // Serializing our own plain structs cannot fail; an empty object keeps the record valid.
        let meta = serde_json::to_vec(meta).unwrap_or_else(|_| b"{}".to_vec());
        Entry { kind, meta, body }
    }

    /// Whether the reader ([`super::records`], [`super::reader::verify`]) would
    /// accept this record. Checked before anything is written: a record the reader refuses
    /// would stop `verify` and `search` for the whole journal and the daemon's next start.
    pub fn check(&self) -> Result<(), EntryError> {
        if self.meta.len() > format::MAX_META_LEN as usize {
            return Err(EntryError::MetaTooLong {
                kind: self.kind.as_str(),
                len: self.meta.len(),
            });
        }
        match self.kind {
            // Their placement is the chain's structure: only the writer itself writes them.
            Kind::SegmentStart | Kind::Seal => Err(EntryError::Reserved(self.kind.as_str())),
            Kind::Prune => match serde_json::from_slice::<super::reader::PruneMeta>(&self.meta) {
                Ok(_) => Ok(()),
                Err(e) => Err(EntryError::BadPrune(e.to_string())),
            },
            Kind::Message | Kind::Created | Kind::Audit | Kind::Imported => Ok(()),
        }
    }
}

/// What recovery at open found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from a torn tail (kept in `torn-*.bin` beside the segments).
    pub cut_bytes: u64,
    pub segments: usize,
}

/// Timing of one batch, for metrics.
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub records: usize,
    pub bytes: u64,
    pub fsync: std::time::Duration,
}

/// The appending end of a journal directory.
#[derive(Debug)]
pub struct Writer {
    /// Every file of the journal is opened through this handle, never by path (see
    /// [`crate::fsops`]: the directory's owner must not lead a root process through a link).
    dir: Dir,
    lock: File,
    segment: u64,
    file: File,
    /// Length of the segment file up to the last durable record.
    len: u64,
    head: Hash,
    records_in_segment: u64,
    max_segment: u64,
    /// Set when a failed batch could not be cut back; cleared by a successful repair.
    broken: Option<String>,
}

impl Writer {
    /// Opens (creating if needed) the journal in `dir`, cutting a torn tail.
    pub fn open(dir: &Path, max_segment: u64) -> Result<(Writer, Recovery), JournalError> {
        let (dir, _) = Dir::open_private(dir, 0o700)?;
        let lock = dir.open_or_create("lock", 0o600)?;
        lock.lock()?;
        let result = Writer::open_locked(dir, lock.try_clone()?, max_segment);
        lock.unlock()?;
        result
    }

    fn open_locked(
        dir: Dir,
        lock: File,
        max_segment: u64,
    ) -> Result<(Writer, Recovery), JournalError> {
        let mut recovery = Recovery::default();
        let segments = list_segments(dir.path())?;
        recovery.segments = segments.len();
        let Some(&last) = segments.last() else {
            let w = Writer::create_segment(dir, lock, 1, [0; 32], max_segment)?;
            return Ok((w, recovery));
        };
        // What the newest segment's start must link to: nothing before the first segment, the
        // end of the segment before; a segment before it that retention removed is accounted
        // for by its prune record, which `verify` checks.
        let first_prev = match last {
            1 => Some([0; 32]),
            n if segments.contains(&(n - 1)) => {
                segment::stored_last_hash(dir.read(&segment_name(n - 1))?)?
            }
            _ => None,
        };
        let mut file = dir.append(&segment_name(last))?;
        let rules = SegmentRules::new(last, first_prev);
        let (len, head, records, last_kind) =
            scan_tail(&dir, &mut file, last, rules, &mut recovery)?;
        if records == 0 {
            // The segment start itself was torn: write it again, linked to the previous segment.
            drop(file);
            dir.remove(&segment_name(last))?;
            let prev = match segments.len() {
                1 => [0; 32],
                _ => last_hash_of(&dir, segments[segments.len() - 2])?,
            };
            let w = Writer::create_segment(dir, lock, last, prev, max_segment)?;
            return Ok((w, recovery));
        }
        if last_kind == Some(Kind::Seal) {
            let w = Writer::create_segment(dir, lock, last + 1, head, max_segment)?;
            return Ok((w, recovery));
        }
        let w = Writer {
            dir,
            lock,
            segment: last,
            file,
            len,
            head,
            records_in_segment: records,
            max_segment,
            broken: None,
        };
        Ok((w, recovery))
    }

    /// Creates segment `n` with its start record and makes it durable.
    fn create_segment(
        dir: Dir,
        lock: File,
        n: u64,
        prev: Hash,
        max_segment: u64,
    ) -> Result<Writer, JournalError> {
        let file = dir.create_new(&segment_name(n), 0o600)?;
        let mut w = Writer {
            dir,
            lock,
            segment: n,
            file,
            len: 0,
            head: prev,
            records_in_segment: 0,
            max_segment,
            broken: None,
        };
        let meta = serde_json::json!({ "segment": n, "created": jiff::Timestamp::now() });
        let mut entry = Entry::new(Kind::SegmentStart, &meta, Body::Bytes(Vec::new()));
        w.write_entry(&mut entry)?;
        w.file.sync_data()?;
        w.dir.sync()?;
        w.len = w.file.metadata()?.len();
        Ok(w)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The handle the journal's files are opened through.
    pub fn dir_handle(&self) -> &Dir {
        &self.dir
    }

    /// The segment being appended to.
    pub fn current_segment(&self) -> u64 {
        self.segment
    }

    /// Runs `f` with the journal locked against other writers and caught up with them.
    pub fn locked<T>(
        &mut self,
        f: impl FnOnce(&mut Writer) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        self.lock.lock()?;
        let result = self.catch_up().and_then(|()| f(self));
        let _ = self.lock.unlock();
        result
    }

    /// [`Writer::append`] for a caller that already holds the lock (inside [`Writer::locked`]).
    pub fn append_while_locked(
        &mut self,
        entries: &mut [Entry],
    ) -> Result<(Vec<RecordId>, BatchStats), JournalError> {
        self.append_locked(entries)
    }

    /// The end of the last durable record (of this writer's or another's it has caught up
    /// with): a walk that stops here reads nothing a failed batch could still cut back.
    pub fn durable(&self) -> super::Position {
        super::Position {
            segment: self.segment,
            offset: self.len,
        }
    }

    /// The hash of the last durable record.
    pub fn head(&self) -> Hash {
        self.head
    }

    /// Appends `entries` as one batch: written, then made durable with one fsync. Either every
    /// entry is durable and its id returned, or none is and the journal is cut back to where it
    /// was (so a record that was not acknowledged never lingers half-written).
    pub fn append(
        &mut self,
        entries: &mut [Entry],
    ) -> Result<(Vec<RecordId>, BatchStats), JournalError> {
        self.lock.lock()?;
        let result = self.append_locked(entries);
        let _ = self.lock.unlock();
        result
    }

    fn append_locked(
        &mut self,
        entries: &mut [Entry],
    ) -> Result<(Vec<RecordId>, BatchStats), JournalError> {
        // Every entry first: a batch is written whole or not at all.
        for entry in entries.iter() {
            entry.check()?;
        }
        if let Some(why) = self.broken.clone() {
            self.repair()
                .map_err(|e| JournalError::Unhealthy(format!("{why}; repair failed: {e}")))?;
        }
        self.catch_up()?;
        let start = (self.segment, self.len, self.head, self.records_in_segment);
        match self.write_batch(entries) {
            Ok(ok) => Ok(ok),
            Err(e) => {
                // Nothing of this batch is acknowledged. Cut the file back to the last durable
                // record; if the data written before the failure cannot be trusted (a failed
                // fsync may have dropped dirty pages, the PostgreSQL lesson), neither can the
                // file handle, so it is reopened.
                if self.segment != start.0 {
                    // A roll happened inside the failed batch: remove the new segment.
                    let _ = self.dir.remove(&segment_name(self.segment));
                }
                self.segment = start.0;
                self.len = start.1;
                self.head = start.2;
                self.records_in_segment = start.3;
                if let Err(r) = self.repair() {
                    self.broken = Some(format!("{e}; cut back failed: {r}"));
                }
                Err(e)
            }
        }
    }

    fn write_batch(
        &mut self,
        entries: &mut [Entry],
    ) -> Result<(Vec<RecordId>, BatchStats), JournalError> {
        let mut ids = Vec::with_capacity(entries.len());
        let mut bytes = 0;
        for entry in entries.iter_mut() {
            let need = HEADER_LEN as u64
                + entry.meta.len() as u64
                + entry.body.len()
                + format::HASH_LEN as u64;
            if self.len + need > self.max_segment && self.records_in_segment > 1 {
                self.roll()?;
            }
            ids.push(RecordId {
                segment: self.segment,
                offset: self.len,
            });
            self.write_entry(entry)?;
            bytes += need;
        }
        let t = Instant::now();
        self.file.sync_data()?;
        let fsync = t.elapsed();
        Ok((
            ids,
            BatchStats {
                records: entries.len(),
                bytes,
                fsync,
            },
        ))
    }

    /// Writes one record at the end of the current segment (not yet durable).
    fn write_entry(&mut self, entry: &mut Entry) -> Result<(), JournalError> {
        let header = Header {
            kind: entry.kind,
            meta_len: entry.meta.len() as u32,
            body_len: entry.body.len(),
            prev: self.head,
        };
        let raw = header.encode();
        let mut hasher = RecordHasher::new(&raw);
        let mut out = io::BufWriter::with_capacity(64 * 1024, &self.file);
        out.write_all(&raw)?;
        hasher.update(&entry.meta);
        out.write_all(&entry.meta)?;
        match &mut entry.body {
            Body::Bytes(b) => {
                hasher.update(b);
                out.write_all(b)?;
            }
            Body::File { file, len } => {
                file.seek(SeekFrom::Start(0))?;
                let mut remaining = *len;
                let mut buf = vec![0u8; 64 * 1024];
                while remaining > 0 {
                    let n = remaining.min(buf.len() as u64) as usize;
                    file.read_exact(&mut buf[..n])?;
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n])?;
                    remaining -= n as u64;
                }
            }
        }
        let hash = hasher.finish();
        out.write_all(&hash)?;
        out.flush()?;
        drop(out);
        self.len += header.record_len();
        self.head = hash;
        self.records_in_segment += 1;
        Ok(())
    }

    /// Seals the current segment and starts the next one.
    fn roll(&mut self) -> Result<(), JournalError> {
        let meta = serde_json::json!({
            "segment": self.segment,
            "records": self.records_in_segment,
            "sealed": jiff::Timestamp::now(),
        });
        let mut seal = Entry::new(Kind::Seal, &meta, Body::Bytes(Vec::new()));
        self.write_entry(&mut seal)?;
        self.file.sync_data()?;
        // Through the handle: the name may have been replaced by a link since it was opened.
        crate::fsops::tighten(&self.file, 0o400)?;
        let next = Writer::create_segment(
            self.dir.try_clone()?,
            self.lock.try_clone()?,
            self.segment + 1,
            self.head,
            self.max_segment,
        )?;
        let Writer {
            file,
            len,
            head,
            records_in_segment,
            segment,
            ..
        } = next;
        self.file = file;
        self.len = len;
        self.head = head;
        self.records_in_segment = records_in_segment;
        self.segment = segment;
        Ok(())
    }

    /// Cuts the current segment back to the last durable record and reopens it.
    fn repair(&mut self) -> Result<(), JournalError> {
        let file = self.dir.append(&segment_name(self.segment))?;
        file.set_len(self.len)?;
        file.sync_all()?;
        self.file = file;
        self.broken = None;
        Ok(())
    }

    /// Picks up records another process appended since our last batch.
    fn catch_up(&mut self) -> Result<(), JournalError> {
        // Another writer (under the same lock, caught up first) appends to the current segment,
        // or seals it with a record before it starts the next one: if the current segment has
        // not grown, nothing was appended anywhere, and the directory need not be listed. This
        // runs once per batch, so it saves a directory listing per fsync.
        if self.file.metadata()?.len() == self.len {
            return Ok(());
        }
        let segments = list_segments(self.dir.path())?;
        let newest = segments.last().copied().unwrap_or(self.segment);
        for n in self.segment..=newest {
            // What the other writer appended keeps the chain, or this writer stops.
            let mut rules = SegmentRules::after(n, self.head);
            if n != self.segment {
                self.segment = n;
                self.file = self.dir.append(&segment_name(n))?;
                self.len = 0;
                self.records_in_segment = 0;
                rules = SegmentRules::new(n, Some(self.head));
            }
            let walk = SegmentRecords::new(self.file.try_clone()?, n, self.len)?.checked(rules);
            for info in walk {
                let info = info?;
                self.head = info.hash;
                self.len = info.end();
                self.records_in_segment += 1;
            }
        }
        Ok(())
    }
}

/// The end of the last durable record of the journal in `dir`, whoever wrote it: read under
/// the writers' lock, which every writer holds from its first write until its fsync (or its
/// cut back), so the files' lengths are durable ends. A follower that reads no further (the
/// indexer, a search catching up) never takes in a record a failed batch could still remove.
pub fn durable_end(dir: &Path) -> Result<super::Position, JournalError> {
    let dir = Dir::open(dir)?;
    let lock = dir.open_or_create("lock", 0o600)?;
    lock.lock()?;
    let end = (|| -> Result<super::Position, JournalError> {
        let Some(&last) = list_segments(dir.path())?.last() else {
            return Ok(super::Position::START);
        };
        let len = dir.read(&segment_name(last))?.metadata()?.len();
        Ok(super::Position {
            segment: last,
            offset: len,
        })
    })();
    let _ = lock.unlock();
    end
}

/// Scans the last segment: returns its durable length, last hash, record count and last kind,
/// cutting a torn tail. Damage followed by valid records is not a torn tail: refuse.
///
/// Every complete record must also keep the segment's rules ([`SegmentRules`]: it links to the
/// record before it, a segment start only first, nothing after the seal), or recovery refuses,
/// even at the very tail with nothing after it. Only an incomplete or unreadable record is cut:
/// that is what a crash in a write leaves. A crash cannot leave a complete record whose hash
/// checks but whose link is wrong (each record carries the head it was written after, under the
/// lock); such a record is a replayed copy, tampering, or records removed before it. Cutting it
/// could drop an acknowledged message (the last of a segment whose middle was removed) and
/// would hide the evidence, so it is refused like damage followed by valid records.
fn scan_tail(
    dir: &Dir,
    file: &mut File,
    segment: u64,
    rules: SegmentRules,
    recovery: &mut Recovery,
) -> Result<(u64, Hash, u64, Option<Kind>), JournalError> {
    let mut walk = SegmentRecords::new(file.try_clone()?, segment, 0)?.checked(rules);
    let file_len = walk.len();
    let mut head = [0u8; 32];
    let mut records = 0;
    let mut last_kind = None;
    for next in walk.by_ref() {
        let (offset, e) = match next {
            Ok(info) => {
                head = info.hash;
                last_kind = Some(info.header.kind);
                records += 1;
                continue;
            }
            Err(WalkError {
                problem: Problem::Read(ReadError::Io(e)) | Problem::Open(e),
                ..
            }) => return Err(e.into()),
            Err(
                e @ WalkError {
                    problem: Problem::Broken(_),
                    ..
                },
            ) => return Err(e.into()),
            Err(WalkError {
                offset,
                problem: Problem::Read(e),
                ..
            }) => (offset, chain(&e)),
        };
        if let Some(at) = segment::valid_header_after(file, offset, file_len)? {
            return Err(JournalError::Corrupt {
                segment,
                offset,
                reason: format!("{e}, but a valid record follows at offset {at}"),
            });
        }
        // A torn tail: keep the cut bytes for inspection, then cut.
        let mut torn = Vec::new();
        file.seek(SeekFrom::Start(offset))?;
        file.take(file_len - offset).read_to_end(&mut torn)?;
        let (keep, mut out) = create_torn(dir, segment, offset)?;
        out.write_all(&torn)?;
        out.sync_all()?;
        tracing::warn!(segment, offset, bytes = torn.len(), kept = %keep.display(), "journal: cut a torn tail ({e})");
        file.set_len(offset)?;
        file.sync_all()?;
        recovery.cut_bytes += torn.len() as u64;
        break;
    }
    Ok((walk.offset(), head, records, last_kind))
}

/// The hash of the last record of a (sealed) segment.
fn last_hash_of(dir: &Dir, n: u64) -> Result<Hash, JournalError> {
    let mut head = [0u8; 32];
    for info in SegmentRecords::new(dir.read(&segment_name(n))?, n, 0)? {
        head = info?.hash;
    }
    Ok(head)
}

/// A new file for the bytes cut at `segment`/`offset`: `torn-SEGMENT-OFFSET.bin`, or with a
/// `.N` before `.bin` when a tail was cut there before (a name is never reused: it may be a
/// link the directory's owner planted, or evidence of an earlier cut).
fn create_torn(dir: &Dir, segment: u64, offset: u64) -> io::Result<(std::path::PathBuf, File)> {
    let base = format!("torn-{segment:010}-{offset}");
    let mut last = None;
    for n in 0..100 {
        let name = match n {
            0 => format!("{base}.bin"),
            n => format!("{base}.{n}.bin"),
        };
        match dir.create_new(&name, 0o600) {
            Ok(f) => return Ok((dir.path().join(name), f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no name left for a torn tail")))
}
