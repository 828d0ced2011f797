//! One SMTP or LMTP connection as a state machine, sans-IO: command lines and message content
//! in, replies and "deliver this" out. The decisions are [`crate::transaction`]'s; this module
//! only translates them to SMTP/LMTP and back.
//!
//! - The dialect is chosen by the client's greeting: `LHLO` makes an LMTP session (RFC 2033:
//!   after the content, one reply per accepted recipient, in RCPT order), `EHLO`/`HELO` an SMTP
//!   one (one reply for the whole message). One listener serves both, so Postfix may reach
//!   handoff through a transport of type `lmtp` or `smtp`.
//! - **RCPT**: refused recipients get their reply one by one; the message is already in
//!   Postfix's queue, so local-submission rules do not apply here.
//! - **End of data**: the transaction's edits become the outgoing envelope and the loop-marker
//!   headers ([`Delivery`]); the caller stores the message, hands it to the next hop, and
//!   asks [`Session::finish`] for the replies: an original recipient gets 250 only when the
//!   next hop accepted every address it became.

use foldhash::{HashMap, HashMapExt};
use smtp_proto::{MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, Request};

use super::codec::{DataEnd, DataFlaw, Reply};
use crate::address::{Address, smtp_mailbox};
use crate::policy::SmtpReply;
pub use crate::transaction::Context;
use crate::transaction::{
    Client, Edit, MAX_HEADER_BYTES, Message, MessageOutcome, RcptOutcome, Refusal, Transaction,
};

/// Which protocol the client chose with its greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// RFC 2033: one reply per accepted recipient after the content.
    Lmtp,
    /// RFC 5321: one reply for the whole message.
    Smtp,
}

/// Limits the session enforces (the codec enforces line lengths and the content size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// RCPT commands per message; further ones get `452 4.5.3` (RFC 5321 section 4.5.3.1.8:
    /// the client retries them in a later transaction). Postfix's smtpd_recipient_limit: 1000.
    pub max_recipients: usize,
    /// Advertised with SIZE; a larger MAIL SIZE= gets `552 5.3.4`.
    pub message_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recipients: 1000,
            message_size: super::codec::Limits::default().message_size,
        }
    }
}

/// What the caller must do after a command or the end of the content.
#[derive(Debug)]
pub enum Action {
    /// Send this reply.
    Reply(Reply),
    /// Send this reply (354), then pass the message content to [`Session::data`] until its end.
    StartData(Reply),
    /// A message refused at the end of its content: send the replies (one per recipient in
    /// LMTP, one in SMTP), and log and count the message like any other.
    Refused(Box<Refused>),
    /// Store and deliver this message, then call [`Session::finish`] for the replies.
    Deliver(Box<Delivery>),
    /// Send this reply and close the connection.
    Close(Reply),
}

/// A message ready to go to the next hop.
#[derive(Debug)]
pub struct Delivery {
    pub message: Message,
    /// The outgoing envelope sender: as the client wrote it (empty for the null sender), or
    /// its SRS address when the message leaves the company ([`crate::srs`]).
    pub sender: String,
    /// The client declared BODY=8BITMIME.
    pub body_8bit: bool,
    /// The client declared SMTPUTF8 (RFC 6531): passed on when the next hop offers it.
    pub smtputf8: bool,
    /// The message cannot travel without SMTPUTF8: a UTF-8 address in the outgoing envelope,
    /// or the client declared SMTPUTF8 and the header has UTF-8 (RFC 6532). A next hop that does
    /// not offer SMTPUTF8 gets nothing, never a downgraded copy (RFC 6531 section 3.2).
    pub needs_smtputf8: bool,
    /// The outgoing envelope: the original recipients after the edits.
    pub envelope: Vec<String>,
    /// Header lines to put in front of the message (the loop markers), CRLF-ended.
    pub prepend: Vec<u8>,
    /// Each accepted original recipient, in RCPT order, and the indices in `envelope` of the
    /// addresses it became.
    pub owners: Owners,
}

/// A message refused at the end of its content.
#[derive(Debug)]
pub struct Refused {
    /// The transaction as far as it got (sender, recipients, the headers read before the
    /// flaw), its outcome the refusal.
    pub message: Message,
    pub replies: Vec<Reply>,
}

