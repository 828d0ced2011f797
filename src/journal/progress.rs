//! How a long walk over the journal (`verify`, `prune`, `export`) tells its caller how far it
//! has got. The journal only counts: bytes read and records handled, against a total in bytes
//! that is known cheaply before the walk (the segment files' lengths). Drawing a bar, printing
//! a line every few seconds or saying nothing is the caller's business (the command line, the
//! daemon's indexer): nothing here knows about terminals. The one plain line both print is
//! written by [`line`].

use std::time::Duration;

use indicatif::{BinaryBytes, HumanCount, HumanDuration};

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

pub(crate) fn per_sec(n: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (n as f64 / secs) as u64
    } else {
        0
    }
}

/// One plain progress line, as the command line prints it off a terminal and the daemon's
/// indexer logs it: `verify: 2.30 GiB of 5.70 GiB (40%), 412,000 records, 95,000
/// records/s, about 6s left`; with `done`, `…, done in 10s`. The percentage is of bytes and
/// never passes 100 (a segment still being appended to can outgrow the total: the total
/// shown is then what was read); nothing to read is 100 %. Before any byte is read there is
/// no rate to tell the time left from.
pub fn line(
    verb: &str,
    bytes: u64,
    total: u64,
    records: u64,
    elapsed: Duration,
    done: bool,
) -> String {
    let total = total.max(bytes);
    let percent = (bytes * 100).checked_div(total).unwrap_or(100);
    let when = if done {
        format!("done in {:#}", HumanDuration(elapsed))
    } else {
        let secs = elapsed.as_secs_f64();
        if bytes == 0 || secs <= 0.0 {
            "time left unknown".to_string()
        } else {
            let left = (total - bytes) as f64 * secs / bytes as f64;
            format!(
                "about {:#} left",
                HumanDuration(Duration::from_secs_f64(left.ceil()))
            )
        }
    };
    format!(
        "{verb}: {} of {} ({percent}%), {} records, {} records/s, {when}",
        BinaryBytes(bytes),
        BinaryBytes(total),
        HumanCount(records),
        HumanCount(per_sec(records, elapsed)),
    )
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

    const GIB: u64 = 1024 * 1024 * 1024;

    #[test]
    fn a_line_gives_bytes_percent_records_rate_and_time_left() {
        assert_eq!(
            line(
                "verify",
                2 * GIB,
                5 * GIB,
                400_000,
                Duration::from_secs(4),
                false
            ),
            "verify: 2.00 GiB of 5.00 GiB (40%), 400,000 records, 100,000 records/s, about 6s left"
        );
    }

    #[test]
    fn the_last_line_says_how_long_it_took() {
        assert_eq!(
            line(
                "prune",
                3 * GIB,
                3 * GIB,
                1_000_000,
                Duration::from_secs(10),
                true
            ),
            "prune: 3.00 GiB of 3.00 GiB (100%), 1,000,000 records, 100,000 records/s, done in 10s"
        );
    }

    /// The time left is rounded up to a second (10.01 s left is not "about 10s"), the
    /// percentage down (49.98 % is not done half), and a rate under one record a second
    /// shows as 0.
    #[test]
    fn time_left_rounds_up_percent_down_and_slow_rates_show_as_zero() {
        assert_eq!(
            line("export", 1000, 2001, 5, Duration::from_secs(10), false),
            "export: 1000 B of 1.95 KiB (49%), 5 records, 0 records/s, about 11s left"
        );
    }

    #[test]
    fn nothing_to_read_is_complete_and_no_rate_means_no_time_left() {
        assert_eq!(
            line("verify", 0, 0, 0, Duration::ZERO, false),
            "verify: 0 B of 0 B (100%), 0 records, 0 records/s, time left unknown"
        );
        assert_eq!(
            line("verify", 0, 10 * GIB, 0, Duration::from_secs(3), false),
            "verify: 0 B of 10.00 GiB (0%), 0 records, 0 records/s, time left unknown"
        );
    }

    /// A segment appended to during the walk makes the bytes read pass the total: the line
    /// never says more than 100 %, nor more read than there was.
    #[test]
    fn reading_past_the_total_shows_100_percent_of_what_was_read() {
        assert_eq!(
            line("verify", 1100, 1000, 10, Duration::from_secs(1), false),
            "verify: 1.07 KiB of 1.07 KiB (100%), 10 records, 10 records/s, about 0s left"
        );
    }
}
