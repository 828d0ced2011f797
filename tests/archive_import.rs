//! `handoff archive import`: existing mail (.eml, mbox, Maildir) into the archive, through the
//! binary. Bad input is archived (each message once), a rerun imports nothing, a new message
//! alone is imported on the next run; `archive search` finds imported mail by account, folder,
//! department, text and time (index and scan); `verify` passes; CSV mistakes name their line;
//! 1,000 accounts from a CSV end with a 1,000-row status; the import is audited; a daemon
//! appending to the same journal meanwhile keeps one chain.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use handoff::journal::search::{self, Query};
use serde_json::Value;
use sha2::{Digest, Sha256};

const POLICY: &str = r#"
[domains]
local = ["corp.example"]

[accounts."alice@corp.example"]
state = "active"
department = "sales/emea"

[accounts."bob@corp.example"]
state = "active"
department = "support"
"#;

struct Lab {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Lab {
    fn new(policy: &str) -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::write(root.join("policy.toml"), policy).unwrap();
        Lab { _tmp: tmp, root }
    }

    fn journal(&self) -> PathBuf {
        self.root.join("journal")
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
            .arg(self.journal())
            .env("USER", "importer")
            .env_remove("SUDO_USER")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn import(&self, args: &[&str]) -> (i32, String, String) {
        let mut a = vec!["import", "--quiet"];
        a.extend_from_slice(args);
        self.archive(&a)
    }

    /// Hits of `archive search ARGS --json` (through the index).
    fn search(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["search", "--json", "--limit", "100000"];
        a.extend_from_slice(args);
        let (code, out, err) = self.archive(&a);
        assert_eq!(code, 0, "search {args:?}: {err}");
        assert!(
            !err.contains("cannot be used"),
            "the index was not used: {err}"
        );
        serde_json::from_str(&out).unwrap()
    }

    /// The scan (the index's oracle) for the same query.
    fn scan(&self, q: Query) -> usize {
        search::search(&self.journal(), &q).unwrap().len()
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn set_mtime(path: &Path, unix: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(unix))
        .unwrap();
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

/// The first message of the mbox, as it was before the mbox quoted it (mboxrd).
const MBOX_FIRST: &[u8] = b"From: carol@example.net\r\nTo: alice@corp.example\r\n\
Date: Wed, 4 Mar 2026 09:00:00 +0000\r\nSubject: zqfromline\r\n\r\n\
From the desk of the CEO, on Monday\r\n>From quoted once\r\n\r\nthe end\r\n";

/// Writes alice's old mail: a CRLF mboxrd with a From line in a body (quoted and not) and a
/// message without Date; a Maildir with broken MIME, 8-bit and NUL bytes in a header, a
/// an empty file, Maildir++ and nested folders; a directory of .eml files (and a file that is
/// not one).
fn alices_mail(lab: &Lab) {
    let quoted = String::from_utf8(MBOX_FIRST.to_vec())
        .unwrap()
        .replace(">From quoted", ">>From quoted");
    let mbox = format!(
        "From carol@example.net Wed Mar  4 09:00:00 2026\r\n{quoted}\r\n\
From dave@example.net Thu Mar  5 10:00:00 2026\r\n\
From: dave@example.net\r\nSubject: zqnodate\r\n\r\nno date here\r\n\r\n"
    );
    write(&lab.path("alice.mbox"), mbox.as_bytes());
    set_mtime(&lab.path("alice.mbox"), 1_700_000_000); // 2023-11-14
    let md = lab.path("Maildir");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(d)).unwrap();
    }
    write(
        &md.join("cur/1.host:2,S"),
        b"From: eve@example.net\nTo: alice@corp.example\nDate: Mon, 2 Feb 2026 08:00:00 +0000\n\
Subject: zqbrokenmime\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"nope\n\n\
--elsewhere\nContent-Type: text/plain\n\nzqbrokenbody and no closing boundary\n",
    );
    write(
        &md.join("cur/2.host:2,S"),
        b"From: f\xfcr@example.net\nTo: alice@corp.example\nDate: Sun, 1 Feb 2026 08:00:00 +0000\n\
Subject: zqnulheader caf\xe9\nX-Bad: a\0b\nX-Eight: \xff\xfe\n\nbody of zqnulheader\n",
    );
    write(&md.join("new/3.host"), b"");
    write(
        &md.join(".Sent/cur/4.host:2,S"),
        b"From: alice@corp.example\nTo: frank@example.net\nDate: Tue, 3 Feb 2026 12:00:00 +0000\n\
Subject: zqsentitem\n\nsent by alice\n",
    );
    write(
        &md.join("Projects/Alpha/new/5.host"),
        b"From: gina@example.net\nTo: alice@corp.example\nDate: Fri, 6 Jun 2025 12:00:00 +0000\n\
Subject: zqnestedfolder\n\nin a nested folder\n",
    );
    write(
        &lab.path("eml/Work/a.eml"),
        b"From: ivan@example.net\nTo: alice@corp.example\nDate: Thu, 8 Jan 2026 12:00:00 +0000\n\
Subject: zqemlfile\n\nan eml file\n",
    );
    write(&lab.path("eml/notes.txt"), b"not mail: not an .eml file");
}

/// Every bad input is archived once (the empty file is counted as failed, with its reason);
/// a rerun imports nothing; a new message alone is imported by the next run; each message is
/// found once by its word, and comes back byte for byte.
#[test]
fn archive_import_archives_bad_input_once_and_reruns_import_only_the_new() {
    let lab = Lab::new(POLICY);
    alices_mail(&lab);
    let (mbox, md, eml) = (lab.path("alice.mbox"), lab.path("Maildir"), lab.path("eml"));
    let sources = [
        mbox.to_str().unwrap(),
        md.to_str().unwrap(),
        eml.to_str().unwrap(),
    ];
    let mut args = vec!["--account", "alice@corp.example"];
    args.extend(sources);

    let (code, out, err) = lab.import(&args);
    // The empty file failed: the exit code says so, and stderr names it.
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("3.host: empty file"), "{err}");
    // mbox 2 + Maildir 5 (one empty) + eml 1.
    assert_eq!(counts(&out, "alice@corp.example"), (8, 7, 0, 1), "{out}");
    for word in [
        "zqfromline",
        "zqnodate",
        "zqbrokenmime",
        "zqnulheader",
        "zqsentitem",
        "zqnestedfolder",
        "zqemlfile",
    ] {
        let hits = lab.search(&["--text", word]);
        assert_eq!(hits.len(), 1, "{word}: {hits:?}");
        assert_eq!(hits[0]["kind"], "imported");
        let q = Query {
            text: vec![word.to_string()],
            ..Query::default()
        };
        assert_eq!(lab.scan(q), 1, "{word} in the scan");
    }
    // The body "From " line did not cut the message in two; the mboxrd quoting is undone.
    let hit = &lab.search(&["--text", "zqfromline"])[0];
    let id: handoff::journal::RecordId = hit["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        search::message_bytes(&lab.journal(), id).unwrap(),
        MBOX_FIRST
    );
    // The message without Date is filed at the mbox's mtime.
    let hit = &lab.search(&["--text", "zqnodate"])[0];
    assert_eq!(hit["time"], "2023-11-14T22:13:20Z");

