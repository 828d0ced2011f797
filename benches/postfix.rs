//! Postfix throughput with and without handoff, measured through real private Postfix
//! instances (the test lab in tests/support) and printed as one table. Run it with `bench/run`
//! (as root, with the packages tests/setup.sh installs); `cargo bench --bench postfix` runs it
//! without building the release binary first.
//!
//! Each configuration is a lab of its own, all started once and kept running:
//! - "Postfix alone": no milter; Postfix relays to the lab's capturing sink. The ratios divide
//!   by it.
//! - "do-nothing milter": the protocol floor. A milter in this process, on handoff's own
//!   sans-IO codec, a blocking thread per connection: it negotiates exactly what handoff
//!   negotiates (so Postfix sends the same packets and waits for the same replies), sets the
//!   same socket options, and answers CONTINUE where an answer is due. Nothing else.
//! - "handoff, nothing to do": `handoff serve` with a policy in which the test recipient is not
//!   a local address, and no archive: every message passes untouched. handoff's own floor.
//! - "handoff, journal fsync'ed": handoff doing its whole job, the lines of
//!   deploy/postfix/main.cf.milter pointing at the release build (or `$HANDOFF_BIN`) on
//!   127.0.0.1, a policy of a few thousand accounts in which the test recipient is a departed
//!   account with keep_copy, so that every message is rewritten (DELRCPT, ADDRCPT of the
//!   successor, ADDHDR of the loop marker) and journaled, with fsync, before Postfix hears 250.
//! - "journal on tmpfs": the same with the journal in /dev/shm, where fsync costs nothing: the
//!   journal's CPU without the disk's latency ("fsync off" without a switch that turns
//!   durability off).
//! - "archive off": the same with `[archive] enabled = false`.
//! - "indexer off": handoff's whole job with `[storage] indexer = false`: the daemon does not
//!   keep the archive index up to date (the whole-job row runs with it, the default). The two
//!   rows, interleaved in the same rounds, give the indexer's cost (target: within 5 %).
//! - "content filter": handoff after the queue (deploy/postfix/*.content-filter), LMTP in,
//!   SMTP back to a reinjection smtpd, journal fsync'ed.
//! - "whole job, DKIM-signed replies": the "journal fsync'ed" configuration with a `[dkim]`
//!   key (RSA 2048, the costlier algorithm) for the departed account's domain, so that the
//!   auto-replies it writes are signed. The whole-job row with and without it, in the same run.
//!   (smtp-source has one sender and the relay port has no listener here, so replies are built,
//!   signed and journaled up to the hourly cap per account, then suppressed: the row shows what
//!   turning signing on costs the mail path; the cost of one signature is printed below the
//!   table.)
//! - optional: "handoff (unix socket)" (as policy/large-org.toml deploys it), and "Postfix
//!   alone → smtp-sink", relaying to Postfix's smtp-sink(1) instead of the lab's sink, to check
//!   that the lab's sink does not limit Postfix.
//!
//! A run is one smtp-source(1) invocation against a lab's smtpd. Throughput is messages divided
//! by the time from starting smtp-source to the last delivery arriving at the sink; smtp-source's
//! own elapsed time gives the accept rate. Runs are interleaved (every configuration once per
//! load shape per round, the order rotating between rounds) so that the load of a shared machine
//! falls on all configurations alike; the table shows the median and the spread of the rounds.
//! Each round also measures the physical limits: the raw fsync rate of the journal's file system
//! and the loopback TCP round trip. After the rounds, a run with 100 sessions reports handoff's
//! peak memory with 100 milter connections open.
//!
//! CPU per message: handoff's threads' run time (/proc/PID/task/*/schedstat, in ns) over the
//! run, divided by the messages; if a thread exited during the run, the process's utime+stime
//! (/proc/PID/stat, in clock ticks) instead. Peak RSS: VmHWM, reset before every run.
//!
//! Every run is checked: every message arrived, none twice, the queue is empty, and with
//! handoff's whole job every message reached both the departed account and its successor and
//! carries the loop marker. A run that fails a check stops the benchmark.
//!
//! Knobs (environment):
//! - `HANDOFF_BENCH_ROUNDS`: rounds (default 3);
//! - `HANDOFF_BENCH_SCALE`: a factor for the message counts (default 1; 0.2 for a quick look);
//! - `HANDOFF_BENCH_SETUPS`: which configurations, comma-separated, of `alone`, `smtp-sink`,
//!   `floor`, `idle`, `journal`, `no-indexer`, `tmpfs`, `no-archive`, `unix`, `content-filter`,
//!   `dkim`
//!   (default all but `smtp-sink` and `unix`);
//! - `HANDOFF_BENCH_SHAPES`: which load shapes, of `5k20`, `5k1`, `100k20`, `100k1`,
//!   `5k100` (the 100-session run; default all);
//! - `HANDOFF_BIN`: the handoff binary (to compare two builds, or a wrapper script that execs
//!   it under a profiler).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use handoff::milter::codec::{self, Decoded, FrameDecoder, Protocol, Reply};
use handoff::milter::session::answer_offer;
use support::{Lab, LabConfig, parse_main_cf};

const SENDER: &str = "sender@example.net";
/// smtp-source sends every message to this one address (without -N).
const RECIPIENT: &str = "rcpt@corp.example";
const SUCCESSOR: &str = "successor@corp.example";
const LOOP_HEADER: &str = "X-Handoff-Forwarded";
/// Accounts in the generated policy besides the test recipient.
const ACCOUNTS: usize = 3000;
const ALIASES: usize = 300;
/// After each run: lets Postfix's processes go idle and shows a late duplicate, if any.
const SETTLE: Duration = Duration::from_secs(1);
/// Postfix's default_process_limit is 100, which would make the 100-session run wait for
/// smtpd processes.
const PROCESS_LIMIT: &str = "default_process_limit = 250";

#[derive(Clone, Copy)]
struct Shape {
    key: &'static str,
    size: usize,
    sessions: usize,
    messages: usize,
}

/// The load shapes of the main table: the main one first.
const SHAPES: [Shape; 4] = [
    Shape {
        key: "5k20",
        size: 5 * 1024,
        sessions: 20,
        messages: 1000,
    },
    Shape {
        key: "5k1",
        size: 5 * 1024,
        sessions: 1,
        messages: 300,
    },
    Shape {
        key: "100k20",
        size: 100 * 1024,
        sessions: 20,
        messages: 400,
    },
    Shape {
        key: "100k1",
        size: 100 * 1024,
        sessions: 1,
        messages: 150,
    },
];

/// The 100-session run, for handoff's memory with 100 milter connections open.
const WIDE: Shape = Shape {
    key: "5k100",
    size: 5 * 1024,
    sessions: 100,
    messages: 2000,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Alone,
    AloneSmtpSink,
    Floor,
    Idle,
    Journal,
    NoIndexer,
    Tmpfs,
    NoArchive,
    Unix,
    ContentFilter,
    Dkim,
}

