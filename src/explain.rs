//! `handoff explain`: the decision for one address, step by step, for people or as JSON.

use std::fmt::Write as _;

use jiff::civil::Date;
use serde::Serialize;

use crate::address::Address;
use crate::engine::{self, Resolution, SenderVerdict, Step, Verdict};
use crate::policy::Policy;

/// Everything `explain` reports.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub date: Date,
    #[serde(flatten)]
    pub resolution: Resolution,
    /// Present when a sender was given.
    pub sender: Option<SenderCheck>,
}

#[derive(Debug, Serialize)]
pub struct SenderCheck {
    pub address: Option<Address>,
    pub verdict: SenderVerdict,
}

pub fn explain(
    policy: &Policy,
    recipient: &Address,
    sender: Option<&str>,
    date: Date,
) -> Explanation {
    let resolution = engine::resolve(policy, recipient, date);
    let sender = sender.map(|s| {
        let address = Address::from_envelope(s);
        let verdict = engine::check_sender(policy, address.as_ref(), date);
        SenderCheck { address, verdict }
    });
    Explanation {
        date,
        resolution,
        sender,
    }
}

impl Explanation {
    /// The human-readable form.
    pub fn render(&self, policy: &Policy) -> String {
        let r = &self.resolution;
        let mut out = String::new();
        // The lookup form writes IDN domains as A-labels; say which domain that is for people.
        match r.recipient.unicode() {
            u if u != r.recipient.as_str() => {
                let _ = writeln!(out, "{} ({u}) on {}", r.recipient, self.date);
            }
            _ => {
                let _ = writeln!(out, "{} on {}", r.recipient, self.date);
            }
        }
        for (i, step) in r.steps.iter().enumerate() {
            let _ = writeln!(out, "  {:>2}. {}", i + 1, describe(step, policy));
        }
        let _ = match &r.verdict {
            Verdict::Deliver => {
                let to: Vec<&str> = r.deliver.iter().map(Address::as_str).collect();
                writeln!(out, "result: deliver to {}", to.join(", "))
            }
            Verdict::Reject(reply) => writeln!(out, "result: reject at RCPT: {reply}"),
            Verdict::Defer(reply) => {
                writeln!(out, "result: defer at RCPT (the sender retries): {reply}")
            }
        };
        if r.verdict == Verdict::Deliver {
            let rewrite = match (r.rewritten(), r.keeps_original()) {
                (false, _) => "envelope unchanged",
                (true, true) => "envelope rewritten, original recipient kept",
                (true, false) => "envelope rewritten, original recipient removed",
            };
            let _ = writeln!(out, "        {rewrite}");
        }
        for plan in &r.autoreplies {
            let _ = writeln!(
                out,
                "auto-reply: template `{}` for {} (subject to RFC 3834 checks)",
                plan.template, plan.account
            );
        }
        if let Some(s) = &self.sender {
            let who = s
                .address
                .as_ref()
                .map_or("<>".to_string(), |a| a.to_string());
            let _ = match &s.verdict {
                SenderVerdict::Allow => writeln!(out, "sender {who}: may send"),
                SenderVerdict::Block { state, reply, .. } => {
                    writeln!(out, "sender {who}: blocked ({state}): {reply}")
                }
            };
        }
        out
    }
}

fn describe(step: &Step, policy: &Policy) -> String {
    let at = |a: &Address| {
        policy
            .lookup(a)
            .map(|hit| match hit.node {
                crate::policy::Node::Account(i) => {
                    policy.sources.describe(&policy.accounts[i].origin)
                }
                crate::policy::Node::Alias(i) => policy.sources.describe(&policy.aliases[i].origin),
            })
            .unwrap_or_default()
    };
    match step {
        Step::NotLocal { address } => format!("{address}: not a local domain, passed as addressed"),
        Step::Unlisted { address } => format!("{address}: no policy entry, delivered as addressed"),
        Step::Detail { address, base } => {
            format!("{address}: matches {base} (recipient delimiter)")
        }
        Step::Alias { address, members } => {
            let m: Vec<&str> = members.iter().map(Address::as_str).collect();
            format!("{address}: alias ({}) -> {}", at(address), m.join(", "))
        }
        Step::State {
            address,
            state,
            configured,
            until,
        } => match until {
            Some(d) if state != configured => {
                format!(
                    "{address}: {state} ({}; configured {configured}, switched on {d})",
                    at(address)
                )
            }
            _ => format!("{address}: {state} ({})", at(address)),
        },
        Step::KeepCopy { address } => format!("keep a copy in {address}"),
        Step::NoCopy { address } => format!("no copy kept in {address}"),
        Step::Forward { from, to } => format!("{from}: forward to {to}"),
        Step::Deliver { address } => format!("deliver to {address}"),
        Step::Refuse { address, reply } => format!("{address}: refused: {reply}"),
        Step::Dropped { address, reply } => {
            format!("{address}: dropped from the expansion ({reply})")
        }
        Step::AutoReply { account, template } => {
            format!("{account}: auto-reply with template `{template}`")
        }
        Step::LoopMarked { account } => {
            format!("{account}: already forwarded once (loop marker): kept, not forwarded again")
        }
    }
}
