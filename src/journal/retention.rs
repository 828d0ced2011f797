//! Retention: `handoff archive prune` removes whole sealed segments whose every record is older
//! than the retention period, never a segment holding mail to or from an address under legal
//! hold, and never the segment being written. What it removes is written to the journal first
//! (a prune record with each removed segment's hashes), so `verify` can still check the chain
//! across the gap.

use std::path::Path;

use serde::Serialize;

use super::error::JournalError;
use super::format::{Kind, hex};
use super::progress::{Progress, Silent};
use super::reader::Removed;
use super::record::MessageMeta;
use super::records::SegmentRecords;
use super::segment::{list_segments, segment_name};
use super::writer::{Body, Entry, Writer};
use crate::address::Address;
use crate::fsops::Dir;

/// What `prune` did (or, with `dry_run`, would do).
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub removed: Vec<Removed>,
    /// Old enough, but holding mail of an address under legal hold.
    pub held: Vec<u64>,
    /// Sealed segments with records younger than the retention period.
    pub young: Vec<u64>,
}

/// Removes the sealed segments past `retention_days` at `now`. `segment_bytes` is the policy's
/// `[archive] segment_mb`: the prune record may start a segment, and must start it where the
/// daemon would.
pub fn prune(
    dir: &Path,
    segment_bytes: u64,
    retention_days: u32,
    legal_hold: &[Address],
    now: jiff::Timestamp,
    dry_run: bool,
) -> Result<PruneReport, JournalError> {
    prune_with(
        dir,
        segment_bytes,
        retention_days,
        legal_hold,
        now,
        dry_run,
        &mut Silent,
    )
}

/// [`prune`], telling `progress` about every record it reads to decide (the sealed segments'
/// lengths are the total).
pub fn prune_with(
    dir: &Path,
    segment_bytes: u64,
    retention_days: u32,
    legal_hold: &[Address],
    now: jiff::Timestamp,
    dry_run: bool,
    progress: &mut dyn Progress,
) -> Result<PruneReport, JournalError> {
    let cutoff = now
        .checked_sub(jiff::SignedDuration::from_hours(
            24 * i64::from(retention_days),
        ))
        .map_err(|e| JournalError::Io(format!("bad retention period: {e}")))?;
    let (mut writer, _) = Writer::open(dir, segment_bytes)?;
    writer.locked(|w| {
        let mut report = PruneReport::default();
        let current = w.current_segment();
        let older: Vec<u64> = list_segments(dir)?
            .into_iter()
            .filter(|&n| n < current)
            .collect();
        // One open and `fstat` per segment: cheap next to reading it. A segment that cannot
        // be opened counts for nothing here; `scan` names it.
        let total = older
            .iter()
            .filter_map(|&n| w.dir_handle().read(&segment_name(n)).ok())
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum();
        progress.total(total);
        for n in older {
            let s = scan(w.dir_handle(), n, legal_hold, progress)?;
            if !s.sealed {
                continue;
            }
            if s.held {
                report.held.push(n);
            } else if s.newest.is_some_and(|t| t >= cutoff) {
                report.young.push(n);
            } else {
                report.removed.push(s.removed);
            }
        }
        if dry_run || report.removed.is_empty() {
            return Ok(report);
        }
        // The prune record is the prune's audit record: it names the person, as the audit trail does.
        let meta = serde_json::json!({
            "time": now,
            "user": super::search::operator(),
            "removed": report.removed,
            "retention_days": retention_days,
        });
        w.append_while_locked(&mut [Entry::new(Kind::Prune, &meta, Body::Bytes(Vec::new()))])?;
        for r in &report.removed {
            let name = segment_name(r.segment);
            w.dir_handle().remove(&name)?;
            tracing::info!(
                segment = r.segment,
                records = r.records,
                "archive prune: removed {}",
                dir.join(&name).display()
            );
        }
        w.dir_handle().sync()?;
        Ok(report)
    })
}

struct Scanned {
    sealed: bool,
    held: bool,
    newest: Option<jiff::Timestamp>,
    removed: Removed,
}

fn scan(
    dir: &Dir,
    n: u64,
    legal_hold: &[Address],
    progress: &mut dyn Progress,
) -> Result<Scanned, JournalError> {
    let walk = SegmentRecords::new(dir.read(&segment_name(n))?, n, 0)?;
    let mut out = Scanned {
        sealed: false,
        held: false,
        newest: None,
        removed: Removed {
            segment: n,
            start_prev: String::new(),
            last: String::new(),
            records: 0,
        },
    };
    let mut own = None;
    for info in walk {
        let info = info?;
        progress.advance(info.end() - info.id.offset, 1);
        if out.removed.records == 0 {
            out.removed.start_prev = hex(&info.header.prev);
        }
        out.removed.records += 1;
        out.removed.last = hex(&info.hash);
        out.sealed = info.header.kind == Kind::Seal;
        let meta: serde_json::Value = serde_json::from_slice(&info.meta).unwrap_or_default();
        // Age is the age of the mail (and audit records) in the segment; the segment's own start
        // and seal times count only for a segment that holds nothing else.
        let key = match info.header.kind {
            Kind::SegmentStart => "created",
            Kind::Seal => "sealed",
            _ => "time",
        };
        if let Some(t) = meta
            .get(key)
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        {
            match info.header.kind {
                Kind::SegmentStart | Kind::Seal => {
                    own = Some(own.map_or(t, |o: jiff::Timestamp| o.max(t)))
                }
                _ => out.newest = Some(out.newest.map_or(t, |n| n.max(t))),
            }
        }
        if info.header.kind.holds_message()
            && !legal_hold.is_empty()
            && let Ok(m) = serde_json::from_slice::<MessageMeta>(&info.meta)
        {
            out.held |= involves(&m, legal_hold);
        }
    }
    if out.newest.is_none() {
        out.newest = own;
    }
    Ok(out)
}

/// Whether a message is to or from one of `addresses`.
pub fn involves(m: &MessageMeta, addresses: &[Address]) -> bool {
    let mut all = std::iter::once(m.sender.as_str())
        .chain(m.recipients.iter().flat_map(|r| {
            std::iter::once(r.address.as_str()).chain(r.deliver.iter().map(String::as_str))
        }))
        .chain(m.final_recipients.iter().map(String::as_str));
    all.any(|a| Address::from_envelope(a).is_some_and(|a| addresses.contains(&a)))
}
