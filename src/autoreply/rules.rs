//! When a departed account must not answer: RFC 3834 and the conventions around it.
//!
//! Pure: the headers of one message are read once into [`Facts`], then [`judge`] decides for
//! one account, naming the first rule that forbids a reply as a [`Suppression`]. No clock, no
//! I/O; the stateful checks (once per sender, hourly caps) are made by the caller, and their
//! reasons live in the same enum so that every suppression is counted under one metric.
//!
//! Sources: RFC 3834 (auto-responses: null senders, `Auto-Submitted`, "only reply when the
//! recipient is named in To/Cc", lists); RFC 2369 and RFC 2919 (`List-*` headers); RFC 8601
//! (`Authentication-Results`); Microsoft's `X-Auto-Response-Suppress` ([MS-OXCMAIL] 2.2.3.2.14);
//! the `Precedence` header of sendmail and Exchange.

use mail_parser::{HeaderName, HeaderValue, MessageParser};

use crate::address::Address;

/// Why no reply was sent. The names are metric labels: a fixed set, never extended at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suppression {
    /// The envelope sender is `<>`: a bounce or another auto-reply (RFC 3834 section 2).
    NullSender,
    /// MAILER-DAEMON, postmaster, list software, `noreply` and friends.
    SystemSender,
    /// The envelope sender cannot be written into a `To:` header safely.
    InvalidSender,
    /// The account wrote to itself.
    OwnAddress,
    /// The message already carries handoff's loop marker for this account.
    LoopMarked,
    /// `Auto-Submitted` other than `no` (RFC 3834 section 5).
    AutoSubmitted,
    /// `Precedence: bulk`, `list` or `junk`.
    Precedence,
    /// A `List-*` header (RFC 2369, RFC 2919).
    MailingList,
    /// `X-Auto-Response-Suppress` with `All` or `OOF`.
    AutoResponseSuppress,
    /// `X-Spam-Flag: YES` or `X-Spam-Status: Yes`.
    Spam,
    /// The account (or the alias or `+detail` address that led to it) is not in To, Cc, Bcc,
    /// Resent-To, Resent-Cc or Resent-Bcc (RFC 3834 section 2).
    NotAddressed,
    /// `require_authenticated` is on and no trusted `Authentication-Results` vouches for the
    /// sender.
    Unauthenticated,
    /// Postfix passed more header bytes than handoff keeps: a header the rules need may be
    /// missing, so no reply.
    HeadersTruncated,
    /// This account answered this sender within `days`.
    AlreadyReplied,
    /// `max_per_hour_per_account` reached.
    AccountRateLimit,
    /// `max_per_hour` reached.
    SystemRateLimit,
    /// The shared memory (Redis) did not answer; without it a reply may be a duplicate.
    StoreUnavailable,
    /// The embedded memory holds its maximum number of pairs, none of them expired.
    MemoryFull,
    /// The queue of replies waiting to be sent is full.
    QueueFull,
    /// handoff is shutting down.
    ShuttingDown,
}

impl Suppression {
    pub const ALL: [Suppression; 20] = [
        Suppression::NullSender,
        Suppression::SystemSender,
        Suppression::InvalidSender,
        Suppression::OwnAddress,
        Suppression::LoopMarked,
        Suppression::AutoSubmitted,
        Suppression::Precedence,
        Suppression::MailingList,
        Suppression::AutoResponseSuppress,
        Suppression::Spam,
        Suppression::NotAddressed,
        Suppression::Unauthenticated,
        Suppression::HeadersTruncated,
        Suppression::AlreadyReplied,
        Suppression::AccountRateLimit,
        Suppression::SystemRateLimit,
        Suppression::StoreUnavailable,
        Suppression::MemoryFull,
        Suppression::QueueFull,
        Suppression::ShuttingDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Suppression::NullSender => "null_sender",
            Suppression::SystemSender => "system_sender",
            Suppression::InvalidSender => "invalid_sender",
            Suppression::OwnAddress => "own_address",
            Suppression::LoopMarked => "loop_marked",
            Suppression::AutoSubmitted => "auto_submitted",
            Suppression::Precedence => "precedence",
            Suppression::MailingList => "mailing_list",
            Suppression::AutoResponseSuppress => "auto_response_suppress",
            Suppression::Spam => "spam",
            Suppression::NotAddressed => "not_addressed",
            Suppression::Unauthenticated => "unauthenticated",
            Suppression::HeadersTruncated => "headers_truncated",
            Suppression::AlreadyReplied => "already_replied",
            Suppression::AccountRateLimit => "account_rate_limit",
            Suppression::SystemRateLimit => "system_rate_limit",
            Suppression::StoreUnavailable => "store_unavailable",
            Suppression::MemoryFull => "memory_full",
            Suppression::QueueFull => "queue_full",
            Suppression::ShuttingDown => "shutting_down",
        }
    }
}

/// The `List-*` headers of RFC 2369 and RFC 2919; any one marks list traffic.
const LIST_HEADERS: [&str; 7] = [
    "List-Id",
    "List-Unsubscribe",
    "List-Post",
    "List-Help",
    "List-Subscribe",
    "List-Owner",
    "List-Archive",
];

