//! Every metric handoff exports, by name, in one place. Labels come from small fixed sets
//! (states, outcomes, decisions, rules, stages); never addresses.
//!
//! Counters whose label sets are fixed are registered at zero at start-up, so a dashboard shows
//! 0 rather than "no data" and `rate()` sees the first increment.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::autoreply::Suppression;
use crate::engine::{Decision, Rule};
use crate::policy::{Policy, State};

pub const POLICY_RELOADS: &str = "handoff_policy_reloads_total";
pub const POLICY_GENERATION: &str = "handoff_policy_generation";
pub const POLICY_LAST_RELOAD: &str = "handoff_policy_last_reload_success_timestamp_seconds";
pub const POLICY_ACCOUNTS: &str = "handoff_policy_accounts";
pub const POLICY_ALIASES: &str = "handoff_policy_aliases";
pub const MILTER_SESSIONS_ACTIVE: &str = "handoff_milter_sessions_active";
pub const MILTER_SESSIONS: &str = "handoff_milter_sessions_total";
pub const LMTP_SESSIONS_ACTIVE: &str = "handoff_lmtp_sessions_active";
pub const LMTP_SESSIONS: &str = "handoff_lmtp_sessions_total";
pub const NEXT_HOP_ERRORS: &str = "handoff_next_hop_errors_total";
pub const MESSAGES: &str = "handoff_messages_total";
pub const RECIPIENTS: &str = "handoff_recipients_total";
pub const JOURNAL_RECORDS: &str = "handoff_journal_records_total";
pub const JOURNAL_BYTES: &str = "handoff_journal_bytes_total";
pub const JOURNAL_FSYNCS: &str = "handoff_journal_fsyncs_total";
pub const JOURNAL_FSYNC_SECONDS: &str = "handoff_journal_fsync_seconds";
pub const JOURNAL_BATCH_RECORDS: &str = "handoff_journal_batch_records";
pub const JOURNAL_ERRORS: &str = "handoff_journal_errors_total";
pub const AUTOREPLIES_SENT: &str = "handoff_autoreplies_sent_total";
pub const AUTOREPLIES_SUPPRESSED: &str = "handoff_autoreplies_suppressed_total";
pub const AUTOREPLIES_FAILED: &str = "handoff_autoreplies_failed_total";
pub const AUTOREPLIES_QUEUED: &str = "handoff_autoreplies_queued";
pub const AUTOREPLY_MEMORY_PAIRS: &str = "handoff_autoreply_memory_pairs";

/// Why an auto-reply was not sent although it was allowed: the `reason` of
/// [`AUTOREPLIES_FAILED`].
const AUTOREPLY_FAILURES: [&str; 4] = [
    "journal",
    "relay_rejected",
    "relay_unavailable",
    "relay_no_smtputf8",
];

