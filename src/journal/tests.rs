//! Journal tests: round trips, torn tails at every offset, tampering of every kind, sealing,
//! retention.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::error::{EntryError, JournalError};
use super::format::Kind;
use super::reader::verify;
use super::record::{MessageMeta, RecipientMeta};
use super::segment::{RecordId, list_segments, segment_path};
use super::writer::{Body, DEFAULT_SEGMENT_BYTES, Entry, Writer};
use crate::address::Address;

fn meta(sender: &str, rcpt: &str, time: &str) -> MessageMeta {
    MessageMeta {
        time: time.into(),
        origin: "milter".into(),
        sender: sender.into(),
        recipients: vec![RecipientMeta {
            address: rcpt.into(),
            rule: "active".into(),
            deliver: vec![rcpt.into()],
            expansion: None,
        }],
        final_recipients: vec![rcpt.into()],
        ..MessageMeta::default()
    }
}

fn message(i: usize) -> Entry {
    let body = format!("Subject: message {i}\r\nMessage-ID: <{i}@example.net>\r\n\r\nbody {i}\r\n")
        .into_bytes();
    Entry::new(
        Kind::Message,
        &meta("a@example.net", "b@corp.example", "2026-01-01T00:00:00Z"),
        Body::Bytes(body),
    )
}

fn append(dir: &Path, entries: Vec<Entry>) -> Vec<RecordId> {
    let (mut w, _) = Writer::open(dir, DEFAULT_SEGMENT_BYTES).unwrap();
    let mut entries = entries;
    w.append(&mut entries).unwrap().0
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn records_round_trip_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ids = append(dir.path(), (0..5).map(message).collect());
    assert_eq!(ids.len(), 5);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let v = verify(dir.path()).unwrap();
    assert_eq!(v.records, 6, "segment start + 5 messages");
    let body = super::search::message_bytes(dir.path(), ids[3]).unwrap();
    assert!(
        String::from_utf8(body)
            .unwrap()
            .starts_with("Subject: message 3\r\n")
    );
    // Reopening continues the same chain.
    append(dir.path(), vec![message(5)]);
    assert_eq!(verify(dir.path()).unwrap().records, 7);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&segment_path(dir.path(), 1)), 0o600);
}

#[test]
fn a_torn_tail_is_cut_at_every_offset_and_nothing_before_it_is_lost() {
    let base = tempfile::tempdir().unwrap();
    let ids = append(base.path(), (0..3).map(message).collect());
    let seg = segment_path(base.path(), 1);
    let full = std::fs::metadata(&seg).unwrap().len();
    let last_start = ids[2].offset;
    for cut in last_start..full {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        let f = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 1))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let (mut w, recovery) = Writer::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        assert_eq!(recovery.cut_bytes, cut - last_start, "cut at {cut}");
        let v = verify(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(
            v.records, 3,
            "cut at {cut}: start + the first two messages survive"
        );
        let new = w.append(&mut [message(9)]).unwrap().0;
        assert_eq!(
            new[0].offset, last_start,
            "cut at {cut}: the next record takes the torn one's place"
        );
        assert_eq!(verify(dir.path()).unwrap().records, 4);
        if cut > last_start {
            assert!(std::fs::read_dir(dir.path()).unwrap().any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("torn-")
            }));
        }
    }
}

#[test]
fn damage_in_the_middle_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let ids = append(dir.path(), (0..3).map(message).collect());
    flip(&segment_path(dir.path(), 1), ids[1].offset + 70);
    let err = Writer::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap_err();
    assert!(
        matches!(err, JournalError::Corrupt { segment: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("a valid record follows"), "{err}");
}

fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_at(&mut b, at).unwrap();
    b[0] ^= 0x01;
    f.write_at(&b, at).unwrap();
}

#[test]
fn verify_detects_a_bit_flip_anywhere() {
    let base = tempfile::tempdir().unwrap();
    append(base.path(), (0..3).map(message).collect());
    let len = std::fs::metadata(segment_path(base.path(), 1))
        .unwrap()
        .len();
    for at in 0..len {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        flip(&segment_path(dir.path(), 1), at);
        assert!(
            verify(dir.path()).is_err(),
            "flip at byte {at} not detected"
        );
    }
}

