//! `handoff status`: what the running daemon serves at `/status`, or, when no daemon answers,
//! what the files on disk say. One document either way, so admins read one format.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::Snapshot;
use crate::journal::Journal;
use crate::journal::segment;
use crate::policy::Policy;

/// The status document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `daemon` when a running handoff answered, `disk` when read from the files.
    pub source: String,
    pub config: String,
    /// Generation of the policy in force; only a running daemon has one.
    pub generation: Option<u64>,
    /// When the policy in force was loaded (RFC 3339).
    pub loaded_at: Option<String>,
    /// `handoff check`'s one-line summary of the policy (in force, or on disk).
    pub policy: String,
    pub journal: JournalStatus,
    /// Auto-replies waiting to be sent; `null` until this version has an auto-reply sender.
    pub autoreply_queue: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalStatus {
    pub enabled: bool,
    pub dir: String,
    pub segments: usize,
    pub bytes: u64,
    /// When the last record was written (RFC 3339), if any.
    pub last_record: Option<String>,
    /// Whether the last write succeeded; only a running daemon knows.
    pub healthy: Option<bool>,
}

impl Status {
    /// The running daemon's view. Reads the journal directory's listing (no record).
    pub fn from_daemon(
        config: &Path,
        snap: &Snapshot,
        journal: Option<&Journal>,
        autoreply_queue: Option<u64>,
    ) -> Status {
        // The journal open since start-up (a reload cannot move it).
        let dir = journal.map_or(snap.policy.settings.journal_dir.as_path(), Journal::dir);
        let mut s = Status::from_policy(config, &snap.policy, "daemon", dir);
        s.generation = Some(snap.generation);
        s.loaded_at = Some(snap.loaded_at.to_string());
        s.journal.healthy = journal.map(Journal::healthy);
        s.autoreply_queue = autoreply_queue;
        s
    }

    /// The view from disk when no daemon runs: the policy file as it is now.
    pub fn from_disk(config: &Path, policy: &Policy) -> Status {
        Status::from_policy(config, policy, "disk", &policy.settings.journal_dir)
    }

    fn from_policy(config: &Path, policy: &Policy, source: &str, dir: &Path) -> Status {
        let settings = &policy.settings;
        let usage = segment::usage(dir).unwrap_or_else(|e| {
            tracing::warn!("cannot read the journal directory {}: {e}", dir.display());
            segment::Usage::default()
        });
        Status {
            source: source.into(),
            config: config.display().to_string(),
            generation: None,
            loaded_at: None,
            policy: policy.summary(),
            journal: JournalStatus {
                enabled: settings.archive_enabled,
                dir: dir.display().to_string(),
                segments: usage.segments,
                bytes: usage.bytes,
                last_record: usage
                    .last_write
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .map(|t| t.to_string()),
                healthy: None,
            },
            autoreply_queue: None,
        }
    }

    pub fn to_json(&self) -> String {
        // Plain strings, numbers and options: encoding cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The text `handoff status` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let running = match self.source.as_str() {
            "daemon" => "running",
            _ => "not running (read from disk)",
        };
        out.push_str(&format!("handoff: {running}\n"));
        out.push_str(&format!("config: {}\n", self.config));
        if let Some(g) = self.generation {
            let at = self.loaded_at.as_deref().unwrap_or("?");
            out.push_str(&format!("policy generation: {g} (loaded {at})\n"));
        }
        out.push_str(&format!("policy: {}\n", self.policy));
        let j = &self.journal;
        if j.enabled {
            out.push_str(&format!(
                "journal: {} ({} segments, {} bytes, last record {})",
                j.dir,
                j.segments,
                j.bytes,
                j.last_record.as_deref().unwrap_or("none")
            ));
            match j.healthy {
                Some(false) => out.push_str(", LAST WRITE FAILED\n"),
                _ => out.push('\n'),
            }
        } else {
            out.push_str("journal: off ([archive] enabled = false)\n");
        }
        match self.autoreply_queue {
            Some(n) => out.push_str(&format!("auto-reply queue: {n}\n")),
            None => out.push_str("auto-reply queue: not available\n"),
        }
        out
    }
}

/// Asks a daemon listening on `addr` for its status. `Ok(None)` when nothing listens there.
pub fn fetch(addr: SocketAddr) -> Result<Option<Status>, String> {
    let timeout = Duration::from_secs(5);
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
        Err(e) => return Err(format!("cannot reach {addr}: {e}")),
    };
    let io = |e: std::io::Error| format!("{addr}: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    write!(stream, "GET /status HTTP/1.1\r\nHost: {addr}\r\n\r\n").map_err(io)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(io)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        let line = head.lines().next().unwrap_or_default();
        return Err(format!(
            "{addr} answered `{line}` (another program on the metrics port?)"
        ));
    }
    serde_json::from_str(body)
        .map(Some)
        .map_err(|e| format!("{addr}: bad status document: {e}"))
}