/// In table order; "Postfix alone" first, it is what the ratios divide by.
const SETUPS: [Setup; 11] = [
    Setup::Alone,
    Setup::AloneSmtpSink,
    Setup::Floor,
    Setup::Idle,
    Setup::Journal,
    Setup::NoIndexer,
    Setup::Tmpfs,
    Setup::NoArchive,
    Setup::Unix,
    Setup::ContentFilter,
    Setup::Dkim,
];

impl Setup {
    fn key(self) -> &'static str {
        match self {
            Setup::Alone => "alone",
            Setup::AloneSmtpSink => "smtp-sink",
            Setup::Floor => "floor",
            Setup::Idle => "idle",
            Setup::Journal => "journal",
            Setup::NoIndexer => "no-indexer",
            Setup::Tmpfs => "tmpfs",
            Setup::NoArchive => "no-archive",
            Setup::Unix => "unix",
            Setup::ContentFilter => "content-filter",
            Setup::Dkim => "dkim",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Setup::Alone => "Postfix alone",
            Setup::AloneSmtpSink => "Postfix alone → smtp-sink",
            Setup::Floor => "+ do-nothing milter (bench)",
            Setup::Idle => "+ handoff, nothing to do",
            Setup::Journal => "+ handoff, journal fsync'ed",
            Setup::NoIndexer => "+ handoff, indexer off",
            Setup::Tmpfs => "+ handoff, journal on tmpfs",
            Setup::NoArchive => "+ handoff, archive off",
            Setup::Unix => "+ handoff, unix socket",
            Setup::ContentFilter => "handoff content filter",
            Setup::Dkim => "+ handoff, whole job + DKIM",
        }
    }

    fn default_on(self) -> bool {
        !matches!(self, Setup::AloneSmtpSink | Setup::Unix)
    }

    /// Does handoff's whole job: every message is rewritten.
    fn rewrites(self) -> bool {
        matches!(
            self,
            Setup::Journal
                | Setup::NoIndexer
                | Setup::Tmpfs
                | Setup::NoArchive
                | Setup::Unix
                | Setup::ContentFilter
                | Setup::Dkim
        )
    }
}

/// What one run measured.
#[derive(Clone, Copy)]
struct Run {
    /// Messages per second, first send to last delivery at the sink.
    rate: f64,
    /// Messages per second as smtp-source saw them accepted.
    accept_rate: f64,
    /// The milter's (or content filter's) CPU per message, in µs, and whether it was measured
    /// per thread (exact) or from clock ticks.
    cpu_us: Option<(f64, bool)>,
    /// handoff's peak RSS during the run, in KiB.
    peak_kib: Option<u64>,
    /// The lab's Postfix processes' CPU per message, in µs (all of them: smtpd, cleanup, qmgr,
    /// trivial-rewrite, smtp, and the content filter's lmtp and second smtpd).
    postfix_us: f64,
}

fn main() {
    // `cargo test --benches` runs bench targets without --bench: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds = env_number("HANDOFF_BENCH_ROUNDS", 3.0).max(1.0) as usize;
    let scale = env_number("HANDOFF_BENCH_SCALE", 1.0);
    let scaled = |s: &Shape| Shape {
        messages: ((s.messages as f64 * scale).round() as usize).max(1),
        ..*s
    };
    let setups: Vec<Setup> = match std::env::var("HANDOFF_BENCH_SETUPS") {
        Ok(list) => pick(&list, &SETUPS, |s| s.key(), "HANDOFF_BENCH_SETUPS"),
        Err(_) => SETUPS.into_iter().filter(|s| s.default_on()).collect(),
    };
    let all_shapes: Vec<Shape> = SHAPES.iter().chain([&WIDE]).copied().collect();
    let shapes: Vec<Shape> = match std::env::var("HANDOFF_BENCH_SHAPES") {
        Ok(list) => pick(&list, &all_shapes, |s| s.key, "HANDOFF_BENCH_SHAPES"),
        Err(_) => all_shapes,
    };
    let (wide, shapes): (Vec<Shape>, Vec<Shape>) =
        shapes.iter().map(scaled).partition(|s| s.key == WIDE.key);
    let wide = wide.first().copied();
    // The 100-session run: Postfix alone and handoff's whole job, if selected.
    let wide_setups: Vec<usize> = (0..setups.len())
        .filter(|&i| matches!(setups[i], Setup::Alone | Setup::Journal))
        .collect();
    let clk_tck = clock_ticks();
    let load_before = load_average();

    let bin = handoff_bin();
    let policy = policy();
    let _dkim_key = setups.contains(&Setup::Dkim).then(DkimKey::create);
    let smtp_sink = setups.contains(&Setup::AloneSmtpSink).then(SmtpSink::start);
    let null = setups.contains(&Setup::Floor).then(NullMilter::start);
    let targets: Vec<Target> = setups
        .iter()
        .map(|&setup| Target::start(setup, &bin, &policy, smtp_sink.as_ref(), null.as_ref()))
        .collect();
    let idle_rss = targets
        .iter()
        .find_map(|t| t.handoff.as_ref())
        .map(|h| proc_status_kib(h.pid(), "VmRSS"));
    // Where the fsync'ed journal lives; the raw fsync rate is measured there.
    let fsync_dir = targets
        .iter()
        .find(|t| t.setup == Setup::Journal)
        .and_then(|t| t.handoff.as_ref())
        .map_or_else(|| PathBuf::from("/tmp"), |h| h.dir.path().to_path_buf());

    // Warm-up, not counted: starts Postfix's processes and checks every setup end to end.
    let warm_up = Shape {
        key: "warm-up",
        size: 5 * 1024,
        sessions: 20,
        messages: 100,
    };
    for target in &targets {
        target.run(warm_up, clk_tck.0);
    }

    let started = Instant::now();
    let mut results: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); setups.len()]; shapes.len()];
    let mut wide_results: Vec<Vec<Run>> = vec![Vec::new(); setups.len()];
    let mut limits = PhysicalLimits::default();
    for round in 0..rounds {
        limits.measure(&fsync_dir);
        eprintln!(
            "bench: round {}/{rounds}: raw fsync {:.0}/s, loopback round trip {:.1} µs",
            round + 1,
            limits.fsync_per_s.last().copied().unwrap_or(0.0),
            limits.rtt_us.last().copied().unwrap_or(0.0)
        );
        for (si, shape) in shapes.iter().enumerate() {
            for k in 0..setups.len() {
                let ci = (k + round) % setups.len();
                let run = targets[ci].run(*shape, clk_tck.0);
                progress(round, rounds, setups[ci], shape, &run);
                results[si][ci].push(run);
            }
        }
        if let Some(shape) = wide {
            for k in 0..wide_setups.len() {
                let ci = wide_setups[(k + round) % wide_setups.len()];
                let run = targets[ci].run(shape, clk_tck.0);
                progress(round, rounds, setups[ci], &shape, &run);
                wide_results[ci].push(run);
            }
        }
    }

    print!(
        "{}",
        table(
            &setups,
            &shapes,
            &results,
            wide.map(|w| (w, &wide_results[..])),
            TableInfo {
                rounds,
                clk_tck,
                idle_rss,
                load_before,
                load_after: load_average(),
                took: started.elapsed(),
                handoff_bin: bin.display().to_string(),
                limits,
                fsync_dir,
            }
        )
    );
    if setups.contains(&Setup::Dkim) {
        print!("{}", dkim_sign_cost());
    }
}