/// Original recipients and the indices of the envelope addresses each became.
pub type Owners = Vec<(String, Vec<usize>)>;

/// What the next hop said about one address of the outgoing envelope.
pub type TargetReply = Reply;

/// One SMTP/LMTP connection.
#[derive(Debug)]
pub struct Session {
    hostname: String,
    limits: Limits,
    client: Client,
    dialect: Option<Dialect>,
    tx: Option<Pending>,
    refusal: Option<Refusal>,
}

/// A transaction between MAIL and the end of its content.
#[derive(Debug)]
struct Pending {
    tx: Transaction,
    sender: String,
    body_8bit: bool,
    smtputf8: bool,
    /// Accepted recipients, as written, in order.
    accepted: Vec<String>,
    rcpt_commands: usize,
    in_data: bool,
    headers: HeaderReader,
}

impl Session {
    /// `hostname` names handoff in replies; `client` is the peer.
    pub fn new(hostname: impl Into<String>, client: Client, limits: Limits) -> Session {
        Session {
            hostname: hostname.into(),
            limits,
            client,
            dialect: None,
            tx: None,
            refusal: None,
        }
    }

    /// The recipient refusal the last command decided, if any (taken: reported once).
    pub fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
    }

    /// The greeting sent when the connection opens.
    pub fn greeting(&self) -> Reply {
        Reply::new(220, format!("{} ESMTP LMTP handoff", self.hostname))
    }

    /// The protocol the client chose with LHLO, EHLO or HELO; `None` until it has greeted.
    pub fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }

    /// Whether a message is in progress (shutdown waits for it; timeouts are shorter outside).
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// Handles one command line (its line end included).
    pub fn handle(&mut self, line: &[u8], cx: &dyn Context) -> Action {
        if self.tx.as_ref().is_some_and(|t| t.in_data) {
            // The caller switched the codec to content mode; a command here is a caller bug.
            return Action::Reply(Reply::new(
                503,
                "5.5.1 Error: command inside message content",
            ));
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r,
            Err(e) => return Action::Reply(parse_error(&e)),
        };
        match request {
            Request::Lhlo { host } => self.hello(Dialect::Lmtp, &host, true),
            Request::Ehlo { host } => self.hello(Dialect::Smtp, &host, true),
            Request::Helo { host } => self.hello(Dialect::Smtp, &host, false),
            Request::Mail { from } => match unwritable(line, &from.address) {
                Some(why) => Action::Reply(Reply::new(
                    501,
                    format!("5.1.7 Error: bad sender address syntax: {why}"),
                )),
                None => Action::Reply(self.mail(
                    from.address.into_owned(),
                    from.flags & MAIL_BODY_8BITMIME != 0,
                    from.flags & MAIL_SMTPUTF8 != 0,
                    from.size as u64,
                    cx,
                )),
            },
            Request::Rcpt { to } => match unwritable(line, &to.address) {
                Some(why) => Action::Reply(Reply::new(
                    501,
                    format!("5.1.3 Error: bad recipient address syntax: {why}"),
                )),
                None => Action::Reply(self.rcpt(to.address.into_owned(), cx)),
            },
            Request::Data => self.data_command(),
            Request::Rset => {
                self.tx = None;
                Action::Reply(Reply::new(250, "2.0.0 Ok"))
            }
            Request::Noop { .. } => Action::Reply(Reply::new(250, "2.0.0 Ok")),
            Request::Quit => Action::Close(Reply::new(221, "2.0.0 Bye")),
            Request::Vrfy { .. } => {
                Action::Reply(Reply::new(502, "5.5.1 Error: VRFY is not offered"))
            }
            other => Action::Reply(Reply::new(
                502,
                format!("5.5.1 Error: {} is not offered", other.name()),
            )),
        }
    }

    fn hello(&mut self, dialect: Dialect, host: &str, extended: bool) -> Action {
        self.tx = None;
        self.dialect = Some(dialect);
        self.client.hostname = host.to_string();
        if !extended {
            return Action::Reply(Reply::new(250, self.hostname.clone()));
        }
        Action::Reply(Reply::multi(
            250,
            vec![
                self.hostname.clone(),
                "PIPELINING".into(),
                format!("SIZE {}", self.limits.message_size),
                "8BITMIME".into(),
                "ENHANCEDSTATUSCODES".into(),
                // RFC 6531: Postfix's lmtp/smtp client hands over a message whose envelope
                // needs SMTPUTF8 (a UTF-8 local part) only to a server that offers it.
                "SMTPUTF8".into(),
            ],
        ))
    }

    fn mail(
        &mut self,
        sender: String,
        body_8bit: bool,
        smtputf8: bool,
        size: u64,
        cx: &dyn Context,
    ) -> Reply {
        if self.dialect.is_none() {
            return Reply::new(503, "5.5.1 Error: send LHLO or EHLO first");
        }
        if self.tx.is_some() {
            return Reply::new(503, "5.5.1 Error: nested MAIL command");
        }
        if size > self.limits.message_size {
            return Reply::new(552, "5.3.4 Error: message size exceeds fixed limit");
        }
        if !smtputf8 && !sender.is_ascii() {
            return undeclared_utf8();
        }
        let raw = format!("<{sender}>");
        match Transaction::begin(cx.snapshot(), &self.client, raw, None, cx.today()) {
            Ok(tx) => {
                self.tx = Some(Pending {
                    tx,
                    sender,
                    body_8bit,
                    smtputf8,
                    accepted: Vec::new(),
                    rcpt_commands: 0,
                    in_data: false,
                    headers: HeaderReader::default(),
                });
                Reply::new(250, "2.1.0 Ok")
            }
            Err(reply) => smtp_reply(&reply),
        }
    }

    fn rcpt(&mut self, address: String, cx: &dyn Context) -> Reply {
        let Some(p) = self.tx.as_mut() else {
            return Reply::new(503, "5.5.1 Error: need MAIL command");
        };
        if p.rcpt_commands >= self.limits.max_recipients {
            return Reply::new(452, "4.5.3 Error: too many recipients");
        }
        p.rcpt_commands += 1;
        if !p.smtputf8 && !address.is_ascii() {
            return undeclared_utf8();
        }
        match p.tx.rcpt(format!("<{address}>"), cx.today()) {
            RcptOutcome::Accepted => {
                p.accepted.push(address);
                Reply::new(250, "2.1.5 Ok")
            }
            RcptOutcome::Refused {
                reply,
                decision,
                rule,
            } => {
                self.refusal = Some(Refusal {
                    decision,
                    rule: Some(rule),
                });
                smtp_reply(&reply)
            }
            // Only for local submission, which this front end never is.
            RcptOutcome::RefusedLater { .. } => Reply::new(451, "4.3.0 Error: try again later"),
        }
    }

    fn data_command(&mut self) -> Action {
        let dialect = self.dialect;
        let Some(p) = self.tx.as_mut() else {
            return Action::Reply(Reply::new(503, "5.5.1 Error: need MAIL command"));
        };
        if p.accepted.is_empty() {
            // RFC 2033 section 4.2: LMTP answers 503 here; Postfix's smtpd says 554.
            let code = if dialect == Some(Dialect::Lmtp) {
                503
            } else {
                554
            };
            return Action::Reply(Reply::new(code, "5.5.1 Error: no valid recipients"));
        }
        p.in_data = true;
        Action::StartData(Reply::new(354, "End data with <CR><LF>.<CR><LF>"))
    }

    /// Message content, as the codec produced it.
    pub fn data(&mut self, bytes: &[u8]) {
        if let Some(p) = self.tx.as_mut().filter(|p| p.in_data) {
            p.headers.feed(bytes, &mut p.tx);
        }
    }

    /// The end of the message content.
    pub fn data_end(&mut self, end: DataEnd) -> Action {
        let Some(mut p) = self.tx.take().filter(|p| p.in_data) else {
            return Action::Reply(Reply::new(503, "5.5.1 Error: no message in progress"));
        };
        p.headers.finish(&mut p.tx);
        let mut message = p.tx.finish(self.client.clone(), None);
        if let Some(flaw) = end.flaw {
            let (code, enhanced, text) = match flaw {
                // RFC 5321 section 2.3.8: CR and LF only as CRLF. A bare one is how SMTP
                // smuggling starts; such a message is refused whole, never passed on.
                DataFlaw::BareLineEnd => (554, "5.6.0", "bare CR or LF in message content"),
                // RFC 5321 section 4.1.1.4 allows no NUL in the content (RFC 5322 section
                // 2.1: US-ASCII, no NUL). A next hop that drops NULs before it looks for the
                // end of data would see `CRLF NUL . CRLF` as one: the same smuggling.
                DataFlaw::Nul => (554, "5.6.0", "NUL in message content"),
                DataFlaw::LineTooLong => (500, "5.5.6", "line too long"),
                DataFlaw::TooBig => (552, "5.3.4", "message size exceeds fixed limit"),
            };
            message.outcome =
                MessageOutcome::Refuse(SmtpReply::new(code, enhanced, format!("Error: {text}")));
        }
        match &message.outcome {
            MessageOutcome::Accept => {}
            MessageOutcome::Refuse(reply) => {
                let reply = smtp_reply(reply);
                let replies = self.per_recipient(&p.accepted, |_| reply.clone());
                return Action::Refused(Box::new(Refused { message, replies }));
            }
            MessageOutcome::CannotRewrite => {
                let reply = Reply::new(451, "4.3.0 Error: cannot rewrite this message");
                let replies = self.per_recipient(&p.accepted, |_| reply.clone());
                return Action::Refused(Box::new(Refused { message, replies }));
            }
        }
        let (envelope, prepend, owners) = plan(&message, &p.accepted);
        // SRS: the outgoing MAIL FROM is the rewritten sender.
        if let Some(sender) = message.edits.iter().find_map(|e| match e {
            Edit::ChangeSender(s) => Some(s.clone()),
            _ => None,
        }) {
            p.sender = sender;
        }
        let needs_smtputf8 = !p.sender.is_ascii()
            || envelope.iter().any(|a| !a.is_ascii())
            || (p.smtputf8 && p.headers.utf8);
        Action::Deliver(Box::new(Delivery {
            message,
            sender: p.sender,
            body_8bit: p.body_8bit,
            smtputf8: p.smtputf8,
            needs_smtputf8,
            envelope,
            prepend,
            owners,
        }))
    }

    /// The replies for a delivered message. `stored`: the journal has it (or archiving is off);
    /// `results`: the next hop's reply for each address of [`Delivery::envelope`].
    pub fn finish(&self, d: &Delivery, stored: bool, results: &[TargetReply]) -> Vec<Reply> {
        let per_owner: Vec<Reply> = d
            .owners
            .iter()
            .map(|(original, targets)| match stored {
                false => Reply::new(
                    451,
                    format!(
                        "4.3.0 <{original}>: the message could not be archived; try again later"
                    ),
                ),
                true => owner_reply(original, targets, &d.envelope, results),
            })
            .collect();
        match self.dialect {
            Some(Dialect::Lmtp) => per_owner,
            _ => vec![whole_message(per_owner)],
        }
    }

    fn per_recipient(&self, accepted: &[String], f: impl Fn(&str) -> Reply) -> Vec<Reply> {
        match self.dialect {
            Some(Dialect::Lmtp) => accepted.iter().map(|a| f(a)).collect(),
            _ => vec![f("")],
        }
    }
}

