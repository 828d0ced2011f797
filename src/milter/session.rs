//! One milter connection as a state machine, sans-IO: typed commands in, typed replies out.
//!
//! The session applies the policy at the stage Postfix can act on:
//! - **MAIL**: a disabled, frozen or deleted account may not send when the SMTP session
//!   authenticated as it (`{auth_authen}`) or the mail was submitted locally.
//! - **RCPT**: refused recipients get their 4xx/5xx here, each on its own, so the other recipients
//!   of the same message are unaffected.
//! - **End of message**: departed and alias recipients are rewritten with DELRCPT/ADDRCPT and the
//!   loop marker is added. The session hands the finished message to the caller first
//!   ([`Step::EndOfMessage`]); only when the caller reports it stored does it answer with the
//!   edits and CONTINUE ([`Session::finish`]). Anything else answers TEMPFAIL.
//!
//! Local submission (`non_smtpd_milters`: sendmail(1), qmqpd) is special: Postfix treats a reject
//! of its *simulated* MAIL or RCPT as a configuration error (MILTER_README, "Milter
//! applications for local submission"), so for those messages every refusal waits for the end of
//! the message, where it refuses the whole message: a permanent refusal bounces it to the
//! sender, a temporary one keeps it in Postfix's queue to be retried.
//!
//! The session takes one policy snapshot per transaction (at MAIL) and uses it to the end.
//! It never emits an action that was not negotiated: if a message needs recipient edits that
//! Postfix did not allow, the answer is TEMPFAIL, never a silently unrewritten ACCEPT.

use super::codec::{Actions, Command, Family, Protocol, Reply, escape_reply_text};
use crate::engine::Decision;
use crate::policy::SmtpReply;
pub use crate::transaction::{
    Client, Context, LOOP_HEADER, MAX_HEADER_BYTES, Message, MessageOutcome, Recipient,
};
use crate::transaction::{Edit, RcptOutcome, Refusal, Transaction};

/// The milter protocol version handoff speaks (Sendmail 8.14, Postfix 2.6+).
pub const VERSION: u32 = 6;

/// The actions handoff may ask for: recipient edits, the loop marker header, and the envelope
/// sender for SRS. CHGFROM is asked for whatever the policy says: the policy in force is only
/// known per transaction (a reload may turn `[srs]` on under an open connection), and being
/// allowed an action changes nothing for Postfix until it is used (Postfix 2.6+ offers it).
pub const WANTED_ACTIONS: Actions = Actions::ADDHDRS
    .union(Actions::ADDRCPT)
    .union(Actions::DELRCPT)
    .union(Actions::CHGFROM);

/// The macros handoff reads, asked for per stage in the negotiation reply (with the
/// SETSYMLIST action), so that Postfix looks up and sends no others: `{auth_authen}` at MAIL
/// (a disabled account may not send) and `i`, the queue id, at the end of the message. Stages are
/// numbered as in libmilter's `mfdef.h` (SMFIM_*): 0 CONNECT, 1 HELO, 2 MAIL, 3 RCPT, 4 DATA,
/// 5 end of message (also before each body chunk), 6 end of headers (also before each header).
/// Postfix uses its own default list for a stage whose list is empty (milter.c,
/// MILTER_MACRO_EVAL), so the stages where handoff reads nothing ask for `i`, which Postfix sends
/// only once the queue id exists. Its defaults would add `j {daemon_name} {daemon_addr} v _` at
/// CONNECT, `{mail_addr} {mail_host} {mail_mailer}` and the other `{auth_*}` at MAIL, and
/// `{rcpt_addr} {rcpt_host} {rcpt_mailer}` at RCPT: eleven lookups, strings and allocations per
/// message on both sides.
pub const WANTED_MACROS: [(u32, &str); 7] = [
    (0, "i"),
    (1, "i"),
    (2, "{auth_authen}"),
    (3, "i"),
    (4, "i"),
    (5, "i"),
    (6, "i"),
];

/// Events handoff does not need (HELO, DATA, EOH, unknown commands), and events it never answers
/// (CONNECT, each header, each body chunk): asking Postfix to skip them saves a round trip each.
/// HDR_LEADSPC: header values as they were written, leading space included, so the journal
/// keeps the message byte for byte (without it Postfix strips one space from every header).
pub const WANTED_PROTOCOL: Protocol = Protocol::HDR_LEADSPC
    .union(Protocol::NOHELO)
    .union(Protocol::NODATA)
    .union(Protocol::NOEOH)
    .union(Protocol::NOUNKNOWN)
    .union(Protocol::NR_CONN)
    .union(Protocol::NR_HDR)
    .union(Protocol::NR_BODY);

/// handoff's answer to an MTA's option negotiation: the version, the actions and the protocol
/// steps it wants, within what was offered, and the macro lists ([`WANTED_MACROS`]) where the MTA
/// takes them.
pub fn answer_offer(version: u32, actions: Actions, protocol: Protocol) -> Reply {
    let version = version.min(VERSION);
    // Macro lists came with version 6; an MTA that takes them offers SETSYMLIST.
    let lists = version >= 6 && actions.contains(Actions::SETSYMLIST);
    let mut wanted = WANTED_ACTIONS & actions;
    let mut macros = Vec::new();
    if lists {
        wanted |= Actions::SETSYMLIST;
        macros = WANTED_MACROS
            .iter()
            .map(|&(stage, names)| (stage, names.to_string()))
            .collect();
    }
    Reply::OptNeg {
        version,
        actions: wanted,
        protocol: WANTED_PROTOCOL & protocol,
        macros,
    }
}

