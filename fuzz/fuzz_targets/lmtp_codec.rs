//! An SMTP/LMTP conversation on arbitrary bytes, through the codec and the session as the
//! content-filter server drives them: never panics; every frame and reply stays within its
//! limit; content has only CRLF line ends and no NUL; every address delivered can be written
//! in RFC 5321 form; and feeding the same bytes split at two points
//! chosen by the first input bytes, or one byte at a time, gives the same conversation.
#![no_main]

use std::sync::{Arc, OnceLock};

use handoff::lmtp::codec::{Decoder, Frame, Limits, Reply};
use handoff::lmtp::session::{self, Action, Context, Session};
use handoff::policy::Policy;
use handoff::runtime::store::{PolicyStore, Snapshot};
use handoff::transaction::Client;
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
[domains]
local = ["corp.example"]
[aliases]
"sales@corp.example" = ["a@corp.example", "b@corp.example"]
[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false
[accounts."keep@corp.example"]
state = "departed"
successor = "cs@corp.example"
[accounts."dis@corp.example"]
state = "disabled"
[accounts."frz@corp.example"]
state = "frozen"
[accounts."del@corp.example"]
state = "deleted"
"#;

/// Small enough that inputs of a few kilobytes reach every limit.
const LIMITS: Limits = Limits {
    command_line: 256,
    text_line: 128,
    message_size: 2048,
};

/// RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets, CRLF included.
const REPLY_LINE: usize = 512;

struct Fixed(Arc<PolicyStore>);

impl Context for Fixed {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.0.snapshot()
    }
    fn today(&self) -> jiff::civil::Date {
        jiff::civil::date(2026, 6, 1)
    }
}

fn cx() -> &'static Fixed {
    static CX: OnceLock<Fixed> = OnceLock::new();
    CX.get_or_init(|| {
        Fixed(Arc::new(PolicyStore::new(
            Policy::from_text("fuzz.toml", POLICY).unwrap(),
        )))
    })
}

/// What the next hop says to one outgoing address: a mix, so every mapping is exercised.
fn next_hop(address: &str) -> Reply {
    match address.len() % 3 {
        0 => Reply::new(250, "2.0.0 Ok"),
        1 => Reply::new(450, "4.2.0 busy"),
        _ => Reply::new(550, "5.1.1 no such user"),
    }
}

fn check_reply_bytes(bytes: &[u8]) {
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "reply line without CRLF: {line:?}");
        assert!(
            line.len() <= REPLY_LINE,
            "reply line of {} octets",
            line.len()
        );
        assert!(
            !line[..line.len() - 2].contains(&b'\r'),
            "CR inside a reply line: {line:?}"
        );
        assert!(
            line.len() >= 6 && line[..3].iter().all(u8::is_ascii_digit),
            "{line:?}"
        );
        assert!(
            matches!(line[0], b'2'..=b'5') && matches!(line[3], b' ' | b'-'),
            "{line:?}"
        );
    }
}

/// Content lines: CR and LF only as CRLF, no NUL, each line within the limit.
fn check_content(bytes: &[u8]) {
    assert!(bytes.ends_with(b"\r\n"), "content frame ends mid-line");
    assert!(!bytes.contains(&0), "NUL in content");
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "bare LF in content");
        assert!(
            !line[..line.len() - 2].contains(&b'\r'),
            "bare CR in content"
        );
        assert!(
            line.len() <= LIMITS.text_line,
            "content line of {} octets",
            line.len()
        );
    }
}

