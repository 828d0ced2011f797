//! What leaves the console as a file, besides one `.eml`: a zip export of many messages (a
//! selection, or a whole result set) and an attachment of a message.
//!
//! An export is a zip of `ID.eml` files, each exactly the bytes `handoff archive export`
//! writes, then `manifest.json` (who exported what, when, with which query, and each file's
//! SHA-256) and `SHA256SUMS` (the same hashes for `sha256sum -c`), so that a court or a third
//! party can check what it received.
//!
//! Everything that can refuse an export is decided before its first byte: the role, the CSRF
//! token, the query or the ids, the department scope (a foreign id is a 403, audited), and the
//! journal's hash chain vouching for every record. The audit record is written before the
//! first byte too. Then the zip streams: a blocking task reads one message at a time and writes
//! the zip through a bounded channel into the response body, so memory stays at a few chunks
//! and one message whatever the number of messages. An error after the first byte (a segment
//! pruned meanwhile, a disk error) aborts the response: the client sees a cut download, never
//! a complete-looking zip with messages missing.
//!
//! This module is a child of [`super`] (the routes) so that it uses their session check, their
//! refusals and their audit as they are.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mail_parser::{MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{
    AdminApi, AdminPage, Authed, Authz, Console, SearchParams, bad_request, deny, in_scope,
    internal, read_message_as, unaudited,
};
use crate::console::html::{esc, url_param};
use crate::index::Search;
use crate::journal::RecordId;
use crate::journal::record::message_of;
use crate::journal::records::{SegmentRecords, SegmentRules};
use crate::journal::segment::segment_path;

/// Messages in one export at most: a larger result set is refused (narrow the search). The
/// ids and the manifest's lines are what an export holds in memory: about 200 bytes each.
pub(super) const MAX_EXPORT: usize = 100_000;
/// The request body of `/export` (a page's ids, or a search's fields) and `/api/export` (up to
/// [`MAX_EXPORT`] ids as JSON).
pub(super) const FORM_LIMIT: usize = 64 * 1024;
pub(super) const API_LIMIT: usize = 4 * 1024 * 1024;
/// The zip reaches the response in chunks of this size, at most [`CHUNKS_IN_FLIGHT`] of them
/// waiting for the client: with the message being written, that is the export's memory.
const CHUNK: usize = 64 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;
/// The manifest's format name: a reader can tell what it is looking at.
pub(super) const MANIFEST_FORMAT: &str = "handoff-export/1";

// ---- what to export ----

/// The messages to export, as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Selection {
    /// These records, in this order (duplicates dropped).
    Ids(Vec<RecordId>),
    /// Every hit of a search (the search page's fields; `page` is ignored).
    Query(Box<SearchParams>),
}

/// Parses the export form: the CSRF token, `export=selected` with one `id` per checked box, or
/// `export=all` with the search's fields. Any other field, a field twice, or a bad id: `Err`.
pub(super) fn parse_form(body: &[u8]) -> Result<(String, Selection), String> {
    let mut csrf = None;
    let mut mode = None;
    let mut ids = Vec::new();
    let mut fields = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "id" => ids.push(
                v.parse::<RecordId>()
                    .map_err(|_| "an `id` is not a record id".to_string())?,
            ),
            "csrf" | "export" => {
                let slot = if k == "csrf" { &mut csrf } else { &mut mode };
                if slot.replace(v.into_owned()).is_some() {
                    return Err(format!("`{k}` is given twice"));
                }
            }
            // The search page's paging does not narrow an export of every result.
            "page" => {}
            _ => {
                if fields
                    .insert(k.clone().into_owned(), v.into_owned().into())
                    .is_some()
                {
                    return Err(format!("`{k}` is given twice"));
                }
            }
        }
    }
    let csrf = csrf.unwrap_or_default();
    match mode.as_deref() {
        Some("selected") if fields.is_empty() => Ok((csrf, Selection::Ids(ids))),
        Some("selected") => Err("a selection takes only ids".into()),
        Some("all") if ids.is_empty() => {
            let p: SearchParams = serde_json::from_value(serde_json::Value::Object(fields))
                .map_err(|e| format!("unknown or malformed search field: {e}"))?;
            Ok((csrf, Selection::Query(Box::new(p))))
        }
        Some("all") => Err("an export of every result takes no ids".into()),
        _ => Err("`export` is `selected` or `all`".into()),
    }
}

