//! `handoff archive audit`: the audit trail as an auditor reads it. Searches and exports run
//! as different people (the trail names the sudo caller, else the login name), then the trail
//! is listed with each filter, on a terminal and as JSON; reading it is recorded too, and what
//! users typed is printed escaped.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use handoff::journal::RecordId;
use serde_json::{Value, json};

/// A person's name with terminal control in it (a login name is whatever the environment says).
const MALLORY: &str = "mallory\u{1b}[31m";
/// Words typed into `--text`: set the window title, reverse the text that follows.
const HOSTILE_TEXT: &str = "\u{1b}]0;owned\u{7} \u{202e}gpj.exe";

/// `handoff archive ARGS --journal DIR` run by `user` (as `SUDO_USER` when `sudo`, else as
/// `USER`); returns (exit code, stdout, stderr).
fn archive(dir: &Path, user: &str, sudo: bool, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_handoff"));
    c.arg("--config")
        .arg(dir.join("no-policy.toml"))
        .arg("archive")
        .args(args)
        .arg("--journal")
        .arg(dir.join("journal"))
        .env_remove("SUDO_USER")
        .env_remove("LOGNAME");
    if sudo {
        c.env("SUDO_USER", user).env("USER", "root");
    } else {
        c.env("USER", user);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "{}{}", r.1, r.2);
    r.1
}

/// A journal with one message about an invoice; its id.
fn journal_with_an_invoice(dir: &Path) -> RecordId {
    let body = b"Subject: invoice\r\nMessage-ID: <i@example.net>\r\n\r\nplease pay\r\n";
    crate::support::journal_with_one_message(&dir.join("journal"), "a@example.net", body)
}

/// What an entry says: (user, command, hits, query).
type Facts = (String, String, u64, Value);

/// The facts of each entry of a `--json` listing, and the entries.
fn listed(json: &str) -> (Vec<Facts>, Vec<Value>) {
    let entries: Vec<Value> = serde_json::from_str(json).unwrap();
    let facts = entries
        .iter()
        .map(|e| {
            (
                e["user"].as_str().unwrap().to_string(),
                e["command"].as_str().unwrap().to_string(),
                e["hits"].as_u64().unwrap(),
                e["query"].clone(),
            )
        })
        .collect();
    (facts, entries)
}

