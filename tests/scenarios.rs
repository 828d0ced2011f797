//! One table of end-to-end scenarios, run through a real Postfix in both modes:
//! - **milter** (deploy/postfix/main.cf.milter): handoff answers each RCPT during the SMTP
//!   session, so the client sees the refusals itself;
//! - **content filter** (deploy/postfix/{main,master}.cf.content-filter): Postfix accepts the
//!   message, queues it, and hands it to handoff over LMTP; a recipient handoff refuses with
//!   5xx comes back to the sender as a bounce, one it defers with 4xx stays in Postfix's queue.
//!
//! Either way the sink must receive exactly the expected final recipients, and the journal must
//! hold exactly one record for each message that had an accepted recipient.

use std::path::Path;
use std::time::Duration;

use handoff::journal::record::MessageMeta;
use handoff::journal::{Kind, reader};

use crate::daemon::{Daemon, free_port, wait_for};
use crate::e2e_milter::milter_lines;
use crate::support::{Lab, LabConfig, Transcript, send};

pub const POLICY: &str = r#"
[domains]
local = ["corp.example"]

[aliases]
"sales@corp.example" = ["alice@corp.example", "bob@corp.example"]

[accounts."keep@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = true

[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false

[accounts."dis@corp.example"]
state = "disabled"
reply = "550 5.2.1 This mailbox is disabled; please write to cs@corp.example"

[accounts."del@corp.example"]
state = "deleted"

[accounts."frz@corp.example"]
state = "frozen"
"#;

const TIMEOUT: Duration = Duration::from_secs(30);

/// What happens to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Accepted (and delivered to what it becomes).
    Accepted,
    /// Refused for good: 5xx at RCPT (milter), a bounce to the sender (content filter).
    Refused,
    /// Refused for now: 4xx at RCPT (milter), deferred in Postfix's queue (content filter).
    Deferred,
}

pub struct Scenario {
    /// Also the message's Subject and Message-ID local part.
    pub name: &'static str,
    pub rcpts: &'static [(&'static str, Class)],
    /// Envelope recipients the sink must receive the message for.
    pub delivered: &'static [&'static str],
}

use Class::{Accepted, Deferred, Refused};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "plain",
        rcpts: &[("alice@corp.example", Accepted)],
        delivered: &["alice@corp.example"],
    },
    Scenario {
        name: "disabled",
        rcpts: &[("dis@corp.example", Refused)],
        delivered: &[],
    },
    Scenario {
        name: "deleted",
        rcpts: &[("del@corp.example", Refused)],
        delivered: &[],
    },
    Scenario {
        name: "frozen",
        rcpts: &[("frz@corp.example", Deferred)],
        delivered: &[],
    },
    Scenario {
        name: "departed-with-copy",
        rcpts: &[("keep@corp.example", Accepted)],
        delivered: &["cs@corp.example", "keep@corp.example"],
    },
    Scenario {
        name: "departed-without-copy",
        rcpts: &[("gone@corp.example", Accepted)],
        delivered: &["cs@corp.example"],
    },
    Scenario {
        name: "alias",
        rcpts: &[("sales@corp.example", Accepted)],
        delivered: &["alice@corp.example", "bob@corp.example"],
    },
    Scenario {
        name: "alias-and-member",
        rcpts: &[
            ("sales@corp.example", Accepted),
            ("alice@corp.example", Accepted),
        ],
        delivered: &["alice@corp.example", "bob@corp.example"],
    },
    Scenario {
        name: "mixed",
        rcpts: &[
            ("dis@corp.example", Refused),
            ("gone@corp.example", Accepted),
            ("frz@corp.example", Deferred),
            ("alice@corp.example", Accepted),
        ],
        delivered: &["alice@corp.example", "cs@corp.example"],
    },
    Scenario {
        name: "mixed-refusals",
        rcpts: &[
            ("del@corp.example", Refused),
            ("keep@corp.example", Accepted),
            ("dis@corp.example", Refused),
        ],
        delivered: &["cs@corp.example", "keep@corp.example"],
    },
];

pub fn message(subject: &str) -> String {
    format!(
        "From: Sender <sender@example.net>\r\nTo: someone@corp.example\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.net>\r\n\r\nHello.\r\n"
    )
}

/// Every envelope recipient the sink got for the message with this subject, sorted.
fn delivered_to(lab: &Lab, subject: &str) -> Vec<String> {
    let mut rcpts: Vec<String> = lab
        .sink()
        .all()
        .iter()
        .filter(|d| d.header("Subject").as_deref() == Some(subject))
        .flat_map(|d| d.rcpt_to.iter().map(|r| r.to_lowercase()))
        .collect();
    rcpts.sort();
    rcpts
}

