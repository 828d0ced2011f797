//! Reading the audit trail: who searched, exported, pruned or read the trail itself, when, with
//! what query, and how many messages it touched.
//!
//! The trail is the journal's own records: an audit record ([`Kind::Audit`], written by
//! [`super::search::audit`] before a command shows anything) and the prune record
//! ([`Kind::Prune`], written before segments are removed). This module turns them into typed
//! [`AuditEntry`]s and filters them; it writes nothing (the command line audits the reading).
//! The filter is a pure function of an entry, so it is tested without a journal.

use std::path::Path;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;

use super::error::JournalError;
use super::format::Kind;
use super::record::AuditMeta;
use super::records::{WalkError, records};
use super::search::within_days;
use super::segment::RecordInfo;

/// The commands that leave an audit record, as `--command` accepts them. `search --export`
/// records `search+export`, which both `search` and `export` select.
/// The archive console's actions are recorded as `console+ACTION` (`console+login`,
/// `console+search`, `console+denied`, …): `console` selects them all.
pub const COMMANDS: &[&str] = &[
    "search", "export", "prune", "audit", "reindex", "import", "restore", "console",
];

/// One access to the archive, as the journal recorded it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// The audit (or prune) record's id.
    pub id: String,
    /// When the command ran (RFC 3339, UTC), as recorded.
    pub time: String,
    /// Who ran it: `name (uid N)`, the sudo caller's or login name; empty for a prune record
    /// written before prune records named the person.
    pub user: String,
    pub command: String,
    /// The command's query or filters, as recorded (a prune: its retention and the segments).
    pub query: serde_json::Value,
    /// Messages found, exported or removed; entries listed, for `audit`.
    pub hits: u64,
}

/// Which entries to list. Every given filter must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditFilter {
    /// The login name (`alice`), or the whole recorded user (`alice (uid 1000)`).
    pub user: Option<String>,
    /// On or after this date, in the local time zone (as `archive search --since`).
    pub since: Option<Date>,
    /// On or before this date.
    pub until: Option<Date>,
    /// One of [`COMMANDS`].
    pub command: Option<String>,
}

impl AuditEntry {
    /// The entry a record is, if it is part of the audit trail. An audit record whose meta does
    /// not read is still listed (command `unreadable`, the meta as text): the chain vouches
    /// for it, and an auditor must see that it exists.
    pub fn from_record(info: &RecordInfo) -> Option<AuditEntry> {
        let id = info.id.to_string();
        match info.header.kind {
            Kind::Audit => Some(match serde_json::from_slice::<AuditMeta>(&info.meta) {
                Ok(m) => AuditEntry {
                    id,
                    time: m.time,
                    user: m.user,
                    command: m.command,
                    query: m.query,
                    hits: m.hits as u64,
                },
                Err(_) => AuditEntry {
                    id,
                    time: String::new(),
                    user: String::new(),
                    command: "unreadable".into(),
                    query: String::from_utf8_lossy(&info.meta).into_owned().into(),
                    hits: 0,
                },
            }),
            Kind::Prune => {
                let meta: serde_json::Value =
                    serde_json::from_slice(&info.meta).unwrap_or_default();
                let text = |key: &str| meta.get(key).and_then(|v| v.as_str()).unwrap_or("");
                let removed = meta.get("removed").and_then(|r| r.as_array());
                let segments: Vec<_> = removed
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("segment").cloned())
                    .collect();
                let hits = removed
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("records").and_then(|n| n.as_u64()))
                    .sum();
                Some(AuditEntry {
                    id,
                    time: text("time").to_string(),
                    user: text("user").to_string(),
                    command: "prune".into(),
                    query: serde_json::json!({
                        "retention_days": meta.get("retention_days"),
                        "segments": segments,
                    }),
                    hits,
                })
            }
            _ => None,
        }
    }
}

impl AuditFilter {
    /// Whether `e` passes every filter; dates are days in `tz`. An entry whose time does not
    /// read fails a date filter.
    pub fn matches(&self, e: &AuditEntry, tz: &TimeZone) -> bool {
        if let Some(u) = &self.user {
            let name = e.user.split_once(" (uid ").map_or(e.user.as_str(), |p| p.0);
            if e.user != *u && name != u {
                return false;
            }
        }
        if let Some(c) = &self.command
            && !e.command.split('+').any(|part| part == c)
        {
            return false;
        }
        // The same days as `archive search --since/--until`.
        within_days(&e.time, self.since, self.until, tz)
    }
}

