//! Auto-replies end to end: a private Postfix whose smtpd runs handoff as its milter, and whose
//! `deploy/postfix/master.cf.relay` listener (no milters) takes handoff's replies; the lab's sink
//! receives both the forwarded mail and the replies. Redis, where a test needs it, is a private
//! `redis-server` on a free loopback port, killed when the test ends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mail_parser::MessageParser;

use crate::daemon::{Daemon, free_port, wait_for};
use crate::e2e_milter::milter_lines;
use crate::support::{Delivered, Lab, LabConfig, SmtpClient, send};

const TIMEOUT: Duration = Duration::from_secs(30);

/// `{relay}` is the relay listener's port; `{store}` the `[autoreply] store` line, if any.
const POLICY: &str = r#"
[relay]
address = "127.0.0.1:{relay}"

[domains]
local = ["corp.example"]

[autoreply]
days = 7
{store}

[templates.departed]
subject = "{{name}} has left / {{name}} 已离职 (re: {{original_subject}})"
body = """
{{name}} no longer works here. Please write to {{successor}}.
{{name}} 已离职，请联系 {{successor}}。
"""

[accounts."gone@corp.example"]
state = "departed"
name = "Gone Person"
successor = "cs@corp.example"
keep_copy = false
autoreply = "departed"

[accounts."a@corp.example"]
state = "departed"
successor = "a-next@example.net"
keep_copy = false
autoreply = "departed"

[accounts."b@corp.example"]
state = "departed"
successor = "b-next@example.net"
keep_copy = false
autoreply = "departed"
"#;

fn policy(relay_port: u16, store: Option<&str>) -> String {
    POLICY
        .replace("{relay}", &relay_port.to_string())
        .replace(
            "{store}",
            &store.map_or(String::new(), |s| format!("store = \"{s}\"")),
        )
        .replace("{{", "{")
        .replace("}}", "}")
}

/// The relay listener admins paste into master.cf, on this test's port.
pub fn relay_entry(port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/postfix/master.cf.relay");
    let text = std::fs::read_to_string(&path).unwrap();
    let entry: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    let entry = entry.join("\n");
    assert!(
        entry.starts_with("127.0.0.1:10025 "),
        "the documented entry uses the default relay port: {entry}"
    );
    entry.replace("127.0.0.1:10025", &format!("127.0.0.1:{port}"))
}

/// handoff and a lab in front of it, replies going back through the relay listener.
struct Setup {
    daemon: Daemon,
    lab: Lab,
}

impl Setup {
    fn start(store: Option<&str>) -> Setup {
        let relay = free_port();
        let daemon = Daemon::start(&policy(relay, store));
        let mut config = LabConfig::default().master_cf_entry(relay_entry(relay));
        for line in milter_lines(daemon.milter_port) {
            config = config.main_cf_line(line);
        }
        Setup {
            lab: Lab::start(config),
            daemon,
        }
    }
}

fn message(from: &str, to: &str, subject: &str, extra: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@example.net>\r\n{extra}\r\nHello.\r\n",
        subject.replace(' ', "-")
    )
}

/// The auto-replies the sink got (null envelope sender, `Auto-Submitted: auto-replied`).
fn replies(lab: &Lab) -> Vec<Delivered> {
    lab.sink()
        .all()
        .into_iter()
        .filter(|d| {
            d.mail_from.is_empty() && d.header("Auto-Submitted").as_deref() == Some("auto-replied")
        })
        .collect()
}

/// Waits until the sink has a message with this subject for `rcpt`, and returns it.
fn wait_delivery(lab: &Lab, subject: &str, rcpt: &str) -> Delivered {
    wait_for(TIMEOUT, &format!("{subject:?} delivered to {rcpt}"), || {
        lab.sink().all().into_iter().find(|d| {
            d.header("Subject").as_deref() == Some(subject)
                && d.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(rcpt))
        })
    })
}

