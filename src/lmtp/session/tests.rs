use super::*;
use crate::lmtp::codec::{Decoder, Frame, Limits as CodecLimits};
use crate::policy::Policy;
use std::sync::Arc;

use jiff::civil::Date;

use crate::runtime::store::{PolicyStore, Snapshot};

const POLICY: &str = r#"
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
[accounts."frz@corp.example"]
state = "frozen"
[accounts."del@corp.example"]
state = "deleted"
"#;

struct Fixed(Arc<PolicyStore>);

impl Context for Fixed {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.0.snapshot()
    }
    fn today(&self) -> Date {
        jiff::civil::date(2026, 6, 1)
    }
}

fn cx() -> Fixed {
    cx_with(POLICY)
}

fn cx_with(policy: &str) -> Fixed {
    Fixed(Arc::new(PolicyStore::with_loop_key(
        Policy::from_text("t.toml", policy).unwrap(),
        loop_key(),
    )))
}

fn loop_key() -> crate::loopmark::LoopKey {
    crate::loopmark::LoopKey::new(&[7; 32]).unwrap()
}

/// The loop marker handoff writes for `addr` on the test date.
fn marker(addr: &str) -> String {
    let addr = crate::address::Address::parse_strict(addr).unwrap();
    loop_key().mark(&addr, jiff::civil::date(2026, 6, 1))
}

fn session() -> Session {
    Session::new("filter.example", Client::default(), Limits::default())
}

fn reply_of(a: Action) -> Reply {
    match a {
        Action::Reply(r) | Action::StartData(r) | Action::Close(r) => r,
        other => panic!("expected one reply, got {other:?}"),
    }
}

fn status(r: &Reply) -> String {
    let enhanced = r.text().split(' ').next().unwrap_or("");
    format!("{} {enhanced}", r.code)
}

/// Runs command lines (no content) and returns each reply's status.
fn run(s: &mut Session, cx: &Fixed, lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .map(|l| status(&reply_of(s.handle(format!("{l}\r\n").as_bytes(), cx))))
        .collect()
}

#[test]
fn each_command_gets_the_reply_postfix_expects() {
    let cx = cx();
    // (commands before, command, expected status)
    let cases: &[(&[&str], &str, &str)] = &[
        (&[], "MAIL FROM:<a@example.net>", "503 5.5.1"),
        (&[], "RCPT TO:<alice@corp.example>", "503 5.5.1"),
        (&[], "DATA", "503 5.5.1"),
        (&[], "NOOP", "250 2.0.0"),
        (&[], "RSET", "250 2.0.0"),
        (&[], "QUIT", "221 2.0.0"),
        (&[], "VRFY alice", "502 5.5.1"),
        (&[], "STARTTLS", "502 5.5.1"),
        (&[], "BDAT 10 LAST", "502 5.5.1"),
        (&[], "FROB", "500 5.5.2"),
        (&[], "LHLO", "501 5.5.4"),
        (&["LHLO mx"], "MAIL FROM:<a@example.net>", "250 2.1.0"),
        (&["EHLO mx"], "MAIL FROM:<>", "250 2.1.0"),
        (
            &["HELO mx"],
            "MAIL FROM:<a@example.net> BODY=8BITMIME",
            "250 2.1.0",
        ),
        (
            &["LHLO mx"],
            "MAIL FROM:<a@example.net> SIZE=99999999999",
            "552 5.3.4",
        ),
        (
            &["LHLO mx"],
            "MAIL FROM:<a@example.net> FROB=1",
            "555 5.5.4",
        ),
        (&["LHLO mx"], "MAIL FROM:a@example.net", "501 5.5.4"),
        (
            &["LHLO mx", "MAIL FROM:<a@x.example>"],
            "MAIL FROM:<b@x.example>",
            "503 5.5.1",
        ),
        (
            &["LHLO mx", "MAIL FROM:<a@x.example>"],
            "RCPT TO:<alice@corp.example>",
            "250 2.1.5",
        ),
        (
            &["LHLO mx", "MAIL FROM:<a@x.example>"],
            "RCPT TO:<dis@corp.example>",
            "550 5.2.1",
        ),
        (
            &["LHLO mx", "MAIL FROM:<a@x.example>"],
            "RCPT TO:<del@corp.example>",
            "550 5.1.1",
        ),
        (
            &["LHLO mx", "MAIL FROM:<a@x.example>"],
            "RCPT TO:<frz@corp.example>",
            "450 4.2.1",
        ),
        (
            &["LHLO mx", "MAIL FROM:<a@x.example>"],
            "RCPT TO:<gone@corp.example>",
            "250 2.1.5",
        ),
        (
            &["LHLO mx", "MAIL FROM:<a@x.example>"],
            "RCPT TO:<x@example.net> NOTIFY=NEVER",
            "250 2.1.5",
        ),
        (
            &["LHLO mx", "MAIL FROM:<a@x.example>"],
            "RCPT TO:<a b>",
            "501 5.1.3",
        ),
        (&["LHLO mx", "MAIL FROM:<a@x.example>"], "DATA", "503 5.5.1"),
        (&["EHLO mx", "MAIL FROM:<a@x.example>"], "DATA", "554 5.5.1"),
        (
            &[
                "LHLO mx",
                "MAIL FROM:<a@x.example>",
                "RCPT TO:<dis@corp.example>",
            ],
            "DATA",
            "503 5.5.1",
        ),
        (
            &[
                "LHLO mx",
                "MAIL FROM:<a@x.example>",
                "RCPT TO:<alice@corp.example>",
            ],
            "DATA",
            "354 End",
        ),
        (
            &["LHLO mx", "MAIL FROM:<a@x.example>", "RSET"],
            "RCPT TO:<alice@corp.example>",
            "503 5.5.1",
        ),
        (
            &["LHLO mx", "MAIL FROM:<a@x.example>"],
            "LHLO again",
            "250 filter.example",
        ),
        (
            &["LHLO mx", "MAIL FROM:<a@x.example>", "LHLO again"],
            "RCPT TO:<alice@corp.example>",
            "503 5.5.1",
        ),
    ];
    for (before, command, want) in cases {
        let mut s = session();
        run(&mut s, &cx, before);
        let got = run(&mut s, &cx, &[command]);
        assert_eq!(got[0], *want, "{before:?} then {command}");
    }
}

