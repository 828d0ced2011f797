//! How a long walk over the journal (`verify`, `prune`, `export`) tells its caller how far it
//! has got. The journal only counts: bytes read and records handled, against a total in bytes
//! that is known cheaply before the walk (the segment files' lengths). Drawing a bar, printing
//! a line every few seconds or saying nothing is the command line's business: nothing here
//! knows about terminals.

/// Receives a walk's progress. Calls are frequent (one per record): an implementation keeps
/// them cheap and decides itself when to show anything.
pub trait Progress {
    /// The bytes the work reads in all, as known now. Called before the first
    /// [`Progress::advance`], and again if the walk learns a better figure (an export learns
    /// the length of the records it was asked for only when it reaches them).
    fn total(&mut self, bytes: u64);

    /// `bytes` more read and `records` more handled since the last call.
    fn advance(&mut self, bytes: u64, records: u64);
}

/// Progress that goes nowhere: for callers that show none (tests, the daemon, `--quiet`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn total(&mut self, _bytes: u64) {}

    fn advance(&mut self, _bytes: u64, _records: u64) {}
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::journal::segment::{RecordId, list_segments, segment_path};
    use crate::journal::writer::{Body, Entry, Writer};
    use crate::journal::{Kind, reader, retention, search};

    /// Everything a walk reported.
    #[derive(Debug, Default)]
    struct Recorded {
        totals: Vec<u64>,
        bytes: u64,
        records: u64,
    }

    impl Progress for Recorded {
        fn total(&mut self, bytes: u64) {
            self.totals.push(bytes);
        }

        fn advance(&mut self, bytes: u64, records: u64) {
            self.bytes += bytes;
            self.records += records;
        }
    }

    /// A journal of several small segments (two or three messages each); the messages' ids.
    fn journal(dir: &Path) -> Vec<RecordId> {
        let (mut w, _) = Writer::open(dir, 20_000).unwrap();
        (0..12)
            .map(|i| {
                let meta = serde_json::json!({ "time": "2020-01-01T00:00:00Z", "i": i });
                let body = vec![b'x'; 3000 + 700 * i];
                let mut e = [Entry::new(Kind::Message, &meta, Body::Bytes(body))];
                w.append(&mut e).unwrap().0[0]
            })
            .collect()
    }

    fn segment_bytes(dir: &Path, keep: impl Fn(u64) -> bool) -> u64 {
        let segments = list_segments(dir).unwrap().into_iter().filter(|&n| keep(n));
        segments
            .map(|n| std::fs::metadata(segment_path(dir, n)).unwrap().len())
            .sum()
    }

    #[test]
    fn verify_reports_every_byte_and_record_against_the_segments_lengths() {
        let d = tempfile::tempdir().unwrap();
        journal(d.path());
        let mut p = Recorded::default();
        let v = reader::verify_with(d.path(), &mut p).unwrap();
        assert!(v.segments >= 4, "{v:?}");
        let total = segment_bytes(d.path(), |_| true);
        assert_eq!(p.totals, [total]);
        assert_eq!((p.bytes, p.records), (total, v.records));
    }

    #[test]
    fn prune_reports_the_segments_it_reads() {
        let d = tempfile::tempdir().unwrap();
        journal(d.path());
        let current = *list_segments(d.path()).unwrap().last().unwrap();
        let now = jiff::Timestamp::now();
        let mut p = Recorded::default();
        let report = retention::prune_with(d.path(), 20_000, 30, &[], now, true, &mut p).unwrap();
        assert!(!report.removed.is_empty(), "{report:?}");
        let total = segment_bytes(d.path(), |n| n < current);
        assert_eq!(p.totals, [total]);
        assert_eq!(p.bytes, total);
        let records = reader::verify(d.path()).unwrap().records;
        let in_current = crate::journal::records::Records::from(
            d.path(),
            crate::journal::Position {
                segment: current,
                offset: 0,
            },
        )
        .count() as u64;
        assert_eq!(p.records, records - in_current);
    }

    /// An export walks each named segment up to its last wanted record, then reads the wanted
    /// records again: the total ends up exactly what was reported.
    #[test]
    fn export_ends_at_its_total() {
        let d = tempfile::tempdir().unwrap();
        let ids = journal(d.path());
        let out = tempfile::tempdir().unwrap();
        let wanted = [ids[7], ids[1], ids[2]];
        let mut p = Recorded::default();
        let written =
            search::export_with(d.path(), &wanted, &out.path().join("x"), &mut p).unwrap();
        assert_eq!(written.len(), 3);
        assert_eq!(p.totals.len(), 2, "{p:?}");
        assert!(p.totals[0] < p.totals[1], "{p:?}");
        assert_eq!(p.bytes, p.totals[1], "{p:?}");
        // The records up to each wanted segment's last wanted one, then the three again.
        let walked = crate::journal::records(d.path())
            .map(|r| r.unwrap())
            .filter(|r| {
                wanted
                    .iter()
                    .any(|w| w.segment == r.id.segment && r.id.offset <= w.offset)
            })
            .count() as u64;
        assert_eq!(p.records, walked + 3);
    }
}
