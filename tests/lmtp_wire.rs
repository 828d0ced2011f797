//! The content-filter listener on the wire, without Postfix: a raw client talks LMTP or SMTP to
//! handoff, whose next hop is the test sink (SMTP or LMTP). Per-recipient status, smuggling,
//! limits, timeouts, the connection cap and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use handoff::lmtp::server::{Limits, Services, serve};
use handoff::policy::{NextHop, Policy};
use handoff::runtime::listen::Listener;
use handoff::runtime::store::PolicyStore;

use crate::daemon::{Daemon, free_port, wait_for};
use crate::scenarios::{POLICY, journaled, message};
use crate::support::{Reply, Sink, SinkMode, SmtpClient, encode_data};

fn client(d: &Daemon) -> SmtpClient {
    let addr: SocketAddr = ([127, 0, 0, 1], d.lmtp_port.unwrap()).into();
    SmtpClient::connect(addr).unwrap()
}

/// LHLO, MAIL, the RCPTs (their replies returned).
fn lmtp_envelope(c: &mut SmtpClient, rcpts: &[&str]) -> Vec<Reply> {
    assert_eq!(c.command("LHLO mx.example").unwrap().code, 250);
    assert_eq!(c.mail_from("sender@example.net").unwrap().code, 250);
    rcpts.iter().map(|r| c.rcpt_to(r).unwrap()).collect()
}

/// DATA, the message, and one reply per accepted recipient.
fn lmtp_data(c: &mut SmtpClient, raw: &[u8], accepted: usize) -> Vec<Reply> {
    assert_eq!(c.command("DATA").unwrap().code, 354);
    c.write_raw(raw).unwrap();
    (0..accepted).map(|_| c.read_reply().unwrap()).collect()
}

#[test]
fn lmtp_next_hop_answers_map_to_each_original_recipient() {
    let sink = Sink::start(SinkMode::Lmtp).unwrap();
    sink.reply_to_data_for("cs@corp.example", "452 4.2.2 mailbox full");
    sink.reply_to_rcpt(
        "bob@corp.example",
        "550 5.1.1 <bob@corp.example>: no such user",
    );
    let d = Daemon::start_content_filter(POLICY, &format!("lmtp:127.0.0.1:{}", sink.port()));
    let mut c = client(&d);
    let rcpts = lmtp_envelope(
        &mut c,
        &[
            "gone@corp.example",
            "dis@corp.example",
            "alice@corp.example",
            "sales@corp.example",
        ],
    );
    let codes: Vec<u16> = rcpts.iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 550, 250, 250]);
    let ends = lmtp_data(&mut c, &encode_data(message("per-rcpt").as_bytes()), 3);
    // gone → cs (deferred by the LDA); alice delivered; sales → alice + bob (bob refused).
    assert_eq!(ends[0].status(), "452 4.2.2", "{ends:?}");
    assert!(ends[0].text.contains("<gone@corp.example>") && ends[0].text.contains("mailbox full"));
    assert_eq!(ends[1].code, 250, "{ends:?}");
    assert_eq!(ends[2].status(), "550 5.1.1", "{ends:?}");
    assert!(
        ends[2].text.contains("<sales@corp.example>")
            && ends[2].text.contains("<bob@corp.example>")
    );
    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(
        got[0].rcpt_to,
        ["alice@corp.example"],
        "only alice was delivered"
    );
    assert_eq!(
        got[0].header("X-Handoff-Forwarded"),
        Some(d.loop_marker("gone@corp.example"))
    );
    // One journal record, with the decisions; the next hop's answers are in the replies.
    let records = journaled(&d.journal_dir());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].origin, "lmtp");
    assert_eq!(c.quit().unwrap().code, 221);
}

