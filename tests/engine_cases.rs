//! Runs the decision tables in tests/data/engine/: cases.toml against policy.toml, and
//! idn-cases.toml (internationalized addresses) against idn-policy.toml.

use std::path::Path;

use handoff::address::Address;
use handoff::engine::{self, SenderVerdict, Verdict};
use handoff::policy;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    rcpt: String,
    at: Option<String>,
    verdict: Option<String>,
    deliver: Option<Vec<String>>,
    reply: Option<String>,
    rule: Option<String>,
    decision: Option<String>,
    autoreply: Option<Vec<String>>,
    rewritten: Option<bool>,
    from: Option<String>,
    sender: Option<String>,
}

#[test]
fn decision_table() {
    run_table("policy.toml", "cases.toml", 30);
}

/// Internationalized addresses: every state for an account written with U-labels and reached with
/// A-labels, and the reverse; UTF-8 local parts with aliases and `+detail`.
#[test]
fn idn_decision_table() {
    run_table("idn-policy.toml", "idn-cases.toml", 25);
}

fn run_table(policy_file: &str, cases_file: &str, at_least: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/engine");
    let policy = policy::load(&dir.join(policy_file)).unwrap_or_else(|e| panic!("{e}"));
    let cases: Cases =
        toml::from_str(&std::fs::read_to_string(dir.join(cases_file)).unwrap()).unwrap();
    assert!(
        cases.case.len() >= at_least,
        "the table shrank: {}",
        cases.case.len()
    );
    let mut failures = Vec::new();
    for c in &cases.case {
        let date: jiff::civil::Date = c.at.as_deref().unwrap_or("2026-06-01").parse().unwrap();
        let rcpt = Address::from_envelope(&c.rcpt).unwrap();
        let r = engine::resolve(&policy, &rcpt, date);
        let mut problems = Vec::new();
        if let Some(want) = &c.verdict {
            let (got, reply) = match &r.verdict {
                Verdict::Deliver => ("deliver", None),
                Verdict::Reject(reply) => ("reject", Some(reply.to_string())),
                Verdict::Defer(reply) => ("defer", Some(reply.to_string())),
            };
            if got != want {
                problems.push(format!("verdict {got}, want {want}"));
            }
            if c.reply.is_some() && reply != c.reply {
                problems.push(format!("reply {reply:?}, want {:?}", c.reply));
            }
        }
        if let Some(want) = &c.deliver {
            let got: Vec<&str> = r.deliver.iter().map(Address::as_str).collect();
            if got != *want {
                problems.push(format!("deliver {got:?}, want {want:?}"));
            }
        }
        if let Some(want) = &c.rule
            && r.rule.as_str() != want
        {
            problems.push(format!("rule {}, want {want}", r.rule.as_str()));
        }
        if let Some(want) = &c.decision
            && r.decision().as_str() != want
        {
            problems.push(format!("decision {}, want {want}", r.decision().as_str()));
        }
        let got_auto: Vec<&str> = r.autoreplies.iter().map(|p| p.account.as_str()).collect();
        let want_auto: Vec<&str> = c.autoreply.iter().flatten().map(String::as_str).collect();
        if c.verdict.is_some() && got_auto != want_auto {
            problems.push(format!("autoreplies {got_auto:?}, want {want_auto:?}"));
        }
        if let Some(want) = c.rewritten
            && r.rewritten() != want
        {
            problems.push(format!("rewritten {}, want {want}", r.rewritten()));
        }
        if let Some(want) = &c.sender {
            let from = c.from.as_deref().and_then(Address::from_envelope);
            let got = match engine::check_sender(&policy, from.as_ref(), date) {
                SenderVerdict::Allow => "allow",
                SenderVerdict::Block { reply, .. } => {
                    assert!(reply.to_string().starts_with("550 5.7.1 "), "{reply}");
                    "block"
                }
            };
            if got != want {
                problems.push(format!("sender {got}, want {want}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", c.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.case.len(),
        failures.join("\n")
    );
}
