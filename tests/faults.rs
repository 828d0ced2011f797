//! Fault injection with loss accounting (see `loss.rs`: accepted, journaled and delivered ids;
//! lost must be 0). Duplicates are reported, not failed: a kill between the journal's fsync and
//! Postfix reading the milter's answer makes Postfix answer 4xx, the sender retries, and the
//! retry is journaled again. That is the at-least-once contract.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use handoff::journal::record::MessageMeta;
use handoff::journal::{Kind, reader};

use crate::daemon::{Daemon, wait_for};
use crate::e2e_milter::milter_lines;
use crate::loss::{
    Account, Outcome, StopOnDrop, delivered_ids, id_of, journaled_ids, message,
    send_until_accepted, try_send,
};
use crate::support::{Lab, LabConfig};

const POLICY: &str = r#"
[domains]
local = ["corp.example"]

[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false
"#;

/// A small deterministic generator (xorshift64*): the seed is printed so that a failing run
/// can be repeated with `HANDOFF_FAULT_SEED`.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("HANDOFF_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1;
        eprintln!("faults: HANDOFF_FAULT_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// A lab whose smtpd runs `d` as its milter, as `deploy/postfix/main.cf.milter` says.
pub fn lab_for(d: &Daemon) -> Lab {
    let mut config = LabConfig::default();
    for line in milter_lines(d.milter_port) {
        config = config.main_cf_line(line);
    }
    Lab::start(config)
}

/// handoff as a milter (`milter_default_action = tempfail`), senders sending all along, and
/// handoff killed with SIGKILL at random moments and restarted at once. Every message the
/// client saw accepted is in the journal and at the sink.
#[test]
fn kill_9_under_load_loses_nothing() {
    let kills: usize = std::env::var("HANDOFF_FAULT_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut rng = Rng::from_env();
    let mut d = Daemon::start(POLICY);
    let lab = lab_for(&d);
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let accepted = Mutex::new(Vec::new());
    let attempts = AtomicUsize::new(0);
    const SENDERS: usize = 3;
    std::thread::scope(|s| {
        for t in 0..SENDERS {
            let (lab, stop, accepted, attempts) = (&lab, &stop, &accepted, &attempts);
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("k{t}-{n}");
                    // Alternate a pass-through and a rewritten recipient.
                    let rcpt = if n % 2 == 0 {
                        "alice@corp.example"
                    } else {
                        "gone@corp.example"
                    };
                    attempts.fetch_add(send_until_accepted(lab, rcpt, &id), Ordering::Relaxed);
                    accepted.lock().unwrap().push(id);
                    n += 1;
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        for _ in 0..kills {
            std::thread::sleep(Duration::from_millis(50 + rng.below(500)));
            d.kill();
            d.spawn(&[]);
        }
        // Some mail after the last restart, then stop.
        std::thread::sleep(Duration::from_millis(1000));
    });
    let accepted = accepted.into_inner().unwrap();
    let attempts = attempts.into_inner();
    let account = Account::settle(&lab, &d.journal_dir(), accepted, Duration::from_secs(60));
    account.report(
        "faults: kill_9_under_load",
        &format!(
            ", kills {kills}, attempts {attempts}, {:.0?}",
            started.elapsed()
        ),
    );
    assert!(account.accepted.len() > kills, "mail kept flowing");
    let (code, out, err) = d.cli(&["archive", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Sends `id` once and returns how it ended.
fn send_once(lab: &Lab, id: &str) -> Outcome {
    try_send(
        lab,
        "sender@example.net",
        "alice@corp.example",
        &message(id),
    )
}

/// `strace` attached to a running process, making its `fdatasync` calls fail with EIO; detached
/// (SIGTERM, so strace lets go of the threads cleanly) when dropped.
struct FailFsync(std::process::Child);

impl FailFsync {
    fn attach(pid: u32) -> FailFsync {
        let child = std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync"])
            .args(["-e", "inject=fdatasync:error=EIO", "-p", &pid.to_string()])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("strace is installed (tests/setup.sh)");
        // Attached once every thread of the process has a tracer.
        wait_for(Duration::from_secs(10), "strace to attach", || {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
            tasks
                .map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
                .all(|s| {
                    s.is_some_and(|s| {
                        s.lines()
                            .any(|l| l.starts_with("TracerPid:") && !l.ends_with("\t0"))
                    })
                })
                .then_some(())
        });
        FailFsync(child)
    }
}

impl Drop for FailFsync {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// fsync fails in the running daemon (strace's syscall fault injection: every `fdatasync`
/// returns EIO): the message gets a 4xx, the error is counted, nothing accepted is lost, and
/// once fsync works again the sender's retry is accepted and the chain verifies.
#[test]
fn failing_fsync_answers_4xx_and_loses_nothing() {
    let d = Daemon::start(POLICY);
    let lab = lab_for(&d);
    let mut accepted = Vec::new();
    for i in 0..3 {
        let id = format!("f-before-{i}");
        assert_eq!(send_once(&lab, &id), Outcome::Accepted, "{id}");
        accepted.push(id);
    }
    let errors_before = d.metric("handoff_journal_errors_total").unwrap_or(0.0);
    let refused = {
        let _fault = FailFsync::attach(d.pid());
        let mut refused = Vec::new();
        for i in 0..3 {
            let id = format!("f-during-{i}");
            let outcome = send_once(&lab, &id);
            assert_eq!(outcome, Outcome::Retry, "{id} while fsync fails");
            refused.push(id);
        }
        let errors = d.metric("handoff_journal_errors_total").unwrap_or(0.0);
        assert!(
            errors > errors_before,
            "journal errors counted: {errors_before} -> {errors}"
        );
        refused
    };
    // The fault is gone: the senders' retries go through, and new mail too.
    for id in &refused {
        send_until_accepted(&lab, "alice@corp.example", id);
        accepted.push(id.clone());
    }
    for i in 0..3 {
        let id = format!("f-after-{i}");
        assert_eq!(send_once(&lab, &id), Outcome::Accepted, "{id}");
        accepted.push(id);
    }
    let account = Account::settle(&lab, &d.journal_dir(), accepted, Duration::from_secs(30));
    account.report(
        "faults: failing_fsync",
        &format!(
            ", refused while failing {}, journal errors {}",
            refused.len(),
            d.metric("handoff_journal_errors_total").unwrap_or(0.0)
        ),
    );
    assert!(
        account.journaled.values().all(|n| *n == 1),
        "a message that got a 4xx is not in the journal: {:?}",
        account.journaled
    );
    let (code, out, err) = d.cli(&["archive", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Per-id record counts of every record but the last (`ids`: one entry per record, in order).
fn journaled_ids_before_cut(ids: &[Option<String>]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for id in ids[..ids.len() - 1].iter().flatten() {
        *out.entry(id.clone()).or_default() += 1;
    }
    out
}

/// handoff stopped in the middle of writing its last record (simulated: the last segment is cut
/// in the middle of its last record while handoff is down) starts again, cuts the torn tail,
/// keeps every record before it, and the chain verifies. (A real torn record is one whose fsync
/// never returned, so Postfix never got an accept for it; here the cut record's message was
/// accepted, which is why this test checks the journal only.)
#[test]
fn a_torn_journal_tail_is_cut_on_start() {
    let mut d = Daemon::start(POLICY);
    let lab = lab_for(&d);
    let mut accepted = Vec::new();
    for i in 0..5 {
        let id = format!("t-{i}");
        assert_eq!(send_once(&lab, &id), Outcome::Accepted, "{id}");
        accepted.push(id);
    }
    d.kill();
    let journal = d.journal_dir();
    let mut last = None;
    let mut all_ids = Vec::new();
    reader::for_each_record(&journal, |info, _| {
        last = Some((info.id.segment, info.id.offset, info.end()));
        let id = (info.header.kind == Kind::Message)
            .then(|| serde_json::from_slice::<MessageMeta>(&info.meta).unwrap())
            .and_then(|m| m.message_id.as_deref().and_then(id_of).map(str::to_string));
        all_ids.push(id);
        Ok(())
    })
    .unwrap();
    let (segment, offset, end) = last.expect("records in the journal");
    let path = handoff::journal::segment::segment_path(&journal, segment);
    let torn_at = offset + (end - offset) / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(torn_at)
        .unwrap();
    // The reader refuses a torn file, so what must survive is the journal less its last record.
    let before = journaled_ids_before_cut(&all_ids);
    eprintln!(
        "faults: torn tail: cut {} at {torn_at} (record {offset}..{end})",
        path.display()
    );

    d.spawn(&[]);
    assert!(d.log_text().contains("cut a torn tail"), "{}", d.log_text());
    let (code, out, err) = d.cli(&["archive", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    // Every record before the torn one is still there; new mail is journaled after it.
    let after_start = journaled_ids(&journal);
    assert_eq!(after_start, before);
    assert_eq!(send_once(&lab, "t-after"), Outcome::Accepted);
    let ids = journaled_ids(&journal);
    assert_eq!(ids.len(), before.len() + 1, "{ids:?}");
    assert!(ids.contains_key("t-after"));
    assert_eq!(d.cli(&["archive", "verify"]).0, 0);
    eprintln!(
        "faults: torn tail: {} records kept, {} cut, 1 written after",
        before.len(),
        accepted.len() - before.len()
    );
}

/// handoff restarted on a journal damaged in the middle (a flipped byte in a record that valid
/// records follow: not a torn tail, so nothing may be cut) refuses to start and names the
/// segment and offset. Meanwhile Postfix (`milter_default_action = tempfail`) answers 4xx and
/// the senders keep their mail. The operator moves the damaged segment aside, as the README says;
/// handoff starts a new chain, and the mail held meanwhile is accepted, journaled and delivered:
/// 0 lost. The moved segment keeps the evidence: `archive verify` on it names the damage.
#[test]
fn a_damaged_journal_stops_handoff_and_loses_nothing() {
    let mut d = Daemon::start(POLICY);
    let lab = lab_for(&d);
    let before: Vec<String> = (0..5).map(|i| format!("dm-{i}")).collect();
    for id in &before {
        assert_eq!(send_once(&lab, id), Outcome::Accepted, "{id}");
    }
    d.kill();
    let journal = d.journal_dir();
    let mut messages = Vec::new();
    reader::for_each_record(&journal, |info, _| {
        if info.header.kind == Kind::Message {
            messages.push((info.id.segment, info.id.offset, info.end()));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(messages.len(), before.len());
    // The second message's record, in its middle: three valid records follow it.
    let (segment, offset, end) = messages[1];
    let path = handoff::journal::segment::segment_path(&journal, segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = usize::try_from(offset + (end - offset) / 2).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    // handoff refuses to start, and says where.
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["serve", "--config"])
        .arg(d.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(
        Duration::from_secs(10),
        "handoff to refuse to start",
        || serve.try_wait().unwrap(),
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !status.success(),
        "handoff started on a damaged journal:\n{err}"
    );
    let place = format!("journal damaged at segment {segment} offset {offset}");
    assert!(err.contains(&place), "{err}");

    // While it is down Postfix defers: the senders keep their mail.
    let during: Vec<String> = (0..3).map(|i| format!("dm-held-{i}")).collect();
    for id in &during {
        assert_eq!(send_once(&lab, id), Outcome::Retry, "{id}");
    }

    // The operator's way out: move the damaged segment aside and start again.
    let aside = d.path("journal-damaged");
    std::fs::create_dir(&aside).unwrap();
    std::fs::rename(&path, aside.join(path.file_name().unwrap())).unwrap();
    d.spawn(&[]);
    let mut attempts = 0;
    for id in &during {
        attempts += send_until_accepted(&lab, "alice@corp.example", id);
    }
    let account = Account::settle(&lab, &journal, during.clone(), Duration::from_secs(30));
    account.report(
        "faults: damaged journal",
        &format!(
            " ({attempts} attempts after the restart, each held message deferred once before it)"
        ),
    );
    assert!(account.lost().is_empty());
    // The mail accepted before the damage was delivered, and its records stay in the moved
    // segment, where verify names the damaged one; the new chain verifies.
    let delivered = delivered_ids(&lab);
    for id in &before {
        assert!(delivered.contains_key(id), "{id} not delivered");
    }
    let aside_arg = aside.to_str().unwrap();
    let (code, out, err) = d.cli(&["archive", "verify", "--journal", aside_arg]);
    assert_ne!(code, 0, "the damaged segment verified:\n{out}{err}");
    assert!(
        format!("{out}{err}").contains(&format!("offset {offset}")),
        "{out}{err}"
    );
    let (code, out, err) = d.cli(&["archive", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The main policy file of the reload test: listeners and storage as the harness picked them,
/// and the accounts in an included file that the test breaks and mends.
fn reload_config(d: &Daemon) -> String {
    format!(
        "include = [\"accounts.toml\"]\n[listen]\nmilter = \"127.0.0.1:{}\"\n\
         metrics = \"127.0.0.1:{}\"\n[storage]\njournal = \"journal\"\nstate = \"state\"\n\
         [domains]\nlocal = [\"corp.example\"]\n",
        d.milter_port, d.metrics_port
    )
}

/// A valid accounts file; `n` adds an active account so that each version differs.
fn valid_accounts(n: usize) -> String {
    format!(
        "[accounts.\"dis@corp.example\"]\nstate = \"disabled\"\n\n\
         [accounts.\"gone@corp.example\"]\nstate = \"departed\"\nsuccessor = \"cs@corp.example\"\n\
         keep_copy = false\n\n[accounts.\"v{n}@corp.example\"]\nstate = \"active\"\n"
    )
}

/// Policy reloads while mail flows: broken versions (syntax error, alias cycle, unknown
/// template, the included file deleted, the included file replaced by a directory — root reads
/// any file whatever its mode, so "cannot read" is a directory) alternate with valid ones. No
/// message gets a wrong decision: the disabled account is always refused, the departed one
/// always forwarded; each refused reload is counted and each valid one applied. Reloads are
/// driven by SIGHUP with the watcher off, so that each write is exactly one reload.
#[test]
fn policy_reloads_under_load_never_give_a_wrong_decision() {
    let mut d = Daemon::prepare(POLICY, None, None);
    let accounts = d.path("accounts.toml");
    std::fs::write(&accounts, valid_accounts(0)).unwrap();
    std::fs::write(d.config_path(), reload_config(&d)).unwrap();
    d.spawn(&["--no-watch"]);
    let lab = lab_for(&d);
    let reloads = |result: &str| {
        d.metric(&format!(
            "handoff_policy_reloads_total{{result=\"{result}\"}}"
        ))
        .unwrap_or(0.0)
    };
    let cycle = "[aliases]\n\"a@corp.example\" = [\"b@corp.example\"]\n\
                 \"b@corp.example\" = [\"a@corp.example\"]\n";
    let template = "[accounts.\"gone@corp.example\"]\nstate = \"departed\"\n\
                    successor = \"cs@corp.example\"\nautoreply = \"nosuch\"\n";
    let main_config = std::fs::read_to_string(d.config_path()).unwrap();
    let broken: [(&str, &dyn Fn()); 6] = [
        ("syntax error", &|| {
            std::fs::write(&accounts, "[accounts.\"dis@corp.example\"\nstate = \n").unwrap()
        }),
        ("alias cycle", &|| {
            std::fs::write(&accounts, format!("{}{cycle}", valid_accounts(0))).unwrap()
        }),
        ("unknown template", &|| {
            std::fs::write(&accounts, template).unwrap()
        }),
        ("file deleted", &|| std::fs::remove_file(&accounts).unwrap()),
        // A save truncated to zero bytes: refused, or every account would be dropped.
        ("empty policy file", &|| {
            std::fs::write(d.config_path(), "").unwrap()
        }),
        ("a directory", &|| {
            std::fs::remove_file(&accounts).unwrap();
            std::fs::create_dir(&accounts).unwrap()
        }),
    ];
    let stop = AtomicBool::new(false);
    let accepted = Mutex::new(Vec::new());
    let refused_ok = AtomicUsize::new(0);
    let rounds: usize = 4;
    let (mut applied_want, mut refused_want) = (0.0, 0.0);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (lab, stop, accepted, refused_ok) = (&lab, &stop, &accepted, &refused_ok);
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("r{t}-{n}");
                    let msg = message(&id);
                    let from = "sender@example.net";
                    match try_send(lab, from, "dis@corp.example", &msg) {
                        Outcome::Refused(r) if r.starts_with("550 5.2.1") => {
                            refused_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("{id} to the disabled account: {other:?}"),
                    }
                    let outcome = try_send(lab, from, "gone@corp.example", &msg);
                    assert_eq!(outcome, Outcome::Accepted, "{id} to the departed account");
                    accepted.lock().unwrap().push(id);
                    n += 1;
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        for _ in 0..rounds {
            for (what, breakit) in &broken {
                breakit();
                d.signal("HUP");
                refused_want += 1.0;
                wait_for(Duration::from_secs(10), what, || {
                    (reloads("refused") == refused_want).then_some(())
                });
                std::thread::sleep(Duration::from_millis(100));
                if accounts.is_dir() {
                    std::fs::remove_dir(&accounts).unwrap();
                }
                std::fs::write(d.config_path(), &main_config).unwrap();
                // A version that differs from the one in force, so that it is applied rather
                // than found unchanged.
                std::fs::write(&accounts, valid_accounts(applied_want as usize + 1)).unwrap();
                d.signal("HUP");
                applied_want += 1.0;
                wait_for(Duration::from_secs(10), "a valid policy applied", || {
                    (reloads("applied") == applied_want).then_some(())
                });
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    assert_eq!(reloads("refused"), refused_want);
    assert_eq!(reloads("applied"), applied_want);
    assert_eq!(
        d.metric("handoff_policy_generation"),
        Some(applied_want + 1.0)
    );
    let accepted = accepted.into_inner().unwrap();
    let account = Account::settle(&lab, &d.journal_dir(), accepted, Duration::from_secs(30));
    // Forwarded, never delivered to the departed address itself.
    for m in lab.sink().all() {
        assert_eq!(m.rcpt_to, ["cs@corp.example"], "{:?}", m.header("Subject"));
    }
    account.report(
        "faults: policy_reloads",
        &format!(
            ", refused at RCPT {}, reloads refused {refused_want} applied {applied_want}",
            refused_ok.into_inner()
        ),
    );
}