/// Found by the `lmtp_codec` fuzz target: the 64-octet cut of an unsupported parameter fell
/// inside a multi-byte character and panicked.
#[test]
fn an_unsupported_parameter_is_cut_on_a_character() {
    let cx = cx();
    let mut s = session();
    run(&mut s, &cx, &["LHLO mx"]);
    for pad in 60..66 {
        let line = format!("MAIL FROM:<a@x.example> {}é€=1\r\n", "X".repeat(pad));
        let r = reply_of(s.handle(line.as_bytes(), &cx));
        assert_eq!(status(&r), "555 5.5.4", "{line}");
        let shown = r.text().rsplit(' ').next().unwrap_or("");
        assert!(shown.len() <= 64 && shown.starts_with("XXX"), "{r}");
    }
}

/// Found by the lmtp_codec fuzz target: a refused recipient whose address runs past the reply's
/// 480-octet cut inside a multi-byte character.
#[test]
fn a_long_next_hop_refusal_is_cut_on_a_character() {
    for pad in 0..4 {
        let original = format!("{}{}@corp.example", "x".repeat(pad), "é".repeat(250));
        let envelope = [original.clone()];
        let r = owner_reply(
            &original,
            &[0],
            &envelope,
            &[Reply::new(550, "5.1.1 unknown")],
        );
        assert_eq!(r.code, 550);
        assert!(r.text().len() <= 480, "{} octets", r.text().len());
        assert!(r.text().starts_with("5.1.1 <"), "{r}");
    }
}

#[test]
fn lhlo_and_ehlo_advertise_the_extensions_and_choose_the_dialect() {
    let cx = cx();
    for (hello, dialect) in [("LHLO mx", Dialect::Lmtp), ("EHLO mx", Dialect::Smtp)] {
        let mut s = session();
        let r = reply_of(s.handle(format!("{hello}\r\n").as_bytes(), &cx));
        assert_eq!(r.code, 250);
        assert_eq!(
            r.lines,
            [
                "filter.example",
                "PIPELINING",
                &format!("SIZE {}", Limits::default().message_size),
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
                "SMTPUTF8"
            ]
        );
        assert_eq!(s.dialect(), Some(dialect));
    }
}

#[test]
fn too_many_recipients_get_452_and_do_not_count() {
    let cx = cx();
    let mut s = Session::new(
        "h",
        Client::default(),
        Limits {
            max_recipients: 2,
            ..Limits::default()
        },
    );
    let got = run(
        &mut s,
        &cx,
        &[
            "LHLO mx",
            "MAIL FROM:<a@x.example>",
            "RCPT TO:<alice@corp.example>",
            "RCPT TO:<dis@corp.example>",
            "RCPT TO:<bob@corp.example>",
        ],
    );
    assert_eq!(got[4], "452 4.5.3");
}

