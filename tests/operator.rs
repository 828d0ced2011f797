//! What the operator reads: `archive search` and `handoff status` print wire text escaped (no
//! terminal control sequence, no forged line or column), and the operator endpoint stays
//! reachable however many idle connections it holds.

use std::path::Path;
use std::process::Command;

use handoff::journal::record::{MessageMeta, RecipientMeta};
use handoff::journal::writer::{DEFAULT_SEGMENT_BYTES, Writer};
use handoff::journal::{Body, Entry, Kind};

fn handoff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_handoff"))
}

/// A journal with one message from a hostile sender whose subject is RFC 2047 encoded control
/// bytes: ESC sequences (clear the screen, set the window title), CR LF, a tab and `=`.
fn hostile_journal(dir: &Path) {
    let rcpt = "b@corp.example";
    let meta = MessageMeta {
        time: "2026-01-01T00:00:00Z".into(),
        origin: "milter".into(),
        sender: "\"x\u{1b}[31m\tred\"@example.net".into(),
        recipients: vec![RecipientMeta {
            address: rcpt.into(),
            rule: "active".into(),
            deliver: vec![rcpt.into()],
        }],
        final_recipients: vec![rcpt.into()],
        ..MessageMeta::default()
    };
    let body = b"Subject: =?UTF-8?Q?hi=1B[2J=1B]0;owned=07=0D=0A1-1\t2026=3Dforged=09col?=\r\n\
Message-ID: <h@example.net>\r\n\r\nbody\r\n"
        .to_vec();
    let (mut w, _) = Writer::open(dir, DEFAULT_SEGMENT_BYTES).unwrap();
    w.append(&mut vec![Entry::new(Kind::Message, &meta, Body::Bytes(body))])
        .unwrap();
}

#[test]
fn archive_search_prints_hostile_subjects_and_addresses_escaped() {
    let dir = tempfile::tempdir().unwrap();
    hostile_journal(dir.path());
    let out = handoff()
        .args(["archive", "search", "--journal"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("1 messages"), "{stderr}");
    // One line, five columns, no control character but the separating tabs and the newline.
    let line = stdout.strip_suffix('\n').unwrap_or(&stdout);
    assert!(!line.contains('\n'), "{stdout:?}");
    assert!(
        !line.chars().any(|c| c.is_control() && c != '\t'),
        "{stdout:?}"
    );
    let cols: Vec<&str> = line.split('\t').collect();
    assert_eq!(cols.len(), 5, "{stdout:?}");
    assert_eq!(cols[2], "\"x\\u{1b}[31m\\tred\"@example.net");
    assert_eq!(cols[3], "b@corp.example");
    assert_eq!(
        cols[4],
        "hi\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\r\\n1-1\\t2026=forged\\tcol"
    );
}
