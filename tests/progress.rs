//! Long archive commands (`verify`, `reindex`, a search that rebuilds a deleted index) show
//! progress on stderr: off a terminal, a plain line every few seconds (here every 20 ms,
//! through the test knob `HANDOFF_PROGRESS_EVERY`), ending at the total; stdout stays byte for
//! byte what it is with `--quiet`.

use std::path::Path;
use std::process::{Command, Output};

use handoff::journal::writer::Writer;
use handoff::journal::{Body, Entry, Kind};

fn handoff() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_handoff"));
    // No policy: the commands below name the journal.
    c.env("HANDOFF_CONFIG", "/nonexistent/handoff.toml");
    c
}

/// A journal that takes the (debug) binary a moment to verify: 6,000 messages of 8 KiB in
/// segments of 4 MiB (about 48 MiB in 13 segments).
fn journal(dir: &Path) {
    let (mut w, _) = Writer::open(dir, 4 * 1024 * 1024).unwrap();
    for batch in 0..60 {
        let mut entries: Vec<Entry> = (0..100)
            .map(|i| {
                let n: u32 = batch * 100 + i;
                let body: Vec<u8> = (0..8192u32).map(|j| (j * 7 + n) as u8).collect();
                Entry::new(
                    Kind::Message,
                    &serde_json::json!({ "n": n }),
                    Body::Bytes(body),
                )
            })
            .collect();
        w.append(&mut entries).unwrap();
    }
}

fn run(c: &mut Command) -> (Output, String, String) {
    let out = c.output().unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert!(out.status.success(), "{stdout}{stderr}");
    (out, stdout, stderr)
}

/// What a line such as `verify: 2.00 MiB of 48.2 MiB (4%), 251 records, 1,255 records/s,
/// about 9s left` says: (the total as printed, the percentage, the records).
fn parse(verb: &str, line: &str) -> (String, u64, u64) {
    let parts: Vec<&str> = line.split(", ").collect();
    assert!(parts.len() >= 4, "{line:?}");
    let head = parts[0]
        .strip_prefix(verb)
        .and_then(|l| l.strip_prefix(": "))
        .expect(line);
    let (_, rest) = head.split_once(" of ").expect(line);
    let (total, percent) = rest.split_once(" (").expect(line);
    let percent = percent.strip_suffix("%)").expect(line).parse().expect(line);
    let records = parts[1]
        .strip_suffix(" records")
        .expect(line)
        .replace(',', "")
        .parse()
        .expect(line);
    (total.to_string(), percent, records)
}

#[test]
fn verify_off_a_terminal_prints_progress_lines_that_end_at_the_total() {
    let dir = tempfile::tempdir().unwrap();
    journal(dir.path());
    let verify = || {
        let mut c = handoff();
        c.args(["archive", "verify", "--journal"]).arg(dir.path());
        c
    };

    let (_, stdout, stderr) = run(verify().env("HANDOFF_PROGRESS_EVERY", "20ms"));
    // `…: ok: N records in S segments (0 pruned); head …`
    let records: u64 = stdout
        .split("ok: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect(&stdout);
    assert!(records > 6000, "{stdout}");
    lines_end_at_the_total("verify", &stderr, records);

    // --quiet (and -q): nothing on stderr, the same stdout.
    for flag in ["--quiet", "-q"] {
        let (_, quiet_out, quiet_err) =
            run(verify().arg(flag).env("HANDOFF_PROGRESS_EVERY", "20ms"));
        assert_eq!(quiet_out, stdout);
        assert_eq!(quiet_err, "", "{flag}");
    }
}

/// Checks `verb`'s progress lines in `stderr`: at least two while it ran, then the last one;
/// one total throughout, records and percentage growing, and the last line at 100 % and
/// `records`, saying how long it took.
fn lines_end_at_the_total(verb: &str, stderr: &str, records: u64) {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(verb)).collect();
    assert!(
        lines.len() >= 3,
        "some progress lines, then the last one:\n{stderr}"
    );
    let seen: Vec<_> = lines.iter().map(|l| parse(verb, l)).collect();
    let (total, _, _) = &seen[0];
    for pair in seen.windows(2) {
        let ((t0, p0, r0), (t1, p1, r1)) = (&pair[0], &pair[1]);
        assert_eq!(t0, t1, "one total throughout:\n{stderr}");
        assert!(r0 < r1, "records grow from line to line:\n{stderr}");
        assert!(p0 <= p1, "the percentage never goes back:\n{stderr}");
    }
    let (_, first_percent, _) = seen[0];
    assert!(first_percent < 100, "{stderr}");
    let last = lines.last().unwrap();
    assert_eq!(
        seen.last().unwrap(),
        &(total.clone(), 100, records),
        "{last}"
    );
    assert!(last.ends_with('s') && last.contains(", done in "), "{last}");
    for l in &lines[..lines.len() - 1] {
        assert!(l.contains(" left"), "{l}");
    }
}

/// `reindex` reads the whole journal: lines while it runs, the last at every record; and a
/// search whose index was deleted rebuilds it first, saying so the same way (`index: …`).
#[test]
fn reindex_and_a_search_that_rebuilds_the_index_print_progress_lines() {
    use handoff::index::corpus::{Params, write_journal};
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let index = dir.path().join("index");
    let count = 3_000;
    write_journal(&journal, &Params::default(), count, 1024 * 1024).unwrap();
    let archive = |args: &[&str]| {
        let mut c = handoff();
        c.arg("archive")
            .args(args)
            .arg("--journal")
            .arg(&journal)
            .arg("--index")
            .arg(&index);
        c
    };

    // `INDEX: N messages indexed from M journal records in S s`
    let records = |stdout: &str| -> u64 {
        assert!(
            stdout.contains(&format!(": {count} messages indexed from ")),
            "{stdout}"
        );
        stdout
            .split(" from ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect(stdout)
    };
    let (_, stdout, stderr) = run(archive(&["reindex"]).env("HANDOFF_PROGRESS_EVERY", "10ms"));
    // The messages, each segment's first record, and the audit record the command wrote
    // before it read them.
    let read = records(&stdout);
    assert!(read > count, "{stdout}");
    lines_end_at_the_total("reindex", &stderr, read);

    let (_, quiet_out, quiet_err) =
        run(archive(&["reindex", "--quiet"]).env("HANDOFF_PROGRESS_EVERY", "10ms"));
    // One more: this reindex's own audit record.
    let read = records(&quiet_out);
    // (No policy: a warning that a new segment would get the default size; no progress.)
    assert!(!quiet_err.contains("reindex:"), "{quiet_err}");

    // The index deleted: the search catches up from the start of the journal first.
    std::fs::remove_dir_all(&index).unwrap();
    let (_, stdout, stderr) =
        run(archive(&["search", "--limit", "1"]).env("HANDOFF_PROGRESS_EVERY", "10ms"));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stderr.ends_with(&format!(
            "showing 1-1 of {count} messages, newest first; --limit/--offset for more\n"
        )),
        "{stderr}"
    );
    // Every record the last reindex read (the search's audit record comes after).
    lines_end_at_the_total("index", &stderr, read);
}