/// A header as it stood in the message: `name:value` with the value's LF folding turned back
/// into CRLF. `leadspc`: the value came with its leading space (HDR_LEADSPC negotiated);
/// otherwise Postfix removed one space, which is put back.
pub fn header_line(name: &str, value: &[u8], leadspc: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 4);
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    if !leadspc {
        out.push(b' ');
    }
    let mut prev = 0u8;
    for &b in value {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What the caller must do after a command.
#[derive(Debug)]
pub enum Step {
    /// Send these replies (possibly none: a no-reply event).
    Reply(Vec<Reply>),
    /// A message is complete: store it, then call [`Session::finish`] for the replies.
    EndOfMessage(Box<Message>),
    /// The MTA ended the session; close the connection.
    Close,
}

/// The peer broke the protocol; the connection must be closed (Postfix then applies
/// `milter_default_action`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{command} is not allowed {state}")]
    OutOfOrder {
        command: &'static str,
        state: &'static str,
    },
    #[error("the MTA offered milter protocol version {0}; handoff needs 2 or later")]
    OldVersion(u32),
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for OPTNEG.
    Start,
    /// Negotiated; waiting for CONNECT (or HELO/MAIL when CONNECT was skipped).
    Negotiated,
    /// Between messages.
    Ready,
    /// MAIL seen.
    Mail,
    /// At least one RCPT seen; headers and body may follow.
    Rcpt,
    /// Headers or body seen.
    Content,
}

impl Stage {
    fn describe(self) -> &'static str {
        match self {
            Stage::Start => "before option negotiation",
            Stage::Negotiated => "before CONNECT",
            Stage::Ready => "outside a transaction",
            Stage::Mail => "before any RCPT",
            Stage::Rcpt => "after RCPT",
            Stage::Content => "during message content",
        }
    }
}

/// One milter connection.
#[derive(Debug)]
pub struct Session {
    stage: Stage,
    actions: Actions,
    protocol: Protocol,
    client: Client,
    /// Macros as (stage letter, name without braces, value); later ones win.
    macros: Vec<(u8, String, String)>,
    tx: Option<Transaction>,
    refusal: Option<Refusal>,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    pub fn new() -> Session {
        Session {
            stage: Stage::Start,
            actions: Actions::empty(),
            protocol: Protocol::empty(),
            client: Client::default(),
            macros: Vec::new(),
            tx: None,
            refusal: None,
        }
    }