/// The outgoing envelope (the accepted recipients with the edits applied), the headers to add,
/// and which envelope addresses each original recipient became.
///
/// Linear in the number of (recipient, target) pairs: a remote sender controls both (1,000
/// RCPTs to an alias of 1,000 members is a million pairs), and the LMTP front end serves every
/// connection on one worker. Addresses are compared through maps keyed on their exact text
/// and on their lookup form ([`Address::from_envelope`]); an address matches the first
/// envelope entry with the same lookup form, or, without one (the null path), the same text.
fn plan(msg: &Message, accepted: &[String]) -> (Vec<String>, Vec<u8>, Owners) {
    let norm = |a: &str| Address::from_envelope(a);
    // The recipients as accepted, less exact duplicates, then the edits in order. Removed
    // entries stay as `None` until the edits are done, so indices hold meanwhile.
    let mut slots: Vec<Option<String>> = Vec::with_capacity(accepted.len());
    let mut by_text: HashMap<&str, Vec<usize>> = HashMap::with_capacity(accepted.len());
    let mut live: HashMap<Address, usize> = HashMap::with_capacity(accepted.len());
    for a in accepted {
        if by_text.contains_key(a.as_str()) {
            continue;
        }
        by_text.insert(a.as_str(), vec![slots.len()]);
        if let Some(n) = norm(a) {
            *live.entry(n).or_default() += 1;
        }
        slots.push(Some(a.clone()));
    }
    let mut prepend = Vec::new();
    for edit in &msg.edits {
        match edit {
            Edit::RemoveRecipient(raw) => {
                // The edit names the recipient as the transaction saw it: `<address>`.
                let Some(inner) = raw.strip_prefix('<').and_then(|r| r.strip_suffix('>')) else {
                    continue;
                };
                for i in by_text.remove(inner).unwrap_or_default() {
                    if let Some(e) = slots[i].take()
                        && let Some(n) = norm(&e)
                        && let Some(c) = live.get_mut(&n)
                    {
                        *c -= 1;
                    }
                }
            }
            Edit::AddRecipient(a) => {
                let n = norm(a.as_str());
                if n.as_ref()
                    .is_some_and(|n| live.get(n).is_some_and(|&c| c > 0))
                {
                    continue;
                }
                if let Some(n) = n {
                    *live.entry(n).or_default() += 1;
                }
                by_text.entry(a.as_str()).or_default().push(slots.len());
                slots.push(Some(a.to_string()));
            }
            Edit::AddHeader { name, value } => {
                prepend.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            // The sender is not part of the recipients' plan ([`Session::data_end`]).
            Edit::ChangeSender(_) => {}
        }
    }
    let mut envelope: Vec<String> = slots.into_iter().flatten().collect();
    // Where each address goes: its first envelope entry by lookup form (by text for the null
    // path). Filled as addresses are first met, so every later one costs one lookup.
    let mut by_norm: HashMap<Address, usize> = HashMap::with_capacity(envelope.len());
    let mut by_exact: HashMap<String, usize> = HashMap::with_capacity(envelope.len());
    for (i, e) in envelope.iter().enumerate() {
        match norm(e) {
            Some(n) => by_norm.entry(n).or_insert(i),
            None => by_exact.entry(e.clone()).or_insert(i),
        };
    }
    let mut resolved: HashMap<String, usize> = HashMap::with_capacity(envelope.len());
    let mut index_of = |t: &str, envelope: &mut Vec<String>| -> usize {
        if let Some(&i) = resolved.get(t) {
            return i;
        }
        let next = envelope.len();
        let i = match norm(t) {
            Some(n) => *by_norm.entry(n).or_insert(next),
            None => *by_exact.entry(t.to_string()).or_insert(next),
        };
        if i == next {
            envelope.push(t.to_string());
        }
        resolved.insert(t.to_string(), i);
        i
    };
    let by_raw: HashMap<&str, &crate::transaction::Recipient> = {
        let mut m = HashMap::with_capacity(msg.recipients.len());
        for r in &msg.recipients {
            m.entry(r.raw.as_str()).or_insert(r);
        }
        m
    };
    // `seen[i] == k + 1`: envelope entry `i` is already a target of owner `k`.
    let mut seen: Vec<usize> = Vec::new();
    let mut owners = Vec::with_capacity(accepted.len());
    for (k, a) in accepted.iter().enumerate() {
        let raw = format!("<{a}>");
        let mut indices = Vec::new();
        let mut add = |t: &str, envelope: &mut Vec<String>| {
            let i = index_of(t, envelope);
            if seen.len() <= i {
                seen.resize(i + 1, 0);
            }
            if seen[i] != k + 1 {
                seen[i] = k + 1;
                indices.push(i);
            }
        };
        match by_raw.get(raw.as_str()) {
            Some(r) => r
                .resolution
                .deliver
                .iter()
                .for_each(|t| add(t.as_str(), &mut envelope)),
            // Accepted without a decision (an address the policy cannot read): as addressed.
            None => add(a, &mut envelope),
        }
        if let Some(c) = &msg.copy_to {
            add(c.as_str(), &mut envelope);
        }
        owners.push((a.clone(), indices));
    }
    (envelope, prepend, owners)
}

/// Why a MAIL or RCPT command cannot be passed on as the client wrote it, if it cannot: a
/// control character anywhere in the line (the SMTP parser drops a CR inside a quoted local
/// part and keeps a NUL, so the address decided on would not be the address sent), or an
/// address that has no RFC 5321 form ([`smtp_mailbox`]). RFC 5321 section 4.1.2 has no
/// control character in a path or a parameter; the line end is the codec's.
fn unwritable(line: &[u8], address: &str) -> Option<&'static str> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().any(|b| b.is_ascii_control()) {
        return Some("control character");
    }
    match smtp_mailbox(address) {
        Ok(_) => None,
        Err(crate::address::PathError::ControlChar(_)) => Some("control character"),
        Err(crate::address::PathError::BadDomain(_)) => Some("domain"),
    }
}

