//! Internationalized mail (RFC 6530–6533) through a real Postfix with `smtputf8_enable = yes`,
//! in milter and content-filter mode: a UTF-8 local part is forwarded with its envelope intact,
//! an IDN domain is the same domain in either spelling, an auto-reply to a UTF-8 sender goes out
//! with SMTPUTF8, and `archive search --to` finds a message by either spelling of the address.

use std::time::Duration;

use crate::daemon::{Daemon, free_port, wait_for};
use crate::e2e_autoreply::relay_entry;
use crate::e2e_milter::milter_lines;
use crate::support::{Delivered, Lab, LabConfig, SendOptions, Transcript, send_with};

const TIMEOUT: Duration = Duration::from_secs(30);

const SENDER: &str = "发件人@example.net";

fn policy(relay_port: u16) -> String {
    format!(
        r#"[relay]
address = "127.0.0.1:{relay_port}"

[domains]
local = ["corp.example", "公司.中国"]

[templates.departed]
subject = "{{name}} 已离职"
body = "请联系 {{successor}}。"

[accounts."张三@corp.example"]
state = "departed"
name = "张三"
successor = "李四@corp.example"
keep_copy = false
autoreply = "departed"

[accounts."wang@公司.中国"]
state = "disabled"

[accounts."李雷@corp.example"]
state = "disabled"
"#
    )
}

/// The lab's main.cf additions for both modes: SMTPUTF8 on, and the IDN domain relayed (in its
/// A-label form: that is how Postfix compares relay_domains).
fn idn(config: LabConfig) -> LabConfig {
    let mut config = config.main_cf_line("smtputf8_enable = yes");
    config
        .relay_domains
        .push("xn--55qx5d.xn--fiqs8s".to_string());
    config
}

fn message(subject: &str, to: &str) -> String {
    format!(
        "From: 发件人 <{SENDER}>\r\nTo: {to}\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.net>\r\n\r\n你好。\r\n"
    )
}

fn send_utf8(lab: &Lab, rcpts: &[&str], subject: &str) -> Transcript {
    let options = SendOptions {
        smtputf8: true,
        ..SendOptions::default()
    };
    send_with(lab, &options, SENDER, rcpts, message(subject, rcpts[0]))
}

fn with_subject(lab: &Lab, subject: &str) -> Vec<Delivered> {
    lab.sink()
        .all()
        .into_iter()
        .filter(|d| d.header("Subject").as_deref() == Some(subject))
        .collect()
}

fn search_subjects(d: &Daemon, to: &str) -> Vec<String> {
    let (code, out, err) = d.cli(&["archive", "search", "--json", "--to", to]);
    assert_eq!(code, 0, "search --to {to}: {err}");
    let hits: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let mut s: Vec<String> = hits
        .iter()
        .map(|h| h["subject"].as_str().unwrap_or_default().to_string())
        .collect();
    s.sort();
    s
}

