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
mod lab;
mod sink;
mod smtp;

pub use config::{LabConfig, master_cf_entries, parse_main_cf};
pub use lab::{LAB_HOSTNAME, Lab, QueuedMessage, QueuedRecipient};
pub use sink::{Delivered, Sink, SinkMode};
pub use smtp::{
    Reply, SendOptions, SmtpClient, Transcript, encode_data, send, send_authenticated, send_with,
};