fn progress(round: usize, rounds: usize, setup: Setup, s: &Shape, run: &Run) {
    eprintln!(
        "bench: round {}/{rounds}: {:<28} {:>3} KiB x{:<3} {:>7.1} msg/s (accept {:.1}){}",
        round + 1,
        setup.label(),
        s.size / 1024,
        s.sessions,
        run.rate,
        run.accept_rate,
        run.cpu_us
            .map_or(String::new(), |(us, _)| format!(", {us:.0} µs CPU/msg"))
    );
}

/// The items of `all` whose keys a comma-separated `list` names, in `all`'s order.
fn pick<T: Copy>(list: &str, all: &[T], key: impl Fn(&T) -> &'static str, var: &str) -> Vec<T> {
    let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
    for w in &wanted {
        assert!(
            all.iter().any(|t| key(t) == *w),
            "bench: {var}: unknown {w:?}; known: {}",
            all.iter().map(&key).collect::<Vec<_>>().join(", ")
        );
    }
    all.iter()
        .filter(|t| wanted.contains(&key(t)))
        .copied()
        .collect()
}

/// One configuration: its lab and, with handoff, its handoff process.
struct Target<'a> {
    setup: Setup,
    lab: Lab,
    handoff: Option<Handoff>,
    smtp_sink: Option<&'a SmtpSink>,
    null: Option<&'a NullMilter>,
}

impl<'a> Target<'a> {
    fn start(
        setup: Setup,
        bin: &Path,
        policy: &str,
        smtp_sink: Option<&'a SmtpSink>,
        null: Option<&'a NullMilter>,
    ) -> Target<'a> {
        let tcp = Listen::Milter { unix: false };
        let handoff = match setup {
            Setup::Alone | Setup::AloneSmtpSink | Setup::Floor => None,
            Setup::Idle => Some(Handoff::start(bin, &idle_policy(), tcp, JournalAt::Off)),
            Setup::Journal => Some(Handoff::start(bin, policy, tcp, JournalAt::Disk)),
            Setup::NoIndexer => Some(Handoff::start(bin, policy, tcp, JournalAt::DiskNoIndexer)),
            Setup::Dkim => Some(Handoff::start(
                bin,
                &dkim_policy(policy),
                tcp,
                JournalAt::Disk,
            )),
            Setup::Tmpfs => Some(Handoff::start(bin, policy, tcp, JournalAt::Tmpfs)),
            Setup::NoArchive => Some(Handoff::start(bin, policy, tcp, JournalAt::Off)),
            Setup::Unix => Some(Handoff::start(
                bin,
                policy,
                Listen::Milter { unix: true },
                JournalAt::Disk,
            )),
            Setup::ContentFilter => Some(Handoff::start(
                bin,
                policy,
                Listen::Lmtp {
                    port: free_port(),
                    reinject: free_port(),
                },
                JournalAt::Disk,
            )),
        };
        let mut config = LabConfig::default().main_cf_line(PROCESS_LIMIT);
        match setup {
            Setup::AloneSmtpSink => {
                let port = smtp_sink.expect("smtp-sink started for its setup").port;
                config = config.main_cf_line(format!(
                    "transport_maps = inline:{{ *=smtp:[127.0.0.1]:{port} }}"
                ));
            }
            Setup::Floor => {
                let port = null.expect("do-nothing milter started for its setup").port;
                for line in milter_lines(&format!("inet:127.0.0.1:{port}")) {
                    config = config.main_cf_line(line);
                }
            }
            _ => {}
        }
        if let Some(h) = &handoff {
            match h.listen {
                Listen::Milter { .. } => {
                    for line in milter_lines(&h.postfix_milter) {
                        config = config.main_cf_line(line);
                    }
                }
                Listen::Lmtp { port, reinject } => config = config.content_filter(port, reinject),
            }
        }
        Target {
            setup,
            lab: Lab::start(config),
            handoff,
            smtp_sink: smtp_sink.filter(|_| setup == Setup::AloneSmtpSink),
            null: null.filter(|_| setup == Setup::Floor),
        }
    }

    /// One smtp-source run, timed to the last delivery, then checked.
    fn run(&self, s: Shape, clk_tck: f64) -> Run {
        let (setup, lab) = (self.setup, &self.lab);
        let pid = self.handoff.as_ref().map(Handoff::pid);
        assert_eq!(lab.sink().count(), 0, "lab sink not empty before a run");
        let external_before = self.smtp_sink.map_or(0, SmtpSink::count);
        let delivered = |n: usize, timeout: Duration| match (setup, self.smtp_sink) {
            (Setup::AloneSmtpSink, Some(sink)) => {
                sink.wait_for_count(external_before + n, timeout) - external_before
            }
            _ => lab.sink().wait_for_count(n, timeout),
        };
        if let Some(pid) = pid {
            // Resets VmHWM to the current RSS (proc(5), /proc/pid/clear_refs), so the peak
            // is this run's.
            fs::write(format!("/proc/{pid}/clear_refs"), "5")
                .unwrap_or_else(|e| panic!("bench: reset the peak RSS of handoff: {e}"));
        }
        let cpu_before = pid.map(CpuSample::take);
        let null_before = self.null.map(NullMilter::cpu_ns);
        let postfix_before = postfix_cpu_ticks(lab.queue_dir());

        let began = Instant::now();
        let source = Command::new("/usr/sbin/smtp-source")
            .args(["-s", &s.sessions.to_string()])
            .args(["-l", &s.size.to_string()])
            .args(["-m", &s.messages.to_string()])
            .args(["-c", "-f", SENDER, "-t", RECIPIENT])
            .arg(lab.smtp_addr().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("bench: cannot run smtp-source: {e}"));
        let accepted_in = began.elapsed();
        assert!(
            source.status.success(),
            "bench: smtp-source failed ({}) against {}: {}",
            source.status,
            setup.label(),
            String::from_utf8_lossy(&source.stderr)
        );
        // Generous: a tenth of the slowest rate ever seen, and never under a minute.
        let timeout = Duration::from_secs(60).max(Duration::from_millis(100 * s.messages as u64));
        let got = delivered(s.messages, timeout);
        let delivered_in = began.elapsed();
        assert!(
            got >= s.messages,
            "bench: {}: {got} of {} messages delivered within {timeout:?}",
            setup.label(),
            s.messages
        );
        let peak_kib = pid.map(|pid| proc_status_kib(pid, "VmHWM"));

        // The do-nothing milter counts a connection's CPU when it closes, which Postfix does
        // when the SMTP session ends: after the settling time every connection is closed.
        thread::sleep(SETTLE);
        let per_message = |secs: f64| secs * 1e6 / s.messages as f64;
        let postfix_us =
            per_message((postfix_cpu_ticks(lab.queue_dir()) - postfix_before) as f64 / clk_tck);
        let cpu_us = match (pid, cpu_before, self.null, null_before) {
            (Some(pid), Some(before), _, _) => {
                let (secs, exact) = CpuSample::take(pid).since(&before, clk_tck);
                Some((per_message(secs), exact))
            }
            (_, _, Some(null), Some(before)) => {
                Some((per_message((null.cpu_ns() - before) as f64 / 1e9), true))
            }
            _ => None,
        };
        self.check(s, delivered(s.messages, Duration::ZERO));
        Run {
            rate: s.messages as f64 / delivered_in.as_secs_f64(),
            accept_rate: s.messages as f64 / accepted_in.as_secs_f64(),
            cpu_us,
            peak_kib,
            postfix_us,
        }
    }

    /// Every message arrived once, nothing is left in the queue, and with handoff's whole job
    /// every message was rewritten. Empties the lab's sink for the next run.
    fn check(&self, s: Shape, count: usize) {
        let (setup, lab) = (self.setup, &self.lab);
        assert_eq!(
            count,
            s.messages,
            "bench: {}: expected exactly {} deliveries",
            setup.label(),
            s.messages
        );
        let queued = lab.queue_len();
        assert_eq!(
            queued,
            0,
            "bench: {}: messages left in the queue",
            setup.label()
        );
        if setup == Setup::AloneSmtpSink {
            return;
        }
        let (want, marked): (&[&str], bool) = if setup.rewrites() {
            (&[RECIPIENT, SUCCESSOR], true)
        } else {
            (&[RECIPIENT], false)
        };
        for d in lab.sink().take() {
            let mut rcpts: Vec<String> = d.rcpt_to.iter().map(|r| r.to_lowercase()).collect();
            rcpts.sort();
            assert!(
                d.mail_from == SENDER
                    && rcpts == want
                    && d.header(LOOP_HEADER).is_some() == marked
                    && d.data.len() >= s.size,
                "bench: {}: unexpected delivery: from {:?} to {:?}, {} bytes, {LOOP_HEADER}: {:?}",
                setup.label(),
                d.mail_from,
                d.rcpt_to,
                d.data.len(),
                d.header(LOOP_HEADER)
            );
        }
    }
}

