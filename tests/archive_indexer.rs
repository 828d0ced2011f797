//! The indexer inside `handoff serve`: it follows what the journal made durable, so that
//! `archive search` finds a message seconds after it was accepted without restarting anything;
//! after kill -9 the index and the journal agree exactly; a full disk under the index stops
//! neither mail nor readiness, and the index catches up when space returns; a search waits for
//! the daemon's indexer, or says how far behind it is (exit 3); `reindex` refuses while the
//! daemon holds the index.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use handoff::journal::{Kind, reader};

use crate::daemon::{Daemon, wait_for};
use crate::support::{Sink, SinkMode, SmtpClient, encode_data};

const POLICY: &str = "[domains]\nlocal = [\"corp.example\"]\n";

/// A content filter (LMTP) in front of an LMTP sink, with `storage` lines added to `[storage]`.
fn daemon(storage: &str) -> (Daemon, Sink) {
    let sink = Sink::start(SinkMode::Lmtp).unwrap();
    let policy = format!("{storage}{POLICY}");
    let d = Daemon::start_content_filter(&policy, &format!("lmtp:127.0.0.1:{}", sink.port()));
    (d, sink)
}

fn lmtp_addr(d: &Daemon) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], d.lmtp_port.unwrap()))
}

/// Sends one message with subject `subject` over LMTP; whether it was accepted (250).
fn send_lmtp(addr: SocketAddr, subject: &str) -> std::io::Result<bool> {
    let mut c = SmtpClient::connect(addr)?;
    c.command("LHLO test.example")?;
    c.mail_from("sender@example.net")?;
    if c.rcpt_to("alice@corp.example")?.code != 250 {
        return Ok(false);
    }
    let message = format!(
        "From: <sender@example.net>\r\nTo: <alice@corp.example>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.net>\r\n\r\nbody of {subject}, {}\r\n",
        "filler ".repeat(100)
    );
    if c.command("DATA")?.code != 354 {
        return Ok(false);
    }
    c.write_raw(&encode_data(message.as_bytes()))?;
    let ok = c.read_reply()?.code == 250;
    let _ = c.quit();
    Ok(ok)
}

/// The ids of the message records in the journal, in order.
fn journaled(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    reader::for_each_record(dir, |info, _| {
        if info.header.kind == Kind::Message {
            out.push(info.id.to_string());
        }
        Ok(())
    })
    .unwrap();
    out
}

/// The record ids in the index, sorted (one per document: a record indexed twice is there
/// twice).
fn indexed(dir: &Path) -> Vec<String> {
    let index = handoff::index::Index::open_or_create(dir).unwrap();
    let mut ids = index.ids().unwrap();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// `archive search --json ARGS` through the binary; (exit code, ids, stderr).
fn search(d: &Daemon, args: &[&str]) -> (i32, Vec<String>, String) {
    let mut all = vec!["archive", "search", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = d.cli(&all);
    let ids = match code {
        0 => serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect(),
        _ => Vec::new(),
    };
    (code, ids, err)
}

const FELL_BACK: &str = "the index cannot be used";

/// Many messages through the LMTP front end from four clients; kill -9 of `serve` while it
/// indexes them; restart: the index ends up holding exactly the journal's messages, each once.
#[test]
fn kill_9_while_indexing_under_load_then_the_index_and_the_journal_agree_exactly() {
    let (mut d, _sink) = daemon("");
    let addr = lmtp_addr(&d);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                // Until the daemon is gone (a refused connection or a cut session ends it).
                while !stop.load(Ordering::Relaxed) {
                    match send_lmtp(addr, &format!("load-{c}-{n}")) {
                        Ok(_) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                    n += 1;
                }
            })
        })
        .collect();
    // Let the indexer commit a few times under load, then kill it mid-way.
    wait_for(Duration::from_secs(60), "300 messages sent", || {
        (sent.load(Ordering::Relaxed) >= 300).then_some(())
    });
    wait_for(Duration::from_secs(30), "the indexer to commit", || {
        d.metric("handoff_index_records_total").filter(|&n| n > 0.0)
    });
    d.signal("KILL");
    let _ = d.wait_exit(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let index_dir = d.path("index");
    let before = indexed(&index_dir);
    let journal = journaled(&d.journal_dir());
    eprintln!(
        "archive_indexer: {} messages journaled, {} indexed at the kill",
        journal.len(),
        before.len()
    );
    let all: BTreeSet<_> = journal.iter().collect();
    assert!(
        before.iter().all(|id| all.contains(id)),
        "only journaled records"
    );

    d.spawn(&[]);
    let want = sorted(journaled(&d.journal_dir()));
    // The restarted indexer catches up with the backlog on its own (no search triggers it).
    wait_for(
        Duration::from_secs(60),
        "the index to hold the journal",
        || {
            (d.metric("handoff_index_records_total")? as usize + before.len() >= want.len()
                && d.metric("handoff_index_lag_records") == Some(0.0))
            .then_some(())
        },
    );
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0));
    let got = indexed(&index_dir);
    let unique: BTreeSet<_> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a record indexed twice");
    assert_eq!(got, want, "the index holds exactly the journal's messages");
}

