//! The importer: one account at a time, its sources read ([`super::source`]), each message
//! checked against the account's seen-set and appended as an imported record, in batches.
//!
//! - Safe next to a running daemon: the journal [`Writer`] locks the journal for each batch
//!   and first catches up with what the daemon appended, as every `handoff archive` command
//!   that writes does.
//! - One import at a time per journal (`import.lock`): two imports of the same account would
//!   each miss the other's messages in their seen-sets.
//! - Idempotent: the seen-set (account, SHA-256 of the bytes) is built from the journal's
//!   imported records when the importer opens, and grows as it appends. Nothing else is
//!   trusted: the journal is the source of truth.
//! - Audited: each account's run ends with an audit record (who, the account, the sources, the
//!   counts) in the same batch as its last messages.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::message::{facts, header_end};
use super::remote::{self, Mailbox};
use super::source::{self, Found, Item};
use super::status::{Counts, Status};
use super::{FolderMode, ImportError, Source};
use crate::address::Address;
use crate::fsops::Dir;
use crate::journal::format::Kind;
use crate::journal::record::{AuditMeta, ImportedMeta, MessageMeta, Provenance};
use crate::journal::records;
use crate::journal::records::Problem;
use crate::journal::writer::{Body, Entry, Writer};
use crate::policy::Policy;

/// At most this many records, or this many body bytes, share one batch (one fsync): the
/// daemon's own limits ([`crate::journal`]), so an import holds the journal's lock no longer
/// than a busy daemon does.
const BATCH_RECORDS: usize = 512;
const BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// The status file, in the journal directory.
pub const STATUS_FILE: &str = "import-status.json";
const LOCK_FILE: &str = "import.lock";

/// How messages are read and filed (the same for every account of a run).
#[derive(Debug, Clone)]
pub struct Options {
    pub folders: FolderMode,
    pub quoting: super::mbox::Quoting,
    /// This machine's name, for the provenance.
    pub host: String,
    /// Who runs the import ([`crate::journal::search::operator`]).
    pub by: String,
    /// IMAP: the password of sources that have none of their own.
    pub password: Option<crate::imap::Secret>,
    /// IMAP: PEM certificates to trust instead of the system's (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// IMAP: the folders to read (every folder when empty).
    pub imap_folders: Vec<String>,
}

/// One account's import: the account and where its mail is.
#[derive(Debug, Clone)]
pub struct Job {
    pub account: String,
    pub sources: Vec<Source>,
    /// The mailbox's owner at the source, when named (`--source-account`).
    pub source_account: Option<String>,
}

/// What one account's run did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub counts: Counts,
    /// The pieces that failed: `path: reason`.
    pub failures: Vec<String>,
    /// IMAP: where each folder's import stands now, by source.
    pub marks: Vec<(String, remote::Mark)>,
}

