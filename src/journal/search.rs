//! Finding messages in the journal, exporting them byte for byte, and the audit trail of both.
//!
//! A search reads every record (the journal is the source of truth; [`crate::index`] is derived
//! from it, and this scan is its test oracle). Envelope filters use the record's meta; text is matched in the decoded
//! message (MIME, RFC 2047 encoded words, charsets such as GB2312/GBK, text attachments) as
//! mail-parser decodes it, word by word as the index cuts it ([`crate::index::analysis`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use mail_parser::{MessageParser, MimeHeaders};
use serde::Serialize;

use super::error::JournalError;
use super::format::Kind;
use super::progress::{Progress, Silent};
use super::record::{AuditMeta, MessageMeta, folder_key, message_of};
use super::records::SegmentRules;
use super::records::{Problem, SegmentRecords, records};
use super::segment::{RecordId, RecordInfo, segment_path};
use super::writer::{Body, Entry, Writer};
use crate::address::Address;
use crate::index::analysis;

/// Which parts of a message `--text` looks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Parts {
    pub subject: bool,
    pub body: bool,
    pub attachment: bool,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            subject: true,
            body: true,
            attachment: true,
        }
    }
}

impl std::str::FromStr for Parts {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = Parts {
            subject: false,
            body: false,
            attachment: false,
        };
        for part in s.split(',').map(str::trim) {
            match part {
                "subject" => p.subject = true,
                "body" => p.body = true,
                "attachment" | "attachments" => p.attachment = true,
                other => {
                    return Err(format!(
                        "unknown part `{other}` (subject, body, attachment)"
                    ));
                }
            }
        }
        Ok(p)
    }
}

/// A search. Every given filter must match.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Query {
    pub account: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub since: Option<Date>,
    pub until: Option<Date>,
    /// Words that must all appear (case-insensitive).
    pub text: Vec<String>,
    pub parts: Parts,
    pub department: Option<String>,
    /// `department` selects that department only, not its sub-departments.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exact_department: bool,
    /// Only imported mail filed under this folder ([`super::record::folder_key`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
}

/// One message found.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub id: String,
    pub kind: &'static str,
    pub time: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
}

/// Why a search or export failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The journal's errors say that they are the journal's.
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("no record {0} in the journal")]
    NoSuchRecord(RecordId),
    #[error("record {0} is not a message")]
    NotAMessage(RecordId),
}

/// Runs a query over every message in the journal at `dir`.
pub fn search(dir: &Path, q: &Query) -> Result<Vec<Hit>, SearchError> {
    let mut hits = Vec::new();
    // Words as the index cuts them (see `crate::index::analysis`); one without any letter or
    // digit asks for nothing.
    let words: Vec<String> = q
        .text
        .iter()
        .filter(|w| !analysis::terms(w).is_empty())
        .cloned()
        .collect();
    let mut walk = records(dir);
    while let Some(info) = walk.next() {
        let info = info.map_err(|e| match e.problem {
            Problem::Open(io) => SearchError::Io(io),
            _ => SearchError::Journal(e.into()),
        })?;
        let Some((meta, folder)) = message_of(info.header.kind, &info.meta) else {
            continue;
        };
        if let Some(want) = &q.folder
            && folder.as_deref() != Some(folder_key(want).as_str())
        {
            continue;
        }
        if !envelope_matches(&meta, q) {
            continue;
        }
        let Some(segment) = walk.segment() else {
            continue;
        };
        let body = segment.body(&info)?;
        let parsed = MessageParser::default().parse(&body);
        let subject = parsed
            .as_ref()
            .and_then(|m| m.subject())
            .unwrap_or("")
            .to_string();
        if !words.is_empty() {
            let Some(m) = parsed.as_ref() else { continue };
            if !analysis::all_found(&words, &part_texts(m, q.parts)) {
                continue;
            }
        }
        if let Some(f) = &q.from {
            let header_from = parsed
                .as_ref()
                .and_then(|m| m.from())
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .map(str::to_lowercase);
            let f = f.to_lowercase();
            // Both through the lookup form: an IDN domain matches in either spelling.
            if !same(&meta.sender, &f) && !header_from.is_some_and(|h| same(&h, &f)) {
                continue;
            }
        }
        hits.push(Hit {
            id: info.id.to_string(),
            kind: info.header.kind.as_str(),
            time: meta.time.clone(),
            from: meta.sender.clone(),
            to: meta.final_recipients.clone(),
            subject,
        });
    }
    Ok(hits)
}

fn same(a: &str, b: &str) -> bool {
    Address::from_envelope(a).map(|a| a.to_string())
        == Address::from_envelope(b).map(|b| b.to_string())
}