/// How Postfix reaches a handoff.
#[derive(Clone, Copy)]
enum Listen {
    /// As its milter, on 127.0.0.1 or a unix socket.
    Milter { unix: bool },
    /// As its content filter: LMTP on `port`, handing messages back to Postfix's reinjection
    /// smtpd on `reinject`.
    Lmtp { port: u16, reinject: u16 },
}

/// Where a handoff's journal is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JournalAt {
    /// In its directory under /tmp, on the disk.
    Disk,
    /// On the disk, without the archive indexer (`[storage] indexer = false`).
    DiskNoIndexer,
    /// In /dev/shm: fsync returns at once.
    Tmpfs,
    /// `[archive] enabled = false`.
    Off,
}

/// `handoff serve` with the benchmark's policy, logging at `info` as in production (one line
/// per message), its files in a fresh directory under /tmp. Stopped on drop.
struct Handoff {
    child: Child,
    dir: tempfile::TempDir,
    /// The journal's directory when it is on tmpfs.
    _shm: Option<tempfile::TempDir>,
    listen: Listen,
    /// Where Postfix finds the milter: `inet:127.0.0.1:PORT` or `unix:PATH`.
    postfix_milter: String,
}

impl Handoff {
    fn start(bin: &Path, policy: &str, listen: Listen, journal: JournalAt) -> Handoff {
        let temp = |base: &str| {
            tempfile::Builder::new()
                .prefix("handoff-bench-")
                .tempdir_in(base)
                .unwrap_or_else(|e| panic!("bench: cannot create a directory in {base}: {e}"))
        };
        let dir = temp("/tmp");
        let shm = (journal == JournalAt::Tmpfs).then(|| temp("/dev/shm"));
        let socket = dir.path().join("milter.sock");
        let port = free_port();
        let (milter, postfix_milter) = match listen {
            Listen::Milter { unix: true } => {
                let path = socket.display();
                (format!("unix:{path}"), format!("unix:{path}"))
            }
            _ => (
                format!("127.0.0.1:{port}"),
                format!("inet:127.0.0.1:{port}"),
            ),
        };
        let lmtp = match listen {
            Listen::Lmtp { port, reinject } => (
                format!("lmtp = \"127.0.0.1:{port}\"\n"),
                format!("[lmtp]\nnext_hop = \"127.0.0.1:{reinject}\"\n"),
            ),
            Listen::Milter { .. } => (String::new(), String::new()),
        };
        let journal_dir = match &shm {
            Some(shm) => shm.path().join("journal").display().to_string(),
            None => "journal".into(),
        };
        let archive = match journal {
            JournalAt::Off => "[archive]\nenabled = false\n",
            _ => "",
        };
        let indexer = match journal {
            JournalAt::DiskNoIndexer => "indexer = false\n",
            _ => "",
        };
        // The policy in a directory of its own, as in /etc/handoff: handoff watches the
        // policy's directory, and a log file written there would wake the watcher for every
        // message.
        let policy_dir = dir.path().join("etc");
        fs::create_dir(&policy_dir)
            .unwrap_or_else(|e| panic!("bench: mkdir {}: {e}", policy_dir.display()));
        let config = policy_dir.join("handoff.toml");
        let text = format!(
            r#"[listen]
milter = "{milter}"
# Not handoff's default port: several instances run at once.
metrics = "127.0.0.1:{metrics_port}"
{lmtp_listen}
{lmtp_table}
[storage]
journal = "{journal_dir}"
state = "state"
{indexer}
{archive}
{policy}"#,
            metrics_port = free_port(),
            lmtp_listen = lmtp.0,
            lmtp_table = lmtp.1,
        );
        fs::write(&config, text)
            .unwrap_or_else(|e| panic!("bench: write {}: {e}", config.display()));
        let log_path = dir.path().join("handoff.log");
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("bench: create {}: {e}", log_path.display()));
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("HANDOFF_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a file handle clones"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("bench: cannot run {}: {e}", bin.display()));
        let mut handoff = Handoff {
            child,
            dir,
            _shm: shm,
            listen,
            postfix_milter,
        };
        let unix = matches!(listen, Listen::Milter { unix: true });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = match listen {
                Listen::Milter { unix: true } => UnixStream::connect(&socket).is_ok(),
                Listen::Milter { unix: false } => TcpStream::connect(("127.0.0.1", port)).is_ok(),
                Listen::Lmtp { port, .. } => TcpStream::connect(("127.0.0.1", port)).is_ok(),
            };
            if up {
                break;
            }
            if let Ok(Some(status)) = handoff.child.try_wait() {
                panic!("bench: handoff exited ({status}):\n{}", handoff.log());
            }
            assert!(
                Instant::now() < deadline,
                "bench: handoff did not listen within 60 s:\n{}",
                handoff.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        if unix {
            // smtpd runs as the postfix user: it must reach the socket (handoff makes it 0660).
            fs::set_permissions(handoff.dir.path(), fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("bench: chmod {}: {e}", handoff.dir.path().display()));
            std::os::unix::fs::chown(&socket, None, Some(postfix_gid()))
                .unwrap_or_else(|e| panic!("bench: chown {}: {e}", socket.display()));
        }
        eprintln!(
            "bench: handoff {} (pid {}) for {}, log {}",
            bin.display(),
            handoff.pid(),
            match listen {
                Listen::Lmtp { port, .. } => format!("lmtp 127.0.0.1:{port}"),
                Listen::Milter { .. } => handoff.postfix_milter.clone(),
            },
            log_path.display()
        );
        handoff
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("handoff.log")).unwrap_or_default()
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        // SIGTERM first: handoff shuts down cleanly, and a profiler wrapping it (HANDOFF_BIN
        // pointing at a script that execs valgrind) writes its output.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "bench: last lines of the handoff log:\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
    }
}

