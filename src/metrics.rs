//! Every metric handoff exports, by name, in one place. Labels come from small fixed sets
//! (states, outcomes, decisions, rules, stages); never addresses.
//!
//! This module imports nothing of the domain, so that the journal, the auto-reply worker and the
//! front ends can all record here without importing one another through it. A label that names
//! a domain value (an account's state, a recipient's decision and rule, why an auto-reply was
//! suppressed) is that type's own `as_str`, handed in by the caller as a `&'static str`; the
//! sets registered at start-up come the same way, in [`Labels`].
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

/// The label values of the domain's fixed sets, each the type's own `as_str`, registered at zero
/// by [`install`].
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    /// Every `decision` of [`RECIPIENTS`] (the engine's `Decision`).
    pub decisions: &'a [&'static str],
    /// Every `rule` of [`RULE_HITS`] (the engine's `Rule`).
    pub rules: &'a [&'static str],
    /// Every `reason` of [`AUTOREPLIES_SUPPRESSED`] (the auto-reply rules' `Suppression`).
    pub suppressions: &'a [&'static str],
}

/// Installs the process-wide Prometheus recorder. Call once, at start-up.
pub fn install(
    labels: &Labels<'_>,
) -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let mut builder = PrometheusBuilder::new();
    for name in [MILTER_STAGE_SECONDS, JOURNAL_FSYNC_SECONDS] {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.into()), &LATENCY_BUCKETS)?;
    }
    builder = builder
        .set_buckets_for_metric(Matcher::Full(JOURNAL_BATCH_RECORDS.into()), &BATCH_BUCKETS)?;
    builder = builder
        .set_buckets_for_metric(Matcher::Full(INDEX_SEARCH_SECONDS.into()), &SEARCH_BUCKETS)?;
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
        "Recipients by decision (deliver, forward, alias, reject_disabled, reject_deleted, defer_frozen, reject_srs; block_sender once per refused sender)."
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
    for &reason in labels.suppressions {
        counter!(AUTOREPLIES_SUPPRESSED, "reason" => reason).absolute(0);
    }
    for reason in AUTOREPLY_FAILURES {
        counter!(AUTOREPLIES_FAILED, "reason" => reason).absolute(0);
    }
    gauge!(AUTOREPLIES_QUEUED).set(0.0);
    for outcome in OUTCOMES {
        counter!(MESSAGES, "outcome" => outcome).absolute(0);
    }
    for &decision in labels.decisions {
        counter!(RECIPIENTS, "decision" => decision).absolute(0);
    }
    gauge!(MILTER_SESSIONS_ACTIVE).set(0.0);
    counter!(MILTER_SESSIONS).absolute(0);
    install_operations(labels.rules);
    install_index();
    // A second install (tests) keeps the first handles, which point at the first recorder.
    let _ = HOT.set(Hot::register(labels));
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
    /// By outcome ([`OUTCOMES`]).
    messages: Vec<(&'static str, Counter)>,
    /// By decision ([`Labels::decisions`]).
    recipients: Vec<(&'static str, Counter)>,
    /// By rule ([`Labels::rules`]).
    rule_hits: Vec<(&'static str, Counter)>,
    /// By stage ([`STAGES`]).
    stages: Vec<(&'static str, Histogram)>,
    autoreplies_queued: Gauge,
    /// By reason ([`Labels::suppressions`]).
    suppressed: Vec<(&'static str, Counter)>,
    journal_records: Counter,
    journal_bytes: Counter,
    journal_fsyncs: Counter,
    journal_fsync_seconds: Histogram,
    journal_batch_records: Histogram,
}

static HOT: OnceLock<Hot> = OnceLock::new();

impl Hot {
    fn register(labels: &Labels<'_>) -> Hot {
        fn each<T>(
            labels: &[&'static str],
            handle: impl Fn(&'static str) -> T,
        ) -> Vec<(&'static str, T)> {
            labels.iter().map(|&l| (l, handle(l))).collect()
        }
        Hot {
            milter_sessions: counter!(MILTER_SESSIONS),
            milter_active: gauge!(MILTER_SESSIONS_ACTIVE),
            lmtp_sessions: counter!(LMTP_SESSIONS),
            lmtp_active: gauge!(LMTP_SESSIONS_ACTIVE),
            messages: each(
                &OUTCOMES,
                |outcome| counter!(MESSAGES, "outcome" => outcome),
            ),
            recipients: each(
                labels.decisions,
                |decision| counter!(RECIPIENTS, "decision" => decision),
            ),
            rule_hits: each(labels.rules, |rule| counter!(RULE_HITS, "rule" => rule)),
            stages: each(
                &STAGES,
                |stage| histogram!(MILTER_STAGE_SECONDS, "stage" => stage),
            ),
            autoreplies_queued: gauge!(AUTOREPLIES_QUEUED),
            suppressed: each(
                labels.suppressions,
                |reason| counter!(AUTOREPLIES_SUPPRESSED, "reason" => reason),
            ),
            journal_records: counter!(JOURNAL_RECORDS),
            journal_bytes: counter!(JOURNAL_BYTES),
            journal_fsyncs: counter!(JOURNAL_FSYNCS),
            journal_fsync_seconds: histogram!(JOURNAL_FSYNC_SECONDS),
            journal_batch_records: histogram!(JOURNAL_BATCH_RECORDS),
        }
    }
}

/// The handle registered for `label` among `handles`; `None` before [`install`] (then the
/// macros record, to whatever recorder is installed) or for a label outside the set.
fn pick<T>(
    handles: impl FnOnce(&'static Hot) -> &'static [(&'static str, T)],
    label: &str,
) -> Option<&'static T> {
    handles(HOT.get()?)
        .iter()
        .find(|(l, _)| *l == label)
        .map(|(_, h)| h)
}

/// Publishes the gauges that describe the policy now in force: its accounts by configured state
/// (the policy's `State::as_str`, every state), its aliases, its generation and when it was
/// loaded.
pub fn policy_in_force(
    accounts_by_state: &[(&'static str, usize)],
    aliases: usize,
    generation: u64,
    loaded_at: jiff::Timestamp,
) {
    gauge!(POLICY_GENERATION).set(generation as f64);
    gauge!(POLICY_LAST_RELOAD).set(loaded_at.as_millisecond() as f64 / 1000.0);
    for &(state, n) in accounts_by_state {
        gauge!(POLICY_ACCOUNTS, "state" => state).set(n as f64);
    }
    gauge!(POLICY_ALIASES).set(aliases as f64);
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
    match pick(|h| &h.messages, outcome) {
        Some(c) => c.increment(1),
        None => counter!(MESSAGES, "outcome" => outcome).increment(1),
    }
}

/// One recipient with `decision` (one of [`Labels::decisions`]), decided by `rule` (one of
/// [`Labels::rules`]).
pub fn recipient(decision: &'static str, rule: &'static str) {
    count_decision(decision);
    match pick(|h| &h.rule_hits, rule) {
        Some(c) => c.increment(1),
        None => counter!(RULE_HITS, "rule" => rule).increment(1),
    }
}

/// A transaction refused because its sender may not send: `decision` is the engine's
/// `block_sender`, and no rule is counted.
pub fn sender_blocked(decision: &'static str) {
    count_decision(decision);
}

fn count_decision(decision: &'static str) {
    match pick(|h| &h.recipients, decision) {
        Some(c) => c.increment(1),
        None => counter!(RECIPIENTS, "decision" => decision).increment(1),
    }
}

pub fn autoreply_sent() {
    counter!(AUTOREPLIES_SENT).increment(1);
}

/// `reason` is one of [`Labels::suppressions`].
pub fn autoreply_suppressed(reason: &'static str) {
    match pick(|h| &h.suppressed, reason) {
        Some(c) => c.increment(1),
        None => counter!(AUTOREPLIES_SUPPRESSED, "reason" => reason).increment(1),
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

// --- Operations: milter stage latencies, rule hits, LMTP sessions ------------------------
// (names, buckets, registration and recording in one block)

/// Time from receiving a milter command to sending its reply, by `stage` (mail, rcpt, eom); eom
/// includes making the message durable in the journal.
pub const MILTER_STAGE_SECONDS: &str = "handoff_milter_stage_seconds";
/// Recipients decided, by the rule that decided them ([`Labels::rules`]).
pub const RULE_HITS: &str = "handoff_rule_hits_total";

/// The milter stages whose latency is measured.
pub const STAGES: [&str; 3] = ["mail", "rcpt", "eom"];

/// Seconds. A milter reply is due within Postfix's milter_command_timeout (30 s) and the end of
/// message within milter_content_timeout (300 s); fsyncs take 0.1 ms on a battery-backed cache
/// and tens of ms on a busy disk.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Descriptions and zero values of the operations block.
fn install_operations(rules: &[&'static str]) {
    describe_histogram!(
        MILTER_STAGE_SECONDS,
        "Time from receiving a milter command to sending its reply, by stage (mail, rcpt, eom), in seconds."
    );
    describe_counter!(
        RULE_HITS,
        "Recipients decided, by the rule that decided them (not_local, unlisted, active, alias, departed, disabled, frozen, deleted)."
    );
    describe_gauge!(LMTP_SESSIONS_ACTIVE, "LMTP connections open now.");
    for &rule in rules {
        counter!(RULE_HITS, "rule" => rule).absolute(0);
    }
    gauge!(LMTP_SESSIONS_ACTIVE).set(0.0);
}

/// How long a milter command of `stage` (one of [`STAGES`]) waited for its reply.
pub fn milter_stage(stage: &'static str, took: Duration) {
    match pick(|h| &h.stages, stage) {
        Some(h) => h.record(took.as_secs_f64()),
        None => histogram!(MILTER_STAGE_SECONDS, "stage" => stage).record(took.as_secs_f64()),
    }
}

// --- The archive index: the daemon's indexer, and searches answered by the index ----------

/// Documents the daemon's indexer added to the archive index (messages made searchable).
pub const INDEX_RECORDS: &str = "handoff_index_records_total";
/// Journal records that are durable but not yet in the index's last commit.
pub const INDEX_LAG_RECORDS: &str = "handoff_index_lag_records";
/// How long the oldest durable record not yet in the index has waited for it, in seconds.
pub const INDEX_LAG_SECONDS: &str = "handoff_index_lag_seconds";
/// Failed attempts to open or write the index (each retried with backoff; mail flows on);
/// an attempt that found the index held by another process is not one.
pub const INDEX_ERRORS: &str = "handoff_index_errors_total";
/// 1 while the indexer's last attempt succeeded (or it has not tried yet), 0 while it fails
/// or another process holds the index; absent when the indexer is off.
pub const INDEX_WRITABLE: &str = "handoff_index_writable";
/// Time to answer a search from the index, in the process that ran it: searches that the
/// daemon serves (none yet; the web console's will). `handoff archive search` runs in its own
/// process, which nothing scrapes.
pub const INDEX_SEARCH_SECONDS: &str = "handoff_index_search_seconds";

/// Seconds: the goal at 1M messages is p50 ≤ 50 ms and p99 ≤ 250 ms.
const SEARCH_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn install_index() {
    describe_counter!(
        INDEX_RECORDS,
        "Messages the daemon's indexer added to the archive index."
    );
    describe_gauge!(
        INDEX_LAG_RECORDS,
        "Journal records made durable but not yet searchable in the archive index."
    );
    describe_gauge!(
        INDEX_LAG_SECONDS,
        "Seconds the oldest durable journal record has waited to become searchable (0 when the index is caught up)."
    );
    describe_counter!(
        INDEX_ERRORS,
        "Failed attempts to open or write the archive index (retried; mail is not affected)."
    );
    describe_gauge!(
        INDEX_WRITABLE,
        "1 while the archive indexer works, 0 while it fails and retries."
    );
    describe_histogram!(
        INDEX_SEARCH_SECONDS,
        "Time to answer a search from the archive index in this process, in seconds."
    );
    counter!(INDEX_RECORDS).absolute(0);
    counter!(INDEX_ERRORS).absolute(0);
}

/// The indexer is on: its gauges start at zero (a dashboard shows 0, not "no data").
pub fn index_started() {
    gauge!(INDEX_LAG_RECORDS).set(0.0);
    gauge!(INDEX_LAG_SECONDS).set(0.0);
    gauge!(INDEX_WRITABLE).set(1.0);
}

/// A pass of the indexer added `documents`.
pub fn index_added(documents: u64) {
    counter!(INDEX_RECORDS).increment(documents);
}

/// How far the index is behind what the journal made durable.
pub fn index_lag(records: u64, seconds: f64) {
    gauge!(INDEX_LAG_RECORDS).set(records as f64);
    gauge!(INDEX_LAG_SECONDS).set(seconds);
}

/// An attempt to open or write the index failed (`false`), or one succeeded (`true`).
pub fn index_outcome(ok: bool) {
    if !ok {
        counter!(INDEX_ERRORS).increment(1);
    }
    gauge!(INDEX_WRITABLE).set(if ok { 1.0 } else { 0.0 });
}

/// Another process holds the index (a search or prune catching it up, a reindex): not
/// writable meanwhile, and no error.
pub fn index_held() {
    gauge!(INDEX_WRITABLE).set(0.0);
}

/// A search answered from the index took `took`.
pub fn index_search(took: Duration) {
    histogram!(INDEX_SEARCH_SECONDS).record(took.as_secs_f64());
}
