//! The operator's view through a real Postfix: one message per decision, then `/metrics` must
//! have moved by exactly what was sent; `/healthz`, `/readyz` and `/status` answer; a reload
//! moves the policy metrics; `[log] addresses = false` keeps addresses out of the log line.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::daemon::{Daemon, wait_for};
use crate::e2e_milter::milter_lines;
use crate::support::{Lab, LabConfig, send, send_authenticated};

const POLICY: &str = r#"
[domains]
local = ["corp.example"]

[aliases]
"sales@corp.example" = ["alice@corp.example", "bob@corp.example"]

[accounts."alice@corp.example"]
state = "active"

[accounts."keep@corp.example"]
state = "departed"
successor = "cs@corp.example"

[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false

[accounts."dis@corp.example"]
state = "disabled"

[accounts."del@corp.example"]
state = "deleted"

[accounts."frz@corp.example"]
state = "frozen"
"#;

const TIMEOUT: Duration = Duration::from_secs(30);

fn lab_for(d: &Daemon) -> Lab {
    let mut config = LabConfig::default().sasl_user("dis@corp.example", "secret");
    for line in milter_lines(d.milter_port) {
        config = config.main_cf_line(line);
    }
    Lab::start(config)
}

fn message(subject: &str) -> String {
    format!(
        "From: <sender@example.net>\r\nTo: <x@corp.example>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.net>\r\n\r\nHello.\r\n"
    )
}

/// Every sample of a scrape, `name{labels}` → value.
fn scrape(d: &Daemon) -> BTreeMap<String, f64> {
    let (status, body) = d.http_get("/metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(m: &BTreeMap<String, f64>, sample: &str) -> f64 {
    *m.get(sample)
        .unwrap_or_else(|| panic!("no sample `{sample}` in the scrape:\n{m:#?}"))
}

/// The label values of every metric with a fixed label set, as `/metrics` shows them before any
/// mail: the names the Grafana dashboard and operators' alerts query. They are the domain types'
/// own names, handed to the metrics module at start-up; a value renamed, dropped or added must
/// show here.
#[test]
fn every_fixed_label_set_is_registered_at_start_up() {
    let d = Daemon::start(POLICY);
    let before = scrape(&d);
    let labels = |name: &str, label: &str| -> Vec<String> {
        let prefix = format!("{name}{{{label}=\"");
        let mut values: Vec<String> = before
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix("\"}"))
            .map(str::to_string)
            .collect();
        values.sort();
        values
    };
    let sorted = |v: &[&str]| {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    for (name, label, expected) in [
        (
            "handoff_recipients_total",
            "decision",
            &[
                "deliver",
                "forward",
                "alias",
                "reject_disabled",
                "reject_deleted",
                "defer_frozen",
                "block_sender",
                "reject_srs",
            ][..],
        ),
        (
            "handoff_rule_hits_total",
            "rule",
            &[
                "not_local",
                "unlisted",
                "active",
                "alias",
                "departed",
                "disabled",
                "frozen",
                "deleted",
            ],
        ),
        (
            "handoff_autoreplies_suppressed_total",
            "reason",
            &[
                "null_sender",
                "system_sender",
                "invalid_sender",
                "own_address",
                "loop_marked",
                "auto_submitted",
                "precedence",
                "mailing_list",
                "auto_response_suppress",
                "spam",
                "not_addressed",
                "unauthenticated",
                "headers_truncated",
                "already_replied",
                "account_rate_limit",
                "system_rate_limit",
                "store_unavailable",
                "memory_full",
                "queue_full",
                "shutting_down",
            ],
        ),
        (
            "handoff_autoreplies_failed_total",
            "reason",
            &[
                "journal",
                "relay_rejected",
                "relay_unavailable",
                "relay_no_smtputf8",
            ],
        ),
        (
            "handoff_messages_total",
            "outcome",
            &["accepted", "rejected", "tempfailed"],
        ),
        (
            "handoff_policy_reloads_total",
            "result",
            &["applied", "unchanged", "refused"],
        ),
    ] {
        assert_eq!(labels(name, label), sorted(expected), "{name}");
        for value in expected {
            let sample = format!("{name}{{{label}=\"{value}\"}}");
            assert_eq!(before[&sample], 0.0, "{sample}");
        }
    }
    assert_eq!(
        labels("handoff_policy_accounts", "state"),
        sorted(&["active", "departed", "disabled", "frozen", "deleted"])
    );
    assert_eq!(
        labels("handoff_milter_stage_seconds_count", "stage"),
        sorted(&["mail", "rcpt", "eom"])
    );
}

#[test]
fn every_listed_metric_moves_by_what_was_sent() {
    let d = Daemon::start(POLICY);
    let lab = lab_for(&d);
    let before = scrape(&d);
    // Registered at zero before any mail, so dashboards and rate() see the first event.
    for sample in [
        r#"handoff_messages_total{outcome="accepted"}"#,
        r#"handoff_messages_total{outcome="rejected"}"#,
        r#"handoff_messages_total{outcome="tempfailed"}"#,
        r#"handoff_recipients_total{decision="block_sender"}"#,
        r#"handoff_rule_hits_total{rule="not_local"}"#,
        "handoff_journal_errors_total",
        "handoff_lmtp_sessions_active",
        "handoff_milter_sessions_active",
    ] {
        assert_eq!(value(&before, sample), 0.0, "{sample}");
    }
    assert_eq!(value(&before, "handoff_policy_generation"), 1.0);

    let ok = |t: &crate::support::Transcript| {
        assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    };
    // deliver (active, unlisted), forward (with and without copy), alias.
    ok(&send(
        &lab,
        "s@example.net",
        &["alice@corp.example"],
        message("active"),
    ));
    ok(&send(
        &lab,
        "s@example.net",
        &["nobody@corp.example"],
        message("unlisted"),
    ));
    ok(&send(
        &lab,
        "s@example.net",
        &["keep@corp.example"],
        message("keep"),
    ));
    ok(&send(
        &lab,
        "s@example.net",
        &["gone@corp.example"],
        message("gone"),
    ));
    ok(&send(
        &lab,
        "s@example.net",
        &["sales@corp.example"],
        message("alias"),
    ));
    // Refused at RCPT, one state each; the transactions end without DATA.
    let t = send(&lab, "s@example.net", &["dis@corp.example"], message("dis"));
    assert_eq!(t.rcpt("dis@corp.example").status(), "550 5.2.1", "{t}");
    let t = send(&lab, "s@example.net", &["del@corp.example"], message("del"));
    assert_eq!(t.rcpt("del@corp.example").status(), "550 5.1.1", "{t}");
    let t = send(&lab, "s@example.net", &["frz@corp.example"], message("frz"));
    assert_eq!(t.rcpt("frz@corp.example").status(), "450 4.2.1", "{t}");
    // One accepted and one refused recipient in the same message.
    let t = send(
        &lab,
        "s@example.net",
        &["alice@corp.example", "dis@corp.example"],
        message("mixed"),
    );
    ok(&t);
    // A disabled account may not send: MAIL is refused.
    let t = send_authenticated(
        &lab,
        ("dis@corp.example", "secret"),
        "dis@corp.example",
        &["alice@corp.example"],
        message("blocked"),
    );
    assert_eq!(t.mail.status(), "550 5.7.1", "{t}");
    lab.sink().wait_for(6, TIMEOUT);

    // Postfix closes its milter connection when the SMTP session ends.
    wait_for(TIMEOUT, "milter sessions to close", || {
        (d.metric("handoff_milter_sessions_active") == Some(0.0)).then_some(())
    });
    let after = scrape(&d);
    let moved = |sample: &str| value(&after, sample) - before.get(sample).copied().unwrap_or(0.0);

    let exact = [
        (r#"handoff_messages_total{outcome="accepted"}"#, 6.0),
        (r#"handoff_messages_total{outcome="rejected"}"#, 0.0),
        (r#"handoff_messages_total{outcome="tempfailed"}"#, 0.0),
        (r#"handoff_recipients_total{decision="deliver"}"#, 3.0),
        (r#"handoff_recipients_total{decision="forward"}"#, 2.0),
        (r#"handoff_recipients_total{decision="alias"}"#, 1.0),
        (
            r#"handoff_recipients_total{decision="reject_disabled"}"#,
            2.0,
        ),
        (
            r#"handoff_recipients_total{decision="reject_deleted"}"#,
            1.0,
        ),
        (r#"handoff_recipients_total{decision="defer_frozen"}"#, 1.0),
        (r#"handoff_recipients_total{decision="block_sender"}"#, 1.0),
        (r#"handoff_rule_hits_total{rule="active"}"#, 2.0),
        (r#"handoff_rule_hits_total{rule="unlisted"}"#, 1.0),
        (r#"handoff_rule_hits_total{rule="departed"}"#, 2.0),
        (r#"handoff_rule_hits_total{rule="alias"}"#, 1.0),
        (r#"handoff_rule_hits_total{rule="disabled"}"#, 2.0),
        (r#"handoff_rule_hits_total{rule="deleted"}"#, 1.0),
        (r#"handoff_rule_hits_total{rule="frozen"}"#, 1.0),
        (r#"handoff_rule_hits_total{rule="not_local"}"#, 0.0),
        // One MAIL per transaction, one RCPT per recipient (none after the refused MAIL), one
        // end of message per message that reached DATA.
        (r#"handoff_milter_stage_seconds_count{stage="mail"}"#, 10.0),
        (r#"handoff_milter_stage_seconds_count{stage="rcpt"}"#, 10.0),
        (r#"handoff_milter_stage_seconds_count{stage="eom"}"#, 6.0),
        ("handoff_milter_sessions_total", 10.0),
        ("handoff_journal_records_total", 6.0),
        ("handoff_journal_errors_total", 0.0),
        ("handoff_lmtp_sessions_active", 0.0),
    ];
    let mut wrong = Vec::new();
    for (sample, want) in exact {
        let got = moved(sample);
        if got != want {
            wrong.push(format!("{sample}: moved by {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Group commit: at least one fsync, at most one per record; the histograms saw each.
    let fsyncs = moved("handoff_journal_fsyncs_total");
    assert!((1.0..=6.0).contains(&fsyncs), "fsyncs {fsyncs}");
    assert_eq!(moved("handoff_journal_fsync_seconds_count"), fsyncs);
    assert_eq!(moved("handoff_journal_batch_records_sum"), 6.0);
    assert!(moved("handoff_journal_bytes_total") > 6.0 * 100.0);
    // Latency histograms have buckets (for histogram_quantile), and every observation is in +Inf.
    assert_eq!(
        value(
            &after,
            r#"handoff_milter_stage_seconds_bucket{stage="eom",le="+Inf"}"#
        ),
        value(&after, r#"handoff_milter_stage_seconds_count{stage="eom"}"#)
    );
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("handoff_journal_fsync_seconds_bucket{le="))
    );

    // The policy gauges.
    for (state, n) in [
        ("active", 1.0),
        ("departed", 2.0),
        ("disabled", 1.0),
        ("frozen", 1.0),
        ("deleted", 1.0),
    ] {
        let sample = format!(r#"handoff_policy_accounts{{state="{state}"}}"#);
        assert_eq!(value(&after, &sample), n, "{sample}");
    }
    assert_eq!(value(&after, "handoff_policy_aliases"), 1.0);

    assert_eq!(d.http_get("/healthz").0, 200);
    assert_eq!(d.http_get("/readyz").0, 200);

    // A reload: generation, reload counter and reload time move; a refused one counts too.
    let loaded = value(
        &after,
        "handoff_policy_last_reload_success_timestamp_seconds",
    );
    let mut text = std::fs::read_to_string(d.config_path()).unwrap();
    text.push_str("\n[accounts.\"new@corp.example\"]\nstate = \"frozen\"\n");
    std::fs::write(d.config_path(), &text).unwrap();
    d.signal("HUP");
    wait_for(TIMEOUT, "generation 2", || {
        (d.metric("handoff_policy_generation") == Some(2.0)).then_some(())
    });
    std::fs::write(d.config_path(), format!("{text}\n[oops\n")).unwrap();
    d.signal("HUP");
    wait_for(TIMEOUT, "a refused reload", || {
        (d.metric(r#"handoff_policy_reloads_total{result="refused"}"#) == Some(1.0)).then_some(())
    });
    let last = scrape(&d);
    assert_eq!(
        value(&last, r#"handoff_policy_reloads_total{result="applied"}"#),
        1.0
    );
    assert_eq!(value(&last, "handoff_policy_generation"), 2.0);
    assert_eq!(
        value(&last, r#"handoff_policy_accounts{state="frozen"}"#),
        2.0
    );
    assert!(
        value(
            &last,
            "handoff_policy_last_reload_success_timestamp_seconds"
        ) >= loaded
    );

    // /status says the same.
    let (code, body) = d.http_get("/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["generation"], 2, "{body}");
    assert_eq!(status["source"], "daemon", "{body}");
    assert!(status["journal"]["bytes"].as_u64().unwrap() > 0, "{body}");
    assert!(status["journal"]["last_record"].is_string(), "{body}");
    assert_eq!(
        status["autoreply_queue"], 0,
        "a running daemon reports its queue: {body}"
    );
}

#[test]
fn the_message_line_can_leave_out_addresses() {
    let policy = format!("[log]\naddresses = false\n{POLICY}");
    let d = Daemon::start(&policy);
    let lab = lab_for(&d);
    let t = send(
        &lab,
        "secret-sender@example.net",
        &["gone@corp.example", "dis@corp.example"],
        message("quiet"),
    );
    assert!(t.data.as_ref().is_some_and(|r| r.code == 250), "{t}");
    let line = wait_for(TIMEOUT, "the message log line", || {
        d.log_text()
            .lines()
            .find(|l| l.contains(" message ") && l.contains("quiet@example.net"))
            .map(str::to_string)
    });
    assert!(
        line.contains("departed:forward->1") && line.contains("refused:550"),
        "the rule and counts are logged: {line}"
    );
    assert!(line.contains("recipients=2"), "{line}");
    for address in ["secret-sender", "gone@", "dis@", "cs@"] {
        assert!(!line.contains(address), "`{address}` in: {line}");
    }

    // The default names them.
    let d = Daemon::start(POLICY);
    let lab = lab_for(&d);
    send(
        &lab,
        "loud@example.net",
        &["gone@corp.example"],
        message("loud"),
    );
    let line = wait_for(TIMEOUT, "the message log line", || {
        d.log_text()
            .lines()
            .find(|l| l.contains(" message ") && l.contains("loud@example.net>"))
            .map(str::to_string)
    });
    assert!(
        line.contains("gone@corp.example=departed->cs@corp.example"),
        "{line}"
    );
}
