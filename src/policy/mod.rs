//! The policy: what the admin wrote in the TOML file, compiled into lookup tables the engine reads.
//!
//! Loading has two stages (see [`raw`] and [`compile`]): a serde model of exactly what was written,
//! then a validated [`Policy`] in which bad states cannot be represented: every address parses,
//! every template exists, no alias or forward chain loops or grows past its bounds. Any problem is
//! reported with `FILE:LINE:COL`, all problems at once.
//!
//! This module reads files (the policy and its includes) and nothing else; the engine that uses a
//! [`Policy`] lives in [`crate::engine`] and does no I/O at all.

mod compile;
pub mod diag;
mod raw;
pub mod reply;
pub mod template;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jiff::civil::Date;

use crate::address::Address;
pub use diag::{Diagnostic, Diagnostics, Origin, SourceFile, Sources};
pub use reply::{ReplyClass, SmtpReply};

/// How deep alias and forward chains may nest, and how many addresses one recipient may expand
/// to. Postfix's own `virtual_alias_recursion_limit` and `virtual_alias_expansion_limit` default
/// to 1000 each; handoff is stricter on depth because an offboarding chain deeper than a few
/// hops is almost always a mistake.
pub const MAX_DEPTH: usize = 8;
pub const MAX_WIDTH: usize = 1000;

