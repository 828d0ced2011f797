//! handoff: a mail filter for Postfix that decides, at delivery time, what happens to mail for
//! departed, disabled, frozen and deleted accounts and for aliases.
//!
//! The crate is laid out so that the architecture is visible:
//! - [`address`], [`policy`] and [`engine`] are pure: data in, decisions out. The policy module
//!   reads the policy files and nothing else; the engine does no I/O at all.
//! - [`autoreply`] answers mail for departed accounts: pure rules and message building, and
//!   the worker that remembers, rate-limits and sends, off the mail path.
//! - [`runtime`] holds the I/O edges: the reloadable policy store, the file watcher and SIGHUP
//!   handling, the metrics endpoint, and `serve`.
//! - [`admin`] edits the policy file for the admin commands (`depart`, `disable`, `import`, …):
//!   pure document edits, then one file edge that validates the whole result and writes it
//!   atomically.
//! - [`cli`] turns command lines into calls of the above; `main.rs` only maps the outcome to an
//!   exit code.
//!
//! Logging policy: `error` only when handoff cannot serve (a listener fails, the journal cannot be
//! written); `warn` for misbehaving peers and configuration (refused reloads, an MTA without the
//! needed milter actions); `info` for one line per message decision (addresses only while
//! `[log] addresses` is on) and for lifecycle events (start, reload, shutdown); `debug` for
//! protocol detail. Metric names
//! live in [`runtime::metrics`] only.

pub mod address;
pub mod admin;
mod admin_cli;
mod archive_cli;
pub mod autoreply;
pub mod cli;
pub mod engine;
pub mod explain;
pub mod fsops;
pub mod journal;
pub mod lmtp;
pub mod loopmark;
pub mod milter;
pub mod policy;
pub mod runtime;
pub mod transaction;
