//! Bringing existing mail into the archive (`handoff archive import`): each message becomes an
//! `imported` journal record ([`crate::journal::record::ImportedMeta`]) written by the same
//! journal writer as the daemon's (hash chain, batches, one fsync per batch, the journal's
//! lock: safe next to a running `serve`).
//!
//! - [`message`]: what a message's header says (its time, with the fallback), pure.
//! - [`mbox`]: splitting an mbox into messages, sans-IO; [`csv`]: the accounts file, pure.
//! - [`source`]: reading `.eml`, mbox and Maildir files (the I/O edge).
//! - [`status`]: each account's state and counts, as `--status` shows them.
//! - [`run`]: the importer: accounts from the policy, the seen-set from the journal, batches,
//!   the audit record, the status file.
//!
//! - [`remote`]: reading an IMAP mailbox ([`crate::imap`]), every folder or a chosen set.
//!
//! A [`Source`] is where one account's mail is: files, or a mailbox on an IMAP server.

pub mod csv;
pub mod mbox;
pub mod message;
pub mod remote;
pub mod run;
pub mod source;
pub mod status;

use std::path::PathBuf;

pub use run::{Importer, Job, Options};

/// Where an account's mail is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file or directory on this machine (`.eml`, mbox, Maildir).
    Path {
        path: PathBuf,
        format: source::Format,
    },
    /// A mailbox on an IMAP server (`imaps://user@host:port`, or a CSV row with a host or a
    /// password). Without a password of its own, the run's (`--password-file`,
    /// `HANDOFF_IMAP_PASSWORD`) is used.
    Imap {
        host: Option<String>,
        user: String,
        password: Option<crate::imap::Secret>,
    },
}

impl Source {
    /// How the source is named in the status and the audit trail (never with a password).
    pub fn describe(&self) -> String {
        match self {
            Source::Path { path, .. } => path.display().to_string(),
            Source::Imap { host, user, .. } => match host {
                Some(h) => format!("imap://{user}@{h}"),
                None => format!("imap://{user}"),
            },
        }
    }
}

/// How imported messages are filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FolderMode {
    /// Each message under its source folder's name (`INBOX`, `Sent`, `Archive/2024`).
    Keep,
    /// Every message of a source in one folder named after the source address
    /// (`--source-account`, else the account).
    Source,
}

/// Why an account's import failed (a message that fails is counted, not an error).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("`{0}` is not an account of the policy")]
    NotAnAccount(String),
    #[error("{path}: {cause}")]
    Source { path: String, cause: std::io::Error },
    #[error("{source_name}: {cause}")]
    Imap {
        source_name: String,
        cause: crate::imap::ImapError,
    },
    #[error("{0}")]
    ImapSetup(String),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("journal {dir}: another import is running on this journal")]
    Busy { dir: String },
    #[error("journal {dir}: {cause}")]
    Io { dir: String, cause: std::io::Error },
}
