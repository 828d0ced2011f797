//! Mail addresses as the policy and the engine compare them.
//!
//! An [`Address`] is always in *lookup form*: no angle brackets, no surrounding space, the local
//! part folded to lower case and the domain in its canonical IDNA form. Postfix folds case in every
//! lookup table (`postmap -q` is case-insensitive), and admins expect `User1@Corp.Example` to hit
//! the entry for `user1@corp.example`, so handoff does the same for the whole address, not only the
//! domain.
//!
//! Internationalized addresses (RFC 6530–6533):
//! - The domain goes through UTS 46 processing (IDNA 2008, non-transitional: the `idna` crate),
//!   which maps case and compatibility forms and writes every label as its **A-label**: `公司.中国`,
//!   `公司。中国` and `XN--55QX5D.xn--fiqs8s` are all `xn--55qx5d.xn--fiqs8s`. The A-label is the
//!   lookup form because it is what handoff writes on the wire (forward targets, SMTP replies):
//!   an address whose local part is ASCII then stays pure ASCII and needs no SMTPUTF8 at the next
//!   hop (RFC 6531 section 3.2: only an SMTPUTF8 transaction may carry a U-label). The journal
//!   stores the same form, so a record names exactly the key the engine matched, and search puts
//!   its query through the same mapping. [`Address::unicode`] gives the U-label form for people
//!   (explain, auto-reply text).
//! - The local part is folded with Unicode lower-casing (`str::to_lowercase`), not only ASCII: with
//!   `smtputf8_enable = yes` Postfix case-folds UTF-8 lookup keys too (SMTPUTF8_README), and a UTF-8
//!   local part cannot reach handoff without SMTPUTF8. It is not NFC-normalised and not case-folded
//!   beyond lower case (`ß` stays `ß`, where Postfix's ICU folding makes it `ss`): the local part
//!   means what its domain says (RFC 5321 section 2.4), so handoff folds no more than it must.
//!
//! This module owns two parsers with different jobs:
//! - [`Address::parse_strict`] for what an admin writes in the policy: a malformed address there is
//!   a load error, reported with its line.
//! - [`Address::from_envelope`] for what arrives on the wire: never fails, because the MTA has
//!   already accepted the envelope; anything odd simply matches no policy entry.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A normalised mail address (`local@domain`, lower case). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(Arc<str>);

/// Why a policy address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty address")]
    Empty,
    #[error("`{0}` has no `@domain` part")]
    NoDomain(String),
    #[error("`{0}` has an empty local part")]
    EmptyLocal(String),
    #[error("`{0}` contains a space or control character")]
    BadChar(String),
    #[error("`{0}` has more than one `@`")]
    TwoAts(String),
    #[error(
        "`{0}` has an invalid domain (labels are letters, digits and inner hyphens, separated by dots)"
    )]
    BadDomain(String),
    #[error("`{0}` has a domain that is not valid IDNA (UTS 46 / RFC 5891)")]
    NotIdna(String),
    #[error("`{0}` is longer than 254 characters (RFC 5321 section 4.5.3.1.3)")]
    TooLong(String),
}

impl Address {
    /// Parses an address written by an admin. Angle brackets are not allowed here: the policy
    /// names mailboxes, not SMTP path syntax.
    pub fn parse_strict(input: &str) -> Result<Address, AddressError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > 254 {
            return Err(AddressError::TooLong(s.to_string()));
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        {
            return Err(AddressError::BadChar(s.to_string()));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(AddressError::NoDomain(s.to_string()));
        };
        if local.contains('@') {
            return Err(AddressError::TwoAts(s.to_string()));
        }
        if local.is_empty() {
            return Err(AddressError::EmptyLocal(s.to_string()));
        }
        let Some(domain) = strict_domain(domain) else {
            // An all-ASCII domain with no A-label fails on its shape; anything else on IDNA.
            return Err(match domain.is_ascii() && !has_a_label(domain) {
                true => AddressError::BadDomain(s.to_string()),
                false => AddressError::NotIdna(s.to_string()),
            });
        };
        let out = format!("{}@{domain}", local.to_lowercase());
        if out.len() > 254 {
            return Err(AddressError::TooLong(s.to_string()));
        }
        Ok(Address(Arc::from(out)))
    }

