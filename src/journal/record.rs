//! What a journal record says about a message (its meta), as JSON.

use serde::{Deserialize, Serialize};

/// The envelope facts of one transaction. One record per transaction, however many recipients.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub time: String,
    /// `milter`, `lmtp`, or `autoreply` for messages handoff created.
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_hostname: Option<String>,
    #[serde(default)]
    pub local_submission: bool,
    /// The envelope sender, `""` for the null sender.
    pub sender: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    /// Accepted recipients as the sender addressed them, with the decision for each.
    pub recipients: Vec<RecipientMeta>,
    /// Recipients refused in the same transaction (not delivered; the decision is kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedMeta>,
    /// The envelope after handoff's rewrites: every address once.
    pub final_recipients: Vec<String>,
    /// What the addressed recipients became, each distinct list once, as indexes into
    /// `final_recipients` (see [`RecipientMeta::expansion`]). An alias of 1,000 members addressed
    /// 500 times (`all+1@`, `all+2@`, …) is one list here, not 500: the meta stays far below
    /// [`super::format::MAX_META_LEN`] however the sender multiplies the recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expansions: Vec<Vec<u32>>,
    /// The external archive address added to the envelope, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_to: Option<String>,
    /// Policy accounts involved (recipients' accounts and forward chains, and the sender's), for
    /// `archive search --account`.
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub departments: Vec<String>,
    pub policy_generation: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecipientMeta {
    pub address: String,
    /// The rule that decided it (`departed`, `alias`, …).
    pub rule: String,
    /// What it became, written out: records written before `expansion` existed, and messages
    /// handoff created (auto-replies). Every address here is also in `final_recipients`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliver: Vec<String>,
    /// What it became: an index into [`MessageMeta::expansions`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expansion: Option<u32>,
}

impl MessageMeta {
    /// The addresses `r` (one of `recipients`) became, in either form a record may hold. An
    /// index that points nowhere (a damaged record) yields nothing rather than a panic.
    pub fn deliver_of<'a>(&'a self, r: &'a RecipientMeta) -> impl Iterator<Item = &'a str> + 'a {
        let expanded = r
            .expansion
            .and_then(|i| self.expansions.get(i as usize))
            .into_iter()
            .flatten()
            .filter_map(|&i| self.final_recipients.get(i as usize));
        r.deliver.iter().chain(expanded).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusedMeta {
    pub address: String,
    pub reply: String,
}

/// Who searched or exported what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditMeta {
    pub time: String,
    /// The operator: login name and uid of the process.
    pub user: String,
    pub command: String,
    pub query: serde_json::Value,
    pub hits: usize,
}

/// What a prune record's meta holds.
#[derive(Debug, Deserialize)]
pub struct PruneMeta {
    pub removed: Vec<Removed>,
}

/// A segment removed by retention, as the prune record describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Removed {
    pub segment: u64,
    /// The hash the segment's first record linked to.
    pub start_prev: String,
    /// The hash of the segment's last record (its seal).
    pub last: String,
    pub records: u64,
}

/// What an imported record's meta holds: the message facts every message record has (so the
/// scan, the index and retention read it as a [`MessageMeta`]), and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedMeta {
    #[serde(flatten)]
    pub message: MessageMeta,
    pub import: Provenance,
}

/// Where an imported message came from, and how its time was chosen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// `eml`, `mbox`, `maildir` or `imap`.
    pub source: String,
    /// The machine the files were read on, or the IMAP server (`host:port`).
    pub host: String,
    /// The mailbox's owner at the source, when it was named; the IMAP user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_account: Option<String>,
    /// The folder the message is filed under in the archive (`archive search --folder`).
    pub folder: String,
    /// The file the message was read from; for IMAP, the message's URL (RFC 5092:
    /// `imap://user@host:port/MAILBOX;UIDVALIDITY=v/;UID=u`).
    pub path: String,
    /// Where the message starts in an mbox file (its `From ` line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// SHA-256 of the message bytes as archived (the body of this record), in hex: the same
    /// bytes are archived once per account.
    pub sha256: String,
    /// Why the record's time is the file's modification time and not the message's `Date:`
    /// (`missing`, `unparsable`, `before 1990`, `in the future`); absent when it is the Date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_fallback: Option<String>,
    /// Who ran the import (as the audit trail names people).
    pub by: String,
    /// IMAP: the mailbox's UIDVALIDITY and the message's UID in it (RFC 3501 section 2.3.1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uidvalidity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

/// The message facts of a record that holds a message, and its folder (imported records
/// only); `None` for other records and for a meta that does not read.
pub fn message_of(kind: super::Kind, meta: &[u8]) -> Option<(MessageMeta, Option<String>)> {
    match kind {
        super::Kind::Imported => serde_json::from_slice::<ImportedMeta>(meta)
            .ok()
            .map(|i| (i.message, Some(folder_key(&i.import.folder)))),
        k if k.holds_message() => serde_json::from_slice(meta).ok().map(|m| (m, None)),
        _ => None,
    }
}

/// The form folder names are compared in: as written, except `INBOX`, which IMAP names in any
/// case (RFC 3501 section 5.1).
pub fn folder_key(folder: &str) -> String {
    match folder.eq_ignore_ascii_case("inbox") {
        true => "INBOX".to_string(),
        false => folder.to_string(),
    }
}
