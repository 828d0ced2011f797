//! Archive search at scale: a journal of generated mail as an archive holds it (1,000,000
//! messages by default: 1 KiB to 200 KiB, 10 % with attachments, 5 % Chinese, 5,000 accounts,
//! ten departments with sub-departments, five years, a Zipf vocabulary: see
//! `handoff::index::corpus`), its index built as `archive reindex` builds it, then each query
//! type answered the way `archive search` answers it (the newest 100 hits and the total), and
//! the same query types by the full scan on the first 100,000 messages, for comparison.
//!
//! Run: `cargo bench --bench archive`. Prints the figures and a Markdown table. Knobs:
//!
//! | variable | default | |
//! |---|---|---|
//! | `HANDOFF_ARCHIVE_MESSAGES` | 1000000 | messages in the journal |
//! | `HANDOFF_ARCHIVE_SCAN_MESSAGES` | 100000 | messages in the journal the full scan reads |
//! | `HANDOFF_ARCHIVE_RUNS` | 100 | runs of each query type through the index |
//! | `HANDOFF_ARCHIVE_SCAN_RUNS` | 3 | runs of each query type through the full scan |
//! | `HANDOFF_ARCHIVE_DIR` | `target/bench-archive` | where the journals and the index go |
//! | `HANDOFF_ARCHIVE_KEEP` | unset | `1`: keep the journals, and reuse them when they match |
//! | `HANDOFF_ARCHIVE_REUSE_INDEX` | unset | `1`: query the index left by a kept run, no build |
//! | `HANDOFF_ARCHIVE_SEED` | 1 | the corpus |
//! | `HANDOFF_ARCHIVE_GENERATE_ONLY` | unset | `1`: stop after writing the journals (with `KEEP`) |

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "common/queries.rs"]
mod queries;

use handoff::index::corpus::{self, Params, Rng, VOCABULARY};
use handoff::index::{self, Index, Search};
use handoff::journal::search::{self, Parts, Query};
use handoff::journal::writer::{DEFAULT_SEGMENT_BYTES, Writer};
use handoff::journal::{Body, Entry};
use queries::{KINDS, Kind, ms, percentile, query, text_field};

/// Journal records between two commits of the build: as `archive reindex`, one commit at the
/// end.
const BATCH: u64 = u64::MAX;
/// Messages per journal append (one fsync each).
const APPEND: u64 = 1_000;
/// Hits a search shows, as `archive search` without `--limit`.
const LIMIT: usize = 100;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        total += match m.is_dir() {
            true => du(&e.path()),
            false => m.len(),
        };
    }
    total
}

