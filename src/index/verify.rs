//! `archive verify`'s second half: does the index hold exactly what the journal says it should?
//!
//! Three checks, on one snapshot of the index (one commit: its segments and the journal
//! position in its payload), taken before the journal is walked so that the journal has at
//! least everything the index has seen:
//!
//! 1. [`Snapshot::checksums`]: every file of the commit is there and matches its checksum
//!    (tantivy's footer CRC); a damaged or missing file is named.
//! 2. [`Compare`], fed each journal record by the journal's own verify walk (the journal is read
//!    once): the committed position is the end of a record of this journal (or in a segment
//!    retention removed since); the ids in the index are exactly the journal's records that are
//!    indexed ([`Doc::new`]'s kinds) up to that position, minus the segments a prune record
//!    before it removed, each once.
//! 3. Records after the position are the index being *behind* (the daemon's indexer, or the
//!    next search, catches up): counted, not a difference.
//!
//! It scales with the journal, not with memory: ids are compared one journal segment at a time
//! (a segment's records from the walk, the same segment's ids from the index's term dictionary,
//! `SEGMENT-` to `SEGMENT.`), both sorted by offset; only the differences named are kept.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tantivy::directory::MmapDirectory;
use tantivy::index::{SegmentComponent, SegmentReader};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocSet, TERMINATED};

use super::{Doc, Fields, IndexError, Position};
use crate::journal::format::Kind;
use crate::journal::progress::Progress;
use crate::journal::reader::PruneMeta;
use crate::journal::segment::{RecordId, RecordInfo};

/// Ids named for each kind of difference (the counts say how many there are).
pub const NAMED: usize = 5;

/// A file of the index that is missing, unreadable or does not match its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    pub file: PathBuf,
    pub reason: String,
}

/// What is in the index directory.
pub enum Opened {
    /// No index: the directory does not exist or is empty.
    None,
    /// The commit itself cannot be read (its `meta.json`, say).
    Damaged(Vec<Damage>),
    Snapshot(Snapshot),
}

/// One commit of the index, read-only (no lock: the daemon's indexer may go on writing).
pub struct Snapshot {
    dir: PathBuf,
    index: tantivy::Index,
    metas: Vec<tantivy::index::SegmentMeta>,
    pub position: Position,
}

/// Opens the last commit of the index in `dir`, without creating or changing anything.
pub fn open(dir: &Path) -> Result<Opened, IndexError> {
    let name = dir.display().to_string();
    let io = |cause| IndexError::Io {
        dir: name.clone(),
        cause,
    };
    let mut entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Opened::None),
        Err(e) => return Err(io(e)),
    };
    if entries.next().is_none() {
        return Ok(Opened::None);
    }
    let meta = dir.join("meta.json");
    let damaged =
        |file: PathBuf, reason: String| Ok(Opened::Damaged(vec![Damage { file, reason }]));
    if !meta.exists() {
        return damaged(meta, "missing".into());
    }
    let opened = MmapDirectory::open(dir)
        .map_err(tantivy::TantivyError::from)
        .and_then(tantivy::Index::open);
    let index = match opened {
        Ok(i) => i,
        // Which file: the commit (`meta.json`) or tantivy's list of its files. (tantivy's
        // own message quotes the whole file.)
        Err(e) => {
            return match unreadable_json(dir) {
                Some((file, why)) => damaged(file, why),
                None => damaged(meta, e.to_string()),
            };
        }
    };
    let metas = match index.load_metas() {
        Ok(m) => m,
        Err(e) => return damaged(meta, e.to_string()),
    };
    let position = match &metas.payload {
        None => Position::START,
        Some(p) => match serde_json::from_str(p) {
            Ok(p) => p,
            Err(e) => return damaged(meta, format!("unreadable journal position `{p}`: {e}")),
        },
    };
    Ok(Opened::Snapshot(Snapshot {
        dir: dir.to_path_buf(),
        index,
        metas: metas.segments,
        position,
    }))
}

/// The first of tantivy's JSON files in `dir` that does not parse, and why.
fn unreadable_json(dir: &Path) -> Option<(PathBuf, String)> {
    ["meta.json", ".managed.json"].into_iter().find_map(|f| {
        let path = dir.join(f);
        let why = match std::fs::read(&path) {
            Err(e) => e.to_string(),
            Ok(b) => match serde_json::from_slice::<serde_json::Value>(&b) {
                Ok(_) => return None,
                Err(e) => format!("not valid JSON ({e})"),
            },
        };
        Some((path, why))
    })
}