/// Installs the process-wide Prometheus recorder. Call once, at start-up.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let mut builder = PrometheusBuilder::new();
    for name in [MILTER_STAGE_SECONDS, JOURNAL_FSYNC_SECONDS] {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.into()), &LATENCY_BUCKETS)?;
    }
    builder = builder
        .set_buckets_for_metric(Matcher::Full(JOURNAL_BATCH_RECORDS.into()), &BATCH_BUCKETS)?;
    let handle = builder.install_recorder()?;
    describe_counter!(
        POLICY_RELOADS,
        "Policy reload attempts by result (applied, unchanged, refused)."
    );
    describe_gauge!(
        POLICY_GENERATION,
        "Generation of the policy in force (1 at start-up, +1 per applied reload)."
    );
    describe_gauge!(
        POLICY_LAST_RELOAD,
        "Unix time of the last successful policy load."
    );
    describe_gauge!(
        POLICY_ACCOUNTS,
        "Accounts in the policy in force, by configured state."
    );
    describe_gauge!(POLICY_ALIASES, "Aliases in the policy in force.");
    describe_gauge!(MILTER_SESSIONS_ACTIVE, "Milter connections open now.");
    describe_counter!(MILTER_SESSIONS, "Milter connections accepted.");
    describe_gauge!(
        LMTP_SESSIONS_ACTIVE,
        "LMTP/SMTP content-filter connections open now."
    );
    describe_counter!(
        LMTP_SESSIONS,
        "LMTP/SMTP content-filter connections accepted."
    );
    describe_counter!(
        NEXT_HOP_ERRORS,
        "Messages the content filter could not hand to its next hop (answered 4xx)."
    );
    describe_counter!(
        MESSAGES,
        "Messages at end of data, by outcome (accepted, rejected, tempfailed)."
    );
    describe_counter!(
        RECIPIENTS,
        "Recipients by decision (deliver, forward, alias, reject_disabled, reject_deleted, defer_frozen; block_sender once per refused sender)."
    );
    describe_counter!(
        JOURNAL_RECORDS,
        "Records made durable in the archive journal."
    );
    describe_counter!(JOURNAL_BYTES, "Bytes made durable in the archive journal.");
    describe_counter!(
        JOURNAL_FSYNCS,
        "fsync calls of the journal writer (one per batch)."
    );
    describe_histogram!(
        JOURNAL_FSYNC_SECONDS,
        "Duration of each journal fsync, in seconds."
    );
    describe_histogram!(
        JOURNAL_BATCH_RECORDS,
        "Records per journal batch (group commit)."
    );
    describe_counter!(
        JOURNAL_ERRORS,
        "Journal batches that failed (their messages were tempfailed)."
    );
    counter!(JOURNAL_ERRORS).absolute(0);
    describe_counter!(AUTOREPLIES_SENT, "Auto-replies the relay accepted.");
    describe_counter!(
        AUTOREPLIES_SUPPRESSED,
        "Auto-replies not sent, by the rule that forbade them (null_sender, mailing_list, already_replied, store_unavailable, ...)."
    );
    describe_counter!(
        AUTOREPLIES_FAILED,
        "Auto-replies allowed but not sent: journal (the journal refused it), relay_rejected (5xx), relay_unavailable (gave up retrying), relay_no_smtputf8 (the reply needs SMTPUTF8, the relay does not offer it)."
    );
    describe_gauge!(
        AUTOREPLIES_QUEUED,
        "Auto-replies waiting to be sent or being sent (retries included)."
    );
    describe_gauge!(
        AUTOREPLY_MEMORY_PAIRS,
        "(account, sender) pairs the embedded auto-reply memory holds."
    );
    for result in ["applied", "unchanged", "refused"] {
        counter!(POLICY_RELOADS, "result" => result).absolute(0);
    }
    counter!(AUTOREPLIES_SENT).absolute(0);
    for reason in Suppression::ALL {
        counter!(AUTOREPLIES_SUPPRESSED, "reason" => reason.as_str()).absolute(0);
    }
    for reason in AUTOREPLY_FAILURES {
        counter!(AUTOREPLIES_FAILED, "reason" => reason).absolute(0);
    }
    gauge!(AUTOREPLIES_QUEUED).set(0.0);
    for outcome in OUTCOMES {
        counter!(MESSAGES, "outcome" => outcome).absolute(0);
    }
    for decision in Decision::ALL {
        counter!(RECIPIENTS, "decision" => decision.as_str()).absolute(0);
    }
    gauge!(MILTER_SESSIONS_ACTIVE).set(0.0);
    counter!(MILTER_SESSIONS).absolute(0);
    install_operations();
    // A second install (tests) keeps the first handles, which point at the first recorder.
    let _ = HOT.set(Hot::register());
    Ok(handle)
}

/// The outcomes of [`MESSAGES`].
const OUTCOMES: [&str; 3] = ["accepted", "rejected", "tempfailed"];

/// Handles on the metrics recorded for every message and session, registered once at install.
/// The macros look a metric up by name and labels on every call, which allocates and hashes:
/// a dozen times per message, a tenth of the milter's own work before these were kept.
struct Hot {
    milter_sessions: Counter,
    milter_active: Gauge,
    lmtp_sessions: Counter,
    lmtp_active: Gauge,
    /// In [`OUTCOMES`] order.
    messages: [Counter; 3],
    /// In [`Decision::ALL`] order.
    recipients: Vec<Counter>,
    /// In [`RULES`] order.
    rule_hits: Vec<Counter>,
    /// In [`STAGES`] order.
    stages: Vec<Histogram>,
    autoreplies_queued: Gauge,
    /// In [`Suppression::ALL`] order.
    suppressed: Vec<Counter>,
    journal_records: Counter,
    journal_bytes: Counter,
    journal_fsyncs: Counter,
    journal_fsync_seconds: Histogram,
    journal_batch_records: Histogram,
}

static HOT: OnceLock<Hot> = OnceLock::new();

