//! `handoff archive restore`: archived messages, chosen by a search (the filters of `archive
//! search`) or by `--id`, appended byte for byte to a mailbox on an IMAP server over TLS (a
//! successor's `Archive/alice`), each with its archive time as its INTERNALDATE.
//!
//! - Audited before anything is appended (as `archive export` is): no audit, no restore.
//! - Idempotent: the folder's messages are hashed first (SHA-256 of their bytes), and a
//!   message whose bytes are already there is not appended again; a rerun appends nothing.
//! - The password comes from `--password-file` or `HANDOFF_IMAP_PASSWORD`, never from an
//!   argument; errors name the server and the user, never the password.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sha2::{Digest, Sha256};

use super::archive::{Filters, IndexArg, JournalArg, search_index};
use super::archive_index;
use super::import::PASSWORD_ENV;
use super::progress::ProgressArg;
use crate::imap::{Client, Connect, Secret, Server, proto};
use crate::index::Search;
use crate::journal::{RecordId, search};
use crate::policy::Policy;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  handoff archive restore --account alice@corp.example --since 2025-01-01 \\
      --host imap.corp.example --user bob --into Archive/alice --password-file bob.pw
  handoff archive restore --id 3-1024 --id 3-2048 --host imap.corp.example --user bob \\
      --into Archive/alice

A rerun appends nothing: a message whose bytes the folder already holds is skipped.")]
pub struct RestoreArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    #[command(flatten)]
    pub index: IndexArg,
    /// Record ids, as search prints them (instead of the search filters)
    #[arg(long = "id", value_name = "ID", conflicts_with_all = ["account", "from", "to", "since", "until", "text", "parts", "department", "exact_department", "folder"])]
    pub ids: Vec<RecordId>,
    #[command(flatten)]
    pub filters: Filters,
    /// The IMAP server to append to (HOST or HOST:PORT; IMAP over TLS, port 993)
    #[arg(long = "host", value_name = "HOST")]
    pub host: String,
    /// The IMAP user whose mailbox receives the messages
    #[arg(long = "user", value_name = "USER")]
    pub user: String,
    /// The folder to append to (`/`-separated levels; created if need be)
    #[arg(long = "into", value_name = "FOLDER")]
    pub into: String,
    /// A file whose first line is the IMAP password [default: HANDOFF_IMAP_PASSWORD]
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Trust the PEM certificates in FILE (a private CA) instead of the system's
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Runs the command on the journal at `dir`.
pub fn run(dir: &Path, segment_bytes: u64, policy: Option<&Policy>, a: &RestoreArgs) -> ExitCode {
    match restore(dir, segment_bytes, policy, a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("handoff archive restore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn restore(
    dir: &Path,
    segment_bytes: u64,
    policy: Option<&Policy>,
    a: &RestoreArgs,
) -> Result<ExitCode, String> {
    let server = Server::parse(&a.host)?;
    let password = password(a)?;
    let q = a.filters.query();
    let no_filter = a.filters.is_empty();
    if a.ids.is_empty() && no_filter {
        return Err("say what to restore: --id, or search filters (--account, --folder, …)".into());
    }
    // (id, archive time): oldest first, so the folder's order follows the archive's.
    let mut chosen: Vec<(RecordId, Option<jiff::Timestamp>)> = Vec::new();
    if a.ids.is_empty() {
        for h in hits(dir, &q, a, policy)? {
            let id = h.id.parse().map_err(|_| format!("bad hit id {}", h.id))?;
            chosen.push((id, h.time.parse().ok()));
        }
        chosen.reverse();
    } else {
        chosen.extend(a.ids.iter().map(|&id| (id, None)));
    }
    let target = format!("imaps://{}@{server}/{}", a.user, a.into);
    // Recorded before anything is read or appended: no audit, no restore.
    let query = match a.ids.is_empty() {
        true => serde_json::json!({ "query": q, "into": target }),
        false => serde_json::json!({
            "ids": a.ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "into": target,
        }),
    };
    search::audit(dir, segment_bytes, "restore", &query, chosen.len())
        .map_err(|e| format!("cannot write the audit record: {e}"))?;

    let connect = Connect {
        server,
        ca_file: a.ca_file.clone(),
    };
    let mut client = Client::connect(&connect, dir).map_err(|e| e.to_string())?;
    client
        .login(&a.user, &password)
        .map_err(|e| e.to_string())?;
    let raw = proto::utf7_encode(&a.into);
    client.create(&raw).map_err(|e| e.to_string())?;
    let present = hashes(&mut client, &raw).map_err(|e| e.to_string())?;
    let (mut appended, mut already) = (0u64, 0u64);
    let mut present = present;
    for (id, time) in chosen {
        let bytes = search::message_bytes(dir, id).map_err(|e| format!("{id}: {e}"))?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if !present.insert(hash) {
            already += 1;
            continue;
        }
        client
            .append(&raw, true, time, bytes.len() as u64, &mut &bytes[..])
            .map_err(|e| format!("{id}: {e}"))?;
        appended += 1;
    }
    client.logout();
    println!("{target}: {appended} appended, {already} already there");
    Ok(ExitCode::SUCCESS)
}

/// The hits of the search, through the index (brought up to date first), or the whole
/// journal when the index cannot be used.
fn hits(
    dir: &Path,
    q: &search::Query,
    a: &RestoreArgs,
    policy: Option<&Policy>,
) -> Result<Vec<search::Hit>, String> {
    let s = Search {
        limit: usize::MAX,
        ..Search::all(q.clone())
    };
    let index = archive_index::index_dir(dir, a.index.index.as_deref(), policy);
    let shown = ProgressArg { quiet: false };
    match search_index(dir, &index, &s, Duration::from_secs(60), &shown) {
        Ok(page) => Ok(page.hits),
        Err(e) => {
            eprintln!(
                "handoff archive restore: the index cannot be used ({e}); reading the whole journal instead"
            );
            let mut hits = search::search(dir, q).map_err(|e| e.to_string())?;
            hits.reverse();
            Ok(hits)
        }
    }
}

/// SHA-256 of every message the folder holds.
fn hashes(client: &mut Client, raw: &str) -> Result<HashSet<[u8; 32]>, crate::imap::ImapError> {
    let mut out = HashSet::new();
    let sel = client.open(raw, false)?;
    if sel.exists == 0 {
        return Ok(out);
    }
    let uids = client.uids_from(1)?;
    for batch in uids.chunks(crate::import::remote::FETCH_BATCH) {
        client.fetch(batch[0], batch[batch.len() - 1], &mut |m| {
            if let Ok(found) = m
                .body
                .found("", Path::new(""), None, jiff::Timestamp::UNIX_EPOCH)
            {
                out.insert(found.sha256);
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// The password: the first line of --password-file, else HANDOFF_IMAP_PASSWORD.
fn password(a: &RestoreArgs) -> Result<Secret, String> {
    super::import::imap_password(a.password_file.as_deref())?
        .ok_or_else(|| format!("no password: give --password-file or set {PASSWORD_ENV}"))
}