impl Snapshot {
    /// The files of the commit (relative to the index directory): each segment's components,
    /// its deletes when it has some.
    fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for m in &self.metas {
            for &c in SegmentComponent::iterator() {
                let wanted = match c {
                    SegmentComponent::TempStore => false,
                    SegmentComponent::Delete => m.has_deletes(),
                    _ => true,
                };
                if wanted {
                    out.push(m.relative_path(c));
                }
            }
        }
        out
    }

    /// Checks every file of the commit against its checksum, telling `progress` the bytes.
    pub fn checksums(&self, progress: &mut dyn Progress) -> Vec<Damage> {
        let files = self.files();
        let size = |f: &PathBuf| std::fs::metadata(self.dir.join(f)).map_or(0, |m| m.len());
        progress.total(files.iter().map(size).sum());
        let mut damage = Vec::new();
        for f in files {
            let path = self.dir.join(&f);
            let reason = match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("missing".to_string()),
                Err(e) => Some(e.to_string()),
                Ok(m) => {
                    let checked = self.index.directory().validate_checksum(&f);
                    progress.advance(m.len(), 0);
                    match checked {
                        Ok(true) => None,
                        Ok(false) => Some("does not match its checksum".into()),
                        Err(e) => Some(e.to_string()),
                    }
                }
            };
            if let Some(reason) = reason {
                damage.push(Damage { file: path, reason });
            }
        }
        damage
    }

    /// Whether the index has committed since this snapshot (the daemon's indexer goes on
    /// writing, and may remove the files of segments it merged): then damage found in the
    /// snapshot may only be files that went with it, and a new snapshot tells.
    pub fn superseded(&self) -> bool {
        let ids = |m: &[tantivy::index::SegmentMeta]| {
            let mut v: Vec<_> = m.iter().map(|s| (s.id(), s.delete_opstamp())).collect();
            v.sort();
            v
        };
        self.index
            .load_metas()
            .is_ok_and(|now| ids(&now.segments) != ids(&self.metas))
    }

    /// Opens the commit's segments for [`Compare`] (after [`Snapshot::checksums`] found them
    /// whole).
    pub fn compare(&self) -> Result<Compare, IndexError> {
        let tantivy = |cause| IndexError::Tantivy {
            dir: self.dir.display().to_string(),
            cause,
        };
        let mut readers = Vec::with_capacity(self.metas.len());
        for m in &self.metas {
            readers.push(SegmentReader::open(&self.index.segment(m.clone())).map_err(tantivy)?);
        }
        let fields = Fields::new();
        let documents = readers.iter().map(|r| u64::from(r.num_docs())).sum();
        let mut in_index = BTreeSet::new();
        for r in &readers {
            let inverted = r.inverted_index(fields.segment).map_err(tantivy)?;
            let mut terms = inverted.terms().stream().map_err(|e| tantivy(e.into()))?;
            while terms.advance() {
                if let Ok(be) = <[u8; 8]>::try_from(terms.key()) {
                    in_index.insert(u64::from_be_bytes(be));
                }
            }
        }
        Ok(Compare {
            dir: self.dir.display().to_string(),
            readers,
            fields,
            position: self.position,
            found_position: self.position == Position::START,
            end: Position::START,
            segment: None,
            expected: Vec::new(),
            after: Vec::new(),
            walked: BTreeSet::new(),
            in_index,
            pruned_before: BTreeSet::new(),
            pruned_after: BTreeSet::new(),
            accounted: 0,
            error: None,
            report: Report {
                index: self.dir.display().to_string(),
                position: self.position,
                documents,
                ..Report::default()
            },
        })
    }
}

/// Ids of one kind of difference: how many, and the first few.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ids {
    pub count: u64,
    pub first: Vec<String>,
}

impl Ids {
    fn add(&mut self, id: impl std::fmt::Display) {
        self.count += 1;
        if self.first.len() < NAMED {
            self.first.push(id.to_string());
        }
    }
}

