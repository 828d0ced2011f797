//! Reading the journal back: walking every record, and verifying the whole chain.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use serde::Deserialize;

use super::format::{Hash, Kind, hex};
use super::segment::{ReadError, RecordId, RecordInfo, list_segments, read_record, segment_path};

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub segments: usize,
    pub pruned_segments: usize,
    /// Hash of the newest record: write it down elsewhere to detect a rewrite of the whole chain.
    pub head: String,
}

/// The first problem found, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("first bad record: {id} (segment {}, offset {}): {reason}", id.segment, id.offset)]
pub struct VerifyError {
    pub id: RecordId,
    pub reason: String,
}

/// What a prune record's meta holds.
#[derive(Debug, Deserialize)]
pub struct PruneMeta {
    pub removed: Vec<Removed>,
}

/// A segment removed by retention, as the prune record describes it.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct Removed {
    pub segment: u64,
    /// The hash the segment's first record linked to.
    pub start_prev: String,
    /// The hash of the segment's last record (its seal).
    pub last: String,
    pub records: u64,
}

#[derive(Debug, Clone)]
struct SegmentSummary {
    n: u64,
    start: RecordId,
    first_prev: Hash,
    last: Hash,
    sealed: bool,
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

/// Calls `f` for every record in order, hashes checked. Stops at the first unreadable record.
pub fn for_each_record(
    dir: &Path,
    mut f: impl FnMut(&RecordInfo, &mut File) -> std::io::Result<()>,
) -> Result<(), VerifyError> {
    let segments = list_segments(dir).map_err(|e| io_error(0, e))?;
    for n in segments {
        let mut file = File::open(segment_path(dir, n)).map_err(|e| io_error(n, e))?;
        let len = file.metadata().map_err(|e| io_error(n, e))?.len();
        let mut offset = 0;
        while offset < len {
            let info = read_record(&mut file, n, offset, len).map_err(|e| bad(n, offset, e))?;
            offset = info.end();
            f(&info, &mut file).map_err(|e| io_error(n, e))?;
        }
    }
    Ok(())
}

/// Walks every segment and checks every record's hash and every link of the chain, including
/// the links across segments that retention removed (through the prune records).
pub fn verify(dir: &Path) -> Result<Verified, VerifyError> {
    let segments = list_segments(dir).map_err(|e| io_error(0, e))?;
    let mut summaries = Vec::with_capacity(segments.len());
    let mut removed: HashMap<u64, Removed> = HashMap::new();
    let mut records = 0;
    for &n in &segments {
        let mut file = File::open(segment_path(dir, n)).map_err(|e| io_error(n, e))?;
        let len = file.metadata().map_err(|e| io_error(n, e))?.len();
        let mut offset = 0;
        let mut summary: Option<SegmentSummary> = None;
        // Links across segments are checked below, where pruned segments are accounted for.
        let mut rules = SegmentRules::new(n, None);
        while offset < len {
            let info = read_record(&mut file, n, offset, len).map_err(|e| bad(n, offset, e))?;
            let id = info.id;
            rules
                .check(&info)
                .map_err(|reason| VerifyError { id, reason })?;
            match &mut summary {
                None => {
                    summary = Some(SegmentSummary {
                        n,
                        start: id,
                        first_prev: info.header.prev,
                        last: info.hash,
                        sealed: false,
                    });
                }
                Some(s) => {
                    s.last = info.hash;
                    s.sealed = info.header.kind == Kind::Seal;
                }
            }
            if info.header.kind == Kind::Prune {
                // Readable: the rules checked it.
                if let Ok(meta) = serde_json::from_slice::<PruneMeta>(&info.meta) {
                    for r in meta.removed {
                        removed.insert(r.segment, r);
                    }
                }
            }
            records += 1;
            offset = info.end();
        }
        match summary {
            Some(s) => summaries.push(s),
            None => {
                return Err(VerifyError {
                    id: RecordId {
                        segment: n,
                        offset: 0,
                    },
                    reason: "empty segment".into(),
                });
            }
        }
    }

    // Across segments: each segment links to the one before it, or, where retention removed
    // segments, to what the prune record says those segments were.
    let mut expected_prev: Hash = [0; 32];
    let mut next_n = 1;
    let last_index = summaries.len().saturating_sub(1);
    for (i, s) in summaries.iter().enumerate() {
        while next_n < s.n {
            let Some(r) = removed.get(&next_n) else {
                return Err(VerifyError {
                    id: s.start,
                    reason: format!(
                        "segment {next_n} is missing and no prune record accounts for it"
                    ),
                });
            };
            if r.start_prev != hex(&expected_prev) {
                return Err(VerifyError {
                    id: s.start,
                    reason: format!(
                        "the prune record for segment {next_n} does not link to the segment before it"
                    ),
                });
            }
            expected_prev = from_hex(&r.last).ok_or_else(|| VerifyError {
                id: s.start,
                reason: "bad hash in prune record".into(),
            })?;
            next_n += 1;
        }
        if s.first_prev != expected_prev {
            return Err(VerifyError {
                id: s.start,
                reason: "segment does not link to the end of the segment before it".into(),
            });
        }
        if i < last_index && !s.sealed {
            return Err(VerifyError {
                id: s.start,
                reason: "a segment other than the newest is not sealed".into(),
            });
        }
        expected_prev = s.last;
        next_n = s.n + 1;
    }
    Ok(Verified {
        records,
        segments: summaries.len(),
        pruned_segments: removed.len(),
        head: hex(&expected_prev),
    })
}

fn from_hex(s: &str) -> Option<Hash> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

fn bad(segment: u64, offset: u64, e: ReadError) -> VerifyError {
    VerifyError {
        id: RecordId { segment, offset },
        reason: e.to_string(),
    }
}

fn io_error(segment: u64, e: std::io::Error) -> VerifyError {
    VerifyError {
        id: RecordId { segment, offset: 0 },
        reason: format!("i/o: {e}"),
    }
}
