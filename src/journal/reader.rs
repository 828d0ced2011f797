//! Reading the journal back: walking every record, and verifying the whole chain.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use super::error::chain;
use super::format::{Hash, Kind, hex};
use super::progress::{Progress, Silent};
pub use super::record::{PruneMeta, Removed};
pub use super::records::SegmentRules;
use super::records::{Problem, WalkError, records};
use super::segment::{RecordId, RecordInfo, list_segments};

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

#[derive(Debug, Clone)]
struct SegmentSummary {
    n: u64,
    start: RecordId,
    first_prev: Hash,
    last: Hash,
    sealed: bool,
}

/// Calls `f` for every record in order, hashes checked, with the record's segment file (for
/// [`super::segment::read_body`]). Stops at the first unreadable record.
pub fn for_each_record(
    dir: &Path,
    mut f: impl FnMut(&RecordInfo, &mut File) -> std::io::Result<()>,
) -> Result<(), VerifyError> {
    let mut walk = records(dir);
    while let Some(info) = walk.next() {
        let info = info.map_err(bad)?;
        if let Some(segment) = walk.segment() {
            f(&info, segment.file()).map_err(|e| io_error(info.id.segment, e))?;
        }
    }
    Ok(())
}

/// Walks every segment and checks every record's hash and every link of the chain, including
/// the links across segments that retention removed (through the prune records).
pub fn verify(dir: &Path) -> Result<Verified, VerifyError> {
    verify_with(dir, &mut Silent)
}

/// [`verify`], telling `progress` about every record checked, against the segments' lengths.
pub fn verify_with(dir: &Path, progress: &mut dyn Progress) -> Result<Verified, VerifyError> {
    verify_observing(dir, progress, &mut |_| {})
}

/// [`verify_with`], showing `observe` every record once it is checked, in order: a caller that
/// needs every record too (`archive verify` comparing the index) reads the journal once.
pub fn verify_observing(
    dir: &Path,
    progress: &mut dyn Progress,
    observe: &mut dyn FnMut(&RecordInfo),
) -> Result<Verified, VerifyError> {
    let segments = list_segments(dir).map_err(|e| io_error(0, e))?;
    let mut summaries: Vec<SegmentSummary> = Vec::with_capacity(segments.len());
    let mut removed: HashMap<u64, Removed> = HashMap::new();
    let mut count = 0;
    // A listed segment that yields no record is empty: named when the walk passes it.
    let mut listed = segments.iter().copied().peekable();
    let empty = |n: u64| VerifyError {
        id: RecordId {
            segment: n,
            offset: 0,
        },
        reason: "empty segment".into(),
    };
    // Links across segments are checked below, where pruned segments are accounted for.
    let walk = records(dir).checked();
    progress.total(walk.bytes_ahead());
    for info in walk {
        let info = info.map_err(|e| match listed.peek() {
            Some(&n) if n < e.segment => empty(n),
            _ => bad(e),
        })?;
        let id = info.id;
        let new_segment = summaries.last().is_none_or(|s| s.n != id.segment);
        if new_segment {
            while let Some(n) = listed.next_if(|&n| n <= id.segment) {
                if n < id.segment {
                    return Err(empty(n));
                }
            }
            summaries.push(SegmentSummary {
                n: id.segment,
                start: id,
                first_prev: info.header.prev,
                last: info.hash,
                sealed: false,
            });
        } else if let Some(s) = summaries.last_mut() {
            s.last = info.hash;
            s.sealed = info.header.kind == Kind::Seal;
        }
        if info.header.kind == Kind::Prune {
            // Readable: the rules checked it.
            if let Ok(meta) = serde_json::from_slice::<PruneMeta>(&info.meta) {
                for r in meta.removed {
                    removed.insert(r.segment, r);
                }
            }
        }
        observe(&info);
        count += 1;
        progress.advance(info.end() - id.offset, 1);
    }
    if let Some(n) = listed.next() {
        return Err(empty(n));
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
        records: count,
        segments: summaries.len(),
        pruned_segments: removed.len(),
        head: hex(&expected_prev),
    })
}

fn from_hex(s: &str) -> Option<Hash> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

fn bad(e: WalkError) -> VerifyError {
    VerifyError {
        id: RecordId {
            segment: e.segment,
            offset: e.offset,
        },
        reason: match e.problem {
            Problem::Open(io) => format!("i/o: {io}"),
            problem => chain(&problem),
        },
    }
}

fn io_error(segment: u64, e: std::io::Error) -> VerifyError {
    VerifyError {
        id: RecordId { segment, offset: 0 },
        reason: format!("i/o: {e}"),
    }
}
