//! The end-to-end test lab: a real Postfix on loopback, per test, with a capturing next hop.
//!
//! - `Lab` (lab.rs): a private Postfix instance under `/tmp/handoff-lab-XXXXXX`, its
//!   config from `LabConfig` (config.rs), local submission, queue inspection, logs.
//! - `Sink` (sink.rs): the SMTP/LMTP server Postfix delivers everything to.
//! - `SmtpClient`, `send` (smtp.rs): a blocking SMTP client that keeps every reply.
//!
//! All of it is blocking std code (threads and std::net); tests run many labs in parallel.
//! See tests/README.md for running and debugging.

// The harness offers more than any one test module uses.
#![allow(dead_code, unused_imports)]

mod config;
mod dovecot;
mod lab;
mod sink;
mod smtp;

pub use config::{LabConfig, master_cf_entries, parse_main_cf};
pub use dovecot::Dovecot;
pub use lab::{LAB_HOSTNAME, Lab, QueuedMessage, QueuedRecipient};
pub use sink::{Delivered, Sink, SinkMode};
pub use smtp::{
    Reply, SendOptions, SmtpClient, Transcript, encode_data, send, send_authenticated, send_with,
};

/// The meta of a message from `sender` to `b@corp.example` (an active account), received
/// 2026-01-01: for the archive commands' tests, which write journals without a daemon.
pub fn message_meta(sender: &str) -> handoff::journal::record::MessageMeta {
    use handoff::journal::record::{MessageMeta, RecipientMeta};
    let rcpt = "b@corp.example";
    MessageMeta {
        time: "2026-01-01T00:00:00Z".into(),
        origin: "milter".into(),
        sender: sender.into(),
        recipients: vec![RecipientMeta {
            address: rcpt.into(),
            rule: "active".into(),
            deliver: vec![rcpt.into()],
            expansion: None,
        }],
        final_recipients: vec![rcpt.into()],
        ..MessageMeta::default()
    }
}

/// Writes a journal in `dir` holding one message ([`message_meta`]) with `body` as its
/// content; returns its id.
pub fn journal_with_one_message(
    dir: &std::path::Path,
    sender: &str,
    body: &[u8],
) -> handoff::journal::RecordId {
    use handoff::journal::writer::{DEFAULT_SEGMENT_BYTES, Writer};
    use handoff::journal::{Body, Entry, Kind};
    let (mut w, _) = Writer::open(dir, DEFAULT_SEGMENT_BYTES).unwrap();
    let meta = message_meta(sender);
    let mut entries = [Entry::new(Kind::Message, &meta, Body::Bytes(body.to_vec()))];
    w.append(&mut entries).unwrap().0[0]
}
