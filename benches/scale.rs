//! How the admin-side work scales with the size of what it reads: loading a policy split into
//! 50,000 include files, `handoff import --csv` of 20,000 rows, and the `/status` document over a
//! journal of 50,000 segments. Each should grow linearly; the bench prints one wall-clock time per
//! case (they are seconds long before a fix, so a single run says enough).
//!
//! Run with `cargo bench --bench scale` (a case alone: `cargo bench --bench scale -- includes`).

use std::path::Path;
use std::time::Instant;

use handoff::admin;
use handoff::journal::segment::{self, segment_path};
use handoff::policy;
use handoff::runtime::status::Status;

const INCLUDE_FILES: usize = 50_000;
const CSV_ROWS: usize = 20_000;
const SEGMENTS: u64 = 50_000;

const MAIN: &str = "include = [\"accounts.d/*.toml\"]\n[domains]\nlocal = [\"corp.example\"]\n\
[storage]\njournal = \"journal\"\nstate = \"state\"\n";

fn includes(dir: &Path) {
    std::fs::write(dir.join("handoff.toml"), MAIN).unwrap();
    let d = dir.join("accounts.d");
    std::fs::create_dir(&d).unwrap();
    for i in 0..INCLUDE_FILES {
        std::fs::write(
            d.join(format!("u{i:06}.toml")),
            format!("[accounts.\"u{i}@corp.example\"]\nstate = \"departed\"\nsuccessor = \"cs@corp.example\"\n"),
        )
        .unwrap();
    }
    let t = Instant::now();
    let p = policy::load(&dir.join("handoff.toml")).unwrap();
    println!(
        "includes: policy::load of {INCLUDE_FILES} include files ({} accounts): {:.2?}",
        p.accounts.len(),
        t.elapsed()
    );
}

fn csv(dir: &Path) {
    let config = dir.join("handoff.toml");
    std::fs::write(
        &config,
        MAIN.replace("include = [\"accounts.d/*.toml\"]\n", ""),
    )
    .unwrap();
    let mut text = String::from("address,state,successor,forward\n");
    for i in 0..CSV_ROWS {
        match i % 4 {
            3 => text.push_str(&format!(
                "l{i}@corp.example,alias,,u{}@corp.example\n",
                i - 1
            )),
            _ => text.push_str(&format!("u{i}@corp.example,departed,cs@corp.example,\n")),
        }
    }
    let t = Instant::now();
    let rows = admin::csv::parse("bench.csv", &text).unwrap();
    let parsed = t.elapsed();
    let edits: Vec<_> = rows.into_iter().map(|r| r.edit).collect();
    let changed = admin::plan(&config, &edits).unwrap();
    println!(
        "csv: import of {CSV_ROWS} rows: parse {parsed:.2?}, parse + plan (edit and validate) {:.2?} ({} bytes written)",
        t.elapsed(),
        changed.iter().map(|c| c.after.len()).sum::<usize>()
    );
}

fn status(dir: &Path) {
    let config = dir.join("handoff.toml");
    std::fs::write(
        &config,
        MAIN.replace("include = [\"accounts.d/*.toml\"]\n", ""),
    )
    .unwrap();
    let journal = dir.join("journal");
    std::fs::create_dir(&journal).unwrap();
    for n in 1..=SEGMENTS {
        std::fs::write(segment_path(&journal, n), b"x").unwrap();
    }
    let policy = policy::load(&config).unwrap();
    let calls = 20;
    let t = Instant::now();
    for _ in 0..calls {
        let s = Status::from_disk(&config, &policy);
        assert_eq!(s.journal.segments as u64, SEGMENTS);
    }
    println!(
        "status: the /status document over {SEGMENTS} segments, from disk: {:.2?} per call",
        t.elapsed() / calls
    );
    // The daemon keeps the sealed segments' sizes between calls: after the first, a call lists
    // the directory and stats the newest segment.
    let sizes = segment::UsageCache::default();
    sizes.usage(&journal).unwrap();
    let t = Instant::now();
    for _ in 0..calls {
        assert_eq!(sizes.usage(&journal).unwrap().segments as u64, SEGMENTS);
    }
    println!(
        "status: the journal's usage over {SEGMENTS} segments, as the daemon keeps it: {:.2?} per call",
        t.elapsed() / calls
    );
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if run("includes") {
        includes(tempfile::tempdir().unwrap().path());
    }
    if run("csv") {
        csv(tempfile::tempdir().unwrap().path());
    }
    if run("status") {
        status(tempfile::tempdir().unwrap().path());
    }
}
