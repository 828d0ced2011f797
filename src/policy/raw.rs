//! Stage one of loading: exactly what the admin wrote, as serde structs.
//!
//! Each section, template, alias and account is deserialized on its own from the parsed TOML
//! tree, so a mistake in one entry does not hide the mistakes in the next: `handoff check` reports
//! them all. Unknown keys are errors (`deny_unknown_fields`): a misspelt `keep_cpy` must not be
//! silently ignored. Values whose *meaning* needs checking (states, addresses, replies, dates) stay
//! strings with their spans here and are judged in [`super::settings`] and [`super::graph`].

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diag::{Collector, FileId, Origin};

/// A string with where it was written.
pub type SString = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub milter: Option<SString>,
    pub lmtp: Option<SString>,
    pub metrics: Option<SString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelay {
    pub address: Option<SString>,
}

/// `[lmtp]`: the content-filter front end.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLmtp {
    pub next_hop: Option<SString>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_message_mb: Option<Spanned<i64>>,
    pub max_recipients: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub journal: Option<SString>,
    pub state: Option<SString>,
    pub index: Option<SString>,
    pub indexer: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomains {
    pub local: Option<Vec<SString>>,
    pub recipient_delimiter: Option<SString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    pub enabled: Option<bool>,
    pub retention_days: Option<Spanned<i64>>,
    pub legal_hold: Option<Vec<SString>>,
    pub copy_to: Option<SString>,
    pub segment_mb: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoreply {
    pub days: Option<Spanned<i64>>,
    pub max_per_hour: Option<Spanned<i64>>,
    pub max_per_hour_per_account: Option<Spanned<i64>>,
    /// `redis://host:port[/db]`: the once-per-sender memory shared by several instances.
    pub store: Option<SString>,
    pub require_authenticated: Option<Spanned<bool>>,
    pub authserv_id: Option<Spanned<Vec<SString>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub addresses: Option<bool>,
}

/// `[dkim."DOMAIN"]`: one sending domain's DKIM key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDkim {
    pub selector: SString,
    /// `ed25519-sha256` or `rsa-sha256`; checked in settings.
    pub algorithm: SString,
    /// The PEM private key file.
    pub key: SString,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    pub subject: SString,
    pub body: SString,
    pub from: Option<SString>,
    /// `always`, `authenticated` or `never`; checked in graph.
    pub original_subject: Option<SString>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub state: SString,
    pub name: Option<SString>,
    pub department: Option<SString>,
    pub successor: Option<SString>,
    pub forward: Option<Spanned<Vec<SString>>>,
    pub keep_copy: Option<Spanned<bool>>,
    pub autoreply: Option<SString>,
    /// A TOML date (`2027-05-01`) or a string holding one; checked in graph.
    pub until: Option<Spanned<toml::Value>>,
    pub then: Option<SString>,
    pub reply: Option<SString>,
}

/// `[srs]`: the Sender Rewriting Scheme for forwards that leave the company.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSrs {
    pub domain: Option<SString>,
    pub secret_file: Option<SString>,
    pub exclude_domains: Option<Vec<SString>>,
}

/// `[console]`: the archive console (a web page and JSON API for archive administrators and
/// auditors). Its users are in a file of their own (`users`), never in the policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    pub listen: Option<SString>,
    pub users: Option<SString>,
    pub require_totp: Option<Spanned<bool>>,
    pub tls_cert: Option<SString>,
    pub tls_key: Option<SString>,
    pub idle_minutes: Option<Spanned<i64>>,
    pub max_hours: Option<Spanned<i64>>,
}

/// A named entry (template, alias, account) with the span of its key.
#[derive(Debug)]
pub struct Entry<T> {
    pub key: String,
    pub origin: Origin,
    pub value: T,
}

/// One file, as written.
#[derive(Debug, Default)]
pub struct RawFile {
    pub include: Vec<SString>,
    pub listen: Option<(Origin, RawListen)>,
    pub relay: Option<(Origin, RawRelay)>,
    pub lmtp: Option<(Origin, RawLmtp)>,
    pub storage: Option<(Origin, RawStorage)>,
    pub domains: Option<(Origin, RawDomains)>,
    pub archive: Option<(Origin, RawArchive)>,
    pub autoreply: Option<(Origin, RawAutoreply)>,
    pub log: Option<(Origin, RawLog)>,
    pub srs: Option<(Origin, RawSrs)>,
    pub console: Option<(Origin, RawConsole)>,
    pub templates: Vec<Entry<RawTemplate>>,
    pub aliases: Vec<Entry<Vec<SString>>>,
    pub accounts: Vec<Entry<RawAccount>>,
    pub dkim: Vec<Entry<RawDkim>>,
}