/// The protocol floor: a milter that negotiates what handoff negotiates and answers CONTINUE
/// wherever Postfix waits for an answer, on handoff's codec, one blocking thread per
/// connection. It sets the socket options handoff sets (TCP_NODELAY, and TCP_QUICKACK after
/// every read; see src/milter/server.rs for why). Its CPU is the run time of its connection
/// threads, added up as each connection closes.
struct NullMilter {
    port: u16,
    cpu_ns: Arc<AtomicU64>,
}

impl NullMilter {
    fn start() -> NullMilter {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bench: do-nothing milter: bind: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("bench: do-nothing milter: {e}"))
            .port();
        let cpu_ns = Arc::new(AtomicU64::new(0));
        let total = Arc::clone(&cpu_ns);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let total = Arc::clone(&total);
                thread::spawn(move || {
                    if let Err(e) = null_session(stream) {
                        eprintln!("bench: do-nothing milter: {e}");
                    }
                    total.fetch_add(thread_cpu_ns(), Ordering::Relaxed);
                });
            }
        });
        eprintln!("bench: do-nothing milter on 127.0.0.1:{port}");
        NullMilter { port, cpu_ns }
    }

    fn cpu_ns(&self) -> u64 {
        self.cpu_ns.load(Ordering::Relaxed)
    }
}

/// One connection of the do-nothing milter, to its end.
fn null_session(mut stream: TcpStream) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(256);
    let mut protocol = Protocol::empty();
    loop {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        let _ = socket2::SockRef::from(&stream).set_tcp_quickack(true);
        decoder.feed(&buf[..n]);
        loop {
            let command = match decoder.decode_command().map_err(|e| e.to_string())? {
                Decoded::Frame(c) => c,
                Decoded::Incomplete => break,
                Decoded::TooLarge { declared } => {
                    return Err(format!("frame of {declared} bytes"));
                }
            };
            use codec::Command as C;
            let no_reply = match command {
                C::OptNeg {
                    version,
                    actions,
                    protocol: offered,
                } => {
                    let answer = answer_offer(version, actions, offered);
                    if let Reply::OptNeg { protocol: p, .. } = &answer {
                        protocol = *p;
                    }
                    answer.encode(&mut out);
                    continue;
                }
                C::Quit => return Ok(()),
                C::Macro { .. } | C::Abort | C::QuitNc => continue,
                C::BodyEob => Protocol::empty(),
                C::Connect { .. } => Protocol::NR_CONN,
                C::Helo(_) => Protocol::NR_HELO,
                C::Mail(_) => Protocol::NR_MAIL,
                C::Rcpt(_) => Protocol::NR_RCPT,
                C::Data => Protocol::NR_DATA,
                C::Header { .. } => Protocol::NR_HDR,
                C::Eoh => Protocol::NR_EOH,
                C::Body(_) => Protocol::NR_BODY,
                C::Unknown(_) => Protocol::NR_UNKN,
            };
            if no_reply.is_empty() || !protocol.contains(no_reply) {
                Reply::Continue.encode(&mut out);
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).map_err(|e| e.to_string())?;
            out.clear();
        }
    }
}

/// The calling thread's run time so far, in ns (proc(5), /proc/thread-self/schedstat).
fn thread_cpu_ns() -> u64 {
    fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A process's CPU time at one moment, two ways: each thread's run time in ns
/// (/proc/PID/task/TID/schedstat), exact but blind to threads that exit; and utime+stime of the
/// whole process (/proc/PID/stat), which counts exited threads but only in clock ticks.
struct CpuSample {
    threads: HashMap<u32, u64>,
    ticks: u64,
}

impl CpuSample {
    fn take(pid: u32) -> CpuSample {
        let mut threads = HashMap::new();
        if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                let ns = fs::read_to_string(task.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok());
                if let Some(ns) = ns {
                    threads.insert(tid, ns);
                }
            }
        }
        CpuSample {
            threads,
            ticks: cpu_ticks(pid),
        }
    }

    /// Seconds of CPU since `before`, and whether they are exact (per thread). Falls back to
    /// the clock ticks when they show more time than the threads alive now account for: a
    /// thread that ran during the interval has exited.
    fn since(&self, before: &CpuSample, clk_tck: f64) -> (f64, bool) {
        let exact: u64 = self
            .threads
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(before.threads.get(tid).copied().unwrap_or(0)))
            .sum();
        let exact = exact as f64 / 1e9;
        let ticks = (self.ticks - before.ticks) as f64 / clk_tck;
        // Each reading of the ticks may be short by up to one tick.
        if ticks > exact + 2.0 / clk_tck {
            (ticks, false)
        } else {
            (exact, true)
        }
    }
}

/// The physical limits of the machine, measured once per round.
#[derive(Default)]
struct PhysicalLimits {
    /// Appends of 4 KiB each followed by fdatasync, one writer, per second.
    fsync_per_s: Vec<f64>,
    /// Median round trip of 1 byte over loopback TCP, in µs.
    rtt_us: Vec<f64>,
}

impl PhysicalLimits {
    fn measure(&mut self, dir: &Path) {
        self.fsync_per_s
            .push(raw_fsync_rate(dir, Duration::from_secs(1)));
        self.rtt_us.push(loopback_rtt_us(2000));
    }
}