/// The records of segment 1 as byte ranges.
fn records(dir: &Path) -> (Vec<u8>, Vec<(u64, u64)>) {
    let bytes = std::fs::read(segment_path(dir, 1)).unwrap();
    let mut ranges = Vec::new();
    super::reader::for_each_record(dir, |info, _: &mut File| {
        ranges.push((info.id.offset, info.end()));
        Ok(())
    })
    .unwrap();
    (bytes, ranges)
}

#[test]
fn verify_detects_removed_reordered_and_inserted_records() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), (0..4).map(message).collect());
    let (bytes, r) = records(dir.path());
    let piece = |i: usize| bytes[r[i].0 as usize..r[i].1 as usize].to_vec();
    let write = |parts: Vec<Vec<u8>>| {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(d.path(), 1), parts.concat()).unwrap();
        d
    };
    let removed = write(vec![piece(0), piece(1), piece(3), piece(4)]);
    let e = verify(removed.path()).unwrap_err();
    assert_eq!(
        e.id.offset, r[2].0,
        "named at the record after the gap: {e}"
    );
    assert!(e.reason.contains("chain broken"), "{e}");

    let reordered = write(vec![piece(0), piece(2), piece(1), piece(3), piece(4)]);
    let e = verify(reordered.path()).unwrap_err();
    assert_eq!(e.id.offset, r[1].0, "{e}");

    // A well-formed record from another journal (valid hash, wrong link).
    let other = tempfile::tempdir().unwrap();
    append(other.path(), vec![message(7)]);
    let (obytes, or) = records(other.path());
    let stranger = obytes[or[1].0 as usize..or[1].1 as usize].to_vec();
    let inserted = write(vec![
        piece(0),
        piece(1),
        stranger,
        piece(2),
        piece(3),
        piece(4),
    ]);
    let e = verify(inserted.path()).unwrap_err();
    assert_eq!(e.id.offset, r[2].0, "{e}");

    // Removing the last record leaves a valid but shorter chain: the head hash changes, which is
    // what an externally recorded head hash catches.
    let before = verify(dir.path()).unwrap().head;
    let truncated = write(vec![piece(0), piece(1), piece(2), piece(3)]);
    assert_ne!(verify(truncated.path()).unwrap().head, before);
}

#[test]
fn full_segments_are_sealed_read_only_and_chained() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = Writer::open(dir.path(), 1024).unwrap();
    for i in 0..20 {
        w.append(&mut [message(i)]).unwrap();
    }
    let segs = list_segments(dir.path()).unwrap();
    assert!(segs.len() >= 5, "{segs:?}");
    use std::os::unix::fs::PermissionsExt;
    for n in &segs[..segs.len() - 1] {
        let mode = std::fs::metadata(segment_path(dir.path(), *n))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o400, "segment {n}");
    }
    let v = verify(dir.path()).unwrap();
    assert_eq!(v.segments, segs.len());
    // A sealed segment with a record removed from its middle is caught, as is a missing segment.
    std::fs::remove_file(segment_path(dir.path(), 2)).unwrap();
    let e = verify(dir.path()).unwrap_err();
    assert!(e.reason.contains("segment 2 is missing"), "{e}");
}

#[test]
fn two_writers_share_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = Writer::open(dir.path(), 2048).unwrap();
    let (mut b, _) = Writer::open(dir.path(), 2048).unwrap();
    for i in 0..10 {
        a.append(&mut [message(i)]).unwrap();
        b.append(&mut [message(100 + i)]).unwrap();
    }
    let v = verify(dir.path()).unwrap();
    assert_eq!(
        v.records as usize,
        20 + v.segments + (v.segments - 1),
        "messages + starts + seals"
    );
}