#[test]
fn smtp_dialect_gets_one_reply_and_the_smtp_next_hop_the_rewritten_envelope() {
    let sink = Sink::start(SinkMode::Smtp).unwrap();
    let d = Daemon::start_content_filter(POLICY, &format!("127.0.0.1:{}", sink.port()));
    let mut c = client(&d);
    assert_eq!(c.ehlo("mx.example").unwrap().code, 250);
    assert_eq!(c.mail_from("sender@example.net").unwrap().code, 250);
    assert_eq!(c.rcpt_to("keep@corp.example").unwrap().code, 250);
    assert_eq!(c.rcpt_to("frz@corp.example").unwrap().status(), "450 4.2.1");
    let end = c.data(message("smtp").as_bytes()).unwrap();
    assert_eq!(end.code, 250, "{end}");
    let got = sink.wait_for(1, Duration::from_secs(10));
    let mut rcpts = got[0].rcpt_to.clone();
    rcpts.sort();
    assert_eq!(rcpts, ["cs@corp.example", "keep@corp.example"]);
    // A second message on the same connection reuses the next hop's connection too.
    assert_eq!(c.mail_from("sender@example.net").unwrap().code, 250);
    assert_eq!(c.rcpt_to("alice@corp.example").unwrap().code, 250);
    assert_eq!(c.data(message("smtp-2").as_bytes()).unwrap().code, 250);
    sink.wait_for(2, Duration::from_secs(10));
}

#[test]
fn a_next_hop_that_is_down_defers_every_recipient_and_nothing_is_journaled() {
    let d = Daemon::start_content_filter(POLICY, &format!("127.0.0.1:{}", free_port()));
    let mut c = client(&d);
    lmtp_envelope(&mut c, &["gone@corp.example", "alice@corp.example"]);
    let ends = lmtp_data(&mut c, &encode_data(message("down").as_bytes()), 2);
    for e in &ends {
        assert_eq!(e.status(), "451 4.4.1", "{ends:?}");
    }
    assert!(journaled(&d.journal_dir()).is_empty());
    assert_eq!(d.metric("handoff_next_hop_errors_total"), Some(1.0));
}

/// The SMTP smuggling variants sent for real: each is refused for every recipient, the smuggled
/// transaction is never seen as commands, and the next hop receives nothing.
#[test]
fn smuggled_end_of_data_sequences_are_refused_and_never_reach_the_next_hop() {
    let sink = Sink::start(SinkMode::Smtp).unwrap();
    let d = Daemon::start_content_filter(POLICY, &format!("127.0.0.1:{}", sink.port()));
    let variants: &[&[u8]] = &[
        b"\n.\n",
        b"\r.\r",
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\n..\n",
        b"\n.\r",
        b"\r.\n",
        b"\r\r\n.\r\r\n",
    ];
    let mut c = client(&d);
    for v in variants {
        lmtp_envelope(&mut c, &["alice@corp.example", "gone@corp.example"]);
        let mut raw = b"Subject: smuggle\r\n\r\nbefore".to_vec();
        raw.extend_from_slice(v);
        raw.extend_from_slice(
            b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@corp.example>\r\nDATA\r\nsmuggled\r\n.\r\n",
        );
        let ends = lmtp_data(&mut c, &raw, 2);
        let shown = String::from_utf8_lossy(v).escape_debug().to_string();
        for e in &ends {
            assert_eq!(e.status(), "554 5.6.0", "{shown}: {ends:?}");
        }
        // In step: the next command is answered as a command.
        assert_eq!(c.noop().unwrap().code, 250, "{shown}");
    }
    sink.assert_no_more(0, Duration::from_millis(300));
    assert!(journaled(&d.journal_dir()).is_empty());
}