/// A whole conversation through the codec and the session, with a next hop that answers each
/// outgoing address from `hop`; returns the bytes handoff sends and the deliveries made.
fn converse(
    stream: &[u8],
    chunk: usize,
    cx: &Fixed,
    hop: &dyn Fn(&str) -> Reply,
) -> (String, Deliveries) {
    let mut d = Decoder::new(CodecLimits::default());
    let mut s = session();
    let mut out = Vec::new();
    let mut deliveries = Vec::new();
    let mut content = Vec::new();
    for piece in stream.chunks(chunk) {
        d.feed(piece);
        while let Some(frame) = d.next_frame() {
            let action = match frame {
                Frame::Command(line) => s.handle(&line, cx),
                Frame::CommandTooLong => Action::Reply(Reply::new(500, "5.5.6 too long")),
                Frame::Data(bytes) => {
                    s.data(&bytes);
                    content.extend(bytes);
                    continue;
                }
                Frame::DataEnd(end) => s.data_end(end),
            };
            match action {
                Action::Reply(r) | Action::Close(r) => r.encode(&mut out),
                Action::StartData(r) => {
                    r.encode(&mut out);
                    d.start_data();
                    content.clear();
                }
                Action::Refused(r) => r.replies.iter().for_each(|r| r.encode(&mut out)),
                Action::Deliver(del) => {
                    let results: Vec<Reply> = del.envelope.iter().map(|a| hop(a)).collect();
                    let mut msg = del.prepend.clone();
                    msg.extend_from_slice(&content);
                    deliveries.push((del.envelope.clone(), msg));
                    s.finish(&del, true, &results)
                        .iter()
                        .for_each(|r| r.encode(&mut out));
                }
            }
        }
    }
    (String::from_utf8(out).unwrap(), deliveries)
}

/// Each delivery's envelope and message.
type Deliveries = Vec<(Vec<String>, Vec<u8>)>;

fn ok(_: &str) -> Reply {
    Reply::new(250, "2.0.0 Ok")
}

const MIXED: &[u8] = b"LHLO mx\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<dis@corp.example>\r\n\
RCPT TO:<gone@corp.example>\r\nRCPT TO:<frz@corp.example>\r\nRCPT TO:<keep@corp.example>\r\n\
RCPT TO:<sales@corp.example>\r\nDATA\r\nSubject: hi\r\nMessage-ID: <m@x>\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n";

#[test]
fn lmtp_answers_each_accepted_recipient_and_rewrites_the_envelope_at_every_chunk_size() {
    let cx = cx();
    let (whole, deliveries) = converse(MIXED, MIXED.len(), &cx, &ok);
    let codes: Vec<&str> = whole.lines().map(|l| &l[..4]).collect();
    let want = [
        "250-", "250-", "250-", "250-", "250-", "250 ", // LHLO
        "250 ", // MAIL
        "550 ", "250 ", "450 ", "250 ", "250 ", // RCPT dis, gone, frz, keep, sales
        "354 ", // DATA
        "250 ", "250 ", "250 ", // one per accepted recipient: gone, keep, sales
        "221 ", // QUIT
    ];
    assert_eq!(codes, want, "{whole}");
    assert!(
        whole.contains("250 2.1.5 <gone@corp.example>: delivered"),
        "{whole}"
    );
    let (envelope, message) = &deliveries[0];
    assert_eq!(
        envelope,
        &[
            "keep@corp.example",
            "cs@corp.example",
            "alice@corp.example",
            "bob@corp.example"
        ]
    );
    let text = String::from_utf8_lossy(message);
    assert!(
        text.starts_with(&format!(
            "X-Handoff-Forwarded: {}\r\nX-Handoff-Forwarded: {}\r\nSubject: hi\r\n",
            marker("gone@corp.example"),
            marker("keep@corp.example")
        )),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n.leading dot\r\n"), "{text}");
    for chunk in 1..MIXED.len() {
        assert_eq!(
            converse(MIXED, chunk, &cx, &ok),
            (whole.clone(), deliveries.clone()),
            "chunk {chunk}"
        );
    }
}

#[test]
fn next_hop_outcomes_map_to_each_original_recipient() {
    let cx = cx();
    // keep → keep + cs; gone → cs; sales → alice + bob.
    let cases: &[(&str, &[(&str, &str)])] = &[
        // cs deferred: both departed recipients are deferred; sales is fine.
        (
            "cs@corp.example=451",
            &[
                ("gone", "451 4.0.0"),
                ("keep", "451 4.0.0"),
                ("sales", "250 2.1.5"),
            ],
        ),
        // bob refused, alice accepted: sales is refused (its sender learns about bob).
        (
            "bob@corp.example=550",
            &[
                ("gone", "250 2.1.5"),
                ("keep", "250 2.1.5"),
                ("sales", "550 5.0.0"),
            ],
        ),
        // Both targets of keep refused; gone's only target refused.
        (
            "keep@corp.example=550 cs@corp.example=552",
            &[
                ("gone", "552 5.0.0"),
                ("keep", "550 5.0.0"),
                ("sales", "250 2.1.5"),
            ],
        ),
        // A deferral wins over a refusal for the same original recipient.
        (
            "keep@corp.example=550 cs@corp.example=421",
            &[
                ("gone", "421 4.0.0"),
                ("keep", "421 4.0.0"),
                ("sales", "250 2.1.5"),
            ],
        ),
    ];
    for (rule, want) in cases {
        let hop = |a: &str| -> Reply {
            for r in rule.split(' ') {
                let (addr, code) = r.split_once('=').unwrap();
                if addr == a {
                    return Reply::new(code.parse().unwrap(), "no");
                }
            }
            Reply::new(250, "2.0.0 Ok")
        };
        let stream = b"LHLO mx\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<gone@corp.example>\r\nRCPT TO:<keep@corp.example>\r\nRCPT TO:<sales@corp.example>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n";
        let (out, _) = converse(stream, stream.len(), &cx, &hop);
        let finals: Vec<&str> = out.lines().skip(11).collect();
        assert_eq!(finals.len(), 3, "{out}");
        for ((who, status), line) in want.iter().zip(&finals) {
            assert!(
                line.starts_with(status),
                "{rule}: {who} wants {status}: {line}"
            );
            assert!(
                line.contains(&format!("<{who}@corp.example>")),
                "{rule}: {line}"
            );
        }
    }
}

#[test]
fn smtp_answers_once_for_the_whole_message() {
    let cx = cx();
    let stream = b"EHLO mx\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<gone@corp.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n";
    let (out, d) = converse(stream, 7, &cx, &ok);
    assert!(
        out.ends_with(
            "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: delivered to the next hop\r\n"
        ),
        "{out}"
    );
    assert_eq!(d[0].0, ["alice@corp.example", "cs@corp.example"]);
    let refuse_alice = |a: &str| match a {
        "alice@corp.example" => Reply::new(550, "5.1.1 unknown"),
        _ => Reply::new(250, "2.0.0 Ok"),
    };
    let (out, _) = converse(stream, 7, &cx, &refuse_alice);
    assert!(
        out.ends_with(
            "550 5.1.1 <alice@corp.example>: next hop refused <alice@corp.example>: 550 unknown\r\n"
        ),
        "{out}"
    );
    let defer_cs = |a: &str| match a {
        "cs@corp.example" => Reply::new(452, "4.2.2 full"),
        _ => Reply::new(250, "2.0.0 Ok"),
    };
    let (out, _) = converse(stream, 7, &cx, &defer_cs);
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("452 4.2.2 <gone@corp.example>"),
        "{out}"
    );
}