/// The conversation for `chunks` fed one after the other: what handoff sends, what it
/// delivers, and what it was told about the content's end, in order.
fn converse(chunks: &[&[u8]]) -> Vec<String> {
    let mut d = Decoder::new(LIMITS);
    let mut s = Session::new(
        "filter.example",
        Client::default(),
        session::Limits {
            max_recipients: 4,
            message_size: LIMITS.message_size,
        },
    );
    let mut events = Vec::new();
    let mut content: Vec<u8> = Vec::new();
    for chunk in chunks {
        d.feed(chunk);
        while let Some(frame) = d.next_frame() {
            let action = match frame {
                Frame::Command(line) => {
                    assert!(!d.in_data());
                    assert!(
                        line.len() <= LIMITS.command_line,
                        "command of {} octets",
                        line.len()
                    );
                    assert_eq!(line.iter().position(|&b| b == b'\n'), Some(line.len() - 1));
                    s.handle(&line, cx())
                }
                Frame::CommandTooLong => {
                    events.push("command too long".to_string());
                    continue;
                }
                Frame::Data(bytes) => {
                    assert!(!bytes.is_empty(), "empty content frame");
                    check_content(&bytes);
                    s.data(&bytes);
                    content.extend_from_slice(&bytes);
                    assert!(
                        content.len() as u64 <= LIMITS.message_size,
                        "content over the limit"
                    );
                    continue;
                }
                Frame::DataEnd(end) => {
                    assert!(!d.in_data());
                    let seen = content.len() as u64;
                    match end.flaw {
                        None
                        | Some(
                            handoff::lmtp::codec::DataFlaw::BareLineEnd
                            | handoff::lmtp::codec::DataFlaw::Nul
                            | handoff::lmtp::codec::DataFlaw::LineTooLong,
                        ) => {
                            assert_eq!(end.size, seen, "{end:?}")
                        }
                        Some(handoff::lmtp::codec::DataFlaw::TooBig) => {
                            assert!(end.size > LIMITS.message_size && end.size > seen, "{end:?}")
                        }
                    }
                    events.push(format!("end {end:?}"));
                    s.data_end(end)
                }
            };
            let mut out = Vec::new();
            match action {
                Action::Reply(r) => r.encode(&mut out),
                Action::StartData(r) => {
                    assert_eq!(r.code, 354);
                    r.encode(&mut out);
                    d.start_data();
                    content.clear();
                }
                Action::Refused(r) => r.replies.iter().for_each(|r| r.encode(&mut out)),
                Action::Deliver(del) => {
                    // Every address goes out in RFC 5321 form: the session refused at
                    // MAIL/RCPT what has none.
                    for a in std::iter::once(&del.sender).chain(&del.envelope) {
                        assert!(
                            handoff::address::smtp_mailbox(a).is_ok(),
                            "unwritable address {a:?} reached the next hop"
                        );
                    }
                    let results: Vec<Reply> = del.envelope.iter().map(|a| next_hop(a)).collect();
                    let stored = content.len() % 7 != 0;
                    events.push(format!(
                        "deliver {:?} from {:?} to {:?} 8bit {} owners {:?}",
                        String::from_utf8_lossy(&del.prepend),
                        del.sender,
                        del.envelope,
                        del.body_8bit,
                        del.owners,
                    ));
                    events.push(format!("content {:?}", String::from_utf8_lossy(&content)));
                    let replies = s.finish(&del, stored, &results);
                    assert!(!replies.is_empty());
                    replies.iter().for_each(|r| r.encode(&mut out));
                }
                Action::Close(r) => {
                    r.encode(&mut out);
                    check_reply_bytes(&out);
                    events.push(String::from_utf8_lossy(&out).into_owned());
                    return events;
                }
            }
            check_reply_bytes(&out);
            events.push(String::from_utf8_lossy(&out).into_owned());
        }
        // What waits for more bytes is bounded: a command line under the limit at most
        // (content is consumed as it comes, a long line skipped as it comes).
        assert!(
            d.pending() <= LIMITS.command_line,
            "{} octets pending",
            d.pending()
        );
    }
    events
}

fn at(data: &[u8], i: usize, from: usize) -> usize {
    from + data.get(i).map_or(0, |&b| b as usize) * (data.len() - from) / 255
}

fuzz_target!(|data: &[u8]| {
    let whole = converse(&[data]);
    let a = at(data, 0, 0);
    let b = at(data, 1, a);
    assert_eq!(
        whole,
        converse(&[&data[..a], &data[a..b], &data[b..]]),
        "split at {a} and {b}"
    );
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(whole, converse(&bytes), "one byte at a time");
});