/// A quoted local part reaches the next hop quoted (RFC 5321 section 4.1.2), as one address:
/// written raw, `"victim@evil.example> NOTIFY=NEVER …"@corp.example` would be a different
/// recipient with injected parameters, and `"john doe"@corp.example` a syntax error.
#[test]
fn quoted_local_parts_reach_the_next_hop_as_one_quoted_address() {
    let sink = Sink::start(SinkMode::Smtp).unwrap();
    let d = Daemon::start_content_filter(POLICY, &format!("127.0.0.1:{}", sink.port()));
    let mut c = client(&d);
    let injected = r#""victim@evil.example> NOTIFY=NEVER ORCPT=rfc822;x"@corp.example"#;
    let spaced = r#""john doe"@corp.example"#;
    let sender = r#""x(y)z"@example.net"#;
    assert_eq!(c.command("LHLO mx.example").unwrap().code, 250);
    assert_eq!(c.mail_from(sender).unwrap().code, 250);
    assert_eq!(c.rcpt_to(injected).unwrap().code, 250);
    assert_eq!(c.rcpt_to(spaced).unwrap().code, 250);
    let ends = lmtp_data(&mut c, &encode_data(message("quoted").as_bytes()), 2);
    assert!(ends.iter().all(|r| r.code == 250), "{ends:?}");
    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(got[0].mail_from, sender);
    assert_eq!(got[0].rcpt_to, [injected, spaced]);
    sink.assert_no_more(1, Duration::from_millis(300));
}