/// One original recipient's reply: 250 when every address it became was accepted; 4xx when
/// any was deferred (Postfix retries this recipient); otherwise 5xx with the refusal.
fn owner_reply(original: &str, targets: &[usize], envelope: &[String], results: &[Reply]) -> Reply {
    let result = |i: usize| {
        results
            .get(i)
            .cloned()
            .unwrap_or_else(|| Reply::new(451, "4.4.0 no reply from the next hop"))
    };
    let failed: Vec<(usize, Reply)> = targets
        .iter()
        .map(|&i| (i, result(i)))
        .filter(|(_, r)| !r.is_positive())
        .collect();
    let describe = |i: usize, r: &Reply, verb: &str| {
        let class = if r.is_transient() { '4' } else { '5' };
        let (enhanced, text) = split_enhanced(r.text(), class);
        let target = envelope.get(i).map_or("", String::as_str);
        let mut text = format!(
            "{enhanced} <{original}>: next hop {verb} <{target}>: {} {text}",
            r.code
        );
        // Within a reply line (RFC 5321 4.5.3.1.5: 512 octets), on a character: the addresses
        // may be UTF-8.
        text.truncate(text.floor_char_boundary(480));
        text
    };
    if failed.is_empty() {
        return Reply::new(
            250,
            format!("2.1.5 <{original}>: delivered to the next hop"),
        );
    }
    if let Some((i, r)) = failed.iter().find(|(_, r)| r.is_transient()) {
        return Reply::new(r.code, describe(*i, r, "deferred"));
    }
    let (i, r) = &failed[0];
    let code = if (500..600).contains(&r.code) {
        r.code
    } else {
        554
    };
    Reply::new(code, describe(*i, r, "refused"))
}