#[test]
fn flawed_content_is_refused_per_recipient_and_never_delivered() {
    let cx = cx();
    for (content, want) in [
        (&b"Subject: x\r\n\r\nbare\nlf\r\n.\r\n"[..], "554 5.6.0"),
        (b"Subject: x\r\n\r\nbare\rcr\r\n.\r\n", "554 5.6.0"),
        // A next hop that drops NULs would see the end of data here and the rest as commands.
        (
            b"Subject: x\r\n\r\nbefore\r\n\0.\r\nMAIL FROM:<evil@example.net>\r\n.\r\n",
            "554 5.6.0",
        ),
        (b"Subject: x\r\n\r\nnul\0inside\r\n.\r\n", "554 5.6.0"),
    ] {
        let mut stream = b"LHLO mx\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<gone@corp.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n".to_vec();
        stream.extend_from_slice(content);
        stream.extend_from_slice(b"NOOP\r\n");
        let (out, d) = converse(&stream, 3, &cx, &ok);
        let last: Vec<&str> = out.lines().rev().take(3).collect();
        assert_eq!(last[0], "250 2.0.0 Ok", "NOOP after: {out}");
        assert!(
            last[1].starts_with(want) && last[2].starts_with(want),
            "{out}"
        );
        assert!(d.is_empty(), "nothing is delivered");
    }
}

#[test]
fn the_loop_marker_keeps_a_returning_message_with_the_departed_account() {
    let cx = cx();
    let stream = format!(
        "LHLO mx\r\nMAIL FROM:<cs@corp.example>\r\nRCPT TO:<gone@corp.example>\r\nDATA\r\nX-Handoff-Forwarded: {}\r\nSubject: x\r\n\r\nx\r\n.\r\n",
        marker("gone@corp.example")
    );
    let (out, d) = converse(stream.as_bytes(), 5, &cx, &ok);
    assert!(
        out.lines().last().unwrap().starts_with("250 2.1.5"),
        "{out}"
    );
    assert_eq!(d[0].0, ["gone@corp.example"]);
    assert!(
        !String::from_utf8_lossy(&d[0].1)
            .starts_with("X-Handoff-Forwarded: gone@corp.example\r\nX-Handoff"),
        "no second marker"
    );
}

#[test]
fn the_external_archive_is_a_target_of_every_recipient() {
    let cx = cx_with(&format!(
        "{POLICY}\n[archive]\ncopy_to = \"journal@archive.example\"\n"
    ));
    let stream = b"LHLO mx\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<gone@corp.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n";
    let (out, d) = converse(stream, stream.len(), &cx, &ok);
    assert_eq!(
        d[0].0,
        [
            "alice@corp.example",
            "cs@corp.example",
            "journal@archive.example"
        ]
    );
    assert!(out.lines().last().unwrap().starts_with("250"), "{out}");
    let defer_archive = |a: &str| match a {
        "journal@archive.example" => Reply::new(451, "4.3.0 busy"),
        _ => Reply::new(250, "2.0.0 Ok"),
    };
    let (out, _) = converse(stream, stream.len(), &cx, &defer_archive);
    let last: Vec<&str> = out.lines().rev().take(2).collect();
    assert!(last.iter().all(|l| l.starts_with("451 4.3.0")), "{out}");
}