/// Waits until the sink holds exactly `n` replies (more fails at once).
fn wait_replies(lab: &Lab, n: usize) -> Vec<Delivered> {
    wait_for(TIMEOUT, &format!("{n} auto-replies at the sink"), || {
        let got = replies(lab);
        assert!(got.len() <= n, "more than {n} replies: {got:#?}");
        (got.len() == n).then_some(got)
    })
}

fn metric(d: &Daemon, sample: &str) -> f64 {
    d.metric(sample).unwrap_or(0.0)
}

fn suppressed(reason: &str) -> String {
    format!("handoff_autoreplies_suppressed_total{{reason=\"{reason}\"}}")
}

/// Waits until the metric reaches `want` (handoff counts a decision right after making it).
fn wait_metric(d: &Daemon, sample: &str, want: f64) {
    wait_for(TIMEOUT, &format!("{sample} = {want}"), || {
        (metric(d, sample) == want).then_some(())
    });
}

fn accepted(t: &crate::support::Transcript) -> bool {
    t.data.as_ref().is_some_and(|r| r.code == 250)
}

#[test]
fn a_departed_user_answers_once_per_sender_even_across_a_restart() {
    let Setup { mut daemon, lab } = Setup::start(None);
    let d = &daemon;
    let t = send(
        &lab,
        "sender@example.net",
        &["gone@corp.example"],
        message(
            "Sender <sender@example.net>",
            "gone@corp.example",
            "Hello 1",
            "",
        ),
    );
    assert!(accepted(&t), "{t}");
    wait_delivery(&lab, "Hello 1", "cs@corp.example");
    let reply = wait_replies(&lab, 1).remove(0);
    assert_eq!(reply.mail_from, "", "null envelope sender");
    assert_eq!(reply.rcpt_to, ["sender@example.net"]);
    let parsed = MessageParser::new().parse(&reply.data).unwrap();
    assert_eq!(
        parsed.subject(),
        Some("Gone Person has left / Gone Person 已离职 (re: Hello 1)")
    );
    let from = parsed.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("gone@corp.example"));
    assert_eq!(from.name(), Some("Gone Person"));
    assert_eq!(
        parsed.to().unwrap().first().unwrap().address(),
        Some("sender@example.net")
    );
    assert_eq!(parsed.in_reply_to().as_text(), Some("Hello-1@example.net"));
    assert_eq!(parsed.references().as_text(), Some("Hello-1@example.net"));
    assert_eq!(
        reply.header("X-Auto-Response-Suppress").as_deref(),
        Some("All")
    );
    assert!(
        parsed
            .message_id()
            .is_some_and(|id| id.ends_with("@corp.example"))
    );
    assert!(parsed.date().is_some());
    let body = parsed.body_text(0).unwrap();
    assert!(body.contains("已离职，请联系 cs@corp.example。"), "{body}");
    // The reply came back through the relay listener, which has no milter: handoff saw one
    // message, not two.
    wait_metric(d, "handoff_autoreplies_sent_total", 1.0);
    assert_eq!(
        metric(d, "handoff_messages_total{outcome=\"accepted\"}"),
        1.0
    );
    // The reply is in the archive journal, as handoff created it, byte for byte.
    let mut created = Vec::new();
    handoff::journal::reader::for_each_record(&d.journal_dir(), |info, file| {
        if info.header.kind == handoff::journal::Kind::Created {
            created.push((
                info.meta.clone(),
                handoff::journal::segment::read_body(file, info)?,
            ));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(created.len(), 1, "one created record for one reply");
    let meta: handoff::journal::record::MessageMeta =
        serde_json::from_slice(&created[0].0).unwrap();
    assert_eq!(
        (meta.origin.as_str(), meta.sender.as_str()),
        ("autoreply", "")
    );
    assert_eq!(meta.final_recipients, ["sender@example.net"]);
    assert_eq!(meta.accounts, ["gone@corp.example"]);
    let journaled = MessageParser::new().parse(&created[0].1).unwrap();
    assert_eq!(journaled.message_id(), parsed.message_id());

    // The same sender again within `days`: delivered, not answered.
    let t = send(
        &lab,
        "sender@example.net",
        &["gone@corp.example"],
        message("sender@example.net", "gone@corp.example", "Hello 2", ""),
    );
    assert!(accepted(&t), "{t}");
    wait_delivery(&lab, "Hello 2", "cs@corp.example");
    wait_metric(d, &suppressed("already_replied"), 1.0);
    assert_eq!(replies(&lab).len(), 1);

    // handoff crashes and starts again: the memory (under [storage] state) still knows.
    daemon.kill();
    daemon.spawn(&[]);
    let d = &daemon;
    let t = send(
        &lab,
        "sender@example.net",
        &["gone@corp.example"],
        message("sender@example.net", "gone@corp.example", "Hello 3", ""),
    );
    assert!(accepted(&t), "{t}");
    wait_delivery(&lab, "Hello 3", "cs@corp.example");
    wait_metric(d, &suppressed("already_replied"), 1.0);
    assert_eq!(metric(d, "handoff_autoreplies_sent_total"), 0.0);
    assert_eq!(replies(&lab).len(), 1);
    assert!(
        daemon.path("state/autoreply.memory").exists(),
        "the memory lives under [storage] state"
    );

    // Another sender is answered.
    let t = send(
        &lab,
        "other@example.net",
        &["gone@corp.example"],
        message("other@example.net", "gone@corp.example", "Hello 4", ""),
    );
    assert!(accepted(&t), "{t}");
    let got = wait_replies(&lab, 2);
    assert!(got.iter().any(|r| r.rcpt_to == ["other@example.net"]));
    // Switching the store is a restart-only setting: a reload says so and keeps the memory
    // that knows both senders.
    let text = std::fs::read_to_string(daemon.config_path()).unwrap();
    let text = text.replace("days = 7", "days = 7\nstore = \"redis://127.0.0.1:1/\"");
    std::fs::write(daemon.config_path(), text).unwrap();
    daemon.signal("HUP");
    wait_for(TIMEOUT, "a restart-needed warning", || {
        daemon
            .log_text()
            .lines()
            .any(|l| l.contains("restart") && l.contains("autoreply.store"))
            .then_some(())
    });
    let t = send(
        &lab,
        "other@example.net",
        &["gone@corp.example"],
        message("other@example.net", "gone@corp.example", "Hello 5", ""),
    );
    assert!(accepted(&t), "{t}");
    wait_delivery(&lab, "Hello 5", "cs@corp.example");
    wait_metric(&daemon, &suppressed("already_replied"), 2.0);
    assert_eq!(replies(&lab).len(), 2);
}

#[test]
fn lists_bulk_mail_and_auto_replies_get_no_reply() {
    let Setup { daemon: d, lab } = Setup::start(None);
    let cases = [
        (
            "robot@example.net",
            "List",
            "List-Id: Staff <staff.lists.example.net>\r\nList-Unsubscribe: <mailto:leave@example.net>\r\n",
            "mailing_list",
        ),
        (
            "news@example.net",
            "Bulk",
            "Precedence: bulk\r\n",
            "precedence",
        ),
        (
            "ooo@example.net",
            "Auto",
            "Auto-Submitted: auto-replied\r\n",
            "auto_submitted",
        ),
        ("", "Bounce", "", "null_sender"),
        ("MAILER-DAEMON@example.net", "Daemon", "", "system_sender"),
        ("boss@example.net", "Spam", "X-Spam-Flag: YES\r\n", "spam"),
    ];
    for (from, subject, extra, _) in cases {
        let t = send(
            &lab,
            from,
            &["gone@corp.example"],
            message("x@example.net", "gone@corp.example", subject, extra),
        );
        assert!(accepted(&t), "{t}");
    }
    // A Bcc copy: the departed address is not in To or Cc.
    let t = send(
        &lab,
        "friend@example.net",
        &["gone@corp.example"],
        message("friend@example.net", "team@example.net", "Bcc", ""),
    );
    assert!(accepted(&t), "{t}");
    for (_, subject, _, reason) in cases {
        wait_delivery(&lab, subject, "cs@corp.example");
        wait_metric(&d, &suppressed(reason), 1.0);
    }
    wait_delivery(&lab, "Bcc", "cs@corp.example");
    wait_metric(&d, &suppressed("not_addressed"), 1.0);
    assert!(replies(&lab).is_empty(), "{:#?}", replies(&lab));

    // The same setup answers a person.
    let t = send(
        &lab,
        "person@example.net",
        &["gone@corp.example"],
        message("person@example.net", "gone@corp.example", "Person", ""),
    );
    assert!(accepted(&t), "{t}");
    assert_eq!(wait_replies(&lab, 1)[0].rcpt_to, ["person@example.net"]);
}

/// A private redis-server on 127.0.0.1, killed on drop; without persistence, or (for tests that
/// stop and start it) with every write in its append-only file before it answers, as a
/// production Redis for handoff should be.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_with(false)
    }

    /// `appendonly yes`, `appendfsync always`: what Redis acknowledged survives a kill -9.
    fn start_persistent() -> Redis {
        Redis::start_with(true)
    }

    fn start_with(persistent: bool) -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            persistent,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let aof: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", ""])
            .args(aof)
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server (tests/setup.sh installs it): {e}")
            });
        self.child = Some(child);
        let port = self.port;
        wait_for(
            Duration::from_secs(10),
            "redis-server to answer PING",
            || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
                s.write_all(b"PING\r\n").ok()?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf).ok()?;
                (&buf == b"+PONG\r\n").then_some(())
            },
        );
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL, as a crash would.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `GET key`, or None when the key is absent or Redis does not answer.
    fn get(&self, key: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let command = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
        s.write_all(command.as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 512];
        // A bulk string: "$LEN\r\nVALUE\r\n", or "$-1\r\n" when absent.
        loop {
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply).into_owned();
            let Some((head, rest)) = text.split_once("\r\n") else {
                continue;
            };
            let len: usize = head.strip_prefix('$')?.parse().ok()?;
            if rest.len() >= len + 2 {
                return Some(rest[..len].to_string());
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One SMTP transaction with an smtpd other than the lab's main one.
fn send_via(addr: SocketAddr, from: &str, to: &str, message: &str) {
    let mut c = SmtpClient::connect(addr).unwrap();
    assert_eq!(c.ehlo("client.example").unwrap().code, 250);
    assert_eq!(c.mail_from(from).unwrap().code, 250);
    assert_eq!(c.rcpt_to(to).unwrap().code, 250);
    let data = c.data(message.as_bytes()).unwrap();
    assert_eq!(data.code, 250, "{data}");
    let _ = c.quit();
}

#[test]
fn two_instances_sharing_redis_send_one_reply() {
    let redis = Redis::start();
    let relay = free_port();
    let text = policy(relay, Some(&redis.url()));
    let (d1, d2) = (Daemon::start(&text), Daemon::start(&text));
    // One Postfix, two smtpd listeners, each with its own handoff.
    let smtpd2 = free_port();
    let mut config = LabConfig::default()
        .master_cf_entry(relay_entry(relay))
        .master_cf_entry(format!(
            "127.0.0.1:{smtpd2} inet n - n - - smtpd -o smtpd_milters=inet:127.0.0.1:{}",
            d2.milter_port
        ));
    for line in milter_lines(d1.milter_port) {
        config = config.main_cf_line(line);
    }
    let lab = Lab::start(config);
    let second: SocketAddr = format!("127.0.0.1:{smtpd2}").parse().unwrap();

    let msg = message("sender@example.net", "gone@corp.example", "Twice", "");
    let t = send(&lab, "sender@example.net", &["gone@corp.example"], &msg);
    assert!(accepted(&t), "{t}");
    send_via(second, "sender@example.net", "gone@corp.example", &msg);
    wait_for(TIMEOUT, "both copies delivered", || {
        let n = lab
            .sink()
            .all()
            .iter()
            .filter(|d| d.header("Subject").as_deref() == Some("Twice"))
            .count();
        (n == 2).then_some(())
    });
    wait_for(TIMEOUT, "one instance sent, the other remembered", || {
        let sent = metric(&d1, "handoff_autoreplies_sent_total")
            + metric(&d2, "handoff_autoreplies_sent_total");
        let skipped = metric(&d1, &suppressed("already_replied"))
            + metric(&d2, &suppressed("already_replied"));
        (sent == 1.0 && skipped == 1.0).then_some(())
    });
    assert_eq!(
        metric(&d1, "handoff_messages_total{outcome=\"accepted\"}"),
        1.0
    );
    assert_eq!(
        metric(&d2, "handoff_messages_total{outcome=\"accepted\"}"),
        1.0
    );
    let got = wait_replies(&lab, 1);
    assert_eq!(got[0].rcpt_to, ["sender@example.net"]);
}

#[test]
fn with_redis_down_mail_flows_and_no_reply_is_sent() {
    let mut redis = Redis::start();
    let Setup { daemon: d, lab } = Setup::start(Some(&redis.url()));
    redis.stop();
    let t = send(
        &lab,
        "sender@example.net",
        &["gone@corp.example"],
        message("sender@example.net", "gone@corp.example", "Redis down", ""),
    );
    assert!(accepted(&t), "{t}");
    wait_delivery(&lab, "Redis down", "cs@corp.example");
    wait_metric(&d, &suppressed("store_unavailable"), 1.0);
    assert!(replies(&lab).is_empty());

    // Redis back on its port: the next message is answered.
    redis.spawn();
    let t = send(
        &lab,
        "sender@example.net",
        &["gone@corp.example"],
        message("sender@example.net", "gone@corp.example", "Redis up", ""),
    );
    assert!(accepted(&t), "{t}");
    wait_delivery(&lab, "Redis up", "cs@corp.example");
    assert_eq!(wait_replies(&lab, 1)[0].rcpt_to, ["sender@example.net"]);
}

/// `a@` and `b@` are departed; their successors' systems send mail straight back into
/// handoff (a forwarder that rewrites the envelope sender, a mailbox that auto-answers).
/// Nothing ping-pongs: one reply to the first sender, the loop marker stops the forwarding,
/// and replies are never answered.
#[test]
fn departed_accounts_forwarding_to_each_other_do_not_ping_pong() {
    let Setup { daemon: d, lab } = Setup::start(None);
    let t = send(
        &lab,
        "sender@example.net",
        &["a@corp.example"],
        message("sender@example.net", "a@corp.example", "Loop", ""),
    );
    assert!(accepted(&t), "{t}");
    let first = wait_delivery(&lab, "Loop", "a-next@example.net");
    assert_eq!(wait_replies(&lab, 1)[0].rcpt_to, ["sender@example.net"]);

    // a-next's system forwards everything to b@ (envelope rewritten, headers kept). b@ is not
    // in To: no reply; b@ forwards to b-next.
    lab.sink().take();
    let t = send(&lab, "a-next@example.net", &["b@corp.example"], &first.data);
    assert!(accepted(&t), "{t}");
    let second = wait_delivery(&lab, "Loop", "b-next@example.net");
    wait_metric(&d, &suppressed("not_addressed"), 1.0);
    assert_eq!(
        second.headers("X-Handoff-Forwarded"),
        ["a@corp.example", "b@corp.example"]
    );

    // b-next's system sends it back to a@: the marker keeps it in a@'s mailbox, unforwarded,
    // and a@ does not answer b-next.
    lab.sink().take();
    let t = send(
        &lab,
        "b-next@example.net",
        &["a@corp.example"],
        &second.data,
    );
    assert!(accepted(&t), "{t}");
    let third = wait_delivery(&lab, "Loop", "a@corp.example");
    assert_eq!(third.rcpt_to, ["a@corp.example"], "not forwarded again");
    wait_metric(&d, &suppressed("loop_marked"), 1.0);

    // A departed account writes to another: b@ answers a@ once ...
    lab.sink().take();
    let t = send(
        &lab,
        "a@corp.example",
        &["b@corp.example"],
        message("a@corp.example", "b@corp.example", "From a", ""),
    );
    assert!(accepted(&t), "{t}");
    let reply = wait_replies(&lab, 1).remove(0);
    assert_eq!(reply.rcpt_to, ["a@corp.example"]);
    // ... and when that reply reaches a@ through handoff (with its null sender, or with a
    // sender some forwarder put there), a@ does not answer it.
    lab.sink().take();
    let t = send(&lab, "", &["a@corp.example"], &reply.data);
    assert!(accepted(&t), "{t}");
    let t = send(&lab, "b@corp.example", &["a@corp.example"], &reply.data);
    assert!(accepted(&t), "{t}");
    wait_metric(&d, &suppressed("null_sender"), 1.0);
    wait_metric(&d, &suppressed("auto_submitted"), 1.0);
    wait_for(TIMEOUT, "the reply delivered twice to a-next", || {
        let n = lab
            .sink()
            .all()
            .iter()
            .filter(|m| m.rcpt_to == ["a-next@example.net"])
            .count();
        (n == 2).then_some(())
    });
    assert!(
        replies(&lab)
            .iter()
            .all(|r| r.rcpt_to != ["b@corp.example"])
    );
    assert_eq!(metric(&d, "handoff_autoreplies_sent_total"), 2.0);
}

/// The sum of every sample of a counter, whatever its labels.
fn metric_sum(d: &Daemon, name: &str) -> f64 {
    let (_, body) = d.http_get("/metrics");
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Auto-reply decisions made so far: sent, suppressed (any reason) or failed. One per message
/// to the departed account.
fn decisions(d: &Daemon) -> f64 {
    metric(d, "handoff_autoreplies_sent_total")
        + metric_sum(d, "handoff_autoreplies_suppressed_total")
        + metric_sum(d, "handoff_autoreplies_failed_total")
}

/// Replies at the sink per recipient.
fn replies_per_sender(lab: &Lab) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for r in replies(lab) {
        for to in r.rcpt_to {
            *out.entry(to).or_default() += 1;
        }
    }
    out
}

/// Redis goes away while mail with auto-replies flows, and comes back with its data. Senders
/// in groups: A is answered while Redis is up; Redis is killed (SIGKILL) in the middle of a
/// burst from A and C; B writes while it is down; then Redis is back and everyone writes again;
/// then Redis restarts between two messages (handoff's connection to it is stale) and D writes
/// for the first time, then everyone again. Mail always flows (0 lost); no sender ever gets two
/// replies; A, B and D get exactly one; a reply is never lost to a stale connection.
#[test]
fn redis_down_and_back_during_auto_replies() {
    use crate::loss::{Account, message_between, send_message_until_accepted};
    let mut redis = Redis::start_persistent();
    let Setup { daemon: d, lab } = Setup::start(Some(&redis.url()));
    let group = |g: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{g}{i}@example.net")).collect()
    };
    let (a, b, c, dd) = (group("a", 4), group("b", 4), group("c", 4), group("d", 2));
    let accepted = std::sync::Mutex::new(Vec::new());
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let send_from = |from: &str| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("redis-{n}");
        let msg = message_between(&id, from, "gone@corp.example");
        let tries = send_message_until_accepted(&lab, from, "gone@corp.example", &id, &msg);
        attempts.fetch_add(tries, std::sync::atomic::Ordering::Relaxed);
        accepted.lock().unwrap().push(id);
    };
    let settle = |what: &str| {
        let want = next.load(std::sync::atomic::Ordering::Relaxed) as f64;
        wait_for(
            TIMEOUT,
            &format!("{what}: an auto-reply decision per message"),
            || (decisions(&d) == want).then_some(()),
        );
        let sent = metric(&d, "handoff_autoreplies_sent_total") as usize;
        wait_for(
            TIMEOUT,
            &format!("{what}: {sent} replies at the sink"),
            || (replies(&lab).len() == sent).then_some(()),
        );
    };
    let unavailable = || metric(&d, &suppressed("store_unavailable"));

    // A, with Redis up: one reply each.
    a.iter().for_each(|s| send_from(s));
    settle("Redis up");
    assert_eq!(metric(&d, "handoff_autoreplies_sent_total"), 4.0);

    // A burst from A and C, and Redis killed in its middle; then B while it is down.
    let burst: Vec<&String> = a.iter().zip(&c).flat_map(|(x, y)| [x, y]).collect();
    std::thread::scope(|s| {
        let sender = s.spawn(|| burst.iter().for_each(|from| send_from(from)));
        wait_for(TIMEOUT, "the burst under way", || {
            (next.load(std::sync::atomic::Ordering::Relaxed) >= 4 + 3).then_some(())
        });
        redis.stop();
        sender.join().unwrap();
    });
    b.iter().for_each(|s| send_from(s));
    settle("Redis down");
    assert!(
        unavailable() >= b.len() as f64,
        "B was not answered while Redis was down"
    );
    let after_down = replies_per_sender(&lab);
    assert!(
        b.iter().all(|s| !after_down.contains_key(s)),
        "{after_down:?}"
    );

    // Redis back with its data: everyone writes again.
    redis.spawn();
    a.iter().chain(&b).chain(&c).for_each(|s| send_from(s));
    settle("Redis back");

    // Redis restarts between two messages: handoff's connection to it is stale. D writes first.
    redis.stop();
    redis.spawn();
    let unavailable_before = unavailable();
    dd.iter()
        .chain(&a)
        .chain(&b)
        .chain(&c)
        .chain(&dd)
        .for_each(|s| send_from(s));
    settle("Redis restarted");
    assert_eq!(
        unavailable(),
        unavailable_before,
        "a stale connection cost no reply"
    );

    let per_sender = replies_per_sender(&lab);
    let count = |s: &String| per_sender.get(s).copied().unwrap_or(0);
    for s in a.iter().chain(&b).chain(&dd) {
        assert_eq!(count(s), 1, "{s}: {per_sender:?}");
    }
    for s in &c {
        assert!(count(s) <= 1, "{s}: {per_sender:?}");
    }
    assert!(per_sender.values().all(|n| *n == 1), "{per_sender:?}");
    let accepted = accepted.into_inner().unwrap();
    let attempts = attempts.into_inner();
    let journal = d.journal_dir();
    // The sink holds the forwarded mail (to cs@) and the replies; only the former carry ids.
    let account = Account::settle(&lab, &journal, accepted, TIMEOUT);
    account.report(
        "redis_down_and_back_during_auto_replies",
        &format!(
            ", attempts {attempts}, senders {}, replies {} (A {} B {} C {} D {}), max per sender {}, \
             suppressed store_unavailable {} already_replied {}",
            a.len() + b.len() + c.len() + dd.len(),
            replies(&lab).len(),
            a.iter().map(count).sum::<usize>(),
            b.iter().map(count).sum::<usize>(),
            c.iter().map(count).sum::<usize>(),
            dd.iter().map(count).sum::<usize>(),
            per_sender.values().max().copied().unwrap_or(0),
            unavailable(),
            metric(&d, &suppressed("already_replied")),
        ),
    );
    assert_eq!(
        attempts,
        account.accepted.len(),
        "mail never waited for Redis"
    );
}

