//! The reply itself: an RFC 5322 message built with mail-builder from the account's template.
//!
//! Pure: values in, bytes out. Nothing that came from outside handoff (the original subject,
//! Message-ID, References, the sender address) and nothing from the policy can start a header
//! line: text for headers has every control character replaced by a space before it reaches
//! mail-builder (which then RFC 2047-encodes what is not ASCII), message ids must be plain
//! `id-left@id-right` text or are dropped, and the recipient must be an address that
//! [`Address::parse_strict`] accepts.

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as HeaderAddress;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;

use crate::address::Address;
use crate::policy::template::Values;
use crate::policy::{Account, Template};

/// Longest `{original_subject}` kept, in characters: enough to recognise the message, short
/// enough that the reply's Subject stays a sane length.
const MAX_ORIGINAL_SUBJECT: usize = 200;
/// Longest rendered Subject, in characters.
const MAX_SUBJECT: usize = 400;
/// Ids taken from the original's References (RFC 5322 section 3.6.4 allows trimming; the
/// first and the latest are what threading needs).
const MAX_REFERENCES: usize = 10;
/// Longest message id accepted from the original (RFC 5322 sets no limit; RFC 5321 a line of
/// 998 octets).
const MAX_ID_LEN: usize = 250;
/// What `{original_subject}` says for a message that had no Subject (or an empty one): the
/// text mail programs show for such a message, rather than a template ending in `Auto: `.
pub const NO_SUBJECT: &str = "(no subject)";
/// RFC 2047 section 2: an encoded word is at most 75 characters, and a header line that holds
/// one at most 76.
const MAX_ENCODED_WORD: usize = 75;
const MAX_ENCODED_LINE: usize = 76;
/// RFC 5322 section 2.1.1: lines SHOULD be at most 78 characters.
const MAX_LINE: usize = 78;

/// What one reply is made of.
#[derive(Debug, Clone)]
pub struct ReplyParts<'a> {
    pub account: &'a Account,
    pub template: &'a Template,
    /// The envelope sender of the original: `To:` and the reply's only recipient.
    pub to: &'a Address,
    /// The original's Subject: `Some("")` when it had none, `None` when the template's
    /// `original_subject` setting withholds it.
    pub original_subject: Option<&'a str>,
    /// Without angle brackets.
    pub original_message_id: Option<&'a str>,
    /// Without angle brackets.
    pub original_references: &'a [String],
    /// Unix seconds for `Date:`.
    pub date: i64,
    /// A value unique to this reply, for the left part of its Message-ID.
    pub unique: &'a str,
}

/// A built reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltReply {
    /// The `From:` address.
    pub from: Address,
    /// With angle brackets.
    pub message_id: String,
    /// With angle brackets, when the original had a usable Message-ID.
    pub in_reply_to: Option<String>,
    pub subject: String,
    /// The whole message, CRLF line ends.
    pub message: Vec<u8>,
}

