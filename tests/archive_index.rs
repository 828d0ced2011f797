//! `handoff archive search` answers from the index beside the journal (caught up first, rebuilt
//! when deleted, replaced by the full scan, said so, when damaged) and `archive reindex` rebuilds
//! it; pages with `--limit`/`--offset`, phrases, `--exact-department`. Through the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use handoff::journal::record::MessageMeta;
use handoff::journal::writer::{DEFAULT_SEGMENT_BYTES, Writer};
use handoff::journal::{Body, Entry, Kind, RecordId};

/// What the search prints when the index could not answer.
const FELL_BACK: &str = "the index cannot be used";

struct Archive {
    _tmp: tempfile::TempDir,
    journal: PathBuf,
    index: PathBuf,
}

/// (day of January 2026, department, subject): one message each, appended in this order.
const MESSAGES: &[(u32, &str, &str)] = &[
    (1, "sales", "invoice quarterly report due"),
    (2, "sales/emea", "invoice report quarterly"),
    (3, "hr", "invoice for the party"),
    (4, "sales/emea", "invoice reminder"),
    (5, "sales", "invoice final notice"),
    (6, "it", "printer broken"),
];

impl Archive {
    fn new() -> (Archive, Vec<RecordId>) {
        let tmp = tempfile::tempdir().unwrap();
        let journal = tmp.path().join("journal");
        let index = tmp.path().join("idx");
        let (mut w, _) = Writer::open(&journal, DEFAULT_SEGMENT_BYTES).unwrap();
        let mut ids = Vec::new();
        for (day, dept, subject) in MESSAGES {
            let meta = MessageMeta {
                time: format!("2026-01-{day:02}T10:00:00Z"),
                accounts: vec!["b@corp.example".into()],
                departments: vec![dept.to_string()],
                ..crate::support::message_meta("a@example.net")
            };
            let body = format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n").into_bytes();
            let mut entries = [Entry::new(Kind::Message, &meta, Body::Bytes(body))];
            ids.push(w.append(&mut entries).unwrap().0[0]);
        }
        (
            Archive {
                _tmp: tmp,
                journal,
                index,
            },
            ids,
        )
    }

