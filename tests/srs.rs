//! SRS through a real Postfix, in milter and content-filter mode: a forward to a successor
//! outside the company arrives with an SRS0 envelope sender, one to a successor inside with the
//! original; a bounce to that SRS0 address reaches the original sender; a forged and an expired
//! SRS address are refused with 5.1.1.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use handoff::srs::{Reversed, Secret, Srs, day_number};

use crate::daemon::{Daemon, free_port, wait_for};
use crate::e2e_autoreply::relay_entry;
use crate::e2e_milter::milter_lines;
use crate::support::{Delivered, Lab, LabConfig, send};

const TIMEOUT: Duration = Duration::from_secs(30);
const SENDER: &str = "Ann@example.net";
const SRS_DOMAIN: &str = "srs.corp.example";
const SECRET: &str = "e2e-srs-secret";

/// The secret file (0600) in its own directory, kept alive by the returned guard.
fn secret_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("srs.secrets");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, path)
}

fn policy(relay_port: u16, secret: &std::path::Path) -> String {
    format!(
        r#"[relay]
address = "127.0.0.1:{relay_port}"

[domains]
local = ["corp.example"]

[srs]
domain = "{SRS_DOMAIN}"
secret_file = "{}"

[accounts."gone@corp.example"]
state = "departed"
successor = "new@outside.example"
keep_copy = false

[accounts."moved@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false
"#,
        secret.display()
    )
}

/// The lab relays the successor's domain and the SRS domain (Postfix must accept mail for it,
/// or bounces never reach handoff).
fn relaying(mut config: LabConfig) -> LabConfig {
    config.relay_domains.push("outside.example".into());
    config.relay_domains.push(SRS_DOMAIN.into());
    config
}

/// The rewriter the daemon uses, for the test's own checks and its forged and expired addresses.
fn rewriter() -> Srs {
    Srs::new(SRS_DOMAIN, vec![Secret::new(SECRET)]).unwrap()
}

fn today() -> i64 {
    day_number(jiff::Zoned::now().date())
}

fn message(to: &str, subject: &str) -> String {
    format!(
        "From: <{SENDER}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.net>\r\n\r\nhello\r\n"
    )
}

fn with_subject(lab: &Lab, subject: &str) -> Delivered {
    wait_for(TIMEOUT, subject, || {
        lab.sink()
            .all()
            .into_iter()
            .find(|d| d.header("Subject").as_deref() == Some(subject))
    })
}

fn send_ok(lab: &Lab, from: &str, to: &str, subject: &str) {
    let t = send(lab, from, &[to], message(to, subject));
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
}

/// The forwards and the bounce, alike in both modes. Returns the SRS0 address the outside
/// forward carried.
fn forwards_and_bounce(lab: &Lab, mode: &str) -> String {
    let outside = format!("srs-outside-{mode}");
    send_ok(lab, SENDER, "gone@corp.example", &outside);
    let got = with_subject(lab, &outside);
    assert_eq!(got.rcpt_to, ["new@outside.example"]);
    let srs0 = got.mail_from.clone();
    assert!(
        srs0.starts_with("SRS0=") && srs0.ends_with(&format!("=example.net=Ann@{SRS_DOMAIN}")),
        "{srs0}"
    );
    assert_eq!(
        rewriter().reverse(&srs0, today()),
        Ok(Reversed::Address(SENDER.to_string()))
    );

    let inside = format!("srs-inside-{mode}");
    send_ok(lab, SENDER, "moved@corp.example", &inside);
    let got = with_subject(lab, &inside);
    assert_eq!(got.rcpt_to, ["cs@corp.example"]);
    assert_eq!(got.mail_from, SENDER);

    // The outside server bounces the forward: null sender, to the SRS0 address.
    let bounce = format!("srs-bounce-{mode}");
    send_ok(lab, "", &srs0, &bounce);
    let got = with_subject(lab, &bounce);
    assert_eq!(got.mail_from, "");
    assert_eq!(got.rcpt_to, [SENDER.to_ascii_lowercase()]);
    srs0
}

/// A forged and an expired SRS address (from a genuine one of the daemon's).
fn bad_addresses(srs0: &str) -> [String; 2] {
    let forged = srs0.replace("=Ann@", "=Eve@");
    let expired = rewriter().forward(SENDER, today() - 30).unwrap();
    [forged, expired]
}

#[test]
fn srs_in_milter_mode() {
    let (_keep, secret) = secret_file();
    let relay = free_port();
    let d = Daemon::start(&policy(relay, &secret));
    let mut config = relaying(LabConfig::default()).master_cf_entry(relay_entry(relay));
    for line in milter_lines(d.milter_port) {
        config = config.main_cf_line(line);
    }
    let lab = Lab::start(config);

    let srs0 = forwards_and_bounce(&lab, "milter");
    for bad in bad_addresses(&srs0) {
        let t = send(&lab, "", &[&bad], message(&bad, "srs-bad-milter"));
        let r = t.rcpt(&bad);
        assert_eq!((r.code, r.enhanced.as_deref()), (550, Some("5.1.1")), "{t}");
    }
    assert!(!d.log_text().contains(SECRET));
}

#[test]
fn srs_in_content_filter_mode() {
    let (_keep, secret) = secret_file();
    let reinject = free_port();
    let d =
        Daemon::start_content_filter(&policy(reinject, &secret), &format!("127.0.0.1:{reinject}"));
    let lab = Lab::start(relaying(
        LabConfig::default().content_filter(d.lmtp_port.unwrap(), reinject),
    ));

    let srs0 = forwards_and_bounce(&lab, "lmtp");
    // Postfix takes the message and hands it to handoff, which refuses the SRS recipient at
    // its RCPT; Postfix then bounces it to the sender with handoff's status.
    for (i, bad) in bad_addresses(&srs0).iter().enumerate() {
        let subject = format!("srs-bad-lmtp-{i}");
        send_ok(&lab, "mailer@example.net", bad, &subject);
        wait_for(TIMEOUT, "the bounce of the refused SRS address", || {
            lab.sink().all().into_iter().find(|m| {
                let text = m.text();
                m.mail_from.is_empty()
                    && m.rcpt_to == ["mailer@example.net"]
                    && text.contains(&format!("Subject: {subject}\r\n"))
                    && text.contains("Status: 5.1.1")
            })
        });
    }
    assert!(!d.log_text().contains(SECRET));
}