    /// The refusal the last command decided, if any (taken: each is reported once). Reported when
    /// decided, also for local submission, where the refusal is only answered at end of message.
    pub fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
    }

    /// The actions negotiated with the MTA.
    pub fn actions(&self) -> Actions {
        self.actions
    }

    /// Whether header values arrive with their leading space (HDR_LEADSPC negotiated).
    pub fn header_leadspc(&self) -> bool {
        self.protocol.contains(Protocol::HDR_LEADSPC)
    }

    /// Whether the option negotiation is done: the peer speaks the milter protocol.
    pub fn negotiated(&self) -> bool {
        self.stage != Stage::Start
    }

    /// Whether a message is in progress (a graceful shutdown waits for it).
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// Handles one command from the MTA.
    pub fn handle(&mut self, cmd: Command, cx: &dyn Context) -> Result<Step, ProtocolError> {
        match cmd {
            Command::OptNeg {
                version,
                actions,
                protocol,
            } => self.negotiate(version, actions, protocol),
            Command::Macro { stage, pairs } => {
                self.require_negotiated("MACRO")?;
                for (name, value) in pairs {
                    self.macros.push((stage, without_braces(name), value));
                }
                Ok(Step::Reply(Vec::new()))
            }
            Command::Connect {
                hostname,
                family,
                port,
                address,
            } => {
                self.expect("CONNECT", &[Stage::Negotiated])?;
                let loopback = address == "127.0.0.1" || address == "::1";
                let local_submission =
                    matches!(family, Family::Inet4 | Family::Inet6) && port == 0 && loopback;
                self.client = Client {
                    hostname,
                    address,
                    port,
                    local_submission,
                };
                self.stage = Stage::Ready;
                Ok(self.continue_unless(Protocol::NR_CONN))
            }
            Command::Helo(_) => {
                self.expect("HELO", &[Stage::Negotiated, Stage::Ready])?;
                self.stage = Stage::Ready;
                Ok(self.continue_unless(Protocol::NR_HELO))
            }
            Command::Mail(args) => {
                self.expect("MAIL", &[Stage::Negotiated, Stage::Ready])?;
                Ok(self.mail(args, cx))
            }
            Command::Rcpt(args) => {
                self.expect("RCPT", &[Stage::Mail, Stage::Rcpt])?;
                Ok(self.rcpt(args, cx))
            }
            Command::Data => {
                self.expect("DATA", &[Stage::Rcpt])?;
                Ok(self.continue_unless(Protocol::NR_DATA))
            }
            Command::Header { name, value } => {
                self.expect("HEADER", &[Stage::Rcpt, Stage::Content])?;
                self.stage = Stage::Content;
                if let Some(tx) = self.tx.as_mut() {
                    tx.add_header(name, value);
                }
                Ok(self.continue_unless(Protocol::NR_HDR))
            }
            Command::Eoh => {
                self.expect("EOH", &[Stage::Rcpt, Stage::Content])?;
                self.stage = Stage::Content;
                Ok(self.continue_unless(Protocol::NR_EOH))
            }
            Command::Body(chunk) => {
                self.expect("BODY", &[Stage::Rcpt, Stage::Content])?;
                self.stage = Stage::Content;
                if let Some(tx) = self.tx.as_mut() {
                    tx.add_body_bytes(chunk.len() as u64);
                }
                Ok(self.continue_unless(Protocol::NR_BODY))
            }
            Command::BodyEob => {
                self.expect("end of message", &[Stage::Rcpt, Stage::Content])?;
                Ok(self.end_of_message())
            }
            Command::Unknown(_) => {
                self.require_negotiated("UNKNOWN")?;
                Ok(self.continue_unless(Protocol::NR_UNKN))
            }
            Command::Abort => {
                // Postfix sends ABORT after every transaction and also outside one (STARTTLS,
                // a repeated HELO, session end), so it is never out of order once negotiated.
                self.require_negotiated("ABORT")?;
                self.reset_transaction();
                Ok(Step::Reply(Vec::new()))
            }
            Command::Quit => Ok(Step::Close),
            Command::QuitNc => {
                // The MTA reuses the connection for a new SMTP session (libmilter SMFIC_QUIT_NC).
                self.reset_transaction();
                self.client = Client::default();
                self.macros.clear();
                self.stage = Stage::Negotiated;
                Ok(Step::Reply(Vec::new()))
            }
        }
    }

    /// The replies to send once the caller has tried to store `msg`: the envelope edits and
    /// CONTINUE when it was stored, TEMPFAIL otherwise (the MTA keeps the message).
    pub fn finish(&mut self, msg: &Message, stored: bool) -> Vec<Reply> {
        match &msg.outcome {
            MessageOutcome::Refuse(reply) => vec![reply_code(reply)],
            MessageOutcome::CannotRewrite => vec![Reply::Tempfail],
            MessageOutcome::Accept if !stored => vec![Reply::Tempfail],
            MessageOutcome::Accept => {
                let leadspc = self.header_leadspc();
                let mut out: Vec<Reply> =
                    msg.edits.iter().map(|e| edit_reply(e, leadspc)).collect();
                out.push(Reply::Continue);
                out
            }
        }
    }

    fn negotiate(
        &mut self,
        version: u32,
        actions: Actions,
        protocol: Protocol,
    ) -> Result<Step, ProtocolError> {
        self.expect("OPTNEG", &[Stage::Start])?;
        if version < 2 {
            return Err(ProtocolError::OldVersion(version));
        }
        // Ask only for what the MTA offered: Postfix refuses a reply with more actions, or a
        // higher version, than it offered (Postfix milter8.c milter8_negotiate). The edits
        // allowed are kept for the end of message.
        self.actions = WANTED_ACTIONS & actions;
        self.protocol = WANTED_PROTOCOL & protocol;
        self.stage = Stage::Negotiated;
        Ok(Step::Reply(vec![answer_offer(version, actions, protocol)]))
    }

    fn mail(&mut self, args: Vec<String>, cx: &dyn Context) -> Step {
        if has_control(&args) {
            self.tx = None;
            self.stage = Stage::Ready;
            return Step::Reply(vec![reply_code(&SmtpReply::new(
                501,
                "5.1.7",
                "Error: bad sender address syntax: control character".into(),
            ))]);
        }
        let sender_raw = args.into_iter().next().unwrap_or_default();
        let auth_user = self.macro_value("auth_authen").map(str::to_string);
        match Transaction::begin(
            cx.snapshot(),
            &self.client,
            sender_raw,
            auth_user,
            cx.today(),
        ) {
            Ok(tx) => {
                self.tx = Some(tx);
                self.stage = Stage::Mail;
                self.continue_unless(Protocol::NR_MAIL)
            }
            Err(reply) => {
                // The MTA aborts the transaction after a refused MAIL; no RCPT follows.
                self.refusal = Some(Refusal {
                    decision: Decision::BlockSender,
                    rule: None,
                });
                self.tx = None;
                self.stage = Stage::Ready;
                Step::Reply(vec![reply_code(&reply)])
            }
        }
    }

    fn rcpt(&mut self, args: Vec<String>, cx: &dyn Context) -> Step {
        let Some(tx) = self.tx.as_mut() else {
            return Step::Reply(vec![Reply::Tempfail]);
        };
        if has_control(&args) {
            return Step::Reply(vec![reply_code(&SmtpReply::new(
                501,
                "5.1.3",
                "Error: bad recipient address syntax: control character".into(),
            ))]);
        }
        let raw = args.into_iter().next().unwrap_or_default();
        match tx.rcpt(raw, cx.today()) {
            RcptOutcome::Accepted => {
                self.stage = Stage::Rcpt;
                self.continue_unless(Protocol::NR_RCPT)
            }
            RcptOutcome::RefusedLater { decision, rule } => {
                self.refusal = Some(Refusal {
                    decision,
                    rule: Some(rule),
                });
                self.stage = Stage::Rcpt;
                self.continue_unless(Protocol::NR_RCPT)
            }
            // Only this recipient is refused; if none is left, the MTA sends ABORT.
            RcptOutcome::Refused {
                reply,
                decision,
                rule,
            } => {
                self.refusal = Some(Refusal {
                    decision,
                    rule: Some(rule),
                });
                Step::Reply(vec![reply_code(&reply)])
            }
        }
    }

    fn end_of_message(&mut self) -> Step {
        let Some(tx) = self.tx.take() else {
            return Step::Reply(vec![Reply::Tempfail]);
        };
        self.stage = Stage::Ready;
        let queue_id = self.macro_value("i").map(str::to_string);
        self.macros
            .retain(|(stage, _, _)| matches!(stage, b'C' | b'H'));
        let mut message = tx.finish(self.client.clone(), queue_id);
        let needs = edit_actions(&message.edits);
        if message.outcome == MessageOutcome::Accept && !self.actions.contains(needs) {
            message.outcome = MessageOutcome::CannotRewrite;
        }
        Step::EndOfMessage(Box::new(message))
    }

    fn reset_transaction(&mut self) {
        self.tx = None;
        if self.stage != Stage::Start && self.stage != Stage::Negotiated {
            self.stage = Stage::Ready;
        }
        self.macros
            .retain(|(stage, _, _)| matches!(stage, b'C' | b'H'));
    }

    fn macro_value(&self, name: &str) -> Option<&str> {
        self.macros
            .iter()
            .rev()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn continue_unless(&self, no_reply: Protocol) -> Step {
        if self.protocol.contains(no_reply) {
            Step::Reply(Vec::new())
        } else {
            Step::Reply(vec![Reply::Continue])
        }
    }

    fn require_negotiated(&self, command: &'static str) -> Result<(), ProtocolError> {
        match self.stage {
            Stage::Start => Err(ProtocolError::OutOfOrder {
                command,
                state: self.stage.describe(),
            }),
            _ => Ok(()),
        }
    }

    fn expect(&self, command: &'static str, allowed: &[Stage]) -> Result<(), ProtocolError> {
        if allowed.contains(&self.stage) {
            Ok(())
        } else {
            Err(ProtocolError::OutOfOrder {
                command,
                state: self.stage.describe(),
            })
        }
    }
}

/// A macro name as Postfix sends it (`{auth_authen}`, or `i` bare) without its braces, in place.
fn without_braces(mut name: String) -> String {
    let end = name.trim_end_matches('}').len();
    name.truncate(end);
    let start = name.len() - name.trim_start_matches('{').len();
    name.drain(..start);
    name
}