#[test]
fn prune_removes_only_old_unheld_sealed_segments_and_verify_still_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = Writer::open(dir.path(), 1200).unwrap();
    let old = "2020-01-01T00:00:00Z";
    for i in 0..12 {
        let rcpt = if i == 6 {
            "held@corp.example"
        } else {
            "b@corp.example"
        };
        let m = meta("a@example.net", rcpt, old);
        w.append(&mut [Entry::new(Kind::Message, &m, Body::Bytes(vec![b'x'; 300]))])
            .unwrap();
    }
    let young = meta("a@example.net", "b@corp.example", "2026-11-01T00:00:00Z");
    w.append(&mut [Entry::new(
        Kind::Message,
        &young,
        Body::Bytes(vec![b'y'; 300]),
    )])
    .unwrap();
    let before = list_segments(dir.path()).unwrap();
    let now: jiff::Timestamp = "2026-11-21T00:00:00Z".parse().unwrap();
    let hold = [Address::parse_strict("held@corp.example").unwrap()];

    let dry =
        super::retention::prune(dir.path(), DEFAULT_SEGMENT_BYTES, 1826, &hold, now, true).unwrap();
    assert!(!dry.removed.is_empty());
    assert_eq!(
        list_segments(dir.path()).unwrap(),
        before,
        "a dry run removes nothing"
    );

    let report =
        super::retention::prune(dir.path(), DEFAULT_SEGMENT_BYTES, 1826, &hold, now, false)
            .unwrap();
    assert_eq!(report.held.len(), 1, "{report:?}");
    let after = list_segments(dir.path()).unwrap();
    assert!(after.len() < before.len());
    assert!(after.contains(&report.held[0]), "the held segment stays");
    let v = verify(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.pruned_segments, report.removed.len());
    // The prune record is the prune's entry in the audit trail: who, how many records, which
    // segments. The dry run left none.
    let filter = super::audit::AuditFilter {
        command: Some("prune".into()),
        ..Default::default()
    };
    let trail = super::audit::trail(dir.path(), &filter).unwrap();
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(trail[0].user, super::search::operator());
    assert_eq!(trail[0].time, now.to_string());
    assert_eq!(
        trail[0].hits,
        report.removed.iter().map(|r| r.records).sum::<u64>()
    );
    let segments: Vec<u64> = report.removed.iter().map(|r| r.segment).collect();
    assert_eq!(
        trail[0].query,
        serde_json::json!({ "retention_days": 1826, "segments": segments })
    );
    // With a retention period longer than the mail's age, nothing goes.
    let none =
        super::retention::prune(dir.path(), DEFAULT_SEGMENT_BYTES, 36500, &[], now, false).unwrap();
    assert!(none.removed.is_empty());
}

/// Search compares addresses in their lookup form: an IDN domain is found in either spelling,
/// in the envelope and in the From header (a null envelope sender here).
#[test]
fn search_finds_idn_addresses_by_either_spelling() {
    use super::search::{Query, search};
    let dir = tempfile::tempdir().unwrap();
    let body = "From: 王 <wang@公司.中国>\r\nSubject: idn\r\n\r\nbody\r\n";
    append(
        dir.path(),
        vec![Entry::new(
            Kind::Message,
            &meta("", "张三@xn--55qx5d.xn--fiqs8s", "2026-01-01T00:00:00Z"),
            Body::Bytes(body.as_bytes().to_vec()),
        )],
    );
    let hits = |q: Query| search(dir.path(), &q).unwrap().len();
    for to in ["张三@公司.中国", "张三@XN--55QX5D.xn--fiqs8s"] {
        let q = Query {
            to: Some(to.into()),
            ..Query::default()
        };
        assert_eq!(hits(q), 1, "--to {to}");
    }
    for from in ["wang@xn--55qx5d.xn--fiqs8s", "WANG@公司.中国"] {
        let q = Query {
            from: Some(from.into()),
            ..Query::default()
        };
        assert_eq!(hits(q), 1, "--from {from}");
    }
    let q = Query {
        to: Some("张三@xn--fiqs8s".into()),
        ..Query::default()
    };
    assert_eq!(hits(q), 0);
}

