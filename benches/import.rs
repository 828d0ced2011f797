//! `handoff archive import` throughput and memory, through the release binary: a Maildir and
//! an mbox of 100,000 messages of 5 KiB each into a fresh journal (every batch fsync'ed, as
//! always), a rerun of the Maildir (every message a duplicate), and the peak RSS of importing
//! one 50 MiB message. Goal: at least 3,000 messages/s. Then IMAP: 20,000 messages of 5 KiB
//! from a private Dovecot on loopback over TLS (tests/support/dovecot.rs; needs root and
//! dovecot-imapd), its first read (Dovecot builds its index) and a second into a fresh
//! journal, and the peak RSS of one 50 MiB message over IMAP. Goal: at least 500 messages/s.
//!
//! Run with `cargo bench --bench import` (a case alone: `-- maildir`, `-- mbox`, `-- big`,
//! `-- imap`).
//! The data goes under `$HANDOFF_BENCH_DIR` (default: the system's temp dir) and is removed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

#[path = "../tests/support/mod.rs"]
mod support;

/// Messages of the IMAP case (Dovecot reads a Maildir of this many on its first EXAMINE).
const IMAP_MESSAGES: usize = 20_000;

const MESSAGES: usize = 100_000;
const SIZE: usize = 5 * 1024;

const POLICY: &str = "[domains]\nlocal = [\"corp.example\"]\n\
[accounts.\"alice@corp.example\"]\nstate = \"active\"\ndepartment = \"sales\"\n";

/// Message `i`: a plausible header, then text up to [`SIZE`] bytes.
fn message(i: usize) -> Vec<u8> {
    let mut m = format!(
        "From: sender{}@example.net\r\nTo: alice@corp.example\r\nDate: Mon, {} Feb 2026 10:{:02}:00 +0000\r\n\
Message-ID: <m{i}@example.net>\r\nSubject: report {i} on the quarterly numbers\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n",
        i % 500,
        1 + i % 28,
        i % 60
    )
    .into_bytes();
    let words = [
        "invoice", "meeting", "budget", "forecast", "customer", "shipment", "review",
    ];
    let mut n = i;
    while m.len() < SIZE - 2 {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        m.extend_from_slice(words[(n >> 33) % words.len()].as_bytes());
        m.push(if (n >> 20).is_multiple_of(12) {
            b'\n'
        } else {
            b' '
        });
    }
    m.truncate(SIZE - 2);
    m.extend_from_slice(b"\r\n");
    m
}

fn maildir(dir: &Path) -> PathBuf {
    let md = dir.join("Maildir");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(d)).unwrap();
    }
    for i in 0..MESSAGES {
        std::fs::write(md.join(format!("cur/{i}.bench:2,S")), message(i)).unwrap();
    }
    md
}

fn mbox(dir: &Path) -> PathBuf {
    let path = dir.join("all.mbox");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for i in 0..MESSAGES {
        f.write_all(b"From sender@example.net Mon Feb  2 10:00:00 2026\r\n")
            .unwrap();
        f.write_all(&message(i)).unwrap();
        f.write_all(b"\r\n").unwrap();
    }
    f.flush().unwrap();
    path
}

/// Imports `source` into `journal`: (wall seconds, peak RSS KiB, stdout).
// The child is waited for with wait4(2), which also gives its peak memory.
#[allow(clippy::zombie_processes)]
fn import(dir: &Path, journal: &Path, source: &Path) -> (f64, i64, String) {
    import_with(dir, journal, &[source.as_os_str()], None)
}

/// `handoff archive import --account alice@corp.example ARGS` with `password` in the
/// environment: (seconds, peak RSS in KiB, stdout).
// The child is reaped by wait4 (for its rusage), which clippy does not see.
#[allow(clippy::zombie_processes)]
fn import_with(
    dir: &Path,
    journal: &Path,
    args: &[&std::ffi::OsStr],
    password: Option<&str>,
) -> (f64, i64, String) {
    let t = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
    if let Some(p) = password {
        cmd.env("HANDOFF_IMAP_PASSWORD", p);
    }
    let child = cmd
        .arg("--config")
        .arg(dir.join("policy.toml"))
        .args([
            "archive",
            "import",
            "--quiet",
            "--account",
            "alice@corp.example",
        ])
        .args(args)
        .arg("--journal")
        .arg(journal)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.unwrap(), &mut out).unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is this process's child and has not been waited for.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    let secs = t.elapsed().as_secs_f64();
    (secs, usage.ru_maxrss, out)
}