/// The milter actions a list of edits needs.
fn edit_actions(edits: &[Edit]) -> Actions {
    edits.iter().fold(Actions::empty(), |acc, e| {
        acc | match e {
            Edit::AddRecipient(_) => Actions::ADDRCPT,
            Edit::RemoveRecipient(_) => Actions::DELRCPT,
            Edit::AddHeader { .. } => Actions::ADDHDRS,
            Edit::ChangeSender(_) => Actions::CHGFROM,
        }
    })
}

/// An edit as a milter modification action.
fn edit_reply(edit: &Edit, leadspc: bool) -> Reply {
    match edit {
        Edit::RemoveRecipient(raw) => Reply::DelRcpt(raw.clone()),
        Edit::AddRecipient(a) => Reply::AddRcpt(format!("<{a}>")),
        Edit::ChangeSender(sender) => Reply::ChgFrom {
            sender: format!("<{sender}>"),
            args: None,
        },
        // With HDR_LEADSPC Postfix adds no space after the colon: the value brings its own.
        Edit::AddHeader { name, value } => Reply::AddHeader {
            name: name.clone(),
            value: if leadspc {
                format!(" {value}")
            } else {
                value.clone()
            }
            .into_bytes(),
        },
    }
}

/// Whether MAIL or RCPT arguments hold a control character. RFC 5321 section 4.1.2 allows none
/// in a path or a parameter, and an MTA that passed one on would make the address decided on
/// differ from the one delivered to (a CR dropped, a NUL cut by the next hop): refused with
/// 501, a syntax error in the argument, with RFC 3463's X.1.7 (sender) or X.1.3 (recipient).
fn has_control(args: &[String]) -> bool {
    args.iter().any(|a| a.chars().any(char::is_control))
}