/// A message record whose meta is over the reader's limit (what 500 RCPTs to a 1,000-member
/// alias made before expansions were stored once).
fn oversized() -> Entry {
    let len = super::format::MAX_META_LEN as usize + 1;
    Entry {
        kind: Kind::Message,
        meta: vec![b' '; len],
        body: Body::Bytes(b"Subject: big\r\n\r\nbody\r\n".to_vec()),
    }
}

#[test]
fn a_record_the_reader_would_refuse_is_not_written_and_the_next_one_is() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), vec![message(0)]);
    let seg = segment_path(dir.path(), 1);
    let before = std::fs::metadata(&seg).unwrap().len();
    let (mut w, _) = Writer::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    // Alone, and in a batch with a good record: the batch is refused whole, nothing written.
    for mut batch in [vec![oversized()], vec![message(1), oversized()]] {
        let e = w.append(&mut batch).unwrap_err();
        assert!(
            matches!(e, JournalError::Refused(EntryError::MetaTooLong { .. })),
            "{e}"
        );
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), before);
    }
    // The journal's own record kinds cannot be forged through append.
    let start = Entry::new(
        Kind::SegmentStart,
        &serde_json::json!({ "segment": 1 }),
        Body::Bytes(Vec::new()),
    );
    assert!(matches!(
        w.append(&mut [start]),
        Err(JournalError::Refused(_))
    ));
    let prune = Entry::new(Kind::Prune, &serde_json::json!({}), Body::Bytes(Vec::new()));
    assert!(matches!(
        w.append(&mut [prune]),
        Err(JournalError::Refused(_))
    ));
    let ids = w.append(&mut [message(2)]).unwrap().0;
    assert_eq!(
        ids[0].offset, before,
        "the next record follows the last good one"
    );
    drop(w);
    assert_eq!(verify(dir.path()).unwrap().records, 3);
    let (_, recovery) = Writer::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(recovery.cut_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_only_the_oversized_message_and_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = super::Journal::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    let (a, b, c) = tokio::join!(
        journal.append(message(0)),
        journal.append(oversized()),
        journal.append(message(1)),
    );
    assert!(a.is_ok() && c.is_ok(), "{a:?} {c:?}");
    assert!(matches!(b, Err(JournalError::Refused(_))), "{b:?}");
    assert!(journal.healthy());
    journal.append(message(2)).await.unwrap();
    assert_eq!(verify(dir.path()).unwrap().records, 4);
}

/// Appends a byte-exact copy of the record at `id` (ending at `end`) to segment 1.
fn replay(dir: &Path, from: u64, to: u64) -> u64 {
    let seg = segment_path(dir, 1);
    let bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() as u64;
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &bytes[from as usize..to as usize]).unwrap();
    at
}

#[test]
fn recovery_refuses_a_replayed_record_and_names_where() {
    let base = tempfile::tempdir().unwrap();
    let ids = append(base.path(), (0..3).map(message).collect());
    let end = std::fs::metadata(segment_path(base.path(), 1))
        .unwrap()
        .len();
    // A copy of the last message, of a message in the middle, of the segment start.
    for (from, to) in [
        (ids[2].offset, end),
        (ids[0].offset, ids[1].offset),
        (0, ids[0].offset),
    ] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        let at = replay(dir.path(), from, to);
        assert!(verify(dir.path()).is_err());
        let e = Writer::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap_err();
        match &e {
            JournalError::Corrupt {
                segment, offset, ..
            } => assert_eq!((*segment, *offset), (1, at), "{e}"),
            other => panic!("copy of {from}..{to}: {other}"),
        }
        // Nothing was cut or written: the evidence stays.
        assert_eq!(
            std::fs::metadata(segment_path(dir.path(), 1))
                .unwrap()
                .len(),
            end + (to - from)
        );
    }
}

#[test]
fn a_writer_does_not_append_after_a_record_replayed_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = Writer::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    let ids = w.append(&mut [message(0)]).unwrap().0;
    let end = std::fs::metadata(segment_path(dir.path(), 1))
        .unwrap()
        .len();
    let at = replay(dir.path(), ids[0].offset, end);
    match w.append(&mut [message(1)]) {
        Err(JournalError::Corrupt { offset, .. }) => assert_eq!(offset, at),
        other => panic!("{other:?}"),
    }
}

