//! One mail transaction, whatever front end it came through (milter or LMTP/SMTP): the policy
//! decisions at MAIL and RCPT, what the envelope becomes at end of data, and the facts the
//! journal records. Pure: no I/O; the front ends only translate to and from their protocols.
//!
//! - **MAIL**: a disabled, frozen or deleted account may not send when the session authenticated
//!   as it or the mail was submitted locally.
//! - **RCPT**: refused recipients get their 4xx/5xx, each on its own.
//! - **End of data**: departed and alias recipients become their targets ([`Edit`]s), the loop
//!   marker is added, and a message that carries the marker for a departed account stays with
//!   that account instead of being forwarded again.
//!
//! Local submission (sendmail(1)) cannot be refused recipient by recipient (Postfix treats a
//! reject of its simulated RCPT as a configuration error, MILTER_README), so there every
//! refusal waits for the end of data and refuses the whole message: permanent bounces it to the
//! sender, temporary keeps it queued.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jiff::civil::Date;

use crate::address::Address;
use crate::engine::{self, Resolution, SenderVerdict, Verdict};
use crate::journal::record::{MessageMeta, RecipientMeta, RefusedMeta};
use crate::policy::{SmtpReply, State};
use crate::runtime::store::Snapshot;

/// The header that marks a message handoff has already forwarded for an account. A message that
/// comes back carrying the marker for a departed account is kept in that account's mailbox and
/// not forwarded again, so two systems that forward to each other cannot loop. Only markers
/// signed with the snapshot's loop key count ([`crate::loopmark`]): anyone can write the header.
pub const LOOP_HEADER: &str = "X-Handoff-Forwarded";

/// Headers kept per message, for loop detection, the log line and the auto-reply rules. Postfix
/// caps one header at `header_size_limit` (102400); the sum is bounded here so a message with
/// thousands of headers cannot grow memory without bound. Headers past the cap are not kept
/// here (the journal still stores the whole message).
pub const MAX_HEADER_BYTES: usize = 256 * 1024;

/// What a front end's session needs from its surroundings: the policy in force and the date.
/// The daemon's [`crate::runtime::store::PolicyStore`] is one; tests use a fixed one.
pub trait Context {
    fn snapshot(&self) -> Arc<Snapshot>;
    fn today(&self) -> Date;
}

/// Facts about the SMTP client.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub hostname: String,
    pub address: String,
    pub port: u16,
    /// Local submission (sendmail(1), qmqpd): sender checks apply and refusals wait for the end
    /// of data.
    pub local_submission: bool,
}

/// One accepted recipient and its decision.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// As the client sent it (milter: with `<>`; DELRCPT must match it exactly).
    pub raw: String,
    pub resolution: Resolution,
}

/// A change to the message at end of data, for the front end to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Take this recipient (as the client wrote it) out of the envelope.
    RemoveRecipient(String),
    AddRecipient(Address),
    /// Append a header; the value has no leading space.
    AddHeader {
        name: String,
        value: String,
    },
}

/// What happens to the whole message at end of data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Accept with the edits in [`Message::edits`].
    Accept,
    /// Refuse the whole message (local submission only, or a blocked sender).
    Refuse(SmtpReply),
    /// The front end cannot carry out the edits this message needs (milter actions not granted).
    CannotRewrite,
}

/// What to tell the client about one RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    Accepted,
    /// Refuse this recipient now.
    Refused {
        reply: SmtpReply,
        decision: engine::Decision,
        rule: engine::Rule,
    },
    /// Accept for now; the refusal comes at end of data (local submission).
    RefusedLater {
        decision: engine::Decision,
        rule: engine::Rule,
    },
}

/// A refusal decided by a MAIL (a blocked sender) or RCPT (a refused recipient, with the rule
/// that decided it), for the front end's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub decision: engine::Decision,
    pub rule: Option<engine::Rule>,
}

