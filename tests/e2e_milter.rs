//! End to end through a real Postfix: an SMTP client talks to a private Postfix instance whose
//! `smtpd_milters`/`non_smtpd_milters` come from deploy/postfix/main.cf.milter and point at a
//! running handoff; a capturing sink receives what Postfix delivers.

use std::path::Path;
use std::time::Duration;

use crate::daemon::{Daemon, wait_for};
use crate::support::{Delivered, Lab, LabConfig, parse_main_cf, send, send_authenticated};

const POLICY: &str = r#"
[domains]
local = ["corp.example"]

[templates.departed]
subject = "{name} has left"
body = "Please write to {successor}."

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

/// The milter lines admins paste, pointed at this test's handoff.
pub fn milter_lines(port: u16) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/postfix/main.cf.milter");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("inet:127.0.0.1:8891"),
        "the documented snippet uses the default port"
    );
    let text = text.replace("127.0.0.1:8891", &format!("127.0.0.1:{port}"));
    parse_main_cf(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e:?}"))
}

fn lab_for(d: &Daemon, sasl: bool) -> Lab {
    let mut config = LabConfig::default();
    for line in milter_lines(d.milter_port) {
        config = config.main_cf_line(line);
    }
    if sasl {
        config = config
            .sasl_user("dis@corp.example", "secret")
            .sasl_user("alice@corp.example", "secret");
    }
    Lab::start(config)
}

fn message(subject: &str) -> String {
    format!(
        "From: Sender <sender@example.net>\r\nTo: someone@corp.example\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.net>\r\n\r\nHello.\r\n"
    )
}

/// Every envelope recipient the sink got for the message with this subject.
fn delivered_to(all: &[Delivered], subject: &str) -> Vec<String> {
    let mut rcpts: Vec<String> = all
        .iter()
        .filter(|d| d.header("Subject").as_deref() == Some(subject))
        .flat_map(|d| d.rcpt_to.iter().map(|r| r.to_lowercase()))
        .collect();
    rcpts.sort();
    rcpts
}

/// Waits until the sink has deliveries for `subject` to exactly `want` (sorted).
fn expect_delivery(lab: &Lab, subject: &str, want: &[&str]) -> Vec<Delivered> {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let got = wait_for(
        TIMEOUT,
        &format!("delivery of {subject:?} to {want:?}"),
        || {
            let all = lab.sink().all();
            (delivered_to(&all, subject) == want).then_some(all)
        },
    );
    // Nothing more arrives for it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        delivered_to(&lab.sink().all(), subject),
        want,
        "extra deliveries for {subject}"
    );
    got.into_iter()
        .filter(|d| d.header("Subject").as_deref() == Some(subject))
        .collect()
}

#[test]
fn refused_states_get_their_replies_at_rcpt() {
    let d = Daemon::start(POLICY);
    let lab = lab_for(&d, false);
    let t = send(
        &lab,
        "sender@example.net",
        &["dis@corp.example"],
        message("dis"),
    );
    assert_eq!(t.rcpt("dis@corp.example").status(), "550 5.2.1", "{t}");
    assert!(
        t.rcpt("dis@corp.example")
            .text
            .contains("please write to cs@corp.example"),
        "{t}"
    );
    let t = send(
        &lab,
        "sender@example.net",
        &["del@corp.example"],
        message("del"),
    );
    assert_eq!(t.rcpt("del@corp.example").status(), "550 5.1.1", "{t}");
    let t = send(
        &lab,
        "sender@example.net",
        &["frz@corp.example"],
        message("frz"),
    );
    assert_eq!(t.rcpt("frz@corp.example").status(), "450 4.2.1", "{t}");
    assert!(t.data.is_none(), "no recipient accepted, so no DATA: {t}");
    lab.sink().assert_no_more(0, Duration::from_millis(500));
}