/// `POST /api/export`: `{"csrf": "…", "ids": ["3-1619", …]}` or `{"csrf": "…", "query":
/// {"since": …, "until": …, …}}` (the fields of `/api/search`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiExport {
    #[serde(default)]
    csrf: String,
    ids: Option<Vec<String>>,
    query: Option<SearchParams>,
}

impl ApiExport {
    fn selection(self) -> Result<(String, Selection), String> {
        match (self.ids, self.query) {
            (Some(ids), None) => {
                if ids.len() > MAX_EXPORT {
                    return Err(format!("more than {MAX_EXPORT} ids"));
                }
                let ids = ids
                    .iter()
                    .map(|i| i.parse::<RecordId>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| "an id is not a record id (like 3-1619)".to_string())?;
                Ok((self.csrf, Selection::Ids(ids)))
            }
            (None, Some(q)) => Ok((self.csrf, Selection::Query(Box::new(q)))),
            _ => Err("give either `ids` or `query`".into()),
        }
    }
}

/// Keeps the first of each id, in order.
fn dedup(ids: Vec<RecordId>) -> Vec<RecordId> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.into_iter().filter(|id| seen.insert(*id)).collect()
}

// ---- the handlers ----

pub(super) async fn export_form(
    State(c): State<Arc<Console>>,
    Authz(a, _): AdminPage,
    body: Bytes,
) -> Response {
    let (csrf, selection) = match parse_form(&body) {
        Ok(p) => p,
        // The token is checked first when it can be read: a forged request is a 403 either way.
        Err(e) => return bad_request(Some(&a), &e, false),
    };
    export(&c, &a, &csrf, selection, false).await
}

pub(super) async fn api_export(
    State(c): State<Arc<Console>>,
    Authz(a, _): AdminApi,
    body: Result<axum::Json<ApiExport>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(axum::Json(req)) = body else {
        return bad_request(
            Some(&a),
            "the body is not an export request (JSON: csrf, and ids or query)",
            true,
        );
    };
    match req.selection() {
        Ok((csrf, selection)) => export(&c, &a, &csrf, selection, true).await,
        Err(e) => bad_request(Some(&a), &e, true),
    }
}

/// The export for `a`: refused (403, audited) for another role, a wrong token, a department or
/// a record outside the user's scope; 400 for a bad query or too many messages; 404 for an id
/// the journal's chain does not hold; else audited, then streamed.
async fn export(
    c: &Arc<Console>,
    a: &Authed,
    csrf: &str,
    selection: Selection,
    api: bool,
) -> Response {
    let request = if api {
        "POST /api/export"
    } else {
        "POST /export"
    };
    // The role was checked by the extractor; a bearer token needs no CSRF token.
    if !a.csrf_ok(csrf) {
        return deny(c, a, request, "missing or wrong CSRF token".into(), api).await;
    }
    let (ids, audited) = match selection {
        Selection::Ids(ids) => {
            let ids = dedup(ids);
            if ids.is_empty() {
                return bad_request(Some(a), "select at least one message", api);
            }
            let shown: Vec<String> = ids.iter().map(RecordId::to_string).collect();
            (ids, serde_json::json!({ "ids": shown }))
        }
        Selection::Query(p) => match result_set(c, a, &p, api).await {
            Ok(r) => r,
            Err(r) => return r,
        },
    };
    let dir = c.journal_dir().to_path_buf();
    let (scope, wanted) = (a.departments.clone(), ids.clone());
    let checked = tokio::task::spawn_blocking(move || check(&dir, &wanted, &scope)).await;
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(Refusal::OutOfScope(id))) => {
            let detail = serde_json::json!({ "id": id.to_string(), "reason": "outside the user's departments" });
            return deny(c, a, "export", detail, api).await;
        }
        Ok(Err(Refusal::Missing(id))) => {
            return not_found(a, &format!("no message {id} in the journal"), api);
        }
        Ok(Err(Refusal::Journal(e))) => return internal(format!("export: {e}")),
        Err(e) => return internal(format!("export task: {e}")),
    }
    let mut q = audited;
    if let serde_json::Value::Object(m) = &mut q {
        m.insert("count".into(), ids.len().into());
    }
    if let Err(e) = c
        .audit(
            &a.name,
            Some(a.role),
            a.source,
            "export",
            q.clone(),
            ids.len(),
        )
        .await
    {
        return unaudited(e);
    }
    let now = jiff::Timestamp::now();
    let head = Head {
        format: MANIFEST_FORMAT,
        exported_at: now.to_string(),
        exported_by: Exporter {
            user: a.name.clone(),
            role: a.role.as_str(),
            source: a.source.ip().to_string(),
            departments: a.departments.clone(),
        },
        selection: q,
        count: ids.len(),
    };
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let dir = c.journal_dir().to_path_buf();
    tokio::task::spawn_blocking(move || stream(&dir, &ids, &head, tx));
    let name = format!("handoff-export-{}.zip", now.strftime("%Y%m%dT%H%M%SZ"));
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::new(ChannelBody(rx)),
    )
        .into_response()
}