/// The one SMTP reply for a whole message: 250 when every recipient was delivered; otherwise
/// a deferral if anything was deferred (Postfix retries the message; recipients that were
/// delivered may then get it twice), else the first refusal. LMTP avoids both.
fn whole_message(per_owner: Vec<Reply>) -> Reply {
    if per_owner.iter().all(Reply::is_positive) {
        return Reply::new(250, "2.0.0 Ok: delivered to the next hop");
    }
    let first_temp = per_owner.iter().find(|r| r.is_transient()).cloned();
    first_temp.unwrap_or_else(|| {
        per_owner
            .into_iter()
            .find(|r| !r.is_positive())
            .unwrap_or_else(|| Reply::new(451, "4.3.0 Error: try again later"))
    })
}

/// `x.y.z rest` → (`x.y.z`, `rest`), or a default enhanced code of the reply's class.
fn split_enhanced(text: &str, class: char) -> (String, &str) {
    if let Some((first, rest)) = text.split_once(' ') {
        let parts: Vec<&str> = first.split('.').collect();
        if parts.len() == 3
            && parts[0].len() == 1
            && parts[0].starts_with(class)
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return (first.to_string(), rest);
        }
    }
    (format!("{class}.0.0"), text)
}

/// A UTF-8 address in a transaction that did not declare SMTPUTF8 (RFC 6531 section 3.4; the
/// words are Postfix smtpd's).
fn undeclared_utf8() -> Reply {
    Reply::new(
        553,
        "5.6.7 Error: must declare SMTPUTF8 to send unicode address",
    )
}