/// An account's state, as admins write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Active,
    Departed,
    Disabled,
    Frozen,
    Deleted,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Active,
        State::Departed,
        State::Disabled,
        State::Frozen,
        State::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Departed => "departed",
            State::Disabled => "disabled",
            State::Frozen => "frozen",
            State::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The reply class a state refuses mail with, if it refuses mail.
    pub fn refusal(self) -> Option<ReplyClass> {
        match self {
            State::Active | State::Departed => None,
            State::Disabled | State::Deleted => Some(ReplyClass::Permanent),
            State::Frozen => Some(ReplyClass::Temporary),
        }
    }

    /// Whether an account in this state may send mail.
    pub fn may_send(self) -> bool {
        matches!(self, State::Active | State::Departed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[accounts."…"]` entry, validated.
#[derive(Debug, Clone)]
pub struct Account {
    pub address: Address,
    pub state: State,
    pub name: String,
    pub department: Option<String>,
    pub successor: Option<Address>,
    /// Where mail goes while departed; defaults to the successor.
    pub forward: Vec<Address>,
    /// Departed: whether the account's own mailbox keeps a copy.
    pub keep_copy: bool,
    /// Name of the auto-reply template, if any.
    pub autoreply: Option<String>,
    /// From this date on the account behaves as `then`.
    pub until: Option<Date>,
    pub then: Option<State>,
    /// The admin's reply for refused mail, replacing the state's default.
    pub reply: Option<SmtpReply>,
    pub origin: Origin,
}

impl Account {
    /// The state in force on `today`: `then` once `until` has come.
    pub fn state_on(&self, today: Date) -> State {
        match (self.until, self.then) {
            (Some(until), Some(then)) if today >= until => then,
            _ => self.state,
        }
    }
}

/// One `[aliases]` entry, validated.
#[derive(Debug, Clone)]
pub struct Alias {
    pub address: Address,
    pub members: Vec<Address>,
    pub origin: Origin,
}

/// One auto-reply template.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub subject: template::Text,
    pub body: template::Text,
    /// The `From:` of replies; the departed address when absent.
    pub from: Option<Address>,
    /// When `{original_subject}` holds the original's Subject (else it is empty).
    pub original_subject: OriginalSubject,
}

/// `[templates.NAME] original_subject`: whose Subject `{original_subject}` may repeat. The
/// reply goes to the envelope sender, which anyone can forge: a Subject repeated to a forged
/// sender carries a stranger's text to a third party, from a corporate address (backscatter
/// spam). The default repeats it only to senders a trusted `Authentication-Results` vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OriginalSubject {
    Always,
    /// Only when a trusted `Authentication-Results` vouches for the envelope sender's domain
    /// (see `[autoreply] authserv_id`); without `authserv_id`, never.
    #[default]
    Authenticated,
    Never,
}

impl OriginalSubject {
    pub const NAMES: &str = "always, authenticated, never";

    pub fn parse(s: &str) -> Option<OriginalSubject> {
        match s {
            "always" => Some(OriginalSubject::Always),
            "authenticated" => Some(OriginalSubject::Authenticated),
            "never" => Some(OriginalSubject::Never),
            _ => None,
        }
    }
}

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Where content-filter mode sends a message after deciding on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// SMTP, normally Postfix's reinjection listener (FILTER_README: 127.0.0.1:10025).
    Smtp(SocketAddr),
    /// LMTP to a final delivery agent (TCP or a unix socket).
    Lmtp(ListenAddr),
}

/// The content-filter front end (`[lmtp]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmtpSettings {
    pub next_hop: NextHop,
    /// Sessions served at once; more get `421 4.3.2` (Postfix retries later).
    pub max_connections: usize,
    pub max_message_bytes: u64,
    pub max_recipients: usize,
}

/// Process-level settings: listeners and storage take effect at start-up only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub milter: Option<ListenAddr>,
    pub lmtp: Option<ListenAddr>,
    /// How the LMTP/SMTP front end behaves (used when `lmtp` is set).
    pub lmtp_options: LmtpSettings,
    pub metrics: Option<SocketAddr>,
    pub relay: SocketAddr,
    pub journal_dir: PathBuf,
    pub state_dir: PathBuf,
    pub archive_enabled: bool,
    pub retention_days: u32,
    /// Mail to or from these addresses is never pruned.
    pub legal_hold: Vec<Address>,
    /// An external archive that gets a copy of every accepted message.
    pub copy_to: Option<Address>,
    /// Journal segments are sealed at this size.
    pub segment_bytes: u64,
    pub autoreply: AutoreplySettings,
    /// Whether the per-message log line names addresses (`[log] addresses`, default true). Takes
    /// effect on reload.
    pub log_addresses: bool,
}

/// `[autoreply]`: how often departed accounts may answer, and where that is remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoreplySettings {
    /// One reply per sender per account within this many days.
    pub days: u32,
    /// Replies per clock hour from this instance, all accounts together.
    pub max_per_hour: u32,
    /// Replies per clock hour from this instance for one account.
    pub max_per_hour_per_account: u32,
    /// A Redis URL shared by several instances; `None`: a file under `[storage] state`.
    pub store: Option<String>,
    /// Reply only to senders a trusted `Authentication-Results` header vouches for. Default: on
    /// when `authserv_id` is set (there is nothing to trust without it).
    pub require_authenticated: bool,
    /// The authserv-ids (RFC 8601) whose `Authentication-Results` are trusted, lower case.
    pub authserv_ids: Vec<String>,
}

impl Settings {
    /// The settings that only a restart can change, by name, when they differ.
    pub fn restart_needed(&self, new: &Settings) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.milter != new.milter {
            out.push("listen.milter");
        }
        if self.lmtp != new.lmtp {
            out.push("listen.lmtp");
        }
        if self.lmtp_options != new.lmtp_options {
            out.push("lmtp");
        }
        if self.metrics != new.metrics {
            out.push("listen.metrics");
        }
        if self.journal_dir != new.journal_dir {
            out.push("storage.journal");
        }
        if self.state_dir != new.state_dir {
            out.push("storage.state");
        }
        if self.archive_enabled != new.archive_enabled {
            out.push("archive.enabled");
        }
        if self.segment_bytes != new.segment_bytes {
            out.push("archive.segment_mb");
        }
        if self.autoreply.store != new.autoreply.store {
            out.push("autoreply.store");
        }
        out
    }
}