/// What the comparison found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub index: String,
    /// The journal position of the index's last commit.
    pub position: Position,
    /// Documents in the index.
    pub documents: u64,
    /// Journal records the index should hold (indexed kinds up to its position, minus what
    /// retention removed).
    pub expected: u64,
    /// The newest of those (the journal's order).
    pub last_expected: Option<String>,
    /// The newest record id found in the index.
    pub last_indexed: Option<String>,
    /// Why the position is not one of this journal, if it is not.
    pub bad_position: Option<String>,
    /// Records of the journal after the position that the index will take.
    pub behind: u64,
    /// The newest of those.
    pub journal_last: Option<String>,
    /// Documents of segments retention removed after the position: they leave the index when
    /// it passes the prune record.
    pub pruned_pending: u64,
    /// In the index, but not a record of the journal up to the position.
    pub extra: Ids,
    /// Records of the journal up to the position that the index lacks.
    pub missing: Ids,
    /// Records the index holds more than once.
    pub twice: Ids,
    /// Documents whose id is no record id of this journal.
    pub unidentified: u64,
}

impl Report {
    /// Whether the index differs from the journal (being behind is not a difference).
    pub fn differs(&self) -> bool {
        self.bad_position.is_some()
            || self.extra.count > 0
            || self.missing.count > 0
            || self.twice.count > 0
            || self.unidentified > 0
    }
}

/// The comparison, fed the journal's records in order ([`Compare::record`]), then
/// [`Compare::finish`]ed.
pub struct Compare {
    dir: String,
    readers: Vec<SegmentReader>,
    fields: Fields,
    position: Position,
    found_position: bool,
    /// After the last record walked.
    end: Position,
    /// The journal segment being walked.
    segment: Option<u64>,
    /// Its indexed records up to the position, and after it (offsets, ascending).
    expected: Vec<u64>,
    after: Vec<u64>,
    walked: BTreeSet<u64>,
    /// Journal segments the index has documents (or deleted documents) of.
    in_index: BTreeSet<u64>,
    /// Segments removed by prune records before the position (their documents must be gone)
    /// and after it (they are still to go).
    pruned_before: BTreeSet<u64>,
    pruned_after: BTreeSet<u64>,
    /// Documents found under a journal id.
    accounted: u64,
    error: Option<IndexError>,
    report: Report,
}

impl Compare {
    /// The next journal record, in order.
    pub fn record(&mut self, info: &RecordInfo) {
        if self.error.is_some() {
            return;
        }
        if self.segment != Some(info.id.segment) {
            self.close_segment();
            self.segment = Some(info.id.segment);
            self.walked.insert(info.id.segment);
        }
        let after = Position::after(info);
        let before_position = after <= self.position;
        self.found_position |= after == self.position;
        self.end = after;
        if info.header.kind == Kind::Prune
            && let Ok(prune) = serde_json::from_slice::<PruneMeta>(&info.meta)
        {
            let set = if before_position {
                &mut self.pruned_before
            } else {
                &mut self.pruned_after
            };
            set.extend(prune.removed.iter().map(|r| r.segment));
        }
        // What the index takes of a record depends on its kind and meta only (the body gives
        // text, never whether there is a document).
        if Doc::new(info.id, info.header.kind, &info.meta, &[]).is_none() {
            return;
        }
        if before_position {
            self.expected.push(info.id.offset);
            self.report.expected += 1;
            self.report.last_expected = Some(info.id.to_string());
        } else {
            self.after.push(info.id.offset);
            self.report.behind += 1;
            self.report.journal_last = Some(info.id.to_string());
        }
    }

