//! Tests of the lab itself, against a real Postfix with no filter: mail reaches the sink with
//! its envelope, local submission works, SMTP AUTH works, labs run side by side, and the
//! sink can play a refusing or deferring next hop.

use std::thread;
use std::time::Duration;

use crate::support::{Lab, LabConfig, SinkMode, parse_main_cf, send, send_authenticated};

/// Generous: the machines running these tests are small and shared.
const WAIT: Duration = Duration::from_secs(30);
/// How long a test gives a stray extra delivery to show up.
const QUIET: Duration = Duration::from_millis(700);

fn message(subject: &str) -> String {
    format!(
        "From: Sender <sender@example.net>\r\nTo: team@corp.example\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.net>\r\n\r\nHello.\r\n.leading dot survives\r\n"
    )
}

#[test]
fn smtp_message_to_two_recipients_arrives_with_its_envelope() {
    let lab = Lab::start(LabConfig::default());
    let transcript = send(
        &lab,
        "sender@example.net",
        &["alice@corp.example", "bob@corp.example"],
        message("two-rcpts"),
    );
    assert_eq!(transcript.greeting.code, 220, "{transcript}");
    assert_eq!(transcript.mail.status(), "250 2.1.0", "{transcript}");
    assert_eq!(
        transcript.rcpt("alice@corp.example").status(),
        "250 2.1.5",
        "{transcript}"
    );
    assert_eq!(
        transcript.rcpt("bob@corp.example").status(),
        "250 2.1.5",
        "{transcript}"
    );
    let data = transcript.data.as_ref().expect("DATA was sent");
    assert_eq!(data.status(), "250 2.0.0", "{transcript}");
    let queue_id = transcript.queue_id().expect("Postfix names the queue id");

    let delivered = lab.sink().wait_for(1, WAIT);
    let mut rcpts = delivered[0].rcpt_to.clone();
    rcpts.sort();
    assert_eq!(delivered[0].mail_from, "sender@example.net");
    assert_eq!(rcpts, ["alice@corp.example", "bob@corp.example"]);
    assert_eq!(delivered[0].header("Subject").as_deref(), Some("two-rcpts"));
    assert!(
        delivered[0]
            .text()
            .ends_with("\r\nHello.\r\n.leading dot survives\r\n"),
        "{:?}",
        delivered[0]
    );
    // The lab's Postfix handled it: its Received header names the queue id.
    let received = delivered[0].header("Received").expect("a Received header");
    assert!(received.contains(queue_id), "{received}");
    lab.sink().assert_no_more(1, QUIET);
    lab.wait_queue_empty(WAIT);
}