    /// Normalises an envelope address as the MTA sent it (`<a@b>`, `a@b`, `<>`, or a bare local
    /// name from `sendmail`). Returns `None` for the null sender.
    pub fn from_envelope(input: &str) -> Option<Address> {
        let s = input.trim();
        let s = s.strip_prefix('<').unwrap_or(s);
        let s = s.strip_suffix('>').unwrap_or(s);
        // A source route (`<@a,@b:user@c>`, RFC 5321 section 4.1.2) is obsolete; the mailbox is
        // what follows the colon.
        let s = match s.starts_with('@') {
            true => s.split_once(':').map_or(s, |(_, rest)| rest),
            false => s,
        };
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        // Most envelopes arrive in lower-case ASCII already; they need no folding and no
        // intermediate String (this runs once per RCPT TO).
        if s.is_ascii() {
            if s.bytes().any(|b| b.is_ascii_uppercase()) {
                return Some(Address(Arc::from(s.to_ascii_lowercase())));
            }
            return Some(Address(Arc::from(s)));
        }
        let Some(at) = s.bytes().rposition(|b| b == b'@') else {
            return Some(Address(Arc::from(s.to_lowercase())));
        };
        let (local, domain) = (&s[..at], &s[at + 1..]);
        // A domain that is not valid IDNA is kept lower-cased: it matches no policy entry (those
        // were all checked), which is the right outcome for an envelope the MTA already took.
        let domain = match domain.is_ascii() {
            true => Cow::Owned(domain.to_ascii_lowercase()),
            false => lenient_domain(domain).unwrap_or_else(|| Cow::Owned(domain.to_lowercase())),
        };
        Some(Address(Arc::from(format!(
            "{}@{domain}",
            local.to_lowercase()
        ))))
    }

    /// The address for people: the domain's A-labels written as U-labels (`wang@公司.中国`).
    /// Not for the wire: an ASCII-only next hop needs [`Address::as_str`].
    pub fn unicode(&self) -> Cow<'_, str> {
        let domain = self.domain();
        if !has_a_label(domain) {
            return Cow::Borrowed(&self.0);
        }
        let (u, ok) = idna::uts46::Uts46::new().to_unicode(
            domain.as_bytes(),
            idna::uts46::AsciiDenyList::EMPTY,
            idna::uts46::Hyphens::Allow,
        );
        match ok {
            Ok(()) => Cow::Owned(format!("{}@{u}", self.local_part())),
            Err(_) => Cow::Borrowed(&self.0),
        }
    }

    /// Whether the address can only travel in an SMTPUTF8 transaction (RFC 6531 section 3.2): its
    /// local part is not ASCII. (The domain never is: it is kept as A-labels.)
    pub fn needs_smtputf8(&self) -> bool {
        !self.0.is_ascii()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the last `@` (the whole address when there is none).
    pub fn local_part(&self) -> &str {
        self.split().map_or(&self.0, |(l, _)| l)
    }

    /// The part after the last `@`, empty when there is none.
    pub fn domain(&self) -> &str {
        self.split().map_or("", |(_, d)| d)
    }

    /// The address without its `+detail` extension, if it has one: `user+tag@d` → `user@d`.
    /// Mirrors Postfix's `recipient_delimiter` lookup order: the full address first, then the base.
    pub fn without_detail(&self, delimiter: char) -> Option<Address> {
        let (base, domain) = self.base_parts(delimiter)?;
        Some(Address(Arc::from(format!("{base}@{domain}"))))
    }

    /// The local part without its `+detail`, and the domain: `user+tag@d` → (`user`, `d`); `None`
    /// when there is no detail to strip. Lets a lookup try the base without building an address.
    pub(crate) fn base_parts(&self, delimiter: char) -> Option<(&str, &str)> {
        let (local, domain) = self.split()?;
        let (base, _) = local.split_once(delimiter)?;
        if base.is_empty() {
            return None;
        }
        Some((base, domain))
    }

    /// Splits at the last `@`. A plain byte scan: addresses are short, and `@` is ASCII, so it
    /// never matches inside a multi-byte character. (`rsplit_once` goes through a general
    /// `memrchr` that costs more than the scan for strings this short; the engine does this on
    /// every hop.)
    fn split(&self) -> Option<(&str, &str)> {
        let at = self.0.bytes().rposition(|b| b == b'@')?;
        Some((&self.0[..at], &self.0[at + 1..]))
    }
}