fn not_found(a: &Authed, msg: &str, api: bool) -> Response {
    match api {
        true => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": msg })),
        )
            .into_response(),
        false => (
            StatusCode::NOT_FOUND,
            axum::response::Html(super::html::error(Some(&a.viewer()), "Not found", msg)),
        )
            .into_response(),
    }
}

/// Every hit of the search `p` within `a`'s scope (a department outside it: 403, audited), at
/// most [`MAX_EXPORT`], and what the audit and the manifest say about it.
async fn result_set(
    c: &Arc<Console>,
    a: &Authed,
    p: &SearchParams,
    api: bool,
) -> Result<(Vec<RecordId>, serde_json::Value), Response> {
    let (q, _, _) = p.check().map_err(|e| bad_request(Some(a), &e, api))?;
    if let Some(d) = &q.department
        && !in_scope(&a.departments, d)
    {
        return Err(deny(c, a, "export", serde_json::json!({ "department": d }), api).await);
    }
    let s = Search {
        limit: MAX_EXPORT + 1,
        scope: a.departments.clone(),
        ..Search::all(q.clone())
    };
    let c2 = c.clone();
    let found = tokio::task::spawn_blocking(move || c2.index().and_then(|i| i.search(&s))).await;
    let found = match found {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(internal(format!("export search: {e}"))),
        Err(e) => return Err(internal(format!("export search task: {e}"))),
    };
    if found.total > MAX_EXPORT {
        return Err(bad_request(
            Some(a),
            &format!(
                "{} messages: an export holds at most {MAX_EXPORT}; narrow the search",
                found.total
            ),
            api,
        ));
    }
    let ids = found
        .hits
        .iter()
        .map(|h| h.id.parse::<RecordId>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| internal(format!("export: the index holds a bad id: {e}")))?;
    Ok((ids, serde_json::json!({ "query": q })))
}

// ---- checking before the first byte ----

/// Why an export cannot start.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The record is outside the user's departments.
    OutOfScope(RecordId),
    /// The journal's hash chain does not reach a record there (or it holds no message).
    Missing(RecordId),
    Journal(String),
}