    /// Compares the segment just walked with the index's documents of it.
    fn close_segment(&mut self) {
        let Some(n) = self.segment.take() else {
            return;
        };
        let expected = std::mem::take(&mut self.expected);
        let after = std::mem::take(&mut self.after);
        let indexed = match self.ids_of(n) {
            Ok(ids) => ids,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        let r = &mut self.report;
        let id = |offset| RecordId { segment: n, offset };
        let (mut e, mut i) = (expected.iter().peekable(), indexed.iter().peekable());
        loop {
            match (e.peek(), i.peek()) {
                (None, None) => break,
                (Some(&&want), Some(&&(have, count))) if want == have => {
                    if count > 1 {
                        r.twice.add(id(have));
                    }
                    r.last_indexed = Some(id(have).to_string());
                    e.next();
                    i.next();
                }
                (Some(&&want), Some(&&(have, _))) if want < have => {
                    r.missing.add(id(want));
                    e.next();
                }
                (Some(&&want), None) => {
                    r.missing.add(id(want));
                    e.next();
                }
                (_, Some(&&(have, _))) => {
                    // Indexed, but not a record up to the position: beyond it (the commit's
                    // position is wrong) or no record at all.
                    let beyond = after.binary_search(&have).is_ok();
                    r.extra.add(if beyond {
                        format!("{} (after the index's position)", id(have))
                    } else {
                        id(have).to_string()
                    });
                    r.last_indexed = Some(id(have).to_string());
                    i.next();
                }
            }
        }
    }

    /// The index's live documents of journal segment `n`: (offset, how many), by offset. An id
    /// under `n-` that is no offset is named as extra here.
    fn ids_of(&mut self, n: u64) -> Result<Vec<(u64, u32)>, IndexError> {
        let tantivy = |cause| IndexError::Tantivy {
            dir: self.dir.clone(),
            cause,
        };
        let (from, to) = (format!("{n}-"), format!("{n}."));
        let mut out: Vec<(u64, u32)> = Vec::new();
        for reader in &self.readers {
            let inverted = reader.inverted_index(self.fields.id).map_err(tantivy)?;
            let mut terms = inverted
                .terms()
                .range()
                .ge(&from)
                .lt(&to)
                .into_stream()
                .map_err(|e| tantivy(e.into()))?;
            while terms.advance() {
                let info = terms.value().clone();
                let alive = match reader.alive_bitset() {
                    // No deletes: every document with the term is live.
                    None => info.doc_freq,
                    Some(alive) => {
                        let mut postings = inverted
                            .read_postings_from_terminfo(&info, IndexRecordOption::Basic)
                            .map_err(|e| tantivy(e.into()))?;
                        let mut n = 0;
                        while postings.doc() != TERMINATED {
                            n += u32::from(alive.is_alive(postings.doc()));
                            postings.advance();
                        }
                        n
                    }
                };
                if alive == 0 {
                    continue;
                }
                self.accounted += u64::from(alive);
                let key = String::from_utf8_lossy(terms.key());
                match key[from.len()..].parse::<u64>() {
                    Ok(offset) => out.push((offset, alive)),
                    Err(_) => self.report.extra.add(key),
                }
            }
        }
        // Each reader's terms are sorted as text ("10" before "9"): sorted by offset here,
        // and an id in two segments of the index counted once with both documents.
        out.sort_unstable();
        out.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.1 += later.1;
            }
            same
        });
        Ok(out)
    }

    /// The comparison after the last record of the journal.
    pub fn finish(mut self) -> Result<Report, IndexError> {
        self.close_segment();
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        // Segments the walk did not see: removed by retention (their documents go when the
        // index passes the prune record), or unknown to this journal.
        let unseen: Vec<u64> = self.in_index.difference(&self.walked).copied().collect();
        for n in unseen {
            let ids = self.ids_of(n)?;
            if self.pruned_after.contains(&n) {
                self.report.pruned_pending += ids.iter().map(|&(_, c)| u64::from(c)).sum::<u64>();
                continue;
            }
            for (offset, _) in ids {
                self.report.extra.add(RecordId { segment: n, offset });
            }
        }
        let pos = self.position;
        if !self.found_position && !self.pruned_after.contains(&pos.segment) {
            self.report.bad_position = Some(if pos > self.end {
                format!(
                    "the index says it holds the journal up to {pos}, past the journal's end ({})",
                    self.end
                )
            } else {
                format!("{pos} is not the end of a record of this journal")
            });
        }
        self.report.unidentified = self.report.documents.saturating_sub(self.accounted);
        Ok(self.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Index, catch_up};
    use crate::journal::record::MessageMeta;
    use crate::journal::writer::{Body, Entry, Writer};
    use crate::journal::{Silent, records};

    /// A journal of `n` messages in small segments, and its index caught up.
    fn setup(n: usize) -> (tempfile::TempDir, PathBuf, PathBuf, Vec<RecordId>) {
        let tmp = tempfile::tempdir().unwrap();
        let (journal, index) = (tmp.path().join("journal"), tmp.path().join("index"));
        let (mut w, _) = Writer::open(&journal, 4096).unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let meta = MessageMeta {
                time: "2026-01-01T10:00:00Z".into(),
                sender: format!("s{i}@example.net"),
                ..MessageMeta::default()
            };
            let body = format!("Subject: m{i}\r\n\r\n{}\r\n", "x".repeat(700)).into_bytes();
            let e = Entry::new(Kind::Message, &meta, Body::Bytes(body));
            ids.push(w.append(&mut [e]).unwrap().0[0]);
        }
        drop(w);
        let i = Index::open_or_create(&index).unwrap();
        let mut writer = i.writer().unwrap();
        catch_up(&journal, &i, &mut writer, 7).unwrap();
        (tmp, journal, index, ids)
    }

    fn compare(journal: &Path, index: &Path) -> Report {
        let Opened::Snapshot(s) = open(index).unwrap() else {
            panic!("no snapshot")
        };
        assert_eq!(s.checksums(&mut Silent), []);
        let mut c = s.compare().unwrap();
        for r in records(journal) {
            c.record(&r.unwrap());
        }
        c.finish().unwrap()
    }

    #[test]
    fn an_index_caught_up_agrees_with_its_journal() {
        let (_t, journal, index, ids) = setup(30);
        assert!(ids.iter().any(|i| i.segment > 3), "several segments");
        let r = compare(&journal, &index);
        assert!(!r.differs(), "{r:?}");
        assert_eq!((r.expected, r.documents, r.behind), (30, 30, 0));
        assert_eq!(r.last_indexed, Some(ids[29].to_string()));
        assert_eq!(r.last_expected, r.last_indexed);
    }

    /// Offsets of different lengths sort differently as text and as numbers (`1-999` after
    /// `1-1097`): the comparison is by number, whatever the term dictionary's order.
    #[test]
    fn missing_extra_and_twice_are_named() {
        let (_t, journal, index, ids) = setup(30);
        let i = Index::open_or_create(&index).unwrap();
        let at = i.position().unwrap();
        let mut w = i.writer().unwrap();
        w.delete(ids[3]);
        w.delete(ids[17]);
        // A record added again, and one no journal has.
        let twice = ids[20];
        let mut docs = Vec::new();
        for (id, r) in records(&journal).filter_map(Result::ok).map(|r| (r.id, r)) {
            if id == twice {
                let meta = r.meta.clone();
                docs.push(Doc::new(id, Kind::Message, &meta, b"").unwrap());
            }
        }
        let stranger = RecordId {
            segment: 2,
            offset: 123_456_789_012,
        };
        let meta = serde_json::to_vec(&MessageMeta::default()).unwrap();
        docs.push(Doc::new(stranger, Kind::Message, &meta, b"").unwrap());
        w.add(&docs).unwrap();
        w.commit(at, None).unwrap();
        drop(w);
        let r = compare(&journal, &index);
        assert!(r.differs());
        assert_eq!(r.missing.first, [ids[3].to_string(), ids[17].to_string()]);
        assert_eq!(r.twice.first, [twice.to_string()]);
        assert_eq!(r.extra.first, [stranger.to_string()]);
        assert_eq!((r.missing.count, r.twice.count, r.extra.count), (2, 1, 1));
        assert_eq!(r.unidentified, 0);
    }

    #[test]
    fn an_index_behind_is_not_a_difference() {
        let (_t, journal, index, _) = setup(10);
        let (mut w, _) = Writer::open(&journal, 4096).unwrap();
        let meta = MessageMeta::default();
        for _ in 0..4 {
            let e = Entry::new(
                Kind::Message,
                &meta,
                Body::Bytes(b"Subject: x\r\n\r\n".to_vec()),
            );
            w.append(&mut [e]).unwrap();
        }
        drop(w);
        let r = compare(&journal, &index);
        assert!(!r.differs(), "{r:?}");
        assert_eq!((r.expected, r.behind), (10, 4));
    }

    #[test]
    fn a_position_that_is_no_record_end_is_named() {
        let (_t, journal, index, ids) = setup(10);
        let i = Index::open_or_create(&index).unwrap();
        let mut w = i.writer().unwrap();
        let wrong = Position {
            segment: ids[5].segment,
            offset: ids[5].offset + 1,
        };
        w.commit(wrong, None).unwrap();
        drop(w);
        let r = compare(&journal, &index);
        assert_eq!(
            r.bad_position,
            Some(format!(
                "{wrong} is not the end of a record of this journal"
            ))
        );
        let far = Position {
            segment: 999,
            offset: 0,
        };
        let mut w = i.writer().unwrap();
        w.commit(far, None).unwrap();
        drop(w);
        let r = compare(&journal, &index);
        assert!(r.bad_position.unwrap().contains("past the journal's end"));
    }
}