/// A NUL in the content is refused like a bare CR or LF (`CRLF NUL . CRLF` ends the data for
/// a next hop that drops NULs), and the refusal is counted and logged like any message.
#[test]
fn a_nul_in_the_content_is_refused_counted_and_logged() {
    let sink = Sink::start(SinkMode::Smtp).unwrap();
    let d = Daemon::start_content_filter(POLICY, &format!("127.0.0.1:{}", sink.port()));
    let mut c = client(&d);
    lmtp_envelope(&mut c, &["alice@corp.example", "gone@corp.example"]);
    let raw = b"Message-ID: <nul-smuggle@example.net>\r\nSubject: nul\r\n\r\nbefore\r\n\0.\r\n\
MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@corp.example>\r\nDATA\r\nsmuggled\r\n.\r\n";
    let ends = lmtp_data(&mut c, raw, 2);
    for e in &ends {
        assert_eq!(e.status(), "554 5.6.0", "{ends:?}");
    }
    assert_eq!(c.noop().unwrap().code, 250, "in step");
    sink.assert_no_more(0, Duration::from_millis(300));
    assert!(journaled(&d.journal_dir()).is_empty());
    assert_eq!(
        d.metric(r#"handoff_messages_total{outcome="rejected"}"#),
        Some(1.0)
    );
    wait_for(Duration::from_secs(5), "the message's log line", || {
        d.log_text()
            .lines()
            .find(|l| l.contains("nul-smuggle@example.net") && l.contains("sender@example.net"))
            .map(str::to_string)
    });
}

/// A message refused at end of data is a message like any other: counted in
/// `handoff_messages_total{outcome="rejected"}` and logged with its sender and Message-ID.
#[test]
fn an_end_of_data_refusal_is_counted_and_logged() {
    let sink = Sink::start(SinkMode::Smtp).unwrap();
    let d = Daemon::start_content_filter(POLICY, &format!("127.0.0.1:{}", sink.port()));
    let mut c = client(&d);
    lmtp_envelope(&mut c, &["alice@corp.example"]);
    let raw = b"Message-ID: <bare-lf@example.net>\r\nSubject: lf\r\n\r\nbare\nlf\r\n.\r\n";
    assert_eq!(lmtp_data(&mut c, raw, 1)[0].status(), "554 5.6.0");
    assert_eq!(
        d.metric(r#"handoff_messages_total{outcome="rejected"}"#),
        Some(1.0)
    );
    let line = wait_for(Duration::from_secs(5), "the message's log line", || {
        d.log_text()
            .lines()
            .find(|l| l.contains("bare-lf@example.net"))
            .map(str::to_string)
    });
    assert!(
        line.contains("sender@example.net") && line.contains("rejected"),
        "{line}"
    );
    sink.assert_no_more(0, Duration::from_millis(100));
}

/// Control characters in MAIL/RCPT are refused, so the address decided on is the address
/// sent: the SMTP parser would drop the CR (`aRSET@…`) and keep the NUL.
#[test]
fn control_characters_in_addresses_are_refused_on_the_wire() {
    let sink = Sink::start(SinkMode::Smtp).unwrap();
    let d = Daemon::start_content_filter(POLICY, &format!("127.0.0.1:{}", sink.port()));
    let mut c = client(&d);
    assert_eq!(c.command("LHLO mx.example").unwrap().code, 250);
    c.write_raw(b"MAIL FROM:<\"a\rRSET\"@example.net>\r\n")
        .unwrap();
    assert_eq!(c.read_reply().unwrap().status(), "501 5.1.7");
    assert_eq!(c.mail_from("sender@example.net").unwrap().code, 250);
    c.write_raw(b"RCPT TO:<\"a\rRSET\"@corp.example>\r\n")
        .unwrap();
    assert_eq!(c.read_reply().unwrap().status(), "501 5.1.3");
    c.write_raw(b"RCPT TO:<\"a\0b\"@corp.example>\r\n").unwrap();
    assert_eq!(c.read_reply().unwrap().status(), "501 5.1.3");
    assert_eq!(c.rcpt_to("alice@corp.example").unwrap().code, 250);
    let ends = lmtp_data(&mut c, &encode_data(message("ctl").as_bytes()), 1);
    assert_eq!(ends[0].code, 250, "{ends:?}");
    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(got[0].rcpt_to, ["alice@corp.example"]);
}

#[test]
fn long_lines_and_big_messages_get_the_rfc_5321_replies() {
    let sink = Sink::start(SinkMode::Smtp).unwrap();
    let d = Daemon::start_content_filter(POLICY, &format!("127.0.0.1:{}", sink.port()));
    let mut c = client(&d);
    let long_command = format!("NOOP {}", "x".repeat(3000));
    assert_eq!(c.command(&long_command).unwrap().status(), "500 5.5.6");
    lmtp_envelope(&mut c, &["alice@corp.example"]);
    let raw = format!("Subject: long\r\n\r\n{}\r\n.\r\n", "y".repeat(1200));
    assert_eq!(
        lmtp_data(&mut c, raw.as_bytes(), 1)[0].status(),
        "500 5.5.6"
    );
    assert_eq!(
        c.command("MAIL FROM:<a@example.net> SIZE=999999999999")
            .unwrap()
            .status(),
        "552 5.3.4"
    );
    sink.assert_no_more(0, Duration::from_millis(300));
}

/// A listener run in-process with small limits.
struct Served {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    done: std::sync::mpsc::Receiver<()>,
    _sink: Sink,
}

fn served(limits: Limits) -> Served {
    let sink = Sink::start(SinkMode::Smtp).unwrap();
    let policy = Policy::from_text("p.toml", POLICY).unwrap();
    let services = Arc::new(Services {
        store: Arc::new(PolicyStore::new(policy)),
        journal: None,
        next_hop: NextHop::Smtp(sink.addr()),
        hostname: "filter.test".into(),
        spool_dir: std::env::temp_dir(),
        autoreply: handoff::autoreply::AutoReplier::disabled(),
    });
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(l.local_addr().unwrap()).unwrap();
            serve(Listener::Tcp(l), services, limits, stop_rx).await;
        });
        let _ = done_tx.send(());
    });
    Served {
        addr: addr_rx.recv().unwrap(),
        stop,
        done,
        _sink: sink,
    }
}