#[test]
fn local_sendmail_submission_arrives() {
    let lab = Lab::start(LabConfig::default());
    let output = lab.sendmail(
        "local-sender@example.net",
        &["carol@corp.example"],
        "Subject: local\n\nsubmitted with sendmail\n.\nafter a lone dot\n",
    );
    assert!(
        output.status.success(),
        "sendmail: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let delivered = lab.sink().wait_for(1, WAIT);
    assert_eq!(delivered[0].mail_from, "local-sender@example.net");
    assert_eq!(delivered[0].rcpt_to, ["carol@corp.example"]);
    assert_eq!(delivered[0].header("Subject").as_deref(), Some("local"));
    // sendmail -oi: the lone "." is content, not the end of the message.
    assert!(
        delivered[0]
            .text()
            .ends_with("\r\n.\r\nafter a lone dot\r\n"),
        "{:?}",
        delivered[0]
    );
    // It came the local way: pickup(8) took it from the maildrop queue.
    let pickup = lab.wait_for_log("postfix/pickup", WAIT);
    assert!(
        pickup.contains("uid=0 from=<local-sender@example.net>"),
        "{pickup}"
    );
    lab.sink().assert_no_more(1, QUIET);
}

#[test]
fn auth_plain_succeeds_with_the_right_password_and_gets_535_with_a_wrong_one() {
    let lab = Lab::start(LabConfig {
        sasl_users: vec![("user2@corp.example", "secret"), ("local-only", "pw2")],
        ..LabConfig::default()
    });

    let mut client = lab.connect();
    let ehlo = client.ehlo("client.example").unwrap();
    assert!(ehlo.text.lines().any(|l| l == "AUTH PLAIN LOGIN"), "{ehlo}");
    let ok = client.auth_plain("user2@corp.example", "secret").unwrap();
    assert_eq!(ok.status(), "235 2.7.0", "{ok}");
    client.quit().unwrap();

    // A user without a domain lives in the lab's realm (smtpd_sasl_local_domain).
    let mut client = lab.connect();
    client.ehlo("client.example").unwrap();
    assert_eq!(client.auth_plain("local-only", "pw2").unwrap().code, 235);
    client.quit().unwrap();

    for (user, password) in [
        ("user2@corp.example", "wrong"),
        ("user2@corp.example", ""),
        ("nobody@corp.example", "secret"),
        ("user2@example.net", "secret"),
    ] {
        let mut client = lab.connect();
        client.ehlo("client.example").unwrap();
        let refused = client.auth_plain(user, password).unwrap();
        assert_eq!(
            refused.status(),
            "535 5.7.8",
            "{user}/{password:?}: {refused}"
        );
        client.quit().unwrap();
    }

    // A whole authenticated transaction: Postfix logs the SASL login it would give milters.
    let transcript = send_authenticated(
        &lab,
        ("user2@corp.example", "secret"),
        "user2@corp.example",
        &["dave@example.net"],
        message("authenticated"),
    );
    assert_eq!(
        transcript.auth.as_ref().map(|r| r.code),
        Some(235),
        "{transcript}"
    );
    assert_eq!(
        transcript.data.as_ref().map(|r| r.code),
        Some(250),
        "{transcript}"
    );
    let login = lab.wait_for_log("sasl_method=PLAIN, sasl_username=user2@corp.example", WAIT);
    assert!(login.contains("client=localhost[127.0.0.1]"), "{login}");
    assert_eq!(
        lab.sink().wait_for(1, WAIT)[0].rcpt_to,
        ["dave@example.net"]
    );
}

#[test]
fn two_labs_run_side_by_side_without_interfering() {
    // Started concurrently, to exercise parallel setup as well as parallel running.
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| Lab::start(LabConfig::default()));
        let b = s.spawn(|| Lab::start(LabConfig::default()));
        (a.join().expect("lab a"), b.join().expect("lab b"))
    });
    assert_ne!(a.smtp_port(), b.smtp_port());
    assert_ne!(a.sink().port(), b.sink().port());
    assert_ne!(a.dir(), b.dir());

    let to_a = send(
        &a,
        "s@example.net",
        &["only-a@corp.example"],
        message("for-a"),
    );
    assert_eq!(to_a.data.as_ref().map(|r| r.code), Some(250), "{to_a}");
    let to_b = send(
        &b,
        "s@example.net",
        &["only-b@corp.example"],
        message("for-b"),
    );
    assert_eq!(to_b.data.as_ref().map(|r| r.code), Some(250), "{to_b}");
    let local = a.sendmail(
        "s@example.net",
        &["local-a@corp.example"],
        "Subject: local-a\n\nx\n",
    );
    assert!(local.status.success());

    let got_a = a.sink().wait_for(2, WAIT);
    let mut rcpts_a: Vec<&str> = got_a.iter().map(|d| d.rcpt_to[0].as_str()).collect();
    rcpts_a.sort();
    assert_eq!(rcpts_a, ["local-a@corp.example", "only-a@corp.example"]);
    let got_b = b.sink().wait_for(1, WAIT);
    assert_eq!(got_b[0].rcpt_to, ["only-b@corp.example"]);
    assert_eq!(got_b[0].header("Subject").as_deref(), Some("for-b"));
    a.sink().assert_no_more(2, QUIET);
    b.sink().assert_no_more(1, QUIET);

    // Each log tells only its own story (postlogd writes asynchronously: wait for the lines).
    a.wait_for_log("to=<only-a@corp.example>", WAIT);
    a.wait_for_log("to=<local-a@corp.example>", WAIT);
    b.wait_for_log("to=<only-b@corp.example>", WAIT);
    assert!(!a.log().contains("only-b@corp.example"), "{}", a.log());
    assert!(!b.log().contains("a@corp.example>"), "{}", b.log());
}

#[test]
fn refusing_next_hop_gets_one_recipient_bounced_to_the_sender() {
    let lab = Lab::start(LabConfig::default());
    lab.sink().reply_to_rcpt(
        "gone@corp.example",
        "550 5.1.1 <gone@corp.example>: user unknown",
    );
    let transcript = send(
        &lab,
        "sender@example.net",
        &["gone@corp.example", "here@corp.example"],
        message("partly-refused"),
    );
    // Postfix itself accepts both: the refusal comes later, from the next hop.
    assert_eq!(
        transcript.rcpt("gone@corp.example").code,
        250,
        "{transcript}"
    );

    let delivered = lab.sink().wait_for(2, WAIT);
    let original = delivered
        .iter()
        .find(|d| !d.mail_from.is_empty())
        .expect("the message");
    assert_eq!(original.rcpt_to, ["here@corp.example"]);
    let bounce = delivered
        .iter()
        .find(|d| d.mail_from.is_empty())
        .expect("a bounce");
    assert_eq!(bounce.rcpt_to, ["sender@example.net"]);
    let text = bounce.text();
    assert!(
        text.contains("<gone@corp.example>") && text.contains("550 5.1.1"),
        "{text}"
    );
    lab.sink().assert_no_more(2, QUIET);
}