#[test]
fn an_unstored_message_is_deferred_for_every_recipient() {
    let cx = cx();
    let mut s = session();
    run(
        &mut s,
        &cx,
        &[
            "LHLO mx",
            "MAIL FROM:<s@example.net>",
            "RCPT TO:<gone@corp.example>",
            "RCPT TO:<alice@corp.example>",
            "DATA",
        ],
    );
    s.data(b"Subject: x\r\n\r\nx\r\n");
    let Action::Deliver(d) = s.data_end(crate::lmtp::codec::DataEnd {
        size: 17,
        flaw: None,
    }) else {
        panic!("expected a delivery")
    };
    let replies = s.finish(&d, false, &[]);
    assert_eq!(replies.len(), 2);
    assert!(replies.iter().all(|r| r.code == 451), "{replies:?}");
}

/// A refused message still comes out of the session whole (sender, Message-ID, recipients),
/// so the server logs and counts it like every other message at end of data.
#[test]
fn a_message_refused_at_end_of_data_carries_its_sender_and_message_id() {
    let cx = cx();
    let mut s = session();
    let mut d = Decoder::new(CodecLimits::default());
    assert_eq!(
        run(
            &mut s,
            &cx,
            &[
                "LHLO mx",
                "MAIL FROM:<s@example.net>",
                "RCPT TO:<alice@corp.example>",
                "RCPT TO:<gone@corp.example>"
            ]
        ),
        ["250 filter.example", "250 2.1.0", "250 2.1.5", "250 2.1.5"]
    );
    assert!(matches!(s.handle(b"DATA\r\n", &cx), Action::StartData(_)));
    d.start_data();
    d.feed(b"Message-ID: <nul@example.net>\r\nSubject: x\r\n\r\nnul\0here\r\n.\r\n");
    let mut action = None;
    while let Some(frame) = d.next_frame() {
        match frame {
            Frame::Data(bytes) => s.data(&bytes),
            Frame::DataEnd(end) => {
                assert_eq!(end.flaw, Some(DataFlaw::Nul));
                action = Some(s.data_end(end));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let Some(Action::Refused(r)) = action else {
        panic!("expected a refusal, got {action:?}");
    };
    let statuses: Vec<String> = r.replies.iter().map(status).collect();
    assert_eq!(statuses, ["554 5.6.0", "554 5.6.0"]);
    assert_eq!(
        r.message.sender.as_ref().map(Address::as_str),
        Some("s@example.net")
    );
    assert_eq!(r.message.message_id().as_deref(), Some("<nul@example.net>"));
    assert!(matches!(&r.message.outcome, MessageOutcome::Refuse(reply) if reply.code() == 554));
}

/// RFC 5321 section 4.1.2 allows no control character in a path: the SMTP parser would drop
/// a quoted CR (`"a\rRSET"` becomes `aRSET`) and keep a NUL, so the address decided on would
/// not be the address sent. Such commands get 501 (a syntax error in the argument, as
/// Postfix's smtpd answers), with RFC 3463's X.1.7 for the sender and X.1.3 for a recipient.
/// So does a domain that would end the path early once written.
#[test]
fn control_characters_in_mail_and_rcpt_are_refused() {
    let cx = cx();
    let cases: &[(&str, &str)] = &[
        ("MAIL FROM:<\"a\rRSET\"@example.net>", "501 5.1.7"),
        ("MAIL FROM:<\"a\0b\"@example.net>", "501 5.1.7"),
        ("MAIL FROM:<\"a\tb\"@example.net>", "501 5.1.7"),
        ("MAIL FROM:<\"a\x1bb\"@example.net>", "501 5.1.7"),
        ("MAIL FROM:<\"a\u{85}b\"@example.net>", "501 5.1.7"),
        ("MAIL FROM:<s@\"example.net> NOTIFY=NEVER\">", "501 5.1.7"),
        ("MAIL FROM:<\"x(y)z\"@example.net>", "250 2.1.0"),
        ("RCPT TO:<\"a\rRSET\"@corp.example>", "501 5.1.3"),
        ("RCPT TO:<\"a\0b\"@corp.example>", "501 5.1.3"),
        ("RCPT TO:<\"a\x7fb\"@corp.example>", "501 5.1.3"),
        (
            "RCPT TO:<alice@corp.example> ORCPT=rfc822;a\x01b",
            "501 5.1.3",
        ),
        (
            "RCPT TO:<alice@\"corp.example> NOTIFY=NEVER\">",
            "501 5.1.3",
        ),
        ("RCPT TO:<\"john doe\"@corp.example>", "250 2.1.5"),
        (
            "RCPT TO:<\"victim@evil.example> NOTIFY=NEVER ORCPT=rfc822;x\"@corp.example>",
            "250 2.1.5",
        ),
    ];
    for (line, want) in cases {
        let mut s = session();
        let before: &[&str] = if line.starts_with("RCPT") {
            &["LHLO mx", "MAIL FROM:<s@example.net>"]
        } else {
            &["LHLO mx"]
        };
        run(&mut s, &cx, before);
        let got = run(&mut s, &cx, &[line]);
        assert_eq!(got, [*want], "{:?}", line.escape_debug().to_string());
    }
}

/// The envelope planner as it was before it was made linear: the oracle for the new one.
fn plan_quadratic(msg: &Message, accepted: &[String]) -> (Vec<String>, Vec<u8>, Owners) {
    let same = |a: &str, b: &str| {
        Address::from_envelope(a).is_some_and(|x| Address::from_envelope(b) == Some(x))
    };
    let mut envelope: Vec<String> = Vec::new();
    for a in accepted {
        if !envelope.contains(a) {
            envelope.push(a.clone());
        }
    }
    let mut prepend = Vec::new();
    for edit in &msg.edits {
        match edit {
            Edit::RemoveRecipient(raw) => envelope.retain(|e| format!("<{e}>") != *raw),
            Edit::AddRecipient(a) => {
                if !envelope.iter().any(|e| same(e, a.as_str())) {
                    envelope.push(a.to_string());
                }
            }
            Edit::AddHeader { name, value } => {
                prepend.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            Edit::ChangeSender(_) => {}
        }
    }
    let mut owners = Vec::with_capacity(accepted.len());
    for a in accepted {
        let raw = format!("<{a}>");
        let mut targets: Vec<String> = match msg.recipients.iter().find(|r| r.raw == raw) {
            Some(r) => r.resolution.deliver.iter().map(|t| t.to_string()).collect(),
            None => vec![a.clone()],
        };
        targets.extend(msg.copy_to.iter().map(|c| c.to_string()));
        let mut indices = Vec::with_capacity(targets.len());
        for t in targets {
            let i = match envelope.iter().position(|e| *e == t || same(e, &t)) {
                Some(i) => i,
                None => {
                    envelope.push(t);
                    envelope.len() - 1
                }
            };
            if !indices.contains(&i) {
                indices.push(i);
            }
        }
        owners.push((a.clone(), indices));
    }
    (envelope, prepend, owners)
}

/// A policy with `big@corp.example`, an alias of `members` members (some departed, one with
/// a copy kept, some listed twice in other case), and an external archive copy.
fn fan_out_policy(members: usize) -> String {
    let list: Vec<String> = (0..members)
        .map(|i| match i % 7 {
            3 => format!("\"M{i}@Corp.Example\""),
            _ => format!("\"m{i}@corp.example\""),
        })
        .collect();
    format!(
        "[domains]\nlocal = [\"corp.example\"]\n[archive]\ncopy_to = \"vault@archive.example\"\n\
         [aliases]\n\"big@corp.example\" = [{}]\n\"pair@corp.example\" = [\"m1@corp.example\", \"keep@corp.example\"]\n\
         [accounts.\"m2@corp.example\"]\nstate = \"departed\"\nsuccessor = \"cs@corp.example\"\nkeep_copy = false\n\
         [accounts.\"keep@corp.example\"]\nstate = \"departed\"\nsuccessor = \"m0@corp.example\"\nkeep_copy = true\n",
        list.join(", ")
    )
}

/// Runs one message with these RCPTs (all accepted) through a session and returns the
/// finished message and the accepted recipients as the session read them.
fn finished(cx: &Fixed, rcpts: &[String]) -> (Message, Vec<String>) {
    let mut s = session();
    run(&mut s, cx, &["LHLO mx", "MAIL FROM:<s@example.net>"]);
    for r in rcpts {
        let reply = reply_of(s.handle(format!("RCPT TO:<{r}>\r\n").as_bytes(), cx));
        assert_eq!(reply.code, 250, "{r}: {reply}");
    }
    assert!(matches!(s.handle(b"DATA\r\n", cx), Action::StartData(_)));
    s.data(b"Subject: fan-out\r\n\r\nbody\r\n");
    match s.data_end(DataEnd {
        size: 30,
        flaw: None,
    }) {
        Action::Deliver(d) => {
            // The recipients as the session read them (a quoted local part unquoted).
            let accepted: Vec<String> = d.owners.iter().map(|(a, _)| a.clone()).collect();
            // The session's own plan is the one under test.
            assert_eq!(
                (d.envelope.clone(), d.prepend.clone(), d.owners.clone()),
                plan(&d.message, &accepted)
            );
            (d.message, accepted)
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
}

/// The linear planner gives exactly what the quadratic one gave, on the fan-out shape (RCPTs
/// that each reach a big alias through `+detail`, in mixed case, repeated, with departed
/// members, a kept copy and the archive copy) and on the scenario addresses. The oracle is
/// too slow for 1,000 x 1,000 (minutes in a debug build), so it runs on a scaled shape; the
/// full shape is checked below against what it must be.
#[test]
fn linear_plan_matches_the_quadratic_one() {
    let cx = cx_with(&fan_out_policy(120));
    let mut rcpts: Vec<String> = (0..120)
        .map(|i| match i % 5 {
            0 => format!("Big+{i}@Corp.Example"),
            1 => format!("big+{}@corp.example", i - 1),
            2 => "pair@corp.example".to_string(),
            3 => format!("m{i}@corp.example"),
            _ => format!("M{i}@corp.example"),
        })
        .collect();
    rcpts.extend(["keep@corp.example", "m2@corp.example", "Keep@Corp.Example"].map(String::from));
    let (msg, accepted) = finished(&cx, &rcpts);
    assert_eq!(plan(&msg, &accepted), plan_quadratic(&msg, &accepted));

    let cx = super::tests::cx();
    let scenario: Vec<String> = [
        "gone@corp.example",
        "keep@corp.example",
        "sales@corp.example",
        "alice@corp.example",
        "Alice@corp.example",
        "gone@corp.example",
        "bob@corp.example",
        "\"john doe\"@corp.example",
    ]
    .map(String::from)
    .to_vec();
    let (msg, accepted) = finished(&cx, &scenario);
    assert_eq!(plan(&msg, &accepted), plan_quadratic(&msg, &accepted));
}

/// The shape of the CPU stall, 1,000 RCPTs x a 1,000-member alias (untimed; the figures are
/// `cargo bench --bench lmtp_fanout`): every RCPT becomes the same 1,000 members, so the
/// envelope is the members once each, plus the archive copy, and every owner has all of them.
#[test]
fn a_thousand_rcpts_to_a_thousand_member_alias() {
    let cx = cx_with(&fan_out_policy(1000));
    let rcpts: Vec<String> = (0..1000).map(|i| format!("big+{i}@corp.example")).collect();
    let (msg, accepted) = finished(&cx, &rcpts);
    assert_eq!(accepted.len(), 1000);
    let (envelope, _, owners) = plan(&msg, &accepted);
    let mut want: Vec<String> = (0..1000)
        .map(|i| match i {
            2 => "cs@corp.example".to_string(),
            _ => format!("m{i}@corp.example"),
        })
        .chain(["vault@archive.example".to_string()])
        .collect();
    let mut got = envelope.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(owners.len(), 1000);
    for (k, (original, indices)) in owners.iter().enumerate() {
        assert_eq!(*original, format!("big+{k}@corp.example"));
        let mut sorted = indices.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..envelope.len()).collect::<Vec<_>>(),
            "{original}"
        );
    }
}

const IDN_POLICY: &str = r#"
[domains]
local = ["corp.example", "公司.中国"]
[accounts."张三@corp.example"]
state = "departed"
successor = "李四@corp.example"
keep_copy = false
[accounts."wang@公司.中国"]
state = "disabled"
[aliases]
"sales@corp.example" = "李四@corp.example"
"#;

/// Runs a transaction to its end and returns the delivery it makes.
fn deliver(s: &mut Session, cx: &Fixed, lines: &[&str], content: &str) -> Delivery {
    for l in lines {
        let r = reply_of(s.handle(format!("{l}\r\n").as_bytes(), cx));
        assert!(r.code < 400, "{l}: {r}");
    }
    s.data(content.as_bytes());
    let end = DataEnd {
        size: content.len() as u64,
        flaw: None,
    };
    match s.data_end(end) {
        Action::Deliver(d) => *d,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

/// RFC 6531: the SMTPUTF8 parameter is taken, a UTF-8 envelope is decided like an ASCII one
/// (an IDN domain in either form), and the delivery says it needs SMTPUTF8.
#[test]
fn a_utf8_envelope_with_smtputf8_is_decided_and_marked() {
    let cx = cx_with(IDN_POLICY);
    let mut s = session();
    let got = run(
        &mut s,
        &cx,
        &[
            "LHLO mx",
            "MAIL FROM:<发件人@example.net> SMTPUTF8",
            "RCPT TO:<wang@xn--55qx5d.xn--fiqs8s>",
            "RCPT TO:<wang@公司.中国>",
        ],
    );
    assert_eq!(
        got,
        ["250 filter.example", "250 2.1.0", "550 5.2.1", "550 5.2.1"]
    );
    let d = deliver(
        &mut s,
        &cx,
        &["RCPT TO:<张三@corp.example>", "DATA"],
        "Subject: hi\r\n\r\nbody\r\n",
    );
    assert_eq!(d.sender, "发件人@example.net");
    assert_eq!(d.envelope, ["李四@corp.example"]);
    assert!(d.smtputf8 && d.needs_smtputf8);
}

#[test]
fn what_needs_smtputf8() {
    let cx = cx_with(IDN_POLICY);
    // ASCII throughout, SMTPUTF8 declared: passed on if offered, but not needed.
    let d = deliver(
        &mut session(),
        &cx,
        &[
            "LHLO mx",
            "MAIL FROM:<a@example.net> SMTPUTF8",
            "RCPT TO:<b@corp.example>",
            "DATA",
        ],
        "Subject: hi\r\n\r\nbody\r\n",
    );
    assert!(d.smtputf8 && !d.needs_smtputf8);
    // Declared, and the header has UTF-8 (RFC 6532): needed.
    let d = deliver(
        &mut session(),
        &cx,
        &[
            "LHLO mx",
            "MAIL FROM:<a@example.net> SMTPUTF8",
            "RCPT TO:<b@corp.example>",
            "DATA",
        ],
        "Subject: 你好\r\n\r\nbody\r\n",
    );
    assert!(d.needs_smtputf8);
    // Not declared, but an alias forwards to a UTF-8 address: needed at the next hop.
    let d = deliver(
        &mut session(),
        &cx,
        &[
            "LHLO mx",
            "MAIL FROM:<a@example.net>",
            "RCPT TO:<sales@corp.example>",
            "DATA",
        ],
        "Subject: hi\r\n\r\nbody\r\n",
    );
    assert_eq!(d.envelope, ["李四@corp.example"]);
    assert!(!d.smtputf8 && d.needs_smtputf8);
}

/// A UTF-8 address without the SMTPUTF8 parameter is refused as Postfix's smtpd does.
#[test]
fn a_utf8_address_without_smtputf8_is_refused() {
    let cx = cx_with(IDN_POLICY);
    let got = run(
        &mut session(),
        &cx,
        &[
            "LHLO mx",
            "MAIL FROM:<发件人@example.net>",
            "MAIL FROM:<a@example.net>",
            "RCPT TO:<张三@corp.example>",
        ],
    );
    assert_eq!(got[1..], ["553 5.6.7", "250 2.1.0", "553 5.6.7"]);
}

/// `[srs]` with its secret, `gone@` forwarding to a successor outside.
fn srs_cx() -> Fixed {
    let text = "[domains]\nlocal = [\"corp.example\"]\n[srs]\ndomain = \"srs.corp.example\"\nsecret_file = \"/unused\"\n[accounts.\"gone@corp.example\"]\nstate = \"departed\"\nsuccessor = \"new@outside.example\"\nkeep_copy = false\n";
    let mut policy = Policy::from_text("t.toml", text).unwrap();
    let srs = crate::srs::Srs::new("srs.corp.example", vec![crate::srs::Secret::new("k")]).unwrap();
    policy.settings.srs.as_mut().unwrap().srs = Some(srs);
    Fixed(Arc::new(PolicyStore::with_loop_key(policy, loop_key())))
}

/// Content-filter mode: the outgoing MAIL FROM of a forward that leaves the company is the SRS
/// address; a bounce to it goes out to the original sender; a forged one is refused.
#[test]
fn srs_rewrites_the_outgoing_sender_and_reverses_bounces() {
    let cx = srs_cx();
    let day = crate::srs::day_number(cx.today());
    let srs = cx
        .snapshot()
        .policy
        .settings
        .srs
        .clone()
        .unwrap()
        .srs
        .unwrap();
    let srs0 = srs.forward("ann@example.net", day).unwrap();
    let mut s = session();
    let d = deliver(
        &mut s,
        &cx,
        &[
            "LHLO mx",
            "MAIL FROM:<ann@example.net>",
            "RCPT TO:<gone@corp.example>",
            "DATA",
        ],
        "Subject: hi\r\n\r\nbody\r\n",
    );
    assert_eq!(d.sender, srs0);
    assert_eq!(d.envelope, ["new@outside.example"]);
    // Inside: the sender stays.
    let mut s = session();
    let d = deliver(
        &mut s,
        &cx,
        &[
            "LHLO mx",
            "MAIL FROM:<ann@example.net>",
            "RCPT TO:<cs@corp.example>",
            "DATA",
        ],
        "Subject: hi\r\n\r\nbody\r\n",
    );
    assert_eq!(d.sender, "ann@example.net");
    // The bounce: null sender kept, the SRS recipient becomes the original sender.
    let mut s = session();
    let rcpt = format!("RCPT TO:<{srs0}>");
    let d = deliver(
        &mut s,
        &cx,
        &["LHLO mx", "MAIL FROM:<>", &rcpt, "DATA"],
        "Subject: failure\r\n\r\nbody\r\n",
    );
    assert_eq!(d.sender, "");
    assert_eq!(d.envelope, ["ann@example.net"]);
    let mut s = session();
    let forged = srs0.replace("=ann@", "=eve@");
    let got = run(
        &mut s,
        &cx,
        &["LHLO mx", "MAIL FROM:<>", &format!("RCPT TO:<{forged}>")],
    );
    assert_eq!(got[2], "550 5.1.1");
}