/// The headers that name the recipients a reply may be owed to (RFC 3834 section 2 names To
/// and Cc; Bcc and the Resent- forms, Resent-Bcc included (RFC 5322 section 3.6.6), also name
/// the recipient deliberately).
const ADDRESSED_HEADERS: [HeaderName<'static>; 6] = [
    HeaderName::To,
    HeaderName::Cc,
    HeaderName::Bcc,
    HeaderName::ResentTo,
    HeaderName::ResentCc,
    HeaderName::ResentBcc,
];

/// The headers mail-parser reads for [`Facts`]: address lists, and what the reply quotes.
const STRUCTURED_HEADERS: [&str; 10] = [
    "To",
    "Cc",
    "Bcc",
    "Resent-To",
    "Resent-Cc",
    "Resent-Bcc",
    "From",
    "Subject",
    "Message-ID",
    "References",
];

/// What the rules and the reply need from one message's headers, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The first `Auto-Submitted` value other than `no` (else `no`, if there is one), lower
    /// case, comments removed. A message may carry the header twice (an auto-forwarder adds
    /// its own); any one that is not `no` forbids a reply.
    pub auto_submitted: Option<String>,
    /// The first `Precedence` value that forbids a reply (else the first one), lower case.
    pub precedence: Option<String>,
    /// The name of the first `List-*` header present.
    pub list_header: Option<&'static str>,
    /// Every `X-Auto-Response-Suppress` token, lower case.
    pub auto_response_suppress: Vec<String>,
    /// `X-Spam-Flag: YES` or `X-Spam-Status: Yes…`.
    pub spam: bool,
    /// Every address in To, Cc, Bcc, Resent-To, Resent-Cc and Resent-Bcc (groups and display
    /// names resolved, encoded words decoded).
    pub recipients: Vec<Address>,
    /// The domain of the first `From:` address, lower case.
    pub from_domain: Option<String>,
    pub auth_results: Vec<AuthResults>,
    /// Accounts whose genuine loop marker the message carries: the transaction checks the
    /// markers' MACs ([`crate::loopmark`]) and the caller fills this in.
    pub loop_marks: Vec<Address>,
    /// The decoded Subject.
    pub subject: Option<String>,
    /// The Message-ID, without angle brackets.
    pub message_id: Option<String>,
    /// The References ids, without angle brackets, in order.
    pub references: Vec<String>,
    /// Postfix passed more header bytes than the milter session keeps.
    pub truncated: bool,
}

impl Facts {
    /// Reads the headers as the milter session keeps them: `(name, value)` with Postfix's one
    /// leading space removed and folds as bare LF (Postfix milter8.c sends header values that
    /// way).
    pub fn from_headers(headers: &[(String, Vec<u8>)], truncated: bool) -> Facts {
        let mut f = Facts {
            truncated,
            ..Facts::default()
        };
        // The structured headers go to mail-parser as one header block, CRLF line ends.
        let mut block = Vec::new();
        for (name, value) in headers {
            let text = unfold(value);
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("Auto-Submitted") {
                let v = strip_comments(&text);
                let token = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if f.auto_submitted.as_deref().is_none_or(|v| v == "no") {
                    f.auto_submitted = Some(token);
                }
            } else if is("Precedence") {
                if f.precedence.as_deref().is_none_or(|p| !bulk_precedence(p)) {
                    f.precedence = Some(strip_comments(&text).trim().to_ascii_lowercase());
                }
            } else if is("X-Auto-Response-Suppress") {
                f.auto_response_suppress.extend(
                    text.split([',', ' ', '\t'])
                        .filter(|t| !t.is_empty())
                        .map(|t| t.to_ascii_lowercase()),
                );
            } else if is("X-Spam-Flag") {
                f.spam |= text.trim().eq_ignore_ascii_case("yes");
            } else if is("X-Spam-Status") {
                f.spam |= text
                    .trim_start()
                    .get(..3)
                    .is_some_and(|s| s.eq_ignore_ascii_case("yes"));
            } else if is("Authentication-Results") {
                if let Some(ar) = AuthResults::parse(&text) {
                    f.auth_results.push(ar);
                }
            } else if let Some(list) = LIST_HEADERS.iter().find(|h| is(h)) {
                f.list_header.get_or_insert(list);
            }
            let structured = STRUCTURED_HEADERS.iter().any(|h| is(h));
            // A name with anything but printable ASCII cannot be a header mail-parser should
            // see; Postfix would not pass one, but the bytes come off the wire.
            let clean_name =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if structured && clean_name {
                block.extend_from_slice(name.as_bytes());
                block.extend_from_slice(b": ");
                push_crlf(&mut block, value);
                block.extend_from_slice(b"\r\n");
            }
        }
        block.extend_from_slice(b"\r\n");
        if let Some(m) = MessageParser::new().parse_headers(&block) {
            for name in ADDRESSED_HEADERS {
                for value in m.header_values(name) {
                    if let HeaderValue::Address(list) = value {
                        f.recipients.extend(
                            list.iter()
                                .filter_map(|a| a.address())
                                .filter_map(Address::from_envelope),
                        );
                    }
                }
            }
            f.from_domain = m
                .from()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .and_then(|a| a.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase());
            f.subject = m.subject().map(str::to_string);
            f.message_id = m.message_id().map(str::to_string);
            f.references = match m.header(HeaderName::References) {
                Some(HeaderValue::Text(id)) => vec![id.to_string()],
                Some(HeaderValue::TextList(ids)) => ids.iter().map(|s| s.to_string()).collect(),
                _ => Vec::new(),
            };
        }
        f
    }
}

