//! Finding messages in the journal, exporting them byte for byte, and the audit trail of both.
//!
//! A search reads every record (the journal is the source of truth; there is no index that could
//! disagree with it). Envelope filters use the record's meta; text is matched in the decoded
//! message (MIME, RFC 2047 encoded words, charsets such as GB2312/GBK, text attachments) as
//! mail-parser decodes it.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use mail_parser::{MessageParser, MimeHeaders};
use serde::Serialize;

use super::format::Kind;
use super::reader::SegmentRules;
use super::record::{AuditMeta, MessageMeta};
use super::segment::{RecordId, list_segments, read_body, read_record, segment_path};
use super::writer::{Body, Entry, JournalError, Writer};
use crate::address::Address;

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
    #[error("reading the journal: {0}")]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no record {0} in the journal")]
    NoSuchRecord(RecordId),
    #[error("record {0} is not a message")]
    NotAMessage(RecordId),
}

/// Runs a query over every message in the journal at `dir`.
pub fn search(dir: &Path, q: &Query) -> Result<Vec<Hit>, SearchError> {
    let mut hits = Vec::new();
    let words: Vec<String> = q.text.iter().map(|w| w.to_lowercase()).collect();
    for n in list_segments(dir)? {
        let mut file = File::open(segment_path(dir, n))?;
        let len = file.metadata()?.len();
        let mut offset = 0;
        while offset < len {
            let info = read_record(&mut file, n, offset, len).map_err(|e| {
                SearchError::Journal(JournalError::Corrupt {
                    segment: n,
                    offset,
                    reason: e.to_string(),
                })
            })?;
            offset = info.end();
            if !matches!(info.header.kind, Kind::Message | Kind::Created) {
                continue;
            }
            let Ok(meta) = serde_json::from_slice::<MessageMeta>(&info.meta) else {
                continue;
            };
            if !envelope_matches(&meta, q) {
                continue;
            }
            let body = read_body(&mut file, &info)?;
            let parsed = MessageParser::default().parse(&body);
            let subject = parsed
                .as_ref()
                .and_then(|m| m.subject())
                .unwrap_or("")
                .to_string();
            if !words.is_empty() {
                let Some(m) = parsed.as_ref() else { continue };
                let haystack = text_of(m, q.parts).to_lowercase();
                if !words.iter().all(|w| haystack.contains(w.as_str())) {
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
        && !m.departments.iter().any(|x| x.eq_ignore_ascii_case(d))
    {
        return false;
    }
    if q.since.is_some() || q.until.is_some() {
        let Ok(t) = m.time.parse::<jiff::Timestamp>() else {
            return false;
        };
        let date = t.to_zoned(jiff::tz::TimeZone::system()).date();
        if q.since.is_some_and(|s| date < s) || q.until.is_some_and(|u| date > u) {
            return false;
        }
    }
    true
}

/// The decoded text of the parts asked for.
fn text_of(m: &mail_parser::Message<'_>, parts: Parts) -> String {
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
    let out_dir = crate::fsops::create_dirs_open(out, 0o700)?;
    let mut written = Vec::new();
    let reached = reachable(dir, ids)?;
    for id in ids {
        if !reached.contains(id) {
            return Err(SearchError::NoSuchRecord(*id));
        }
        let path = segment_path(dir, id.segment);
        let mut file = File::open(&path).map_err(|_| SearchError::NoSuchRecord(*id))?;
        let len = file.metadata()?.len();
        let info = read_record(&mut file, id.segment, id.offset, len)
            .map_err(|_| SearchError::NoSuchRecord(*id))?;
        if !matches!(info.header.kind, Kind::Message | Kind::Created) {
            return Err(SearchError::NotAMessage(*id));
        }
        let body = read_body(&mut file, &info)?;
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
fn reachable(dir: &Path, ids: &[RecordId]) -> Result<HashSet<RecordId>, SearchError> {
    let wanted: HashSet<RecordId> = ids.iter().copied().collect();
    let segments: BTreeSet<u64> = ids.iter().map(|id| id.segment).collect();
    let mut reached = HashSet::new();
    for n in segments {
        let Ok(mut file) = File::open(segment_path(dir, n)) else {
            continue;
        };
        let len = file.metadata()?.len();
        let last_wanted = ids
            .iter()
            .filter(|id| id.segment == n)
            .map(|id| id.offset)
            .max()
            .unwrap_or(0);
        let mut rules = SegmentRules::new(n, None);
        let mut offset = 0;
        while offset < len && offset <= last_wanted {
            let corrupt = |reason: String| {
                SearchError::Journal(JournalError::Corrupt {
                    segment: n,
                    offset,
                    reason,
                })
            };
            let info =
                read_record(&mut file, n, offset, len).map_err(|e| corrupt(e.to_string()))?;
            rules.check(&info).map_err(corrupt)?;
            if wanted.contains(&info.id) {
                reached.insert(info.id);
            }
            offset = info.end();
        }
    }
    Ok(reached)
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
    if !reachable(dir, &[id])?.contains(&id) {
        return Err(SearchError::NoSuchRecord(id));
    }
    let mut file =
        File::open(segment_path(dir, id.segment)).map_err(|_| SearchError::NoSuchRecord(id))?;
    let len = file.metadata()?.len();
    let info = read_record(&mut file, id.segment, id.offset, len)
        .map_err(|_| SearchError::NoSuchRecord(id))?;
    let mut body = Vec::new();
    read_body(&mut file, &info)?
        .as_slice()
        .read_to_end(&mut body)?;
    Ok(body)
}
