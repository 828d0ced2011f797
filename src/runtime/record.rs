//! The one log line and the counters for each finished message, whichever front end (milter or
//! LMTP/SMTP) it came through, so operators read and graph both modes the same way.

use crate::metrics;
use crate::runtime::escape;
use crate::transaction::{Message, MessageOutcome, Refusal};

/// Logs the decision for one message and counts it. `outcome`: `accepted`, `rejected` or
/// `tempfailed` (the label set of [`metrics::MESSAGES`]); `front_end`: `milter` or `lmtp`.
/// Refused recipients and blocked senders were counted when decided ([`refusal`]); the
/// recipients of a message refused as a whole are not counted again.
pub fn message(msg: &Message, outcome: &'static str, front_end: &'static str) {
    metrics::message(outcome);
    if !matches!(msg.outcome, MessageOutcome::Refuse(_)) {
        for r in &msg.recipients {
            metrics::recipient(r.resolution.decision().as_str(), r.resolution.rule.as_str());
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
    let decisions = decisions(msg);
    if !msg.snapshot.policy.settings.log_addresses {
        // `[log] addresses = false`: the rule and counts, no address.
        tracing::info!(
            queue_id,
            message_id,
            generation,
            front_end,
            outcome,
            recipients = msg.recipients.len() + msg.refused.len(),
            decisions = %decisions,
            "message"
        );
        return;
    }
    tracing::info!(
        queue_id,
        message_id,
        from = msg.sender.as_ref().map_or("<>", |a| a.as_str()),
        generation,
        front_end,
        outcome,
        decisions = %decisions,
        "message"
    );
}

/// The `decisions` field of the message line: per recipient `ADDRESS=RULE->TARGET+TARGET` and
/// `RAW=refused:CODE`, or with `[log] addresses = false` `RULE:DECISION->COUNT` and
/// `refused:CODE`. Addresses come from the wire (a quoted local part may hold spaces, `=`, CR/LF
/// or ESC): each is written as an escaped log value, so it can neither forge a field or a line
/// nor drive the terminal that shows the log.
pub fn decisions(msg: &Message) -> String {
    if !msg.snapshot.policy.settings.log_addresses {
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
        return decisions.join(" ");
    }
    let decisions: Vec<String> = msg
        .recipients
        .iter()
        .map(|r| {
            let to: Vec<_> = r
                .resolution
                .deliver
                .iter()
                .map(|a| escape::field(a.as_str()))
                .collect();
            format!(
                "{}={}->{}",
                escape::field(r.resolution.recipient.as_str()),
                r.resolution.rule.as_str(),
                to.join("+")
            )
        })
        .chain(
            msg.refused
                .iter()
                .map(|(raw, reply)| format!("{}=refused:{}", escape::field(raw), reply.code())),
        )
        .collect();
    decisions.join(" ")
}

/// Counts a refusal when it is decided: a refused recipient by its rule, or a blocked sender.
pub fn refusal(r: Refusal) {
    match r.rule {
        Some(rule) => metrics::recipient(r.decision.as_str(), rule.as_str()),
        None => metrics::sender_blocked(r.decision.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::Policy;
    use crate::runtime::store::PolicyStore;
    use crate::transaction::{Client, Transaction};

    const POLICY: &str = r#"
[domains]
local = ["corp.example"]
[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false
[accounts."dis@corp.example"]
state = "disabled"
"#;

    fn message(rcpts: &[&str]) -> Message {
        let store = PolicyStore::new(Policy::from_text("t.toml", POLICY).unwrap());
        let client = Client {
            hostname: "mx.example.net".into(),
            address: "192.0.2.1".into(),
            port: 25,
            local_submission: false,
        };
        let today = jiff::civil::date(2026, 6, 1);
        let snapshot: Arc<_> = store.snapshot();
        let mut t =
            Transaction::begin(snapshot, &client, "<s@example.net>".into(), None, today).unwrap();
        for r in rcpts {
            t.rcpt(r.to_string(), today);
        }
        t.finish(client, Some("4Xk2".into()))
    }

    #[test]
    fn plain_addresses_read_as_before() {
        let msg = message(&["<gone@corp.example>", "<dis@corp.example>"]);
        assert_eq!(
            decisions(&msg),
            "gone@corp.example=departed->cs@corp.example <dis@corp.example>=refused:550"
        );
    }

    #[test]
    fn hostile_addresses_cannot_forge_fields_lines_or_terminal_codes() {
        let mut msg = message(&[
            "<\"x outcome=accepted\"@corp.example>",
            "<\"a\r\nerror forged\u{1b}[2j\"@corp.example>",
        ]);
        // The raw RCPT argument of a refused recipient is printed as the client sent it.
        let reply = message(&["<dis@corp.example>"]).refused.remove(0).1;
        msg.refused
            .push(("<dis@corp.example> \u{1b}]0;owned\u{7}".into(), reply));
        let line = decisions(&msg);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        let x = r#""\"x outcome=accepted\"@corp.example""#;
        let a = r#""\"a\r\nerror forged\u{1b}[2j\"@corp.example""#;
        let dis = r#""<dis@corp.example> \u{1b}]0;owned\u{7}""#;
        assert_eq!(
            line,
            format!("{x}=unlisted->{x} {a}=unlisted->{a} {dis}=refused:550")
        );
    }
}