/// Builds the reply. The recipient must already be a valid address (the rules check it).
pub fn build(p: &ReplyParts<'_>) -> BuiltReply {
    let account = p.account;
    let from = p
        .template
        .from
        .clone()
        .unwrap_or_else(|| account.address.clone());
    let original_subject = match p.original_subject {
        Some(s) => match truncate(&one_line(s), MAX_ORIGINAL_SUBJECT) {
            t if t.is_empty() => NO_SUBJECT.to_string(),
            t => t,
        },
        None => String::new(),
    };
    // The text is for people: IDN domains as U-labels (`li@公司.中国`, not `xn--`). The
    // envelope and the From/To headers keep the lookup form.
    let successor = account
        .successor
        .as_ref()
        .map(|a| a.unicode().into_owned())
        .unwrap_or_default();
    let address = account.address.unicode();
    let values = Values {
        name: &account.name,
        successor: &successor,
        address: &address,
        department: account.department.as_deref().unwrap_or(""),
        original_subject: &original_subject,
    };
    let subject = truncate(&one_line(&p.template.subject.render(&values)), MAX_SUBJECT);
    let body = p.template.body.render(&values);

    let in_reply_to = p.original_message_id.and_then(clean_id);
    let mut references: Vec<String> = p
        .original_references
        .iter()
        .filter_map(|r| clean_id(r))
        .collect();
    if references.len() > MAX_REFERENCES {
        // Keep the thread's root and the latest ones.
        let tail = references.split_off(references.len() - (MAX_REFERENCES - 1));
        references.truncate(1);
        references.extend(tail);
    }
    references.extend(in_reply_to.clone());
    references.dedup();

    let domain = from.domain().to_string();
    let message_id = format!("{}@{}", p.unique, domain);
    let name = one_line(&account.name);

    // From and Subject are written here, not by mail-builder: its encoder keeps the multi-byte
    // character that crosses its length limit in the word, so long Chinese, Japanese or emoji
    // text made encoded words longer than RFC 2047 allows (some clients then show the raw
    // `=?utf-8?B?…` text).
    let mut head = from_field(name.trim(), from.as_str());
    head.push_str(&text_field("Subject", &subject));
    let mut builder = MessageBuilder::new()
        .to(HeaderAddress::new_address(
            None::<String>,
            p.to.as_str().to_string(),
        ))
        .date(Date::new(p.date))
        .message_id(MessageId::new(message_id.clone()));
    if let Some(id) = &in_reply_to {
        builder = builder.in_reply_to(MessageId::new(id.clone()));
    }
    if !references.is_empty() {
        builder = builder.references(MessageId::from(references));
    }
    // RFC 3834 section 5: the reply is auto-generated and must not be answered automatically;
    // Exchange and Outlook honour X-Auto-Response-Suppress instead.
    let rest = builder
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .header("X-Auto-Response-Suppress", Raw::new("All"))
        .text_body(body)
        .write_to_vec()
        // Writing into a Vec cannot fail.
        .unwrap_or_default();
    let mut message = head.into_bytes();
    message.extend_from_slice(&rest);
    BuiltReply {
        from,
        message_id: format!("<{message_id}>"),
        in_reply_to: in_reply_to.map(|id| format!("<{id}>")),
        subject,
        message,
    }
}

/// `From: name <address>\r\n`: the name as an atom phrase, a quoted string or encoded words,
/// whichever it needs (RFC 5322 section 3.4, RFC 2047 section 5).
fn from_field(name: &str, address: &str) -> String {
    const FIELD: &str = "From: ";
    if name.is_empty() {
        return format!("{FIELD}{address}\r\n");
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~ ".contains(c);
    if needs_encoding(name) {
        // The address on a line of its own: the words' lines stay within 76 characters.
        return format!(
            "{FIELD}{}\r\n <{address}>\r\n",
            encoded_words(name, FIELD.len())
        );
    }
    if name.chars().all(atext) {
        format!("{FIELD}{name} <{address}>\r\n")
    } else {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("{FIELD}\"{quoted}\" <{address}>\r\n")
    }
}

/// `Name: text\r\n` for unstructured text (one line already): plain ASCII folded at spaces,
/// anything else as encoded words.
fn text_field(field: &str, text: &str) -> String {
    let used = field.len() + 2;
    let value = if needs_encoding(text) {
        encoded_words(text, used)
    } else {
        fold(text, used)
    };
    format!("{field}: {value}\r\n")
}

/// Whether text cannot go into a header as it is: not printable ASCII, or it holds `=?`,
/// which a reader would take for the start of an encoded word.
fn needs_encoding(text: &str) -> bool {
    !text.bytes().all(|b| (0x20..0x7f).contains(&b)) || text.contains("=?")
}

/// ASCII text folded before a word that would take its line past 78 characters.
fn fold(text: &str, mut used: usize) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            if used + 1 + word.len() > MAX_LINE && used > 1 {
                out.push_str("\r\n");
                used = 0;
            }
            out.push(' ');
            used += 1;
        }
        out.push_str(word);
        used += word.len();
    }
    out
}

/// `text` as UTF-8 "B" encoded words (RFC 2047 sections 4.1 and 5), each at most 75
/// characters on a line of at most 76, each holding whole characters (section 5: a word must
/// decode on its own), separated by folds. `used` is what the first line already holds.
fn encoded_words(text: &str, mut used: usize) -> String {
    use base64::Engine as _;
    const OPEN: &str = "=?utf-8?B?";
    const CLOSE: &str = "?=";
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if !out.is_empty() {
            out.push_str("\r\n ");
            used = 1;
        }
        let room = MAX_ENCODED_LINE
            .saturating_sub(used)
            .min(MAX_ENCODED_WORD)
            .saturating_sub(OPEN.len() + CLOSE.len());
        // Every 3 bytes take 4 characters.
        let mut cut = (room / 4 * 3).min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            // No room left on this line (a long field name): one character, on the next line.
            cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (chunk, tail) = rest.split_at(cut);
        let word = format!("{OPEN}{}{CLOSE}", b64.encode(chunk));
        used += word.len();
        out.push_str(&word);
        rest = tail;
    }
    out
}