#[test]
fn deferred_mail_waits_in_the_queue_until_the_next_hop_takes_it() {
    let lab = Lab::start(LabConfig::default());
    lab.sink()
        .reply_to_rcpt("later@corp.example", "450 4.2.0 try again later");
    let transcript = send(
        &lab,
        "sender@example.net",
        &["later@corp.example"],
        message("deferred"),
    );
    let queue_id = transcript.queue_id().expect("accepted").to_string();

    let deferred = lab.wait_for_log("status=deferred", WAIT);
    assert!(
        deferred.contains(&queue_id) && deferred.contains("450 4.2.0"),
        "{deferred}"
    );
    // The lab retries every second or two, so the message moves between `deferred` and
    // `active`, and showq(8) lists it twice when it walks both while qmgr(8) moves it: wait for
    // one listing in `deferred`, which carries the reason of the last attempt.
    let queue = lab.wait_queue(WAIT, |queue| {
        queue.iter().all(|m| m.queue_id == queue_id)
            && queue.iter().any(|m| m.queue_name == "deferred")
    });
    let queued = queue
        .iter()
        .find(|m| m.queue_name == "deferred")
        .expect("listed in deferred");
    assert_eq!(queued.sender, "sender@example.net");
    let reason = queued.recipients[0].delay_reason.as_deref().unwrap_or("");
    assert!(reason.contains("450 4.2.0 try again later"), "{queued:?}");
    assert!(lab.sink().all().is_empty());

    lab.sink().reset_replies();
    lab.flush();
    let delivered = lab.sink().wait_for(1, WAIT);
    assert_eq!(delivered[0].rcpt_to, ["later@corp.example"]);
    lab.wait_queue_empty(WAIT);
    assert_eq!(lab.queue_len(), 0);
}

#[test]
fn lmtp_sink_answers_each_recipient_after_data() {
    let lab = Lab::start(LabConfig {
        sink_mode: SinkMode::Lmtp,
        ..LabConfig::default()
    });
    lab.sink()
        .reply_to_data_for("full@corp.example", "452 4.2.2 mailbox full");
    send(
        &lab,
        "sender@example.net",
        &["ok@corp.example", "full@corp.example"],
        message("lmtp"),
    );

    let delivered = lab.sink().wait_for(1, WAIT);
    assert_eq!(delivered[0].rcpt_to, ["ok@corp.example"]);
    let deferred = lab.wait_for_log("to=<full@corp.example>", WAIT);
    assert!(
        deferred.contains("status=deferred") && deferred.contains("452 4.2.2"),
        "{deferred}"
    );
    assert!(
        lab.wait_for_log("to=<ok@corp.example>", WAIT)
            .contains("status=sent")
    );
}

#[test]
fn config_lines_from_a_file_and_placeholders_reach_postfix() {
    let dir = tempfile::tempdir().unwrap();
    let snippet = dir.path().join("snippet.cf");
    std::fs::write(
        &snippet,
        "# a snippet like those in deploy/postfix/\n\nsmtpd_banner = $myhostname ESMTP\n    {banner_word}\n\
         smtpd_recipient_restrictions =\n    check_recipient_access inline:{ blocked@corp.example=REJECT }\n",
    )
    .unwrap();
    let lab = Lab::start(
        LabConfig::default()
            .main_cf_file(&snippet)
            .var("banner_word", "lab-banner-42")
            .main_cf_line("smtpd_helo_required = no")
            // A later line for the same parameter wins.
            .main_cf_line("smtpd_helo_required = yes"),
    );
    assert_eq!(
        lab.connect().greeting().text,
        "lab.example ESMTP lab-banner-42"
    );
    let t = send(
        &lab,
        "s@example.net",
        &["blocked@corp.example", "fine@corp.example"],
        message("cfg"),
    );
    assert!(t.rcpt("blocked@corp.example").is_permanent(), "{t}");
    assert!(t.rcpt("fine@corp.example").is_positive(), "{t}");
    let mut client = lab.connect();
    assert_eq!(
        client.mail_from("s@example.net").unwrap().code,
        503,
        "HELO required"
    );

    // The snippet parser also reports every bad line of a broken file at once.
    let errors = parse_main_cf("a = 1\nbroken\n  x\nb c = 2\n", "bad.cf").unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn postfix_check_finds_nothing_wrong_with_a_lab() {
    let lab = Lab::start(LabConfig {
        sasl_users: vec![("user2@corp.example", "secret")],
        ..LabConfig::default()
    });
    // postfix(1) check: ownership and permissions of queue, config and data directories.
    let output = lab.postfix_tool("postfix", &["check"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(said, "", "postfix check complained");
    let log = lab.log();
    assert!(
        !log.contains("warning:") && !log.contains("fatal:"),
        "{log}"
    );
}