/// A finished message, for the journal, the auto-reply component and the log.
#[derive(Debug)]
pub struct Message {
    pub snapshot: Arc<Snapshot>,
    pub client: Client,
    /// The MTA's queue id, when known.
    pub queue_id: Option<String>,
    pub sender: Option<Address>,
    pub sender_raw: String,
    pub auth_user: Option<String>,
    pub recipients: Vec<Recipient>,
    /// Recipients refused in this transaction (not part of the message), with their replies.
    pub refused: Vec<(String, SmtpReply)>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub headers_truncated: bool,
    pub body_bytes: u64,
    pub outcome: MessageOutcome,
    /// The envelope and header changes to make once stored.
    pub edits: Vec<Edit>,
    /// Accounts whose genuine loop marker the message carries (forged markers are left out).
    pub loop_marked: Vec<Address>,
    /// The external archive added as a recipient, if configured.
    pub copy_to: Option<Address>,
}

impl Message {
    /// The Message-ID header, if present.
    pub fn message_id(&self) -> Option<String> {
        self.header("message-id")
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
    }

    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The final envelope: every recipient's targets, and the external archive.
    pub fn final_recipients(&self) -> Vec<Address> {
        // A set, not `Vec::contains`: 1,000 recipients of a 1,000-member alias are a million
        // targets to merge, which must stay linear.
        let mut seen: HashSet<&Address> = HashSet::new();
        self.recipients
            .iter()
            .flat_map(|r| r.resolution.deliver.iter())
            .chain(self.copy_to.iter())
            .filter(|a| seen.insert(*a))
            .cloned()
            .collect()
    }

    /// The journal record's facts about this transaction. `origin`: `milter`, `lmtp`.
    pub fn archive_meta(&self, size: u64, origin: &str) -> MessageMeta {
        let policy = &self.snapshot.policy;
        let mut accounts: Vec<String> = Vec::new();
        let mut seen: HashSet<Address> = HashSet::new();
        let mut push = |a: &Address| {
            if seen.insert(a.clone()) {
                accounts.push(a.to_string());
            }
        };
        for r in &self.recipients {
            for s in &r.resolution.steps {
                if let engine::Step::State { address, .. } = s {
                    push(address);
                }
            }
        }
        if let Some(acc) = self.sender.as_ref().and_then(|s| policy.account(s)) {
            push(&acc.address);
        }
        let mut departments: Vec<String> = Vec::new();
        for a in &accounts {
            let dept = Address::from_envelope(a)
                .and_then(|a| policy.account(&a))
                .and_then(|acc| acc.department.clone());
            if let Some(d) = dept.filter(|d| !departments.contains(d)) {
                departments.push(d);
            }
        }
        // Each final recipient once, and each distinct expansion once as indexes into them:
        // the meta grows with the distinct addresses, not with recipients × alias members.
        let finals = self.final_recipients();
        let index: HashMap<&Address, u32> = finals.iter().zip(0u32..).collect();
        let mut expansions: Vec<Vec<u32>> = Vec::new();
        let mut expansion_of: HashMap<Vec<u32>, u32> = HashMap::new();
        let recipients = self
            .recipients
            .iter()
            .map(|r| {
                // Every target is in `finals` (built from the same lists).
                let list: Vec<u32> = r
                    .resolution
                    .deliver
                    .iter()
                    .filter_map(|a| index.get(a).copied())
                    .collect();
                let next = expansions.len() as u32;
                let expansion = *expansion_of.entry(list).or_insert_with_key(|list| {
                    expansions.push(list.clone());
                    next
                });
                RecipientMeta {
                    address: r.resolution.recipient.to_string(),
                    rule: r.resolution.rule.as_str().to_string(),
                    deliver: Vec::new(),
                    expansion: Some(expansion),
                }
            })
            .collect();
        MessageMeta {
            time: jiff::Timestamp::now().to_string(),
            origin: origin.into(),
            queue_id: self.queue_id.clone(),
            message_id: self.message_id(),
            client_address: Some(self.client.address.clone()).filter(|a| !a.is_empty()),
            client_hostname: Some(self.client.hostname.clone()).filter(|h| !h.is_empty()),
            local_submission: self.client.local_submission,
            sender: self
                .sender
                .as_ref()
                .map_or_else(String::new, |a| a.to_string()),
            auth_user: self.auth_user.clone(),
            recipients,
            refused: self
                .refused
                .iter()
                .map(|(raw, reply)| RefusedMeta {
                    address: raw.clone(),
                    reply: reply.to_string(),
                })
                .collect(),
            final_recipients: finals.iter().map(|a| a.to_string()).collect(),
            expansions,
            copy_to: self.copy_to.as_ref().map(|a| a.to_string()),
            accounts,
            departments,
            policy_generation: self.snapshot.generation,
            size,
        }
    }
}