/// Checks that the journal's hash chain reaches every one of `ids` (each segment named is
/// walked from its start, every hash and link checked, as `archive export` does: an offset
/// inside a message body is no record, however well forged), that each holds a message, and
/// that each lies within `scope` (none: everything). Reads each segment once, up to its last
/// wanted record; keeps nothing but the ids.
pub(super) fn check(
    dir: &std::path::Path,
    ids: &[RecordId],
    scope: &[String],
) -> Result<(), Refusal> {
    let mut wanted: HashSet<RecordId> = ids.iter().copied().collect();
    let mut last: HashMap<u64, u64> = HashMap::new();
    for id in ids {
        let e = last.entry(id.segment).or_insert(0);
        *e = (*e).max(id.offset);
    }
    let segments: BTreeSet<u64> = last.keys().copied().collect();
    for n in segments {
        let Ok(file) = File::open(segment_path(dir, n)) else {
            continue;
        };
        let walk = SegmentRecords::new(file, n, 0)
            .map_err(|e| Refusal::Journal(e.to_string()))?
            .checked(SegmentRules::new(n, None));
        for info in walk {
            let info = info.map_err(|e| Refusal::Journal(e.to_string()))?;
            if wanted.remove(&info.id) {
                let Some((meta, _)) = message_of(info.header.kind, &info.meta) else {
                    return Err(Refusal::Missing(info.id));
                };
                if !scope.is_empty() && !meta.departments.iter().any(|d| in_scope(scope, d)) {
                    return Err(Refusal::OutOfScope(info.id));
                }
            }
            if info.id.offset >= last[&n] {
                break;
            }
        }
    }
    // The first id (in the order asked) that no walk reached.
    match ids.iter().find(|id| wanted.contains(id)) {
        Some(id) => Err(Refusal::Missing(*id)),
        None => Ok(()),
    }
}

// ---- the zip ----

/// The manifest's head: everything but the list of files.
#[derive(Debug, Clone, Serialize)]
struct Head {
    format: &'static str,
    exported_at: String,
    exported_by: Exporter,
    /// `{"ids": […], "count"}` or `{"query": {…}, "count"}`, as audited.
    selection: serde_json::Value,
    count: usize,
}

#[derive(Debug, Clone, Serialize)]
struct Exporter {
    user: String,
    role: &'static str,
    source: String,
    /// The user's department scope (empty: all mail).
    departments: Vec<String>,
}

/// One file of the export, as the manifest lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Entry {
    /// The journal record id.
    pub id: String,
    pub file: String,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    pub size: u64,
    /// The journal record's own hash (its place in the chain), hex: `handoff archive verify`
    /// and the journal vouch for it.
    pub record_hash: String,
    /// The record's time, as its meta says.
    pub time: String,
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Sends the zip of `ids` through `tx` in chunks; on an error, ends with that error and no
/// more bytes (the zip left without its central directory: no unzip takes it for whole).
fn stream(
    dir: &std::path::Path,
    ids: &[RecordId],
    head: &Head,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let failed = Arc::new(AtomicBool::new(false));
    let out = Chunks {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
        failed: failed.clone(),
    };
    let mut zip = zip::ZipWriter::new_stream(out);
    let result = write_entries(&mut zip, dir, ids, head).and_then(|()| {
        let mut out = zip.finish()?.into_inner();
        out.flush()?;
        Ok(())
    });
    if let Err(e) = result {
        // Whatever the zip writer writes when it is dropped (it completes the zip) is
        // discarded, and the error reaches the body after the chunks already sent.
        failed.store(true, Ordering::SeqCst);
        tracing::error!(
            "archive console: export by {} aborted: {e}",
            head.exported_by.user
        );
        let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
    }
}

/// Writes each message into `zip` as it is read (one at a time), then `manifest.json` and
/// `SHA256SUMS`.
fn write_entries(
    zip: &mut zip::ZipWriter<zip::write::StreamWriter<Chunks>>,
    dir: &std::path::Path,
    ids: &[RecordId],
    head: &Head,
) -> Result<(), AnyError> {
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        // Mail is mostly text and base64: level 1 already halves it, at a fraction of the CPU.
        .compression_level(Some(1))
        .unix_permissions(0o600);
    let mut entries = Vec::with_capacity(ids.len());
    // The segment file last read: a result set's messages mostly share a few segments.
    let mut open: Option<(u64, File)> = None;
    for id in ids {
        let file = match open.take() {
            Some((n, f)) if n == id.segment => f,
            _ => File::open(segment_path(dir, id.segment))
                .map_err(|e| format!("record {id}: segment {}: {e}", id.segment))?,
        };
        let one = read_one(&file, *id).map_err(|e| format!("record {id}: {e}"))?;
        open = Some((id.segment, file));
        let (info, body) = (one.0, one.1);
        let name = format!("{id}.eml");
        let time = message_of(info.kind, &info.meta)
            .map(|m| m.0.time)
            .unwrap_or_default();
        zip.start_file(
            name.as_str(),
            options.large_file(body.len() as u64 >= u64::from(u32::MAX)),
        )?;
        zip.write_all(&body)?;
        entries.push(Entry {
            id: id.to_string(),
            file: name,
            sha256: hex::encode(Sha256::digest(&body)),
            size: body.len() as u64,
            record_hash: hex::encode(info.hash),
            time,
        });
    }
    zip.start_file("manifest.json", options)?;
    zip.write_all(&manifest(head, &entries)?)?;
    zip.start_file("SHA256SUMS", options)?;
    zip.write_all(sha256sums(&entries).as_bytes())?;
    Ok(())
}