#[test]
fn the_connection_cap_answers_421_and_the_timeouts_close_with_421() {
    let s = served(Limits {
        max_connections: 1,
        command_timeout: Duration::from_millis(300),
        // Longer than the grace a silent connection gets at the cap (1 s).
        idle_timeout: Duration::from_millis(1500),
        ..Limits::default()
    });
    // Silent since it connected: after a second, the next connection takes its slot, and it is
    // told why.
    let mut silent = SmtpClient::connect(s.addr).unwrap();
    assert_eq!(silent.greeting().code, 220);
    let mut first = SmtpClient::connect(s.addr).unwrap();
    assert_eq!(first.greeting().code, 220);
    assert_eq!(silent.read_reply().unwrap().status(), "421 4.3.2");
    // One that has said LHLO keeps its slot: the next one is refused.
    assert_eq!(first.command("LHLO x").unwrap().code, 250);
    let second = SmtpClient::connect(s.addr).unwrap();
    assert_eq!(second.greeting().status(), "421 4.3.2");
    // Idle between transactions: closed after the idle timeout.
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(first.read_reply().unwrap().status(), "421 4.4.2");
    // Once it is gone, the next connection is served; inside a transaction the shorter
    // command timeout applies.
    let mut third = wait_for(Duration::from_secs(5), "a free slot", || {
        SmtpClient::connect(s.addr)
            .ok()
            .filter(|c| c.greeting().code == 220)
    });
    assert_eq!(third.command("LHLO x").unwrap().code, 250);
    assert_eq!(third.mail_from("a@example.net").unwrap().code, 250);
    let started = std::time::Instant::now();
    assert_eq!(third.read_reply().unwrap().status(), "421 4.4.2");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn shutdown_closes_idle_sessions_with_421_and_returns() {
    let s = served(Limits::default());
    let mut c = SmtpClient::connect(s.addr).unwrap();
    assert_eq!(c.command("LHLO x").unwrap().code, 250);
    s.stop.send(true).unwrap();
    assert_eq!(c.read_reply().unwrap().status(), "421 4.3.2");
    s.done
        .recv_timeout(Duration::from_secs(5))
        .expect("serve returned");
}

/// RFC 6531 in content-filter mode: SMTPUTF8 is offered, taken and passed on; a next hop that
/// does not offer it gets nothing for a message that needs it, and every recipient gets a 553
/// 5.6.7 that says why (no silent downgrade), with no journal record.
#[test]
fn smtputf8_is_passed_on_and_a_next_hop_without_it_gets_a_clear_refusal() {
    const IDN: &str = "[domains]\nlocal = [\"corp.example\"]\n[accounts.\"张三@corp.example\"]\nstate = \"departed\"\nsuccessor = \"李四@corp.example\"\nkeep_copy = false\n";
    let sink = Sink::start(SinkMode::Lmtp).unwrap();
    let d = Daemon::start_content_filter(IDN, &format!("lmtp:127.0.0.1:{}", sink.port()));
    let mut c = client(&d);
    let lhlo = c.command("LHLO mx.example").unwrap();
    assert!(lhlo.text.contains("SMTPUTF8"), "{lhlo}");
    let utf8 = |c: &mut SmtpClient, subject: &str| {
        let mail = c
            .command("MAIL FROM:<发件人@example.net> SMTPUTF8")
            .unwrap();
        assert_eq!(mail.code, 250, "{mail}");
        assert_eq!(c.rcpt_to("张三@corp.example").unwrap().code, 250);
        lmtp_data(c, &encode_data(message(subject).as_bytes()), 1)
    };
    let ends = utf8(&mut c, "utf8-ok");
    assert_eq!(ends[0].code, 250, "{ends:?}");
    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(got[0].mail_from, "发件人@example.net");
    assert_eq!(got[0].rcpt_to, ["李四@corp.example"]);
    assert!(got[0].smtputf8);

    sink.offer_smtputf8(false);
    let mut c = client(&d);
    assert_eq!(c.command("LHLO mx.example").unwrap().code, 250);
    let ends = utf8(&mut c, "utf8-refused");
    assert_eq!(ends[0].status(), "553 5.6.7", "{ends:?}");
    assert!(
        ends[0].text.contains("<张三@corp.example>")
            && ends[0].text.contains("does not offer SMTPUTF8"),
        "{ends:?}"
    );
    sink.assert_no_more(1, Duration::from_millis(300));
    assert_eq!(
        journaled(&d.journal_dir()).len(),
        1,
        "only the delivered one"
    );
}
