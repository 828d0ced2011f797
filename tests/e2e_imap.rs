//! `handoff archive import` from IMAP (and the harness under it), against a private Dovecot
//! (tests/support/dovecot.rs) over TLS with a test CA: several users with nested folders, an
//! 8-bit subject, a message without Date, a large message; import, rerun (nothing new), new
//! mail (only it), a changed UIDVALIDITY (read again, nothing archived twice), a wrong password
//! (that account fails, the others finish, the status says why); `archive search` finds the
//! mail by account, folder, department, text and time; `verify` passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::Dovecot;

const POLICY: &str = r#"
[domains]
local = ["corp.example"]

[accounts."alice@corp.example"]
state = "active"
department = "sales/emea"

[accounts."bob@corp.example"]
state = "active"
department = "support"

[accounts."carol@corp.example"]
state = "active"
department = "support"
"#;

/// Passwords in the CSV; the wrong one must never show.
const CAROL_WRONG: &str = "zq-not-carols-password";

struct Run {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    ca: PathBuf,
}

impl Run {
    fn new(d: &Dovecot) -> Run {
        Run::with_policy(d, POLICY)
    }

    fn with_policy(d: &Dovecot, policy: &str) -> Run {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::write(root.join("policy.toml"), policy).unwrap();
        Run {
            _tmp: tmp,
            root,
            ca: d.ca_file(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `handoff --config POLICY archive ARGS --journal J`: (exit code, stdout, stderr).
    fn archive(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("--config")
            .arg(self.path("policy.toml"))
            .arg("archive")
            .args(args)
            .arg("--journal")
            .arg(self.path("journal"))
            .env("USER", "importer")
            .env_remove("SUDO_USER")
            .env_remove("HANDOFF_IMAP_PASSWORD")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn import_csv(&self, csv: &Path) -> (i32, String, String) {
        let ca = self.ca.to_str().unwrap().to_string();
        self.archive(&[
            "import",
            "--quiet",
            "--csv",
            csv.to_str().unwrap(),
            "--ca-file",
            &ca,
        ])
    }

    fn search(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["search", "--json", "--limit", "100000"];
        a.extend_from_slice(args);
        let (code, out, err) = self.archive(&a);
        assert_eq!(code, 0, "search {args:?}: {err}");
        serde_json::from_str(&out).unwrap()
    }
}

/// The counts an import printed for an account: (seen, imported, duplicate, failed).
fn counts(out: &str, account: &str) -> (u64, u64, u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{account}: done: ")))
        .unwrap_or_else(|| panic!("no done line for {account} in {out}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    let k = n.len();
    (n[k - 4], n[k - 3], n[k - 2], n[k - 1])
}

fn msg(subject: &str, date: Option<&str>, body: &str) -> Vec<u8> {
    let date = date.map_or(String::new(), |d| format!("Date: {d}\r\n"));
    format!(
        "From: x@example.net\r\nTo: team@example.net\r\n{date}Subject: {subject}\r\n\
Message-ID: <{subject}@example.net>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

#[test]
fn the_private_dovecot_stores_and_returns_messages_byte_for_byte() {
    let d = Dovecot::start(&[("alice", "pw-alice")]);
    let m: &[u8] = b"From: a@x.example\r\nSubject: hi\r\n\r\nbody\r\n";
    d.append(
        "alice",
        "Projects/Alpha",
        &[(m, Some("2024-03-01T08:09:10Z"))],
    );
    let got = d.messages("alice", "Projects/Alpha");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, m);
}

#[test]
fn imap_import_reruns_incrementally_survives_a_new_uidvalidity_and_fails_one_account_alone() {
    let mut d = Dovecot::start(&[
        ("alice", "pw-alice"),
        ("bob", "pw-bob"),
        ("carol", "pw-carol"),
    ]);
    let _ = &mut d;
    let plain = msg(
        "zqinboxone",
        Some("Mon, 2 Mar 2026 09:00:00 +0000"),
        "hello",
    );
    // An 8-bit subject: raw UTF-8 in the header, as many clients send it.
    let eightbit = "From: x@example.net\r\nDate: Tue, 3 Mar 2026 09:00:00 +0000\r\n\
Subject: zqeightbit Grüße aus Köln\r\n\r\nbody\r\n"
        .as_bytes()
        .to_vec();
    let nodate = msg("zqnodate", None, "no date here");
    let nested = msg(
        "zqnested",
        Some("Wed, 4 Mar 2026 09:00:00 +0000"),
        "quarterly zqforecast",
    );
    let umlaut = msg("zqdraft", Some("Thu, 5 Mar 2026 09:00:00 +0000"), "draft");
    d.append("alice", "INBOX", &[(&plain, None), (&eightbit, None)]);
    d.append("alice", "INBOX", &[(&nodate, Some("2023-05-06T07:08:09Z"))]);
    d.append("alice", "Projects/Alpha/2026", &[(&nested, None)]);
    // A folder name outside ASCII: modified UTF-7 on the wire.
    d.append("alice", "Entwürfe", &[(&umlaut, None)]);
    // bob: a large message (6 MiB, spooled, never whole in memory) and a small one.
    let mut large = msg("zqlarge", Some("Fri, 6 Mar 2026 09:00:00 +0000"), "");
    large.truncate(large.len() - 2);
    for i in 0..(6 * 1024 * 1024 / 64) {
        large.extend_from_slice(format!("{i:062}\r\n").as_bytes());
    }
    let bobs = msg(
        "zqbobsmall",
        Some("Sat, 7 Mar 2026 09:00:00 +0000"),
        "small",
    );
    d.append("bob", "INBOX", &[(&large, None), (&bobs, None)]);
    d.append("carol", "INBOX", &[(&msg("zqcarol", None, "x"), None)]);

    let run = Run::new(&d);
    let host = d.host();
    let csv = run.path("accounts.csv");
    std::fs::write(
        &csv,
        format!(
            "account,source,password,host\n\
alice@corp.example,alice,pw-alice,{host}\n\
bob@corp.example,bob,pw-bob,{host}\n\
carol@corp.example,carol,{CAROL_WRONG},{host}\n"
        ),
    )
    .unwrap();

    let (code, out, err) = run.import_csv(&csv);
    assert_eq!(code, 1, "carol failed: the exit code says so\n{out}{err}");
    assert_eq!(
        counts(&out, "alice@corp.example"),
        (5, 5, 0, 0),
        "{out}{err}"
    );
    assert_eq!(counts(&out, "bob@corp.example"), (2, 2, 0, 0), "{out}{err}");
    assert!(
        out.contains("carol@corp.example: failed: ") && out.contains("login as `carol` refused"),
        "{out}"
    );
    assert!(!out.contains(CAROL_WRONG) && !err.contains(CAROL_WRONG));

    // The status says who failed and why, without the password.
    let (code, status, _) = run.archive(&["import", "--status", "--csv"]);
    assert_eq!(code, 1);
    assert!(!status.contains(CAROL_WRONG), "{status}");
    let carol = status.lines().find(|l| l.contains("carol@")).unwrap();
    assert!(
        carol.contains("failed") && carol.contains("refused"),
        "{carol}"
    );
    let alice = status.lines().find(|l| l.contains("alice@")).unwrap();
    assert!(alice.contains("done"), "{alice}");

    // Search by account, folder, department, text and time.
    assert_eq!(run.search(&["--account", "alice@corp.example"]).len(), 5);
    assert_eq!(run.search(&["--department", "support"]).len(), 2);
    let hits = run.search(&["--folder", "Projects/Alpha/2026"]);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(run.search(&["--folder", "Entwürfe"]).len(), 1);
    assert_eq!(
        run.search(&["--folder", "INBOX", "--account", "alice@corp.example"])
            .len(),
        3
    );
    assert_eq!(run.search(&["--text", "zqforecast"]).len(), 1);
    assert_eq!(run.search(&["--text", "Köln"]).len(), 1);
    assert_eq!(run.search(&["--text", "zqlarge"]).len(), 1);
    // The message without Date is filed at its INTERNALDATE.
    let hit = &run.search(&["--text", "zqnodate"])[0];
    assert_eq!(hit["time"], "2023-05-06T07:08:09Z", "{hit}");
    assert_eq!(
        run.search(&[
            "--since",
            "2026-03-04",
            "--until",
            "2026-03-05",
            "--account",
            "alice@corp.example"
        ])
        .len(),
        2
    );
    // The large message is archived byte for byte.
    let id: handoff::journal::RecordId = run.search(&["--text", "zqlarge"])[0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(handoff::journal::search::message_bytes(&run.path("journal"), id).unwrap() == large);
    // Nothing was marked seen at the source (BODY.PEEK, EXAMINE): Dovecot's Maildir keeps
    // flags in the file names (`:2,S`).
    let seen = walk(&d.dir().join("mail/alice"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(":2,S"))
        .count();
    assert_eq!(seen, 0);

    // A rerun with carol's password fixed: nothing new for alice and bob, carol's one.
    std::fs::write(
        &csv,
        std::fs::read_to_string(&csv)
            .unwrap()
            .replace(CAROL_WRONG, "pw-carol"),
    )
    .unwrap();
    let (code, out, err) = run.import_csv(&csv);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counts(&out, "alice@corp.example"), (0, 0, 0, 0), "{out}");
    assert_eq!(counts(&out, "bob@corp.example"), (0, 0, 0, 0), "{out}");
    assert_eq!(counts(&out, "carol@corp.example"), (1, 1, 0, 0), "{out}");

    // New mail: only it is read.
    let late = msg(
        "zqlatecomer",
        Some("Sun, 8 Mar 2026 09:00:00 +0000"),
        "late",
    );
    d.append("alice", "Projects/Alpha/2026", &[(&late, None)]);
    let (code, out, err) = run.import_csv(&csv);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counts(&out, "alice@corp.example"), (1, 1, 0, 0), "{out}");

    // A new UIDVALIDITY (the folder deleted and made again with the same mail): the folder is
    // read again whole, and nothing is archived twice.
    d.recreate("alice", "Projects/Alpha/2026");
    d.append(
        "alice",
        "Projects/Alpha/2026",
        &[(&nested, None), (&late, None)],
    );
    let (code, out, err) = run.import_csv(&csv);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counts(&out, "alice@corp.example"), (2, 0, 2, 0), "{out}");
    assert_eq!(run.search(&["--account", "alice@corp.example"]).len(), 6);
    // And the run after that reads nothing.
    let (_, out, _) = run.import_csv(&csv);
    assert_eq!(counts(&out, "alice@corp.example"), (0, 0, 0, 0), "{out}");

    let (code, out, err) = run.archive(&["verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `archive restore`: alice's archived mail appended to bob's `Archive/alice` byte for byte,
/// with the archive time as INTERNALDATE; a rerun appends nothing; the restore is audited
/// before it happens; a wrong password fails without showing it.
#[test]
fn archive_restore_appends_byte_identical_messages_once() {
    let d = Dovecot::start(&[("alice", "pw-alice"), ("bob", "pw-bob")]);
    let eightbit = "From: x@example.net\r\nDate: Tue, 3 Mar 2026 09:00:00 +0000\r\n\
Subject: zqeightbit Grüße\r\n\r\nbody\r\n"
        .as_bytes()
        .to_vec();
    let nodate = msg("zqnodate", None, "no date here");
    let nested = msg("zqnested", Some("Wed, 4 Mar 2026 09:00:00 +0000"), "nested");
    d.append("alice", "INBOX", &[(&eightbit, None)]);
    d.append("alice", "INBOX", &[(&nodate, Some("2023-05-06T07:08:09Z"))]);
    d.append("alice", "Projects/Alpha", &[(&nested, None)]);

    let run = Run::new(&d);
    let host = d.host();
    let pw = run.path("alice.pw");
    std::fs::write(&pw, "pw-alice\n").unwrap();
    let ca = d.ca_file();
    let source = format!("imaps://alice@{host}");
    let (code, out, err) = run.archive(&[
        "import",
        "--quiet",
        "--account",
        "alice@corp.example",
        &source,
        "--password-file",
        pw.to_str().unwrap(),
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counts(&out, "alice@corp.example"), (3, 3, 0, 0), "{out}");

    let bob_pw = run.path("bob.pw");
    std::fs::write(&bob_pw, "pw-bob\n").unwrap();
    let restore = |pw: &Path| {
        run.archive(&[
            "restore",
            "--account",
            "alice@corp.example",
            "--host",
            &host,
            "--user",
            "bob",
            "--into",
            "Archive/alice",
            "--password-file",
            pw.to_str().unwrap(),
            "--ca-file",
            ca.to_str().unwrap(),
        ])
    };
    let (code, out, err) = restore(&bob_pw);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 appended, 0 already there"), "{out}");

    // Byte for byte: the folder holds exactly the archived messages.
    let mut archived: Vec<Vec<u8>> = run
        .search(&["--account", "alice@corp.example"])
        .iter()
        .map(|h| {
            let id: handoff::journal::RecordId = h["id"].as_str().unwrap().parse().unwrap();
            handoff::journal::search::message_bytes(&run.path("journal"), id).unwrap()
        })
        .collect();
    let mut restored: Vec<Vec<u8>> = d
        .messages("bob", "Archive/alice")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    archived.sort();
    restored.sort();
    assert_eq!(restored.len(), 3);
    assert!(
        restored == archived,
        "the restored bytes differ from the archive"
    );
    assert!(archived.contains(&eightbit) && archived.contains(&nodate));
    // Each restored message's INTERNALDATE is its archive time: its own Date, else the source's
    // INTERNALDATE (the message without Date).
    let dated = d.messages_dated("bob", "Archive/alice");
    let date_of = |bytes: &[u8]| {
        dated
            .iter()
            .find(|(_, _, b)| b == bytes)
            .and_then(|(_, t, _)| *t)
            .map(|t| t.to_string())
    };
    assert_eq!(date_of(&eightbit).as_deref(), Some("2026-03-03T09:00:00Z"));
    assert_eq!(date_of(&nodate).as_deref(), Some("2023-05-06T07:08:09Z"));
    assert_eq!(date_of(&nested).as_deref(), Some("2026-03-04T09:00:00Z"));

    // A rerun appends nothing.
    let (code, out, err) = restore(&bob_pw);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 appended, 3 already there"), "{out}");
    assert_eq!(d.messages("bob", "Archive/alice").len(), 3);

    // A wrong password: refused, and not shown.
    let wrong = run.path("wrong.pw");
    std::fs::write(&wrong, "zq-wrong-password\n").unwrap();
    let (code, out, err) = restore(&wrong);
    assert_eq!(code, 1);
    assert!(err.contains("login as `bob` refused"), "{err}");
    assert!(!out.contains("zq-wrong") && !err.contains("zq-wrong"));

    // Audited: three restores (the refused one too: it was recorded before it ran).
    let (code, out, err) = run.archive(&["audit", "--command", "restore", "--json"]);
    assert_eq!(code, 0, "{err}");
    let trail: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(trail.len(), 3, "{out}");
    assert!(
        out.contains("Archive/alice") && !out.contains("pw-bob"),
        "{out}"
    );

    let (code, out, err) = run.archive(&["verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// 1,000 CSV rows against 1,000 Dovecot users with small mailboxes: every account is done
/// with its two messages, and the status CSV has 1,000 rows.
#[test]
fn imap_import_of_a_thousand_dovecot_users_from_a_csv() {
    const USERS: usize = 1000;
    let users: Vec<(String, String)> = (0..USERS)
        .map(|i| (format!("u{i}"), format!("pw-{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let d = Dovecot::start(&refs);
    for (u, _) in &users {
        let a = format!("From: x@example.net\r\nSubject: hello {u}\r\n\r\nfirst\r\n");
        let b = format!("From: y@example.net\r\nSubject: again {u}\r\n\r\nsecond\r\n");
        d.deliver(u, &[a.as_bytes(), b.as_bytes()]);
    }
    d.own_mail();

    let mut policy = String::from("[domains]\nlocal = [\"corp.example\"]\n");
    let mut csv = String::from("account,source,password,host\n");
    for (i, (u, p)) in users.iter().enumerate() {
        policy.push_str(&format!(
            "[accounts.\"{u}@corp.example\"]\nstate = \"active\"\ndepartment = \"d{}\"\n",
            i % 7
        ));
        csv.push_str(&format!("{u}@corp.example,{u},{p},{}\n", d.host()));
    }
    let run = Run::with_policy(&d, &policy);
    std::fs::write(run.path("accounts.csv"), csv).unwrap();

    let started = std::time::Instant::now();
    let (code, out, err) = run.import_csv(&run.path("accounts.csv"));
    let took = started.elapsed();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.ends_with(": done: 2 seen, 2 imported, 0 duplicate, 0 failed"))
            .count(),
        USERS,
        "{out}"
    );
    eprintln!(
        "{USERS} IMAP accounts imported in {:.1} s",
        took.as_secs_f64()
    );

    let (code, out, err) = run.archive(&["import", "--status", "--csv"]);
    assert_eq!(code, 0, "{err}");
    let mut rows = ::csv::Reader::from_reader(out.as_bytes());
    let rows: Vec<::csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), USERS);
    assert!(
        rows.iter().all(|r| &r[1] == "done" && &r[3] == "2"),
        "{out}"
    );
    assert!(!out.contains("pw-"));
    assert_eq!(run.search(&["--department", "d3"]).len(), 2 * 143);
}