/// A policy domain in lookup form, or `None` when it is not a valid IDNA host name. UTS 46 ToASCII
/// with the STD3 rules (letters, digits and hyphens only: an address literal such as
/// `user@[192.0.2.1]` never names a local mailbox in a policy), no leading or trailing hyphen in a
/// label, and the DNS lengths (labels of 1–63 octets, 253 in all; RFC 1035 section 2.3.4). A
/// written A-label is decoded and checked like a U-label (RFC 5891 section 5.4).
fn strict_domain(domain: &str) -> Option<Cow<'_, str>> {
    idna::uts46::Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            idna::uts46::AsciiDenyList::STD3,
            idna::uts46::Hyphens::CheckFirstLast,
            idna::uts46::DnsLength::Verify,
        )
        .ok()
}

/// An envelope domain in lookup form: the same mapping as [`strict_domain`] without the policy's
/// shape rules, which the MTA has already applied (or chosen not to).
fn lenient_domain(domain: &str) -> Option<Cow<'_, str>> {
    idna::uts46::Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            idna::uts46::AsciiDenyList::EMPTY,
            idna::uts46::Hyphens::Allow,
            idna::uts46::DnsLength::Ignore,
        )
        .ok()
}

/// Whether a label of the domain is an A-label (`xn--`, in any case).
fn has_a_label(domain: &str) -> bool {
    domain
        .split('.')
        .any(|l| l.len() >= 4 && l.as_bytes()[..4].eq_ignore_ascii_case(b"xn--"))
}

/// A domain in lookup form, for the places that hold a bare domain (`[domains] local`, search):
/// `None` when it is not a valid IDNA host name.
pub fn domain_lookup_form(domain: &str) -> Option<String> {
    strict_domain(domain.trim()).map(Cow::into_owned)
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

impl AsRef<str> for Address {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Address {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

// ---- Writing an address back into an SMTP command (RFC 5321 section 4.1.2) ----
//
// The SMTP parser hands out a quoted local part without its quotes (`"john doe"@d` becomes
// `john doe@d`), and the policy's addresses are bare too. Written raw into `MAIL FROM:<…>` or
// `RCPT TO:<…>`, such a local part ends the path early and turns the rest into parameters
// (`"v@evil.example> NOTIFY=NEVER"@d`), so every address handoff sends goes through
// [`smtp_mailbox`] first.

/// Why an address cannot be written into an SMTP path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// RFC 5321 allows no control character anywhere in a path, not even quoted
    /// (qtextSMTP and quoted-pairSMTP are %d32-126).
    #[error("`{}` contains a control character", .0.escape_debug())]
    ControlChar(String),
    /// The domain is neither a host name nor an address literal.
    #[error("`{0}` has a domain that cannot be written in an SMTP path")]
    BadDomain(String),
}

/// `address` (`local@domain`, a bare local part, or empty for the null sender) in the form an
/// SMTP command carries it between `<` and `>` (RFC 5321 section 4.1.2): a local part that is
/// a Dot-string as it is, any other as a Quoted-string with `"` and `\` escaped. Characters
/// outside ASCII are kept (RFC 6531 adds them to atext and qtextSMTP). The domain is what
/// follows the last `@` (a local part may hold `@` only quoted, and arrives unquoted).
pub fn smtp_mailbox(address: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    use std::borrow::Cow;
    if address.chars().any(char::is_control) {
        return Err(PathError::ControlChar(address.to_string()));
    }
    let (local, domain) = match address.rfind('@') {
        Some(at) => (&address[..at], Some(&address[at + 1..])),
        None => (address, None),
    };
    if let Some(d) = domain
        && !writable_domain(d)
    {
        return Err(PathError::BadDomain(address.to_string()));
    }
    if address.is_empty() || is_dot_string(local) {
        return Ok(Cow::Borrowed(address));
    }
    let mut out = String::with_capacity(address.len() + 4);
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    if let Some(d) = domain {
        out.push('@');
        out.push_str(d);
    }
    Ok(Cow::Owned(out))
}

/// RFC 5321 Dot-string: atoms of atext joined by single dots.
fn is_dot_string(local: &str) -> bool {
    !local.is_empty()
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom.chars().all(|c| {
                    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
                })
        })
}