#[test]
fn departed_with_and_without_copy_and_aliases_are_rewritten() {
    let d = Daemon::start(POLICY);
    let lab = lab_for(&d, false);

    let t = send(
        &lab,
        "sender@example.net",
        &["keep@corp.example"],
        message("keep"),
    );
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    let got = expect_delivery(&lab, "keep", &["cs@corp.example", "keep@corp.example"]);
    let marker = d.loop_marker("keep@corp.example");
    assert!(
        got.iter()
            .all(|m| m.header("X-Handoff-Forwarded").as_ref() == Some(&marker))
    );

    let t = send(
        &lab,
        "sender@example.net",
        &["gone@corp.example"],
        message("gone"),
    );
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    expect_delivery(&lab, "gone", &["cs@corp.example"]);

    let t = send(
        &lab,
        "sender@example.net",
        &["sales@corp.example"],
        message("sales"),
    );
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    expect_delivery(&lab, "sales", &["alice@corp.example", "bob@corp.example"]);
}

#[test]
fn mixed_recipients_get_answers_one_by_one() {
    let d = Daemon::start(POLICY);
    let lab = lab_for(&d, false);
    let rcpts = [
        "dis@corp.example",
        "gone@corp.example",
        "frz@corp.example",
        "alice@corp.example",
    ];
    let t = send(&lab, "sender@example.net", &rcpts, message("mixed"));
    assert_eq!(t.rcpt("dis@corp.example").status(), "550 5.2.1", "{t}");
    assert_eq!(t.rcpt("gone@corp.example").code, 250, "{t}");
    assert_eq!(t.rcpt("frz@corp.example").status(), "450 4.2.1", "{t}");
    assert_eq!(t.rcpt("alice@corp.example").code, 250, "{t}");
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    expect_delivery(&lab, "mixed", &["alice@corp.example", "cs@corp.example"]);
}

#[test]
fn a_disabled_account_cannot_send_authenticated_or_locally() {
    let d = Daemon::start(POLICY);
    let lab = lab_for(&d, true);

    let t = send_authenticated(
        &lab,
        ("dis@corp.example", "secret"),
        "dis@corp.example",
        &["alice@corp.example"],
        message("auth-dis"),
    );
    assert_eq!(
        t.auth.as_ref().map(|r| r.code),
        Some(235),
        "AUTH works: {t}"
    );
    assert_eq!(t.mail.status(), "550 5.7.1", "{t}");

    // An active account authenticates and sends as usual.
    let t = send_authenticated(
        &lab,
        ("alice@corp.example", "secret"),
        "alice@corp.example",
        &["bob@corp.example"],
        message("auth-ok"),
    );
    assert_eq!(t.mail.code, 250, "{t}");
    expect_delivery(&lab, "auth-ok", &["bob@corp.example"]);

    // Local submission: sendmail(1) takes the message, handoff refuses it at end of data, and
    // Postfix bounces it to the sender instead of delivering it.
    let out = lab.sendmail(
        "dis@corp.example",
        &["alice@corp.example"],
        message("local-dis"),
    );
    assert!(out.status.success(), "{out:?}");
    let log = lab.wait_for_log("5.7.1", TIMEOUT);
    assert!(
        log.contains("account disabled, sending is not allowed"),
        "{log}"
    );
    let bounce = wait_for(TIMEOUT, "the bounce to the disabled sender", || {
        lab.sink()
            .all()
            .into_iter()
            .find(|m| m.mail_from.is_empty() && m.rcpt_to == ["dis@corp.example"])
    });
    assert!(
        bounce.text().contains("local-dis"),
        "the bounce quotes the refused message"
    );
    assert!(
        delivered_to(&lab.sink().all(), "local-dis").is_empty(),
        "the refused message was delivered"
    );

    // An active local sender is fine, and its departed recipient is rewritten.
    let out = lab.sendmail(
        "alice@corp.example",
        &["gone@corp.example"],
        message("local-ok"),
    );
    assert!(out.status.success(), "{out:?}");
    expect_delivery(&lab, "local-ok", &["cs@corp.example"]);
}

#[test]
fn a_message_forwarded_once_is_not_forwarded_again() {
    let d = Daemon::start(POLICY);
    let lab = lab_for(&d, false);
    send(
        &lab,
        "sender@example.net",
        &["gone@corp.example"],
        message("twice"),
    );
    let first = expect_delivery(&lab, "twice", &["cs@corp.example"]);
    // The successor's system sends it back to the departed address, header and all.
    let again = first[0].data.clone();
    lab.sink().take();
    let t = send(&lab, "cs@corp.example", &["gone@corp.example"], again);
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    let second = expect_delivery(&lab, "twice", &["gone@corp.example"]);
    assert_eq!(
        second[0].headers("X-Handoff-Forwarded"),
        vec![d.loop_marker("gone@corp.example")],
        "one marker, not two"
    );
}

