//! Walking the journal's records in order: the one loop every reader of the journal uses
//! (`verify`, search and export, retention, the writer's recovery and catch-up, and whatever
//! follows the journal).
//!
//! - [`SegmentRecords`]: the records of one segment file from a given offset, each hash checked,
//!   and, when asked, the segment's rules ([`SegmentRules`]: chain links, segment start, seal).
//! - [`Records`]: the same over every segment of a directory, from the start or from a
//!   [`Position`] a caller wrote down (a follower resumes there and reads exactly the rest).
//!
//! Segments are read in large blocks with positioned reads (`pread`): a walk over a journal
//! costs a system call per block, not four per record, and never moves the file's offset, so
//! the writer can walk its own append handle.
//!
//! A walk stops at the first record it cannot read or that breaks the rules: it yields one
//! error naming the segment and offset, then nothing.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{JournalError, chain};
use super::format::{HASH_LEN, HEADER_LEN, Hash, Header, Kind, RecordHasher};
use super::record::PruneMeta;
use super::segment::{ReadError, RecordId, RecordInfo, list_segments, segment_path};

/// Bytes read from a segment per system call. Records are a few KiB to a few MiB; a block of
/// 1 MiB holds hundreds of typical records and keeps the walk's memory small.
pub const BLOCK: usize = 1024 * 1024;

/// Where a walk stands: the start of the next record to read. After the last record of a
/// segment it is that segment's length: a walk resumed there reads what was appended to the
/// segment since, then the segments after it.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

impl Position {
    /// Before the first record of the journal.
    pub const START: Position = Position {
        segment: 0,
        offset: 0,
    };

    /// Just after `record`: where a walk that has handled it resumes.
    pub fn after(record: &RecordInfo) -> Position {
        Position {
            segment: record.id.segment,
            offset: record.end(),
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.segment, self.offset)
    }
}

/// Why a walk stopped, and where.
#[derive(Debug, thiserror::Error)]
#[error("segment {segment}, offset {offset}: {}", chain(problem))]
pub struct WalkError {
    pub segment: u64,
    pub offset: u64,
    pub problem: Problem,
}

/// What went wrong at a [`WalkError`]'s place.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The segments could not be listed, or a segment file opened (offset 0).
    #[error("i/o")]
    Open(#[source] io::Error),
    /// The record there cannot be read, or its hash does not match.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The record is whole but breaks the segment's rules.
    #[error("{0}")]
    Broken(String),
}

impl WalkError {
    /// What went wrong, with its causes: the `reason` of a [`JournalError::Corrupt`] or of a
    /// `verify` error.
    pub fn reason(&self) -> String {
        chain(&self.problem)
    }
}

/// A damaged or unreadable record is corruption at its place; a segment that cannot be listed or
/// opened is an i/o error.
impl From<WalkError> for JournalError {
    fn from(e: WalkError) -> Self {
        match e.problem {
            Problem::Open(io) => JournalError::from(io),
            Problem::Read(_) | Problem::Broken(_) => JournalError::Corrupt {
                segment: e.segment,
                offset: e.offset,
                reason: e.reason(),
            },
        }
    }
}