/// One writer appending 4 KiB and calling fdatasync, as the journal does per batch, for `dur`.
fn raw_fsync_rate(dir: &Path, dur: Duration) -> f64 {
    let path = dir.join("raw-fsync-probe");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("bench: create {}: {e}", path.display()));
    let block = vec![0x5a; 4096];
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < dur {
        f.write_all(&block)
            .and_then(|()| f.sync_data())
            .unwrap_or_else(|e| panic!("bench: write and fsync {}: {e}", path.display()));
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = fs::remove_file(&path);
    rate
}

/// The median time for 1 byte to go to a thread over loopback TCP and come back, in µs, over
/// `n` round trips (TCP_NODELAY on both ends, as milter connections are on handoff's side).
fn loopback_rtt_us(n: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("bench: loopback round trip: bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("bench: loopback round trip: {e}"));
    let echo = thread::spawn(move || {
        let (mut s, _) = listener
            .accept()
            .unwrap_or_else(|e| panic!("bench: loopback round trip: accept: {e}"));
        let _ = s.set_nodelay(true);
        let mut b = [0u8; 1];
        while matches!(s.read(&mut b), Ok(1)) {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut s = TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("bench: loopback round trip: connect: {e}"));
    let _ = s.set_nodelay(true);
    let mut times = Vec::with_capacity(n);
    let mut b = [0u8; 1];
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(b"x")
            .and_then(|()| s.read_exact(&mut b))
            .unwrap_or_else(|e| panic!("bench: loopback round trip: {e}"));
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(s);
    let _ = echo.join();
    median(&mut times)
}

/// The handoff binary: `$HANDOFF_BIN` if set (to compare two builds), else the release build
/// cargo made for this benchmark (`cargo bench` builds the package's binaries with the bench
/// profile, which is the release profile).
fn handoff_bin() -> PathBuf {
    std::env::var_os("HANDOFF_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_handoff")),
        PathBuf::from,
    )
}

fn postfix_gid() -> u32 {
    let output = Command::new("id")
        .args(["-g", "postfix"])
        .output()
        .unwrap_or_else(|e| panic!("bench: cannot run id: {e}"));
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bench: no postfix group; install postfix (tests/setup.sh)"))
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("bench: cannot find a free port: {e}"))
}

