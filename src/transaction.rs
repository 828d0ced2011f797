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
use crate::engine::{self, ExpansionCache, Resolution, SenderVerdict, Verdict};
use crate::journal::record::{MessageMeta, RecipientMeta, RefusedMeta};
use crate::loopmark::LoopKey;
use crate::policy::{Policy, SmtpReply};
use crate::srs::{self, Reversed};

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
/// The daemon's `PolicyStore` (in the runtime) is one; tests use a fixed one.
pub trait Context {
    fn snapshot(&self) -> Arc<Snapshot>;
    fn today(&self) -> Date;
}

/// A loaded policy as one transaction uses it from MAIL to end of data, so that a reload in the
/// middle of a message never mixes two policies in one decision: the policy, its generation
/// number (1 for the policy loaded at start-up, +1 per reload), the key of the loop markers, and
/// the engine's cache of what its aliases and departed accounts expand to.
///
/// It lives beside the transaction, its user, rather than in the runtime that swaps snapshots
/// (the pure layers that take one would import the I/O edge) or in the policy (which is what
/// the admin wrote, compiled: it knows neither the engine's cache nor the loop key).
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub policy: Policy,
    pub digest: u64,
    pub loaded_at: jiff::Timestamp,
    /// Signs and checks the loop markers (read from the state directory by the daemon).
    pub loop_key: LoopKey,
    /// Made for `policy`, filled as mail reaches its nodes.
    expansions: ExpansionCache,
}

impl Snapshot {
    pub fn new(
        generation: u64,
        policy: Policy,
        loop_key: LoopKey,
        loaded_at: jiff::Timestamp,
    ) -> Snapshot {
        Snapshot {
            generation,
            digest: policy.sources.digest(),
            expansions: ExpansionCache::new(&policy),
            policy,
            loaded_at,
            loop_key,
        }
    }