/// One record's header fields that an export needs.
struct One {
    kind: crate::journal::Kind,
    meta: Vec<u8>,
    hash: crate::journal::format::Hash,
}

/// Reads the one record at `id` (a place [`check`] found on the chain), its hash checked: its
/// exact bytes, with positioned reads (a walk would read a whole block for each record).
fn read_one(file: &File, id: RecordId) -> io::Result<(One, Vec<u8>)> {
    use crate::journal::format::{HASH_LEN, HEADER_LEN, Header, RecordHasher};
    use std::os::unix::fs::FileExt;
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let len = file.metadata()?.len();
    let mut raw = [0u8; HEADER_LEN];
    file.read_exact_at(&mut raw, id.offset)?;
    let header = Header::decode(&raw).map_err(|e| bad(e.to_string()))?;
    // The lengths are covered by the header's CRC; the file must still hold them.
    if id.offset.saturating_add(header.record_len()) > len {
        return Err(bad("the record is cut short".into()));
    }
    let mut meta = vec![0u8; header.meta_len as usize];
    file.read_exact_at(&mut meta, id.offset + HEADER_LEN as u64)?;
    let body_at = id.offset + HEADER_LEN as u64 + u64::from(header.meta_len);
    let mut body = vec![0u8; header.body_len as usize];
    file.read_exact_at(&mut body, body_at)?;
    let mut stored = [0u8; HASH_LEN];
    file.read_exact_at(&mut stored, body_at + header.body_len)?;
    let mut hasher = RecordHasher::new(&raw);
    hasher.update(&meta);
    hasher.update(&body);
    let hash = hasher.finish();
    if hash != stored {
        return Err(bad("its content does not match its hash".into()));
    }
    Ok((
        One {
            kind: header.kind,
            meta,
            hash,
        },
        body,
    ))
}

/// `manifest.json`: the head's fields, then `messages`.
fn manifest(head: &Head, entries: &[Entry]) -> Result<Vec<u8>, serde_json::Error> {
    let mut v = serde_json::to_value(head)?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("messages".into(), serde_json::to_value(entries)?);
    }
    let mut out = serde_json::to_vec_pretty(&v)?;
    out.push(b'\n');
    Ok(out)
}

/// `SHA256SUMS` in the format of `sha256sum` (two spaces, then the name): `sha256sum -c
/// SHA256SUMS` in the unzipped directory checks every message.
fn sha256sums(entries: &[Entry]) -> String {
    let mut out = String::with_capacity(entries.len() * 90);
    for e in entries {
        let _ = writeln!(out, "{}  {}", e.sha256, e.file);
    }
    out
}

/// The zip writer's output: chunks of [`CHUNK`] bytes into the response's channel (waiting while
/// it is full: the client's pace bounds the memory). After a failure it discards everything, so
/// that dropping the zip writer cannot complete a zip the client must not take for whole.
struct Chunks {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    failed: Arc<AtomicBool>,
}

impl Chunks {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            // Nothing more can reach the client: what follows is discarded.
            self.failed.store(true, Ordering::SeqCst);
            io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed.load(Ordering::SeqCst) {
            return Ok(data.len());
        }
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.send()
    }
}

/// The response body: the chunks as they come; an error ends the response abruptly (hyper
/// closes the connection before the last chunk of its chunked encoding).
struct ChannelBody(mpsc::Receiver<io::Result<Bytes>>);

impl axum::body::HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(hyper::body::Frame::data)))
    }
}

// ---- the search page's export forms ----