/// The hasher of the tables the engine looks addresses up in, several times per recipient.
/// foldhash is several times faster than std's SipHash on short keys and still seeded per
/// process. Hash flooding needs inserted keys, and only the admin's policy inserts any; mail
/// only looks up.
pub(crate) type LookupHasher = foldhash::fast::RandomState;

/// Address → entry, the table every lookup goes through.
pub(crate) type Index = HashMap<Address, Node, LookupHasher>;

/// What an address names in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Account(usize),
    Alias(usize),
}

/// A loaded, validated policy. Immutable: a reload builds a new one.
#[derive(Debug, Clone)]
pub struct Policy {
    pub sources: Sources,
    pub settings: Settings,
    pub local_domains: Vec<String>,
    domain_set: HashSet<String, LookupHasher>,
    pub recipient_delimiter: Option<char>,
    pub accounts: Vec<Account>,
    pub aliases: Vec<Alias>,
    pub templates: BTreeMap<String, Template>,
    /// The `include` patterns, made absolute, so a watcher can see new files appear.
    pub include_patterns: Vec<PathBuf>,
    index: Index,
    /// What each alias and departed account expands to, filled as mail reaches them; the engine
    /// owns its contents. A reload builds a new policy, so it never outlives the entries.
    pub(crate) expansions: crate::engine::ExpansionCache,
}

/// A lookup hit: the node, and the base address when the hit came from stripping `+detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub node: Node,
    pub key: Address,
    pub via_detail: bool,
}

impl Policy {
    /// Whether mail for this domain is handoff's to decide.
    pub fn is_local(&self, domain: &str) -> bool {
        self.domain_set.contains(domain)
    }

    /// Looks an address up the way Postfix's virtual tables do with `recipient_delimiter`: the
    /// full address first, then without its `+detail`.
    pub fn lookup(&self, addr: &Address) -> Option<Hit> {
        if let Some(node) = self.index.get(addr) {
            return Some(Hit {
                node: *node,
                key: addr.clone(),
                via_detail: false,
            });
        }
        // The base is only a key here: build it as a plain string, and let the hit share the
        // policy's own copy of the address instead of allocating one.
        let (base, domain) = addr.base_parts(self.recipient_delimiter?)?;
        let mut probe = String::with_capacity(base.len() + 1 + domain.len());
        probe.push_str(base);
        probe.push('@');
        probe.push_str(domain);
        let (key, node) = self.index.get_key_value(probe.as_str())?;
        Some(Hit {
            node: *node,
            key: key.clone(),
            via_detail: true,
        })
    }

    /// The node's position among all nodes: accounts first, then aliases.
    pub(crate) fn node_id(&self, node: Node) -> usize {
        match node {
            Node::Account(i) => i,
            Node::Alias(i) => self.accounts.len() + i,
        }
    }

    pub fn account(&self, addr: &Address) -> Option<&Account> {
        match self.lookup(addr)?.node {
            Node::Account(i) => Some(&self.accounts[i]),
            Node::Alias(_) => None,
        }
    }

    /// Accounts per configured state, in [`State::ALL`] order.
    pub fn accounts_by_state(&self) -> [(State, usize); 5] {
        State::ALL.map(|s| (s, self.accounts.iter().filter(|a| a.state == s).count()))
    }

    /// The one-line summary `handoff check` prints.
    pub fn summary(&self) -> String {
        let states: Vec<String> = self
            .accounts_by_state()
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        format!(
            "{} accounts ({}), {} aliases, {} templates, {} files",
            self.accounts.len(),
            states.join(", "),
            self.aliases.len(),
            self.templates.len(),
            self.sources.files.len()
        )
    }

