//! What an imported message says about itself, read from its header (pure: bytes in, facts
//! out): the time it is archived under, its From, To/Cc and Message-ID.
//!
//! The archive time is the message's own `Date:` (RFC 5322 section 3.6.1), so that time-range
//! search and retention count from when the mail was sent. A `Date:` that is missing, does not
//! parse, or is absurd (before 1990, or more than a day ahead of now: clocks are wrong, spam
//! lies) gives way to the file's modification time, and the record says why.

use jiff::{SignedDuration, Timestamp};
use mail_parser::MessageParser;

/// The earliest `Date:` taken as true: Internet mail older than this is not in any mailbox
/// an offboarding imports, and a zero or negative Unix time is a broken client's default.
const EARLIEST: i64 = 631_152_000; // 1990-01-01T00:00:00Z

/// How far ahead of now a `Date:` may be (time zones and skewed clocks).
const AHEAD: SignedDuration = SignedDuration::from_hours(24);

/// What the importer files a message under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub time: Timestamp,
    /// Why `time` is the fallback and not the `Date:` (see [`crate::journal::record::Provenance`]).
    pub date_fallback: Option<&'static str>,
    /// The first From address, lower case.
    pub from: Option<String>,
    /// To and Cc addresses, lower case, each once.
    pub to: Vec<String>,
    pub message_id: Option<String>,
}

/// The facts of the message whose first bytes are `head` (its header, or all of it; a header
/// cut short reads as far as it goes). `fallback` is the file's time, `now` the clock's.
pub fn facts(head: &[u8], fallback: Timestamp, now: Timestamp) -> Facts {
    let parsed = MessageParser::new().parse_headers(head);
    let date = parsed
        .as_ref()
        .and_then(|m| m.date())
        .filter(|d| d.is_valid())
        .map(|d| Timestamp::from_second(d.to_timestamp()));
    let (time, date_fallback) = match date {
        Some(Ok(t)) if t.as_second() < EARLIEST => (fallback, Some("before 1990")),
        Some(Ok(t)) if t > now.saturating_add(AHEAD).unwrap_or(now) => {
            (fallback, Some("in the future"))
        }
        Some(Ok(t)) => (t, None),
        Some(Err(_)) => (fallback, Some("unparsable")),
        None if has_header(head, b"date") => (fallback, Some("unparsable")),
        None => (fallback, Some("missing")),
    };
    let Some(m) = parsed else {
        return Facts {
            time,
            date_fallback,
            from: None,
            to: Vec::new(),
            message_id: None,
        };
    };
    let first = |a: Option<&mail_parser::Address<'_>>| {
        a.and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_lowercase)
    };
    let mut to: Vec<String> = Vec::new();
    for list in [m.to(), m.cc()].into_iter().flatten() {
        for a in list.iter() {
            if let Some(addr) = a.address().map(str::to_lowercase)
                && !to.contains(&addr)
            {
                to.push(addr);
            }
        }
    }
    Facts {
        time,
        date_fallback,
        from: first(m.from()),
        to,
        message_id: m.message_id().map(str::to_string),
    }
}

/// Whether the header (up to the first empty line) has a field called `name` (lower case).
fn has_header(head: &[u8], name: &[u8]) -> bool {
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return false;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && line[..colon].trim_ascii().eq_ignore_ascii_case(name)
        {
            return true;
        }
    }
    false
}

/// The header of a message: its bytes up to and including the empty line that ends it (RFC
/// 5322 section 2.1), or all of `bytes` when no such line is among them.
pub fn header_end(bytes: &[u8]) -> usize {
    let mut at = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        at += line.len();
        if line == b"\n" || line == b"\r\n" {
            return at;
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_date_or_the_file_time_with_the_reason() {
        let file = ts("2025-06-01T12:00:00Z");
        let now = ts("2026-12-05T00:00:00Z");
        let cases: &[(&[u8], &str, Option<&str>)] = &[
            (
                b"Date: Tue, 3 Mar 2026 10:00:00 +0100\r\nSubject: x\r\n\r\nbody",
                "2026-03-03T09:00:00Z",
                None,
            ),
            (
                b"Subject: no date\n\nbody",
                "2025-06-01T12:00:00Z",
                Some("missing"),
            ),
            (
                b"Date: the day after tomorrow\nSubject: x\n\n",
                "2025-06-01T12:00:00Z",
                Some("unparsable"),
            ),
            (
                b"Date: Thu, 1 Jan 1970 00:00:00 +0000\n\n",
                "2025-06-01T12:00:00Z",
                Some("before 1990"),
            ),
            (
                b"Date: Fri, 1 Jan 2100 00:00:00 +0000\n\n",
                "2025-06-01T12:00:00Z",
                Some("in the future"),
            ),
            // Within a day ahead: a clock or a time zone off, not absurd.
            (
                b"Date: Sat, 5 Dec 2026 20:00:00 +0000\n\n",
                "2026-12-05T20:00:00Z",
                None,
            ),
            // A Date: in the body is not the message's.
            (
                b"Subject: x\n\nDate: Tue, 3 Mar 2026 10:00:00 +0100\n",
                "2025-06-01T12:00:00Z",
                Some("missing"),
            ),
            (b"", "2025-06-01T12:00:00Z", Some("missing")),
        ];
        for (head, want, why) in cases {
            let f = facts(head, file, now);
            let shown = String::from_utf8_lossy(head);
            assert_eq!(f.time, ts(want), "{shown}");
            assert_eq!(f.date_fallback, *why, "{shown}");
        }
    }

    #[test]
    fn addresses_and_message_id_from_a_hostile_header() {
        let head = b"From: \"A\" <A@Example.NET>\r\nTo: b@example.net, C <c@example.net>\r\n\
Cc: b@example.net\r\nMessage-ID: <m1@x>\r\nX-Nul: a\0b\r\nSubject: caf\xe9\r\n\r\nbody";
        let f = facts(head, ts("2025-01-01T00:00:00Z"), ts("2026-01-01T00:00:00Z"));
        assert_eq!(f.from.as_deref(), Some("a@example.net"));
        assert_eq!(f.to, ["b@example.net", "c@example.net"]);
        assert_eq!(f.message_id.as_deref(), Some("m1@x"));
    }

    #[test]
    fn the_header_ends_at_the_first_empty_line() {
        assert_eq!(header_end(b"A: b\r\n\r\nbody\r\n\r\n"), 8);
        assert_eq!(header_end(b"A: b\nC: d\n\nbody"), 11);
        assert_eq!(header_end(b"A: b"), 4);
    }
}