/// The two export forms under a result list: "Export selected" (the result rows' checkboxes
/// belong to it through their `form` attribute) and "Export all N results" (the search's
/// fields as hidden inputs).
pub(super) fn search_forms(csrf: &str, p: &SearchParams, total: usize) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/export\" id=\"export-selected\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{0}\"><input type=\"hidden\" name=\"export\" value=\"selected\">\
         <button type=\"submit\" id=\"export-selected-go\">Export selected</button></form>\
         <form method=\"post\" action=\"/export\" id=\"export-all\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{0}\"><input type=\"hidden\" name=\"export\" value=\"all\">",
        esc(csrf)
    );
    for (k, v) in [
        ("account", &p.account),
        ("from", &p.from),
        ("to", &p.to),
        ("text", &p.text),
        ("in_subject", &p.in_subject),
        ("in_body", &p.in_body),
        ("in_attachment", &p.in_attachment),
        ("since", &p.since),
        ("until", &p.until),
        ("department", &p.department),
        ("sub", &p.sub),
    ] {
        if let Some(v) = v {
            let _ = write!(
                out,
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                esc(v)
            );
        }
    }
    let _ = write!(
        out,
        "<button type=\"submit\" id=\"export-all-go\">Export all {total} results</button> \
         (a zip of .eml files with a manifest of their SHA-256)</form>"
    );
    out
}

/// The checkbox of one result row, in the "Export selected" form.
pub(super) fn row_checkbox(id: &str) -> String {
    format!(
        "<td><input type=\"checkbox\" name=\"id\" value=\"{}\" form=\"export-selected\" aria-label=\"select\"></td>",
        esc(id)
    )
}

// ---- attachments ----

/// `GET /message/{id}/attachment/{n}`: the `n`th attachment (as the message page lists them,
/// from 0), as `application/octet-stream` with `Content-Disposition: attachment` and a file name
/// made safe ([`disposition`]): never rendered, whatever type the sender claimed. Audited as
/// `download` with the record id and the attachment's index.
pub(super) async fn attachment(
    State(c): State<Arc<Console>>,
    Authz(a, _): AdminPage,
    UrlPath((id, n)): UrlPath<(String, String)>,
) -> Response {
    let Ok(n) = n.parse::<usize>() else {
        return bad_request(Some(&a), "not an attachment number", false);
    };
    let extra = serde_json::json!({ "attachment": n });
    let (rid, _, raw) = match read_message_as(&c, &a, &id, "download", extra, false).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(m) = MessageParser::default().parse(&raw) else {
        return not_found(&a, "the message does not parse as MIME", false);
    };
    let Some(part) = m.attachments().nth(n) else {
        return not_found(&a, "no such attachment", false);
    };
    let fallback = format!("{rid}-attachment-{n}");
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                disposition(part.attachment_name(), &fallback),
            ),
        ],
        part.contents().to_vec(),
    )
        .into_response()
}

/// Longest file name offered, in characters (file systems allow 255 bytes).
const MAX_NAME: usize = 100;

/// A file name safe to offer: the last path component only (no `../`), no control characters,
/// none of `"\/:*?<>|;%` (quotes and separators break the header or the file system), no leading
/// dot or space, at most [`MAX_NAME`] characters (the extension kept); `fallback` when nothing
/// is left. May contain non-ASCII characters.
pub(super) fn safe_name(name: Option<&str>, fallback: &str) -> String {
    let name = name.unwrap_or("");
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| match c {
            c if c.is_control() => '_',
            '"' | '\\' | '/' | ':' | '*' | '?' | '<' | '>' | '|' | ';' | '%' => '_',
            // Invisible or direction-changing characters (U+202E and kin) make
            // `invoice<U+202E>fdp.exe` display as `invoiceexe.pdf`.
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '_',
            c => c,
        })
        .collect();
    let trimmed = cleaned
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' ']);
    if trimmed.is_empty() {
        return fallback.to_string();
    }
    let chars: Vec<char> = trimmed.chars().collect();
    if chars.len() <= MAX_NAME {
        return trimmed.to_string();
    }
    // Keep a short extension: `report.pdf`, not `repo…`.
    let ext: String = match trimmed.rfind('.') {
        Some(dot) if trimmed.len() - dot <= 10 => trimmed[dot..].to_string(),
        _ => String::new(),
    };
    let keep = MAX_NAME - ext.chars().count();
    chars[..keep].iter().collect::<String>() + &ext
}

