//! Loss accounting for tests that put handoff under faults. Every message carries a unique id
//! (its Subject and Message-ID); a test compares three sets of ids:
//!
//! - **accepted**: the SMTP client got 250 at DATA from Postfix;
//! - **journaled**: a `Kind::Message` record in handoff's journal carries the id;
//! - **delivered**: the lab's sink received it.
//!
//! Lost = accepted but missing from the journal or from the sink; it must be 0. Duplicates
//! (an id journaled or delivered more than once) are reported, not failed: handoff delivers at
//! least once (see `faults.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use handoff::journal::record::MessageMeta;
use handoff::journal::{Kind, reader};

use crate::support::{Lab, SmtpClient};

/// The envelope sender of [`message`].
pub const SENDER: &str = "sender@example.net";

/// A message carrying `id`, from [`SENDER`].
pub fn message(id: &str) -> String {
    message_between(id, SENDER, "x@corp.example")
}

/// A message carrying `id`, with these From and To headers.
pub fn message_between(id: &str, from: &str, to: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {id}\r\n\
         Message-ID: <{id}@faults.example>\r\n\r\nMessage {id}.\r\n"
    )
}

/// Tells sender threads to stop when dropped, also when the driving thread panics (otherwise
/// `thread::scope` would wait for them forever).
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How one attempt ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// 250 at DATA: Postfix has the message.
    Accepted,
    /// 4xx anywhere, or a connection error: the sender keeps it and retries.
    Retry,
    /// 5xx: refused for good.
    Refused(String),
}

/// One SMTP transaction that, unlike `support::send`, treats I/O errors as "try again".
pub fn try_send(lab: &Lab, from: &str, rcpt: &str, msg: &str) -> Outcome {
    let attempt = || -> std::io::Result<Outcome> {
        let mut c = SmtpClient::connect(lab.smtp_addr())?;
        for r in [
            c.ehlo("client.example")?,
            c.mail_from(from)?,
            c.rcpt_to(rcpt)?,
        ] {
            if r.is_transient() {
                return Ok(Outcome::Retry);
            }
            if !r.is_positive() {
                return Ok(Outcome::Refused(r.to_string()));
            }
        }
        let r = c.data(msg.as_bytes())?;
        let _ = c.quit();
        Ok(match r.code {
            250 => Outcome::Accepted,
            c if c / 100 == 4 => Outcome::Retry,
            _ => Outcome::Refused(r.to_string()),
        })
    };
    attempt().unwrap_or(Outcome::Retry)
}

/// Sends `id` (a [`message`]) until Postfix accepts it; returns the number of attempts.
pub fn send_until_accepted(lab: &Lab, rcpt: &str, id: &str) -> usize {
    send_message_until_accepted(lab, SENDER, rcpt, id, &message(id))
}

/// Sends `msg`, which carries `id`, until Postfix accepts it; returns the number of attempts.
pub fn send_message_until_accepted(
    lab: &Lab,
    from: &str,
    rcpt: &str,
    id: &str,
    msg: &str,
) -> usize {
    for attempt in 1.. {
        match try_send(lab, from, rcpt, msg) {
            Outcome::Accepted => return attempt,
            Outcome::Retry => std::thread::sleep(Duration::from_millis(50)),
            Outcome::Refused(r) => panic!("{id} refused for good: {r}"),
        }
        assert!(attempt < 2000, "{id}: no 250 after {attempt} attempts");
    }
    unreachable!()
}

/// The id in a Message-ID `<id@faults.example>`.
pub fn id_of(message_id: &str) -> Option<&str> {
    message_id
        .trim_matches(['<', '>'])
        .strip_suffix("@faults.example")
}

/// How many journal records carry each id.
pub fn journaled_ids(dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    reader::for_each_record(dir, |info, _| {
        if info.header.kind == Kind::Message {
            let meta: MessageMeta = serde_json::from_slice(&info.meta).unwrap();
            if let Some(id) = meta.message_id.as_deref().and_then(id_of) {
                *out.entry(id.to_string()).or_default() += 1;
            }
        }
        Ok(())
    })
    .unwrap();
    out
}

/// How many deliveries the sink got for each id.
pub fn delivered_ids(lab: &Lab) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in lab.sink().all() {
        if let Some(id) = m.header("Message-ID").as_deref().and_then(id_of) {
            *out.entry(id.to_string()).or_default() += 1;
        }
    }
    out
}

/// The loss account of one test.
pub struct Account {
    pub accepted: Vec<String>,
    pub journaled: BTreeMap<String, usize>,
    pub delivered: BTreeMap<String, usize>,
}

impl Account {
    /// Waits (up to `timeout`) until every accepted id is at the sink, then reads the journal.
    pub fn settle(lab: &Lab, journal: &Path, accepted: Vec<String>, timeout: Duration) -> Account {
        let deadline = Instant::now() + timeout;
        let mut delivered = delivered_ids(lab);
        while Instant::now() < deadline && accepted.iter().any(|id| !delivered.contains_key(id)) {
            lab.flush();
            std::thread::sleep(Duration::from_millis(200));
            delivered = delivered_ids(lab);
        }
        // Anything still in flight shows up as an extra delivery, not as a missing one.
        std::thread::sleep(Duration::from_millis(500));
        Account {
            accepted,
            journaled: journaled_ids(journal),
            delivered: delivered_ids(lab),
        }
    }

    pub fn lost(&self) -> Vec<&str> {
        self.accepted
            .iter()
            .filter(|id| !self.journaled.contains_key(*id) || !self.delivered.contains_key(*id))
            .map(String::as_str)
            .collect()
    }

    /// Prints the counts and fails on any loss.
    pub fn report(&self, test: &str, extra: &str) {
        // Counted over the accepted ids only: a journal or a sink may also hold other mail.
        let mine = |m: &BTreeMap<String, usize>| -> (usize, usize, usize) {
            let counts: Vec<usize> = self
                .accepted
                .iter()
                .filter_map(|id| m.get(id).copied())
                .collect();
            (
                counts.len(),
                counts.iter().sum(),
                counts.iter().filter(|n| **n > 1).count(),
            )
        };
        let (journaled, records, dup_journal) = mine(&self.journaled);
        let (delivered, deliveries, dup_sink) = mine(&self.delivered);
        let lost = self.lost();
        eprintln!(
            "{test}: accepted {} journaled {journaled} ({records} records) delivered {delivered} \
             ({deliveries} deliveries) lost {} duplicates journal {dup_journal} sink {dup_sink}{extra}",
            self.accepted.len(),
            lost.len(),
        );
        assert!(lost.is_empty(), "{test}: lost {lost:?}");
    }
}
