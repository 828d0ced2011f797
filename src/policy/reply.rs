//! SMTP replies that the policy sets for rejected or deferred mail.
//!
//! A reply is checked when the policy loads, so a typo like `505 5.2.1` for a *disabled* account
//! cannot turn into an accidental deferral or a malformed answer on the wire at 3 a.m.

use std::fmt;

/// Whether a reply is permanent (5xx) or temporary (4xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyClass {
    Temporary,
    Permanent,
}

/// A validated single-line SMTP reply: `550 5.2.1 text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    code: u16,
    /// RFC 3463 enhanced status code, `x.y.z`, when given.
    enhanced: Option<String>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("`{0}` does not start with a three-digit reply code and a space")]
    NoCode(String),
    #[error("`{0}` has code class {1}xx; only 4xx and 5xx replies can refuse mail")]
    BadClass(String, char),
    #[error("`{reply}` is a {found} reply, but this account needs a {wanted} one")]
    WrongClass {
        reply: String,
        found: &'static str,
        wanted: &'static str,
    },
    #[error("`{0}`: the enhanced status code class must match the reply code (RFC 3463)")]
    EnhancedMismatch(String),
    #[error("`{0}`: malformed enhanced status code (RFC 3463 wants class.subject.detail)")]
    BadEnhanced(String),
    #[error("reply text must be one line without control characters")]
    ControlChar,
    #[error("reply `{0}` has no text after the code")]
    NoText(String),
    #[error(
        "reply is longer than 500 characters (RFC 5321 section 4.5.3.1.5 caps a reply line at 512)"
    )]
    TooLong,
}

impl SmtpReply {
    /// Parses `ddd[ x.y.z] text`.
    pub fn parse(input: &str) -> Result<SmtpReply, ReplyError> {
        let s = input.trim();
        if s.chars().any(|c| c.is_control()) {
            return Err(ReplyError::ControlChar);
        }
        if s.len() > 500 {
            return Err(ReplyError::TooLong);
        }
        let bytes = s.as_bytes();
        if bytes.len() < 4 || !bytes[..3].iter().all(u8::is_ascii_digit) || bytes[3] != b' ' {
            return Err(ReplyError::NoCode(s.to_string()));
        }
        let class = bytes[0] as char;
        if class != '4' && class != '5' {
            return Err(ReplyError::BadClass(s.to_string(), class));
        }
        let code: u16 = s[..3]
            .parse()
            .map_err(|_| ReplyError::NoCode(s.to_string()))?;
        let rest = s[4..].trim_start();
        let (enhanced, text) = match rest.split_once(' ') {
            Some((first, tail)) if looks_enhanced(first) => (Some(first), tail.trim()),
            None if looks_enhanced(rest) => (Some(rest), ""),
            _ => (None, rest),
        };
        if let Some(e) = enhanced {
            if !valid_enhanced(e) {
                return Err(ReplyError::BadEnhanced(s.to_string()));
            }
            if !e.starts_with(class) {
                return Err(ReplyError::EnhancedMismatch(s.to_string()));
            }
        }
        if text.is_empty() {
            return Err(ReplyError::NoText(s.to_string()));
        }
        Ok(SmtpReply {
            code,
            enhanced: enhanced.map(str::to_string),
            text: text.to_string(),
        })
    }

    /// Builds a default reply from trusted parts (used for handoff's own defaults).
    pub(crate) fn new(code: u16, enhanced: &str, text: String) -> SmtpReply {
        debug_assert!((400..600).contains(&code));
        SmtpReply {
            code,
            enhanced: Some(enhanced.to_string()),
            text,
        }
    }

    /// Checks that the reply has the class an account state needs.
    pub fn require(self, class: ReplyClass) -> Result<SmtpReply, ReplyError> {
        if self.class() == class {
            return Ok(self);
        }
        let name = |c| match c {
            ReplyClass::Temporary => "4xx (temporary)",
            ReplyClass::Permanent => "5xx (permanent)",
        };
        Err(ReplyError::WrongClass {
            reply: self.to_string(),
            found: name(self.class()),
            wanted: name(class),
        })
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn enhanced(&self) -> Option<&str> {
        self.enhanced.as_deref()
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn class(&self) -> ReplyClass {
        if self.code >= 500 {
            ReplyClass::Permanent
        } else {
            ReplyClass::Temporary
        }
    }
}

fn looks_enhanced(word: &str) -> bool {
    // Anything shaped like `d.…` is meant as an enhanced code, and must then be a valid one.
    word.len() >= 2
        && word.as_bytes()[1] == b'.'
        && word.chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn valid_enhanced(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && (1..=3).contains(&parts[1].len())
        && (1..=3).contains(&parts[2].len())
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

impl serde::Serialize for SmtpReply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok = [
            (
                "550 5.2.1 This mailbox is disabled",
                550,
                Some("5.2.1"),
                "This mailbox is disabled",
            ),
            ("450 4.2.1 later", 450, Some("4.2.1"), "later"),
            (
                "554 no enhanced code here",
                554,
                None,
                "no enhanced code here",
            ),
            ("  551 5.1.6 moved  ", 551, Some("5.1.6"), "moved"),
        ];
        for (input, code, enh, text) in ok {
            let r = SmtpReply::parse(input).unwrap();
            assert_eq!(
                (r.code(), r.enhanced(), r.text()),
                (code, enh, text),
                "{input}"
            );
        }
        type Check = fn(&ReplyError) -> bool;
        let bad: [(&str, Check); 8] = [
            ("hello", |e| matches!(e, ReplyError::NoCode(_))),
            ("55 5.2.1 x", |e| matches!(e, ReplyError::NoCode(_))),
            ("250 2.0.0 ok", |e| {
                matches!(e, ReplyError::BadClass(_, '2'))
            }),
            ("550 4.2.1 mixed", |e| {
                matches!(e, ReplyError::EnhancedMismatch(_))
            }),
            ("550 5.2 short", |e| {
                matches!(e, ReplyError::NoText(_) | ReplyError::BadEnhanced(_))
            }),
            ("550 5.2.1", |e| matches!(e, ReplyError::NoText(_))),
            ("550 5.2.1 two\r\n550 lines", |e| {
                matches!(e, ReplyError::ControlChar)
            }),
            ("550 5.2.1111 x", |e| {
                matches!(e, ReplyError::BadEnhanced(_))
            }),
        ];
        for (input, check) in bad {
            let err = SmtpReply::parse(input).unwrap_err();
            assert!(check(&err), "{input:?} gave {err:?}");
        }
    }

    #[test]
    fn class_requirement() {
        let r = SmtpReply::parse("450 4.2.1 wait").unwrap();
        assert!(r.clone().require(ReplyClass::Temporary).is_ok());
        let err = r.require(ReplyClass::Permanent).unwrap_err();
        assert!(err.to_string().contains("needs a 5xx"), "{err}");
    }

    #[test]
    fn display_round_trips() {
        for s in ["550 5.2.1 disabled", "451 try later"] {
            assert_eq!(SmtpReply::parse(s).unwrap().to_string(), s);
        }
    }
}
