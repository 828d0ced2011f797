//! Postfix throughput with and without handoff as its milter, measured through a real private
//! Postfix (the test lab in tests/support) and printed as one table. Run it with `bench/run`
//! (as root, with the packages tests/setup.sh installs); `cargo bench --bench postfix` runs it
//! without building the release binary first.
//!
//! Each configuration is a lab of its own, all started once and kept running:
//! - "Postfix alone": no milter; Postfix relays to the lab's capturing sink;
//! - "Postfix alone → smtp-sink": the same, relaying to Postfix's smtp-sink(1) instead, as a
//!   check that the lab's sink (threads in this process, copying every message) does not limit
//!   Postfix: the two rows should agree within the noise;
//! - "Postfix + handoff (TCP)": the lines of deploy/postfix/main.cf.milter pointing at the
//!   release build of `handoff serve` (or `$HANDOFF_BIN`, to compare two builds) on 127.0.0.1,
//!   with a policy of a few thousand accounts in which the test recipient is a departed account
//!   with keep_copy, so that every message is rewritten (DELRCPT, ADDRCPT of the successor,
//!   ADDHDR of the loop marker);
//! - "same, journal off": the TCP setup with `[archive] enabled = false`, so the difference is
//!   what the fsync'ed journal costs;
//! - "Postfix + handoff (unix)": the same with the milter on a unix socket, as
//!   policy/large-org.toml deploys it.
//!
//! A run is one smtp-source(1) invocation against a lab's smtpd. Throughput is messages divided
//! by the time from starting smtp-source to the last delivery arriving at the sink; smtp-source's
//! own elapsed time gives the accept rate. Runs are interleaved (every configuration once per
//! round, the order rotating between rounds) so that the load of a shared machine falls on all
//! configurations alike, and the table shows the median and the spread of the rounds.
//!
//! Every run is checked: every message arrived, none twice, the queue is empty, and with
//! handoff every message reached both the departed account and its successor and carries the
//! loop marker. A run that fails a check stops the benchmark.
//!
//! Knobs (environment): `HANDOFF_BENCH_ROUNDS` (default 3), `HANDOFF_BENCH_SCALE` (a factor
//! for the message counts, default 1), `HANDOFF_BIN`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

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

#[derive(Clone, Copy)]
struct Scenario {
    size: usize,
    sessions: usize,
    messages: usize,
}

/// The load shapes: the main one first, then one session at a time, then large messages.
const SCENARIOS: [Scenario; 3] = [
    Scenario {
        size: 5 * 1024,
        sessions: 20,
        messages: 1000,
    },
    Scenario {
        size: 5 * 1024,
        sessions: 1,
        messages: 300,
    },
    Scenario {
        size: 100 * 1024,
        sessions: 20,
        messages: 500,
    },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Alone,
    AloneSmtpSink,
    HandoffTcp,
    /// The same as `HandoffTcp` with `[archive] enabled = false`: what durability costs.
    HandoffTcpNoJournal,
    HandoffUnix,
}

/// In table order; "Postfix alone" first, it is what the ratios divide by.
const SETUPS: [Setup; 5] = [
    Setup::Alone,
    Setup::AloneSmtpSink,
    Setup::HandoffTcp,
    Setup::HandoffTcpNoJournal,
    Setup::HandoffUnix,
];

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Alone => "Postfix alone",
            Setup::AloneSmtpSink => "Postfix alone → smtp-sink",
            Setup::HandoffTcp => "Postfix + handoff (TCP)",
            Setup::HandoffTcpNoJournal => "  same, journal off",
            Setup::HandoffUnix => "Postfix + handoff (unix)",
        }
    }

    fn rewrites(self) -> bool {
        matches!(
            self,
            Setup::HandoffTcp | Setup::HandoffTcpNoJournal | Setup::HandoffUnix
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
    /// handoff's user+system CPU per message, in µs.
    cpu_us: Option<f64>,
    /// handoff's peak RSS during the run, in KiB.
    peak_kib: Option<u64>,
}

fn main() {
    let rounds = env_number("HANDOFF_BENCH_ROUNDS", 3.0).max(1.0) as usize;
    let scale = env_number("HANDOFF_BENCH_SCALE", 1.0);
    let scenarios: Vec<Scenario> = SCENARIOS
        .iter()
        .map(|s| Scenario {
            messages: ((s.messages as f64 * scale).round() as usize).max(1),
            ..*s
        })
        .collect();
    let clk_tck = clock_ticks();
    let load_before = load_average();

    let bin = handoff_bin();
    let policy = policy();
    let smtp_sink = SmtpSink::start();
    let targets: Vec<Target> = SETUPS
        .iter()
        .map(|&setup| Target::start(setup, &bin, &policy, &smtp_sink))
        .collect();
    let idle_rss = targets
        .iter()
        .find_map(|t| t.handoff.as_ref())
        .map_or(0, |h| proc_status_kib(h.pid(), "VmRSS"));

    // Warm-up, not counted: starts Postfix's processes and checks every setup end to end.
    let warm_up = Scenario {
        size: 5 * 1024,
        sessions: 20,
        messages: 100,
    };
    for target in &targets {
        target.run(warm_up, clk_tck.0);
    }

    let started = Instant::now();
    let mut results: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); SETUPS.len()]; scenarios.len()];
    for round in 0..rounds {
        for (si, scenario) in scenarios.iter().enumerate() {
            for k in 0..SETUPS.len() {
                let ci = (k + round) % SETUPS.len();
                let run = targets[ci].run(*scenario, clk_tck.0);
                eprintln!(
                    "bench: round {}/{rounds}: {:<25} {:>3} KiB x{:<2} {:>7.1} msg/s \
                     (accept {:.1})",
                    round + 1,
                    SETUPS[ci].label(),
                    scenario.size / 1024,
                    scenario.sessions,
                    run.rate,
                    run.accept_rate
                );
                results[si][ci].push(run);
            }
        }
    }

    print!(
        "{}",
        table(
            &scenarios,
            &results,
            TableInfo {
                rounds,
                clk_tck,
                idle_rss,
                load_before,
                load_after: load_average(),
                took: started.elapsed(),
                handoff_bin: bin.display().to_string(),
            }
        )
    );
}