/// What both modes must show once the messages are sent: the forward to 李四 only, with the
/// sender's UTF-8 address intact; the auto-reply to the UTF-8 sender; the journal searchable by
/// either spelling.
fn check_common(d: &Daemon, lab: &Lab, mode: &str) {
    let forward = format!("idn-forward-{mode}");
    let got = wait_for(TIMEOUT, "the forward at the sink", || {
        Some(with_subject(lab, &forward)).filter(|v| !v.is_empty())
    });
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].mail_from, SENDER);
    assert_eq!(got[0].rcpt_to, ["李四@corp.example"]);
    assert!(got[0].smtputf8, "passed on with SMTPUTF8: {got:#?}");
    assert!(got[0].text().contains("你好。"));

    let reply = wait_for(TIMEOUT, "the auto-reply to the UTF-8 sender", || {
        lab.sink().all().into_iter().find(|m| {
            m.mail_from.is_empty()
                && m.rcpt_to == [SENDER]
                && m.header("In-Reply-To").as_deref() == Some(&format!("<{forward}@example.net>"))
        })
    });
    assert_eq!(
        reply.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert!(reply.smtputf8, "the reply went out with SMTPUTF8");

    let plain = format!("idn-plain-{mode}");
    wait_for(TIMEOUT, "the message to li at the sink", || {
        Some(with_subject(lab, &plain)).filter(|v| !v.is_empty())
    });
    // Nothing for the disabled account, nothing else for the forward.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(with_subject(lab, &forward).len(), 1);
    assert!(
        lab.sink()
            .all()
            .iter()
            .all(|m| !m.rcpt_to.iter().any(|r| r.starts_with("wang@"))),
        "mail for the disabled account was delivered"
    );

    for spelling in [
        "li@公司.中国",
        "li@xn--55qx5d.xn--fiqs8s",
        "LI@XN--55QX5D.xn--fiqs8s",
    ] {
        assert_eq!(search_subjects(d, spelling), [plain.as_str()], "{spelling}");
    }
    for spelling in ["张三@corp.example", "张三@CORP.example"] {
        assert_eq!(
            search_subjects(d, spelling),
            [forward.as_str()],
            "{spelling}"
        );
    }
    assert_eq!(search_subjects(d, "李四@corp.example"), [forward.as_str()]);
}

#[test]
fn utf8_mail_in_milter_mode() {
    let relay = free_port();
    let d = Daemon::start(&policy(relay));
    let mut config = idn(LabConfig::default()).master_cf_entry(relay_entry(relay));
    for line in milter_lines(d.milter_port) {
        config = config.main_cf_line(line);
    }
    let lab = Lab::start(config);

    let t = send_utf8(&lab, &["张三@corp.example"], "idn-forward-milter");
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    // The disabled account written with A-labels: refused at RCPT.
    let t = send_utf8(&lab, &["wang@xn--55qx5d.xn--fiqs8s"], "idn-disabled-milter");
    let r = t.rcpt("wang@xn--55qx5d.xn--fiqs8s");
    assert_eq!((r.code, r.enhanced.as_deref()), (550, Some("5.2.1")), "{t}");
    // A UTF-8 local part, refused with a reply that names it.
    let t = send_utf8(&lab, &["李雷@Corp.Example"], "idn-disabled-utf8-milter");
    let r = t.rcpt("李雷@Corp.Example");
    assert_eq!((r.code, r.enhanced.as_deref()), (550, Some("5.2.1")), "{t}");
    let t = send_utf8(&lab, &["li@xn--55qx5d.xn--fiqs8s"], "idn-plain-milter");
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    check_common(&d, &lab, "milter");
}

#[test]
fn utf8_mail_in_content_filter_mode() {
    let reinject = free_port();
    let d = Daemon::start_content_filter(&policy(reinject), &format!("127.0.0.1:{reinject}"));
    let lab = Lab::start(idn(
        LabConfig::default().content_filter(d.lmtp_port.unwrap(), reinject)
    ));

    let t = send_utf8(&lab, &["张三@corp.example"], "idn-forward-lmtp");
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    let t = send_utf8(&lab, &["wang@xn--55qx5d.xn--fiqs8s"], "idn-disabled-lmtp");
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    let t = send_utf8(&lab, &["li@xn--55qx5d.xn--fiqs8s"], "idn-plain-lmtp");
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    // Postfix bounces the disabled recipient to the UTF-8 sender with handoff's 5.2.1.
    wait_for(TIMEOUT, "the bounce for wang", || {
        lab.sink().all().into_iter().find(|m| {
            let text = m.text();
            m.mail_from.is_empty()
                && m.rcpt_to == [SENDER]
                && text.contains("Subject: idn-disabled-lmtp\r\n")
                && text.contains("Final-Recipient: rfc822; wang@xn--55qx5d.xn--fiqs8s")
                && text.contains("Status: 5.2.1")
        })
    });
    check_common(&d, &lab, "lmtp");
}