/// The auto-reply job handoff plans for a message from `sender` to the departed `account`.
fn planned_reply(
    account: &handoff::address::Address,
    sender: &handoff::address::Address,
) -> handoff::autoreply::Job {
    use handoff::policy::Policy;
    use handoff::runtime::store::PolicyStore;
    use handoff::transaction::{Client, Message, MessageOutcome, Recipient};
    let policy = format!(
        "[domains]\nlocal = [\"corp.example\"]\n\
         [templates.departed]\nsubject = \"{{name}} has left\"\nbody = \"Please write to {{successor}}.\"\n\
         [accounts.\"{account}\"]\nstate = \"departed\"\nname = \"Gone\"\n\
         successor = \"cs@corp.example\"\nforward = [\"cs@corp.example\"]\nautoreply = \"departed\"\n"
    );
    let snapshot = PolicyStore::new(Policy::from_text("p.toml", &policy).unwrap()).snapshot();
    let resolution = handoff::engine::resolve(&snapshot.policy, account, jiff::Zoned::now().date());
    let msg = Message {
        snapshot,
        client: Client::default(),
        queue_id: Some("4RDS".into()),
        sender: Some(sender.clone()),
        sender_raw: format!("<{sender}>"),
        auth_user: None,
        recipients: vec![Recipient {
            raw: format!("<{account}>"),
            resolution,
        }],
        refused: Vec::new(),
        headers: [
            ("From", sender.as_str()),
            ("To", account.as_str()),
            ("Subject", "Hello"),
            ("Message-ID", "<q-redis@example.net>"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect(),
        headers_truncated: false,
        body_bytes: 10,
        outcome: MessageOutcome::Accept,
        edits: Vec::new(),
        copy_to: None,
    };
    let mut planned = handoff::autoreply::plan(&msg, jiff::Timestamp::now());
    assert_eq!(planned.len(), 1, "one reply planned");
    planned.remove(0).1.expect("a reply the rules allow")
}

/// A relay that takes one reply and, after the content and before its 250, runs `at_data`.
fn relay_with_hook(at_data: impl FnOnce() + Send + 'static) -> SocketAddr {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut lines = std::io::BufReader::new(stream);
        let mut at_data = Some(at_data);
        out.write_all(b"220 relay.test ESMTP\r\n").unwrap();
        let mut line = String::new();
        let mut in_data = false;
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            let reply: &[u8] = if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    if let Some(hook) = at_data.take() {
                        hook();
                    }
                    b"250 2.0.0 queued\r\n"
                } else {
                    b""
                }
            } else {
                match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                    Some("DATA") => {
                        in_data = true;
                        b"354 go ahead\r\n"
                    }
                    Some("QUIT") => {
                        let _ = out.write_all(b"221 bye\r\n");
                        return;
                    }
                    _ => b"250 ok\r\n",
                }
            };
            out.write_all(reply).unwrap();
            line.clear();
        }
    });
    addr
}

