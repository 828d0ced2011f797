//! Journal throughput with fsync: 5 KiB and 100 KiB messages, 1 and 20 concurrent writers,
//! records per fsync (group commit), against the disk's raw fsync rate measured in the same run.
//!
//! Run: `cargo bench --bench journal` (writes under target/, i.e. on the disk the journal would
//! use in a checkout; set HANDOFF_BENCH_DIR to measure another disk). Prints a table.
//!
//! `cargo bench --bench journal -- generate DIR N` writes a journal of N messages into DIR
//! instead (sizes 1 KiB to 200 KiB, about 6 KiB on average, 64 MiB segments), for timing
//! `handoff archive verify --journal DIR` or a search on it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use handoff::journal::record::{MessageMeta, RecipientMeta};
use handoff::journal::writer::{DEFAULT_SEGMENT_BYTES, Writer};
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

/// Writes `messages` messages into a journal at `dir`, 512 to a batch (one fsync each).
fn generate(dir: &Path, messages: usize) {
    // xorshift64: the same journal on every run, without a dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut writer, _) = Writer::open(dir, DEFAULT_SEGMENT_BYTES).unwrap();
    let start = Instant::now();
    let mut bytes = 0;
    let mut batch = Vec::new();
    for i in 0..messages {
        // Mostly 1 to 6 KiB, one in 40 up to 200 KiB (with an attachment): about 6 KiB on
        // average, like the 1M-message journal of issue 15 (5.7 GB).
        let size = match next() % 40 {
            0 => 8 * 1024 + (next() % (192 * 1024)) as usize,
            _ => 1024 + (next() % (5 * 1024)) as usize,
        };
        let mut body = format!(
            "From: s{}@example.net\r\nTo: u{}@corp.example\r\nSubject: message {i}\r\n\r\n",
            next() % 1000,
            next() % 5000
        )
        .into_bytes();
        while body.len() < size {
            body.extend_from_slice(format!("line {} of message {i}\r\n", next()).as_bytes());
        }
        body.truncate(size);
        bytes += body.len();
        batch.push(Entry::new(Kind::Message, &meta(i), Body::Bytes(body)));
        if batch.len() == 512 || i + 1 == messages {
            writer.append(&mut batch).unwrap();
            batch.clear();
        }
    }
    println!(
        "{messages} messages, {:.0} MB of bodies, in {} ({:.1?})",
        bytes as f64 / 1e6,
        dir.display(),
        start.elapsed()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "generate") {
        let dir = args.get(at + 1).expect("generate DIR N");
        let n = args
            .get(at + 2)
            .and_then(|n| n.parse().ok())
            .expect("generate DIR N");
        generate(Path::new(dir), n);
        return;
    }
    // `cargo test --benches` runs bench targets with --bench absent: do nothing then.
    if !args.iter().any(|a| a == "--bench") {
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
