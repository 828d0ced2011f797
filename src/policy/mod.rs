//! The policy: what the admin wrote in the TOML file, compiled into lookup tables the engine reads.
//!
//! Loading has two stages (see [`raw`] and [`compile`]): a serde model of exactly what was written,
//! then a validated [`Policy`] in which bad states cannot be represented: every address parses,
//! every template exists, no alias or forward chain loops or grows past its bounds. Any problem is
//! reported with `FILE:LINE:COL`, all problems at once.
//!
//! Pure but for `load.rs`, which reads the policy file and its includes and nothing else; the
//! engine that uses a [`Policy`] lives in [`crate::engine`] and does no I/O at all.

mod compile;
pub mod departments;
pub mod diag;
mod graph;
mod load;
mod raw;
pub mod reply;
mod settings;
pub mod template;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jiff::civil::Date;

use crate::address::Address;

pub use diag::{Diagnostic, Diagnostics, Origin, SourceFile, Sources};
pub use load::{LoadError, MAX_FILE_BYTES, load, load_with};
pub use reply::{ReplyClass, SmtpReply};
pub use settings::default_index_dir;

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

/// Whether `selector` is a DKIM selector: dot-separated sub-domain labels (RFC 6376 section
/// 3.1), each of letters, digits and inner hyphens, at most 63 long.
pub fn is_dkim_selector(selector: &str) -> bool {
    selector.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    })
}

/// `[dkim."DOMAIN"] algorithm`: the DKIM signing algorithms handoff writes (RFC 6376, RFC 8463;
/// rsa-sha1 is historic, RFC 8301).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    Ed25519Sha256,
    RsaSha256,
}

impl DkimAlgorithm {
    pub const NAMES: &str = "ed25519-sha256, rsa-sha256";

    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::Ed25519Sha256 => "ed25519-sha256",
            DkimAlgorithm::RsaSha256 => "rsa-sha256",
        }
    }

    pub fn parse(s: &str) -> Option<DkimAlgorithm> {
        match s {
            "ed25519-sha256" => Some(DkimAlgorithm::Ed25519Sha256),
            "rsa-sha256" => Some(DkimAlgorithm::RsaSha256),
            _ => None,
        }
    }
}

/// `[dkim."DOMAIN"]`: the key that signs what handoff sends from one domain. The key file is
/// read by [`load`], not by the pure compiler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimDomain {
    /// Lookup form (A-labels, lower case), as [`Address::domain`].
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    /// Absolute (relative paths are taken from the policy file's directory).
    pub key_file: PathBuf,
    /// Where `key` was written, for the key file's errors.
    pub origin: Origin,
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
    /// `[storage] index`: the archive index, derived from the journal (default: `index` beside
    /// the journal directory).
    pub index_dir: PathBuf,
    /// `[storage] indexer`: whether `serve` keeps the index up to date (default on; off, each
    /// `archive search` catches it up itself).
    pub indexer: bool,
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
    /// `[dkim]`: the signing keys of sending domains, by domain. Takes effect on reload.
    pub dkim: Vec<DkimDomain>,
    /// `[srs]`; `None`: senders are never rewritten.
    pub srs: Option<SrsSettings>,
    /// `[console]`; `None` (no `listen`): the archive console is off.
    pub console: Option<ConsoleSettings>,
}

/// `[console]`: where the archive console listens and who may use it ([`crate::console`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    pub listen: std::net::SocketAddr,
    /// The users file (mode 0600): names, roles, argon2id hashes, department scopes.
    pub users: PathBuf,
    /// Every user must have a second factor (TOTP).
    pub require_totp: bool,
    /// The certificate chain and private key (PEM) the console serves HTTPS with; required
    /// unless `listen` is a loopback address.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A session ends after this long without a request.
    pub idle: std::time::Duration,
    /// A session ends this long after the login, however busy.
    pub max_age: std::time::Duration,
}

/// `[srs]`: the Sender Rewriting Scheme for forwards that leave the company ([`crate::srs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrsSettings {
    /// The domain SRS addresses are in (lookup form). Postfix must accept mail for it and route
    /// it through handoff, which reverses bounces to it.
    pub domain: String,
    /// One secret a line; the first signs, all verify.
    pub secret_file: PathBuf,
    /// Where `secret_file` is written in the main policy file (a byte offset), for the loader's
    /// diagnostics.
    pub secret_file_at: usize,
    /// Forward targets in these domains (lookup form) do not count as leaving the company.
    pub exclude_domains: Vec<String>,
    /// The rewriter with the secrets read from `secret_file`, set by the loader
    /// ([`load::load`]); `None` for a policy compiled from text alone.
    pub srs: Option<crate::srs::Srs>,
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
        if self.index_dir != new.index_dir {
            out.push("storage.index");
        }
        if self.indexer != new.indexer {
            out.push("storage.indexer");
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
        if self.console != new.console {
            out.push("console");
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
    /// The `[dkim]` keys, read by [`load`] (empty from [`Policy::from_text`]).
    pub dkim: crate::autoreply::dkim::Keys,
    index: Index,
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

/// The diagnostics of loading `text` as a policy file, as printed (none if it loads): for the
/// tests of each compiling stage.
#[cfg(test)]
pub(crate) fn test_errors(text: &str) -> Vec<String> {
    match Policy::from_text("p.toml", text) {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().map(|d| d.to_string()).collect(),
    }
}

/// The directory that relative paths in a policy file are taken from.
pub(crate) fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