/// Who the reply would be for, and who it would come from.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The departed account.
    pub account: &'a Address,
    /// The addresses that led to the account in this message: the recipients as sent and the
    /// alias and `+detail` addresses of their resolutions.
    pub forms: &'a [Address],
    /// `recipient_delimiter`, to see `a+tag@` in a header as `a@`.
    pub delimiter: Option<char>,
    /// The accounts the envelope sender's own address reaches in the policy (it is an alias
    /// or a forward source of them): the account's other addresses, which it does not answer.
    pub sender_reaches: &'a [Address],
}

/// The `require_authenticated` setting.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthPolicy<'a> {
    pub required: bool,
    /// Trusted authserv-ids, lower case.
    pub authserv_ids: &'a [String],
}

/// Decides whether `target` may answer this message: `Ok` or the first rule that forbids it.
/// The order puts envelope facts first, then header facts, then authentication.
pub fn judge(
    facts: &Facts,
    sender: Option<&Address>,
    target: Target<'_>,
    auth: AuthPolicy<'_>,
) -> Result<(), Suppression> {
    let Some(sender) = sender else {
        return Err(Suppression::NullSender);
    };
    if is_system_sender(sender) {
        return Err(Suppression::SystemSender);
    }
    if Address::parse_strict(sender.as_str()).is_err() {
        return Err(Suppression::InvalidSender);
    }
    let sender_base = target
        .delimiter
        .and_then(|d| sender.without_detail(d))
        .unwrap_or_else(|| sender.clone());
    if sender == target.account
        || &sender_base == target.account
        || target.sender_reaches.contains(target.account)
    {
        return Err(Suppression::OwnAddress);
    }
    if facts.loop_marks.contains(target.account) {
        return Err(Suppression::LoopMarked);
    }
    if facts.truncated {
        return Err(Suppression::HeadersTruncated);
    }
    if facts.auto_submitted.as_deref().is_some_and(|v| v != "no") {
        return Err(Suppression::AutoSubmitted);
    }
    if facts.precedence.as_deref().is_some_and(bulk_precedence) {
        return Err(Suppression::Precedence);
    }
    if facts.list_header.is_some() {
        return Err(Suppression::MailingList);
    }
    if facts
        .auto_response_suppress
        .iter()
        .any(|t| t == "all" || t == "oof")
    {
        return Err(Suppression::AutoResponseSuppress);
    }
    if facts.spam {
        return Err(Suppression::Spam);
    }
    if !addressed(facts, target) {
        return Err(Suppression::NotAddressed);
    }
    if auth.required && !vouched_for(facts, sender, auth.authserv_ids) {
        return Err(Suppression::Unauthenticated);
    }
    Ok(())
}

/// `Precedence: bulk`, `list` or `junk` (sendmail's and Exchange's markers for mail that
/// must not be answered).
fn bulk_precedence(p: &str) -> bool {
    matches!(p, "bulk" | "list" | "junk")
}

/// Local parts that belong to software, not people (RFC 3834 section 2 names the `owner-` and
/// `-request` conventions of list managers; RFC 5321 section 4.5.1 postmaster; MAILER-DAEMON is
/// sendmail's and Postfix's bounce sender), and senders that say no one reads replies.
pub fn is_system_sender(addr: &Address) -> bool {
    let local = addr.local_part();
    // `postmaster+123@` is still postmaster.
    let base = local.split('+').next().unwrap_or(local);
    matches!(
        base,
        "mailer-daemon" | "postmaster" | "listserv" | "majordomo"
    ) || base.starts_with("owner-")
        || base.ends_with("-request")
        || base.ends_with("-owner")
        || base.ends_with("-bounces")
        || says_no_reply(local)
}

/// The no-reply words, as runs of tokens joined: `noreply`, `no-reply`, `do_not_reply`, …
const NO_REPLY: [&str; 3] = ["noreply", "donotreply", "dontreply"];

/// Whether a local part says "no reply" as a token of its own: `noreply-dmarc-support`,
/// `notifications-noreply`, `do-not-reply+x`, `info.no_reply`. The tokens are what `-`, `_`,
/// `.` and `+` separate (the separators senders use between words); a run of adjacent tokens
/// counts when together they spell a no-reply word. Inside a token nothing counts: `snoreply`,
/// `noreplyer` and `donotreplyto` are names, not markers.
fn says_no_reply(local: &str) -> bool {
    let tokens: Vec<&str> = local.split(['-', '_', '.', '+']).collect();
    (0..tokens.len()).any(|start| {
        let mut joined = String::new();
        tokens[start..].iter().any(|t| {
            joined.push_str(t);
            NO_REPLY.contains(&joined.as_str())
        })
    })
}

