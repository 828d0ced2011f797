//! Auto-reply rules and the reply builder on arbitrary messages and envelope senders.
//!
//! Input: one flag byte (bit 0: `require_authenticated` on), the envelope sender up to the
//! first LF, then the message (headers and body). The message goes through the LMTP session
//! to two departed accounts with templates, as the content filter hands it over; the envelope
//! sender is then set to the fuzzed one (the milter takes it from Postfix as it was written)
//! and [`autoreply::plan`] decides.
//!
//! Properties: never panics; a null sender, a `List-*` header, `Precedence: bulk|list|junk` or
//! an `Auto-Submitted` other than `no` never gets a reply; a reply that is built parses back,
//! carries `Auto-Submitted: auto-replied` and only the headers the builder writes, each once,
//! and no header line is broken or added by the input (header injection).
#![no_main]

use std::sync::{Arc, OnceLock};

use handoff::address::Address;
use handoff::autoreply::{self, Suppression};
use handoff::lmtp::codec::DataEnd;
use handoff::lmtp::session::{self, Action, Context, Session};
use handoff::policy::Policy;
use handoff::runtime::store::{PolicyStore, Snapshot};
use handoff::transaction::Client;
use libfuzzer_sys::fuzz_target;
use mail_parser::MessageParser;

const POLICY: &str = r#"
[domains]
local = ["corp.example"]

[templates.departed]
subject = "{name} has left / {name} 已离职: {original_subject}"
body = """
{name} ({department}) no longer works here. Please write to {successor}.
{name} 已离职，请联系 {successor}。
"""

[templates.plain]
subject = "Auto: {original_subject}"
body = "Gone.\n.\nStill gone."
from = "desk@corp.example"

[aliases]
"sales@corp.example" = ["gone@corp.example", "alice@corp.example"]

[accounts."gone@corp.example"]
state = "departed"
name = "张三 Zhang San"
department = "Sales"
successor = "cs@corp.example"
autoreply = "departed"

[accounts."left@corp.example"]
state = "departed"
successor = "cs@corp.example"
autoreply = "plain"
"#;

const AUTH: &str = r#"
[autoreply]
require_authenticated = true
authserv_id = ["mx.corp.example"]
"#;

/// The headers the builder writes; each at most once.
const REPLY_HEADERS: [&str; 12] = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "x-auto-response-suppress",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

/// Those RFC 3834 and RFC 5322 require in every reply.
const REQUIRED: [&str; 6] = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "auto-submitted",
];

struct Fixed(Arc<PolicyStore>);

impl Context for Fixed {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.0.snapshot()
    }
    fn today(&self) -> jiff::civil::Date {
        jiff::civil::date(2026, 6, 1)
    }
}

fn cx(auth: bool) -> &'static Fixed {
    static PLAIN: OnceLock<Fixed> = OnceLock::new();
    static STRICT: OnceLock<Fixed> = OnceLock::new();
    let (cell, text) = match auth {
        false => (&PLAIN, POLICY.to_string()),
        true => (&STRICT, format!("{AUTH}{POLICY}")),
    };
    cell.get_or_init(|| {
        Fixed(Arc::new(PolicyStore::new(
            Policy::from_text("fuzz.toml", &text).unwrap(),
        )))
    })
}

/// The message as the content filter hands it to the transaction.
fn through_lmtp(cx: &Fixed, content: &[u8]) -> handoff::transaction::Message {
    let mut s = Session::new(
        "filter.example",
        Client::default(),
        session::Limits::default(),
    );
    for line in [
        "LHLO mx.corp.example",
        "MAIL FROM:<ext@partner.example>",
        "RCPT TO:<sales@corp.example>",
        "RCPT TO:<left@corp.example>",
        "DATA",
    ] {
        match s.handle(format!("{line}\r\n").as_bytes(), cx) {
            Action::Reply(r) | Action::StartData(r) if r.is_positive() || r.code == 354 => {}
            other => panic!("{line}: {other:?}"),
        }
    }
    s.data(content);
    match s.data_end(DataEnd {
        size: content.len() as u64,
        flaw: None,
    }) {
        Action::Deliver(d) => d.message,
        other => panic!("end of data: {other:?}"),
    }
}

/// What the header section of `content` says for sure, read the way the session splits it
/// (up to the first empty CRLF line; LF ends a line; a line starting with SP or HT continues
/// the field). Only fields that are not folded and whose value is one plain token count.
#[derive(Debug, Default)]
struct Marks {
    list: bool,
    precedence_bulk: bool,
    auto_submitted: bool,
}