    /// Parses a policy from text (no includes: those need files on disk). For tests and fuzzing.
    pub fn from_text(path: impl Into<PathBuf>, text: &str) -> Result<Policy, Diagnostics> {
        let sources = Sources {
            files: vec![SourceFile {
                path: path.into(),
                text: text.to_string(),
            }],
        };
        compile::compile(sources, None)
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Loads and validates the policy file at `path` and the files it includes.
pub fn load(path: &Path) -> Result<Policy, LoadError> {
    load_with(path, &HashMap::new())
}

/// Loads like [`load`], with the text of some files (the main file or included ones, by the path
/// the load would read them at) taken from `edited` instead of the disk: the admin commands
/// validate an edit as a whole before writing it.
pub fn load_with(path: &Path, edited: &HashMap<PathBuf, String>) -> Result<Policy, LoadError> {
    let text = match edited.get(path) {
        Some(t) => t.clone(),
        None => read(path)?,
    };
    // A policy file with nothing in it is far more likely a truncated save or a failed deploy
    // than an intent to drop every account (disabled mailboxes would start taking mail), so it
    // is refused; a deliberately minimal policy still names something, e.g. `[domains]`.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        let d = Diagnostic {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: "the policy file is empty (a truncated save?); refused so that it cannot drop every account".into(),
        };
        return Err(LoadError::Invalid(Diagnostics(vec![d])));
    }
    let sources = Sources {
        files: vec![SourceFile {
            path: path.to_path_buf(),
            text,
        }],
    };
    let includes = |base: &Path, pattern: &str| {
        let mut files = read_includes(base, pattern)?;
        for f in &mut files {
            if let Some(t) = edited.get(&f.path) {
                f.text = t.clone();
            }
        }
        Ok(files)
    };
    compile::compile(sources, Some(&includes)).map_err(LoadError::Invalid)
}

fn read(path: &Path) -> Result<String, LoadError> {
    read_file(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The largest policy file, main or included, that handoff reads. A policy of 100,000 accounts
/// (the `policy` bench) is about 15 MB in one file; 64 MiB leaves room for four times that, and
/// bounds what a mistaken path (a log file, a disk image) costs in memory: every file is held
/// whole, for diagnostics and for the admin commands' edits.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads one policy file: a regular file (after following links) of at most [`MAX_FILE_BYTES`].
/// Not a device (`/dev/zero` never ends, `/dev/stdin` waits for a terminal), a FIFO (opening one
/// blocks until a writer comes) or a socket: those are refused from their `stat`, before `open`.
fn read_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let not_regular = |meta: &std::fs::Metadata| {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        let what = match () {
            _ if t.is_dir() => "a directory",
            _ if t.is_char_device() || t.is_block_device() => "a device",
            _ if t.is_fifo() => "a FIFO",
            _ if t.is_socket() => "a socket",
            _ => "not a regular file",
        };
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what}; a policy file must be a regular file"),
        )
    };
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let file = std::fs::File::open(path)?;
    // The file that was opened, not the name that was checked.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} MiB", MAX_FILE_BYTES >> 20),
        )
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut text = String::new();
    // `take`: a file that grows while it is read is still bounded.
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

/// Expands one `include` pattern, relative to the including file's directory, into the files it
/// names, in sorted order. A pattern with no wildcard must name an existing file; a wildcard
/// pattern may match nothing (an empty `accounts.d/` is normal).
fn read_includes(base: &Path, pattern: &str) -> Result<Vec<SourceFile>, String> {
    let full = base.join(pattern);
    let full_str = full.to_string_lossy();
    let mut out = Vec::new();
    let paths =
        glob::glob(&full_str).map_err(|e| format!("bad include pattern `{pattern}`: {e}"))?;
    for entry in paths {
        let path = entry
            .map_err(|e| format!("cannot read include {}: {}", e.path().display(), e.error()))?;
        if path.is_dir() {
            continue;
        }
        let text =
            read_file(&path).map_err(|e| format!("cannot read include {}: {e}", path.display()))?;
        out.push(SourceFile { path, text });
    }
    let has_wildcard = pattern.contains(['*', '?', '[']);
    if out.is_empty() && !has_wildcard {
        return Err(format!(
            "include `{pattern}`: no such file ({})",
            full.display()
        ));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The directory that relative paths in a policy file are taken from.
pub(crate) fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