fn addressed(facts: &Facts, target: Target<'_>) -> bool {
    let wanted = |a: &Address| a == target.account || target.forms.contains(a);
    facts.recipients.iter().any(|r| {
        wanted(r)
            || target
                .delimiter
                .and_then(|d| r.without_detail(d))
                .is_some_and(|base| wanted(&base))
    })
}

/// One `Authentication-Results` header (RFC 8601 section 2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    /// Lower case.
    pub authserv_id: String,
    pub results: Vec<AuthResult>,
}

/// One `method=result` with its properties, all lower case (`header.d`, `smtp.mailfrom`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResult {
    pub method: String,
    pub result: String,
    pub props: Vec<(String, String)>,
}

impl AuthResults {
    /// Parses the value of one header; `None` when it has no authserv-id.
    pub fn parse(value: &str) -> Option<AuthResults> {
        let text = strip_comments(value);
        let mut parts = split_outside_quotes(&text, ';').into_iter();
        let head = parts.next()?;
        // authserv-id [CFWS authres-version]
        let id = head.split_whitespace().next()?.trim_matches('"');
        if id.is_empty() {
            return None;
        }
        let mut results = Vec::new();
        for part in parts {
            let mut words = part.split_whitespace();
            let Some(first) = words.next() else { continue };
            let Some((method, result)) = first.split_once('=') else {
                continue; // `none`: no results
            };
            // method [ "/" version ]
            let method = method.split('/').next().unwrap_or(method);
            let props = words
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.trim_matches('"').to_ascii_lowercase(),
                    )
                })
                .collect();
            results.push(AuthResult {
                method: method.to_ascii_lowercase(),
                result: result.to_ascii_lowercase(),
                props,
            });
        }
        Some(AuthResults {
            authserv_id: id.to_ascii_lowercase(),
            results,
        })
    }
}