    // A rerun: nothing new.
    let (code, out, err) = lab.import(&args);
    assert_eq!(code, 1, "the empty file still fails: {err}");
    assert_eq!(counts(&out, "alice@corp.example"), (8, 0, 7, 1), "{out}");
    assert_eq!(lab.search(&["--account", "alice@corp.example"]).len(), 7);

    // A new message, and the empty file gone: only it is imported, and all is well.
    write(
        &md.join("new/7.host"),
        b"From: judy@example.net\nSubject: zqlatecomer\n\nnew mail\n",
    );
    std::fs::remove_file(md.join("new/3.host")).unwrap();
    let (code, out, err) = lab.import(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counts(&out, "alice@corp.example"), (8, 1, 7, 0), "{out}");
    assert_eq!(lab.search(&["--text", "zqlatecomer"]).len(), 1);

    let (code, out, err) = lab.archive(&["verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// `archive search` finds imported mail by account, folder (both folder modes), department,
/// text and time, through the index and the scan alike.
#[test]
fn archive_search_finds_imported_mail_by_account_folder_department_text_and_time() {
    let lab = Lab::new(POLICY);
    let md = lab.path("Maildir");
    let msg = |subject: &str, date: &str| {
        format!(
            "From: x@example.net\nTo: y@example.net\nDate: {date}\nSubject: {subject}\n\nbody\n"
        )
    };
    write(
        &md.join("cur/1"),
        msg("inbox one", "Mon, 5 Jan 2026 10:00:00 +0000").as_bytes(),
    );
    write(
        &md.join("cur/2"),
        msg("inbox two", "Tue, 6 Jan 2026 10:00:00 +0000").as_bytes(),
    );
    write(
        &md.join(".Sent/cur/3"),
        msg("sent one", "Wed, 7 Jan 2026 10:00:00 +0000").as_bytes(),
    );
    write(
        &md.join(".Archive.2024/cur/4"),
        msg("archived one", "Wed, 7 Feb 2024 10:00:00 +0000").as_bytes(),
    );
    let (code, out, err) = lab.import(&["--account", "alice@corp.example", md.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // Bob's mail in one folder named after the source address.
    let bob = lab.path("bob");
    write(
        &bob.join("cur/1"),
        msg("bob one", "Thu, 8 Jan 2026 10:00:00 +0000").as_bytes(),
    );
    write(
        &bob.join(".Sent/cur/2"),
        msg("bob sent", "Fri, 9 Jan 2026 10:00:00 +0000").as_bytes(),
    );
    let (code, out, err) = lab.import(&[
        "--account",
        "bob@corp.example",
        "--folders",
        "source",
        "--source-account",
        "bob.old@legacy.example",
        bob.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");

    let cases: &[(&[&str], usize, Query)] = &[
        (
            &["--account", "alice@corp.example"],
            4,
            Query {
                account: Some("alice@corp.example".into()),
                ..Query::default()
            },
        ),
        (
            &["--account", "bob@corp.example"],
            2,
            Query {
                account: Some("bob@corp.example".into()),
                ..Query::default()
            },
        ),
        (
            &["--folder", "inbox"],
            2,
            Query {
                folder: Some("INBOX".into()),
                ..Query::default()
            },
        ),
        (
            &["--folder", "Sent"],
            1,
            Query {
                folder: Some("Sent".into()),
                ..Query::default()
            },
        ),
        (
            &["--folder", "Archive/2024"],
            1,
            Query {
                folder: Some("Archive/2024".into()),
                ..Query::default()
            },
        ),
        (
            &["--folder", "bob.old@legacy.example"],
            2,
            Query {
                folder: Some("bob.old@legacy.example".into()),
                ..Query::default()
            },
        ),
        (
            &["--department", "sales"],
            4,
            Query {
                department: Some("sales".into()),
                ..Query::default()
            },
        ),
        (
            &["--department", "support"],
            2,
            Query {
                department: Some("support".into()),
                ..Query::default()
            },
        ),
        (
            &["--text", "sent"],
            2,
            Query {
                text: vec!["sent".into()],
                ..Query::default()
            },
        ),
        (
            &["--since", "2026-01-06", "--until", "2026-01-08"],
            3,
            Query {
                since: "2026-01-06".parse().ok(),
                until: "2026-01-08".parse().ok(),
                ..Query::default()
            },
        ),
        (
            &["--until", "2025-12-31"],
            1,
            Query {
                until: "2025-12-31".parse().ok(),
                ..Query::default()
            },
        ),
    ];
    // INBOX (in any case): alice's two; bob's INBOX went to his one folder.
    for (args, want, q) in cases {
        let got = lab.search(args);
        assert_eq!(got.len(), *want, "{args:?}: {got:?}");
        assert_eq!(lab.scan(q.clone()), got.len(), "scan {args:?}");
    }
    let (code, out, err) = lab.archive(&["verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A 50 MiB message is streamed: the import's peak memory stays far below the message's size,
/// and the archive holds it byte for byte. (Searched through the scan: indexing 50 MiB of text
/// takes a debug build most of a minute.)
#[test]
fn archive_import_streams_a_50_mib_message_in_bounded_memory() {
    let lab = Lab::new(POLICY);
    let big = lab.path("Maildir/.Big/cur/1.host:2,S");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
    let mut hash = Sha256::new();
    let head =
        b"From: hugo@example.net\nDate: Sat, 7 Feb 2026 12:00:00 +0000\nSubject: zqbigone\n\n";
    f.write_all(head).unwrap();
    hash.update(head);
    let line = [b'y'; 99];
    for _ in 0..(50 * 1024 * 1024 / 100 + 1) {
        f.write_all(&line).unwrap();
        f.write_all(b"\n").unwrap();
        hash.update(line);
        hash.update(b"\n");
    }
    f.flush().unwrap();
    drop(f);
    let want: [u8; 32] = hash.finalize().into();

    let child = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .arg("--config")
        .arg(lab.path("policy.toml"))
        .args([
            "archive",
            "import",
            "--quiet",
            "--account",
            "alice@corp.example",
        ])
        .arg(lab.path("Maildir"))
        .arg("--journal")
        .arg(lab.journal())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (code, max_rss_kib) = wait_with_rusage(child);
    assert_eq!(code, 0);
    assert!(
        max_rss_kib < 40 * 1024,
        "peak RSS {max_rss_kib} KiB while importing a 50 MiB message"
    );
    let hits = search::search(
        &lab.journal(),
        &Query {
            folder: Some("Big".into()),
            ..Query::default()
        },
    )
    .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].subject, "zqbigone");
    let id: handoff::journal::RecordId = hits[0].id.parse().unwrap();
    let got = search::message_bytes(&lab.journal(), id).unwrap();
    assert!(got.len() > 50 * 1024 * 1024);
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&got)), want);
    let (code, out, err) = lab.archive(&["verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Waits for `child`: its exit code and its peak resident memory (KiB), from wait4(2).
fn wait_with_rusage(child: std::process::Child) -> (i32, i64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for (the Child is forgotten, not waited).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    std::mem::forget(child);
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// The import is audited: who, which account, from where, how many.
#[test]
fn archive_import_is_in_the_audit_trail() {
    let lab = Lab::new(POLICY);
    let md = lab.path("Maildir");
    write(&md.join("cur/1"), b"Subject: a\n\nx\n");
    write(&md.join("cur/2"), b"Subject: b\n\ny\n");
    let (code, _, err) = lab.import(&["--account", "alice@corp.example", md.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = lab.archive(&["audit", "--command", "import", "--json"]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(entries.len(), 1, "{out}");
    let e = &entries[0];
    assert!(e["user"].as_str().unwrap().starts_with("importer"), "{e}");
    assert_eq!(e["hits"], 2);
    assert_eq!(e["query"]["account"], "alice@corp.example");
    assert_eq!(e["query"]["sources"][0], md.to_str().unwrap());
    assert_eq!(e["query"]["imported"], 2);
    assert_eq!(e["query"]["state"], "done");
}

/// Mistakes in the accounts CSV are all reported, each with its line, and nothing is imported.
#[test]
fn archive_import_csv_mistakes_name_their_lines() {
    let lab = Lab::new(POLICY);
    let csv = lab.path("accounts.csv");
    write(
        &csv,
        b"account,source,password\nalice@corp.example,Maildir,\nnot an address,x,secret-pw\n\
bob@corp.example,,\nalice@corp.example,Maildir,\n",
    );
    let (code, out, err) = lab.import(&["--csv", csv.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let name = csv.display().to_string();
    for line in [3, 4, 5] {
        assert!(
            err.contains(&format!("{name}:{line}: ")),
            "line {line}: {err}"
        );
    }
    assert!(!err.contains("secret-pw"), "{err}");
    assert!(!lab.journal().join("import-status.json").exists());
}

/// 1,000 accounts from a CSV (small Maildirs; one IMAP row and one that is no account fail,
/// the others go on): the status lists 1,000 rows, the exit code says something failed.
#[test]
fn archive_import_of_a_thousand_accounts_from_a_csv() {
    let mut policy = String::from("[domains]\nlocal = [\"corp.example\"]\n");
    for i in 0..999 {
        policy.push_str(&format!(
            "[accounts.\"u{i}@corp.example\"]\nstate = \"active\"\ndepartment = \"d{}\"\n",
            i % 7
        ));
    }
    let lab = Lab::new(&policy);
    let mut csv = String::from("account,source,password,host\n");
    for i in 0..998 {
        let md = lab.path(&format!("mail/u{i}"));
        write(
            &md.join("cur/1"),
            format!("Subject: hello u{i}\n\nfirst\n").as_bytes(),
        );
        write(
            &md.join(".Sent/cur/2"),
            format!("Subject: sent by u{i}\n\nsecond\n").as_bytes(),
        );
        csv.push_str(&format!("u{i}@corp.example,mail/u{i},,\n"));
    }
    csv.push_str("u998@corp.example,u998,hunter2,imap.corp.example\n");
    csv.push_str("nobody@corp.example,mail/u0,,\n");
    write(&lab.path("accounts.csv"), csv.as_bytes());

    let (code, out, err) = lab.import(&["--csv", lab.path("accounts.csv").to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains(": done: 2 seen, 2 imported"))
            .count(),
        998
    );
    assert!(
        // An unreachable IMAP host fails that account alone.
        out.contains("u998@corp.example: failed: imap://u998@imap.corp.example: imap.corp.example:993: cannot connect"),
        "{out}"
    );
    assert!(
        out.contains("nobody@corp.example: failed: `nobody@corp.example` is not an account"),
        "{out}"
    );
    assert!(!out.contains("hunter2") && !err.contains("hunter2"));

    let (code, out, err) = lab.archive(&["import", "--status", "--csv"]);
    assert_eq!(code, 1, "a failed account: {err}");
    assert!(!out.contains("hunter2"));
    let mut rows = ::csv::Reader::from_reader(out.as_bytes());
    let rows: Vec<::csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1000);
    let done = rows
        .iter()
        .filter(|r| &r[1] == "done" && &r[3] == "2")
        .count();
    assert_eq!(done, 998);
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| &r[1] == "failed")
        .map(|r| &r[0])
        .collect();
    assert_eq!(failed, ["u998@corp.example", "nobody@corp.example"]);
    assert_eq!(lab.search(&["--department", "d3"]).len(), 2 * 143);
}

/// An import next to a daemon that appends to the same journal: the writers take turns under
/// the journal's lock, the chain stays one chain, and nothing is lost.
#[test]
fn archive_import_next_to_a_daemon_appending_keeps_one_chain() {
    let lab = Lab::new(POLICY);
    let md = lab.path("Maildir");
    for i in 0..600 {
        write(
            &md.join(format!("cur/{i}")),
            format!("Subject: m{i}\n\nbody {i}\n").as_bytes(),
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (journal, _) = handoff::journal::Journal::open(&lab.journal(), 256 * 1024).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let daemon = {
        let stop = stop.clone();
        rt.spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let meta = crate::support::message_meta("a@example.net");
                let e = handoff::journal::Entry::new(
                    handoff::journal::Kind::Message,
                    &meta,
                    handoff::journal::Body::Bytes(b"Subject: live\r\n\r\nlive\r\n".to_vec()),
                );
                journal.append(e).await.unwrap();
                n += 1;
            }
            n
        })
    };
    let (code, out, err) = lab.import(&["--account", "alice@corp.example", md.to_str().unwrap()]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let live = rt.block_on(daemon).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counts(&out, "alice@corp.example"), (600, 600, 0, 0));
    assert!(live > 0);
    let (code, out, err) = lab.archive(&["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(lab.search(&["--account", "alice@corp.example"]).len(), 600);
    assert_eq!(
        lab.scan(Query {
            text: vec!["live".into()],
            ..Query::default()
        }),
        live as usize
    );
}

/// `--follow --every 3s --for 9s`: the first run imports what is there, a message added
/// between runs is imported by the next run alone, and the command ends when the window does,
/// after three runs.
#[test]
fn archive_import_follow_keeps_syncing_until_its_window_ends() {
    let lab = Lab::new(POLICY);
    let md = lab.path("Maildir");
    write(
        &md.join("cur/1.host:2,S"),
        b"From: a@example.net\nTo: alice@corp.example\nDate: Mon, 2 Feb 2026 08:00:00 +0000\n\
Subject: zqfollowfirst\n\nfirst\n",
    );
    std::fs::create_dir_all(md.join("new")).unwrap();
    std::fs::create_dir_all(md.join("tmp")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .arg("--config")
        .arg(lab.path("policy.toml"))
        .args([
            "archive",
            "import",
            "--quiet",
            "--account",
            "alice@corp.example",
        ])
        .arg(&md)
        .args(["--follow", "--every", "3s", "--for", "9s", "--journal"])
        .arg(lab.journal())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // When the first run is over (it says so, and when the next starts), a new message arrives.
    let mut child = child;
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("run 1 done") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "the command ended before its second run: {said}");
        said.push_str(&line);
    }
    assert_eq!(lab.search(&["--text", "zqfollowfirst", "--scan"]).len(), 1);
    write(
        &md.join("new/2.host"),
        b"From: b@example.net\nTo: alice@corp.example\nDate: Tue, 3 Feb 2026 08:00:00 +0000\n\
Subject: zqfollowsecond\n\nsecond\n",
    );
    std::io::Read::read_to_string(&mut stderr, &mut said).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = said;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let runs: Vec<_> = stdout
        .lines()
        .map(|l| counts(l, "alice@corp.example"))
        .collect();
    // (seen, imported, duplicate, failed) per run: the new message once, in the second run.
    assert_eq!(runs, [(1, 1, 0, 0), (2, 1, 1, 0), (2, 0, 2, 0)], "{stdout}");
    assert!(
        stderr.contains("the 9s window is over after 3 runs"),
        "{stderr}"
    );
    assert_eq!(lab.search(&["--text", "zqfollowsecond"]).len(), 1);
    assert_eq!(lab.search(&["--account", "alice@corp.example"]).len(), 2);
}