/// CPU time (user and system) this process has used, all threads.
fn cpu_time() -> Duration {
    // SAFETY: a plain out-parameter.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Writes messages `0..n` of `p` into a new journal at `big`, and the first `small` of them
/// also into one at `scan`: generated on every core, appended in order through the journal
/// writer in batches (the hash chain is the writer's).
fn generate(p: &Params, big: &Path, n: u64, scan: &Path, small: u64) -> (Duration, u64) {
    let started = Instant::now();
    let (mut w, _) = Writer::open(big, DEFAULT_SEGMENT_BYTES).unwrap();
    let (mut ws, _) = Writer::open(scan, DEFAULT_SEGMENT_BYTES).unwrap();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let batches = n.div_ceil(APPEND);
    let mut bytes = 0;
    std::thread::scope(|s| {
        let mut rx = Vec::new();
        for k in 0..workers {
            let (tx, r) = mpsc::sync_channel::<Vec<Entry>>(2);
            rx.push(r);
            s.spawn(move || {
                let mut b = k;
                while b < batches {
                    let batch = (b * APPEND..((b + 1) * APPEND).min(n))
                        .map(|i| {
                            let m = corpus::message(p, i);
                            Entry::new(m.kind, &m.meta, Body::Bytes(m.body))
                        })
                        .collect();
                    if tx.send(batch).is_err() {
                        return;
                    }
                    b += workers;
                }
            });
        }
        let mut last = Instant::now();
        for b in 0..batches {
            let mut batch = rx[(b % workers) as usize].recv().unwrap();
            let first = b * APPEND;
            if first < small {
                let mut copy: Vec<Entry> = batch
                    .iter()
                    .take((small - first) as usize)
                    .map(|e| {
                        let Body::Bytes(body) = &e.body else {
                            unreachable!("generated bodies are bytes")
                        };
                        Entry {
                            kind: e.kind,
                            meta: e.meta.clone(),
                            body: Body::Bytes(body.clone()),
                        }
                    })
                    .collect();
                ws.append(&mut copy).unwrap();
            }
            bytes += w.append(&mut batch).unwrap().1.bytes;
            if last.elapsed() > Duration::from_secs(10) {
                last = Instant::now();
                eprintln!(
                    "  generated {} of {n} messages, {}, {:.0?}",
                    (b + 1) * APPEND,
                    gib(bytes),
                    started.elapsed()
                );
            }
        }
    });
    (started.elapsed(), bytes)
}

/// The kept journals are reused only when generated from the same parameters.
fn stamp(p: &Params, n: u64, small: u64) -> String {
    format!(
        "seed={} messages={n} scan={small} accounts={} days={} vocabulary={VOCABULARY}\n",
        p.seed, p.accounts, p.days
    )
}

/// What the values of a query type are drawn from, as `archive search` arguments.
fn band(k: Kind) -> &'static str {
    match k {
        Kind::RareWord => "`--text W`, W of Zipf rank 200,000 to 2,000,000",
        Kind::CommonWord => "`--text W`, W of Zipf rank 0 to 100",
        Kind::Sender => "`--from A`, any of 5,000 accounts",
        Kind::Recipient => "`--to A`, any of 5,000 accounts",
        Kind::AccountMonth => "`--account A --since D --until D+29`",
        Kind::DepartmentWord => "`--department D --text W`, W of rank 1,000 to 10,000",
        Kind::AttachmentWord => "`--in attachment --text W`, W from an attachment",
        Kind::ChineseWord => "`--text W`, a two-character word from a Chinese message",
        Kind::Phrase => "`--text '\"A B\"'`, two neighbouring words of a message",
    }
}

/// A query as `archive search` arguments.
fn args(q: &Query) -> Vec<String> {
    let mut a = Vec::new();
    let mut flag = |f: &str, v: String| {
        a.push(f.to_string());
        a.push(v);
    };
    if let Some(x) = &q.account {
        flag("--account", x.clone());
    }
    if let Some(x) = &q.from {
        flag("--from", x.clone());
    }
    if let Some(x) = &q.to {
        flag("--to", x.clone());
    }
    if let Some(x) = q.since {
        flag("--since", x.to_string());
    }
    if let Some(x) = q.until {
        flag("--until", x.to_string());
    }
    if let Some(x) = &q.department {
        flag("--department", x.clone());
    }
    if !q.text.is_empty() {
        flag("--text", text_field(q));
    }
    if q.parts != Parts::default() {
        flag("--in", "attachment".into());
    }
    a
}