/// The `journal_reader` fuzz target's property on its seeds (a record followed by its byte-exact
/// copy among them): recovery refuses, or what it leaves verifies.
#[test]
fn recovery_leaves_a_journal_that_verifies_on_every_fuzz_seed() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/journal_reader");
    let mut n = 0;
    for seed in std::fs::read_dir(seeds).unwrap() {
        let seed = seed.unwrap().path();
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&seed, segment_path(dir.path(), 1)).unwrap();
        if Writer::open(dir.path(), 1 << 20).is_ok() {
            verify(dir.path()).unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
        }
        n += 1;
    }
    assert!(n >= 3, "the seeds are there");
}

#[test]
fn export_refuses_a_record_forged_inside_a_message_body() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _) = super::format::encode(
        Kind::Message,
        &[0; 32],
        br#"{"time":"2026-01-01T00:00:00Z","origin":"milter","sender":"ceo@corp.example","recipients":[],"final_recipients":["x@corp.example"],"policy_generation":1,"size":9}"#,
        b"forged!\r\n",
    );
    let mut body = b"Subject: carrier\r\n\r\n".to_vec();
    let inside = body.len() as u64;
    body.extend_from_slice(&fake);
    let entry = Entry::new(
        Kind::Message,
        &meta("a@example.net", "b@corp.example", "2026-01-01T00:00:00Z"),
        Body::Bytes(body),
    );
    let meta_len = entry.meta.len() as u64;
    let ids = append(dir.path(), vec![message(0), entry, message(2)]);
    let forged = RecordId {
        segment: 1,
        offset: ids[1].offset + super::format::HEADER_LEN as u64 + meta_len + inside,
    };
    // The forged bytes are a self-consistent record on their own.
    let f = File::open(segment_path(dir.path(), 1)).unwrap();
    let mut at = super::records::SegmentRecords::new(f, 1, forged.offset).unwrap();
    assert!(matches!(at.next(), Some(Ok(_))));
    let out = tempfile::tempdir().unwrap();
    match super::search::export(dir.path(), &[forged], out.path()) {
        Err(super::search::SearchError::NoSuchRecord(id)) => assert_eq!(id, forged),
        other => panic!("{other:?}"),
    }
    assert!(super::search::message_bytes(dir.path(), forged).is_err());
    let written = super::search::export(dir.path(), &[ids[2], ids[1]], out.path()).unwrap();
    assert_eq!(written.len(), 2);
    assert!(std::fs::read(&written[1]).unwrap().ends_with(&fake));
}

mod round_trip {
    //! Any message the transaction accepts produces a record the reader accepts: the meta the
    //! real policy, engine and transaction build, written by the writer, reads back equal, and
    //! the journal verifies.
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::super::reader::{for_each_record, verify};
    use super::super::record::MessageMeta;
    use super::super::segment::read_body;
    use super::super::writer::{Body, DEFAULT_SEGMENT_BYTES, Entry, Writer};
    use super::Kind;
    use crate::policy::Policy;
    use crate::runtime::store::{PolicyStore, Snapshot};
    use crate::transaction::{Client, MessageOutcome, Transaction};

    fn policy(members: usize, copy_to: bool) -> Arc<Snapshot> {
        let list: Vec<String> = (0..members)
            .map(|i| format!("\"m{i}.{}@corp.example\"", "x".repeat(40 + i % 40)))
            .collect();
        let archive = match copy_to {
            true => "[archive]\ncopy_to = \"journal@archiver.example\"\n",
            false => "",
        };
        let text = format!(
            "{archive}[domains]\nlocal = [\"corp.example\"]\n[aliases]\n\"all@corp.example\" = [{}]\n\"two@corp.example\" = [\"m0.@corp.example\", \"gone@corp.example\"]\n[accounts.\"gone@corp.example\"]\nstate = \"departed\"\nsuccessor = \"cs@corp.example\"\n[accounts.\"dis@corp.example\"]\nstate = \"disabled\"\n",
            list.join(", ")
        );
        let policy = Policy::from_text("round-trip.toml", &text).expect("policy");
        PolicyStore::new(policy).snapshot()
    }

