//! The one log line and the counters for each finished message, whichever front end (milter or
//! LMTP/SMTP) it came through, so operators read and graph both modes the same way.

use crate::runtime::metrics;
use crate::transaction::{Message, MessageOutcome, Refusal};

/// Logs the decision for one message and counts it. `outcome`: `accepted`, `rejected` or
/// `tempfailed` (the label set of [`metrics::MESSAGES`]); `front_end`: `milter` or `lmtp`.
/// Refused recipients and blocked senders were counted when decided ([`refusal`]); the
/// recipients of a message refused as a whole are not counted again.
pub fn message(msg: &Message, outcome: &'static str, front_end: &'static str) {
    metrics::message(outcome);
    if !matches!(msg.outcome, MessageOutcome::Refuse(_)) {
        for r in &msg.recipients {
            metrics::recipient(r.resolution.decision(), r.resolution.rule);
        }
    }
    let queue_id = msg.queue_id.as_deref().unwrap_or("-");
    if matches!(msg.outcome, MessageOutcome::CannotRewrite) {
        // The MTA's configuration, not handoff, is at fault: a warning, and the sender retries.
        tracing::warn!(
            queue_id,
            "the MTA did not allow recipient edits (milter actions ADDRCPT/DELRCPT); message tempfailed"
        );
    }
    let message_id = msg.message_id();
    let message_id = message_id.as_deref().unwrap_or("-");
    let generation = msg.snapshot.generation;
    if !msg.snapshot.policy.settings.log_addresses {
        // `[log] addresses = false`: the rule and counts, no address.
        let decisions: Vec<String> = msg
            .recipients
            .iter()
            .map(|r| {
                format!(
                    "{}:{}->{}",
                    r.resolution.rule.as_str(),
                    r.resolution.decision().as_str(),
                    r.resolution.deliver.len()
                )
            })
            .chain(
                msg.refused
                    .iter()
                    .map(|(_, reply)| format!("refused:{}", reply.code())),
            )
            .collect();
        tracing::info!(
            queue_id,
            message_id,
            generation,
            front_end,
            outcome,
            recipients = msg.recipients.len() + msg.refused.len(),
            decisions = %decisions.join(" "),
            "message"
        );
        return;
    }
    let decisions: Vec<String> = msg
        .recipients
        .iter()
        .map(|r| {
            let to: Vec<&str> = r.resolution.deliver.iter().map(|a| a.as_str()).collect();
            format!(
                "{}={}->{}",
                r.resolution.recipient,
                r.resolution.rule.as_str(),
                to.join("+")
            )
        })
        .chain(
            msg.refused
                .iter()
                .map(|(raw, reply)| format!("{raw}=refused:{}", reply.code())),
        )
        .collect();
    tracing::info!(
        queue_id,
        message_id,
        from = msg.sender.as_ref().map_or("<>", |a| a.as_str()),
        generation,
        front_end,
        outcome,
        decisions = %decisions.join(" "),
        "message"
    );
}

/// Counts a refusal when it is decided: a refused recipient by its rule, or a blocked sender.
pub fn refusal(r: Refusal) {
    match r.rule {
        Some(rule) => metrics::recipient(r.decision, rule),
        None => metrics::sender_blocked(),
    }
}