fn report(case: &str, n: usize, (secs, rss, out): (f64, i64, String)) {
    println!(
        "{case}: {n} messages in {secs:.2} s = {:.0} msg/s, peak RSS {} MiB ({})",
        n as f64 / secs,
        rss / 1024,
        out.trim()
    );
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |c: &str| filter.is_empty() || filter.iter().any(|f| c.contains(f.as_str()));
    let base = std::env::var_os("HANDOFF_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let tmp = tempfile::tempdir_in(base).unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();

    if wanted("maildir") {
        let md = maildir(dir);
        let journal = dir.join("journal-maildir");
        report("maildir", MESSAGES, import(dir, &journal, &md));
        report(
            "maildir rerun (all duplicates)",
            MESSAGES,
            import(dir, &journal, &md),
        );
        std::fs::remove_dir_all(&md).unwrap();
        std::fs::remove_dir_all(&journal).unwrap();
    }
    if wanted("mbox") {
        let mb = mbox(dir);
        let journal = dir.join("journal-mbox");
        report("mbox", MESSAGES, import(dir, &journal, &mb));
        std::fs::remove_file(&mb).unwrap();
        std::fs::remove_dir_all(&journal).unwrap();
    }
    if wanted("big") {
        let md = dir.join("Big");
        std::fs::create_dir_all(md.join("cur")).unwrap();
        let mut f = std::io::BufWriter::new(std::fs::File::create(md.join("cur/1")).unwrap());
        f.write_all(b"From: a@example.net\r\nSubject: big\r\n\r\n")
            .unwrap();
        for _ in 0..(50 * 1024 * 1024 / 100) {
            f.write_all(&[b'z'; 98]).unwrap();
            f.write_all(b"\r\n").unwrap();
        }
        f.flush().unwrap();
        drop(f);
        report(
            "one 50 MiB message",
            1,
            import(dir, &dir.join("journal-big"), &md),
        );
    }
    if wanted("imap") {
        let d = support::Dovecot::start(&[("alice", "pw-alice"), ("big", "pw-big")]);
        // Written straight to the Maildirs, one message at a time: what this process holds
        // when it forks counts in the child's peak RSS on Linux (it survives exec).
        d.deliver("alice", &[]);
        d.deliver("big", &[]);
        let cur = |user: &str| d.dir().join("mail").join(user).join("cur");
        for i in 0..IMAP_MESSAGES {
            std::fs::write(cur("alice").join(format!("{i}.bench:2,")), message(i)).unwrap();
        }
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(cur("big").join("1.bench:2,")).unwrap());
        f.write_all(b"From: a@example.net\r\nSubject: big\r\n\r\n")
            .unwrap();
        for _ in 0..(50 * 1024 * 1024 / 100) {
            f.write_all(&[b'z'; 98]).unwrap();
            f.write_all(b"\r\n").unwrap();
        }
        f.flush().unwrap();
        drop(f);
        d.own_mail();
        let ca = d.ca_file();
        let run = |user: &str, journal: &str, pw: &str| {
            let source = format!("imaps://{user}@{}", d.host());
            let args = [
                std::ffi::OsStr::new(&source),
                std::ffi::OsStr::new("--ca-file"),
                ca.as_os_str(),
            ];
            import_with(dir, &dir.join(journal), &args, Some(pw))
        };
        report(
            "imap, Dovecot's first read",
            IMAP_MESSAGES,
            run("alice", "journal-imap-1", "pw-alice"),
        );
        report(
            "imap, again into a fresh journal",
            IMAP_MESSAGES,
            run("alice", "journal-imap-2", "pw-alice"),
        );
        report(
            "one 50 MiB message over IMAP",
            1,
            run("big", "journal-imap-big", "pw-big"),
        );
    }
}