/// smtp-sink(1) as a next hop, counting the messages it receives from its `-c` counter line
/// ("sess=N quit=N mesg=N", rewritten in place with a carriage return after every message).
struct SmtpSink {
    child: Child,
    port: u16,
    received: Arc<(Mutex<usize>, Condvar)>,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let port = free_port();
        let mut child = Command::new("/usr/sbin/smtp-sink")
            // As root it must be told whom to run as.
            .args(["-u", "postfix", "-c"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("256")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("bench: cannot run smtp-sink: {e}"));
        let received = Arc::new((Mutex::new(0), Condvar::new()));
        // Requested as piped just above.
        let mut stdout = child.stdout.take().expect("piped stdout");
        let counter = Arc::clone(&received);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut line = Vec::new();
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    return;
                }
                for &b in &buf[..n] {
                    if b != b'\r' && b != b'\n' {
                        line.push(b);
                        continue;
                    }
                    let text = String::from_utf8_lossy(&line);
                    if let Some(mesg) = text
                        .split_whitespace()
                        .find_map(|f| f.strip_prefix("mesg="))
                        .and_then(|v| v.parse::<usize>().ok())
                    {
                        let (count, arrived) = &*counter;
                        *count.lock().unwrap_or_else(PoisonError::into_inner) = mesg;
                        arrived.notify_all();
                    }
                    line.clear();
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "bench: smtp-sink did not listen within 10 s"
            );
            thread::sleep(Duration::from_millis(20));
        }
        SmtpSink {
            child,
            port,
            received,
        }
    }

    fn count(&self) -> usize {
        *self
            .received
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_for_count(&self, n: usize, timeout: Duration) -> usize {
        let (count, arrived) = &*self.received;
        let guard = count.lock().unwrap_or_else(PoisonError::into_inner);
        *arrived
            .wait_timeout_while(guard, timeout, |c| *c < n)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A policy shaped like policy/example.toml, at the size of a mid-sized organisation: departed
/// accounts with forwards (half keeping a copy, some switching to deleted at a date), disabled,
/// frozen, deleted and active accounts, and aliases. The test recipient is a departed account
/// with keep_copy and an auto-reply, forwarding to its successor.
fn policy() -> String {
    let mut p = String::from(
        r#"[domains]
local = ["corp.example"]

[templates.departed]
subject = "{name} has left Corp"
body = """
{name} no longer works at Corp. Please write to {successor}.
"""

[aliases]
"#,
    );
    for k in 0..ALIASES {
        // Members: two active accounts and a team address with no entry of its own.
        let (a, b, team) = (k * 10 + 8, k * 10 + 9, k % 50);
        let _ = writeln!(
            p,
            r#""list{k}@corp.example" = ["user{a}@corp.example", "user{b}@corp.example", "team{team}@corp.example"]"#
        );
    }
    let _ = write!(
        p,
        r#"
[accounts."{RECIPIENT}"]
state = "departed"
name = "Bench Recipient"
department = "Sales"
successor = "{SUCCESSOR}"
forward = ["{SUCCESSOR}"]
keep_copy = true
autoreply = "departed"
"#
    );
    for i in 0..ACCOUNTS {
        let team = i % 50;
        let _ = writeln!(p, "\n[accounts.\"user{i}@corp.example\"]");
        let _ = match i % 10 {
            0..=3 => write!(
                p,
                r#"state = "departed"
name = "User {i}"
department = "Dept {team}"
successor = "team{team}@corp.example"
forward = ["team{team}@corp.example"]
keep_copy = {}
autoreply = "departed"
{}"#,
                i % 2 == 0,
                if i % 20 == 0 {
                    "until = 2030-01-01\nthen = \"deleted\"\n"
                } else {
                    ""
                }
            ),
            4 | 5 => writeln!(
                p,
                r#"state = "disabled"
reply = "550 5.2.1 This mailbox is disabled; please write to team{team}@corp.example""#
            ),
            6 => writeln!(p, r#"state = "frozen""#),
            7 => writeln!(p, r#"state = "deleted""#),
            _ => writeln!(p, r#"state = "active""#),
        };
    }
    p
}

/// handoff with nothing to do: the test recipient's domain is not local, so every message
/// passes as it came.
/// Where the "dkim" configuration's key is: set once by [`DkimKey::create`].
static DKIM_KEY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The "dkim" configuration's private key (RSA 2048, mode 0600), in a directory removed when
/// this is dropped.
struct DkimKey(#[allow(dead_code)] tempfile::TempDir);

impl DkimKey {
    fn create() -> DkimKey {
        let dir = tempfile::Builder::new()
            .prefix("handoff-bench-dkim-")
            .tempdir()
            .unwrap_or_else(|e| panic!("bench: cannot create a directory for the DKIM key: {e}"));
        let path = dir.path().join("bench.pem");
        let key = handoff::autoreply::dkim::generate(handoff::policy::DkimAlgorithm::RsaSha256)
            .unwrap_or_else(|e| panic!("bench: {e}"));
        fs::write(&path, key.private_pem)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o600)))
            .unwrap_or_else(|e| panic!("bench: write {}: {e}", path.display()));
        let _ = DKIM_KEY.set(path);
        DkimKey(dir)
    }
}

/// The whole job's policy with the departed account's domain signing its replies.
fn dkim_policy(policy: &str) -> String {
    let key = DKIM_KEY
        .get()
        .expect("the DKIM key is made before the setups start");
    format!(
        "{policy}\n[dkim.\"corp.example\"]\nselector = \"bench\"\nalgorithm = \"rsa-sha256\"\nkey = \"{}\"\n",
        key.display()
    )
}

/// What one signature of an auto-reply costs, per algorithm, measured in this process.
fn dkim_sign_cost() -> String {
    use handoff::autoreply::dkim::{DomainKey, Keys, generate};
    use handoff::policy::DkimAlgorithm;
    let reply = format!(
        "From: Bench Recipient <{RECIPIENT}>\r\nTo: <{SENDER}>\r\nSubject: Bench Recipient has left Corp\r\n\
         Date: Sat, 05 Dec 2026 00:00:00 +0000\r\nMessage-ID: <b1@corp.example>\r\n\
         Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Bench Recipient no longer works at Corp. Please write to {SUCCESSOR}.\r\n"
    );
    let mut out =
        String::from("\nDKIM signature of one auto-reply (this process, median of 5 × 200):\n");
    for algorithm in [DkimAlgorithm::Ed25519Sha256, DkimAlgorithm::RsaSha256] {
        let g = generate(algorithm).unwrap_or_else(|e| panic!("bench: {e}"));
        let key = DomainKey::from_pem("corp.example", "bench", algorithm, g.private_pem.as_bytes())
            .unwrap_or_else(|e| panic!("bench: {e}"));
        let keys = Keys::new([key]);
        let mut rounds: Vec<f64> = (0..5)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..200 {
                    let signed = keys.sign("corp.example", reply.as_bytes());
                    assert!(matches!(signed, Ok(Some(_))), "bench: signing failed");
                }
                started.elapsed().as_secs_f64() * 1e6 / 200.0
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        let _ = writeln!(out, "  {}: {:.0} µs", algorithm.as_str(), rounds[2]);
    }
    out
}

fn idle_policy() -> String {
    r#"[domains]
local = ["elsewhere.example"]

[accounts."someone@elsewhere.example"]
state = "active"
"#
    .into()
}

/// The milter lines admins paste (deploy/postfix/main.cf.milter), pointed at `milter`.
fn milter_lines(milter: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/postfix/main.cf.milter");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("bench: read {}: {e}", path.display()));
    assert!(
        text.contains("inet:127.0.0.1:8891"),
        "bench: {} no longer uses the default port",
        path.display()
    );
    let text = text.replace("inet:127.0.0.1:8891", milter);
    parse_main_cf(&text, &path.display().to_string())
        .unwrap_or_else(|e| panic!("bench: {}", e.join("\n")))
}

/// utime + stime of a process (all its threads, living and exited), in clock ticks
/// (proc(5), /proc/pid/stat fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("bench: read /proc/{pid}/stat: {e}"));
    // The command name (field 2) is in parentheses and may hold spaces; count after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the name, field 3 (state) is index 0, so field n is index n - 3.
    let field = |n: usize| -> u64 {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bench: /proc/{pid}/stat has no field {n}: {stat}"))
    };
    field(14) + field(15)
}

/// The CPU of a lab's Postfix so far, in clock ticks: its master (from the pid file in the queue
/// directory) with the children it has reaped (cutime, cstime) and those alive now. Postfix's
/// daemons are all children of the master, and each exits only into its reaping.
fn postfix_cpu_ticks(queue_dir: &Path) -> u64 {
    let master: u32 = fs::read_to_string(queue_dir.join("pid/master.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("bench: no master pid in {}", queue_dir.display()));
    let stat_fields = |pid: u32| -> Option<Vec<u64>> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        // Field 3 (state) is index 0; the state letter is not a number, so it is kept as 0.
        Some(
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect(),
        )
    };
    // proc(5): ppid is field 4, utime 14, stime 15, cutime 16, cstime 17 (index n - 3).
    let field = |f: &[u64], n: usize| f.get(n - 3).copied().unwrap_or(0);
    let mut ticks = stat_fields(master).map_or(0, |f| {
        field(&f, 14) + field(&f, 15) + field(&f, 16) + field(&f, 17)
    });
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(f) = stat_fields(pid).filter(|f| field(f, 4) == u64::from(master)) {
            ticks += field(&f, 14) + field(&f, 15);
        }
    }
    ticks
}

/// A `kB` line of /proc/pid/status (VmRSS, VmHWM), in KiB.
fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("bench: no {key} in /proc/{pid}/status"))
}