impl AuthResult {
    fn prop(&self, name: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether a trusted `Authentication-Results` vouches for the envelope sender's domain, the
/// domain the reply goes to. What counts, from a header whose authserv-id is trusted (anyone
/// can write one with another id; RFC 8601 section 5 asks the trusted MTA to remove forged ones
/// with its own id):
/// - `spf=pass` whose `smtp.mailfrom` domain is the envelope sender's domain (SPF checks exactly
///   that domain, RFC 7208 section 2.4);
/// - `dkim=pass` whose `header.d` (or the domain of `header.i`) is the envelope sender's domain
///   or a parent of it ([`vouches`]);
/// - `dmarc=pass` whose `header.from` (or, without it, the `From:` domain) is the envelope
///   sender's domain or a parent of it: DMARC authenticates the `From:` domain, which says
///   nothing about a different envelope domain.
///
/// A pass for the `From:` domain alone is not enough: the reply goes to the envelope sender,
/// and a forger can send with `From:` set to any domain that passes and the envelope sender set
/// to the victim of the backscatter.
pub fn vouched_for(facts: &Facts, sender: &Address, trusted: &[String]) -> bool {
    let envelope = sender.domain();
    let domain_of = |v: &str| v.rsplit('@').next().unwrap_or(v).to_string();
    facts
        .auth_results
        .iter()
        .filter(|ar| trusted.contains(&ar.authserv_id))
        .flat_map(|ar| &ar.results)
        .filter(|r| r.result == "pass")
        .any(|r| match r.method.as_str() {
            "dmarc" => r
                .prop("header.from")
                .map(domain_of)
                .or_else(|| facts.from_domain.clone())
                .is_some_and(|d| vouches(&d, envelope)),
            "dkim" => r
                .prop("header.d")
                .map(str::to_string)
                .or_else(|| r.prop("header.i").map(domain_of))
                .is_some_and(|d| vouches(&d, envelope)),
            "spf" => r.prop("smtp.mailfrom").map(domain_of).is_some_and(|d| {
                let d = d.trim_end_matches('.');
                !d.is_empty() && d.eq_ignore_ascii_case(envelope.trim_end_matches('.'))
            }),
            _ => false,
        })
}

/// Whether an authenticated domain `signer` vouches for `domain`: the same domain, or a parent
/// of it with at least two labels (`partner.example` vouches for `mail.partner.example`, never
/// the reverse, nor a sibling). The owner of a domain controls the DNS of the names under it;
/// the owner of a name under a shared suffix (`x.github.io`) controls nothing above it. This is
/// stricter than DMARC's relaxed alignment (RFC 7489 section 3.1.1), which needs the public
/// suffix list to be safe.
fn vouches(signer: &str, domain: &str) -> bool {
    let (signer, domain) = (signer.trim_end_matches('.'), domain.trim_end_matches('.'));
    if signer.is_empty() || domain.is_empty() {
        return false;
    }
    if signer.eq_ignore_ascii_case(domain) {
        return true;
    }
    // Compared as bytes: the domains come from headers and may hold any UTF-8.
    let (s, d) = (signer.as_bytes(), domain.as_bytes());
    s.contains(&b'.')
        && d.len() > s.len() + 1
        && d[d.len() - s.len()..].eq_ignore_ascii_case(s)
        && d[d.len() - s.len() - 1] == b'.'
}

/// A header value as one line: the LF (or CRLF) of each fold removed, invalid UTF-8 replaced.
fn unfold(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect()
}

/// The value with every line break made CRLF, for a header block.
fn push_crlf(out: &mut Vec<u8>, value: &[u8]) {
    let mut prev = 0u8;
    for &b in value {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
}

/// Removes RFC 5322 comments (nested parentheses, quoted pairs), keeping quoted strings.
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next();
                if depth == 0 {
                    out.push(c);
                    out.extend(next);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    out.push(' ');
                }
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        Address::parse_strict(s).unwrap()
    }

    fn headers(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    /// The verdict for `gone@corp.example` (reached as itself) on a message from
    /// `ext@partner.example` with `To: gone@corp.example` plus `extra` headers.
    fn verdict(extra: &[(&str, &str)]) -> Result<(), Suppression> {
        verdict_from(Some("ext@partner.example"), extra)
    }

    fn verdict_from(sender: Option<&str>, extra: &[(&str, &str)]) -> Result<(), Suppression> {
        let mut list = vec![("To", "Gone <gone@corp.example>")];
        list.extend_from_slice(extra);
        judge_with(sender, &list, &[], AuthPolicy::default())
    }

    fn judge_with(
        sender: Option<&str>,
        list: &[(&str, &str)],
        forms: &[Address],
        auth: AuthPolicy<'_>,
    ) -> Result<(), Suppression> {
        let facts = Facts::from_headers(&headers(list), false);
        let account = a("gone@corp.example");
        let mut all_forms = vec![account.clone()];
        all_forms.extend_from_slice(forms);
        let sender = sender.and_then(Address::from_envelope);
        judge(
            &facts,
            sender.as_ref(),
            Target {
                account: &account,
                forms: &all_forms,
                delimiter: Some('+'),
                sender_reaches: &[],
            },
            auth,
        )
    }

    #[test]
    fn a_plain_message_gets_a_reply() {
        assert_eq!(verdict(&[("Subject", "hello")]), Ok(()));
    }

    #[test]
    fn null_sender() {
        assert_eq!(verdict_from(None, &[]), Err(Suppression::NullSender));
        assert_eq!(verdict_from(Some("ext@partner.example"), &[]), Ok(()));
    }

    #[test]
    fn system_senders() {
        for s in [
            "MAILER-DAEMON@partner.example",
            "postmaster@partner.example",
            "LISTSERV@lists.example",
            "majordomo@lists.example",
            "owner-staff@lists.example",
            "staff-request@lists.example",
            "noreply@shop.example",
            "No-Reply@shop.example",
            "donotreply@shop.example",
            "noreply+123@shop.example",
        ] {
            assert_eq!(
                verdict_from(Some(s), &[]),
                Err(Suppression::SystemSender),
                "{s}"
            );
        }
        for s in [
            "owner@partner.example",
            "requester@partner.example",
            "reply@x.example",
        ] {
            assert_eq!(verdict_from(Some(s), &[]), Ok(()), "{s}");
        }
    }

    #[test]
    fn a_sender_that_cannot_be_a_header_address() {
        assert_eq!(
            verdict_from(Some("<a\r\nBcc: x@evil.example>"), &[]),
            Err(Suppression::InvalidSender)
        );
        assert_eq!(
            verdict_from(Some("\"a b\"@partner.example"), &[]),
            Err(Suppression::InvalidSender)
        );
    }

    /// Real senders put the marker among other words: DMARC reporters, notification systems.
    #[test]
    fn no_reply_as_a_token_inside_the_local_part() {
        for s in [
            "noreply-dmarc-support@google.example",
            "notifications-noreply@linkedin.example",
            "do-not-reply+x@bank.example",
            "do_not_reply@shop.example",
            "info.no-reply@shop.example",
            "alerts.noreply.eu@cloud.example",
            "no.reply@shop.example",
            "NoReply_Billing@shop.example",
            "dont-reply@shop.example",
        ] {
            assert_eq!(
                verdict_from(Some(s), &[]),
                Err(Suppression::SystemSender),
                "{s}"
            );
        }
        // Inside a word, or only part of the phrase: people and ordinary names.
        for s in [
            "snoreply@partner.example",
            "noreplyer@partner.example",
            "donotreplyto@partner.example",
            "reply-no@partner.example",
            "no-replies@partner.example",
            "nora.reply@partner.example",
            "not-reply@partner.example",
            "do-reply@partner.example",
        ] {
            assert_eq!(verdict_from(Some(s), &[]), Ok(()), "{s}");
        }
    }

    /// Mail from an alias that includes the account, or from an address forwarded to it, is
    /// mail from the account itself.
    #[test]
    fn aliases_and_forward_sources_of_the_account_are_its_own() {
        let facts = Facts::from_headers(&headers(&[("To", "gone@corp.example")]), false);
        let account = a("gone@corp.example");
        let j = |sender: &str, reaches: &[Address]| {
            judge(
                &facts,
                Some(&a(sender)),
                Target {
                    account: &account,
                    forms: &[],
                    delimiter: Some('+'),
                    sender_reaches: reaches,
                },
                AuthPolicy::default(),
            )
        };
        assert_eq!(
            j(
                "sales@corp.example",
                &[a("alice@corp.example"), account.clone()]
            ),
            Err(Suppression::OwnAddress)
        );
        assert_eq!(j("sales@corp.example", &[a("alice@corp.example")]), Ok(()));
        assert_eq!(j("ext@partner.example", &[]), Ok(()));
    }

    #[test]
    fn the_account_writing_to_itself() {
        assert_eq!(
            verdict_from(Some("gone@corp.example"), &[]),
            Err(Suppression::OwnAddress)
        );
        assert_eq!(
            verdict_from(Some("Gone+x@Corp.Example"), &[]),
            Err(Suppression::OwnAddress)
        );
        assert_eq!(verdict_from(Some("cs@corp.example"), &[]), Ok(()));
    }

    #[test]
    fn loop_marker_for_this_account() {
        // The transaction verified the markers; the header itself counts for nothing here.
        let facts = |marks: &[&str]| Facts {
            loop_marks: marks.iter().map(|m| a(m)).collect(),
            ..Facts::from_headers(&headers(&[("To", "gone@corp.example")]), false)
        };
        let account = a("gone@corp.example");
        let sender = a("ext@partner.example");
        let target = Target {
            account: &account,
            forms: &[],
            delimiter: None,
            sender_reaches: &[],
        };
        let j = |f: &Facts| judge(f, Some(&sender), target, AuthPolicy::default());
        assert_eq!(
            j(&facts(&["gone@corp.example"])),
            Err(Suppression::LoopMarked)
        );
        assert_eq!(j(&facts(&["other@corp.example"])), Ok(()));
        assert_eq!(
            verdict(&[("X-Handoff-Forwarded", "gone@corp.example")]),
            Ok(())
        );
    }

    #[test]
    fn auto_submitted() {
        for v in [
            "auto-replied",
            "auto-generated",
            "Auto-Notified (by x)",
            "",
            "auto-replied; owner-email=x",
        ] {
            assert_eq!(
                verdict(&[("Auto-Submitted", v)]),
                Err(Suppression::AutoSubmitted),
                "{v:?}"
            );
        }
        assert_eq!(verdict(&[("Auto-Submitted", "no")]), Ok(()));
        assert_eq!(verdict(&[("Auto-Submitted", " No (a person)")]), Ok(()));
    }

    #[test]
    fn precedence() {
        for v in ["bulk", "List", "junk (spam)"] {
            assert_eq!(
                verdict(&[("Precedence", v)]),
                Err(Suppression::Precedence),
                "{v}"
            );
        }
        assert_eq!(verdict(&[("Precedence", "first-class")]), Ok(()));
    }

    /// Found by the `autoreply_eligibility` fuzz target's property (on a hand-made input):
    /// only the first header was read, so a second one that forbids a reply was ignored.
    #[test]
    fn any_auto_submitted_or_precedence_header_counts() {
        assert_eq!(
            verdict(&[
                ("Auto-Submitted", "no"),
                ("Auto-Submitted", "auto-generated")
            ]),
            Err(Suppression::AutoSubmitted)
        );
        assert_eq!(
            verdict(&[("Auto-Submitted", "auto-replied"), ("Auto-Submitted", "no")]),
            Err(Suppression::AutoSubmitted)
        );
        assert_eq!(
            verdict(&[("Precedence", "first-class"), ("Precedence", "bulk")]),
            Err(Suppression::Precedence)
        );
        assert_eq!(
            verdict(&[("Auto-Submitted", "no"), ("Auto-Submitted", "No")]),
            Ok(())
        );
    }

    #[test]
    fn list_headers() {
        for h in LIST_HEADERS {
            assert_eq!(
                verdict(&[(h, "<x.lists.example>")]),
                Err(Suppression::MailingList),
                "{h}"
            );
        }
        assert_eq!(verdict(&[("List-Idx", "x")]), Ok(()));
    }

    #[test]
    fn x_auto_response_suppress() {
        for v in ["All", "OOF", "DR, oof", "NDR,ALL"] {
            assert_eq!(
                verdict(&[("X-Auto-Response-Suppress", v)]),
                Err(Suppression::AutoResponseSuppress),
                "{v}"
            );
        }
        assert_eq!(verdict(&[("X-Auto-Response-Suppress", "DR, RN")]), Ok(()));
    }

    #[test]
    fn spam_marks() {
        assert_eq!(verdict(&[("X-Spam-Flag", "YES")]), Err(Suppression::Spam));
        assert_eq!(
            verdict(&[("X-Spam-Status", "Yes, score=9.1 required=5.0")]),
            Err(Suppression::Spam)
        );
        assert_eq!(verdict(&[("X-Spam-Flag", "NO")]), Ok(()));
        assert_eq!(
            verdict(&[("X-Spam-Status", "No, score=0.1 required=5.0")]),
            Ok(())
        );
    }

    #[test]
    fn only_when_addressed_in_the_headers() {
        let j = |list: &[(&str, &str)]| {
            judge_with(
                Some("ext@partner.example"),
                list,
                &[],
                AuthPolicy::default(),
            )
        };
        assert_eq!(
            j(&[("To", "someone@corp.example")]),
            Err(Suppression::NotAddressed),
            "a Bcc copy or a list expansion"
        );
        assert_eq!(
            j(&[]),
            Err(Suppression::NotAddressed),
            "no recipient headers"
        );
        // Display names, comments, groups, several headers, Cc, Resent-*, folded lines.
        for (name, value) in [
            (
                "Cc",
                "\"Doe, John\" <john@x.example>, GONE@corp.example (old address)",
            ),
            ("To", "team: a@x.example, gone@corp.example;, b@x.example"),
            ("Bcc", "gone@corp.example"),
            ("Resent-To", "<gone@corp.example>"),
            ("Resent-Cc", "x@y.example,\n\tgone@corp.example"),
            ("Resent-Bcc", "gone@corp.example"),
            ("Resent-Bcc", "Gone <gone@corp.example>, x@y.example"),
            ("To", "=?utf-8?B?5byg5LiJ?= <gone@corp.example>"),
            ("To", "gone+news@corp.example"),
        ] {
            assert_eq!(j(&[(name, value)]), Ok(()), "{name}: {value}");
        }
        assert_eq!(
            j(&[("To", "\"gone@corp.example\" <other@corp.example>")]),
            Err(Suppression::NotAddressed),
            "an address in a display name does not count"
        );
        assert_eq!(
            j(&[("Reply-To", "gone@corp.example")]),
            Err(Suppression::NotAddressed)
        );
        assert_eq!(
            j(&[("Resent-Bcc", "other@corp.example")]),
            Err(Suppression::NotAddressed)
        );
        // Reached through an alias: the alias in To counts.
        let sales = [a("sales@corp.example")];
        assert_eq!(
            judge_with(
                Some("ext@partner.example"),
                &[("To", "Sales <sales@corp.example>")],
                &sales,
                AuthPolicy::default()
            ),
            Ok(())
        );
    }

    #[test]
    fn require_authenticated() {
        let trusted = ["mx.corp.example".to_string()];
        let auth = AuthPolicy {
            required: true,
            authserv_ids: &trusted,
        };
        let j = |extra: &[(&str, &str)]| {
            let mut list = vec![
                ("To", "gone@corp.example"),
                ("From", "Ext <ext@partner.example>"),
            ];
            list.extend_from_slice(extra);
            judge_with(Some("bounce@mail.partner.example"), &list, &[], auth)
        };
        assert_eq!(j(&[]), Err(Suppression::Unauthenticated));
        for ok in [
            "mx.corp.example; dmarc=pass (p=reject) header.from=partner.example",
            "MX.corp.example 1; spf=pass smtp.mailfrom=bounce@mail.partner.example",
            "mx.corp.example;\n\tdkim=pass (2048-bit key) header.d=partner.example header.s=s1",
            "mx.corp.example; spf=fail smtp.mailfrom=x@partner.example; dkim=pass header.i=@partner.example",
        ] {
            assert_eq!(j(&[("Authentication-Results", ok)]), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example; dmarc=pass header.from=partner.example",
            "mx.corp.example; dmarc=fail header.from=partner.example",
            "mx.corp.example; spf=pass smtp.mailfrom=x@evil.example",
            "mx.corp.example; dkim=pass header.d=example",
            "mx.corp.example; none",
            "(mx.corp.example) evil.example; dmarc=pass",
        ] {
            assert_eq!(
                j(&[("Authentication-Results", bad)]),
                Err(Suppression::Unauthenticated),
                "{bad}"
            );
        }
        // Off by default.
        assert_eq!(
            judge_with(
                Some("ext@partner.example"),
                &[("To", "gone@corp.example")],
                &[],
                AuthPolicy::default()
            ),
            Ok(())
        );
    }

    /// The reply goes to the envelope sender, so what passed must vouch for its domain: a
    /// pass for the `From:` domain alone let anyone aim replies at a third party.
    #[test]
    fn require_authenticated_vouches_for_the_envelope_sender() {
        let trusted = ["mx.corp.example".to_string()];
        let auth = AuthPolicy {
            required: true,
            authserv_ids: &trusted,
        };
        let j = |sender: &str, ar: &str| {
            let list = [
                ("To", "gone@corp.example"),
                ("From", "Ext <ext@partner.example>"),
                ("Authentication-Results", ar),
            ];
            judge_with(Some(sender), &list, &[], auth)
        };
        let victim = "victim@victim.example";
        for forged in [
            "mx.corp.example; dmarc=pass header.from=partner.example",
            "mx.corp.example; dmarc=pass",
            "mx.corp.example; dkim=pass header.d=partner.example",
            "mx.corp.example; dkim=pass header.i=ext@partner.example",
            "mx.corp.example; spf=pass smtp.mailfrom=ext@partner.example",
        ] {
            assert_eq!(
                j(victim, forged),
                Err(Suppression::Unauthenticated),
                "{forged}"
            );
        }
        for (sender, ok) in [
            (
                victim,
                "mx.corp.example; spf=pass smtp.mailfrom=victim@victim.example",
            ),
            (
                victim,
                "mx.corp.example; spf=pass smtp.mailfrom=victim.example",
            ),
            (victim, "mx.corp.example; dkim=pass header.d=victim.example"),
            (
                victim,
                "mx.corp.example; dmarc=pass header.from=victim.example",
            ),
            ("ext@partner.example", "mx.corp.example; dmarc=pass"),
            (
                "b@mail.partner.example",
                "mx.corp.example; dkim=pass header.d=partner.example",
            ),
        ] {
            assert_eq!(j(sender, ok), Ok(()), "{sender}: {ok}");
        }
        for (sender, bad) in [
            // SPF checked another domain than the one the reply goes to.
            (
                "b@mail.partner.example",
                "mx.corp.example; spf=pass smtp.mailfrom=x@partner.example",
            ),
            // A subdomain's signer does not vouch for its parent, nor for a sibling.
            (
                "b@partner.example",
                "mx.corp.example; dkim=pass header.d=mail.partner.example",
            ),
            (
                "b@a.partner.example",
                "mx.corp.example; dmarc=pass header.from=b.partner.example",
            ),
        ] {
            assert_eq!(
                j(sender, bad),
                Err(Suppression::Unauthenticated),
                "{sender}: {bad}"
            );
        }
    }

    #[test]
    fn values_with_their_leading_space_and_folds() {
        // With HDR_LEADSPC Postfix passes each value as written, leading space included.
        let list = [
            ("To", " Gone\n\t<gone@corp.example>"),
            ("Auto-Submitted", " no"),
            ("Precedence", " first-class"),
            ("X-Auto-Response-Suppress", " DR"),
            ("X-Spam-Status", " No, score=0.1"),
        ];
        assert_eq!(
            judge_with(
                Some("ext@partner.example"),
                &list,
                &[],
                AuthPolicy::default()
            ),
            Ok(())
        );
        let spam = [
            ("To", " gone@corp.example"),
            ("X-Spam-Status", " Yes, score=9"),
        ];
        assert_eq!(
            judge_with(
                Some("ext@partner.example"),
                &spam,
                &[],
                AuthPolicy::default()
            ),
            Err(Suppression::Spam)
        );
        let f = Facts::from_headers(&headers(&[("Subject", " Hi\n there")]), false);
        assert_eq!(f.subject.as_deref(), Some("Hi there"));
    }

    #[test]
    fn truncated_headers() {
        let facts = Facts::from_headers(&headers(&[("To", "gone@corp.example")]), true);
        let account = a("gone@corp.example");
        let sender = a("ext@partner.example");
        let target = Target {
            account: &account,
            forms: &[],
            delimiter: None,
            sender_reaches: &[],
        };
        assert_eq!(
            judge(&facts, Some(&sender), target, AuthPolicy::default()),
            Err(Suppression::HeadersTruncated)
        );
    }

    #[test]
    fn facts_for_the_reply() {
        let f = Facts::from_headers(
            &headers(&[
                ("Subject", "=?utf-8?B?5L2g5aW9?= there"),
                ("Message-ID", "<m1@partner.example>"),
                ("References", "<r1@x.example>\n <r2@x.example>"),
            ]),
            false,
        );
        assert_eq!(f.subject.as_deref(), Some("你好 there"));
        assert_eq!(f.message_id.as_deref(), Some("m1@partner.example"));
        assert_eq!(f.references, ["r1@x.example", "r2@x.example"]);
    }

    #[test]
    fn a_parent_domain_vouches_for_its_subdomains_only() {
        assert!(vouches("partner.example", "partner.example"));
        assert!(vouches("Partner.Example.", "partner.example"));
        assert!(vouches("partner.example", "mail.partner.example"));
        assert!(!vouches("mail.partner.example", "partner.example"));
        assert!(!vouches("example", "partner.example"));
        assert!(!vouches("evilpartner.example", "partner.example"));
        assert!(!vouches("partner.example", "evilpartner.example"));
        assert!(!vouches("a.partner.example", "b.partner.example"));
        assert!(!vouches("", "partner.example"));
        // Found by the `autoreply_eligibility` fuzz target (in the alignment check this
        // replaces): the suffix cut fell inside a multi-byte character and panicked.
        assert!(!vouches("b.example", "aaü.example"));
        assert!(!vouches(
            "partner e\u{fffd}\u{fffd}.example",
            "mail.partner.example"
        ));
        assert!(vouches("ü.example", "mail.ü.example"));
    }

    #[test]
    fn reasons_are_distinct_labels() {
        let mut seen = std::collections::HashSet::new();
        for r in Suppression::ALL {
            assert!(seen.insert(r.as_str()), "{}", r.as_str());
            assert!(
                r.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
    }
}
