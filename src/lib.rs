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
//! - [`metrics`] names every metric and records it. It imports nothing of the domain (labels are
//!   the domain types' own `as_str`, passed in), so everything else can record there.
//! - [`admin`] edits the policy file for the admin commands (`depart`, `disable`, `import`, …):
//!   pure document edits, then one file edge that validates the whole result and writes it
//!   atomically.
//! - [`cli`] turns command lines into calls of the above, one file per command with its
//!   arguments and handler; `main.rs` only maps the outcome to an exit code.
//!
//! Logging policy: `error` only when handoff cannot serve (a listener fails, the journal cannot be
//! written); `warn` for misbehaving peers and configuration (refused reloads, an MTA without the
//! needed milter actions); `info` for one line per message decision (addresses only while
//! `[log] addresses` is on) and for lifecycle events (start, reload, shutdown); `debug` for
//! protocol detail. Metric names live in [`metrics`] only.
//!
//! Errors: one typed error per layer (`thiserror`), lowercase, naming the input. A variant that
//! wraps a cause prints it in its own message and does not also return it as `source()`, so an
//! error printed with its chain (`anyhow`'s `{:#}`) names each cause once; `#[error(transparent)]`
//! hands both on. tests/architecture.rs holds every error type in the crate to this.

pub mod address;
pub mod admin;
pub mod autoreply;
pub mod cli;
pub mod console;
pub mod csvtable;
pub mod engine;
pub mod explain;
pub mod fsops;
pub mod imap;
pub mod import;
pub mod index;
pub mod journal;
pub mod lmtp;
pub mod loopmark;
pub mod metrics;
pub mod milter;
pub mod policy;
pub mod runtime;
pub mod srs;
pub mod transaction;