/// Clock ticks per second from `getconf CLK_TCK`, and whether that worked (else 100, the
/// value on every Linux architecture but a few old ones).
fn clock_ticks() -> (f64, bool) {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .map_or((100.0, false), |t| (t, true))
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn env_number(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("bench: {name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn postfix_version() -> String {
    Command::new("/usr/sbin/postconf")
        .args(["-d", "-h", "mail_version"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn os_name() -> String {
    fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown OS".into())
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

struct TableInfo {
    rounds: usize,
    clk_tck: (f64, bool),
    idle_rss: Option<u64>,
    load_before: String,
    load_after: String,
    took: Duration,
    handoff_bin: String,
    limits: PhysicalLimits,
    fsync_dir: PathBuf,
}

/// The medians of one configuration under one load shape.
struct Summary {
    rate: f64,
    min: f64,
    max: f64,
    accept: f64,
    cpu: Option<(f64, bool)>,
    peak_kib: Option<u64>,
    postfix_us: f64,
}

impl Summary {
    fn of(runs: &[Run]) -> Option<Summary> {
        if runs.is_empty() {
            return None;
        }
        let mut rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
        let rate = median(&mut rates);
        let mut cpu: Vec<f64> = runs.iter().filter_map(|r| r.cpu_us.map(|c| c.0)).collect();
        let exact = runs.iter().all(|r| r.cpu_us.is_none_or(|c| c.1));
        Some(Summary {
            rate,
            min: rates[0],
            max: rates[rates.len() - 1],
            accept: median(&mut runs.iter().map(|r| r.accept_rate).collect::<Vec<_>>()),
            cpu: (!cpu.is_empty()).then(|| (median(&mut cpu), exact)),
            peak_kib: runs.iter().filter_map(|r| r.peak_kib).max(),
            postfix_us: median(&mut runs.iter().map(|r| r.postfix_us).collect::<Vec<_>>()),
        })
    }

    fn row(&self, label: &str, s: &Shape, alone: Option<f64>) -> String {
        let ratio = alone.map_or("-".to_string(), |a| format!("{:.2}x", self.rate / a));
        let cpu = self.cpu.map_or("-".to_string(), |(us, exact)| {
            format!("{us:.0}{}", if exact { "" } else { "~" })
        });
        let peak = self
            .peak_kib
            .map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        format!(
            "{:<29} {:>7} {:>4} {:>5} {:>7.1} {:>11} {:>6} {:>7.1} {:>8} {:>9} {:>8.0}",
            label,
            format!("{} KiB", s.size / 1024),
            s.sessions,
            s.messages,
            self.rate,
            format!("({:.0}–{:.0})", self.min, self.max),
            ratio,
            self.accept,
            cpu,
            peak,
            self.postfix_us
        )
    }
}

fn table(
    setups: &[Setup],
    shapes: &[Shape],
    results: &[Vec<Vec<Run>>],
    wide: Option<(Shape, &[Vec<Run>])>,
    info: TableInfo,
) -> String {
    let mut out = String::new();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let now = jiff::Zoned::now().strftime("%Y-%m-%d %H:%M %Z");
    let _ = writeln!(
        out,
        "\nhandoff Postfix benchmark, {now}: {cores} CPUs ({}), {}, Postfix {}",
        cpu_model(),
        os_name(),
        postfix_version()
    );
    let _ = writeln!(
        out,
        "load average before {}, after {}; {} interleaved rounds in {:.0} s; handoff: {}",
        info.load_before,
        info.load_after,
        info.rounds,
        info.took.as_secs_f64(),
        info.handoff_bin
    );
    let (mut fsyncs, mut rtts) = (info.limits.fsync_per_s, info.limits.rtt_us);
    let _ = writeln!(
        out,
        "physical limits (median of the rounds): raw fsync {:.0}/s (4 KiB append + fdatasync, \
         one writer, in {}); loopback TCP round trip {:.1} µs (1 byte, median of 2000)",
        median(&mut fsyncs),
        info.fsync_dir.display(),
        median(&mut rtts)
    );
    let ticks = if info.clk_tck.1 {
        "getconf CLK_TCK"
    } else {
        "assumed: getconf failed"
    };
    let notes = [
        format!(
            "msg/s: messages / (smtp-source start → last delivery at the sink), median of {} \
             (min–max); ratio: to Postfix alone",
            info.rounds
        ),
        "accept: messages / smtp-source's own elapsed time (the rate smtpd accepted them)".into(),
        format!(
            "CPU µs/msg: handoff's run time per message (all threads), median; for the \
             do-nothing milter, its threads'; ~ = from utime+stime at {} ticks/s ({ticks})",
            info.clk_tck.0
        ),
        "Postfix: the lab's Postfix processes' CPU per message in µs (utime+stime of the master, \
         its live children and those it reaped), median"
            .into(),
        format!(
            "peak RSS: handoff's VmHWM during a run, max over runs{}",
            info.idle_rss.map_or(String::new(), |k| format!(
                " ({:.1} MiB idle with the policy)",
                k as f64 / 1024.0
            ))
        ),
        "do-nothing milter: the bench's own, on handoff's codec, a blocking thread per \
         connection, negotiating what handoff negotiates and answering CONTINUE"
            .into(),
        "nothing to do: the recipient is not local and the archive is off; journal on tmpfs: \
         fsync is free there; content filter: after the queue, LMTP in, SMTP back, journal \
         fsync'ed"
            .into(),
    ];
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<29} {:>7} {:>4} {:>5} {:>7} {:>11} {:>6} {:>7} {:>8} {:>9} {:>8}",
        "configuration",
        "size",
        "sess",
        "msgs",
        "msg/s",
        "(min–max)",
        "ratio",
        "accept",
        "CPU µs",
        "peak RSS",
        "Postfix"
    );
    let alone_at = setups.iter().position(|&s| s == Setup::Alone);
    let summary = |si: usize, setup: Setup| {
        setups
            .iter()
            .position(|&s| s == setup)
            .and_then(|ci| Summary::of(&results[si][ci]))
    };
    for (si, s) in shapes.iter().enumerate() {
        let alone = alone_at.and_then(|ci| Summary::of(&results[si][ci]).map(|a| a.rate));
        for (ci, setup) in setups.iter().enumerate() {
            if let Some(sum) = Summary::of(&results[si][ci]) {
                let _ = writeln!(out, "{}", sum.row(setup.label(), s, alone));
            }
        }
    }
    let mut wide_peak = None;
    if let Some((w, runs)) = wide {
        let alone = alone_at.and_then(|ci| Summary::of(&runs[ci]).map(|a| a.rate));
        for (ci, setup) in setups.iter().enumerate() {
            if let Some(sum) = Summary::of(&runs[ci]) {
                let _ = writeln!(out, "{}", sum.row(setup.label(), &w, alone));
                if *setup == Setup::Journal {
                    wide_peak = sum.peak_kib;
                }
            }
        }
    }

    // The targets, for the main load shape.
    if let Some(si) = shapes.iter().position(|s| s.key == "5k20") {
        let job = summary(si, Setup::Journal);
        let alone = summary(si, Setup::Alone);
        let idle = summary(si, Setup::Idle);
        out.push_str("\ntargets (5 KiB, 20 sessions):\n");
        if let (Some(j), Some(a)) = (&job, &alone) {
            let _ = writeln!(
                out,
                "  handoff's whole job / Postfix alone: {:.2} (target >= 0.60)",
                j.rate / a.rate
            );
        }
        if let (Some(j), Some(i)) = (&job, &idle) {
            let _ = writeln!(
                out,
                "  handoff's whole job / handoff with nothing to do: {:.2} (target >= 0.90)",
                j.rate / i.rate
            );
        }
        if let (Some(j), Some(n)) = (&job, &summary(si, Setup::NoIndexer)) {
            let _ = writeln!(
                out,
                "  handoff's whole job, indexer on / indexer off: {:.3} (target >= 0.95)",
                j.rate / n.rate
            );
        }
        if let (Some(d), Some(j)) = (summary(si, Setup::Dkim), &job) {
            let _ = writeln!(
                out,
                "  handoff's whole job with DKIM signing / without: {:.2} (target >= 0.95)",
                d.rate / j.rate
            );
        }
        if let Some((us, _)) = job.as_ref().and_then(|j| j.cpu) {
            let _ = writeln!(
                out,
                "  handoff's CPU per message: {us:.0} µs (target <= 100)"
            );
        }
    }
    if let Some(k) = wide_peak {
        let _ = writeln!(
            out,
            "  handoff's peak RSS with 100 sessions: {:.1} MiB (target <= 50)",
            k as f64 / 1024.0
        );
    }
    out
}