    /// An envelope address: local parts with dots, `+detail`, quotes, spaces and UTF-8.
    fn address() -> impl Strategy<Value = String> {
        let local = prop_oneof![
            "all(\\+[a-z0-9]{1,8})?",
            "two|gone|dis|cs|nobody",
            "[a-z][a-z0-9._-]{0,30}",
            "\"[a-z ]{1,10}\"",
            "[a-zé]{1,8}",
        ];
        let domain = prop_oneof!["corp\\.example", "CORP\\.example", "[a-z]{1,10}\\.example"];
        (local, domain).prop_map(|(l, d)| format!("<{l}@{d}>"))
    }

    fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
        (
            "[A-Za-z][A-Za-z-]{0,20}",
            proptest::collection::vec(32u8..=255, 0..4000),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn accepted_messages_write_a_record_that_reads_back(
            members in prop_oneof![1usize..100, 350usize..400],
            copy_to in any::<bool>(),
            sender in prop_oneof![Just("<>".to_string()), address()],
            // Sometimes hundreds of `all+tag@` (what made 25 MB of meta before expansions
            // were stored once): the meta must stay under the reader's limit.
            rcpts in prop_oneof![
                3 => proptest::collection::vec(address(), 1..120),
                1 => proptest::collection::vec("<all\\+[a-z0-9]{6}@corp\\.example>", 400..600),
            ],
            headers in proptest::collection::vec(header(), 0..60),
            body in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let today = jiff::civil::date(2026, 6, 1);
            let client = Client { address: "192.0.2.1".into(), ..Client::default() };
            let Ok(mut t) = Transaction::begin(policy(members, copy_to), &client, sender, None, today)
            else { return Ok(()) };
            for r in rcpts {
                t.rcpt(r, today);
            }
            let mut raw = Vec::new();
            for (name, value) in headers {
                raw.extend_from_slice(name.as_bytes());
                raw.extend_from_slice(b": ");
                raw.extend_from_slice(&value);
                raw.extend_from_slice(b"\r\n");
                t.add_header(name, value);
            }
            raw.extend_from_slice(b"\r\n");
            raw.extend_from_slice(&body);
            t.add_body_bytes(body.len() as u64);
            let accepted = t.has_recipients();
            let msg = t.finish(client, Some("4XyzQ1".into()));
            prop_assume!(accepted && msg.outcome == MessageOutcome::Accept);

            let meta = msg.archive_meta(raw.len() as u64, "milter");
            let entry = Entry::new(Kind::Message, &meta, Body::Bytes(raw.clone()));
            prop_assert_eq!(entry.check(), Ok(()));
            let dir = tempfile::tempdir().unwrap();
            let (mut w, _) = Writer::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
            let ids = w.append(&mut [entry]).unwrap().0;
            drop(w);
            verify(dir.path()).unwrap();
            let mut read = Vec::new();
            for_each_record(dir.path(), |info, file| {
                if info.header.kind == Kind::Message {
                    read.push((info.id, info.meta.clone(), read_body(file, info)?));
                }
                Ok(())
            })
            .unwrap();
            prop_assert_eq!(read.len(), 1);
            let (id, meta_bytes, body_read) = read.pop().unwrap();
            prop_assert_eq!(id, ids[0]);
            prop_assert_eq!(body_read, raw);
            let back: MessageMeta = serde_json::from_slice(&meta_bytes).unwrap();
            prop_assert_eq!(&back, &meta);
            // Each addressed recipient's targets, as the record tells them, are what the
            // engine decided.
            for (r, m) in msg.recipients.iter().zip(&back.recipients) {
                let want: Vec<String> = r.resolution.deliver.iter().map(|a| a.to_string()).collect();
                let got: Vec<String> = back.deliver_of(m).map(str::to_string).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