impl Hot {
    fn register() -> Hot {
        Hot {
            milter_sessions: counter!(MILTER_SESSIONS),
            milter_active: gauge!(MILTER_SESSIONS_ACTIVE),
            lmtp_sessions: counter!(LMTP_SESSIONS),
            lmtp_active: gauge!(LMTP_SESSIONS_ACTIVE),
            messages: OUTCOMES.map(|outcome| counter!(MESSAGES, "outcome" => outcome)),
            recipients: Decision::ALL
                .iter()
                .map(|d| counter!(RECIPIENTS, "decision" => d.as_str()))
                .collect(),
            rule_hits: RULES
                .iter()
                .map(|r| counter!(RULE_HITS, "rule" => r.as_str()))
                .collect(),
            stages: STAGES
                .iter()
                .map(|&stage| histogram!(MILTER_STAGE_SECONDS, "stage" => stage))
                .collect(),
            autoreplies_queued: gauge!(AUTOREPLIES_QUEUED),
            suppressed: Suppression::ALL
                .iter()
                .map(|r| counter!(AUTOREPLIES_SUPPRESSED, "reason" => r.as_str()))
                .collect(),
            journal_records: counter!(JOURNAL_RECORDS),
            journal_bytes: counter!(JOURNAL_BYTES),
            journal_fsyncs: counter!(JOURNAL_FSYNCS),
            journal_fsync_seconds: histogram!(JOURNAL_FSYNC_SECONDS),
            journal_batch_records: histogram!(JOURNAL_BATCH_RECORDS),
        }
    }
}

/// The handle for `label` among `handles`, registered in the order of `labels`; `None` before
/// [`install`] (then the macros record, to whatever recorder is installed) or for a label
/// outside the set.
fn pick<'h, L: PartialEq, T>(
    handles: impl FnOnce(&'static Hot) -> &'h [T],
    labels: &[L],
    label: L,
) -> Option<&'h T> {
    let i = labels.iter().position(|l| *l == label)?;
    handles(HOT.get()?).get(i)
}

/// Publishes the gauges that describe the policy now in force.
pub fn policy_in_force(policy: &Policy, generation: u64, loaded_at: jiff::Timestamp) {
    gauge!(POLICY_GENERATION).set(generation as f64);
    gauge!(POLICY_LAST_RELOAD).set(loaded_at.as_millisecond() as f64 / 1000.0);
    for (state, n) in policy.accounts_by_state() {
        gauge!(POLICY_ACCOUNTS, "state" => state_label(state)).set(n as f64);
    }
    gauge!(POLICY_ALIASES).set(policy.aliases.len() as f64);
}

pub fn milter_session_started() {
    match HOT.get() {
        Some(h) => {
            h.milter_sessions.increment(1);
            h.milter_active.increment(1.0);
        }
        None => {
            counter!(MILTER_SESSIONS).increment(1);
            gauge!(MILTER_SESSIONS_ACTIVE).increment(1.0);
        }
    }
}

pub fn milter_session_ended() {
    match HOT.get() {
        Some(h) => h.milter_active.decrement(1.0),
        None => gauge!(MILTER_SESSIONS_ACTIVE).decrement(1.0),
    }
}

pub fn lmtp_session_started() {
    match HOT.get() {
        Some(h) => {
            h.lmtp_sessions.increment(1);
            h.lmtp_active.increment(1.0);
        }
        None => {
            counter!(LMTP_SESSIONS).increment(1);
            gauge!(LMTP_SESSIONS_ACTIVE).increment(1.0);
        }
    }
}

pub fn lmtp_session_ended() {
    match HOT.get() {
        Some(h) => h.lmtp_active.decrement(1.0),
        None => gauge!(LMTP_SESSIONS_ACTIVE).decrement(1.0),
    }
}

pub fn next_hop_error() {
    counter!(NEXT_HOP_ERRORS).increment(1);
}

pub fn message(outcome: &'static str) {
    match pick(|h| &h.messages, &OUTCOMES, outcome) {
        Some(c) => c.increment(1),
        None => counter!(MESSAGES, "outcome" => outcome).increment(1),
    }
}

/// One recipient decided by `rule`.
pub fn recipient(decision: Decision, rule: Rule) {
    match pick(|h| &h.recipients, &Decision::ALL, decision) {
        Some(c) => c.increment(1),
        None => counter!(RECIPIENTS, "decision" => decision.as_str()).increment(1),
    }
    match pick(|h| &h.rule_hits, &RULES, rule) {
        Some(c) => c.increment(1),
        None => counter!(RULE_HITS, "rule" => rule.as_str()).increment(1),
    }
}

/// A transaction refused because its sender may not send.
pub fn sender_blocked() {
    counter!(RECIPIENTS, "decision" => Decision::BlockSender.as_str()).increment(1);
}