fn smtp_reply(r: &SmtpReply) -> Reply {
    match r.enhanced() {
        Some(e) => Reply::new(r.code(), format!("{e} {}", r.text())),
        None => Reply::new(r.code(), r.text().to_string()),
    }
}

fn parse_error(e: &smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => Reply::new(500, "5.5.2 Error: command not recognized"),
        E::InvalidSenderAddress => Reply::new(501, "5.1.7 Error: bad sender address syntax"),
        E::InvalidRecipientAddress => Reply::new(501, "5.1.3 Error: bad recipient address syntax"),
        E::SyntaxError { syntax } => Reply::new(501, format!("5.5.4 Syntax: {syntax}")),
        E::InvalidParameter { param } => {
            Reply::new(501, format!("5.5.4 Error: invalid parameter {param}"))
        }
        E::UnsupportedParameter { param } => {
            // The parameter is the client's text (lossy UTF-8): cut it on a character.
            let mut p = param.clone();
            p.truncate(p.floor_char_boundary(64));
            Reply::new(555, format!("5.5.4 Error: unsupported parameter {p}"))
        }
        _ => Reply::new(500, "5.5.2 Error: command not recognized"),
    }
}

/// Collects the header section from the message content for the transaction (loop markers,
/// Message-ID, auto-reply rules), bounded by [`MAX_HEADER_BYTES`].
#[derive(Debug, Default)]
struct HeaderReader {
    buf: Vec<u8>,
    done: bool,
    /// The header has a byte that is not ASCII (RFC 6532 UTF-8 headers).
    utf8: bool,
}

