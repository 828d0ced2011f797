//! `handoff status`: what the running daemon serves at `/status`, or, when no daemon answers,
//! what the files on disk say. One document either way, so admins read one format.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::escape;
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
    /// The running daemon's view. Reads the journal directory's listing (no record); `sizes`
    /// remembers the sealed segments' sizes between calls.
    pub fn from_daemon(
        config: &Path,
        snap: &Snapshot,
        journal: Option<&Journal>,
        autoreply_queue: Option<u64>,
        sizes: &segment::UsageCache,
    ) -> Status {
        // The journal open since start-up (a reload cannot move it).
        let dir = journal.map_or(snap.policy.settings.journal_dir.as_path(), Journal::dir);
        let mut s = Status::from_policy(config, &snap.policy, "daemon", dir, sizes);
        s.generation = Some(snap.generation);
        s.loaded_at = Some(snap.loaded_at.to_string());
        s.journal.healthy = journal.map(Journal::healthy);
        s.autoreply_queue = autoreply_queue;
        s
    }

    /// The view from disk when no daemon runs: the policy file as it is now.
    pub fn from_disk(config: &Path, policy: &Policy) -> Status {
        let sizes = segment::UsageCache::default();
        Status::from_policy(config, policy, "disk", &policy.settings.journal_dir, &sizes)
    }

    fn from_policy(
        config: &Path,
        policy: &Policy,
        source: &str,
        dir: &Path,
        sizes: &segment::UsageCache,
    ) -> Status {
        let settings = &policy.settings;
        let usage = sizes.usage(dir).unwrap_or_else(|e| {
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

/// The most `handoff status` reads from the metrics port: a real status document is a few hundred
/// bytes, and whatever else answers there must not make the command read without end.
const MAX_ANSWER: u64 = 64 * 1024;

/// Asks a daemon listening on `addr` for its status. `Ok(None)` when nothing listens there.
///
/// Whatever answers on the port is untrusted (another program may hold it): the answer must be a
/// `/status` document (the known fields, `source` = `daemon`, RFC 3339 times), and every string
/// in it is escaped ([`escape::escape`]) before anyone prints it, as is the status line of a
/// refusal, so its bytes cannot drive the terminal.
pub fn fetch(addr: SocketAddr) -> Result<Option<Status>, String> {
    let timeout = Duration::from_secs(5);
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
        Err(e) => return Err(format!("cannot reach {addr}: {e}")),
    };
    let io = |e: std::io::Error| format!("{addr}: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let request = format!("GET /status HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        let line = head.lines().next().unwrap_or_default();
        return Err(format!(
            "{addr} answered `{}` (another program on the metrics port?)",
            escape::escape(line)
        ));
    }
    let not_ours = |why: String| format!("{addr}: not handoff's status document ({why})");
    let status: Status =
        serde_json::from_str(body).map_err(|e| not_ours(escape::escape(&e.to_string()).into()))?;
    status.checked().map(Some).map_err(not_ours)
}

impl Status {
    /// The document as a daemon sends it, with every string escaped for a terminal.
    fn checked(self) -> Result<Status, String> {
        if self.source != "daemon" {
            return Err(format!("source `{}`", escape::escape(&self.source)));
        }
        let time = |t: Option<String>| match t {
            Some(t) if t.parse::<jiff::Timestamp>().is_err() => {
                Err(format!("`{}` is not a time", escape::escape(&t)))
            }
            t => Ok(t),
        };
        let text = |s: String| escape::escape(&s).into_owned();
        Ok(Status {
            source: self.source,
            config: text(self.config),
            generation: self.generation,
            loaded_at: time(self.loaded_at)?,
            policy: text(self.policy),
            journal: JournalStatus {
                enabled: self.journal.enabled,
                dir: text(self.journal.dir),
                segments: self.journal.segments,
                bytes: self.journal.bytes,
                last_record: time(self.journal.last_record)?,
                healthy: self.journal.healthy,
            },
            autoreply_queue: self.autoreply_queue,
        })
    }
}