/// Runs `archive search` in a child process: its wall time and peak RSS (KiB), or `None`
/// without GNU time.
///
/// The peak comes from `/usr/bin/time -f %M`, which forks the search from its own small
/// process. Not from wait4 here: Rust starts a child with vfork (or posix_spawn), so until
/// its exec the child runs on this bench's memory, and Linux keeps the high-water mark of the
/// memory a process had before exec in its maxrss: wait4 reported this bench's own peak (the
/// rebuild's writer heap, 1.38 GiB at a million messages) for every search.
fn child_search(journal: &Path, index: &Path, q: &Query) -> (Duration, Option<i64>, String) {
    let time = Path::new("/usr/bin/time");
    let peak_file =
        std::env::temp_dir().join(format!("handoff-archive-rss-{}", std::process::id()));
    let handoff = env!("CARGO_BIN_EXE_handoff");
    let mut command = match time.exists() {
        true => {
            let mut c = std::process::Command::new(time);
            c.args(["-f", "%M", "-o"]).arg(&peak_file).arg(handoff);
            c
        }
        false => std::process::Command::new(handoff),
    };
    let started = Instant::now();
    let out = command
        .args(["archive", "search", "--journal"])
        .arg(journal)
        .arg("--index")
        .arg(index)
        .args(args(q))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(
        out.status.success(),
        "archive search: {}: {said}",
        out.status
    );
    let kib = std::fs::read_to_string(&peak_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let _ = std::fs::remove_file(&peak_file);
    (took, kib, said)
}

/// KiB as MiB, or why there is no figure.
fn mib(kib: Option<i64>) -> String {
    match kib {
        Some(k) => format!("{:.1} MiB", k as f64 / 1024.0),
        None => "not measured (no /usr/bin/time: apt-get install time)".into(),
    }
}

struct Row {
    kind: Kind,
    p50: Duration,
    p99: Duration,
    max: Duration,
    median_hits: usize,
    scan: Duration,
    scan_hits: usize,
}

fn main() {
    let n: u64 = env_or("HANDOFF_ARCHIVE_MESSAGES", 1_000_000);
    let small: u64 = env_or::<u64>("HANDOFF_ARCHIVE_SCAN_MESSAGES", 100_000).min(n);
    let runs: usize = env_or("HANDOFF_ARCHIVE_RUNS", 100);
    let scan_runs: usize = env_or("HANDOFF_ARCHIVE_SCAN_RUNS", 3);
    let keep = std::env::var("HANDOFF_ARCHIVE_KEEP").is_ok_and(|v| v == "1");
    let reuse_index = std::env::var("HANDOFF_ARCHIVE_REUSE_INDEX").is_ok_and(|v| v == "1");
    let seed: u64 = env_or("HANDOFF_ARCHIVE_SEED", 1);
    let base = std::env::var_os("HANDOFF_ARCHIVE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-archive"));
    let p = Params::realistic(seed);
    let started = Instant::now();
    std::fs::create_dir_all(&base).unwrap();
    let (journal, scan_journal, index_dir) = (
        base.join("journal"),
        base.join("journal-scan"),
        base.join("index"),
    );
    let stamp_file = base.join("generated");
    let want = stamp(&p, n, small);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("archive bench: {n} messages (full scan: {small}), {cores} cores");
    println!(
        "  load before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    if keep && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == want) {
        println!("journal: reusing {}", journal.display());
    } else {
        for d in [&journal, &scan_journal, &index_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
        let _ = std::fs::remove_file(&stamp_file);
        let (took, bytes) = generate(&p, &journal, n, &scan_journal, small);
        std::fs::write(&stamp_file, &want).unwrap();
        println!(
            "journal: {n} messages generated and appended in {:.1} s ({:.0} msg/s, {})",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            gib(bytes)
        );
    }
    if std::env::var("HANDOFF_ARCHIVE_GENERATE_ONLY").is_ok_and(|v| v == "1") {
        return;
    }
    let journal_bytes = du(&journal);

    let mut build_rate = None;
    if !(reuse_index && index_dir.exists()) {
        let _ = std::fs::remove_dir_all(&index_dir);
        let t = Instant::now();
        let cpu = cpu_time();
        let index = Index::open_or_create(&index_dir).unwrap();
        let mut w = index.rebuild_writer().unwrap();
        let progress = index::catch_up(&journal, &index, &mut w, BATCH).unwrap();
        let indexed = t.elapsed();
        w.finish().unwrap();
        let took = t.elapsed();
        let cpu = cpu_time() - cpu;
        let rate = progress.indexed as f64 / took.as_secs_f64();
        build_rate = Some((rate, progress.indexed as f64 / cpu.as_secs_f64()));
        println!(
            "index build: {} messages in {:.1} s ({:.0} msg/s; {:.1} s indexing, {:.1} s merging after; {:.1} CPU-s, {:.0} msg per CPU-second)",
            progress.indexed,
            took.as_secs_f64(),
            rate,
            indexed.as_secs_f64(),
            (took - indexed).as_secs_f64(),
            cpu.as_secs_f64(),
            progress.indexed as f64 / cpu.as_secs_f64(),
        );
    }
    let index = Index::open_or_create(&index_dir).unwrap();
    let index_bytes = du(&index_dir);
    let share = index_bytes as f64 / journal_bytes as f64;
    println!(
        "index size: {} for a journal of {} ({:.1} %), {} segments",
        gib(index_bytes),
        gib(journal_bytes),
        share * 100.0,
        index.segments().unwrap()
    );

    let mut rows = Vec::new();
    for kind in KINDS {
        let mut r = Rng::new(seed ^ 0xBE_5C ^ kind as u64);
        let queries: Vec<Query> = (0..runs).map(|_| query(kind, &mut r, &p, n)).collect();
        let mut times = Vec::with_capacity(runs);
        let mut hits = Vec::with_capacity(runs);
        for q in &queries {
            let s = Search {
                limit: LIMIT,
                ..Search::all(q.clone())
            };
            let t = Instant::now();
            let page = index.search(&s).unwrap();
            times.push(t.elapsed());
            assert!(page.hits.len() == page.total.min(LIMIT));
            hits.push(page.total);
        }
        times.sort();
        hits.sort();
        // The same type on the smaller journal, with values that it holds.
        let mut r = Rng::new(seed ^ 0x5CA4 ^ kind as u64);
        let mut scan = Vec::new();
        let mut scan_hits = Vec::new();
        for _ in 0..scan_runs {
            let q = query(kind, &mut r, &p, small);
            let t = Instant::now();
            scan_hits.push(search::search(&scan_journal, &q).unwrap().len());
            scan.push(t.elapsed());
        }
        scan.sort();
        scan_hits.sort();
        let row = Row {
            kind,
            p50: percentile(&times, 0.50),
            p99: percentile(&times, 0.99),
            max: times[times.len() - 1],
            median_hits: hits[hits.len() / 2],
            scan: scan.get(scan.len() / 2).copied().unwrap_or_default(),
            scan_hits: scan_hits.get(scan_hits.len() / 2).copied().unwrap_or(0),
        };
        println!(
            "{:<18} p50 {:>7} ms  p99 {:>7} ms  max {:>7} ms  median hits {:>7}  | scan of {small}: {:>7.2} s ({} hits)",
            kind.name(),
            ms(row.p50),
            ms(row.p99),
            ms(row.max),
            row.median_hits,
            row.scan.as_secs_f64(),
            row.scan_hits
        );
        rows.push(row);
    }

    // A whole `archive search` as an administrator runs it: a process of its own (which also
    // catches the index up and writes its audit record), the largest of its peak RSS.
    let mut rss = Vec::new();
    for kind in [Kind::CommonWord, Kind::Phrase, Kind::AccountMonth] {
        let mut r = Rng::new(seed ^ 0x455 ^ kind as u64);
        let q = query(kind, &mut r, &p, n);
        let (took, kib, said) = child_search(&journal, &index_dir, &q);
        println!(
            "archive search {} (a process): {:.0} ms, peak RSS {} ({said})",
            args(&q).join(" "),
            took.as_secs_f64() * 1000.0,
            mib(kib)
        );
        rss.push(kib);
    }
    let peak = rss.iter().max().copied().flatten();

    println!();
    println!(
        "| query ({n} messages, newest 100 and the total) | p50 | p99 | median hits | full scan of {small} |"
    );
    println!("|---|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {}: {} | {} ms | {} ms | {} | {:.2} s |",
            row.kind.name(),
            band(row.kind),
            ms(row.p50),
            ms(row.p99),
            row.median_hits,
            row.scan.as_secs_f64()
        );
    }
    println!();
    match build_rate {
        Some((rate, per_cpu)) => println!(
            "index build: {rate:.0} msg/s (goal: at least 5,000); {per_cpu:.0} msg per CPU-second on {cores} cores"
        ),
        None => println!("index build: not measured (HANDOFF_ARCHIVE_REUSE_INDEX)"),
    }
    println!(
        "index size: {:.1} % of the journal (goal: at most 40 %)",
        share * 100.0
    );
    println!("peak RSS of `archive search`: {}", mib(peak));
    let worst50 = rows.iter().map(|r| r.p50).max().unwrap_or_default();
    let worst99 = rows.iter().map(|r| r.p99).max().unwrap_or_default();
    println!(
        "slowest p50 {} ms (goal: at most 50), slowest p99 {} ms (goal: at most 250)",
        ms(worst50),
        ms(worst99)
    );
    println!(
        "  load after: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("whole bench: {:.0} s", started.elapsed().as_secs_f64());
    if !keep {
        for d in [&journal, &scan_journal, &index_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
        let _ = std::fs::remove_file(&stamp_file);
    }
}