pub fn autoreply_sent() {
    counter!(AUTOREPLIES_SENT).increment(1);
}

pub fn autoreply_suppressed(reason: Suppression) {
    match pick(|h| &h.suppressed, &Suppression::ALL, reason) {
        Some(c) => c.increment(1),
        None => counter!(AUTOREPLIES_SUPPRESSED, "reason" => reason.as_str()).increment(1),
    }
}

/// `reason` is one of `journal`, `relay_rejected`, `relay_unavailable`, `relay_no_smtputf8`.
pub fn autoreply_failed(reason: &'static str) {
    debug_assert!(AUTOREPLY_FAILURES.contains(&reason), "{reason}");
    counter!(AUTOREPLIES_FAILED, "reason" => reason).increment(1);
}

pub fn autoreply_queued(delta: f64) {
    match HOT.get() {
        Some(h) => h.autoreplies_queued.increment(delta),
        None => gauge!(AUTOREPLIES_QUEUED).increment(delta),
    }
}

pub fn autoreply_memory_pairs(n: usize) {
    gauge!(AUTOREPLY_MEMORY_PAIRS).set(n as f64);
}

pub fn journal_batch(records: usize, bytes: u64, fsync: Duration) {
    match HOT.get() {
        Some(h) => {
            h.journal_records.increment(records as u64);
            h.journal_bytes.increment(bytes);
            h.journal_fsyncs.increment(1);
            h.journal_fsync_seconds.record(fsync.as_secs_f64());
            h.journal_batch_records.record(records as f64);
        }
        None => {
            counter!(JOURNAL_RECORDS).increment(records as u64);
            counter!(JOURNAL_BYTES).increment(bytes);
            counter!(JOURNAL_FSYNCS).increment(1);
            histogram!(JOURNAL_FSYNC_SECONDS).record(fsync.as_secs_f64());
            histogram!(JOURNAL_BATCH_RECORDS).record(records as f64);
        }
    }
}

pub fn journal_error() {
    counter!(JOURNAL_ERRORS).increment(1);
}

pub fn reload(result: &'static str) {
    counter!(POLICY_RELOADS, "result" => result).increment(1);
}

fn state_label(state: State) -> &'static str {
    state.as_str()
}

// --- Operations: milter stage latencies, rule hits, LMTP sessions ------------------------
// (names, buckets, registration and recording in one block)

/// Time from receiving a milter command to sending its reply, by `stage` (mail, rcpt, eom); eom
/// includes making the message durable in the journal.
pub const MILTER_STAGE_SECONDS: &str = "handoff_milter_stage_seconds";
/// Recipients decided, by the rule that decided them ([`Rule::as_str`]).
pub const RULE_HITS: &str = "handoff_rule_hits_total";

/// The milter stages whose latency is measured.
pub const STAGES: [&str; 3] = ["mail", "rcpt", "eom"];

const RULES: [Rule; 8] = [
    Rule::NotLocal,
    Rule::Unlisted,
    Rule::Active,
    Rule::Alias,
    Rule::Departed,
    Rule::Disabled,
    Rule::Frozen,
    Rule::Deleted,
];

/// Seconds. A milter reply is due within Postfix's milter_command_timeout (30 s) and the end of
/// message within milter_content_timeout (300 s); fsyncs take 0.1 ms on a battery-backed cache
/// and tens of ms on a busy disk.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Descriptions and zero values of the operations block.
fn install_operations() {
    describe_histogram!(
        MILTER_STAGE_SECONDS,
        "Time from receiving a milter command to sending its reply, by stage (mail, rcpt, eom), in seconds."
    );
    describe_counter!(
        RULE_HITS,
        "Recipients decided, by the rule that decided them (not_local, unlisted, active, alias, departed, disabled, frozen, deleted)."
    );
    describe_gauge!(LMTP_SESSIONS_ACTIVE, "LMTP connections open now.");
    for rule in RULES {
        counter!(RULE_HITS, "rule" => rule.as_str()).absolute(0);
    }
    gauge!(LMTP_SESSIONS_ACTIVE).set(0.0);
}

/// How long a milter command of `stage` (one of [`STAGES`]) waited for its reply.
pub fn milter_stage(stage: &'static str, took: Duration) {
    match pick(|h| &h.stages, &STAGES, stage) {
        Some(h) => h.record(took.as_secs_f64()),
        None => histogram!(MILTER_STAGE_SECONDS, "stage" => stage).record(took.as_secs_f64()),
    }
}