/// A policy reply as a milter REPLYCODE; `%` is doubled because Postfix expands it.
fn reply_code(reply: &SmtpReply) -> Reply {
    Reply::ReplyCode(escape_reply_text(&reply.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine;
    use crate::policy::Policy;
    use std::sync::Arc;

    use jiff::civil::Date;

    use crate::runtime::store::{PolicyStore, Snapshot};

    const POLICY: &str = r#"
[domains]
local = ["corp.example"]
[templates.departed]
subject = "{name} left"
body = "Write to {successor}; 100% sure."
[aliases]
"sales@corp.example" = ["alice@corp.example", "bob@corp.example"]
[accounts."keep@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = true
autoreply = "departed"
[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false
[accounts."dis@corp.example"]
state = "disabled"
[accounts."pct@corp.example"]
state = "disabled"
reply = "550 5.2.1 100% gone"
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
        Fixed(Arc::new(PolicyStore::with_loop_key(
            Policy::from_text("t.toml", POLICY).unwrap(),
            loop_key(),
        )))
    }

    fn loop_key() -> crate::loopmark::LoopKey {
        crate::loopmark::LoopKey::new(&[7; 32]).unwrap()
    }

    /// The loop marker handoff writes for `addr` on the test date.
    fn marker_value(addr: &str) -> String {
        let addr = crate::address::Address::parse_strict(addr).unwrap();
        loop_key().mark(&addr, jiff::civil::date(2026, 6, 1))
    }

    fn all_actions() -> Actions {
        Actions::from_bits(0x1FF)
    }

    fn all_protocol() -> Protocol {
        Protocol::from_bits(0x1F_FFFF)
    }

    /// A session after OPTNEG and CONNECT from a remote client (or a local submission).
    fn connected(cx: &Fixed, local: bool) -> Session {
        let mut s = Session::new();
        s.handle(
            Command::OptNeg {
                version: 6,
                actions: all_actions(),
                protocol: all_protocol(),
            },
            cx,
        )
        .unwrap();
        let (address, port) = if local {
            ("127.0.0.1", 0)
        } else {
            ("192.0.2.7", 40000)
        };
        let connect = Command::Connect {
            hostname: "client.example".into(),
            family: Family::Inet4,
            port,
            address: address.into(),
        };
        s.handle(connect, cx).unwrap();
        s
    }

    fn replies(step: Step) -> Vec<Reply> {
        match step {
            Step::Reply(r) => r,
            other => panic!("expected replies, got {other:?}"),
        }
    }

    fn mail(s: &mut Session, cx: &Fixed, from: &str) -> Vec<Reply> {
        replies(
            s.handle(Command::Mail(vec![from.into(), "SIZE=100".into()]), cx)
                .unwrap(),
        )
    }

    fn rcpt(s: &mut Session, cx: &Fixed, to: &str) -> Vec<Reply> {
        replies(s.handle(Command::Rcpt(vec![to.into()]), cx).unwrap())
    }

    /// Headers, a body chunk and end of message; returns the message and the final replies.
    fn finish(s: &mut Session, cx: &Fixed, headers: &[(&str, &str)]) -> (Box<Message>, Vec<Reply>) {
        for (n, v) in headers {
            let h = Command::Header {
                name: n.to_string(),
                value: v.as_bytes().to_vec(),
            };
            assert_eq!(
                replies(s.handle(h, cx).unwrap()),
                vec![],
                "NR_HDR was negotiated"
            );
        }
        assert_eq!(
            replies(s.handle(Command::Body(b"hello\r\n".to_vec()), cx).unwrap()),
            vec![]
        );
        let msg = match s.handle(Command::BodyEob, cx).unwrap() {
            Step::EndOfMessage(m) => m,
            other => panic!("expected end of message, got {other:?}"),
        };
        let r = s.finish(&msg, true);
        (msg, r)
    }

    fn code(text: &str) -> Reply {
        Reply::ReplyCode(text.into())
    }

    fn add(addr: &str) -> Reply {
        Reply::AddRcpt(format!("<{addr}>"))
    }

    fn marker(addr: &str) -> Reply {
        Reply::AddHeader {
            name: LOOP_HEADER.into(),
            value: format!(" {}", marker_value(addr)).into_bytes(),
        }
    }

    #[test]
    fn negotiation_asks_only_for_what_is_needed_and_offered() {
        let cx = cx();
        let mut s = Session::new();
        let r = replies(
            s.handle(
                Command::OptNeg {
                    version: 6,
                    actions: all_actions(),
                    protocol: all_protocol(),
                },
                &cx,
            )
            .unwrap(),
        );
        let macros: Vec<(u32, String)> = WANTED_MACROS
            .iter()
            .map(|&(stage, names)| (stage, names.to_string()))
            .collect();
        assert_eq!(
            r,
            vec![Reply::OptNeg {
                version: 6,
                actions: WANTED_ACTIONS | Actions::SETSYMLIST,
                protocol: WANTED_PROTOCOL,
                macros
            }]
        );
        assert_eq!(s.actions(), WANTED_ACTIONS, "edits allowed");

        // An MTA that offers less gets no more than it offered, and an older version is kept.
        let mut s = Session::new();
        let offered = Actions::ADDHDRS | Actions::CHGBODY;
        let r = replies(
            s.handle(
                Command::OptNeg {
                    version: 4,
                    actions: offered,
                    protocol: Protocol::NOHELO,
                },
                &cx,
            )
            .unwrap(),
        );
        assert_eq!(
            r,
            vec![Reply::OptNeg {
                version: 4,
                actions: Actions::ADDHDRS,
                protocol: Protocol::NOHELO,
                macros: vec![]
            }]
        );
        // Macro lists only to an MTA that offers to take them.
        let r = answer_offer(6, WANTED_ACTIONS, all_protocol());
        assert!(
            matches!(r, Reply::OptNeg { actions, macros, .. } if actions == WANTED_ACTIONS && macros.is_empty())
        );

        let mut s = Session::new();
        let old = s.handle(
            Command::OptNeg {
                version: 1,
                actions: offered,
                protocol: Protocol::empty(),
            },
            &cx,
        );
        assert_eq!(old.unwrap_err(), ProtocolError::OldVersion(1));
    }

    #[test]
    fn recipients_are_refused_one_by_one_at_rcpt() {
        let cx = cx();
        let mut s = connected(&cx, false);
        assert_eq!(
            mail(&mut s, &cx, "<ext@partner.example>"),
            vec![Reply::Continue]
        );
        assert_eq!(
            rcpt(&mut s, &cx, "<dis@corp.example>"),
            vec![code("550 5.2.1 <dis@corp.example>: mailbox disabled")]
        );
        assert_eq!(
            rcpt(&mut s, &cx, "<del@corp.example>"),
            vec![code("550 5.1.1 <del@corp.example>: user unknown")]
        );
        assert_eq!(
            rcpt(&mut s, &cx, "<frz@corp.example>"),
            vec![code(
                "450 4.2.1 <frz@corp.example>: mailbox temporarily unavailable"
            )]
        );
        assert_eq!(
            rcpt(&mut s, &cx, "<pct@corp.example>"),
            vec![code("550 5.2.1 100%% gone")],
            "% doubled for Postfix"
        );
        assert_eq!(
            rcpt(&mut s, &cx, "<alice@corp.example>"),
            vec![Reply::Continue]
        );
        let (msg, r) = finish(&mut s, &cx, &[("Subject", "hi")]);
        assert_eq!(r, vec![Reply::Continue], "nothing to rewrite");
        assert_eq!(msg.recipients.len(), 1);
        assert_eq!(msg.refused.len(), 4);
    }

    /// An MTA that passes a control character on in MAIL or RCPT gets 501: the address
    /// decided on must be the address delivered to (a CR or NUL would not survive the next hop).
    #[test]
    fn control_characters_in_mail_and_rcpt_are_refused() {
        let cx = cx();
        let mut s = connected(&cx, false);
        for from in [
            "<\"a\rRSET\"@partner.example>",
            "<\"a\0b\"@partner.example>",
        ] {
            assert_eq!(
                mail(&mut s, &cx, from),
                vec![code(
                    "501 5.1.7 Error: bad sender address syntax: control character"
                )],
                "{from:?}"
            );
        }
        assert_eq!(
            mail(&mut s, &cx, "<ext@partner.example>"),
            vec![Reply::Continue]
        );
        for to in [
            "<\"a\rRSET\"@corp.example>",
            "<\"a\0b\"@corp.example>",
            "<\"a\x1bb\"@corp.example>",
        ] {
            assert_eq!(
                rcpt(&mut s, &cx, to),
                vec![code(
                    "501 5.1.3 Error: bad recipient address syntax: control character"
                )],
                "{to:?}"
            );
        }
        assert_eq!(
            rcpt(&mut s, &cx, "<\"john doe\"@corp.example>"),
            vec![Reply::Continue]
        );
        let (msg, _) = finish(&mut s, &cx, &[("Subject", "hi")]);
        assert_eq!(msg.recipients.len(), 1);
    }

    #[test]
    fn departed_and_alias_recipients_are_rewritten_at_end_of_message() {
        let cx = cx();
        let mut s = connected(&cx, false);
        mail(&mut s, &cx, "<ext@partner.example>");
        rcpt(&mut s, &cx, "<Keep@corp.example>");
        rcpt(&mut s, &cx, "<gone@corp.example>");
        rcpt(&mut s, &cx, "<sales@corp.example>");
        let (msg, r) = finish(&mut s, &cx, &[("Message-ID", "<m1@partner.example>")]);
        assert_eq!(
            r,
            vec![
                Reply::DelRcpt("<gone@corp.example>".into()),
                Reply::DelRcpt("<sales@corp.example>".into()),
                add("cs@corp.example"),
                add("alice@corp.example"),
                add("bob@corp.example"),
                marker("keep@corp.example"),
                marker("gone@corp.example"),
                Reply::Continue,
            ]
        );
        assert_eq!(msg.message_id().as_deref(), Some("<m1@partner.example>"));
        assert_eq!(msg.recipients[0].resolution.autoreplies.len(), 1);
    }

    #[test]
    fn a_message_that_carries_the_marker_is_not_forwarded_again() {
        let cx = cx();
        let mut s = connected(&cx, false);
        mail(&mut s, &cx, "<cs@corp.example>");
        rcpt(&mut s, &cx, "<gone@corp.example>");
        let genuine = marker_value("gone@corp.example");
        let (msg, r) = finish(&mut s, &cx, &[(LOOP_HEADER, genuine.as_str())]);
        assert_eq!(
            r,
            vec![Reply::Continue],
            "kept for the account, not forwarded"
        );
        assert!(
            msg.recipients[0]
                .resolution
                .steps
                .iter()
                .any(|s| matches!(s, engine::Step::LoopMarked { .. }))
        );
    }

    /// Anyone can write the header: a marker without handoff's MAC (or with another secret's)
    /// neither stops the forward nor suppresses the reply, and the real marker is added.
    #[test]
    fn a_forged_marker_is_ignored() {
        let cx = cx();
        let other = crate::loopmark::LoopKey::new(&[8; 32]).unwrap();
        let gone = crate::address::Address::parse_strict("gone@corp.example").unwrap();
        let other_secret = other.mark(&gone, jiff::civil::date(2026, 6, 1));
        for forged in ["gone@corp.example", other_secret.as_str()] {
            let mut s = connected(&cx, false);
            mail(&mut s, &cx, "<ext@partner.example>");
            rcpt(&mut s, &cx, "<gone@corp.example>");
            let (msg, r) = finish(&mut s, &cx, &[(LOOP_HEADER, forged)]);
            assert_eq!(
                r,
                vec![
                    Reply::DelRcpt("<gone@corp.example>".into()),
                    add("cs@corp.example"),
                    marker("gone@corp.example"),
                    Reply::Continue,
                ],
                "{forged}"
            );
            assert!(msg.loop_marked.is_empty());
        }
    }

    #[test]
    fn authenticated_disabled_account_cannot_send() {
        let cx = cx();
        let mut s = connected(&cx, false);
        let m = Command::Macro {
            stage: b'M',
            pairs: vec![("{auth_authen}".into(), "dis".into())],
        };
        assert_eq!(replies(s.handle(m, &cx).unwrap()), vec![]);
        let r = mail(&mut s, &cx, "<someone-else@corp.example>");
        assert_eq!(
            r,
            vec![code(
                "550 5.7.1 <dis@corp.example>: account disabled, sending is not allowed"
            )]
        );
        // The transaction is over; a new MAIL may follow after the MTA's ABORT.
        s.handle(Command::Abort, &cx).unwrap();
        assert_eq!(
            mail(&mut s, &cx, "<alice@corp.example>"),
            vec![Reply::Continue],
            "auth macro cleared by ABORT"
        );
    }

    #[test]
    fn macro_names_lose_their_braces() {
        for (sent, kept) in [
            ("{auth_authen}", "auth_authen"),
            ("i", "i"),
            ("{{x}}", "x"),
            ("{", ""),
            ("", ""),
        ] {
            assert_eq!(without_braces(sent.to_string()), kept, "{sent}");
        }
    }

    #[test]
    fn unauthenticated_remote_sender_is_not_judged() {
        let cx = cx();
        let mut s = connected(&cx, false);
        assert_eq!(
            mail(&mut s, &cx, "<dis@corp.example>"),
            vec![Reply::Continue]
        );
    }

    #[test]
    fn local_submission_refuses_at_end_of_message_only() {
        let cx = cx();
        // A disabled sender: MAIL and RCPT continue, the end of message refuses.
        let mut s = connected(&cx, true);
        assert_eq!(mail(&mut s, &cx, "dis@corp.example"), vec![Reply::Continue]);
        assert_eq!(
            rcpt(&mut s, &cx, "alice@corp.example"),
            vec![Reply::Continue]
        );
        let (_, r) = finish(&mut s, &cx, &[]);
        assert_eq!(
            r,
            vec![code(
                "550 5.7.1 <dis@corp.example>: account disabled, sending is not allowed"
            )]
        );

        // A frozen recipient beside a deleted one: temporary wins, the message stays queued.
        s.handle(Command::Abort, &cx).unwrap();
        mail(&mut s, &cx, "alice@corp.example");
        assert_eq!(rcpt(&mut s, &cx, "del@corp.example"), vec![Reply::Continue]);
        assert_eq!(rcpt(&mut s, &cx, "frz@corp.example"), vec![Reply::Continue]);
        let (_, r) = finish(&mut s, &cx, &[]);
        assert_eq!(
            r,
            vec![code(
                "450 4.2.1 <frz@corp.example>: mailbox temporarily unavailable"
            )]
        );
    }

    #[test]
    fn nothing_is_acknowledged_unless_stored() {
        let cx = cx();
        let mut s = connected(&cx, false);
        mail(&mut s, &cx, "<ext@partner.example>");
        rcpt(&mut s, &cx, "<gone@corp.example>");
        s.handle(Command::Body(b"x".to_vec()), &cx).unwrap();
        let Step::EndOfMessage(msg) = s.handle(Command::BodyEob, &cx).unwrap() else {
            panic!()
        };
        assert_eq!(s.finish(&msg, false), vec![Reply::Tempfail]);
    }

    #[test]
    fn missing_recipient_edit_actions_tempfail_instead_of_accepting_unrewritten() {
        let cx = cx();
        let mut s = Session::new();
        let offered = Actions::ADDHDRS; // no ADDRCPT/DELRCPT
        s.handle(
            Command::OptNeg {
                version: 6,
                actions: offered,
                protocol: all_protocol(),
            },
            &cx,
        )
        .unwrap();
        mail(&mut s, &cx, "<ext@partner.example>");
        rcpt(&mut s, &cx, "<gone@corp.example>");
        let Step::EndOfMessage(msg) = s.handle(Command::BodyEob, &cx).unwrap() else {
            panic!()
        };
        assert_eq!(msg.outcome, MessageOutcome::CannotRewrite);
        assert_eq!(s.finish(&msg, true), vec![Reply::Tempfail]);
    }

    #[test]
    fn without_no_reply_flags_every_event_is_answered() {
        let cx = cx();
        let mut s = Session::new();
        s.handle(
            Command::OptNeg {
                version: 6,
                actions: all_actions(),
                protocol: Protocol::empty(),
            },
            &cx,
        )
        .unwrap();
        let c = Command::Connect {
            hostname: "h".into(),
            family: Family::Inet6,
            port: 25,
            address: "2001:db8::1".into(),
        };
        assert_eq!(replies(s.handle(c, &cx).unwrap()), vec![Reply::Continue]);
        assert_eq!(
            replies(s.handle(Command::Helo("h".into()), &cx).unwrap()),
            vec![Reply::Continue]
        );
        mail(&mut s, &cx, "<a@partner.example>");
        rcpt(&mut s, &cx, "<alice@corp.example>");
        assert_eq!(
            replies(s.handle(Command::Data, &cx).unwrap()),
            vec![Reply::Continue]
        );
        let h = Command::Header {
            name: "Subject".into(),
            value: b"x".to_vec(),
        };
        assert_eq!(replies(s.handle(h, &cx).unwrap()), vec![Reply::Continue]);
        assert_eq!(
            replies(s.handle(Command::Eoh, &cx).unwrap()),
            vec![Reply::Continue]
        );
        assert_eq!(
            replies(s.handle(Command::Body(b"b".to_vec()), &cx).unwrap()),
            vec![Reply::Continue]
        );
    }

    #[test]
    fn out_of_order_commands_are_protocol_errors() {
        let cx = cx();
        let mut s = Session::new();
        assert!(
            s.handle(Command::Mail(vec!["<a@b>".into()]), &cx).is_err(),
            "before OPTNEG"
        );
        let mut s = connected(&cx, false);
        for cmd in [
            Command::Rcpt(vec!["<a@corp.example>".into()]),
            Command::BodyEob,
            Command::Data,
            Command::Eoh,
        ] {
            let err = s.handle(cmd, &cx).unwrap_err();
            assert!(
                matches!(
                    err,
                    ProtocolError::OutOfOrder {
                        state: "outside a transaction",
                        ..
                    }
                ),
                "{err}"
            );
        }
        mail(&mut s, &cx, "<a@partner.example>");
        let err = s.handle(Command::BodyEob, &cx).unwrap_err();
        assert_eq!(
            err.to_string(),
            "end of message is not allowed before any RCPT"
        );
        let again = Command::OptNeg {
            version: 6,
            actions: all_actions(),
            protocol: all_protocol(),
        };
        assert!(s.handle(again, &cx).is_err());
    }

    #[test]
    fn several_messages_per_connection_and_abort_in_the_middle() {
        let cx = cx();
        let mut s = connected(&cx, false);
        for _ in 0..3 {
            mail(&mut s, &cx, "<a@partner.example>");
            rcpt(&mut s, &cx, "<keep@corp.example>");
            let (_, r) = finish(&mut s, &cx, &[]);
            assert_eq!(r.last(), Some(&Reply::Continue));
            // Postfix sends ABORT after every transaction.
            assert_eq!(replies(s.handle(Command::Abort, &cx).unwrap()), vec![]);
        }
        mail(&mut s, &cx, "<a@partner.example>");
        rcpt(&mut s, &cx, "<keep@corp.example>");
        s.handle(Command::Abort, &cx).unwrap();
        assert!(!s.in_transaction());
        assert!(
            s.handle(Command::BodyEob, &cx).is_err(),
            "the aborted message is gone"
        );
        assert!(matches!(s.handle(Command::Quit, &cx).unwrap(), Step::Close));
    }

    #[test]
    fn header_memory_is_bounded() {
        let cx = cx();
        let mut s = connected(&cx, false);
        mail(&mut s, &cx, "<a@partner.example>");
        rcpt(&mut s, &cx, "<alice@corp.example>");
        for _ in 0..100 {
            let h = Command::Header {
                name: "X-Big".into(),
                value: vec![b'a'; 10_000],
            };
            s.handle(h, &cx).unwrap();
        }
        let Step::EndOfMessage(msg) = s.handle(Command::BodyEob, &cx).unwrap() else {
            panic!()
        };
        assert!(msg.headers_truncated);
        let kept: usize = msg.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(kept <= MAX_HEADER_BYTES, "{kept}");
    }

    mod random {
        use super::*;
        use proptest::prelude::*;

        fn command() -> impl Strategy<Value = Command> {
            let addr = prop_oneof![
                Just("<keep@corp.example>".to_string()),
                Just("<gone@corp.example>".to_string()),
                Just("<dis@corp.example>".to_string()),
                Just("<frz@corp.example>".to_string()),
                Just("<sales@corp.example>".to_string()),
                Just("<>".to_string()),
                "[a-z<>@.]{0,12}",
            ];
            prop_oneof![
                (0u32..8, 0u32..0x200, 0u32..0x20_0000).prop_map(|(v, a, p)| Command::OptNeg {
                    version: v,
                    actions: Actions::from_bits(a),
                    protocol: Protocol::from_bits(p)
                }),
                Just(Command::Connect {
                    hostname: "h".into(),
                    family: Family::Inet4,
                    port: 0,
                    address: "127.0.0.1".into()
                }),
                Just(Command::Connect {
                    hostname: "h".into(),
                    family: Family::Unix,
                    port: 0,
                    address: String::new()
                }),
                Just(Command::Helo("h".into())),
                addr.clone().prop_map(|a| Command::Mail(vec![a])),
                addr.clone().prop_map(|a| Command::Rcpt(vec![a])),
                Just(Command::Mail(vec![])),
                Just(Command::Data),
                Just(Command::Header {
                    name: LOOP_HEADER.into(),
                    value: b"gone@corp.example".to_vec()
                }),
                Just(Command::Header {
                    name: "Subject".into(),
                    value: vec![0xff, b'\n', b' ']
                }),
                Just(Command::Eoh),
                Just(Command::Body(b"x\r\n".to_vec())),
                Just(Command::BodyEob),
                Just(Command::Abort),
                Just(Command::QuitNc),
                Just(Command::Unknown(b"XYZZY".to_vec())),
                Just(Command::Macro {
                    stage: b'M',
                    pairs: vec![("{auth_authen}".into(), "dis@corp.example".into())]
                }),
                Just(Command::Macro {
                    stage: b'E',
                    pairs: vec![("i".into(), "ABC123".into())]
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

            /// Random command sequences never panic, and every reply stays within what was
            /// negotiated: edits only with their action, nothing to a no-reply event.
            #[test]
            fn random_sequences_stay_within_the_negotiated_set(cmds in proptest::collection::vec(command(), 1..40), stored in any::<bool>()) {
                let cx = cx();
                let mut s = Session::new();
                for cmd in cmds {
                    let no_reply = match &cmd {
                        Command::Connect { .. } => Some(Protocol::NR_CONN),
                        Command::Header { .. } => Some(Protocol::NR_HDR),
                        Command::Body(_) => Some(Protocol::NR_BODY),
                        Command::Unknown(_) => Some(Protocol::NR_UNKN),
                        Command::Eoh => Some(Protocol::NR_EOH),
                        Command::Data => Some(Protocol::NR_DATA),
                        _ => None,
                    };
                    let is_optneg = matches!(cmd, Command::OptNeg { .. });
                    let replies = match s.handle(cmd, &cx) {
                        Err(_) => break, // the server closes the connection
                        Ok(Step::Close) => break,
                        Ok(Step::Reply(r)) => r,
                        Ok(Step::EndOfMessage(m)) => {
                            let r = s.finish(&m, stored);
                            prop_assert!(!r.is_empty(), "end of message always gets a reply");
                            r
                        }
                    };
                    if let Some(flag) = no_reply
                        && s.protocol.contains(flag) {
                            prop_assert!(replies.is_empty(), "reply to a no-reply event: {replies:?}");
                        }
                    for r in &replies {
                        let needed = match r {
                            Reply::AddRcpt(_) => Actions::ADDRCPT,
                            Reply::DelRcpt(_) => Actions::DELRCPT,
                            Reply::AddHeader { .. } => Actions::ADDHDRS,
                            Reply::OptNeg { actions, protocol, .. } => {
                                prop_assert!(is_optneg);
                                let may = WANTED_ACTIONS | Actions::SETSYMLIST;
                                prop_assert!((may.bits() | actions.bits()) == may.bits());
                                prop_assert!((WANTED_PROTOCOL.bits() | protocol.bits()) == WANTED_PROTOCOL.bits());
                                Actions::empty()
                            }
                            Reply::Continue | Reply::Tempfail | Reply::ReplyCode(_) => Actions::empty(),
                            other => { prop_assert!(false, "unexpected reply {other:?}"); Actions::empty() }
                        };
                        prop_assert!(s.actions().contains(needed), "{r:?} without its action");
                        if let Reply::ReplyCode(text) = r {
                            prop_assert!(text.starts_with('4') || text.starts_with('5'), "{text}");
                        }
                    }
                    // Edits only come with a final CONTINUE and only when stored.
                    if replies.iter().any(|r| matches!(r, Reply::AddRcpt(_) | Reply::DelRcpt(_) | Reply::AddHeader { .. })) {
                        prop_assert!(stored);
                        prop_assert_eq!(replies.last(), Some(&Reply::Continue));
                    }
                }
            }
        }
    }

    /// A context whose policy has `[srs]` with its secret; `gone@` forwards outside.
    fn srs_cx() -> Fixed {
        let text = "[domains]\nlocal = [\"corp.example\"]\n[srs]\ndomain = \"srs.corp.example\"\nsecret_file = \"/unused\"\n[accounts.\"gone@corp.example\"]\nstate = \"departed\"\nsuccessor = \"new@outside.example\"\nkeep_copy = false\n";
        let mut policy = Policy::from_text("t.toml", text).unwrap();
        let srs =
            crate::srs::Srs::new("srs.corp.example", vec![crate::srs::Secret::new("k")]).unwrap();
        policy.settings.srs.as_mut().unwrap().srs = Some(srs);
        Fixed(Arc::new(PolicyStore::with_loop_key(policy, loop_key())))
    }

    /// Milter mode: a forward out of the company changes the sender with CHGFROM, a bounce to
    /// the SRS address is turned back with DELRCPT + ADDRCPT, a forged one refused; without
    /// CHGFROM granted, the forward is tempfailed rather than sent unrewritten.
    #[test]
    fn srs_changes_the_sender_and_reverses_bounces() {
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
        let srs0 = srs.forward("Ann@example.net", day).unwrap();
        let mut s = connected(&cx, false);
        assert!(s.actions().contains(Actions::CHGFROM));
        mail(&mut s, &cx, "<Ann@example.net>");
        rcpt(&mut s, &cx, "<gone@corp.example>");
        let (_, r) = finish(&mut s, &cx, &[]);
        assert!(
            r.contains(&Reply::ChgFrom {
                sender: format!("<{srs0}>"),
                args: None
            }),
            "{r:?}"
        );
        mail(&mut s, &cx, "<>");
        rcpt(&mut s, &cx, &format!("<{srs0}>"));
        let (_, r) = finish(&mut s, &cx, &[]);
        assert_eq!(
            r,
            [
                Reply::DelRcpt(format!("<{srs0}>")),
                Reply::AddRcpt("<ann@example.net>".into()),
                Reply::Continue
            ]
        );
        mail(&mut s, &cx, "<>");
        let forged = srs0.replace("=Ann@", "=Eve@");
        let r = rcpt(&mut s, &cx, &format!("<{forged}>"));
        assert!(
            matches!(&r[..], [Reply::ReplyCode(t)] if t.starts_with("550 5.1.1 ")),
            "{r:?}"
        );
        // An MTA that does not grant CHGFROM.
        let mut s = Session::new();
        s.handle(
            Command::OptNeg {
                version: 6,
                actions: Actions::ADDRCPT | Actions::DELRCPT | Actions::ADDHDRS,
                protocol: all_protocol(),
            },
            &cx,
        )
        .unwrap();
        let connect = Command::Connect {
            hostname: "client.example".into(),
            family: Family::Inet4,
            port: 4000,
            address: "192.0.2.7".into(),
        };
        s.handle(connect, &cx).unwrap();
        mail(&mut s, &cx, "<ann@example.net>");
        rcpt(&mut s, &cx, "<gone@corp.example>");
        let (msg, r) = finish(&mut s, &cx, &[]);
        assert_eq!(msg.outcome, MessageOutcome::CannotRewrite);
        assert_eq!(r, [Reply::Tempfail]);
    }
}
