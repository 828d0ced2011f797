//! What the operator reads: `archive search` and `handoff status` print wire text escaped (no
//! terminal control sequence, no forged line or column), the operator endpoint stays
//! reachable however many idle connections it holds, and an archive command pointed at a
//! journal that is not there says so instead of starting one.

use std::path::Path;
use std::process::Command;

fn handoff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_handoff"))
}

/// A journal with one message from a hostile sender whose subject is RFC 2047 encoded control
/// bytes: ESC sequences (clear the screen, set the window title), CR LF, a tab and `=`.
fn hostile_journal(dir: &Path) {
    let body = b"Subject: =?UTF-8?Q?hi=1B[2J=1B]0;owned=07=0D=0A1-1\t2026=3Dforged=09col?=\r\n\
Message-ID: <h@example.net>\r\n\r\nbody\r\n";
    crate::support::journal_with_one_message(dir, "\"x\u{1b}[31m\tred\"@example.net", body);
}

#[test]
fn archive_search_prints_hostile_subjects_and_addresses_escaped() {
    let dir = tempfile::tempdir().unwrap();
    // The journal in a directory of its own: its search index goes beside it, in the tempdir.
    let journal = dir.path().join("journal");
    hostile_journal(&journal);
    let out = handoff()
        .args(["archive", "search", "--journal"])
        .arg(&journal)
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

/// A mistyped `--journal`: every archive command but `import` refuses, names the directory
/// and creates nothing (no empty journal to answer from, no audit record in a new one).
#[test]
fn archive_commands_refuse_a_journal_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("jounral");
    let commands: &[&[&str]] = &[
        &["search", "--text", "x"],
        &["reindex"],
        &["verify"],
        &["export", "--out", "out", "--id", "1-0"],
        &["audit"],
    ];
    for args in commands {
        let out = handoff()
            .env("HANDOFF_CONFIG", "/nonexistent/handoff.toml")
            .arg("archive")
            .args(*args)
            .arg("--journal")
            .arg(&journal)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("no journal at {}", journal.display())),
            "{args:?}: {stderr}"
        );
        assert!(!journal.exists(), "{args:?} created the journal");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}

/// Runs `handoff status` against a fake metrics port that answers `answer` to every request;
/// returns stdout and stderr.
fn status_against(answer: &'static [u8]) -> (String, String) {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = dir.path().join("handoff.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nmetrics = \"127.0.0.1:{port}\"\n[storage]\njournal = \"journal\"\n\
             state = \"state\"\n[domains]\nlocal = [\"corp.example\"]\n"
        ),
    )
    .unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        c.write_all(answer).unwrap();
    });
    let out = handoff()
        .args(["status", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    server.join().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

fn no_terminal_controls(s: &str) {
    assert!(
        !s.chars().any(|c| c.is_control() && c != '\n'),
        "control character reaches the terminal: {s:?}"
    );
}

#[test]
fn status_escapes_what_a_hostile_metrics_port_sends() {
    // Shaped like handoff's document, with escape sequences in its strings.
    let (out, err) = status_against(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n\
{\"source\":\"daemon\",\"config\":\"/etc/h\\u001b]0;owned\\u0007.toml\",\"generation\":1,\
\"loaded_at\":\"2026-01-01T00:00:00Z\",\"policy\":\"ok\\r\\n\\u001b[2Jfake: line\\u009b31m\",\
\"journal\":{\"enabled\":true,\"dir\":\"/j\\u001b[8m\",\"segments\":1,\"bytes\":2,\
\"last_record\":null,\"healthy\":true},\"autoreply_queue\":null,\"extra\":\"\\u001b[5m\"}",
    );
    no_terminal_controls(&out);
    no_terminal_controls(&err);
    assert!(out.contains("handoff: running"), "{out}");
    assert!(
        out.contains("policy: ok\\r\\n\\u{1b}[2Jfake: line\\u{9b}31m\n"),
        "{out}"
    );
    assert!(
        out.contains("config: /etc/h\\u{1b}]0;owned\\u{7}.toml\n"),
        "{out}"
    );
}

#[test]
fn status_refuses_an_answer_that_is_not_handoffs() {
    // Not a status document (a time that is an escape sequence): refused, the disk is shown.
    let (out, err) = status_against(
        b"HTTP/1.1 200 OK\r\n\r\n{\"source\":\"daemon\",\"config\":\"c\",\"generation\":1,\
\"loaded_at\":\"\\u001b[2J\",\"policy\":\"p\",\"journal\":{\"enabled\":true,\"dir\":\"d\",\
\"segments\":1,\"bytes\":2,\"last_record\":null,\"healthy\":true},\"autoreply_queue\":null}",
    );
    no_terminal_controls(&out);
    no_terminal_controls(&err);
    assert!(err.contains("not handoff's status document"), "{err}");
    assert!(out.contains("not running (read from disk)"), "{out}");
    // A refusal's status line is escaped too.
    let (out, err) = status_against(b"HTTP/1.1 500 \x1b[2J\x1b]0;owned\x07\r\n\r\nx");
    no_terminal_controls(&out);
    no_terminal_controls(&err);
    assert!(err.contains("500 \\u{1b}[2J\\u{1b}]0;owned\\u{7}"), "{err}");
}

/// Idle connections to the metrics port cannot hold it: past the cap the oldest are closed at
/// once (not after their 5 s read timeout), and a new client's `/readyz` is answered.
#[test]
fn idle_connections_cannot_lock_readyz_out() {
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let d = crate::daemon::Daemon::start("[domains]\nlocal = [\"corp.example\"]\n");
    let extra = 16;
    let idle: Vec<TcpStream> = (0..handoff::runtime::http::MAX_CONNECTIONS + extra)
        .map(|_| TcpStream::connect(("127.0.0.1", d.metrics_port)).unwrap())
        .collect();
    let start = Instant::now();
    let (status, body) = d.http_get("/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    // The oldest idle connections were closed without an answer, well before a read timeout.
    for (i, mut c) in idle.into_iter().take(extra).enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        match c.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("idle connection {i} still open: {other:?}"),
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}
