//! The one log line and the counters for each finished message, whichever front end (milter or
//! LMTP/SMTP) it came through, so operators read and graph both modes the same way.

use std::time::Instant;

use crate::engine::{Rule, Verdict};
use crate::runtime::metrics;
use crate::transaction::{Message, MessageOutcome};

/// Logs the decision for one message and counts it. `outcome`: `accepted`, `rejected` or
/// `tempfailed` (the label set of [`metrics::MESSAGES`]); `front_end`: `milter` or `lmtp`.
pub fn message(msg: &Message, outcome: &'static str, started: Instant, front_end: &'static str) {
    metrics::message(outcome, started.elapsed());
    for r in &msg.recipients {
        metrics::recipient(decision_label(
            r.resolution.rule,
            &r.resolution.verdict,
            r.resolution.rewritten(),
        ));
    }
    if msg.client.local_submission {
        // Refused at end of message, not at RCPT (see the milter session docs), so counted here.
        for (_, reply) in &msg.refused {
            metrics::recipient(if reply.code() >= 500 {
                "reject"
            } else {
                "defer"
            });
        }
    }
    if matches!(msg.outcome, MessageOutcome::CannotRewrite) {
        tracing::error!(
            queue_id = msg.queue_id.as_deref().unwrap_or("-"),
            "the MTA did not allow recipient edits (milter actions ADDRCPT/DELRCPT); message tempfailed"
        );
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
        queue_id = msg.queue_id.as_deref().unwrap_or("-"),
        message_id = msg.message_id().as_deref().unwrap_or("-"),
        from = msg.sender.as_ref().map_or("<>", |a| a.as_str()),
        generation = msg.snapshot.generation,
        front_end,
        outcome,
        decisions = %decisions.join(" "),
        "message"
    );
}

/// Counts a refusal answered at MAIL (a blocked sender) or RCPT (a refused recipient).
pub fn refusal(stage: &str, code: u16) {
    match stage {
        "mail" => metrics::sender_blocked(),
        _ => metrics::recipient(if code >= 500 { "reject" } else { "defer" }),
    }
}

/// The recipient decision label for metrics (a small fixed set).
fn decision_label(rule: Rule, verdict: &Verdict, rewritten: bool) -> &'static str {
    match (rule, verdict) {
        (_, Verdict::Reject(_)) => "reject",
        (_, Verdict::Defer(_)) => "defer",
        (Rule::Alias, _) => "alias",
        (Rule::Departed, _) if rewritten => "forward",
        _ => "deliver",
    }
}