fn sorted(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Waits for exactly `s.delivered` at the sink (nothing, when it is empty).
fn expect_delivery(lab: &Lab, s: &Scenario) {
    let want = sorted(s.delivered);
    wait_for(
        TIMEOUT,
        &format!("{}: delivery to {want:?}", s.name),
        || (delivered_to(lab, s.name) == want).then_some(()),
    );
}

/// The message records in a journal.
pub fn journaled(dir: &Path) -> Vec<MessageMeta> {
    let mut out = Vec::new();
    reader::for_each_record(dir, |info, _| {
        if info.header.kind == Kind::Message {
            out.push(serde_json::from_slice(&info.meta).unwrap());
        }
        Ok(())
    })
    .unwrap();
    out
}

/// Exactly one record per scenario with an accepted recipient, with its final recipients;
/// none for the others.
fn check_journal(d: &Daemon, origin: &str) {
    let records = journaled(&d.journal_dir());
    for s in SCENARIOS {
        let id = format!("<{}@example.net>", s.name);
        let mine: Vec<&MessageMeta> = records
            .iter()
            .filter(|m| m.message_id.as_deref() == Some(id.as_str()))
            .collect();
        if s.delivered.is_empty() {
            assert!(
                mine.is_empty(),
                "{}: journaled although refused: {mine:#?}",
                s.name
            );
            continue;
        }
        assert_eq!(mine.len(), 1, "{}: {mine:#?}", s.name);
        let mut finals = mine[0].final_recipients.clone();
        finals.sort();
        assert_eq!(finals, sorted(s.delivered), "{}", s.name);
        assert_eq!(mine[0].origin, origin, "{}", s.name);
    }
}

fn class_of_rcpt_reply(t: &Transcript, rcpt: &str) -> Class {
    match t.rcpt(rcpt).code / 100 {
        2 => Accepted,
        4 => Deferred,
        _ => Refused,
    }
}

#[test]
fn scenarios_in_milter_mode() {
    let d = Daemon::start(POLICY);
    let mut config = LabConfig::default();
    for line in milter_lines(d.milter_port) {
        config = config.main_cf_line(line);
    }
    let lab = Lab::start(config);
    for s in SCENARIOS {
        let rcpts: Vec<&str> = s.rcpts.iter().map(|(r, _)| *r).collect();
        let t = send(&lab, "sender@example.net", &rcpts, message(s.name));
        for (r, class) in s.rcpts {
            assert_eq!(class_of_rcpt_reply(&t, r), *class, "{}: {r}\n{t}", s.name);
        }
        let any = s.rcpts.iter().any(|(_, c)| *c == Accepted);
        assert_eq!(
            t.data.as_ref().is_some_and(|r| r.code == 250),
            any,
            "{}\n{t}",
            s.name
        );
        expect_delivery(&lab, s);
    }
    // Nothing arrives late (a refused recipient delivered after all, say).
    std::thread::sleep(Duration::from_millis(500));
    for s in SCENARIOS {
        assert_eq!(
            delivered_to(&lab, s.name),
            sorted(s.delivered),
            "{}",
            s.name
        );
    }
    check_journal(&d, "milter");
}

/// handoff as a content filter in front of a lab, delivering back to its reinjection port.
pub fn content_filter_lab(policy: &str) -> (Daemon, Lab) {
    let reinject = free_port();
    let d = Daemon::start_content_filter(policy, &format!("127.0.0.1:{reinject}"));
    let lab = Lab::start(LabConfig::default().content_filter(d.lmtp_port.unwrap(), reinject));
    (d, lab)
}

#[test]
fn scenarios_in_content_filter_mode() {
    let (d, lab) = content_filter_lab(POLICY);
    for s in SCENARIOS {
        let rcpts: Vec<&str> = s.rcpts.iter().map(|(r, _)| *r).collect();
        let t = send(&lab, "sender@example.net", &rcpts, message(s.name));
        // Postfix takes every recipient; handoff decides after the queue.
        assert!(
            t.rcpts.iter().all(|(_, r)| r.code == 250),
            "{}\n{t}",
            s.name
        );
        assert!(
            t.data.as_ref().is_some_and(|r| r.code == 250),
            "{}\n{t}",
            s.name
        );
        expect_delivery(&lab, s);
        for (r, class) in s.rcpts {
            match class {
                Accepted => {}
                Refused => {
                    wait_for(TIMEOUT, &format!("{}: a bounce for {r}", s.name), || {
                        lab.sink().all().into_iter().find(|m| {
                            let text = m.text();
                            m.mail_from.is_empty()
                                && m.rcpt_to == ["sender@example.net"]
                                && text.contains(&format!("Subject: {}\r\n", s.name))
                                && text.contains(&format!("Final-Recipient: rfc822; {r}"))
                                && text.contains("Status: 5.")
                        })
                    });
                }
                Deferred => {
                    wait_for(TIMEOUT, &format!("{}: {r} deferred", s.name), || {
                        lab.queue().into_iter().find(|m| {
                            m.recipients.iter().any(|q| {
                                q.address == *r
                                    && q.delay_reason
                                        .as_deref()
                                        .is_some_and(|w| w.contains("4.2.1"))
                            })
                        })
                    });
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    for s in SCENARIOS {
        assert_eq!(
            delivered_to(&lab, s.name),
            sorted(s.delivered),
            "{}",
            s.name
        );
    }
    check_journal(&d, "lmtp");
    let log = lab.log();
    assert!(
        log.contains("dis@corp.example") && log.contains("status=bounced"),
        "Postfix logs the bounce"
    );
}

/// Quoted local parts through a real Postfix in content-filter mode: handoff writes them back
/// quoted (RFC 5321 section 4.1.2), so the injected form arrives as ONE recipient, without the
/// parameters it carries, and never as `victim@evil.example`; `"john doe"@corp.example`
/// arrives intact.
#[test]
fn quoted_local_parts_survive_the_content_filter() {
    let (d, lab) = content_filter_lab(POLICY);
    let injected = r#""victim@evil.example> NOTIFY=NEVER ORCPT=rfc822;x"@corp.example"#;
    let spaced = r#""john doe"@corp.example"#;
    let t = send(
        &lab,
        "sender@example.net",
        &[injected, spaced],
        message("quoted"),
    );
    assert!(t.rcpts.iter().all(|(_, r)| r.code == 250), "{t}");
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    // `delivered_to` folds case.
    let want = sorted(&[&injected.to_lowercase(), spaced]);
    wait_for(TIMEOUT, "delivery of the quoted recipients", || {
        (delivered_to(&lab, "quoted") == want).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let all = lab.sink().all();
    assert_eq!(delivered_to(&lab, "quoted"), want, "{all:#?}");
    assert!(
        all.iter().all(|m| m
            .rcpt_to
            .iter()
            .all(|r| !r.contains("victim@evil.example>") || r == injected)),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .all(|m| !m.rcpt_to.iter().any(|r| r == "victim@evil.example")),
        "no delivery to the injected address: {all:#?}"
    );
    assert!(
        lab.queue().is_empty(),
        "nothing deferred: {:#?}",
        lab.queue()
    );
    let records = journaled(&d.journal_dir());
    assert_eq!(records.len(), 1);
}

/// Auto-replies in content-filter mode: the reply goes out through the reinjection listener
/// (no content filter there, so it is neither filtered nor journaled a second time), once per
/// sender, and the journal holds the message and the reply it caused.
#[test]
fn auto_replies_in_content_filter_mode() {
    let reinject = free_port();
    let policy = format!(
        r#"[relay]
address = "127.0.0.1:{reinject}"

[domains]
local = ["corp.example"]

[templates.departed]
subject = "{{name}} has left"
body = "Please write to {{successor}}."

[accounts."gone@corp.example"]
state = "departed"
name = "Gone Person"
successor = "cs@corp.example"
keep_copy = false
autoreply = "departed"
"#
    );
    let d = Daemon::start_content_filter(&policy, &format!("127.0.0.1:{reinject}"));
    let lab = Lab::start(LabConfig::default().content_filter(d.lmtp_port.unwrap(), reinject));
    let direct = |subject: &str| {
        format!(
            "From: Sender <sender@example.net>\r\nTo: gone@corp.example\r\nSubject: {subject}\r\n\
             Message-ID: <{subject}@example.net>\r\n\r\nHello.\r\n"
        )
    };
    let t = send(
        &lab,
        "sender@example.net",
        &["gone@corp.example"],
        direct("cf-reply-1"),
    );
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    let reply = wait_for(TIMEOUT, "the auto-reply at the sink", || {
        lab.sink()
            .all()
            .into_iter()
            .find(|m| m.mail_from.is_empty() && m.rcpt_to == ["sender@example.net"])
    });
    assert_eq!(
        reply.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert_eq!(
        reply.header("Subject").as_deref(),
        Some("Gone Person has left")
    );
    assert_eq!(delivered_to(&lab, "cf-reply-1"), ["cs@corp.example"]);

    // The same sender again: delivered, not answered.
    let t = send(
        &lab,
        "sender@example.net",
        &["gone@corp.example"],
        direct("cf-reply-2"),
    );
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    wait_for(TIMEOUT, "the second message at the sink", || {
        (delivered_to(&lab, "cf-reply-2") == ["cs@corp.example"]).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let replies = lab
        .sink()
        .all()
        .into_iter()
        .filter(|m| m.mail_from.is_empty())
        .count();
    assert_eq!(replies, 1, "one reply per sender");

    let mut kinds = Vec::new();
    reader::for_each_record(&d.journal_dir(), |info, _| {
        if matches!(info.header.kind, Kind::Message | Kind::Created) {
            kinds.push(info.header.kind);
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        kinds.iter().filter(|k| **k == Kind::Message).count(),
        2,
        "the two messages, once each"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == Kind::Created).count(),
        1,
        "the reply, once"
    );
}

/// A departed account with a template, replies to `[relay] address` on `relay`.
fn forged_marker_policy(relay: u16) -> String {
    format!(
        r#"[relay]
address = "127.0.0.1:{relay}"

[domains]
local = ["corp.example"]

[templates.departed]
subject = "{{name}} has left"
body = "Please write to {{successor}}."

[accounts."gone@corp.example"]
state = "departed"
name = "Gone Person"
successor = "cs@corp.example"
keep_copy = false
autoreply = "departed"
"#
    )
}

/// Anyone can write `X-Handoff-Forwarded`: a message from outside that carries markers for a
/// departed account without handoff's MAC (none, or a made-up one) is still forwarded and
/// answered, and gets handoff's own marker.
fn a_forged_marker_is_ignored(d: &Daemon, lab: &Lab, name: &str) {
    let forged = [
        "gone@corp.example".to_string(),
        "gone@corp.example; d=2026-12-04; mac=0123456789abcdef0123456789abcdef".to_string(),
    ];
    let text = format!(
        "From: Sender <sender@example.net>\r\nTo: gone@corp.example\r\nSubject: {name}\r\n\
         Message-ID: <{name}@example.net>\r\nX-Handoff-Forwarded: {}\r\nX-Handoff-Forwarded: {}\r\n\
         \r\nHello.\r\n",
        forged[0], forged[1]
    );
    let t = send(lab, "sender@example.net", &["gone@corp.example"], text);
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    let got = wait_for(TIMEOUT, &format!("{name} forwarded to cs@"), || {
        lab.sink()
            .all()
            .into_iter()
            .find(|m| m.header("Subject").as_deref() == Some(name) && !m.mail_from.is_empty())
    });
    assert_eq!(got.rcpt_to, ["cs@corp.example"], "forwarded, not kept");
    // Appended (milter) or prepended (content filter): compared as a set.
    let mut markers = forged.to_vec();
    markers.push(d.loop_marker("gone@corp.example"));
    markers.sort();
    let mut seen = got.headers("X-Handoff-Forwarded");
    seen.sort();
    assert_eq!(seen, markers);
    let reply = wait_for(TIMEOUT, &format!("{name}: the auto-reply"), || {
        lab.sink()
            .all()
            .into_iter()
            .find(|m| m.mail_from.is_empty() && m.rcpt_to == ["sender@example.net"])
    });
    assert_eq!(
        reply.header("Subject").as_deref(),
        Some("Gone Person has left")
    );
}

#[test]
fn a_forged_loop_marker_is_ignored_in_milter_mode() {
    let relay = free_port();
    let d = Daemon::start(&forged_marker_policy(relay));
    let mut config = LabConfig::default().master_cf_entry(crate::e2e_autoreply::relay_entry(relay));
    for line in milter_lines(d.milter_port) {
        config = config.main_cf_line(line);
    }
    let lab = Lab::start(config);
    a_forged_marker_is_ignored(&d, &lab, "forged-milter");
}

#[test]
fn a_forged_loop_marker_is_ignored_in_content_filter_mode() {
    let reinject = free_port();
    let d = Daemon::start_content_filter(
        &forged_marker_policy(reinject),
        &format!("127.0.0.1:{reinject}"),
    );
    let lab = Lab::start(LabConfig::default().content_filter(d.lmtp_port.unwrap(), reinject));
    a_forged_marker_is_ignored(&d, &lab, "forged-lmtp");
}
