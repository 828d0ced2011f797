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
    /// The envelope after handoff's rewrites.
    pub final_recipients: Vec<String>,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientMeta {
    pub address: String,
    /// The rule that decided it (`departed`, `alias`, …).
    pub rule: String,
    pub deliver: Vec<String>,
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