/// A segment file read in blocks at explicit offsets, up to a length.
struct Blocks {
    file: File,
    /// Nothing at or after this offset is read (the file's length when the walk began).
    limit: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`; `buf.len()` bytes from there are held.
    start: u64,
}

impl Blocks {
    fn new(file: File, limit: u64) -> Blocks {
        Blocks {
            file,
            limit,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Calls `f` with the `len` bytes at `at`, in pieces, in order.
    fn each(&mut self, mut at: u64, len: u64, mut f: impl FnMut(&[u8])) -> io::Result<()> {
        let end = at + len;
        while at < end {
            let held = self.start..self.start + self.buf.len() as u64;
            if !held.contains(&at) {
                self.fill(at)?;
            }
            let from = (at - self.start) as usize;
            let n = (self.buf.len() - from).min((end - at) as usize);
            f(&self.buf[from..from + n]);
            at += n as u64;
        }
        Ok(())
    }

    /// Copies the bytes at `at` into `out`.
    fn read(&mut self, at: u64, out: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        self.each(at, out.len() as u64, |piece| {
            out[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
        })
    }

    /// Reads the block starting at `at`; end of file before any byte is an error.
    fn fill(&mut self, at: u64) -> io::Result<()> {
        let want = self.limit.saturating_sub(at).min(BLOCK as u64) as usize;
        self.buf.resize(want, 0);
        let mut got = 0;
        while got < want {
            match self.file.read_at(&mut self.buf[got..], at + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
        self.buf.truncate(got);
        self.start = at;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        }
        Ok(())
    }
}

/// The records of one segment file, in order, from an offset (see the module docs).
pub struct SegmentRecords {
    segment: u64,
    blocks: Blocks,
    /// The file's length when the walk began: records appended later are not read.
    len: u64,
    offset: u64,
    rules: Option<SegmentRules>,
    done: bool,
}

impl SegmentRecords {
    /// Walks segment `segment`, read through `file`, from `offset` (a record start) to the
    /// file's current end. Reads are positioned: `file`'s own offset is never used or moved.
    pub fn new(file: File, segment: u64, offset: u64) -> io::Result<SegmentRecords> {
        let len = file.metadata()?.len();
        Ok(SegmentRecords {
            segment,
            blocks: Blocks::new(file, len),
            len,
            offset,
            rules: None,
            done: false,
        })
    }

    /// Checks every record against `rules` too (they start where the walk starts).
    pub fn checked(mut self, rules: SegmentRules) -> SegmentRecords {
        self.rules = Some(rules);
        self
    }

    /// Where the next record starts: after the walk, the length of what it read whole (and,
    /// if it stopped at an error, the place of that error).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file's length when the walk began.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segment file (its offset is the caller's: the walk does not use it).
    pub fn file(&mut self) -> &mut File {
        &mut self.blocks.file
    }

    /// The body of `record`, a record of this segment.
    pub fn body(&mut self, record: &RecordInfo) -> io::Result<Vec<u8>> {
        let mut body = vec![0u8; record.header.body_len as usize];
        self.blocks.read(record.body_offset, &mut body)?;
        Ok(body)
    }

    /// Reads and checks the record at `self.offset` (what
    /// [`super::segment::read_record`] does, from the blocks).
    fn read(&mut self) -> Result<RecordInfo, ReadError> {
        let offset = self.offset;
        let available = self.len.saturating_sub(offset);
        if available < HEADER_LEN as u64 {
            return Err(ReadError::Incomplete {
                needed: HEADER_LEN as u64,
                available,
            });
        }
        let mut raw = [0u8; HEADER_LEN];
        self.blocks.read(offset, &mut raw)?;
        let header = Header::decode(&raw)?;
        if header.record_len() > available {
            return Err(ReadError::Incomplete {
                needed: header.record_len(),
                available,
            });
        }
        let mut hasher = RecordHasher::new(&raw);
        let mut meta = vec![0u8; header.meta_len as usize];
        self.blocks.read(offset + HEADER_LEN as u64, &mut meta)?;
        hasher.update(&meta);
        let body_offset = offset + HEADER_LEN as u64 + u64::from(header.meta_len);
        self.blocks
            .each(body_offset, header.body_len, |piece| hasher.update(piece))?;
        let mut stored: Hash = [0u8; HASH_LEN];
        self.blocks
            .read(body_offset + header.body_len, &mut stored)?;
        let hash = hasher.finish();
        if hash != stored {
            return Err(ReadError::HashMismatch);
        }
        Ok(RecordInfo {
            id: RecordId {
                segment: self.segment,
                offset,
            },
            header,
            meta,
            body_offset,
            hash,
        })
    }
}

impl Iterator for SegmentRecords {
    type Item = Result<RecordInfo, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.offset >= self.len {
            return None;
        }
        let (segment, offset) = (self.segment, self.offset);
        let fail = |problem| WalkError {
            segment,
            offset,
            problem,
        };
        let info = match self.read() {
            Ok(info) => info,
            Err(e) => {
                self.done = true;
                return Some(Err(fail(Problem::Read(e))));
            }
        };
        if let Some(rules) = &mut self.rules
            && let Err(reason) = rules.check(&info)
        {
            self.done = true;
            return Some(Err(fail(Problem::Broken(reason))));
        }
        self.offset = info.end();
        Some(Ok(info))
    }
}

/// Every record of a journal directory, in order, from a [`Position`] (see the module docs).
pub struct Records {
    dir: PathBuf,
    /// The segments still to walk, ascending (listed when the walk begins).
    segments: std::vec::IntoIter<u64>,
    current: Option<SegmentRecords>,
    from: Position,
    checked: bool,
    /// An error met before the first record (listing the directory).
    pending: Option<WalkError>,
    done: bool,
}

/// Every record of the journal in `dir`, from the first.
pub fn records(dir: &Path) -> Records {
    Records::from(dir, Position::START)
}

impl Records {
    /// The records of the journal in `dir` from `at` on: the rest of `at`'s segment from its
    /// offset, then every later segment. A segment since removed (pruned) is skipped.
    pub fn from(dir: &Path, at: Position) -> Records {
        let (segments, pending) = match list_segments(dir) {
            Ok(s) => (s.into_iter().filter(|&n| n >= at.segment).collect(), None),
            Err(e) => (
                Vec::new(),
                Some(WalkError {
                    segment: 0,
                    offset: 0,
                    problem: Problem::Open(e),
                }),
            ),
        };
        Records {
            dir: dir.to_path_buf(),
            segments: segments.into_iter(),
            current: None,
            from: at,
            checked: false,
            pending,
            done: false,
        }
    }

    /// Checks each segment's rules too ([`SegmentRules`]): a segment walked from its start
    /// must begin with its segment start; every record must link to the one before it. A
    /// segment entered in the middle (resuming from a [`Position`]) is linked to the hash
    /// stored just before that position, which is the hash of the record it follows.
    pub fn checked(mut self) -> Records {
        self.checked = true;
        self
    }

    /// The bytes the walk has still to read, from the lengths the segment files have now: a
    /// cheap total for [`super::progress::Progress`] (one `stat` per segment, no record read).
    /// A segment still being appended to may end up longer; one that cannot be opened counts
    /// for nothing (the walk names it when it gets there).
    pub fn bytes_ahead(&self) -> u64 {
        let current = self
            .current
            .as_ref()
            .map_or(0, |s| s.len.saturating_sub(s.offset));
        let later: u64 = self
            .segments
            .as_slice()
            .iter()
            .map(|&n| {
                let len = std::fs::metadata(segment_path(&self.dir, n)).map_or(0, |m| m.len());
                let from = if n == self.from.segment && self.current.is_none() {
                    self.from.offset
                } else {
                    0
                };
                len.saturating_sub(from)
            })
            .sum();
        current + later
    }

    /// Where the walk stands: just after the last record yielded, or where it began.
    pub fn position(&self) -> Position {
        match &self.current {
            Some(s) => Position {
                segment: s.segment,
                offset: s.offset,
            },
            None => self.from,
        }
    }

    /// The segment being walked, for reading the bodies of its records
    /// ([`SegmentRecords::body`]).
    pub fn segment(&mut self) -> Option<&mut SegmentRecords> {
        self.current.as_mut()
    }

    /// Opens segment `n` at the offset the walk enters it.
    fn open(&self, n: u64) -> Result<SegmentRecords, WalkError> {
        let offset = if n == self.from.segment {
            self.from.offset
        } else {
            0
        };
        let fail = |e| WalkError {
            segment: n,
            offset: 0,
            problem: Problem::Open(e),
        };
        let file = File::open(segment_path(&self.dir, n)).map_err(fail)?;
        let walk = SegmentRecords::new(file, n, offset).map_err(fail)?;
        if !self.checked {
            return Ok(walk);
        }
        if offset == 0 {
            // Links across segments are the caller's (`verify` accounts for pruned ones).
            return Ok(walk.checked(SegmentRules::new(n, None)));
        }
        let mut walk = walk;
        let before = offset
            .checked_sub(HASH_LEN as u64)
            .ok_or_else(|| WalkError {
                segment: n,
                offset,
                problem: Problem::Broken("not a record start".into()),
            })?;
        let mut last: Hash = [0u8; HASH_LEN];
        walk.blocks.read(before, &mut last).map_err(|e| WalkError {
            segment: n,
            offset,
            problem: Problem::Read(e.into()),
        })?;
        Ok(walk.checked(SegmentRules::after(n, last)))
    }
}

impl Iterator for Records {
    type Item = Result<RecordInfo, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.pending.take() {
            self.done = true;
            return Some(Err(e));
        }
        loop {
            if let Some(walk) = &mut self.current {
                match walk.next() {
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                    Some(Ok(info)) => return Some(Ok(info)),
                    None => {}
                }
            }
            let n = self.segments.next()?;
            match self.open(n) {
                Ok(walk) => self.current = Some(walk),
                // Pruned since the listing: nothing of it is left to read.
                Err(WalkError {
                    problem: Problem::Open(e),
                    ..
                }) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The rules the records of one segment obey, checked one record at a time in file order: the
/// first is a segment start naming its segment (and linking to the end of the segment before
/// it, when that is known), every later record links to the one before it, no segment start
/// in the middle, nothing after the seal, prune records readable. [`verify`] applies them to
/// every segment; the writer applies them to what it scans at start-up and what it catches up
/// with, so it never appends after a record `verify` would refuse.
#[derive(Debug, Clone)]
pub struct SegmentRules {
    n: u64,
    /// What the segment start must link to, when known.
    first_prev: Option<Hash>,
    /// The hash of the last record checked (`None` before the first).
    last: Option<Hash>,
    sealed: bool,
}

impl SegmentRules {
    /// Segment `n` from its first record; `first_prev`: the hash its start must link to.
    pub fn new(n: u64, first_prev: Option<Hash>) -> SegmentRules {
        SegmentRules {
            n,
            first_prev,
            last: None,
            sealed: false,
        }
    }

    /// Segment `n` after a record with hash `last` that was already checked.
    pub fn after(n: u64, last: Hash) -> SegmentRules {
        SegmentRules {
            n,
            first_prev: None,
            last: Some(last),
            sealed: false,
        }
    }

    /// Checks the next record; `Err` is the reason it breaks the segment.
    pub fn check(&mut self, info: &RecordInfo) -> Result<(), String> {
        let n = self.n;
        match self.last {
            None => {
                if info.header.kind != Kind::SegmentStart {
                    return Err("a segment must begin with a segment start record".into());
                }
                let meta: serde_json::Value =
                    serde_json::from_slice(&info.meta).unwrap_or_default();
                if meta.get("segment").and_then(|v| v.as_u64()) != Some(n) {
                    return Err(format!(
                        "segment start names another segment (file is segment {n})"
                    ));
                }
                if self.first_prev.is_some_and(|p| p != info.header.prev) {
                    return Err("segment does not link to the end of the segment before it".into());
                }
            }
            Some(last) => {
                if self.sealed {
                    return Err("record after the segment's seal".into());
                }
                if info.header.prev != last {
                    return Err("chain broken: this record does not follow the one before it (a record was removed, reordered or inserted)".into());
                }
                if info.header.kind == Kind::SegmentStart {
                    return Err("segment start in the middle of a segment".into());
                }
            }
        }
        if info.header.kind == Kind::Prune {
            serde_json::from_slice::<PruneMeta>(&info.meta)
                .map_err(|e| format!("unreadable prune record: {e}"))?;
        }
        self.last = Some(info.hash);
        self.sealed = info.header.kind == Kind::Seal;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::format::Kind;
    use crate::journal::writer::{Body, Entry, Writer};

    /// Bodies of every size around the block: records straddle block ends, and one body is
    /// longer than two blocks.
    fn body(i: usize) -> Vec<u8> {
        let len = match i % 4 {
            0 => 100,
            1 => BLOCK - 7,
            2 => 2 * BLOCK + 13,
            _ => 5000,
        };
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    /// A journal of several segments (small ones: each holds two or three records).
    fn journal(dir: &Path, messages: usize) {
        let (mut w, _) = Writer::open(dir, 3 * BLOCK as u64).unwrap();
        for i in 0..messages {
            let e = Entry::new(
                Kind::Message,
                &serde_json::json!({ "i": i }),
                Body::Bytes(body(i)),
            );
            w.append(&mut [e]).unwrap();
        }
    }

    fn all(walk: Records) -> Vec<RecordInfo> {
        walk.map(|r| r.unwrap()).collect()
    }

    #[test]
    fn a_walk_resumed_from_any_position_yields_exactly_the_rest() {
        let d = tempfile::tempdir().unwrap();
        journal(d.path(), 12);
        let every = all(records(d.path()).checked());
        assert!(
            list_segments(d.path()).unwrap().len() >= 4,
            "several segments"
        );
        let messages = every.iter().filter(|r| r.header.kind == Kind::Message);
        assert_eq!(messages.count(), 12);
        for (k, record) in every.iter().enumerate() {
            let at = Position::after(record);
            for walk in [
                Records::from(d.path(), at),
                Records::from(d.path(), at).checked(),
            ] {
                let rest: Vec<_> = all(walk).iter().map(|r| (r.id, r.hash)).collect();
                let want: Vec<_> = every[k + 1..].iter().map(|r| (r.id, r.hash)).collect();
                assert_eq!(rest, want, "resumed after record {k} ({at})");
            }
        }
        assert!(
            Records::from(d.path(), Position::after(every.last().unwrap()))
                .next()
                .is_none()
        );
    }

    /// A follower writes down where it stands and comes back later: it reads what was appended
    /// since, in the segment it stood in and in those started after it.
    #[test]
    fn a_follower_reads_what_was_appended_since_its_position() {
        let d = tempfile::tempdir().unwrap();
        journal(d.path(), 3);
        let mut walk = records(d.path()).checked();
        let seen = walk
            .by_ref()
            .inspect(|r| assert!(r.is_ok(), "{r:?}"))
            .count();
        let at = walk.position();
        // Another writer appends: first to the segment the follower stood in, then to new ones.
        journal(d.path(), 6);
        let every = all(records(d.path()));
        let later: Vec<_> = all(Records::from(d.path(), at).checked())
            .iter()
            .map(|r| r.id)
            .collect();
        let want: Vec<_> = every[seen..].iter().map(|r| r.id).collect();
        assert_eq!(later, want);
        assert_eq!(
            later[0],
            RecordId {
                segment: at.segment,
                offset: at.offset
            }
        );
    }

    #[test]
    fn bodies_read_back_byte_for_byte() {
        let d = tempfile::tempdir().unwrap();
        journal(d.path(), 5);
        let mut walk = records(d.path());
        let mut i = 0;
        while let Some(r) = walk.next() {
            let r = r.unwrap();
            if r.header.kind == Kind::Message {
                assert_eq!(walk.segment().unwrap().body(&r).unwrap(), body(i));
                i += 1;
            }
        }
        assert_eq!(i, 5);
    }

    /// A damaged record stops the walk with one error that names its segment and offset; the
    /// records before it were yielded, nothing after it is.
    #[test]
    fn a_damaged_record_is_named_by_segment_and_offset() {
        let d = tempfile::tempdir().unwrap();
        journal(d.path(), 8);
        let every = all(records(d.path()));
        let victim = every
            .iter()
            .find(|r| r.id.segment == 2 && r.header.kind == Kind::Message)
            .unwrap();
        let path = segment_path(d.path(), 2);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(victim.body_offset + 1000) as usize] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        for walk in [records(d.path()), records(d.path()).checked()] {
            let got: Vec<_> = walk.collect();
            let before = every.iter().position(|r| r.id == victim.id).unwrap();
            assert_eq!(
                got.len(),
                before + 1,
                "the records before it, then one error"
            );
            let e = got.last().unwrap().as_ref().unwrap_err();
            assert_eq!((e.segment, e.offset), (2, victim.id.offset));
            assert!(
                matches!(e.problem, Problem::Read(ReadError::HashMismatch)),
                "{e}"
            );
            assert_eq!(
                e.to_string(),
                format!(
                    "segment 2, offset {}: content does not match its hash (altered or damaged)",
                    victim.id.offset
                )
            );
            match JournalError::from(got.into_iter().last().unwrap().unwrap_err()) {
                JournalError::Corrupt {
                    segment, offset, ..
                } => assert_eq!((segment, offset), (2, victim.id.offset)),
                other => panic!("{other}"),
            }
        }
    }

    /// With the rules, a record that is whole but does not link to the one before it is an
    /// error at its place (here: a copy of a record appended after itself).
    #[test]
    fn a_checked_walk_names_a_broken_link() {
        let d = tempfile::tempdir().unwrap();
        journal(d.path(), 1);
        let every = all(records(d.path()));
        let last = every.last().unwrap();
        let path = segment_path(d.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let end = bytes.len();
        bytes.extend_from_within(last.id.offset as usize..end);
        std::fs::write(&path, bytes).unwrap();
        assert!(records(d.path()).all(|r| r.is_ok()), "each record is whole");
        let e = records(d.path()).checked().find_map(Result::err).unwrap();
        assert_eq!((e.segment, e.offset), (1, end as u64));
        assert!(matches!(e.problem, Problem::Broken(_)), "{e}");
    }
}