/// Text for a header: every control character (CR and LF included) becomes a space, runs of
/// white space become one, and the ends are trimmed.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", s[..i].trim_end()),
        None => s.to_string(),
    }
}

/// A message id (without brackets) safe to write back into a header: printable ASCII without
/// spaces, brackets or quotes, with one `@` between two non-empty parts.
fn clean_id(id: &str) -> Option<String> {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>');
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\' | b'(' | b')' | b',')
        })
        && id
            .split_once('@')
            .is_some_and(|(l, r)| !l.is_empty() && !r.is_empty() && !r.contains('@'));
    ok.then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use mail_parser::{HeaderValue, MessageParser};

    const POLICY: &str = r#"
[templates.departed]
subject = "{name} has left / {name} 已离职: {original_subject}"
body = """
{name} ({department}) no longer works here. Please write to {successor}.
{name} 已离职，请联系 {successor}。
"""

[templates.plain]
subject = "Re: {original_subject}"
body = "Gone.\n.\nStill gone."
from = "noreply-desk@corp.example"

[accounts."gone@corp.example"]
state = "departed"
name = "张三 Zhang San"
department = "Sales"
successor = "cs@corp.example"
autoreply = "departed"
"#;

    struct Fixture {
        policy: Policy,
        to: Address,
    }

    fn fixture() -> Fixture {
        Fixture {
            policy: Policy::from_text("p.toml", POLICY).unwrap(),
            to: Address::parse_strict("ext@partner.example").unwrap(),
        }
    }

    fn reply(
        f: &Fixture,
        template: &str,
        subject: Option<&str>,
        id: Option<&str>,
        refs: &[String],
    ) -> BuiltReply {
        let account = f
            .policy
            .account(&Address::parse_strict("gone@corp.example").unwrap())
            .unwrap();
        build(&ReplyParts {
            account,
            template: &f.policy.templates[template],
            to: &f.to,
            original_subject: subject,
            original_message_id: id,
            original_references: refs,
            date: 1_800_000_000,
            unique: "r1.abc",
        })
    }

    /// Every header line of a message (folded lines joined), as (name, raw value).
    fn header_lines(message: &[u8]) -> Vec<(String, String)> {
        let text = String::from_utf8(message.to_vec()).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        let mut out: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                out.last_mut().unwrap().1.push_str(line);
            } else {
                let (n, v) = line.split_once(':').expect("a header line");
                out.push((n.to_string(), v.to_string()));
            }
        }
        out
    }

    fn names(message: &[u8]) -> Vec<String> {
        header_lines(message).into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn chinese_and_english_round_trip_through_mail_parser() {
        let f = fixture();
        let r = reply(
            &f,
            "departed",
            Some("季度报告 Q3"),
            Some("m1@partner.example"),
            &[],
        );
        assert_eq!(
            r.subject,
            "张三 Zhang San has left / 张三 Zhang San 已离职: 季度报告 Q3"
        );
        // RFC 2047 on the wire: nothing but ASCII in the header section.
        let text = String::from_utf8(r.message.clone()).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        assert!(head.is_ascii(), "{head}");
        assert!(head.contains("=?utf-8?"), "{head}");
        let parsed = MessageParser::new().parse(&r.message).unwrap();
        assert_eq!(parsed.subject(), Some(r.subject.as_str()));
        assert_eq!(
            parsed.from().unwrap().first().unwrap().name(),
            Some("张三 Zhang San")
        );
        assert_eq!(
            parsed.from().unwrap().first().unwrap().address(),
            Some("gone@corp.example")
        );
        assert_eq!(
            parsed.to().unwrap().first().unwrap().address(),
            Some("ext@partner.example")
        );
        let body = parsed.body_text(0).unwrap();
        assert!(
            body.contains("张三 Zhang San (Sales) no longer works here"),
            "{body}"
        );
        assert!(body.contains("已离职，请联系 cs@corp.example。"), "{body}");
        assert_eq!(
            parsed
                .header("Auto-Submitted")
                .and_then(HeaderValue::as_text),
            Some("auto-replied")
        );
        assert_eq!(
            parsed
                .header("X-Auto-Response-Suppress")
                .and_then(HeaderValue::as_text),
            Some("All")
        );
        assert_eq!(parsed.in_reply_to().as_text(), Some("m1@partner.example"));
        assert_eq!(parsed.references().as_text(), Some("m1@partner.example"));
        assert_eq!(parsed.message_id(), Some("r1.abc@corp.example"));
        assert!(parsed.date().is_some());
        assert_eq!(r.message_id, "<r1.abc@corp.example>");
        assert_eq!(r.in_reply_to.as_deref(), Some("<m1@partner.example>"));
    }

    #[test]
    fn template_from_and_a_body_line_with_a_lone_dot() {
        let f = fixture();
        let r = reply(&f, "plain", Some("hello"), None, &[]);
        let parsed = MessageParser::new().parse(&r.message).unwrap();
        assert_eq!(r.from.as_str(), "noreply-desk@corp.example");
        assert_eq!(
            parsed.from().unwrap().first().unwrap().address(),
            Some("noreply-desk@corp.example")
        );
        assert_eq!(parsed.subject(), Some("Re: hello"));
        assert!(parsed.in_reply_to().is_empty());
        assert!(!names(&r.message).iter().any(|n| n == "References"));
        assert_eq!(parsed.body_text(0).unwrap(), "Gone.\r\n.\r\nStill gone.");
    }

    #[test]
    fn hostile_subjects_cannot_add_headers() {
        let f = fixture();
        for hostile in [
            "hi\r\nBcc: victim@evil.example",
            "hi\nBcc: victim@evil.example",
            "hi\rBcc: victim@evil.example",
            "hi\r\n\r\nInjected body",
            "hi\u{0}\u{b}\u{c}\u{85}\u{2028}Bcc: victim@evil.example",
        ] {
            let r = reply(&f, "plain", Some(hostile), None, &[]);
            let lines = header_lines(&r.message);
            let names: Vec<&str> = lines.iter().map(|(n, _)| n.as_str()).collect();
            assert!(!names.contains(&"Bcc"), "{hostile:?}: {names:?}");
            assert_eq!(
                names.iter().filter(|n| **n == "Subject").count(),
                1,
                "{hostile:?}"
            );
            assert!(
                !r.subject.contains(['\r', '\n']),
                "{hostile:?} -> {:?}",
                r.subject
            );
            let parsed = MessageParser::new().parse(&r.message).unwrap();
            assert!(parsed.header("Bcc").is_none(), "{hostile:?}");
            assert_eq!(parsed.body_text(0).unwrap(), "Gone.\r\n.\r\nStill gone.");
        }
    }

    #[test]
    fn hostile_message_ids_are_dropped() {
        let f = fixture();
        for hostile in [
            "m1@x.example>\r\nBcc: victim@evil.example",
            "m1@x.example\nBcc: victim@evil.example",
            "no-at-sign",
            "a b@x.example",
            "a@b@c",
            "\"q\"@x.example",
        ] {
            let refs = vec![hostile.to_string(), "ok@x.example".to_string()];
            let r = reply(&f, "plain", Some("s"), Some(hostile), &refs);
            let lines = header_lines(&r.message);
            assert!(
                !lines.iter().any(|(n, _)| n == "Bcc" || n == "In-Reply-To"),
                "{hostile:?}: {lines:?}"
            );
            let refs: Vec<&String> = lines
                .iter()
                .filter(|(n, _)| n == "References")
                .map(|(_, v)| v)
                .collect();
            assert_eq!(refs.len(), 1);
            assert_eq!(refs[0].trim(), "<ok@x.example>");
        }
    }

    #[test]
    fn a_hostile_policy_name_cannot_add_headers() {
        let text = POLICY.replace("name = \"张三 Zhang San\"", "name = \"x\"")
            + "\n[accounts.\"dep2@corp.example\"]\nstate = \"departed\"\nsuccessor = \"cs@corp.example\"\nautoreply = \"departed\"\ndepartment = \"Sales\\r\\nBcc: victim@evil.example\"\n";
        let policy = Policy::from_text("p.toml", &text).unwrap();
        let account = policy
            .account(&Address::parse_strict("dep2@corp.example").unwrap())
            .unwrap();
        let template = Template {
            subject: crate::policy::template::Text::parse("{department}").unwrap(),
            ..policy.templates["departed"].clone()
        };
        let to = Address::parse_strict("ext@partner.example").unwrap();
        let r = build(&ReplyParts {
            account,
            template: &template,
            to: &to,
            original_subject: None,
            original_message_id: None,
            original_references: &[],
            date: 0,
            unique: "u",
        });
        assert!(!names(&r.message).iter().any(|n| n == "Bcc"));
        assert_eq!(r.subject, "Sales Bcc: victim@evil.example");
    }

    #[test]
    fn long_references_keep_the_root_and_the_latest() {
        let f = fixture();
        let refs: Vec<String> = (0..30).map(|i| format!("r{i}@x.example")).collect();
        let r = reply(&f, "plain", None, Some("m@x.example"), &refs);
        let parsed = MessageParser::new().parse(&r.message).unwrap();
        let got: Vec<String> = match parsed.references() {
            HeaderValue::TextList(l) => l.iter().map(|s| s.to_string()).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(got.len(), MAX_REFERENCES + 1);
        assert_eq!(got[0], "r0@x.example");
        assert_eq!(got[1], "r21@x.example");
        assert_eq!(got.last().unwrap(), "m@x.example");
    }

    #[test]
    fn long_subjects_are_cut_on_a_character_boundary() {
        let f = fixture();
        let long = "长".repeat(500);
        let r = reply(&f, "plain", Some(&long), None, &[]);
        assert!(r.subject.chars().count() <= MAX_ORIGINAL_SUBJECT + 6);
        assert!(r.subject.ends_with('…'));
        let parsed = MessageParser::new().parse(&r.message).unwrap();
        assert_eq!(parsed.subject(), Some(r.subject.as_str()));
    }

    /// Every `=?charset?enc?text?=` in the header section, with the line it is on.
    fn encoded_words_of(message: &[u8]) -> Vec<(String, String)> {
        let text = String::from_utf8(message.to_vec()).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        let mut out = Vec::new();
        for line in head.split("\r\n") {
            let mut rest = line;
            while let Some(start) = rest.find("=?") {
                let after = &rest[start + 2..];
                // charset ? encoding ? text ?=
                let mut parts = after.splitn(3, '?');
                let (cs, enc, tail) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                );
                let end = tail.find("?=").expect("a closed encoded word");
                let len = 2 + cs.len() + 1 + enc.len() + 1 + end + 2;
                out.push((rest[start..start + len].to_string(), line.to_string()));
                rest = &rest[start + len..];
            }
        }
        out
    }

    /// RFC 2047 section 2, whatever the script and the length: long Japanese, Chinese and
    /// emoji subjects and names, each word at most 75 characters on a line of at most 76, each
    /// decoding on its own to whole characters, and the whole decoding back to the text.
    #[test]
    fn every_encoded_word_is_at_most_75_characters() {
        use base64::Engine as _;
        let subjects = [
            "来週の会議の議事録と資料を添付いたしますのでご確認のほどよろしくお願い申し上げます"
                .repeat(3),
            "关于第三季度销售报告的修订版本以及下一步工作计划的安排请各位同事审阅".repeat(3),
            "🎉🎊👍🏽🇯🇵😀🚀✨🔥💯🙏".repeat(8),
            "Quarterly report 第三季度 📈 for the team, revised — see attached".repeat(3),
            "é".repeat(150),
            "ascii with =?utf-8?B?aGk=?= inside".to_string(),
        ];
        for name in ["张三 Zhang San", &"山田太郎・やまだたろう・📧".repeat(6)] {
            let text = POLICY.replace("张三 Zhang San", name);
            let f = Fixture {
                policy: Policy::from_text("p.toml", &text).unwrap(),
                to: Address::parse_strict("ext@partner.example").unwrap(),
            };
            for subject in &subjects {
                for template in ["plain", "departed"] {
                    let r = reply(&f, template, Some(subject), None, &[]);
                    let words = encoded_words_of(&r.message);
                    assert!(!words.is_empty(), "{subject}");
                    for (word, line) in &words {
                        assert!(word.len() <= 75, "{} characters: {word}", word.len());
                        assert!(line.len() <= 76, "{} characters: {line}", line.len());
                        let b64 = word
                            .strip_prefix("=?utf-8?B?")
                            .and_then(|w| w.strip_suffix("?="))
                            .unwrap_or_else(|| panic!("{word}"));
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap();
                        assert!(String::from_utf8(bytes).is_ok(), "{word}");
                    }
                    let parsed = MessageParser::new().parse(&r.message).unwrap();
                    assert_eq!(parsed.subject(), Some(r.subject.as_str()));
                    let from = parsed.from().unwrap().first().unwrap();
                    assert_eq!(from.name(), Some(name));
                    assert_eq!(from.address(), Some(r.from.as_str()));
                }
            }
        }
    }

    #[test]
    fn ascii_headers_stay_readable() {
        let f = fixture();
        let r = reply(&f, "plain", Some(&"word ".repeat(40)), None, &[]);
        let text = String::from_utf8(r.message.clone()).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        assert!(!head.contains("Subject: =?"), "{head}");
        for line in head.split("\r\n") {
            assert!(line.len() <= 78, "{line}");
        }
        let parsed = MessageParser::new().parse(&r.message).unwrap();
        assert_eq!(parsed.subject(), Some(r.subject.as_str()));
        for name in ["Doe, John", "O'Brien \"OB\" \\ x"] {
            let text = POLICY.replace(
                "张三 Zhang San",
                &name.replace('\\', "\\\\").replace('"', "\\\""),
            );
            let f = Fixture {
                policy: Policy::from_text("p.toml", &text).unwrap(),
                to: Address::parse_strict("ext@partner.example").unwrap(),
            };
            let r = reply(&f, "departed", Some("x"), None, &[]);
            let parsed = MessageParser::new().parse(&r.message).unwrap();
            let from = parsed.from().unwrap().first().unwrap();
            assert_eq!(from.name(), Some(name));
            assert_eq!(from.address(), Some("gone@corp.example"));
        }
    }

    /// A message without a Subject: the template says so instead of ending in nothing.
    #[test]
    fn original_subject_of_a_message_without_one() {
        let f = fixture();
        for none in ["", "   ", "\r\n"] {
            let r = reply(&f, "plain", Some(none), None, &[]);
            assert_eq!(r.subject, "Re: (no subject)", "{none:?}");
        }
        assert_eq!(
            reply(&f, "plain", Some("hello"), None, &[]).subject,
            "Re: hello"
        );
        // Withheld (`original_subject = "never"`, or not vouched for): nothing, as documented.
        assert_eq!(reply(&f, "plain", None, None, &[]).subject, "Re:");
    }

    #[test]
    fn one_line_collapses_controls() {
        assert_eq!(one_line("  a\r\n\tb  \u{0}c "), "a b c");
        assert_eq!(one_line(""), "");
    }

    #[test]
    fn idn_addresses_in_the_text_are_written_with_u_labels() {
        let policy = Policy::from_text(
            "p.toml",
            "[templates.t]\nsubject = \"{address}\"\nbody = \"{successor}\"\n\
             [accounts.\"张三@公司.中国\"]\nstate = \"departed\"\n\
             successor = \"li@xn--55qx5d.xn--fiqs8s\"\nautoreply = \"t\"\n",
        )
        .unwrap();
        let account = policy
            .account(&Address::from_envelope("<张三@xn--55qx5d.xn--fiqs8s>").unwrap())
            .unwrap();
        let to = Address::parse_strict("ext@partner.example").unwrap();
        let r = build(&ReplyParts {
            account,
            template: &policy.templates["t"],
            to: &to,
            original_subject: None,
            original_message_id: None,
            original_references: &[],
            date: 1_800_000_000,
            unique: "r1.abc",
        });
        let parsed = MessageParser::default().parse(&r.message).unwrap();
        assert_eq!(parsed.subject(), Some("张三@公司.中国"));
        assert_eq!(
            parsed.body_text(0).as_deref().map(str::trim),
            Some("li@公司.中国")
        );
    }
}