fn marks(content: &[u8]) -> Marks {
    let head = match content.windows(4).position(|w| w == b"\r\n\r\n") {
        _ if content.starts_with(b"\r\n") => &content[..0],
        Some(p) => &content[..p + 2],
        None => content,
    };
    let lines: Vec<&[u8]> = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    let mut m = Marks::default();
    for (i, line) in lines.iter().enumerate() {
        let folded = lines
            .get(i + 1)
            .is_some_and(|n| matches!(n[0], b' ' | b'\t'));
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if matches!(line[0], b' ' | b'\t') {
            continue;
        }
        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
        let value = &line[colon + 1..];
        let token = value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b' ' | b'\t'))
            .then(|| {
                String::from_utf8_lossy(value)
                    .trim_matches([' ', '\t'])
                    .to_ascii_lowercase()
            })
            .filter(|t| !t.contains([' ', '\t']) && !folded);
        match (name.as_str(), token) {
            (
                "list-id" | "list-unsubscribe" | "list-post" | "list-help" | "list-subscribe"
                | "list-owner" | "list-archive",
                _,
            ) => m.list = true,
            ("precedence", Some(t)) if matches!(t.as_str(), "bulk" | "list" | "junk") => {
                m.precedence_bulk = true
            }
            ("auto-submitted", Some(t)) if t != "no" => m.auto_submitted = true,
            _ => {}
        }
    }
    m
}

/// The reply's header fields, folded lines joined, after checking every line is CRLF-ended
/// text within RFC 5322's 998 octets. Text from outside is RFC 2047-encoded, so only an
/// internationalised sender address (RFC 6532, raw UTF-8) may make the `To:` line 8-bit.
fn reply_headers(message: &[u8], sender: &Address) -> Vec<(String, String)> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a reply has a header section");
    let head = &message[..end + 2];
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.split_inclusive(|&b| b == b'\n') {
        assert!(
            line.ends_with(b"\r\n"),
            "header line without CRLF: {line:?}"
        );
        let line = &line[..line.len() - 2];
        assert!(
            !line.contains(&b'\r') && !line.contains(&b'\n'),
            "bare CR in a header: {line:?}"
        );
        assert!(line.len() <= 998, "header line of {} octets", line.len());
        let text = String::from_utf8(line.to_vec()).expect("a UTF-8 header line");
        assert!(
            text.is_ascii() || (text.starts_with("To: ") && !sender.as_str().is_ascii()),
            "8-bit header line: {text:?}"
        );
        if text.starts_with([' ', '\t']) {
            fields
                .last_mut()
                .expect("a continuation after a field")
                .1
                .push_str(&text);
        } else {
            let (name, value) = text.split_once(':').expect("a header field");
            fields.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    fields
}

fn check_reply(job: &autoreply::Job, sender: &Address) {
    // The planner checked the account and the template: a planned draft always builds.
    let reply = &job.draft.build().expect("a planned reply builds");
    assert_eq!(
        &reply.to, sender,
        "a reply goes to the envelope sender only"
    );
    let fields = reply_headers(&reply.message, sender);
    for (name, _) in &fields {
        assert!(
            REPLY_HEADERS.contains(&name.as_str()),
            "unexpected header {name}"
        );
        assert_eq!(
            fields.iter().filter(|(n, _)| n == name).count(),
            1,
            "{name} twice"
        );
    }
    for name in REQUIRED {
        assert!(fields.iter().any(|(n, _)| n == name), "no {name}");
    }
    let value = |n: &str| fields.iter().find(|(f, _)| f == n).map(|(_, v)| v.as_str());
    assert_eq!(value("auto-submitted"), Some("auto-replied"));
    assert_eq!(value("in-reply-to").is_some(), reply.in_reply_to.is_some());

    let parsed = MessageParser::default()
        .parse(&reply.message)
        .expect("the reply parses");
    let to = parsed
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address());
    // A local part that is a dot-atom (RFC 5322 section 3.4.1) reads back as written; others
    // are quoted by the builder and may read back differently, but stay in the To line.
    let local = sender.local_part();
    let dot_atom = !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
    if dot_atom {
        assert_eq!(
            to.map(str::to_ascii_lowercase).as_deref(),
            Some(sender.as_str())
        );
    }
    let subject = parsed.subject().unwrap_or("");
    assert!(!subject.contains(['\r', '\n']), "subject {subject:?}");
    assert_eq!(parsed.header_values("Auto-Submitted").count(), 1);
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (sender_raw, content) = match rest.iter().position(|&b| b == b'\n') {
        Some(nl) => (&rest[..nl], &rest[nl + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let sender_raw = String::from_utf8_lossy(sender_raw.strip_suffix(b"\r").unwrap_or(sender_raw));
    let cx = cx(flags & 1 == 1);
    let mut msg = through_lmtp(cx, content);
    msg.sender = Address::from_envelope(&sender_raw);
    msg.sender_raw = sender_raw.into_owned();

    let m = marks(content);
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    for (account, planned) in autoreply::plan(&msg, now) {
        match (&msg.sender, planned) {
            (None, verdict) => {
                assert_eq!(verdict.err(), Some(Suppression::NullSender), "{account}")
            }
            (Some(sender), Ok(job)) => {
                assert!(
                    !m.list && !m.precedence_bulk && !m.auto_submitted,
                    "{account} replies to a message marked {m:?}"
                );
                check_reply(&job, sender);
            }
            (Some(_), Err(_)) => {}
        }
    }
});