#[test]
fn killing_handoff_loses_nothing() {
    let mut d = Daemon::start(POLICY);
    let lab = lab_for(&d, false);

    // handoff dies in the middle of an SMTP session: the client is told to retry, and nothing
    // is delivered, rewritten or not.
    let mut c = lab.connect();
    c.ehlo("client.example").unwrap();
    assert_eq!(c.mail_from("sender@example.net").unwrap().code, 250);
    assert_eq!(c.rcpt_to("gone@corp.example").unwrap().code, 250);
    d.kill();
    let data = c.data(message("killed").as_bytes()).unwrap();
    assert_eq!(data.code / 100, 4, "a 4xx so the sender retries: {data}");
    let _ = c.quit();
    lab.sink().assert_no_more(0, Duration::from_millis(500));

    // While handoff is down, new mail is deferred at the SMTP level too.
    let t = send(
        &lab,
        "sender@example.net",
        &["gone@corp.example"],
        message("while-down"),
    );
    let codes = [
        Some(t.mail.code),
        t.rcpts.first().map(|r| r.1.code),
        t.data.as_ref().map(|r| r.code),
    ];
    assert!(codes.iter().flatten().any(|c| c / 100 == 4), "{t}");
    assert!(t.data.as_ref().is_none_or(|r| r.code != 250), "{t}");

    // A local submission waits in Postfix while handoff is down...
    let out = lab.sendmail(
        "alice@corp.example",
        &["gone@corp.example"],
        message("queued-local"),
    );
    assert!(out.status.success(), "{out:?}");
    lab.wait_for_log("4.7.1", TIMEOUT);

    // ...and after a restart the retried message and the local one arrive, rewritten, once.
    d.spawn(&[]);
    let t = send(
        &lab,
        "sender@example.net",
        &["gone@corp.example"],
        message("killed"),
    );
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    expect_delivery(&lab, "killed", &["cs@corp.example"]);
    lab.flush();
    expect_delivery(&lab, "queued-local", &["cs@corp.example"]);
}

/// Control characters in MAIL/RCPT through a real Postfix: Postfix 3.7's smtpd accepts
/// `MAIL FROM:<"a\rRSET"@example.net>` itself and passes the quoted CR (and other controls)
/// on to the milter, which refuses them with 501, so no address decided on differs from the
/// address delivered to (a CR dropped, a NUL cut by a later hop).
#[test]
fn control_characters_in_addresses_are_refused_in_milter_mode() {
    let d = Daemon::start(POLICY);
    let lab = lab_for(&d, false);
    let mut c = crate::support::SmtpClient::connect(lab.smtp_addr()).unwrap();
    assert_eq!(c.ehlo("client.example").unwrap().code, 250);
    let mut said = Vec::new();
    for line in [
        &b"MAIL FROM:<\"a\rRSET\"@example.net>\r\n"[..],
        b"MAIL FROM:<\"a\x01b\"@example.net>\r\n",
    ] {
        c.write_raw(line).unwrap();
        let r = c.read_reply().unwrap();
        said.push(format!(
            "{:?} -> {}",
            String::from_utf8_lossy(line),
            r.status()
        ));
        assert!(r.code >= 500, "{said:?}");
    }
    assert_eq!(c.mail_from("sender@example.net").unwrap().code, 250);
    for line in [
        &b"RCPT TO:<\"a\rRSET\"@corp.example>\r\n"[..],
        b"RCPT TO:<\"a\x01b\"@corp.example>\r\n",
        b"RCPT TO:<\"a\x1bb\"@corp.example>\r\n",
    ] {
        c.write_raw(line).unwrap();
        let r = c.read_reply().unwrap();
        said.push(format!(
            "{:?} -> {}",
            String::from_utf8_lossy(line),
            r.status()
        ));
        assert!(r.code >= 500, "{said:?}");
    }
    assert_eq!(c.rcpt_to("alice@corp.example").unwrap().code, 250);
    assert_eq!(c.data(message("ctl").as_bytes()).unwrap().code, 250);
    let got = lab.sink().wait_for(1, TIMEOUT);
    assert_eq!(got[0].rcpt_to, ["alice@corp.example"]);
}