/// An open import on a journal directory.
pub struct Importer {
    dir: Dir,
    writer: Writer,
    /// Held for the importer's life (the lock goes with the file).
    _lock: File,
    /// SHA-256 of every message archived per account (the account's lookup form).
    seen: HashMap<String, HashSet<[u8; 32]>>,
    /// IMAP folder marks: (account's lookup form, source) → wire name → (UIDVALIDITY, UID).
    marks: Marks,
    pending: Vec<Entry>,
    pending_bytes: u64,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Importer {
    /// Opens the journal at `dir` for importing: takes the import lock, opens the writer
    /// (recovering a torn tail, as any writer does), and reads the seen-set from the journal.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Importer, ImportError> {
        let io = |cause| ImportError::Io {
            dir: dir.display().to_string(),
            cause,
        };
        let (handle, _) = Dir::open_private(dir, 0o700).map_err(io)?;
        let lock = handle.open_or_create(LOCK_FILE, 0o600).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ImportError::Busy {
                    dir: dir.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let (writer, _) = Writer::open(dir, segment_bytes)?;
        let (seen, marks) = seen_set(dir)?;
        Ok(Importer {
            dir: handle,
            writer,
            _lock: lock,
            seen,
            marks,
            pending: Vec::new(),
            pending_bytes: 0,
        })
    }

    /// Messages already archived for `account` (for tests and the status).
    pub fn seen(&self, account: &str) -> usize {
        self.seen.get(&key(account)).map_or(0, HashSet::len)
    }

    /// Imports one account's sources. `progress` is told the counts after every message. An
    /// error fails the account (what was appended before it stays: it is durable and will be
    /// a duplicate on the next run); a message that fails is counted in the outcome.
    pub fn account(
        &mut self,
        policy: &Policy,
        job: &Job,
        opts: &Options,
        progress: &mut dyn FnMut(&Counts),
    ) -> Result<Outcome, ImportError> {
        let mut out = Outcome::default();
        let result = self.account_inner(policy, job, opts, &mut out, progress);
        let (state, reason) = match &result {
            Ok(()) => ("done", out.failures.first().cloned()),
            Err(e) => ("failed", Some(e.to_string())),
        };
        // Who imported what, from where, how many: recorded with the account's last messages.
        let meta = AuditMeta {
            time: jiff::Timestamp::now().to_string(),
            user: opts.by.clone(),
            command: "import".into(),
            query: serde_json::json!({
                "account": job.account,
                "sources": job.sources.iter().map(Source::describe).collect::<Vec<_>>(),
                "host": opts.host,
                "folders": opts.folders,
                "state": state,
                "reason": reason,
                "seen": out.counts.seen,
                "imported": out.counts.imported,
                "duplicate": out.counts.duplicate,
                "failed": out.counts.failed,
                // Read back by the next run: where each IMAP folder stands.
                "imap": out.marks.iter().map(|(source, m)| serde_json::json!({
                    "source": source,
                    "mailbox": m.mailbox,
                    "uidvalidity": m.uidvalidity,
                    "uid": m.uid,
                })).collect::<Vec<_>>(),
            }),
            hits: out.counts.imported as usize,
        };
        self.pending
            .push(Entry::new(Kind::Audit, &meta, Body::Bytes(Vec::new())));
        let account_key = key(&job.account);
        for (source, m) in &out.marks {
            // Recorded in the audit entry above; kept for this run's later jobs too.
            self.marks
                .entry((account_key.clone(), source.clone()))
                .or_default()
                .insert(m.mailbox.clone(), (m.uidvalidity, m.uid));
        }
        let flushed = self.flush();
        result?;
        flushed?;
        Ok(out)
    }

    fn account_inner(
        &mut self,
        policy: &Policy,
        job: &Job,
        opts: &Options,
        out: &mut Outcome,
        progress: &mut dyn FnMut(&Counts),
    ) -> Result<(), ImportError> {
        let address = Address::parse_strict(&job.account)
            .map_err(|_| ImportError::NotAnAccount(job.account.clone()))?;
        let account = policy
            .account(&address)
            .ok_or_else(|| ImportError::NotAnAccount(job.account.clone()))?;
        let name = account.address.to_string();
        let departments: Vec<String> = account.department.iter().cloned().collect();
        let now = jiff::Timestamp::now();
        for src in &job.sources {
            let shown = src.describe();
            let before = out.counts.seen;
            let (path, format) = match src {
                Source::Path { path, format } => (path, *format),
                Source::Imap {
                    host,
                    user,
                    password,
                } => {
                    let origin = Origin {
                        kind: source::Kind::Imap,
                        host: host.clone().unwrap_or_default(),
                        source_account: job.source_account.clone().or(Some(user.clone())),
                        folder: match opts.folders {
                            FolderMode::Keep => None,
                            FolderMode::Source => {
                                Some(job.source_account.clone().unwrap_or(user.clone()))
                            }
                        },
                    };
                    let password = password.as_ref().or(opts.password.as_ref());
                    let marks = self.imap(
                        &key(&name),
                        host.as_deref(),
                        user,
                        password,
                        &shown,
                        opts,
                        |me, item| {
                            me.take(item, &name, &departments, opts, &origin, now, out)?;
                            progress(&out.counts);
                            Ok(())
                        },
                    )?;
                    out.marks
                        .extend(marks.into_iter().map(|m| (shown.clone(), m)));
                    continue;
                }
            };
            let fail = |cause| ImportError::Source {
                path: shown.clone(),
                cause,
            };
            let kind = source::detect(path, format).map_err(fail)?;
            let origin = Origin {
                kind,
                host: opts.host.clone(),
                source_account: job.source_account.clone(),
                folder: match opts.folders {
                    FolderMode::Keep => None,
                    FolderMode::Source => Some(job.source_account.clone().unwrap_or(name.clone())),
                },
            };
            let spool_dir = self.dir.path().to_path_buf();
            source::each(path, kind, opts.quoting, &spool_dir, &mut |item| {
                self.take(item, &name, &departments, opts, &origin, now, out)
                    .map_err(SourceOrImport::Import)?;
                progress(&out.counts);
                Ok(())
            })
            .map_err(|e| match e {
                SourceOrImport::Io(cause) => fail(cause),
                SourceOrImport::Import(e) => e,
            })?;
            if out.counts.seen == before {
                // Nothing at all is more likely a wrong path or format than an empty mailbox.
                out.counts.failed += 1;
                out.failures.push(format!(
                    "{shown}: no message found (a {} source; --format to say what it is)",
                    kind.as_str()
                ));
            }
        }
        Ok(())
    }

    /// Reads one IMAP source, handing each item to `f`; the folders' new marks.
    #[allow(clippy::too_many_arguments)]
    fn imap(
        &mut self,
        account_key: &str,
        host: Option<&str>,
        user: &str,
        password: Option<&crate::imap::Secret>,
        shown: &str,
        opts: &Options,
        mut f: impl FnMut(&mut Importer, Item) -> Result<(), ImportError>,
    ) -> Result<Vec<remote::Mark>, ImportError> {
        let setup = |what: String| ImportError::ImapSetup(format!("{shown}: {what}"));
        let host = host.ok_or_else(|| setup("no host (the CSV's host column)".into()))?;
        let server = crate::imap::Server::parse(host).map_err(setup)?;
        let password = password.ok_or_else(|| {
            setup(
                "no password (the CSV's password column, --password-file or HANDOFF_IMAP_PASSWORD)"
                    .into(),
            )
        })?;
        let marks = self
            .marks
            .get(&(account_key.to_string(), shown.to_string()))
            .cloned()
            .unwrap_or_default();
        let mailbox = Mailbox {
            connect: crate::imap::Connect {
                server,
                ca_file: opts.ca_file.clone(),
            },
            user,
            password,
            folders: &opts.imap_folders,
            marks: &marks,
        };
        let spool_dir = self.dir.path().to_path_buf();
        remote::each(&mailbox, shown, &spool_dir, &mut |item| f(self, item)).map_err(|e| match e {
            remote::Error::Imap(cause) => ImportError::Imap {
                source_name: shown.to_string(),
                cause,
            },
            remote::Error::Import(e) => e,
        })
    }

    /// Counts one item of a source and appends it when it is new for the account.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        item: Item,
        name: &str,
        departments: &[String],
        opts: &Options,
        origin: &Origin,
        now: jiff::Timestamp,
        out: &mut Outcome,
    ) -> Result<(), ImportError> {
        out.counts.seen += 1;
        match item {
            Item::Failed { path, reason } => {
                out.counts.failed += 1;
                out.failures.push(format!("{path}: {reason}"));
            }
            Item::Message(found) => {
                let fresh = self.seen.entry(key(name)).or_default().insert(found.sha256);
                if fresh {
                    let entry = imported(found, name, departments, opts, origin, now);
                    self.push(entry)?;
                    out.counts.imported += 1;
                } else {
                    out.counts.duplicate += 1;
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, entry: Entry) -> Result<(), ImportError> {
        self.pending_bytes += entry.body.len();
        self.pending.push(entry);
        if self.pending.len() >= BATCH_RECORDS || self.pending_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends what is pending as one batch: durable, or an error.
    pub fn flush(&mut self) -> Result<(), ImportError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.writer.append(&mut batch)?;
        Ok(())
    }
}

/// The status file of a journal directory.
#[derive(Debug)]
pub struct StatusFile {
    dir: Dir,
}

impl StatusFile {
    pub fn open(dir: &Path) -> Result<StatusFile, ImportError> {
        let (dir, _) = Dir::open_private(dir, 0o700).map_err(|cause| ImportError::Io {
            dir: dir.display().to_string(),
            cause,
        })?;
        Ok(StatusFile { dir })
    }

    /// The status as the last run left it (empty when there is none), runs left `running`
    /// shown failed (interrupted): call it while holding the import lock.
    pub fn load(&self) -> Status {
        let mut s = read_status(&self.dir);
        s.interrupted();
        s
    }

    /// Replaces the status file (written whole, then renamed into place: a reader never sees
    /// half of it).
    pub fn save(&self, status: &Status) -> Result<(), ImportError> {
        let io = |cause| ImportError::Io {
            dir: self.dir.path().display().to_string(),
            cause,
        };
        let tmp = format!("{STATUS_FILE}.new");
        match self.dir.remove(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let mut f = self.dir.create_new(&tmp, 0o600).map_err(io)?;
        let json = serde_json::to_vec(status).unwrap_or_default();
        f.write_all(&json).map_err(io)?;
        self.dir.rename(&tmp, STATUS_FILE).map_err(io)?;
        Ok(())
    }
}

/// The status of the journal at `dir` for `--status`: runs left `running` are shown as they
/// are while an import holds the lock, failed (interrupted) otherwise.
pub fn status_of(dir: &Path) -> Result<Status, ImportError> {
    let io = |cause| ImportError::Io {
        dir: dir.display().to_string(),
        cause,
    };
    let (handle, _) = Dir::open_private(dir, 0o700).map_err(io)?;
    let mut status = read_status(&handle);
    let lock = handle.open_or_create(LOCK_FILE, 0o600).map_err(io)?;
    if lock.try_lock().is_ok() {
        status.interrupted();
    }
    Ok(status)
}

fn read_status(dir: &Dir) -> Status {
    let mut text = Vec::new();
    match dir
        .read(STATUS_FILE)
        .and_then(|mut f| f.read_to_end(&mut text))
    {
        Ok(_) => serde_json::from_slice(&text).unwrap_or_default(),
        Err(_) => Status::default(),
    }
}

/// An error from a source walk: reading the source, or appending what it found.
enum SourceOrImport {
    Io(std::io::Error),
    Import(ImportError),
}

impl From<std::io::Error> for SourceOrImport {
    fn from(e: std::io::Error) -> Self {
        SourceOrImport::Io(e)
    }
}

/// The lookup form of an account, as the seen-set keys it.
fn key(account: &str) -> String {
    crate::index::document::address_key(account)
}

/// Where a source's messages come from, for their provenance.
struct Origin {
    kind: source::Kind,
    /// This machine, or the IMAP server.
    host: String,
    source_account: Option<String>,
    /// The one folder of `--folders source`.
    folder: Option<String>,
}

/// SHA-256 of every message archived, per account (its lookup form).
type Seen = HashMap<String, HashSet<[u8; 32]>>;

/// IMAP folder marks, as [`Importer`] keeps them.
type Marks = HashMap<(String, String), HashMap<String, (u32, u32)>>;

/// The imported record of one message.
fn imported(
    found: Found,
    account: &str,
    departments: &[String],
    opts: &Options,
    origin: &Origin,
    now: jiff::Timestamp,
) -> Entry {
    let head = &found.head[..header_end(&found.head)];
    let f = facts(head, found.mtime, now);
    let size = found.body.len();
    let meta = ImportedMeta {
        message: MessageMeta {
            time: f.time.to_string(),
            origin: "import".into(),
            message_id: f.message_id,
            // An imported message has no envelope: the header's From stands in for the sender,
            // its To and Cc for the recipients.
            sender: f.from.unwrap_or_default(),
            final_recipients: f.to,
            accounts: vec![account.to_string()],
            departments: departments.to_vec(),
            size,
            ..MessageMeta::default()
        },
        import: Provenance {
            source: origin.kind.as_str().into(),
            host: origin.host.clone(),
            source_account: origin.source_account.clone(),
            folder: origin.folder.clone().unwrap_or(found.folder),
            path: found.path.display().to_string(),
            offset: found.offset,
            sha256: hex::encode(found.sha256),
            date_fallback: f.date_fallback.map(str::to_string),
            by: opts.by.clone(),
            uidvalidity: found.uid.map(|(v, _)| v),
            uid: found.uid.map(|(_, u)| u),
        },
    };
    Entry::new(Kind::Imported, &meta, found.body)
}

/// What the seen-set reads of an imported record's meta.
#[derive(serde::Deserialize)]
struct SeenMeta {
    #[serde(default)]
    accounts: Vec<String>,
    import: SeenProvenance,
}

#[derive(serde::Deserialize)]
struct SeenProvenance {
    sha256: String,
}

/// What the marks read of an import's audit record.
#[derive(serde::Deserialize)]
struct MarkAudit {
    command: String,
    query: MarkQuery,
}

#[derive(serde::Deserialize)]
struct MarkQuery {
    account: String,
    #[serde(default)]
    imap: Vec<SourceMark>,
}

#[derive(serde::Deserialize)]
struct SourceMark {
    source: String,
    #[serde(flatten)]
    mark: remote::Mark,
}

/// Every (account, SHA-256) the journal's imported records hold, and where each IMAP folder
/// stood after the last run that read it (import audit records, the last one winning).
fn seen_set(dir: &Path) -> Result<(Seen, Marks), ImportError> {
    let mut seen = Seen::new();
    let mut marks = Marks::new();
    for info in records(dir) {
        let info = info.map_err(|e| match e.problem {
            Problem::Open(cause) => ImportError::Io {
                dir: dir.display().to_string(),
                cause,
            },
            _ => ImportError::Journal(e.into()),
        })?;
        if info.header.kind == Kind::Audit {
            if let Ok(a) = serde_json::from_slice::<MarkAudit>(&info.meta)
                && a.command == "import"
            {
                for m in a.query.imap {
                    marks
                        .entry((key(&a.query.account), m.source))
                        .or_default()
                        .insert(m.mark.mailbox, (m.mark.uidvalidity, m.mark.uid));
                }
            }
            continue;
        }
        if info.header.kind != Kind::Imported {
            continue;
        }
        let Ok(m) = serde_json::from_slice::<SeenMeta>(&info.meta) else {
            continue;
        };
        let mut hash = [0u8; 32];
        if hex::decode_to_slice(&m.import.sha256, &mut hash).is_err() {
            continue;
        }
        for a in &m.accounts {
            seen.entry(key(a)).or_default().insert(hash);
        }
    }
    Ok((seen, marks))
}

/// This machine's name, for the provenance.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