fn envelope_matches(m: &MessageMeta, q: &Query) -> bool {
    let addrs = || {
        m.recipients
            .iter()
            .flat_map(|r| std::iter::once(r.address.as_str()).chain(m.deliver_of(r)))
            .chain(m.final_recipients.iter().map(String::as_str))
    };
    if let Some(to) = &q.to
        && !addrs().any(|a| same(a, to))
    {
        return false;
    }
    if let Some(acc) = &q.account {
        let hit = m.accounts.iter().any(|a| same(a, acc))
            || same(&m.sender, acc)
            || addrs().any(|a| same(a, acc));
        if !hit {
            return false;
        }
    }
    if let Some(d) = &q.department
        && !m
            .departments
            .iter()
            .any(|x| analysis::department_matches(x, d, q.exact_department))
    {
        return false;
    }
    within_days(&m.time, q.since, q.until, &jiff::tz::TimeZone::system())
}

/// Whether the RFC 3339 `time` falls on a day from `since` to `until` (both included, either
/// open) in `tz`. A time that does not read is outside any range (it cannot be shown inside).
pub(super) fn within_days(
    time: &str,
    since: Option<Date>,
    until: Option<Date>,
    tz: &jiff::tz::TimeZone,
) -> bool {
    if since.is_none() && until.is_none() {
        return true;
    }
    let Ok(t) = time.parse::<jiff::Timestamp>() else {
        return false;
    };
    let date = t.to_zoned(tz.clone()).date();
    !(since.is_some_and(|s| date < s) || until.is_some_and(|u| date > u))
}

/// The decoded text of each part asked for, apart: a phrase is found within one part.
fn part_texts(m: &mail_parser::Message<'_>, parts: Parts) -> Vec<String> {
    let only = |subject, body, attachment| Parts {
        subject,
        body,
        attachment,
    };
    [
        (parts.subject, only(true, false, false)),
        (parts.body, only(false, true, false)),
        (parts.attachment, only(false, false, true)),
    ]
    .into_iter()
    .filter(|(wanted, _)| *wanted)
    .map(|(_, part)| text_of(m, part))
    .collect()
}

/// The decoded text of the parts asked for (the index reads messages through it too).
pub fn text_of(m: &mail_parser::Message<'_>, parts: Parts) -> String {
    let mut out = String::new();
    if parts.subject {
        out.push_str(m.subject().unwrap_or(""));
        out.push('\n');
    }
    if parts.body {
        for i in 0..m.text_body_count() {
            if let Some(t) = m.body_text(i) {
                out.push_str(&t);
                out.push('\n');
            }
        }
        if m.text_body_count() == 0 {
            for i in 0..m.html_body_count() {
                if let Some(t) = m.body_html(i) {
                    out.push_str(&t);
                    out.push('\n');
                }
            }
        }
    }
    if parts.attachment {
        for a in m.attachments() {
            if let Some(name) = a.attachment_name() {
                out.push_str(name);
                out.push('\n');
            }
            if let Some(t) = a.text_contents() {
                out.push_str(t);
                out.push('\n');
            }
        }
    }
    out
}

/// Writes each record's message, byte for byte, to `OUT/ID.eml`: a new file (mode 0600) that
/// is never a link's target; an existing `ID.eml` is an error naming it, not overwritten (an
/// export is evidence: it must be what the journal holds, not mixed with an earlier one). `OUT`
/// and missing parents are created 0700.
pub fn export(dir: &Path, ids: &[RecordId], out: &Path) -> Result<Vec<PathBuf>, SearchError> {
    export_with(dir, ids, out, &mut Silent)
}

/// [`export`], telling `progress` about every record it checks on the way to the wanted ones,
/// then about every message it writes. The total is first the length of the walk up to the
/// last wanted record of each segment; once the walk has reached them their own lengths are
/// known, and the total becomes exact.
pub fn export_with(
    dir: &Path,
    ids: &[RecordId],
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<Vec<PathBuf>, SearchError> {
    let out_dir = crate::fsops::create_dirs_open(out, 0o700)?;
    let mut written = Vec::new();
    let reached = reachable(dir, ids, progress)?;
    let walked: u64 = reached.walked;
    let wanted: u64 = ids.iter().filter_map(|id| reached.records.get(id)).sum();
    progress.total(walked + wanted);
    for id in ids {
        if !reached.records.contains_key(id) {
            return Err(SearchError::NoSuchRecord(*id));
        }
        let (info, mut segment) = record_at(dir, *id)?;
        if !info.header.kind.holds_message() {
            return Err(SearchError::NotAMessage(*id));
        }
        let body = segment.body(&info)?;
        progress.advance(info.header.record_len(), 1);
        let name = format!("{id}.eml");
        let mut file = out_dir
            .create_new(&name, 0o600)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => std::io::Error::new(
                    e.kind(),
                    format!("{} exists: not overwritten", out.join(&name).display()),
                ),
                _ => e,
            })?;
        std::io::Write::write_all(&mut file, &body)?;
        written.push(out.join(name));
    }
    Ok(written)
}