/// The entries of a record walk that pass `filter`, in journal order (oldest first). The walk's
/// first error ends it: an audit trail is not listed past a damaged record.
pub fn entries(
    walk: impl Iterator<Item = Result<RecordInfo, WalkError>>,
    filter: &AuditFilter,
    tz: &TimeZone,
) -> Result<Vec<AuditEntry>, JournalError> {
    let mut out = Vec::new();
    for info in walk {
        if let Some(e) = AuditEntry::from_record(&info?)
            && filter.matches(&e, tz)
        {
            out.push(e);
        }
    }
    Ok(out)
}

/// The audit trail of the journal at `dir` that passes `filter`, oldest first; dates in the
/// system's time zone.
pub fn trail(dir: &Path, filter: &AuditFilter) -> Result<Vec<AuditEntry>, JournalError> {
    entries(records(dir), filter, &TimeZone::system())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time: &str, user: &str, command: &str) -> AuditEntry {
        AuditEntry {
            id: "1-0".into(),
            time: time.into(),
            user: user.into(),
            command: command.into(),
            query: serde_json::Value::Null,
            hits: 0,
        }
    }

    fn date(s: &str) -> Option<Date> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn every_given_filter_must_match() {
        let utc = TimeZone::UTC;
        let alice = entry("2026-03-10T23:30:00Z", "alice (uid 1000)", "search");
        let both = entry("2026-03-11T00:10:00Z", "bob (uid 0)", "search+export");
        let bad_time = entry("yesterday", "alice (uid 1000)", "export");
        let cases: &[(AuditFilter, &AuditEntry, bool)] = &[
            (AuditFilter::default(), &alice, true),
            (AuditFilter::default(), &bad_time, true),
            // The user: by login name, or as recorded; never by a prefix.
            (user("alice"), &alice, true),
            (user("alice (uid 1000)"), &alice, true),
            (user("alic"), &alice, false),
            (user("bob"), &alice, false),
            (user("1000"), &alice, false),
            // The command: `search --export` is both a search and an export.
            (command("search"), &alice, true),
            (command("export"), &alice, false),
            (command("export"), &both, true),
            (command("search"), &both, true),
            (command("prune"), &both, false),
            // Dates are days, both ends included.
            (dates(date("2026-03-10"), date("2026-03-10")), &alice, true),
            (dates(date("2026-03-11"), None), &alice, false),
            (dates(None, date("2026-03-10")), &both, false),
            (dates(date("2026-03-11"), None), &both, true),
            (dates(date("2000-01-01"), None), &bad_time, false),
            (
                AuditFilter {
                    user: Some("bob".into()),
                    command: Some("export".into()),
                    since: date("2026-03-11"),
                    until: date("2026-03-11"),
                },
                &both,
                true,
            ),
            (
                AuditFilter {
                    user: Some("bob".into()),
                    command: Some("export".into()),
                    since: date("2026-03-12"),
                    until: None,
                },
                &both,
                false,
            ),
        ];
        for (f, e, want) in cases {
            assert_eq!(f.matches(e, &utc), *want, "{f:?} on {e:?}");
        }
    }

    #[test]
    fn dates_are_days_in_the_given_time_zone() {
        let e = entry("2026-03-10T23:30:00Z", "alice (uid 1000)", "search");
        let on_11th = dates(date("2026-03-11"), date("2026-03-11"));
        assert!(!on_11th.matches(&e, &TimeZone::UTC));
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert!(on_11th.matches(&e, &berlin));
    }

    fn user(u: &str) -> AuditFilter {
        AuditFilter {
            user: Some(u.into()),
            ..AuditFilter::default()
        }
    }

    fn command(c: &str) -> AuditFilter {
        AuditFilter {
            command: Some(c.into()),
            ..AuditFilter::default()
        }
    }

    fn dates(since: Option<Date>, until: Option<Date>) -> AuditFilter {
        AuditFilter {
            since,
            until,
            ..AuditFilter::default()
        }
    }
}