#[test]
fn archive_audit_lists_who_searched_and_exported_with_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let invoice = journal_with_an_invoice(dir);
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let who = |name: &str| format!("{name} (uid {uid})");

    ok(archive(
        dir,
        "alice",
        false,
        &["search", "--text", "invoice"],
    ));
    let out = dir.join("out").display().to_string();
    ok(archive(
        dir,
        "bob",
        false,
        &["export", "--id", &invoice.to_string(), "--out", &out],
    ));
    let out2 = dir.join("out2").display().to_string();
    ok(archive(
        dir,
        MALLORY,
        true,
        &["search", "--text", HOSTILE_TEXT, "--export", &out2],
    ));

    let parts = json!({ "subject": true, "body": true, "attachment": true });
    let search_query = |words: &[&str]| {
        json!({
            "account": null, "from": null, "to": null, "since": null, "until": null,
            "text": words, "parts": parts, "department": null,
        })
    };
    let alice = (
        who("alice"),
        "search".to_string(),
        1,
        search_query(&["invoice"]),
    );
    let bob = (
        who("bob"),
        "export".to_string(),
        1,
        json!({ "ids": [invoice.to_string()], "out": out }),
    );
    let words: Vec<&str> = HOSTILE_TEXT.split_whitespace().collect();
    let mallory = (
        who(MALLORY),
        "search+export".to_string(),
        0,
        search_query(&words),
    );
    let audit = |user: &str, filter: Value, hits: u64| {
        let mut query = json!({ "user": null, "since": null, "until": null, "command": null });
        for (k, v) in filter.as_object().unwrap() {
            query[k] = v.clone();
        }
        (who(user), "audit".to_string(), hits, query)
    };

    // Everything, oldest first, as JSON; reading the trail is not yet in it.
    let (all, entries) = listed(&ok(archive(dir, "dave", false, &["audit", "--json"])));
    assert_eq!(all, [alice.clone(), bob.clone(), mallory.clone()]);
    let ids: Vec<RecordId> = entries
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        invoice < ids[0] && ids[0] < ids[1] && ids[1] < ids[2],
        "{ids:?}"
    );
    // The day of the trail, in the local time zone (as the filters read dates).
    let day = entries[0]["time"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::system())
        .date();
    let audit_all = audit("dave", json!({}), 3);

    let filtered = |args: &[&str]| {
        let mut a = vec!["audit", "--json"];
        a.extend_from_slice(args);
        listed(&ok(archive(dir, "erin", false, &a))).0
    };
    assert_eq!(filtered(&["--user", "alice"]), vec![alice.clone()]);
    assert_eq!(filtered(&["--user", &who("bob")]), vec![bob.clone()]);
    let none: Vec<Facts> = Vec::new();
    assert_eq!(filtered(&["--user", "ali"]), none);
    assert_eq!(
        filtered(&["--command", "export"]),
        [bob.clone(), mallory.clone()]
    );
    assert_eq!(
        filtered(&["--command", "search"]),
        [alice.clone(), mallory.clone()]
    );
    // The five listings so far are themselves in the trail.
    let erin = |filter: Value, hits| audit("erin", filter, hits);
    let listings = [
        audit_all.clone(),
        erin(json!({ "user": "alice" }), 1),
        erin(json!({ "user": who("bob") }), 1),
        erin(json!({ "user": "ali" }), 0),
        erin(json!({ "command": "export" }), 2),
        erin(json!({ "command": "search" }), 2),
    ];
    assert_eq!(filtered(&["--command", "audit"]), listings);
    let (today, next, before) = (
        day.to_string(),
        day.tomorrow().unwrap().to_string(),
        day.yesterday().unwrap().to_string(),
    );
    let mut everything = vec![alice.clone(), bob.clone(), mallory.clone()];
    everything.extend(listings);
    everything.push(erin(json!({ "command": "audit" }), 6));
    assert_eq!(
        filtered(&["--since", &today, "--until", &today]),
        everything
    );
    assert_eq!(filtered(&["--since", &next]), none);
    assert_eq!(filtered(&["--until", &before]), none);
    assert_eq!(
        filtered(&["--user", "bob", "--command", "export", "--since", &today]),
        vec![bob]
    );

    // On a terminal: one tab-separated line per entry, unset filters left out, the person's
    // name and the words they typed escaped.
    let (code, stdout, stderr) = archive(dir, "frank", false, &["audit", "--user", MALLORY]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("1 audit records"), "{stderr}");
    assert!(
        !stdout
            .chars()
            .any(|c| c.is_control() && c != '\t' && c != '\n')
            && !stdout.contains('\u{202e}'),
        "{stdout:?}"
    );
    let line = stdout.strip_suffix('\n').unwrap();
    let cols: Vec<&str> = line.split('\t').collect();
    assert_eq!(
        cols,
        [
            ids[2].to_string().as_str(),
            entries[2]["time"].as_str().unwrap(),
            &format!("mallory\\u{{1b}}[31m (uid {uid})"),
            "search+export",
            "0",
            "parts=attachment,body,subject text=\"\\u{1b}]0;owned\\u{7} \\u{202e}gpj.exe\"",
        ]
    );
}

#[test]
fn archive_audit_refuses_bad_dates_and_unknown_commands_as_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    journal_with_an_invoice(dir);
    for (args, says) in [
        (&["audit", "--since", "2026-13-01"][..], "--since"),
        (&["audit", "--until", "yesterday"][..], "--until"),
        (&["audit", "--command", "delete"][..], "possible values"),
    ] {
        let (code, out, err) = archive(dir, "alice", false, args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Nothing ran, so nothing was recorded.
    let all = ok(archive(dir, "alice", false, &["audit", "--json"]));
    assert!(listed(&all).0.is_empty(), "{all}");
}