/// One configuration: its lab and, with handoff, its handoff process.
struct Target<'a> {
    setup: Setup,
    lab: Lab,
    handoff: Option<Handoff>,
    smtp_sink: &'a SmtpSink,
}

impl<'a> Target<'a> {
    fn start(setup: Setup, bin: &Path, policy: &str, smtp_sink: &'a SmtpSink) -> Target<'a> {
        let handoff = match setup {
            Setup::Alone | Setup::AloneSmtpSink => None,
            Setup::HandoffTcp => Some(Handoff::start(bin, policy, false)),
            Setup::HandoffTcpNoJournal => {
                let off = format!("[archive]\nenabled = false\n\n{policy}");
                Some(Handoff::start(bin, &off, false))
            }
            Setup::HandoffUnix => Some(Handoff::start(bin, policy, true)),
        };
        let mut config = LabConfig::default();
        if setup == Setup::AloneSmtpSink {
            config = config.main_cf_line(format!(
                "transport_maps = inline:{{ *=smtp:[127.0.0.1]:{} }}",
                smtp_sink.port
            ));
        }
        if let Some(h) = &handoff {
            for line in milter_lines(&h.postfix_milter) {
                config = config.main_cf_line(line);
            }
        }
        Target {
            setup,
            lab: Lab::start(config),
            handoff,
            smtp_sink,
        }
    }

    /// One smtp-source run, timed to the last delivery, then checked.
    fn run(&self, s: Scenario, clk_tck: f64) -> Run {
        let (setup, lab) = (self.setup, &self.lab);
        let pid = self.handoff.as_ref().map(Handoff::pid);
        assert_eq!(lab.sink().count(), 0, "lab sink not empty before a run");
        let external_before = self.smtp_sink.count();
        let delivered = |n: usize, timeout: Duration| match setup {
            Setup::AloneSmtpSink => {
                self.smtp_sink.wait_for_count(external_before + n, timeout) - external_before
            }
            _ => lab.sink().wait_for_count(n, timeout),
        };
        if let Some(pid) = pid {
            // Resets VmHWM to the current RSS (proc(5), /proc/pid/clear_refs), so the peak
            // is this run's.
            fs::write(format!("/proc/{pid}/clear_refs"), "5")
                .unwrap_or_else(|e| panic!("bench: reset the peak RSS of handoff: {e}"));
        }
        let cpu_before = pid.map(cpu_ticks);

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
        let cpu = pid.map(cpu_ticks);
        let peak_kib = pid.map(|pid| proc_status_kib(pid, "VmHWM"));

        thread::sleep(SETTLE);
        self.check(s, delivered(s.messages, Duration::ZERO));
        let cpu_us = cpu
            .zip(cpu_before)
            .map(|(after, before)| (after - before) as f64 / clk_tck * 1e6 / s.messages as f64);
        Run {
            rate: s.messages as f64 / delivered_in.as_secs_f64(),
            accept_rate: s.messages as f64 / accepted_in.as_secs_f64(),
            cpu_us,
            peak_kib,
        }
    }

    /// Every message arrived once, nothing is left in the queue, and with handoff every
    /// message was rewritten. Empties the lab's sink for the next run.
    fn check(&self, s: Scenario, count: usize) {
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

/// `handoff serve` with the benchmark's policy, logging at `info` as in production (one line
/// per message), its files in a fresh directory under /tmp. Killed on drop.
struct Handoff {
    child: Child,
    dir: tempfile::TempDir,
    /// Where Postfix finds it: `inet:127.0.0.1:PORT` or `unix:PATH`.
    postfix_milter: String,
}

impl Handoff {
    fn start(bin: &Path, policy: &str, unix: bool) -> Handoff {
        let dir = tempfile::Builder::new()
            .prefix("handoff-bench-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("bench: cannot create a directory in /tmp: {e}"));
        let socket = dir.path().join("milter.sock");
        let port = free_port();
        let (listen, postfix_milter) = if unix {
            let path = socket.display();
            (format!("unix:{path}"), format!("unix:{path}"))
        } else {
            (
                format!("127.0.0.1:{port}"),
                format!("inet:127.0.0.1:{port}"),
            )
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
milter = "{listen}"
# Not handoff's default port: two instances run at once.
metrics = "127.0.0.1:{metrics_port}"

[storage]
journal = "journal"
state = "state"

{policy}"#,
            metrics_port = free_port()
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
            postfix_milter,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = if unix {
                UnixStream::connect(&socket).is_ok()
            } else {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            };
            if up {
                break;
            }
            if let Ok(Some(status)) = handoff.child.try_wait() {
                panic!("bench: handoff exited ({status}):\n{}", handoff.log());
            }
            assert!(
                Instant::now() < deadline,
                "bench: handoff did not listen within 20 s:\n{}",
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
            "bench: handoff {} (pid {}) on {}, log {}",
            bin.display(),
            handoff.pid(),
            handoff.postfix_milter,
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

fn median(values: &mut [f64]) -> f64 {
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
    idle_rss: u64,
    load_before: String,
    load_after: String,
    took: Duration,
    handoff_bin: String,
}

fn table(scenarios: &[Scenario], results: &[Vec<Vec<Run>>], info: TableInfo) -> String {
    let mut out = String::new();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let now = jiff::Zoned::now().strftime("%Y-%m-%d %H:%M %Z");
    let _ = writeln!(
        out,
        "\nhandoff Postfix benchmark, {now}: {cores} CPUs ({}), Postfix {}",
        cpu_model(),
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
    let ticks = if info.clk_tck.1 {
        "getconf CLK_TCK"
    } else {
        "assumed: getconf failed"
    };
    let notes = [
        format!(
            "msg/s: messages / (smtp-source start → last delivery at the sink), median of {}, \
             (min–max); ratio: to Postfix alone",
            info.rounds
        ),
        "accept: messages / smtp-source's own elapsed time (the rate smtpd accepted them)".into(),
        format!(
            "CPU: handoff's utime+stime per message, median ({} ticks/s, {ticks})",
            info.clk_tck.0
        ),
        format!(
            "peak RSS: handoff's VmHWM during a run, max over runs ({:.1} MiB idle with the policy)",
            info.idle_rss as f64 / 1024.0
        ),
    ];
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<26} {:>7} {:>4} {:>5} {:>7} {:>13} {:>6} {:>7} {:>10} {:>9}",
        "configuration",
        "size",
        "sess",
        "msgs",
        "msg/s",
        "(min–max)",
        "ratio",
        "accept",
        "CPU µs/msg",
        "peak RSS"
    );
    for (si, s) in scenarios.iter().enumerate() {
        let alone = median(&mut results[si][0].iter().map(|r| r.rate).collect::<Vec<_>>());
        for (ci, setup) in SETUPS.iter().enumerate() {
            let runs = &results[si][ci];
            let mut rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
            let rate = median(&mut rates);
            let spread = format!(
                "({:.0}–{:.0})",
                rates.first().copied().unwrap_or(0.0),
                rates.last().copied().unwrap_or(0.0)
            );
            let accept = median(&mut runs.iter().map(|r| r.accept_rate).collect::<Vec<_>>());
            let mut cpu: Vec<f64> = runs.iter().filter_map(|r| r.cpu_us).collect();
            let cpu = if cpu.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}", median(&mut cpu))
            };
            let peak = runs
                .iter()
                .filter_map(|r| r.peak_kib)
                .max()
                .map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
            let _ = writeln!(
                out,
                "{:<26} {:>7} {:>4} {:>5} {:>7.1} {:>13} {:>5.2}x {:>7.1} {:>10} {:>9}",
                setup.label(),
                format!("{} KiB", s.size / 1024),
                s.sessions,
                s.messages,
                rate,
                spread,
                rate / alone,
                accept,
                cpu,
                peak
            );
        }
    }
    out
}