const TOP_KEYS: &str = "include, listen, relay, lmtp, storage, domains, archive, autoreply, log, srs, console, templates, aliases, accounts, dkim";

/// Parses one file's text. Every problem goes to `errs`; what could be read is returned.
pub fn parse_file(file: FileId, text: &str, errs: &mut Collector) -> RawFile {
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // After a syntax error the recovered tree may be misleading; report only the syntax.
        for e in syntax {
            let at = e.span().map_or(0, |s| s.start);
            errs.error(
                file,
                at,
                format!("TOML syntax: {}", first_line(e.message())),
            );
        }
        return RawFile::default();
    }
    let mut raw = RawFile::default();
    for (key, value) in doc.into_inner() {
        let origin = Origin {
            file,
            span: key.span(),
        };
        match key.get_ref().as_ref() {
            "include" => {
                if let Some(v) = read::<Vec<SString>>(file, value, errs) {
                    raw.include = v;
                }
            }
            "listen" => raw.listen = read(file, value, errs).map(|v| (origin, v)),
            "relay" => raw.relay = read(file, value, errs).map(|v| (origin, v)),
            "lmtp" => raw.lmtp = read(file, value, errs).map(|v| (origin, v)),
            "storage" => raw.storage = read(file, value, errs).map(|v| (origin, v)),
            "domains" => raw.domains = read(file, value, errs).map(|v| (origin, v)),
            "archive" => raw.archive = read(file, value, errs).map(|v| (origin, v)),
            "autoreply" => raw.autoreply = read(file, value, errs).map(|v| (origin, v)),
            "log" => raw.log = read(file, value, errs).map(|v| (origin, v)),
            "srs" => raw.srs = read(file, value, errs).map(|v| (origin, v)),
            "console" => raw.console = read(file, value, errs).map(|v| (origin, v)),
            "templates" => raw.templates = entries(file, "templates", value, errs, read),
            "aliases" => raw.aliases = entries(file, "aliases", value, errs, read_members),
            "accounts" => raw.accounts = entries(file, "accounts", value, errs, read),
            "dkim" => raw.dkim = entries(file, "dkim", value, errs, read),
            other => errs.error(
                file,
                origin.span.start,
                format!("unknown key `{other}` (known: {TOP_KEYS})"),
            ),
        }
    }
    raw
}

/// Reads the entries of a table of named entries (`[accounts."a@b"]`, `[aliases]`, …).
fn entries<T>(
    file: FileId,
    section: &str,
    value: Spanned<DeValue<'_>>,
    errs: &mut Collector,
    read_one: fn(FileId, Spanned<DeValue<'_>>, &mut Collector) -> Option<T>,
) -> Vec<Entry<T>> {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        errs.error(file, span.start, format!("`{section}` must be a table"));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(table.len());
    for (key, value) in table {
        let origin = Origin {
            file,
            span: key.span(),
        };
        if let Some(v) = read_one(file, value, errs) {
            out.push(Entry {
                key: key.into_inner().into_owned(),
                origin,
                value: v,
            });
        }
    }
    out
}

/// Deserializes one value, reporting a failure at its own span.
fn read<T: DeserializeOwned>(
    file: FileId,
    value: Spanned<DeValue<'_>>,
    errs: &mut Collector,
) -> Option<T> {
    let start = value.span().start;
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            let at = e.span().map_or(start, |s| s.start);
            errs.error(file, at, first_line(e.message()).to_string());
            None
        }
    }
}

/// An alias's members: a list of addresses, or a single address string.
fn read_members(
    file: FileId,
    value: Spanned<DeValue<'_>>,
    errs: &mut Collector,
) -> Option<Vec<SString>> {
    if value.get_ref().is_str() {
        return read::<SString>(file, value, errs).map(|s| vec![s]);
    }
    if !value.get_ref().is_array() {
        let found = value.get_ref().type_str();
        errs.error(
            file,
            value.span().start,
            format!("an alias maps to a list of addresses, not a {found}"),
        );
        return None;
    }
    read(file, value, errs)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}