/// A transaction in progress, from MAIL to end of data.
#[derive(Debug)]
pub struct Transaction {
    snapshot: Arc<Snapshot>,
    local_submission: bool,
    sender_raw: String,
    sender: Option<Address>,
    auth_user: Option<String>,
    /// A sender refusal that waits for end of data (local submission).
    blocked: Option<SmtpReply>,
    recipients: Vec<Recipient>,
    refused: Vec<(String, SmtpReply)>,
    headers: Vec<(String, Vec<u8>)>,
    header_bytes: usize,
    headers_truncated: bool,
    /// Accounts whose genuine loop marker the message carries.
    loop_marked: Vec<Address>,
    body_bytes: u64,
    /// The date of MAIL: loop markers are checked against it and carry it.
    today: Date,
}

impl Transaction {
    /// Starts a transaction at MAIL with the policy `snapshot` (used to the end). `Err`: refuse
    /// the MAIL command now with this reply (a blocked sender on an SMTP session).
    pub fn begin(
        snapshot: Arc<Snapshot>,
        client: &Client,
        sender_raw: String,
        auth_user: Option<String>,
        today: Date,
    ) -> Result<Transaction, SmtpReply> {
        let sender = Address::from_envelope(&sender_raw);
        let mut blocked = None;
        if auth_user.is_some() || client.local_submission {
            let policy = &snapshot.policy;
            let mut candidates: Vec<Address> = sender.iter().cloned().collect();
            if let Some(login) = &auth_user {
                match login.contains('@') {
                    true => candidates.extend(Address::from_envelope(login)),
                    // A bare SASL login names the user in one of the local domains.
                    false => candidates.extend(
                        policy
                            .local_domains
                            .iter()
                            .filter_map(|d| Address::from_envelope(&format!("{login}@{d}"))),
                    ),
                }
            }
            blocked = candidates.iter().find_map(|a| {
                match engine::check_sender(policy, Some(a), today) {
                    SenderVerdict::Block { reply, .. } => Some(reply),
                    SenderVerdict::Allow => None,
                }
            });
        }
        if let (Some(reply), false) = (&blocked, client.local_submission) {
            return Err(reply.clone());
        }
        Ok(Transaction {
            snapshot,
            local_submission: client.local_submission,
            sender_raw,
            sender,
            auth_user,
            blocked,
            recipients: Vec::new(),
            refused: Vec::new(),
            headers: Vec::new(),
            header_bytes: 0,
            headers_truncated: false,
            loop_marked: Vec::new(),
            body_bytes: 0,
            today,
        })
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Whether the sender may not send (refused at end of data, for local submission).
    pub fn sender_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// Decides one recipient.
    pub fn rcpt(&mut self, raw: String, today: Date) -> RcptOutcome {
        let Some(address) = Address::from_envelope(&raw) else {
            // An empty RCPT TO (postmaster without domain is not empty): not ours to judge.
            return RcptOutcome::Accepted;
        };
        let resolution = engine::resolve(&self.snapshot.policy, &address, today);
        match &resolution.verdict {
            Verdict::Deliver => {
                self.recipients.push(Recipient { raw, resolution });
                RcptOutcome::Accepted
            }
            Verdict::Reject(reply) | Verdict::Defer(reply) => {
                let (decision, rule) = (resolution.decision(), resolution.rule);
                self.refused.push((raw, reply.clone()));
                match self.local_submission {
                    true => RcptOutcome::RefusedLater { decision, rule },
                    false => RcptOutcome::Refused {
                        reply: reply.clone(),
                        decision,
                        rule,
                    },
                }
            }
        }
    }

    /// Whether any recipient was accepted.
    pub fn has_recipients(&self) -> bool {
        !self.recipients.is_empty()
    }

    /// Keeps a header (bounded by [`MAX_HEADER_BYTES`]) and notes handoff's loop marker when its
    /// MAC is genuine; a forged one is kept as a header but counts for nothing.
    pub fn add_header(&mut self, name: String, value: Vec<u8>) {
        let size = name.len() + value.len();
        if self.header_bytes + size > MAX_HEADER_BYTES {
            self.headers_truncated = true;
            return;
        }
        self.header_bytes += size;
        if name.eq_ignore_ascii_case(LOOP_HEADER) {
            let text = String::from_utf8_lossy(&value);
            if let Some(a) = self.snapshot.loop_key.verify(&text, self.today) {
                self.loop_marked.push(a);
            }
        }
        self.headers.push((name, value));
    }

    pub fn add_body_bytes(&mut self, n: u64) {
        self.body_bytes += n;
    }

    /// Ends the transaction: the outcome for the whole message and its edits.
    pub fn finish(mut self, client: Client, queue_id: Option<String>) -> Message {
        self.apply_loop_markers();
        let outcome = match (&self.blocked, self.refused.first()) {
            (Some(reply), _) => MessageOutcome::Refuse(reply.clone()),
            (None, Some((_, reply))) if self.local_submission => {
                // Temporary beats permanent: a frozen recipient keeps the message queued.
                let temp = self
                    .refused
                    .iter()
                    .find(|(_, r)| r.code() < 500)
                    .map(|(_, r)| r.clone());
                MessageOutcome::Refuse(temp.unwrap_or_else(|| reply.clone()))
            }
            _ => MessageOutcome::Accept,
        };
        let copy_to = self
            .snapshot
            .policy
            .settings
            .copy_to
            .clone()
            .filter(|_| !self.recipients.is_empty());
        let edits = self.edits(copy_to.as_ref());
        Message {
            snapshot: self.snapshot,
            client,
            queue_id,
            sender: self.sender,
            sender_raw: self.sender_raw,
            auth_user: self.auth_user,
            recipients: self.recipients,
            refused: self.refused,
            headers: self.headers,
            headers_truncated: self.headers_truncated,
            body_bytes: self.body_bytes,
            outcome,
            edits,
            copy_to,
            loop_marked: self.loop_marked,
        }
    }

    /// A departed account whose marker the message already carries keeps the message and does
    /// not forward it again.
    fn apply_loop_markers(&mut self) {
        if self.loop_marked.is_empty() {
            return;
        }
        for r in &mut self.recipients {
            let Some(acc) = r.resolution.steps.iter().find_map(|s| match s {
                engine::Step::State {
                    address,
                    state: State::Departed,
                    ..
                } => Some(address.clone()),
                _ => None,
            }) else {
                continue;
            };
            if r.resolution.rule == engine::Rule::Departed && self.loop_marked.contains(&acc) {
                let original = r.resolution.recipient.clone();
                r.resolution
                    .steps
                    .push(engine::Step::LoopMarked { account: acc });
                r.resolution.deliver = engine::Targets::one(original);
            }
        }
    }

    /// Removal of original recipients no longer in the envelope, additions of new ones (and of
    /// the external archive), and a loop marker per departed account forwarded.
    fn edits(&self, copy_to: Option<&Address>) -> Vec<Edit> {
        let originals: Vec<&Address> = self
            .recipients
            .iter()
            .map(|r| &r.resolution.recipient)
            .collect();
        // Sets, not list scans: recipients x targets is remote-controlled (1,000 RCPTs to a
        // 1,000-member alias is a million targets).
        let original_set: foldhash::HashSet<&Address> = originals.iter().copied().collect();
        let mut finals: Vec<&Address> = Vec::new();
        let mut final_set: foldhash::HashSet<&Address> = foldhash::HashSet::default();
        for a in self
            .recipients
            .iter()
            .flat_map(|r| r.resolution.deliver.iter())
        {
            if final_set.insert(a) {
                finals.push(a);
            }
        }
        let mut edits = Vec::new();
        let mut removed: foldhash::HashSet<&str> = foldhash::HashSet::default();
        for r in &self.recipients {
            if !final_set.contains(&r.resolution.recipient) && removed.insert(r.raw.as_str()) {
                edits.push(Edit::RemoveRecipient(r.raw.clone()));
            }
        }
        for a in &finals {
            if !original_set.contains(a) {
                edits.push(Edit::AddRecipient((*a).clone()));
            }
        }
        if let Some(c) = copy_to.filter(|c| !final_set.contains(c)) {
            edits.push(Edit::AddRecipient(c.clone()));
        }
        let mut marked: Vec<&Address> = Vec::new();
        for s in self
            .recipients
            .iter()
            .flat_map(|r| r.resolution.steps.iter())
        {
            if let engine::Step::Forward { from, .. } = s
                && !marked.contains(&from)
                && !self.loop_marked.contains(from)
            {
                marked.push(from);
            }
        }
        for m in marked {
            edits.push(Edit::AddHeader {
                name: LOOP_HEADER.to_string(),
                value: self.snapshot.loop_key.mark(m, self.today),
            });
        }
        edits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::runtime::store::PolicyStore;

    /// A policy with `all@corp.example`, an alias of `members` accounts.
    fn big_alias(members: usize) -> Arc<Snapshot> {
        let list: Vec<String> = (0..members)
            .map(|i| format!("\"member{i:04}@corp.example\""))
            .collect();
        let text = format!(
            "[domains]\nlocal = [\"corp.example\"]\n[aliases]\n\"all@corp.example\" = [{}]\n",
            list.join(", ")
        );
        let policy = Policy::from_text("big.toml", &text).expect("policy");
        PolicyStore::new(policy).snapshot()
    }

    fn today() -> Date {
        jiff::civil::date(2026, 6, 1)
    }

    #[test]
    fn meta_of_500_rcpts_to_a_1000_member_alias() {
        let snap = big_alias(1000);
        let client = Client::default();
        let mut t = Transaction::begin(snap, &client, "<s@example.net>".into(), None, today())
            .expect("begin");
        for i in 0..500 {
            let out = t.rcpt(format!("<all+{i}@corp.example>"), today());
            assert_eq!(out, RcptOutcome::Accepted);
        }
        let msg = t.finish(client, None);
        let meta = serde_json::to_vec(&msg.archive_meta(10, "milter")).unwrap();
        eprintln!("meta bytes: {}", meta.len());
        // Before: every recipient listed all 1,000 members (13 MB here, 25 MB with longer
        // addresses, over the reader's 16 MiB). Now the members once, and one expansion.
        assert!(meta.len() < 100 * 1024, "meta is {} bytes", meta.len());
        let read: MessageMeta = serde_json::from_slice(&meta).unwrap();
        assert_eq!(read.recipients.len(), 500);
        assert_eq!(read.final_recipients.len(), 1000);
        for r in &read.recipients {
            let deliver: Vec<&str> = read.deliver_of(r).collect();
            assert_eq!(deliver.len(), 1000, "{}", r.address);
            assert_eq!(deliver[0], "member0000@corp.example");
            assert_eq!(deliver[999], "member0999@corp.example");
        }
    }

    #[test]
    fn recipients_with_different_targets_keep_their_own() {
        let text = "[domains]\nlocal = [\"corp.example\"]\n[aliases]\n\"sales@corp.example\" = [\"a@corp.example\", \"b@corp.example\"]\n[accounts.\"gone@corp.example\"]\nstate = \"departed\"\nsuccessor = \"cs@corp.example\"\nkeep_copy = false\n";
        let snap = PolicyStore::new(Policy::from_text("t.toml", text).unwrap()).snapshot();
        let client = Client::default();
        let mut t = Transaction::begin(snap, &client, "<>".into(), None, today()).unwrap();
        for r in [
            "<sales@corp.example>",
            "<gone@corp.example>",
            "<a@corp.example>",
        ] {
            assert_eq!(t.rcpt(r.into(), today()), RcptOutcome::Accepted);
        }
        let meta = t.finish(client, None).archive_meta(1, "lmtp");
        let of = |i: usize| meta.deliver_of(&meta.recipients[i]).collect::<Vec<_>>();
        assert_eq!(of(0), ["a@corp.example", "b@corp.example"]);
        assert_eq!(of(1), ["cs@corp.example"]);
        assert_eq!(of(2), ["a@corp.example"]);
        assert_eq!(
            meta.final_recipients,
            ["a@corp.example", "b@corp.example", "cs@corp.example"]
        );
    }
}
