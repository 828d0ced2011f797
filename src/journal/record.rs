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