impl HeaderReader {
    fn feed(&mut self, bytes: &[u8], tx: &mut Transaction) {
        if self.done {
            tx.add_body_bytes(bytes.len() as u64);
            return;
        }
        let from = self.buf.len().saturating_sub(3);
        self.buf.extend_from_slice(bytes);
        let end = if self.buf.starts_with(b"\r\n") {
            Some(0)
        } else {
            self.buf[from..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| from + p + 2)
        };
        match end {
            Some(end) => {
                let body = (self.buf.len() - end - 2) as u64;
                let head = std::mem::take(&mut self.buf);
                self.utf8 |= !&head[..end].is_ascii();
                add_headers(&head[..end], tx);
                tx.add_body_bytes(body);
                self.done = true;
            }
            None if self.buf.len() > MAX_HEADER_BYTES => {
                // Past what the transaction keeps anyway: the complete lines so far.
                let head = std::mem::take(&mut self.buf);
                let cut = head
                    .windows(2)
                    .rposition(|w| w == b"\r\n")
                    .map_or(0, |p| p + 2);
                self.utf8 |= !&head[..cut].is_ascii();
                add_headers(&head[..cut], tx);
                tx.add_body_bytes((head.len() - cut) as u64);
                self.done = true;
            }
            None => {}
        }
    }

    /// The content ended: a message without a body has only headers.
    fn finish(&mut self, tx: &mut Transaction) {
        if !self.done {
            let head = std::mem::take(&mut self.buf);
            self.utf8 |= !&head.is_ascii();
            add_headers(&head, tx);
            self.done = true;
        }
    }
}

/// Splits a header section (CRLF lines) into fields, folded lines joined to their field.
fn add_headers(head: &[u8], tx: &mut Transaction) {
    let mut current: Option<(String, Vec<u8>)> = None;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if matches!(line[0], b' ' | b'\t') {
            if let Some((_, value)) = current.as_mut() {
                value.extend_from_slice(b"\r\n");
                value.extend_from_slice(line);
            }
            continue;
        }
        if let Some((name, value)) = current.take() {
            tx.add_header(name, value);
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
            let value = &line[colon + 1..];
            let start = value
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t'))
                .unwrap_or(value.len());
            current = Some((name, value[start..].to_vec()));
        }
    }
    if let Some((name, value)) = current {
        tx.add_header(name, value);
    }
}

#[cfg(test)]
mod tests;