/// The `Content-Disposition` of an attachment (RFC 6266): `attachment; filename="…"` with an
/// ASCII-only name (others as `_`), and when the name has non-ASCII characters also
/// `filename*=UTF-8''…` (RFC 8187 percent-encoding), which browsers prefer.
pub(super) fn disposition(name: Option<&str>, fallback: &str) -> String {
    let safe = safe_name(name, fallback);
    let ascii: String = safe
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    match safe.is_ascii() {
        true => format!("attachment; filename=\"{ascii}\""),
        false => format!(
            "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
            url_param(&safe)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> RecordId {
        s.parse().unwrap()
    }

    #[test]
    fn the_export_form_is_parsed_strictly() {
        let (csrf, s) = parse_form(b"csrf=abc&export=selected&id=1-56&id=2-0&id=1-56").unwrap();
        assert_eq!(csrf, "abc");
        assert_eq!(s, Selection::Ids(vec![id("1-56"), id("2-0"), id("1-56")]));
        let Ok((_, Selection::Query(p))) = parse_form(
            b"csrf=x&export=all&since=2026-01-01&until=2026-01-31&text=a+b&sub=on&page=3",
        ) else {
            panic!("a query")
        };
        assert_eq!(p.text.as_deref(), Some("a b"));
        assert_eq!(p.sub.as_deref(), Some("on"));
        assert_eq!(p.page, None, "paging does not narrow an export");
        for (bad, want) in [
            (&b"csrf=x&export=selected&id=..%2Fetc"[..], "record id"),
            (b"csrf=x&export=all&bogus=1", "unknown"),
            (b"csrf=x&export=all&since=a&since=b", "twice"),
            (b"csrf=x&csrf=y&export=all", "twice"),
            (b"csrf=x&export=selected&since=2026-01-01", "only ids"),
            (b"csrf=x&export=all&id=1-0", "no ids"),
            (b"csrf=x&id=1-0", "`export`"),
        ] {
            let e = parse_form(bad).unwrap_err();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            dedup(vec![id("2-0"), id("1-0"), id("2-0")]),
            [id("2-0"), id("1-0")]
        );
    }

    #[test]
    fn hostile_attachment_names_become_safe_file_names() {
        let f = "3-99-attachment-0";
        for (name, want) in [
            (Some("report.pdf"), "report.pdf"),
            (Some("../../etc/passwd"), "passwd"),
            (Some("..\\..\\boot.ini"), "boot.ini"),
            (Some("../\"<b>evil.txt"), "__b_evil.txt"),
            (Some("<script>alert(1)</script>"), "script_"),
            (Some("a\r\nSet-Cookie: x=1"), "a__Set-Cookie_ x=1"),
            (Some("x\u{0}y;z%22"), "x_y_z_22"),
            (Some("invoice\u{202e}fdp.exe"), "invoice_fdp.exe"),
            (Some(".."), f),
            (Some("../"), f),
            (Some(" .hidden "), "hidden"),
            (None, f),
        ] {
            assert_eq!(safe_name(name, f), want, "{name:?}");
        }
        let long = format!("{}.pdf", "a".repeat(300));
        let s = safe_name(Some(&long), f);
        assert_eq!(s.chars().count(), MAX_NAME);
        assert!(s.ends_with("aaa.pdf"), "{s}");
        assert_eq!(
            disposition(Some("../\"x\".txt"), f),
            "attachment; filename=\"_x_.txt\""
        );
        assert_eq!(
            disposition(Some("Übersicht 2026.pdf"), f),
            "attachment; filename=\"_bersicht 2026.pdf\"; filename*=UTF-8''%C3%9Cbersicht%202026.pdf"
        );
        // Every disposition is a valid header value.
        for name in ["\u{7f}\u{1b}[31m", "ü\"\\", "a\tb"] {
            let d = disposition(Some(name), f);
            assert!(axum::http::HeaderValue::from_str(&d).is_ok(), "{d}");
            assert!(!d.contains(['\t', '\u{7f}', '\u{1b}']), "{d}");
        }
    }

    fn head() -> Head {
        Head {
            format: MANIFEST_FORMAT,
            exported_at: "2026-12-06T00:00:00Z".into(),
            exported_by: Exporter {
                user: "dora".into(),
                role: "archive_admin",
                source: "127.0.0.1".into(),
                departments: vec!["sales".into()],
            },
            selection: serde_json::json!({ "ids": ["1-56"], "count": 1 }),
            count: 1,
        }
    }

    /// The chunks `stream` sends for `ids` of a journal of two messages: (the bytes, whether
    /// it ended with an error).
    fn streamed(ids: impl Fn(&[RecordId]) -> Vec<RecordId>) -> (Vec<u8>, bool, Vec<Vec<u8>>) {
        use crate::journal::writer::{DEFAULT_SEGMENT_BYTES, Writer};
        use crate::journal::{Body, Entry, Kind};
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = Writer::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        // Hex noise, 200 KB: more than a chunk even deflated.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mails: Vec<Vec<u8>> = (0..2)
            .map(|i| {
                let mut m = format!("Subject: {i}\r\n\r\n");
                while m.len() < 200_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    m.push_str(&format!("{x:016x}\r\n"));
                }
                m.into_bytes()
            })
            .collect();
        let mut entries: Vec<Entry> = mails
            .iter()
            .map(|m| {
                let meta = serde_json::json!({ "time": "2026-01-01T00:00:00Z", "origin": "milter",
                    "sender": "a@example.net", "recipients": [], "final_recipients": [] });
                Entry::new(Kind::Message, &meta, Body::Bytes(m.clone()))
            })
            .collect();
        let written = w.append(&mut entries).unwrap().0;
        let (tx, mut rx) = mpsc::channel(1024);
        stream(dir.path(), &ids(&written), &head(), tx);
        let (mut bytes, mut failed) = (Vec::new(), false);
        while let Ok(item) = rx.try_recv() {
            match item {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(_) => failed = true,
            }
        }
        (bytes, failed, mails)
    }

    #[test]
    fn a_failed_export_ends_with_an_error_and_no_whole_zip() {
        use std::io::Read;
        let (zip, failed, mails) = streamed(|ids| ids.to_vec());
        assert!(!failed);
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        assert_eq!(z.len(), 4, "two messages, the manifest, the sums");
        let mut first = Vec::new();
        z.by_index(0).unwrap().read_to_end(&mut first).unwrap();
        assert_eq!(first, mails[0]);
        // The second id is no record: the first message has gone out, then the error.
        let (cut, failed, _) = streamed(|ids| {
            vec![
                ids[0],
                RecordId {
                    segment: ids[1].segment,
                    offset: ids[1].offset + 1,
                },
            ]
        });
        assert!(failed);
        assert!(
            cut.len() > 1000,
            "the first message was sent: {}",
            cut.len()
        );
        assert!(
            zip::ZipArchive::new(std::io::Cursor::new(cut)).is_err(),
            "no central directory after an error"
        );
    }

    #[test]
    fn the_manifest_and_the_sums_name_every_file() {
        let head = head();
        let e = Entry {
            id: "1-56".into(),
            file: "1-56.eml".into(),
            sha256: hex::encode(Sha256::digest(b"x")),
            size: 1,
            record_hash: "00".repeat(32),
            time: "2026-01-02T10:00:00Z".into(),
        };
        let m: serde_json::Value =
            serde_json::from_slice(&manifest(&head, std::slice::from_ref(&e)).unwrap()).unwrap();
        assert_eq!(m["format"], MANIFEST_FORMAT);
        assert_eq!(m["exported_by"]["user"], "dora");
        assert_eq!(m["count"], 1);
        assert_eq!(m["selection"]["ids"][0], "1-56");
        let back: Vec<Entry> = serde_json::from_value(m["messages"].clone()).unwrap();
        assert_eq!(back.as_slice(), std::slice::from_ref(&e));
        assert_eq!(
            sha256sums(&[e]),
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881  1-56.eml\n"
        );
    }
}