/// Redis dies between claiming a sender and the relay's 250 for the reply, so the reply goes out
/// but cannot be recorded. Once Redis is back (with the claim, persisted), the record is made
/// after all, so a later message from that sender gets no second reply, even after the claim
/// would have lapsed.
#[test]
fn a_reply_sent_as_redis_goes_away_is_remembered_when_it_returns() {
    use handoff::address::Address;
    use handoff::autoreply::{self, AutoReplier, Memory, Outcome, PairKey};
    let redis = std::sync::Arc::new(std::sync::Mutex::new(Redis::start_persistent()));
    let url = redis.lock().unwrap().url();
    let relay = relay_with_hook({
        let redis = redis.clone();
        move || redis.lock().unwrap().stop()
    });
    let state = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let memory = Memory::open(state.path(), Some(&url)).unwrap();
    let (_replier, worker) = AutoReplier::new(
        autoreply::Config::default(),
        memory,
        autoreply::no_journal(),
    );
    let (account, sender) = (
        Address::parse_strict("gone@corp.example").unwrap(),
        Address::parse_strict("sender@example.net").unwrap(),
    );
    let key = PairKey::new(&account, &sender);
    let mut job = planned_reply(&account, &sender);
    assert_eq!(job.key, key);
    job.relay = relay;
    job.days = 7;
    job.max_per_hour = 100;
    job.max_per_hour_per_account = 100;
    assert_eq!(
        rt.block_on(worker.process_one(job.clone())),
        Outcome::Sent { attempts: 1 }
    );
    // Sent, and Redis is down: handoff keeps trying to record it while Redis restarts.
    let redis_key = format!("handoff:autoreply:{}", hex::encode(key.0));
    redis.lock().unwrap().spawn();
    wait_for(
        Duration::from_secs(15),
        "the reply recorded in Redis",
        || (redis.lock().unwrap().get(&redis_key).as_deref() == Some("sent")).then_some(()),
    );
    assert_eq!(
        rt.block_on(worker.process_one(job)),
        Outcome::Suppressed(autoreply::Suppression::AlreadyReplied)
    );
}