    /// Decides what happens to mail for `recipient` on `today` ([`engine::resolve`]), reusing
    /// the expansions earlier recipients reached.
    pub fn resolve(&self, recipient: &Address, today: Date) -> Resolution {
        engine::resolve_cached(&self.policy, &self.expansions, recipient, today)
    }
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
    /// Replace the envelope sender with this address (SRS, [`crate::srs`]): the message is
    /// forwarded out of the company, where the original sender's SPF would fail.
    ChangeSender(String),
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
        // Every account the recipients' decisions consulted, then the sender's, each once.
        let mut seen: HashSet<&Address> = HashSet::new();
        let sender_account = self.sender.as_ref().and_then(|s| policy.account(s));
        let accounts: Vec<&Address> = self
            .recipients
            .iter()
            .flat_map(|r| r.resolution.accounts.iter())
            .chain(sender_account.map(|acc| &acc.address))
            .filter(|a| seen.insert(*a))
            .collect();
        let mut departments: Vec<String> = Vec::new();
        for a in &accounts {
            let dept = policy.account(a).and_then(|acc| acc.department.as_ref());
            if let Some(d) = dept.filter(|d| !departments.contains(d)) {
                departments.push(d.clone());
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
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
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
        let raw = match self.srs_recipient(raw, &address, today) {
            Ok(outcome) => return outcome,
            Err(raw) => raw,
        };
        let resolution = self.snapshot.resolve(&address, today);
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

    /// A recipient in the SRS domain: a bounce coming back to an address handoff wrote. A
    /// genuine one goes to the sender it stands for, a forged, expired or malformed one is
    /// refused with `550 5.1.1` (no such mailbox: RFC 3463). `Err` gives `raw` back for the
    /// policy to decide: SRS is off, or the address is not in the SRS domain or has no SRS tag.
    fn srs_recipient(
        &mut self,
        raw: String,
        address: &Address,
        today: Date,
    ) -> Result<RcptOutcome, String> {
        let srs = self
            .snapshot
            .policy
            .settings
            .srs
            .as_ref()
            .and_then(|s| s.srs.as_ref())
            .filter(|s| address.domain() == s.domain());
        let Some(srs) = srs else { return Err(raw) };
        // The address as written, so the original sender's local part keeps its case.
        let written = envelope_mailbox(&raw).unwrap_or(address.as_str());
        let why = match srs.reverse(written, srs::day_number(today)) {
            Ok(Reversed::NotSrs) => return Err(raw),
            Ok(Reversed::Address(original)) => match Address::from_envelope(&original) {
                Some(target) => {
                    let resolution = Resolution::redirected(address, target);
                    self.recipients.push(Recipient { raw, resolution });
                    return Ok(RcptOutcome::Accepted);
                }
                None => "not a valid SRS address",
            },
            Err(srs::SrsError::Expired(_)) => "the SRS address has expired",
            Err(_) => "not a valid SRS address",
        };
        let reply = SmtpReply::new(
            550,
            "5.1.1",
            format!("<{address}>: Recipient address rejected: {why}"),
        );
        let (decision, rule) = (engine::Decision::RejectSrs, engine::Rule::NotLocal);
        self.refused.push((raw, reply.clone()));
        Ok(match self.local_submission {
            true => RcptOutcome::RefusedLater { decision, rule },
            false => RcptOutcome::Refused {
                reply,
                decision,
                rule,
            },
        })
    }

    /// The SRS address for the envelope sender when the message leaves the company: the
    /// sender is not the company's own (not in `[domains] local`, the SRS domain or
    /// `exclude_domains`: its SPF already passes here) and a forward or alias handoff applied
    /// sends it to an address that is not the company's either. Mail that stays inside keeps
    /// its sender, and the null sender (a bounce) is never rewritten: it has nowhere to go back
    /// to.
    fn srs_sender(&self) -> Option<String> {
        let settings = self.snapshot.policy.settings.srs.as_ref()?;
        let srs = settings.srs.as_ref()?;
        let sender = self.sender.as_ref()?;
        let policy = &self.snapshot.policy;
        let ours = |domain: &str| {
            policy.is_local(domain)
                || domain == srs.domain()
                || settings.exclude_domains.iter().any(|d| d == domain)
        };
        if ours(sender.domain()) {
            return None;
        }
        let leaves = self
            .recipients
            .iter()
            .filter(|r| r.resolution.rewritten())
            .flat_map(|r| r.resolution.deliver.iter())
            .any(|a| !ours(a.domain()));
        if !leaves {
            return None;
        }
        // The local part as written (a mailbox's local part may be case-sensitive, RFC 5321
        // section 2.4), the domain in the address module's form (A-labels).
        let local = envelope_mailbox(&self.sender_raw)
            .and_then(|m| m.rsplit_once('@'))
            .map_or(sender.local_part(), |(l, _)| l);
        let from = format!("{local}@{}", sender.domain());
        srs.forward(&from, srs::day_number(self.today)).ok()
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
            if let Some(acc) = r.resolution.departed_account()
                && self.loop_marked.contains(acc)
            {
                r.resolution.keep_loop_marked();
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
        for from in self
            .recipients
            .iter()
            .flat_map(|r| r.resolution.forwarders.iter())
        {
            if !marked.contains(&from) && !self.loop_marked.contains(from) {
                marked.push(from);
            }
        }
        for m in marked {
            edits.push(Edit::AddHeader {
                name: LOOP_HEADER.to_string(),
                value: self.snapshot.loop_key.mark(m, self.today),
            });
        }
        if let Some(sender) = self.srs_sender() {
            edits.push(Edit::ChangeSender(sender));
        }
        edits
    }
}

/// The mailbox of an envelope path as the client wrote it, `<>` and space removed; `None` for
/// the null path and for an obsolete source route (RFC 5321 section 4.1.2), which
/// [`Address::from_envelope`] takes apart.
fn envelope_mailbox(raw: &str) -> Option<&str> {
    let s = raw.trim();
    let s = s.strip_prefix('<').unwrap_or(s);
    let s = s.strip_suffix('>').unwrap_or(s).trim();
    (!s.is_empty() && !s.starts_with('@')).then_some(s)
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

    /// A departed account reached through an alias, and one addressed directly whose loop
    /// marker the message carries.
    const DEPARTED: &str = r#"
[domains]
local = ["corp.example"]

[aliases]
"team@corp.example" = ["gone+team@corp.example", "off@corp.example"]

[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
forward = ["cs@corp.example"]
keep_copy = false
department = "sales"

[accounts."back@corp.example"]
state = "departed"
successor = "cs@corp.example"
forward = ["cs@corp.example"]
keep_copy = false
department = "legal"

[accounts."off@corp.example"]
state = "disabled"
department = "it"

[accounts."cs@corp.example"]
state = "active"
department = "support"
"#;

    /// The message for `rcpts`, carrying the loop marker of `back@`, with the recipients'
    /// `explain` steps wiped before the end of data when `wipe`.
    fn finished(snap: &Arc<Snapshot>, rcpts: &[&str], wipe: bool) -> Message {
        let client = Client::default();
        let mut t = Transaction::begin(snap.clone(), &client, "<>".into(), None, today()).unwrap();
        let marker = snap.loop_key.mark(
            &Address::parse_strict("back@corp.example").unwrap(),
            today(),
        );
        t.add_header(LOOP_HEADER.into(), marker.into_bytes());
        for r in rcpts {
            assert_eq!(t.rcpt((*r).into(), today()), RcptOutcome::Accepted);
        }
        if wipe {
            for r in &mut t.recipients {
                r.resolution.steps = engine::Steps::default();
            }
        }
        let mut msg = t.finish(client, None);
        if wipe {
            for r in &mut msg.recipients {
                r.resolution.steps = engine::Steps::default();
            }
        }
        msg
    }

    /// The journal's accounts and departments, the loop markers added and the loop-marked
    /// account kept come from the decision's facts: rewording or dropping the `explain` steps
    /// changes none of them.
    #[test]
    fn the_record_and_the_edits_do_not_depend_on_the_trace() {
        let policy = Policy::from_text("t.toml", DEPARTED).unwrap();
        let snap = PolicyStore::new(policy).snapshot();
        let rcpts = ["<team@corp.example>", "<back@corp.example>"];
        let with = finished(&snap, &rcpts, false);
        let without = finished(&snap, &rcpts, true);
        for msg in [&with, &without] {
            let meta = msg.archive_meta(1, "lmtp");
            assert_eq!(
                meta.accounts,
                [
                    "gone@corp.example",
                    "cs@corp.example",
                    "off@corp.example",
                    "back@corp.example"
                ]
            );
            assert_eq!(meta.departments, ["sales", "support", "it", "legal"]);
            // `back@` carries its marker: kept, not forwarded again.
            assert_eq!(
                meta.final_recipients,
                ["cs@corp.example", "back@corp.example"]
            );
            let marked: Vec<&str> = msg
                .edits
                .iter()
                .filter_map(|e| match e {
                    Edit::AddHeader { name, value } if name == LOOP_HEADER => Some(value.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(marked.len(), 1, "{:?}", msg.edits);
            let gone = Address::parse_strict("gone@corp.example").unwrap();
            assert_eq!(snap.loop_key.verify(marked[0], today()), Some(gone));
        }
        assert_eq!(with.edits, without.edits);
    }

    /// A policy with `[srs]` and its secret (as the loader would have read it): `gone@` forwards
    /// to a successor outside, `moved@` to one inside, `sales@` is an alias with an outside
    /// member, `partner.example` is excluded.
    fn srs_snapshot() -> Arc<Snapshot> {
        let text = r#"
[domains]
local = ["corp.example"]
[srs]
domain = "srs.corp.example"
secret_file = "/nonexistent"
exclude_domains = ["partner.example"]
[aliases]
"sales@corp.example" = ["a@corp.example", "rep@outside.example"]
"team@corp.example" = ["a@corp.example", "x@partner.example"]
[accounts."gone@corp.example"]
state = "departed"
successor = "new@outside.example"
keep_copy = false
[accounts."moved@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false
"#;
        let mut policy = Policy::from_text("t.toml", text).unwrap();
        let srs =
            crate::srs::Srs::new("srs.corp.example", vec![crate::srs::Secret::new("k")]).unwrap();
        policy.settings.srs.as_mut().unwrap().srs = Some(srs);
        PolicyStore::new(policy).snapshot()
    }

    fn rewriter(snap: &Snapshot) -> &crate::srs::Srs {
        snap.policy
            .settings
            .srs
            .as_ref()
            .unwrap()
            .srs
            .as_ref()
            .unwrap()
    }

    fn sender_edit(snap: &Arc<Snapshot>, from: &str, rcpts: &[&str]) -> Option<String> {
        let client = Client::default();
        let mut t = Transaction::begin(snap.clone(), &client, from.into(), None, today()).unwrap();
        for r in rcpts {
            assert_eq!(t.rcpt((*r).into(), today()), RcptOutcome::Accepted, "{r}");
        }
        let edits = t.finish(client, None).edits;
        let changes: Vec<&String> = edits
            .iter()
            .filter_map(|e| match e {
                Edit::ChangeSender(s) => Some(s),
                _ => None,
            })
            .collect();
        assert!(changes.len() <= 1, "{edits:?}");
        changes.first().map(|s| s.to_string())
    }

    #[test]
    fn the_sender_is_rewritten_only_when_a_forward_leaves_the_company() {
        let snap = srs_snapshot();
        let day = srs::day_number(today());
        let srs0 = rewriter(&snap).forward("Ann@example.net", day).unwrap();
        assert!(srs0.starts_with("SRS0=") && srs0.ends_with("=example.net=Ann@srs.corp.example"));
        // Forwarded to a successor outside, or through an alias with an outside member.
        assert_eq!(
            sender_edit(&snap, "<Ann@example.net>", &["<gone@corp.example>"]),
            Some(srs0.clone())
        );
        assert_eq!(
            sender_edit(&snap, "<Ann@Example.NET>", &["<sales@corp.example>"]),
            Some(srs0)
        );
        // Staying inside; sent to an outside address as addressed (no forward of handoff's);
        // forwarded only to an excluded domain.
        assert_eq!(
            sender_edit(&snap, "<ann@example.net>", &["<moved@corp.example>"]),
            None
        );
        assert_eq!(
            sender_edit(&snap, "<ann@example.net>", &["<bob@elsewhere.example>"]),
            None
        );
        assert_eq!(
            sender_edit(&snap, "<ann@example.net>", &["<team@corp.example>"]),
            None
        );
        // The null sender, and the company's own senders, are never rewritten.
        assert_eq!(sender_edit(&snap, "<>", &["<gone@corp.example>"]), None);
        assert_eq!(
            sender_edit(&snap, "<a@corp.example>", &["<gone@corp.example>"]),
            None
        );
        assert_eq!(
            sender_edit(&snap, "<x@partner.example>", &["<gone@corp.example>"]),
            None
        );
        // An SRS sender from another forwarder becomes SRS1.
        let other = "SRS0=abcd=RA=example.net=ann@fwd.example";
        let srs1 = sender_edit(&snap, &format!("<{other}>"), &["<gone@corp.example>"]).unwrap();
        assert!(
            srs1.starts_with("SRS1=")
                && srs1.ends_with("=fwd.example==abcd=RA=example.net=ann@srs.corp.example"),
            "{srs1}"
        );
    }

    #[test]
    fn without_srs_configured_nothing_is_rewritten() {
        let text = "[domains]\nlocal = [\"corp.example\"]\n[accounts.\"gone@corp.example\"]\nstate = \"departed\"\nsuccessor = \"new@outside.example\"\nkeep_copy = false\n";
        let snap = PolicyStore::new(Policy::from_text("t.toml", text).unwrap()).snapshot();
        assert_eq!(
            sender_edit(&snap, "<ann@example.net>", &["<gone@corp.example>"]),
            None
        );
    }

    #[test]
    fn a_bounce_to_an_srs_address_goes_back_to_the_original_sender() {
        let snap = srs_snapshot();
        let day = srs::day_number(today());
        let srs0 = rewriter(&snap).forward("Ann@example.net", day).unwrap();
        let client = Client::default();
        let mut t = Transaction::begin(snap.clone(), &client, "<>".into(), None, today()).unwrap();
        let raw = format!("<{srs0}>");
        assert_eq!(t.rcpt(raw.clone(), today()), RcptOutcome::Accepted);
        let msg = t.finish(client, None);
        assert_eq!(
            msg.edits,
            [
                Edit::RemoveRecipient(raw),
                Edit::AddRecipient(Address::parse_strict("ann@example.net").unwrap())
            ]
        );
        // No auto-reply for a bounce, and no sender to rewrite.
        assert!(msg.recipients[0].resolution.autoreplies.is_empty());
        // A plain address in the SRS domain is left to the policy.
        let client = Client::default();
        let mut t = Transaction::begin(snap, &client, "<>".into(), None, today()).unwrap();
        assert_eq!(
            t.rcpt("<postmaster@srs.corp.example>".into(), today()),
            RcptOutcome::Accepted
        );
        assert!(t.finish(client, None).edits.is_empty());
    }

    #[test]
    fn forged_and_expired_srs_addresses_are_refused_with_5_1_1() {
        let snap = srs_snapshot();
        let day = srs::day_number(today());
        let expired = rewriter(&snap)
            .forward("ann@example.net", day - 22)
            .unwrap();
        let genuine = rewriter(&snap).forward("ann@example.net", day).unwrap();
        let forged = genuine.replace("=ann@", "=eve@");
        for (addr, why) in [
            (expired, "expired"),
            (forged, "not a valid SRS address"),
            (
                "SRS0=abcd@srs.corp.example".to_string(),
                "not a valid SRS address",
            ),
        ] {
            for local in [false, true] {
                let client = Client {
                    local_submission: local,
                    ..Client::default()
                };
                let mut t =
                    Transaction::begin(snap.clone(), &client, "<>".into(), None, today()).unwrap();
                let out = t.rcpt(format!("<{addr}>"), today());
                match (local, out) {
                    (
                        false,
                        RcptOutcome::Refused {
                            reply, decision, ..
                        },
                    ) => {
                        assert_eq!(decision, engine::Decision::RejectSrs);
                        let text = reply.to_string();
                        assert!(
                            text.starts_with("550 5.1.1 ") && text.contains(why),
                            "{text}"
                        );
                    }
                    (true, RcptOutcome::RefusedLater { decision, .. }) => {
                        assert_eq!(decision, engine::Decision::RejectSrs);
                        let msg = t.finish(client, None);
                        assert!(
                            matches!(&msg.outcome, MessageOutcome::Refuse(r) if r.code() == 550),
                            "{:?}",
                            msg.outcome
                        );
                    }
                    (_, other) => panic!("{addr}: {other:?}"),
                }
            }
        }
    }
}