/// A mounted tmpfs, unmounted on drop (even when the test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs at {} (needs root)", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with `dir/filler` until it has no space left.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if f.write_all(&block).and_then(|()| f.sync_all()).is_err() {
            break;
        }
    }
    // What tmpfs still had in smaller pieces.
    while f.write_all(&block[..512]).is_ok() {}
}

/// The index on a small tmpfs that fills up: mail is still accepted and journaled, `/readyz`
/// stays ready, the error metric rises, one log line says so; a search says how far behind the
/// index is (exit 3); once space returns the index catches up without a restart.
#[test]
fn a_full_disk_under_the_index_stops_neither_mail_nor_readiness_and_the_index_catches_up() {
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("mnt");
    // Declared before the daemon: dropped after it, so nothing holds files in it.
    let _tmpfs = Tmpfs::mount(&mnt, "8m");
    let index_dir = mnt.join("index");
    let (d, _sink) = daemon(&format!("index = \"{}\"\n", index_dir.display()));
    let addr = lmtp_addr(&d);
    assert!(send_lmtp(addr, "before-full").unwrap());
    wait_for(Duration::from_secs(20), "the first message indexed", || {
        (d.metric("handoff_index_records_total") == Some(1.0)).then_some(())
    });

    fill(&mnt);
    for n in 0..20 {
        assert!(
            send_lmtp(addr, &format!("while-full-{n}")).unwrap(),
            "message {n} accepted"
        );
    }
    assert_eq!(
        journaled(&d.journal_dir()).len(),
        21,
        "every message journaled"
    );
    wait_for(Duration::from_secs(20), "the index error metric", || {
        d.metric("handoff_index_errors_total").filter(|&n| n > 0.0)
    });
    assert_eq!(d.http_get("/readyz").0, 200, "still ready");
    assert_eq!(d.metric("handoff_index_writable"), Some(0.0));
    // A few retries later: still one line for the episode.
    std::thread::sleep(Duration::from_secs(4));
    assert!(d.metric("handoff_index_errors_total").unwrap() >= 2.0);
    let log = d.log_text();
    assert_eq!(
        log.matches("new messages are not searchable").count(),
        1,
        "one log line per failure episode:\n{log}"
    );
    assert!(send_lmtp(addr, "still-flowing").unwrap());
    assert!(
        d.metric("handoff_index_lag_records").unwrap() >= 20.0,
        "the lag is visible"
    );
    assert!(
        d.metric("handoff_index_lag_seconds").unwrap() >= 3.0,
        "and grows while it fails"
    );

    // The daemon holds the index and cannot catch up: the search says so, and exits 3.
    let (code, ids, err) = search(&d, &["--text", "filler", "--wait", "1"]);
    assert_eq!(code, 3, "{err}");
    assert!(ids.is_empty());
    assert!(err.contains("records behind"), "{err}");
    let (code, ids, err) = search(&d, &["--text", "filler", "--scan"]);
    assert_eq!((code, ids.len()), (0, 22), "{err}");

    std::fs::remove_file(mnt.join("filler")).unwrap();
    // Retried with backoff (1, 2, 4, 8 s...): caught up without a restart.
    wait_for(Duration::from_secs(40), "the index to catch up", || {
        (d.metric("handoff_index_writable") == Some(1.0)
            && d.metric("handoff_index_lag_records") == Some(0.0)
            && d.log_text().contains("writable again"))
        .then_some(())
    });
    let (code, ids, err) = search(&d, &["--text", "filler"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(FELL_BACK), "{err}");
    assert_eq!(sorted(ids), sorted(journaled(&d.journal_dir())));
}

/// While the daemon runs, a search right after a message was accepted answers from the index
/// (waiting the second or so the indexer needs) and finds it; `reindex` refuses to pull the
/// index from under the daemon; an index deleted under the daemon is rebuilt by it.
#[test]
fn archive_search_while_the_daemon_indexes_answers_from_the_index_and_reindex_refuses() {
    let (d, _sink) = daemon("");
    let addr = lmtp_addr(&d);
    for n in 0..5 {
        assert!(send_lmtp(addr, &format!("first-{n}")).unwrap());
        if n == 0 {
            // The daemon's indexer holds the index from its first message on (until then a
            // search finding the index free catches it up itself; the indexer, at nice 19,
            // can be slow to start on a loaded machine).
            wait_for(Duration::from_secs(30), "the daemon's indexer", || {
                (d.metric("handoff_index_records_total") >= Some(1.0)).then_some(())
            });
        }
        let (code, ids, err) = search(&d, &["--text", &format!("first-{n}")]);
        assert_eq!(code, 0, "{err}");
        assert!(!err.contains(FELL_BACK), "{err}");
        assert_eq!(ids.len(), 1, "message {n} found at once: {err}");
    }

    let (code, out, err) = d.cli(&["archive", "reindex"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("held by another process"), "{err}");
    assert!(err.contains("indexer = false"), "and what to do: {err}");
    let (code, ids, err) = search(&d, &["--text", "filler"]);
    assert_eq!((code, ids.len()), (0, 5), "the index is untouched: {err}");

    // Deleted under the daemon: its indexer notices (the directory is another, or its writes
    // fail) and builds a new one from the journal.
    std::fs::remove_dir_all(d.path("index")).unwrap();
    assert!(send_lmtp(addr, "after-delete").unwrap());
    // The 5 messages of the old index and all 6 again in the new one, by the daemon.
    wait_for(
        Duration::from_secs(30),
        "the daemon to build the new index",
        || (d.metric("handoff_index_records_total") == Some(11.0)).then_some(()),
    );
    let (code, ids, err) = search(&d, &["--text", "filler"]);
    assert_eq!((code, ids.len()), (0, 6), "{err}");
}

/// Another process holding the index (a search or `archive prune` catching it up, `archive
/// reindex`) is no fault of the index: the daemon's indexer says so once, as information,
/// counts no error, and indexes on when the holder lets go.
#[test]
fn an_index_held_by_another_process_is_waited_for_without_an_error() {
    let (d, _sink) = daemon("");
    let addr = lmtp_addr(&d);
    assert!(send_lmtp(addr, "first").unwrap());
    wait_for(Duration::from_secs(30), "the first message indexed", || {
        (d.metric("handoff_index_records_total") == Some(1.0)).then_some(())
    });
    // Deleted under the daemon, and a new index taken by this process before the daemon's
    // indexer comes back to it (it does when a message arrives).
    std::fs::remove_dir_all(d.path("index")).unwrap();
    let held = handoff::index::Index::open_for(&d.journal_dir(), &d.path("index")).unwrap();
    let writer = held.writer().unwrap();
    for n in 0..3 {
        assert!(send_lmtp(addr, &format!("while-held-{n}")).unwrap());
    }
    wait_for(
        Duration::from_secs(20),
        "the indexer to find it held",
        || (d.metric("handoff_index_writable") == Some(0.0)).then_some(()),
    );
    // A few retries (after 1, 2 s).
    std::thread::sleep(Duration::from_secs(4));
    let log = d.log_text();
    assert_eq!(
        log.matches("held by another process").count(),
        1,
        "one line for the episode:\n{log}"
    );
    assert!(!log.contains("not searchable until"), "no error:\n{log}");
    assert!(!log.contains("ERROR"), "no error:\n{log}");
    assert_eq!(d.metric("handoff_index_errors_total"), Some(0.0));

    drop(writer);
    drop(held);
    wait_for(
        Duration::from_secs(40),
        "the indexer to take the index",
        || {
            (d.metric("handoff_index_writable") == Some(1.0)
                && d.metric("handoff_index_lag_records") == Some(0.0)
                && d.log_text().contains("writable again"))
            .then_some(())
        },
    );
    assert_eq!(d.metric("handoff_index_errors_total"), Some(0.0));
    // The new index holds every message, from the start of the journal.
    let (code, ids, err) = search(&d, &["--text", "filler"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sorted(ids), sorted(journaled(&d.journal_dir())));
    assert_eq!(journaled(&d.journal_dir()).len(), 4);
}

/// `[storage] indexer = false`: the daemon leaves the index alone; each search catches it up.
#[test]
fn with_the_indexer_off_the_daemon_leaves_the_index_alone() {
    let (d, _sink) = daemon("indexer = false\n");
    assert!(send_lmtp(lmtp_addr(&d), "quiet").unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!d.path("index").exists(), "no index written by the daemon");
    assert_eq!(d.metric("handoff_index_writable"), None);
    assert!(d.log_text().contains("indexer is off"));
    let (code, ids, err) = search(&d, &["--text", "quiet"]);
    assert_eq!((code, ids.len()), (0, 1), "{err}");
    // The search built it and released it: a rebuild is allowed.
    let (code, out, err) = d.cli(&["archive", "reindex"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Through a real Postfix (milter mode): a message Postfix accepted is found by `archive
/// search` within a few seconds, nothing restarted. Prints the measured delays.
#[test]
fn a_message_accepted_by_postfix_is_searchable_within_seconds() {
    use crate::e2e_milter::milter_lines;
    use crate::support::{Lab, LabConfig, send};
    let d = Daemon::start(POLICY);
    let mut config = LabConfig::default();
    for line in milter_lines(d.milter_port) {
        config = config.main_cf_line(line);
    }
    let lab = Lab::start(config);
    let mut delays = Vec::new();
    for n in 0..5 {
        let word = format!("postfixword{n}");
        let message = format!(
            "From: <a@example.net>\r\nTo: <alice@corp.example>\r\nSubject: {word}\r\n\
             Message-ID: <{word}@example.net>\r\n\r\nhello\r\n"
        );
        let t = send(&lab, "a@example.net", &["alice@corp.example"], message);
        assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
        let accepted = Instant::now();
        // Polled as a user would: `--wait 0` answers only from a caught-up index.
        let found = wait_for(Duration::from_secs(10), "the message in a search", || {
            let (code, ids, _) = search(&d, &["--text", &word, "--wait", "0"]);
            (code == 0 && ids.len() == 1).then(|| accepted.elapsed())
        });
        delays.push(found);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Found because the daemon's indexer indexed them (a search catches up itself only when
    // nothing holds the index).
    wait_for(
        Duration::from_secs(5),
        "the daemon's indexer to count them",
        || (d.metric("handoff_index_records_total") == Some(5.0)).then_some(()),
    );
    let worst = delays.iter().max().unwrap();
    eprintln!("archive_indexer: accepted by Postfix to found by archive search: {delays:?}");
    assert!(
        *worst < Duration::from_secs(3),
        "searchable within 3 s: {delays:?}"
    );
}

/// The journal replaced while handoff was stopped (an operator moved a damaged journal aside
/// and started again): the index's position points into records it never saw, so the daemon's
/// indexer starts over instead of indexing on from there; the new mail is found, the old is not,
/// and `verify` agrees.
#[test]
fn a_journal_replaced_while_handoff_was_stopped_gets_its_index_rebuilt() {
    let (mut d, _sink) = daemon("");
    for i in 0..5 {
        assert!(send_lmtp(lmtp_addr(&d), &format!("old{i}")).unwrap());
    }
    let journal = d.path("journal");
    let index = d.path("index");
    wait_for(Duration::from_secs(30), "the old mail indexed", || {
        (indexed(&index).len() == 5).then_some(())
    });
    d.kill();
    std::fs::rename(&journal, d.path("journal-old")).unwrap();
    d.spawn(&[]);
    assert!(send_lmtp(lmtp_addr(&d), "fresh").unwrap());
    let now = journaled(&journal);
    assert_eq!(now.len(), 1);
    wait_for(Duration::from_secs(30), "the index rebuilt", || {
        (indexed(&index) == now).then_some(())
    });
    let (code, ids, err) = search(&d, &["--text", "fresh"]);
    assert_eq!((code, ids), (0, now.clone()), "{err}");
    let (code, ids, err) = search(&d, &["--text", "old0"]);
    assert_eq!((code, ids.len()), (0, 0), "{err}");
    assert!(d.log_text().contains("does not follow"), "{}", d.log_text());
    let (code, out, err) = d.cli(&["archive", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}