    /// `handoff archive ARGS --journal J --index I` (no policy); (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("--config")
            .arg(self.journal.with_file_name("no-policy.toml"))
            .arg("archive")
            .args(args)
            .arg("--journal")
            .arg(&self.journal)
            // `audit` reads the journal only.
            .args(match args.first() {
                Some(&"audit") => vec![],
                _ => vec!["--index".as_ref(), self.index.as_os_str()],
            })
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// The ids a `--json` search prints, in its order, and its stderr.
    fn search(&self, args: &[&str]) -> (Vec<String>, String) {
        let mut all = vec!["search", "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = self.run(&all);
        assert_eq!(code, 0, "search {args:?}: {out}{err}");
        let hits: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let ids = hits
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect();
        (ids, err)
    }

    /// Like [`Archive::search`], and the index answered.
    fn indexed(&self, args: &[&str]) -> Vec<String> {
        let (ids, err) = self.search(args);
        assert!(!err.contains(FELL_BACK), "{args:?}: {err}");
        ids
    }
}

/// The ids of messages `which` (indexes into [`MESSAGES`]), newest first.
fn newest_first(ids: &[RecordId], which: &[usize]) -> Vec<String> {
    which.iter().rev().map(|&i| ids[i].to_string()).collect()
}

#[test]
fn archive_search_answers_from_the_index_and_rebuilds_a_deleted_one() {
    let (a, ids) = Archive::new();
    let invoices = newest_first(&ids, &[0, 1, 2, 3, 4]);
    assert_eq!(a.indexed(&["--text", "invoice"]), invoices);
    assert!(
        a.index.join("meta.json").exists(),
        "the search built the index in {}",
        a.index.display()
    );
    assert_eq!(a.indexed(&["--text", "printer"]), newest_first(&ids, &[5]));

    std::fs::remove_dir_all(&a.index).unwrap();
    assert_eq!(a.indexed(&["--text", "invoice"]), invoices);
    assert!(a.index.join("meta.json").exists());

    // A message appended after the index was built is found: the search caught up first.
    let (mut w, _) = Writer::open(&a.journal, DEFAULT_SEGMENT_BYTES).unwrap();
    let meta = MessageMeta {
        time: "2026-01-07T10:00:00Z".into(),
        sender: "c@example.net".into(),
        ..MessageMeta::default()
    };
    let body = b"Subject: late invoice\r\n\r\nlate\r\n".to_vec();
    let late = w
        .append(&mut [Entry::new(Kind::Message, &meta, Body::Bytes(body))])
        .unwrap()
        .0[0];
    drop(w);
    let mut with_late = vec![late.to_string()];
    with_late.extend(invoices);
    assert_eq!(a.indexed(&["--text", "invoice"]), with_late);
}

#[test]
fn archive_reindex_repairs_a_damaged_index() {
    let (a, ids) = Archive::new();
    let invoices = newest_first(&ids, &[0, 1, 2, 3, 4]);
    assert_eq!(a.indexed(&["--text", "invoice"]), invoices);

    std::fs::write(a.index.join("meta.json"), b"{ not json").unwrap();
    let (got, err) = a.search(&["--text", "invoice"]);
    assert!(err.contains(FELL_BACK), "the damage is said: {err}");
    assert!(err.contains("reindex"), "and what fixes it: {err}");
    assert_eq!(
        got, invoices,
        "the full scan answers the same, newest first"
    );

    let (code, out, err) = a.run(&["reindex"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("6 messages indexed"), "{out}");
    assert!(!a.index.with_file_name("idx.new").exists());
    assert_eq!(a.indexed(&["--text", "invoice"]), invoices);

    // An interrupted rebuild's leftovers are never taken for the index, and go at the next one.
    std::fs::create_dir(a.index.with_file_name("idx.new")).unwrap();
    std::fs::write(a.index.with_file_name("idx.new").join("meta.json"), b"x").unwrap();
    let (code, out, err) = a.run(&["reindex"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!a.index.with_file_name("idx.new").exists());
    assert_eq!(a.indexed(&["--text", "invoice"]), invoices);

    // Rebuilding is an access to every message: it is in the audit trail.
    let (code, out, err) = a.run(&["audit", "--command", "reindex", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let trail: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(trail.len(), 2, "{out}");
}

#[test]
fn archive_search_pages_with_limit_and_offset_and_says_the_total() {
    let (a, ids) = Archive::new();
    let all = newest_first(&ids, &[0, 1, 2, 3, 4]);
    let (got, err) = a.search(&["--text", "invoice", "--limit", "2", "--offset", "1"]);
    assert_eq!(got, all[1..3]);
    assert!(err.contains("showing 2-3 of 5 messages"), "{err}");
    let (got, err) = a.search(&["--text", "invoice", "--offset", "4"]);
    assert_eq!(got, all[4..]);
    assert!(err.contains("showing 5-5 of 5"), "{err}");
    let (got, err) = a.search(&["--text", "invoice", "--limit", "10"]);
    assert_eq!(got, all);
    assert!(err.contains("5 messages"), "{err}");
    assert!(!err.contains(FELL_BACK), "{err}");
}

#[test]
fn archive_search_finds_a_quoted_phrase_as_written() {
    let (a, ids) = Archive::new();
    assert_eq!(
        a.indexed(&["--text", "\"quarterly report\""]),
        newest_first(&ids, &[0])
    );
    assert_eq!(
        a.indexed(&["--text", "quarterly report"]),
        newest_first(&ids, &[0, 1]),
        "without quotes, the words in any order"
    );
    assert_eq!(
        a.indexed(&["--text", "invoice \"report quarterly\""]),
        newest_first(&ids, &[1])
    );
}

#[test]
fn archive_search_exact_department_leaves_out_sub_departments() {
    let (a, ids) = Archive::new();
    assert_eq!(
        a.indexed(&["--department", "sales"]),
        newest_first(&ids, &[0, 1, 3, 4])
    );
    assert_eq!(
        a.indexed(&["--department", "sales", "--exact-department"]),
        newest_first(&ids, &[0, 4])
    );
    assert_eq!(
        a.indexed(&["--department", "sales/emea", "--exact-department"]),
        newest_first(&ids, &[1, 3])
    );
    // The full scan, which answers when the index cannot, means the same.
    std::fs::write(a.index.join("meta.json"), b"damaged").unwrap();
    let (got, err) = a.search(&["--department", "sales", "--exact-department"]);
    assert!(err.contains(FELL_BACK), "{err}");
    assert_eq!(got, newest_first(&ids, &[0, 4]));
}

/// An index follows one journal: pointed at another journal's index, the search does not
/// resume from a position that means nothing there.
#[test]
fn archive_search_refuses_the_index_of_another_journal() {
    let (a, ids) = Archive::new();
    let (b, _) = Archive::new();
    assert_eq!(a.indexed(&["--text", "printer"]), newest_first(&ids, &[5]));
    let other = Archive {
        _tmp: tempfile::tempdir().unwrap(),
        journal: b.journal.clone(),
        index: a.index.clone(),
    };
    let (_, err) = other.search(&["--text", "printer"]);
    assert!(err.contains("follows the journal"), "{err}");
    assert!(Path::new(&a.index).exists());
}

/// Another process holds the index's writer: the index answers while nothing is missing from
/// it; once a message is journaled that it lacks, the search waits (`--wait`) for the holder to
/// catch up and answers from the index when it does; when it does not, the search answers
/// nothing and exits 3, saying how far behind the index is; `--scan` reads the journal.
#[test]
fn archive_search_with_the_index_locked_answers_only_when_it_is_complete() {
    let (a, ids) = Archive::new();
    assert_eq!(a.indexed(&["--text", "printer"]), newest_first(&ids, &[5]));
    let held = handoff::index::Index::open_or_create(&a.index).unwrap();
    let mut writer = held.writer().unwrap();
    assert_eq!(a.indexed(&["--text", "printer"]), newest_first(&ids, &[5]));

    let (mut w, _) = Writer::open(&a.journal, DEFAULT_SEGMENT_BYTES).unwrap();
    let meta = MessageMeta {
        time: "2026-01-08T10:00:00Z".into(),
        ..MessageMeta::default()
    };
    let body = b"Subject: printer fixed\r\n\r\nfixed\r\n".to_vec();
    let fixed = w
        .append(&mut [Entry::new(Kind::Message, &meta, Body::Bytes(body))])
        .unwrap()
        .0[0];
    drop(w);
    let both = [fixed.to_string(), ids[5].to_string()];

    let started = std::time::Instant::now();
    let (code, out, err) = a.run(&["search", "--text", "printer", "--wait", "1"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "it waited"
    );
    assert!(out.is_empty(), "no partial answer: {out}");
    assert!(err.contains("1 records behind"), "{err}");
    assert!(err.contains("--scan"), "and what answers anyway: {err}");
    let (got, err) = a.search(&["--text", "printer", "--scan"]);
    assert_eq!(got, both, "{err}");

    // The holder catches up while the search waits: the index answers, complete.
    let journal = a.journal.clone();
    let catching_up = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        handoff::index::catch_up(&journal, &held, &mut writer, 100).unwrap();
    });
    let (got, err) = a.search(&["--text", "printer", "--wait", "20"]);
    catching_up.join().unwrap();
    assert!(!err.contains(FELL_BACK), "{err}");
    assert_eq!(got, both);
}

/// `archive verify --json`, parsed: (exit code, the `index` object, stderr).
fn verify_json(a: &Archive, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["verify", "--json", "-q"];
    args.extend_from_slice(extra);
    let (code, out, err) = a.run(&args);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v["index"].clone(), err)
}

/// `verify` finds no index, then one that agrees, then one behind (a message it has not
/// taken yet: not a failure), then one a broken indexer left with a record missing and one
/// twice (named, exit 3), which `reindex` repairs.
#[test]
fn archive_verify_compares_the_index_with_the_journal() {
    let (a, ids) = Archive::new();
    let (code, out, err) = a.run(&["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": ok: "), "the journal: {out}");
    assert!(out.contains("no index"), "{out}");

    a.indexed(&["--text", "invoice"]);
    let (code, out, err) = a.run(&["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 6 messages"), "{out}");
    assert!(out.contains(&format!("(last {})", ids[5])), "{out}");

    let (mut w, _) = Writer::open(&a.journal, DEFAULT_SEGMENT_BYTES).unwrap();
    let meta = crate::support::message_meta("late@example.net");
    let body = b"Subject: late\r\n\r\nlate\r\n".to_vec();
    let late = w
        .append(&mut [Entry::new(Kind::Message, &meta, Body::Bytes(body))])
        .unwrap()
        .0[0];
    drop(w);
    let (code, out, err) = a.run(&["verify"]);
    assert_eq!(code, 0, "behind is no failure: {out}{err}");
    assert!(out.contains("behind the journal by 1 messages"), "{out}");
    assert!(out.contains(&late.to_string()), "{out}");
    let (code, index, _) = verify_json(&a, &[]);
    assert_eq!(code, 0);
    assert_eq!(index["status"], "behind", "{index}");
    assert_eq!(index["behind"], 1, "{index}");

    // What a broken indexer could leave: a record missing, another twice.
    a.indexed(&["--text", "late"]);
    {
        let held = handoff::index::Index::open_or_create(&a.index).unwrap();
        let at = held.position().unwrap();
        let record = handoff::journal::records(&a.journal)
            .map(Result::unwrap)
            .find(|r| r.id == ids[4])
            .unwrap();
        let again = handoff::index::Doc::new(ids[4], Kind::Message, &record.meta, b"").unwrap();
        let mut w = held.writer().unwrap();
        w.delete(ids[2]);
        w.add(&[again]).unwrap();
        w.commit(at, None).unwrap();
    }
    let (code, out, err) = a.run(&["verify"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains(": ok: "), "the journal is whole: {out}");
    assert!(
        err.contains(&format!("1 missing from the index: {}", ids[2])),
        "{err}"
    );
    assert!(
        err.contains(&format!("1 in the index twice: {}", ids[4])),
        "{err}"
    );
    assert!(err.contains("handoff archive reindex"), "{err}");
    let (_, index, _) = verify_json(&a, &[]);
    assert_eq!(index["status"], "differs", "{index}");
    assert_eq!(
        index["missing"]["first"],
        serde_json::json!([ids[2].to_string()])
    );

    let (code, out, err) = a.run(&["reindex"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = a.run(&["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 7 messages"), "{out}");
}

/// The largest index file with this extension (a segment's component).
fn index_file(index: &Path, ext: &str) -> PathBuf {
    std::fs::read_dir(index)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap_or_else(|| panic!("no .{ext} file in {}", index.display()))
}

/// A damaged index file (a segment file's bytes changed; `meta.json` cut short) is named by
/// `verify`, which fails; `reindex` rebuilds the index, and `verify` passes again.
#[test]
fn archive_verify_names_a_damaged_index_file_and_reindex_repairs_it() {
    let (a, _) = Archive::new();
    a.indexed(&["--text", "invoice"]);
    for damage in ["store", "idx", "meta.json"] {
        let file = if damage == "meta.json" {
            let meta = a.index.join("meta.json");
            let bytes = std::fs::read(&meta).unwrap();
            std::fs::write(&meta, &bytes[..bytes.len() / 2]).unwrap();
            meta
        } else {
            let file = index_file(&a.index, damage);
            let mut bytes = std::fs::read(&file).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x55;
            std::fs::write(&file, bytes).unwrap();
            file
        };
        let (code, out, err) = a.run(&["verify"]);
        assert_eq!(code, 3, "{damage}: {out}{err}");
        assert!(out.contains(": ok: "), "the journal is whole: {out}");
        assert!(
            err.contains(&format!("damaged: {}", file.display())),
            "{damage}: the file is named: {err}"
        );
        assert!(err.contains("handoff archive reindex"), "{err}");
        let (code, out, err) = a.run(&["reindex"]);
        assert_eq!(code, 0, "{damage}: {out}{err}");
        let (code, out, err) = a.run(&["verify"]);
        assert_eq!(code, 0, "{damage}: {out}{err}");
        assert!(out.contains("ok: 6 messages"), "{damage}: {out}");
    }
}

/// The ids of the journal's messages, in journal order.
fn journal_messages(journal: &Path) -> Vec<String> {
    handoff::journal::records(journal)
        .map(Result::unwrap)
        .filter(|r| r.header.kind == Kind::Message)
        .map(|r| r.id.to_string())
        .collect()
}

/// Every id the index shows (a search with no filter), sorted; none may be there twice.
fn indexed_ids(a: &Archive) -> Vec<String> {
    let mut ids = a.indexed(&["--limit", "1000000"]);
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "an id shown twice");
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// kill -9 of `reindex` after its first commit: the index it was replacing is untouched and
/// agrees with the journal; the half-built `DIR.new` agrees with the journal up to the
/// position of its commit (only behind); a search, and the next `reindex`, leave an index with
/// exactly the journal's messages, none twice.
#[test]
fn archive_reindex_killed_mid_build_leaves_index_and_journal_agreeing() {
    let (a, _) = Archive::new();
    let (mut w, _) = Writer::open(&a.journal, DEFAULT_SEGMENT_BYTES).unwrap();
    for chunk in 0..6 {
        let mut entries: Vec<Entry> = (0..500)
            .map(|i| {
                let meta = crate::support::message_meta(&format!("s{chunk}-{i}@example.net"));
                let body = format!("Subject: bulk {chunk} {i}\r\n\r\nbulk message {i}\r\n");
                Entry::new(Kind::Message, &meta, Body::Bytes(body.into_bytes()))
            })
            .collect();
        w.append(&mut entries).unwrap();
    }
    drop(w);
    let all = sorted(journal_messages(&a.journal));
    assert_eq!(all.len(), 3006);
    assert_eq!(indexed_ids(&a), all);

    let new = a.index.with_file_name("idx.new");
    let mut child = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .arg("--config")
        .arg(a.journal.with_file_name("no-policy.toml"))
        .args(["archive", "reindex", "--journal"])
        .arg(&a.journal)
        .arg("--index")
        .arg(&a.index)
        .env("HANDOFF_INDEX_BATCH", "100")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first commit: a journal position in meta.json's payload.
    let committed = || {
        std::fs::read(new.join("meta.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|m| m["payload"].is_string())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !committed() {
        assert!(
            std::time::Instant::now() < deadline,
            "no commit in {}",
            new.display()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "reindex ended before its first commit"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed mid-build, not finished"
    );
    assert!(new.exists());

    // The half-built index is consistent with the journal up to its commit.
    let half = Archive {
        _tmp: tempfile::tempdir().unwrap(),
        journal: a.journal.clone(),
        index: new.clone(),
    };
    let (code, index, err) = verify_json(&half, &[]);
    assert_eq!(code, 0, "{index}{err}");
    assert_eq!(index["status"], "behind", "{index}");
    assert!(index["behind"].as_u64().unwrap() > 0, "{index}");
    // The index it was replacing is untouched.
    let (code, index, err) = verify_json(&a, &[]);
    assert_eq!(code, 0, "{index}{err}");
    assert_eq!(index["status"], "ok", "{index}");

    // A search uses (and catches up) the old index; the next reindex starts over.
    assert_eq!(indexed_ids(&a), all);
    let (code, out, err) = a.run(&["reindex"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!new.exists());
    let (code, index, err) = verify_json(&a, &[]);
    assert_eq!(code, 0, "{index}{err}");
    assert_eq!(index["status"], "ok", "{index}");
    assert_eq!(index["documents"], 3006, "{index}");
    assert_eq!(indexed_ids(&a), sorted(journal_messages(&a.journal)));
}

/// `archive prune` removes exactly the messages of the segments it removed from the index, in
/// the same command: right after it, `verify` finds the index agreeing (not behind), and the
/// index holds exactly the journal's messages.
#[test]
fn archive_prune_removes_exactly_the_pruned_messages_from_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = tmp.path().join("journal");
    let config = tmp.path().join("handoff.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\njournal = \"{}\"\n[archive]\nretention_days = 30\n",
            journal.display()
        ),
    )
    .unwrap();
    // Small segments, sealed every few messages: the old ones can be pruned.
    let (mut w, _) = Writer::open(&journal, 2048).unwrap();
    let recent = jiff::Timestamp::now().to_string();
    for i in 0..30 {
        let meta = MessageMeta {
            time: if i < 18 {
                format!("2025-03-{:02}T10:00:00Z", i + 1)
            } else {
                recent.clone()
            },
            ..crate::support::message_meta(&format!("s{i}@example.net"))
        };
        let body = format!("Subject: message {i}\r\n\r\n{}\r\n", "x".repeat(300));
        w.append(&mut [Entry::new(
            Kind::Message,
            &meta,
            Body::Bytes(body.into_bytes()),
        )])
        .unwrap();
    }
    drop(w);
    let a = Archive {
        journal: journal.clone(),
        index: handoff::policy::default_index_dir(&journal),
        _tmp: tmp,
    };
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("--config")
            .arg(&config)
            .arg("archive")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let before = sorted(journal_messages(&journal));
    assert_eq!(indexed_ids(&a), before);

    let (code, out, err) = cli(&["prune"]);
    assert_eq!(code, 0, "{out}{err}");
    let after = sorted(journal_messages(&journal));
    assert!(
        after.len() < before.len() && after.len() >= 12,
        "some old segments pruned: {out}"
    );
    assert!(out.contains("removed from the index"), "{out}");
    let (code, out, err) = cli(&["verify", "--json", "-q"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let index = &v["index"];
    assert_eq!(index["status"], "ok", "nothing left to remove: {index}");
    assert_eq!(index["pruned_pending"], 0, "{index}");
    assert_eq!(index["documents"], after.len(), "{index}");
    assert_eq!(index["expected"], after.len(), "{index}");
    assert_eq!(indexed_ids(&a), after, "exactly the journal's messages");
}

/// With no daemon's indexer, each search that finds new mail catches the index up and commits
/// a segment: it waits for the merges that commit starts (of small segments only), so the
/// segments do not pile up one per search (they did: 17 searches, 17 segments more).
#[test]
fn searches_that_each_catch_up_a_little_do_not_pile_up_segments() {
    let (a, _) = Archive::new();
    let rounds = 17;
    for n in 0..rounds {
        let (mut w, _) = Writer::open(&a.journal, DEFAULT_SEGMENT_BYTES).unwrap();
        let meta = crate::support::message_meta("a@example.net");
        let body = format!("Subject: round{n}\r\n\r\nround{n}\r\n").into_bytes();
        let mut entries = [Entry::new(Kind::Message, &meta, Body::Bytes(body))];
        w.append(&mut entries).unwrap();
        drop(w);
        assert_eq!(a.indexed(&["--text", &format!("round{n}")]).len(), 1);
    }
    let index = handoff::index::Index::open_or_create(&a.index).unwrap();
    assert_eq!(index.records().unwrap(), (MESSAGES.len() + rounds) as u64);
    let segments = index.segments().unwrap();
    assert!(segments <= 8, "{segments} segments after {rounds} searches");
}