/// A domain that cannot end the path or start a parameter: labels of letters, digits, `-` and
/// `_` (some host names have one), or an address literal of dtext (`[192.0.2.1]`,
/// `[IPv6:…]`).
fn writable_domain(d: &str) -> bool {
    if let Some(inner) = d.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'[' | b']' | b'\\'));
    }
    !d.is_empty()
        && d.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parse_table() {
        let ok = [
            ("user1@corp.example", "user1@corp.example"),
            ("User1@CORP.Example", "user1@corp.example"),
            (" a.b+c@x-y.example ", "a.b+c@x-y.example"),
            // UTF-8 local parts are lower-cased the Unicode way; domains become A-labels.
            ("用户@例子.example", "用户@xn--fsqu00a.example"),
            ("Ünal@Corp.Example", "ünal@corp.example"),
            ("wang@公司.中国", "wang@xn--55qx5d.xn--fiqs8s"),
            ("wang@xn--55qx5d.xn--fiqs8s", "wang@xn--55qx5d.xn--fiqs8s"),
            ("WANG@XN--55QX5D.XN--FIQS8S", "wang@xn--55qx5d.xn--fiqs8s"),
            // UTS 46 maps full-width forms and the ideographic full stop.
            ("wang@公司。中国", "wang@xn--55qx5d.xn--fiqs8s"),
            ("a@ＣＯＲＰ.example", "a@corp.example"),
            ("张三+新闻@corp.example", "张三+新闻@corp.example"),
        ];
        for (input, want) in ok {
            assert_eq!(
                Address::parse_strict(input).unwrap().as_str(),
                want,
                "{input}"
            );
        }
        let bad = [
            ("", AddressError::Empty),
            ("user", AddressError::NoDomain("user".into())),
            (
                "@corp.example",
                AddressError::EmptyLocal("@corp.example".into()),
            ),
            (
                "a b@corp.example",
                AddressError::BadChar("a b@corp.example".into()),
            ),
            (
                "<a@corp.example>",
                AddressError::BadChar("<a@corp.example>".into()),
            ),
            (
                "a@b@corp.example",
                AddressError::TwoAts("a@b@corp.example".into()),
            ),
            (
                "a@corp..example",
                AddressError::BadDomain("a@corp..example".into()),
            ),
            (
                "a@-corp.example",
                AddressError::BadDomain("a@-corp.example".into()),
            ),
            ("a@", AddressError::BadDomain("a@".into())),
            (
                "a@c_d.example",
                AddressError::BadDomain("a@c_d.example".into()),
            ),
            // Not Punycode that decodes, and a label IDNA 2008 disallows (a symbol).
            (
                "a@xn--ls8h-.example",
                AddressError::NotIdna("a@xn--ls8h-.example".into()),
            ),
            (
                "a@xn--55qx5d-.example",
                AddressError::NotIdna("a@xn--55qx5d-.example".into()),
            ),
            ("a@公司..中国", AddressError::NotIdna("a@公司..中国".into())),
            ("a@-公司.中国", AddressError::NotIdna("a@-公司.中国".into())),
        ];
        for (input, want) in bad {
            assert_eq!(Address::parse_strict(input), Err(want), "{input:?}");
        }
        let long = format!("{}@corp.example", "a".repeat(250));
        assert!(matches!(
            Address::parse_strict(&long),
            Err(AddressError::TooLong(_))
        ));
    }

    #[test]
    fn envelope_forms() {
        let cases = [
            ("<User@Corp.Example>", Some("user@corp.example")),
            ("user@corp.example", Some("user@corp.example")),
            ("<>", None),
            ("", None),
            ("  <  >  ", None),
            (
                "<@relay.example:user@corp.example>",
                Some("user@corp.example"),
            ),
            ("root", Some("root")),
            // Not ASCII: folded the Unicode way, like the policy's own addresses.
            ("<Ünal@Corp.Example>", Some("ünal@corp.example")),
            ("<ünal@corp.example>", Some("ünal@corp.example")),
            // Either form of an IDN domain gives the same address.
            ("<wang@公司.中国>", Some("wang@xn--55qx5d.xn--fiqs8s")),
            (
                "<WANG@XN--55qx5d.xn--FIQS8S>",
                Some("wang@xn--55qx5d.xn--fiqs8s"),
            ),
            ("<张三@Corp.Example>", Some("张三@corp.example")),
            ("<张三@公司.中国>", Some("张三@xn--55qx5d.xn--fiqs8s")),
            // Not valid IDNA: kept, lower-cased, and matches nothing.
            ("<a@Ab\u{FFFD}.x>", Some("a@ab\u{FFFD}.x")),
        ];
        for (input, want) in cases {
            assert_eq!(
                Address::from_envelope(input).as_ref().map(Address::as_str),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn unicode_form_for_people_and_smtputf8_need() {
        let a = Address::from_envelope("<wang@xn--55qx5d.xn--fiqs8s>").unwrap();
        assert_eq!(a.unicode(), "wang@公司.中国");
        assert!(!a.needs_smtputf8());
        let z = Address::parse_strict("张三@corp.example").unwrap();
        assert_eq!(z.unicode(), "张三@corp.example");
        assert!(z.needs_smtputf8());
        assert_eq!(
            Address::parse_strict("张三@公司.中国").unwrap().unicode(),
            "张三@公司.中国"
        );
        assert_eq!(
            domain_lookup_form(" 公司.中国 ").as_deref(),
            Some("xn--55qx5d.xn--fiqs8s")
        );
        assert_eq!(domain_lookup_form("公司..中国"), None);
    }

    #[test]
    fn utf8_detail_is_stripped() {
        let a = Address::from_envelope("<张三+新闻@公司.中国>").unwrap();
        assert_eq!(
            a.without_detail('+').unwrap().as_str(),
            "张三@xn--55qx5d.xn--fiqs8s"
        );
    }

    #[test]
    fn detail_is_stripped_at_the_first_delimiter() {
        let a = Address::parse_strict("user1+news+x@corp.example").unwrap();
        assert_eq!(
            a.without_detail('+').unwrap().as_str(),
            "user1@corp.example"
        );
        assert_eq!(
            Address::parse_strict("user1@corp.example")
                .unwrap()
                .without_detail('+'),
            None
        );
        assert_eq!(
            Address::parse_strict("+x@corp.example")
                .unwrap()
                .without_detail('+'),
            None
        );
        assert_eq!(a.local_part(), "user1+news+x");
        assert_eq!(a.domain(), "corp.example");
        let bare = Address::from_envelope("root").unwrap();
        assert_eq!((bare.local_part(), bare.domain()), ("root", ""));
        assert_eq!(bare.without_detail('+'), None);
    }
    #[test]
    fn smtp_mailbox_quotes_what_is_not_a_dot_string() {
        let ok = [
            ("", ""),
            ("user@corp.example", "user@corp.example"),
            ("First.Last+tag@corp.example", "First.Last+tag@corp.example"),
            (
                "o'brien!#$%&*/=?^_`{|}~-@corp.example",
                "o'brien!#$%&*/=?^_`{|}~-@corp.example",
            ),
            ("postmaster", "postmaster"),
            ("用户@例子.example", "用户@例子.example"),
            ("user@[192.0.2.1]", "user@[192.0.2.1]"),
            ("user@[IPv6:2001:db8::1]", "user@[IPv6:2001:db8::1]"),
            ("john doe@corp.example", "\"john doe\"@corp.example"),
            ("x(y)z@corp.example", "\"x(y)z\"@corp.example"),
            ("dq\"x@corp.example", "\"dq\\\"x\"@corp.example"),
            ("back\\slash@corp.example", "\"back\\\\slash\"@corp.example"),
            (".lead@corp.example", "\".lead\"@corp.example"),
            ("trail.@corp.example", "\"trail.\"@corp.example"),
            ("two..dots@corp.example", "\"two..dots\"@corp.example"),
            ("@corp.example", "\"\"@corp.example"),
            ("a@b@corp.example", "\"a@b\"@corp.example"),
            // The injection: the would-be parameters stay inside the local part.
            (
                "victim@evil.example> NOTIFY=NEVER ORCPT=rfc822;x@corp.example",
                "\"victim@evil.example> NOTIFY=NEVER ORCPT=rfc822;x\"@corp.example",
            ),
            ("a<b>c@corp.example", "\"a<b>c\"@corp.example"),
        ];
        for (input, want) in ok {
            assert_eq!(smtp_mailbox(input).as_deref(), Ok(want), "{input:?}");
        }
        let control = [
            "a\rRSET@corp.example",
            "a\nRSET@corp.example",
            "a\0b@corp.example",
            "tab\there@corp.example",
            "del\x7f@corp.example",
            "c1\u{85}@corp.example",
            "user@corp\r\n.example",
        ];
        for input in control {
            assert_eq!(
                smtp_mailbox(input),
                Err(PathError::ControlChar(input.into())),
                "{input:?}"
            );
        }
        let domains = [
            "user@",
            "user@corp.example> NOTIFY=NEVER",
            "user@corp example",
            "user@[1.2.3.4",
            "user@[1.2]3.4]",
            "user@[]",
            "user@corp..example",
            "user@\"corp\".example",
        ];
        for input in domains {
            assert_eq!(
                smtp_mailbox(input),
                Err(PathError::BadDomain(input.into())),
                "{input:?}"
            );
        }
    }

    /// What [`smtp_mailbox`] writes reads back (with smtp-proto, the parser handoff's own
    /// listener uses) as the very address it was given, and as one path without parameters.
    #[test]
    fn smtp_mailbox_round_trips_through_the_smtp_parser() {
        let inputs = [
            "user@corp.example",
            "john doe@corp.example",
            "x(y)z@corp.example",
            "dq\"x@corp.example",
            "back\\slash@corp.example",
            "victim@evil.example> NOTIFY=NEVER ORCPT=rfc822;x@corp.example",
            "a@b@corp.example",
        ];
        for input in inputs {
            let line = format!("RCPT TO:<{}>\r\n", smtp_mailbox(input).unwrap());
            let parsed = smtp_proto::Request::parse(&mut line.as_bytes().iter());
            let Ok(smtp_proto::Request::Rcpt { to }) = parsed else {
                panic!("{line:?} did not parse: {parsed:?}");
            };
            assert_eq!(to.address, input, "{line:?}");
            assert_eq!((to.flags, to.orcpt), (0, None), "{line:?}");
        }
    }
}
