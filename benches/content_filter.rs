//! Postfix alone against Postfix with handoff as its after-queue content filter (LMTP, journal
//! on, fsync'ed), in the same run on the same machine: smtp-source with 20 sessions sends 1000
//! messages of 5 KiB, and the clock stops when the lab's sink has received all of them.
//! Each configuration runs `ROUNDS` times, alternating; the medians are compared.
//!
//! Run: `cargo bench --bench content_filter` (as root: the lab runs a private Postfix).
//! The requirement is a ratio (with handoff ÷ alone) of at least 0.5; the target is 0.45 or
//! better on a busy 2-core machine, where Postfix itself queues every message twice.

#[path = "../tests/daemon.rs"]
#[allow(dead_code)]
mod daemon;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use daemon::{Daemon, free_port};
use support::{Lab, LabConfig};

const SESSIONS: usize = 20;
const MESSAGES: usize = 1000;
const SIZE: usize = 5 * 1024;
const ROUNDS: usize = 3;

const POLICY: &str = r#"
[domains]
local = ["corp.example"]

[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false
"#;

/// Sends the load and returns messages per second, end to end (until the sink has them all).
fn run(lab: &Lab) -> f64 {
    lab.sink().take();
    let started = Instant::now();
    let status = Command::new("/usr/sbin/smtp-source")
        .args(["-s", &SESSIONS.to_string()])
        .args(["-m", &MESSAGES.to_string()])
        .args(["-l", &SIZE.to_string()])
        .args(["-f", "sender@example.net", "-t", "alice@corp.example"])
        .arg(lab.smtp_addr().to_string())
        .status()
        .expect("smtp-source (Debian package postfix)");
    assert!(status.success(), "smtp-source failed: {status}");
    let got = lab.sink().wait_for(MESSAGES, Duration::from_secs(300));
    let elapsed = started.elapsed();
    assert!(got.len() >= MESSAGES, "only {} delivered", got.len());
    MESSAGES as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; anything else (cargo test --benches) only checks it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let alone = Lab::start(LabConfig::default());
    let reinject = free_port();
    let d = Daemon::start_content_filter(POLICY, &format!("127.0.0.1:{reinject}"));
    let filtered = Lab::start(
        LabConfig::default().content_filter(d.lmtp_port.expect("lmtp listener"), reinject),
    );
    // Warm up both (process pools, connection caches, page cache).
    let _ = run(&alone);
    let _ = run(&filtered);
    let (mut a, mut f) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        a.push(run(&alone));
        f.push(run(&filtered));
        println!(
            "round {round}: Postfix alone {:.0} msg/s, with handoff {:.0} msg/s",
            a[round - 1],
            f[round - 1]
        );
    }
    let (a, f) = (median(a), median(f));
    let ratio = f / a;
    let records = support_journal_records(&d);
    println!(
        "content filter: {SESSIONS} sessions, {MESSAGES} messages of {SIZE} bytes, median of {ROUNDS}:\n\
         Postfix alone        {a:7.0} msg/s\n\
         with handoff (LMTP)  {f:7.0} msg/s\n\
         ratio                {ratio:7.2}  (limit 0.50, target >= 0.45)\n\
         journal records      {records}"
    );
}

/// Journal records written, from the daemon's metrics.
fn support_journal_records(d: &Daemon) -> String {
    d.metric("handoff_journal_records_total")
        .map_or_else(|| "?".into(), |v| format!("{v:.0}"))
}
