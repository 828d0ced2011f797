//! Journal throughput with fsync: 5 KiB and 100 KiB messages, 1 and 20 concurrent writers,
//! records per fsync (group commit), against the disk's raw fsync rate measured in the same run.
//!
//! Run: `cargo bench --bench journal` (writes under target/, i.e. on the disk the journal would
//! use in a checkout; set HANDOFF_BENCH_DIR to measure another disk). Prints a table.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use handoff::journal::record::{MessageMeta, RecipientMeta};
use handoff::journal::{Body, Entry, Journal, Kind};

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("HANDOFF_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-journal"));
    std::fs::create_dir_all(&base).unwrap();
    base
}

/// One writer: write 4 KiB, fdatasync, for `dur`.
fn raw_fsync_rate(dir: &Path, dur: Duration) -> f64 {
    let path = dir.join("raw-fsync");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let block = vec![0x5a; 4096];
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < dur {
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    rate
}

fn meta(i: usize) -> MessageMeta {
    MessageMeta {
        time: jiff::Timestamp::now().to_string(),
        origin: "bench".into(),
        queue_id: Some(format!("Q{i}")),
        message_id: Some(format!("<{i}@bench.example>")),
        sender: "sender@example.net".into(),
        recipients: vec![RecipientMeta {
            address: "user1@corp.example".into(),
            rule: "departed".into(),
            deliver: vec!["user1@corp.example".into(), "usercs@corp.example".into()],
            expansion: None,
        }],
        final_recipients: vec!["user1@corp.example".into(), "usercs@corp.example".into()],
        policy_generation: 1,
        size: 0,
        ..MessageMeta::default()
    }
}

struct Row {
    size: usize,
    writers: usize,
    messages: usize,
    secs: f64,
    fsyncs: u64,
}

fn run(dir: &Path, size: usize, writers: usize, messages: usize) -> Row {
    let jdir = dir.join(format!("j-{size}-{writers}"));
    let _ = std::fs::remove_dir_all(&jdir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (journal, _) = Journal::open(&jdir, 64 * 1024 * 1024).unwrap();
    let body = vec![b'm'; size];
    let (r0, b0) = journal.counts();
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (journal, body) = (journal.clone(), body.clone());
            let per = messages / writers;
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    let e =
                        Entry::new(Kind::Message, &meta(w * per + i), Body::Bytes(body.clone()));
                    journal.append(e).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let (r1, b1) = journal.counts();
    assert_eq!(
        (r1 - r0) as usize,
        messages / writers * writers,
        "every append was written"
    );
    let _ = std::fs::remove_dir_all(&jdir);
    Row {
        size,
        writers,
        messages: (r1 - r0) as usize,
        secs,
        fsyncs: b1 - b0,
    }
}

fn main() {
    // `cargo test --benches` runs bench targets with --bench absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = bench_dir();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "journal benchmark, {} — {} cores, {cpu}",
        jiff::Zoned::now().date(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("directory: {}", dir.display());
    let raw = raw_fsync_rate(&dir, Duration::from_secs(3));
    println!("raw fsync rate (4 KiB write + fdatasync, one writer): {raw:.0}/s\n");
    println!(
        "{:>8} {:>8} {:>9} {:>10} {:>9} {:>10} {:>12}",
        "size", "writers", "messages", "msg/s", "MB/s", "fsyncs", "msgs/fsync"
    );
    for (size, messages) in [(5 * 1024, 4000), (100 * 1024, 1000)] {
        for writers in [1, 20] {
            let r = run(&dir, size, writers, messages);
            let rate = r.messages as f64 / r.secs;
            println!(
                "{:>7}K {:>8} {:>9} {:>10.0} {:>9.1} {:>10} {:>12.1}",
                r.size / 1024,
                r.writers,
                r.messages,
                rate,
                rate * r.size as f64 / 1e6,
                r.fsyncs,
                r.messages as f64 / r.fsyncs.max(1) as f64
            );
        }
    }
}