/// Which of `ids` are records the chain walk reaches: each named segment is walked from its
/// start, every record's hash and link checked ([`SegmentRules`]). An offset that is not a
/// record start the walk reaches is no record, even if a self-consistent record is found
/// there: a message body can embed one (a forged record), and only the chain vouches for a
/// record. A break in the chain before a wanted record is an error naming it.
fn reachable(
    dir: &Path,
    ids: &[RecordId],
    progress: &mut dyn Progress,
) -> Result<Reached, SearchError> {
    let wanted: HashSet<RecordId> = ids.iter().copied().collect();
    let segments: BTreeSet<u64> = ids.iter().map(|id| id.segment).collect();
    let mut reached = Reached::default();
    let last_wanted = |n: u64| {
        ids.iter()
            .filter(|id| id.segment == n)
            .map(|id| id.offset)
            .max()
            .unwrap_or(0)
    };
    // The walk's length up to the start of each segment's last wanted record, from `stat`
    // (the files are opened one at a time below: an export may name thousands of segments).
    progress.total(
        segments
            .iter()
            .filter_map(|&n| {
                let len = std::fs::metadata(segment_path(dir, n)).ok()?.len();
                Some(len.min(last_wanted(n)))
            })
            .sum(),
    );
    for n in segments {
        let Ok(file) = File::open(segment_path(dir, n)) else {
            continue;
        };
        let last_wanted = last_wanted(n);
        let mut walk = SegmentRecords::new(file, n, 0)?.checked(SegmentRules::new(n, None));
        while walk.offset() <= last_wanted {
            let Some(info) = walk.next() else { break };
            let info = info.map_err(|e| SearchError::Journal(e.into()))?;
            let len = info.header.record_len();
            progress.advance(len, 1);
            reached.walked += len;
            if wanted.contains(&info.id) {
                reached.records.insert(info.id, len);
            }
        }
    }
    Ok(reached)
}

/// What [`reachable`] found: the wanted records the chain reaches, with their lengths, and the
/// bytes it walked to reach them.
#[derive(Default)]
struct Reached {
    records: HashMap<RecordId, u64>,
    walked: u64,
}

/// Appends an audit record: who ran `command` with `query`, and how many messages it touched.
/// `segment_bytes`: the policy's `[archive] segment_mb` (the record may start a segment).
pub fn audit(
    dir: &Path,
    segment_bytes: u64,
    command: &str,
    query: &impl Serialize,
    hits: usize,
) -> Result<RecordId, JournalError> {
    let meta = AuditMeta {
        time: jiff::Timestamp::now().to_string(),
        user: operator().to_string(),
        command: command.to_string(),
        query: serde_json::to_value(query).unwrap_or_default(),
        hits,
    };
    let (mut writer, _) = Writer::open(dir, segment_bytes)?;
    let (ids, _) = writer.append(&mut [Entry::new(Kind::Audit, &meta, Body::Bytes(Vec::new()))])?;
    ids.into_iter()
        .next()
        .ok_or_else(|| JournalError::Io("no record written".into()))
}

/// The person behind this process: the sudo caller if any, the login name, and the uid. Taken
/// once, at the first call: `handoff archive` calls it before it becomes the journal's owner.
pub fn operator() -> &'static str {
    static OPERATOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OPERATOR.get_or_init(operator_now)
}

fn operator_now() -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into());
    let name = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{name} (uid {uid})")
}

/// Reads the raw message of a record (for tests and tools).
pub fn message_bytes(dir: &Path, id: RecordId) -> Result<Vec<u8>, SearchError> {
    if !reachable(dir, &[id], &mut Silent)?
        .records
        .contains_key(&id)
    {
        return Err(SearchError::NoSuchRecord(id));
    }
    let (info, mut segment) = record_at(dir, id)?;
    Ok(segment.body(&info)?)
}

/// A message record whose place the hash chain vouches for: its kind, its meta (JSON) and the
/// message bytes (exactly what `export` writes). For the archive console's message view.
pub fn message_record(dir: &Path, id: RecordId) -> Result<(Kind, Vec<u8>, Vec<u8>), SearchError> {
    if !reachable(dir, &[id], &mut Silent)?
        .records
        .contains_key(&id)
    {
        return Err(SearchError::NoSuchRecord(id));
    }
    let (info, mut segment) = record_at(dir, id)?;
    if !info.header.kind.holds_message() {
        return Err(SearchError::NotAMessage(id));
    }
    let body = segment.body(&info)?;
    Ok((info.header.kind, info.meta, body))
}

/// The record at `id` (a place [`reachable`] vouched for), and its segment to read its body.
fn record_at(dir: &Path, id: RecordId) -> Result<(RecordInfo, SegmentRecords), SearchError> {
    let file =
        File::open(segment_path(dir, id.segment)).map_err(|_| SearchError::NoSuchRecord(id))?;
    let mut walk = SegmentRecords::new(file, id.segment, id.offset)?;
    match walk.next() {
        Some(Ok(info)) => Ok((info, walk)),
        _ => Err(SearchError::NoSuchRecord(id)),
    }
}
