//! Stage two of loading: judge what the admin wrote and build the lookup tables.
//!
//! Everything that can be wrong with a policy is found here, before any mail sees it: addresses,
//! states, replies of the wrong class, unknown templates and placeholders, `then` without
//! `until`, forwards to oneself, alias and forward cycles, chains deeper than [`MAX_DEPTH`] or
//! wider than [`MAX_WIDTH`]. Errors are collected, never returned early, so one run of
//! `handoff check` shows them all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use toml::Spanned;

use super::diag::{Collector, FileId, Origin, SourceFile, Sources};
use super::raw::{self, Entry, RawAccount, RawFile, SString};
use super::reply::SmtpReply;
use super::template::{TemplateError, Text};
use super::{
    Account, Alias, AutoreplySettings, Diagnostics, Index, ListenAddr, LmtpSettings, MAX_DEPTH,
    MAX_WIDTH, NextHop, Node, OriginalSubject, Policy, Settings, State, Template,
};
use crate::address::Address;

/// Reads the files an include pattern names, relative to a base directory.
pub(crate) type IncludeReader<'a> = &'a dyn Fn(&Path, &str) -> Result<Vec<SourceFile>, String>;

const DEFAULT_MILTER: &str = "127.0.0.1:8891";
const DEFAULT_METRICS: &str = "127.0.0.1:9464";
const DEFAULT_RELAY: &str = "127.0.0.1:10025";
const DEFAULT_JOURNAL: &str = "/var/lib/handoff/journal";
const DEFAULT_STATE: &str = "/var/lib/handoff/state";
/// Five years, counting one leap day.
const DEFAULT_RETENTION_DAYS: u32 = 1826;
/// RFC 3834 section 3.1.1 suggests a week between replies to the same sender; Sieve vacation
/// (RFC 5230 section 4.1) allows 1 day as a minimum, and handoff caps the setting at 60.
const DEFAULT_AUTOREPLY_DAYS: u32 = 7;
const DEFAULT_AUTOREPLY_MAX_PER_HOUR: u32 = 1000;
const DEFAULT_AUTOREPLY_MAX_PER_HOUR_PER_ACCOUNT: u32 = 100;

/// Builds a policy from its main file (already in `sources`), reading includes through `includes`.
pub(crate) fn compile(
    mut sources: Sources,
    includes: Option<IncludeReader<'_>>,
) -> Result<Policy, Diagnostics> {
    let mut errs = Collector::default();
    let main_path = sources.files[0].path.clone();
    let main = raw::parse_file(FileId(0), &sources.files[0].text, &mut errs);

    let mut raws = vec![main];
    let patterns = std::mem::take(&mut raws[0].include);
    let include_patterns = patterns
        .iter()
        .map(|p| super::base_dir(&main_path).join(p.get_ref()))
        .collect();
    // The files read so far, to skip a file that two patterns name: a set, so loading stays
    // linear in the number of include files.
    let mut seen: HashSet<PathBuf> = sources.files.iter().map(|f| f.path.clone()).collect();
    for pattern in patterns {
        let Some(read) = includes else {
            errs.error(
                FileId(0),
                pattern.span().start,
                "`include` needs the policy to be loaded from a file",
            );
            continue;
        };
        match read(&super::base_dir(&main_path), pattern.get_ref()) {
            Ok(files) => {
                for file in files {
                    if !seen.insert(file.path.clone()) {
                        continue;
                    }
                    let id = FileId(sources.files.len());
                    let raw = raw::parse_file(id, &file.text, &mut errs);
                    sources.files.push(file);
                    raws.push(raw);
                }
            }
            Err(message) => errs.error(FileId(0), pattern.span().start, message),
        }
    }
    for (i, raw) in raws.iter().enumerate().skip(1) {
        only_entries_in_includes(FileId(i), raw, &mut errs);
    }

    let settings = settings(&main_path, &raws[0], &mut errs);
    let (local_domains, delimiter) = domains(&raws, &mut errs);

    let mut b = Builder {
        sources: &sources,
        errs,
        accounts: Vec::new(),
        aliases: Vec::new(),
        templates: BTreeMap::new(),
        template_origins: HashMap::new(),
        index: Index::default(),
        delimiter,
    };
    b.templates(&mut raws);
    b.accounts_and_aliases(&mut raws, &local_domains);
    b.check_graph();

    if !b.errs.is_empty() {
        let errs = std::mem::take(&mut b.errs);
        return Err(errs.finish(&sources));
    }
    let Builder {
        accounts,
        aliases,
        templates,
        index,
        ..
    } = b;
    let domain_set = local_domains.iter().cloned().collect();
    let expansions = crate::engine::ExpansionCache::new(accounts.len() + aliases.len());
    Ok(Policy {
        sources,
        settings,
        local_domains,
        domain_set,
        recipient_delimiter: delimiter,
        accounts,
        aliases,
        templates,
        include_patterns,
        index,
        expansions,
    })
}

fn only_entries_in_includes(file: FileId, raw: &RawFile, errs: &mut Collector) {
    let sections = [
        ("listen", raw.listen.as_ref().map(|(o, _)| o)),
        ("relay", raw.relay.as_ref().map(|(o, _)| o)),
        ("lmtp", raw.lmtp.as_ref().map(|(o, _)| o)),
        ("storage", raw.storage.as_ref().map(|(o, _)| o)),
        ("domains", raw.domains.as_ref().map(|(o, _)| o)),
        ("archive", raw.archive.as_ref().map(|(o, _)| o)),
        ("autoreply", raw.autoreply.as_ref().map(|(o, _)| o)),
        ("log", raw.log.as_ref().map(|(o, _)| o)),
    ];
    for (name, origin) in sections {
        if let Some(o) = origin {
            errs.error(file, o.span.start, format!("`[{name}]` belongs in the main policy file; included files may hold only accounts, aliases and templates"));
        }
    }
    if let Some(first) = raw.include.first() {
        errs.error(
            file,
            first.span().start,
            "included files cannot include further files",
        );
    }
}

fn settings(main_path: &Path, raw: &RawFile, errs: &mut Collector) -> Settings {
    let f = FileId(0);
    let base = super::base_dir(main_path);
    let listen = raw.listen.as_ref().map(|(_, l)| l);
    let storage = raw.storage.as_ref().map(|(_, s)| s);
    let archive = raw.archive.as_ref().map(|(_, a)| a);
    let autoreply = raw.autoreply.as_ref().map(|(_, a)| a);

    let listen_addr =
        |v: Option<&SString>, default: Option<&str>, errs: &mut Collector| -> Option<ListenAddr> {
            let (text, at) = match v {
                Some(s) => (s.get_ref().as_str(), s.span().start),
                None => (default?, 0),
            };
            if text.is_empty() {
                return None;
            }
            match parse_listen(text, &base) {
                Ok(a) => Some(a),
                Err(e) => {
                    errs.error(f, at, e);
                    None
                }
            }
        };
    let milter = listen_addr(
        listen.and_then(|l| l.milter.as_ref()),
        Some(DEFAULT_MILTER),
        errs,
    );
    let lmtp = listen_addr(listen.and_then(|l| l.lmtp.as_ref()), None, errs);
    let metrics = match listen_addr(
        listen.and_then(|l| l.metrics.as_ref()),
        Some(DEFAULT_METRICS),
        errs,
    ) {
        Some(ListenAddr::Tcp(a)) => Some(a),
        Some(ListenAddr::Unix(_)) => {
            let at = listen
                .and_then(|l| l.metrics.as_ref())
                .map_or(0, |s| s.span().start);
            errs.error(
                f,
                at,
                "`listen.metrics` must be a TCP address (Prometheus scrapes over HTTP)",
            );
            None
        }
        None => None,
    };
    let relay = match raw.relay.as_ref().and_then(|(_, r)| r.address.as_ref()) {
        Some(s) => socket_addr(s.get_ref()).unwrap_or_else(|e| {
            errs.error(f, s.span().start, e);
            fallback_addr()
        }),
        None => socket_addr(DEFAULT_RELAY).unwrap_or_else(|_| fallback_addr()),
    };
    let path = |v: Option<&SString>, default: &str| -> PathBuf {
        let p = PathBuf::from(v.map_or(default, |s| s.get_ref().as_str()));
        if p.is_relative() { base.join(p) } else { p }
    };
    let journal_dir = path(storage.and_then(|s| s.journal.as_ref()), DEFAULT_JOURNAL);
    let state_dir = path(storage.and_then(|s| s.state.as_ref()), DEFAULT_STATE);

    let bounded = |v: Option<&Spanned<i64>>,
                   default: u32,
                   min: i64,
                   max: i64,
                   name: &str,
                   errs: &mut Collector|
     -> u32 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        if n < min || n > max {
            errs.error(
                f,
                v.span().start,
                format!("`{name}` is {n}; it must be between {min} and {max}"),
            );
            return default;
        }
        n as u32
    };
    let retention_days = bounded(
        archive.and_then(|a| a.retention_days.as_ref()),
        DEFAULT_RETENTION_DAYS,
        1,
        100 * 366,
        "archive.retention_days",
        errs,
    );
    let segment_mb = bounded(
        archive.and_then(|a| a.segment_mb.as_ref()),
        64,
        1,
        4096,
        "archive.segment_mb",
        errs,
    );
    let mut legal_hold = Vec::new();
    for a in archive
        .and_then(|a| a.legal_hold.as_ref())
        .into_iter()
        .flatten()
    {
        match Address::parse_strict(a.get_ref()) {
            Ok(addr) => legal_hold.push(addr),
            Err(e) => errs.error(
                f,
                a.span().start,
                format!("archive.legal_hold: bad address: {e}"),
            ),
        }
    }
    let copy_to =
        archive.and_then(|a| a.copy_to.as_ref()).and_then(|a| {
            match Address::parse_strict(a.get_ref()) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    errs.error(
                        f,
                        a.span().start,
                        format!("archive.copy_to: bad address: {e}"),
                    );
                    None
                }
            }
        });
    let lmtp_raw = raw.lmtp.as_ref().map(|(_, l)| l);
    let next_hop = match lmtp_raw.and_then(|l| l.next_hop.as_ref()) {
        Some(s) => parse_next_hop(s.get_ref(), &base).unwrap_or_else(|e| {
            errs.error(f, s.span().start, format!("lmtp.next_hop: {e}"));
            NextHop::Smtp(relay)
        }),
        // FILTER_README: the filter gives the message back to Postfix on the reinjection port.
        None => NextHop::Smtp(relay),
    };
    let lmtp_options = LmtpSettings {
        next_hop,
        max_connections: bounded(
            lmtp_raw.and_then(|l| l.max_connections.as_ref()),
            100,
            1,
            100_000,
            "lmtp.max_connections",
            errs,
        ) as usize,
        max_message_bytes: u64::from(bounded(
            lmtp_raw.and_then(|l| l.max_message_mb.as_ref()),
            64,
            1,
            4096,
            "lmtp.max_message_mb",
            errs,
        )) * 1024
            * 1024,
        max_recipients: bounded(
            lmtp_raw.and_then(|l| l.max_recipients.as_ref()),
            1000,
            1,
            100_000,
            "lmtp.max_recipients",
            errs,
        ) as usize,
    };
    let autoreply = autoreply_settings(autoreply, &bounded, errs);
    Settings {
        milter,
        lmtp,
        lmtp_options,
        metrics,
        relay,
        journal_dir,
        state_dir,
        archive_enabled: archive.and_then(|a| a.enabled).unwrap_or(true),
        retention_days,
        legal_hold,
        copy_to,
        segment_bytes: u64::from(segment_mb) * 1024 * 1024,
        autoreply,
        log_addresses: raw
            .log
            .as_ref()
            .and_then(|(_, l)| l.addresses)
            .unwrap_or(true),
    }
}

/// The `bounded` integer check of [`settings`]: value, default, min, max, name.
type BoundedCheck<'a> =
    dyn Fn(Option<&Spanned<i64>>, u32, i64, i64, &str, &mut Collector) -> u32 + 'a;

/// `[autoreply]`, validated; see [`AutoreplySettings`] for what each value means.
fn autoreply_settings(
    raw: Option<&raw::RawAutoreply>,
    bounded: &BoundedCheck<'_>,
    errs: &mut Collector,
) -> AutoreplySettings {
    let f = FileId(0);
    let days = bounded(
        raw.and_then(|a| a.days.as_ref()),
        DEFAULT_AUTOREPLY_DAYS,
        1,
        60,
        "autoreply.days",
        errs,
    );
    let max_per_hour = bounded(
        raw.and_then(|a| a.max_per_hour.as_ref()),
        DEFAULT_AUTOREPLY_MAX_PER_HOUR,
        1,
        1_000_000,
        "autoreply.max_per_hour",
        errs,
    );
    let max_per_hour_per_account = bounded(
        raw.and_then(|a| a.max_per_hour_per_account.as_ref()),
        DEFAULT_AUTOREPLY_MAX_PER_HOUR_PER_ACCOUNT,
        1,
        1_000_000,
        "autoreply.max_per_hour_per_account",
        errs,
    );
    let store = raw.and_then(|a| a.store.as_ref()).and_then(|s| {
        let url = s.get_ref().trim();
        match check_redis_url(url) {
            Ok(()) => Some(url.to_string()),
            Err(e) => {
                errs.error(f, s.span().start, format!("`autoreply.store`: {e}"));
                None
            }
        }
    });
    let mut authserv_ids = Vec::new();
    if let Some(list) = raw.and_then(|a| a.authserv_id.as_ref()) {
        for id in list.get_ref() {
            let text = id.get_ref().trim();
            // RFC 8601 section 2.2: authserv-id is a `value` (a token or quoted string); in
            // practice the receiving host's name. No spaces, `;` or comments.
            let bad = text.is_empty()
                || text.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || matches!(c, ';' | '(' | ')' | '"')
                });
            if bad {
                errs.error(
                    f,
                    id.span().start,
                    format!("`autoreply.authserv_id`: `{text}` is not an authserv-id (a host name such as mx.corp.example)"),
                );
            } else {
                authserv_ids.push(text.to_ascii_lowercase());
            }
        }
    }
    let require = raw.and_then(|a| a.require_authenticated.as_ref());
    // Safe by default: once the admin names the MTA whose results to trust, replies need them.
    let require_authenticated = require
        .map_or(raw.and_then(|a| a.authserv_id.as_ref()).is_some(), |r| {
            *r.get_ref()
        });
    if let Some(r) = require
        && *r.get_ref()
        && raw.and_then(|a| a.authserv_id.as_ref()).is_none()
    {
        errs.error(
            f,
            r.span().start,
            "`autoreply.require_authenticated` needs `authserv_id`: the Authentication-Results \
             headers of which hosts to trust",
        );
    }
    AutoreplySettings {
        days,
        max_per_hour,
        max_per_hour_per_account,
        store,
        require_authenticated,
        authserv_ids,
    }
}

/// A Redis URL handoff can connect to without TLS support: `redis://` or `redis+unix://`.
/// The refusal names the URL without its password (it goes to the terminal and the logs).
fn check_redis_url(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    let shown = redact_password(url);
    if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
        return Err(format!(
            "`{shown}` is not a Redis URL handoff supports (redis://host:port/db or redis+unix:///path)"
        ));
    }
    url.into_connection_info()
        .map(|_| ())
        .map_err(|e| format!("`{shown}`: {}", redact_password(&e.to_string())))
}

/// `url` with its password replaced by `***`: the password of the userinfo
/// (`scheme://user:PASSWORD@host`, RFC 3986 section 3.2.1) and a `pass=` query parameter (how
/// `redis+unix://` URLs carry it). Works on text that does not parse as a URL, which is when it
/// is shown, so it errs on hiding too much: the password runs from the first `:` after `://` to
/// the last `@` (a password with an unencoded `/` or `@` is hidden whole).
pub(crate) fn redact_password(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = url.find("://") {
        let start = scheme_end + 3;
        if let Some(at) = url[start..].rfind('@')
            && let Some(colon) = url[start..start + at].find(':')
        {
            out = format!("{}***{}", &url[..start + colon + 1], &url[start + at..]);
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if matches!(k, "pass" | "password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

fn fallback_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `unix:/path`, `inet:host:port` (Postfix's spelling) or `host:port`.
fn parse_listen(text: &str, base: &Path) -> Result<ListenAddr, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("`unix:` needs a socket path".into());
        }
        let p = PathBuf::from(path);
        return Ok(ListenAddr::Unix(if p.is_relative() {
            base.join(p)
        } else {
            p
        }));
    }
    socket_addr(text.strip_prefix("inet:").unwrap_or(text)).map(ListenAddr::Tcp)
}

/// `smtp:host:port` (or just `host:port`), `lmtp:host:port`, `lmtp:inet:host:port`,
/// `lmtp:unix:/path`.
fn parse_next_hop(text: &str, base: &Path) -> Result<NextHop, String> {
    if let Some(rest) = text.strip_prefix("lmtp:") {
        return parse_listen(rest, base).map(NextHop::Lmtp);
    }
    let rest = text.strip_prefix("smtp:").unwrap_or(text);
    if rest.starts_with("unix:") {
        return Err(format!(
            "`{text}`: SMTP needs a TCP address; use lmtp:unix:/path for a socket"
        ));
    }
    socket_addr(rest.strip_prefix("inet:").unwrap_or(rest)).map(NextHop::Smtp)
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    // `localhost:8891` resolves through /etc/hosts; a name that needs DNS is refused so that
    // start-up never depends on a resolver.
    match text.rsplit_once(':') {
        Some(("localhost", port)) => {
            let port: u16 = port.parse().map_err(|_| format!("`{text}`: bad port"))?;
            ("localhost", port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("`{text}`: localhost does not resolve"))
        }
        _ => Err(format!(
            "`{text}` is not an address with a port, like 127.0.0.1:8891, [::1]:8891 or unix:/path"
        )),
    }
}

fn domains(raws: &[RawFile], errs: &mut Collector) -> (Vec<String>, Option<char>) {
    let f = FileId(0);
    let raw = raws[0].domains.as_ref().map(|(_, d)| d);
    let delimiter = match raw.and_then(|d| d.recipient_delimiter.as_ref()) {
        None => Some('+'),
        Some(s) => {
            let mut chars = s.get_ref().chars();
            match (chars.next(), chars.next()) {
                (None, _) => None,
                (Some(c), None) if !c.is_alphanumeric() && c != '@' => Some(c),
                _ => {
                    errs.error(f, s.span().start, format!("`recipient_delimiter` must be one non-alphanumeric character or empty, not `{}`", s.get_ref()));
                    Some('+')
                }
            }
        }
    };
    let mut local = Vec::new();
    match raw.and_then(|d| d.local.as_ref()) {
        Some(list) => {
            for d in list {
                // The lookup form (A-labels), so `公司.中国` and `xn--55qx5d.xn--fiqs8s` are one.
                match crate::address::domain_lookup_form(d.get_ref()) {
                    Some(name) if !local.contains(&name) => local.push(name),
                    Some(_) => {}
                    None => errs.error(
                        f,
                        d.span().start,
                        format!(
                            "`{}` is not a domain name (or not valid IDNA, UTS 46)",
                            d.get_ref()
                        ),
                    ),
                }
            }
        }
        None => {
            // No list given: the domains of the addresses the policy names are the local ones.
            for raw in raws {
                let keys = raw
                    .accounts
                    .iter()
                    .map(|e| &e.key)
                    .chain(raw.aliases.iter().map(|e| &e.key));
                for key in keys {
                    if let Ok(a) = Address::parse_strict(key) {
                        let d = a.domain().to_string();
                        if !local.contains(&d) {
                            local.push(d);
                        }
                    }
                }
            }
        }
    }
    (local, delimiter)
}

struct Builder<'s> {
    sources: &'s Sources,
    errs: Collector,
    accounts: Vec<Account>,
    aliases: Vec<Alias>,
    templates: BTreeMap<String, Template>,
    template_origins: HashMap<String, Origin>,
    index: Index,
    delimiter: Option<char>,
}

impl Builder<'_> {
    fn templates(&mut self, raws: &mut [RawFile]) {
        for raw in raws.iter_mut() {
            for Entry { key, origin, value } in std::mem::take(&mut raw.templates) {
                if let Some(first) = self.template_origins.get(&key) {
                    let msg = format!(
                        "template `{key}` is defined twice (first at {})",
                        self.sources.describe(first)
                    );
                    self.errs.at(&origin, msg);
                    continue;
                }
                let subject = self.template_text(origin.file, &value.subject, &key, "subject");
                let body = self.template_text(origin.file, &value.body, &key, "body");
                if value.subject.get_ref().contains(['\r', '\n']) {
                    self.errs.error(
                        origin.file,
                        value.subject.span().start,
                        format!("template `{key}`: the subject must be one line"),
                    );
                }
                let from = value
                    .from
                    .as_ref()
                    .and_then(|f| self.address(origin.file, f));
                let original_subject = match &value.original_subject {
                    None => OriginalSubject::default(),
                    Some(s) => OriginalSubject::parse(s.get_ref()).unwrap_or_else(|| {
                        self.errs.error(
                            origin.file,
                            s.span().start,
                            format!(
                                "template `{key}`: original_subject `{}` is not one of {}",
                                s.get_ref(),
                                OriginalSubject::NAMES
                            ),
                        );
                        OriginalSubject::default()
                    }),
                };
                self.template_origins.insert(key.clone(), origin);
                if let (Some(subject), Some(body)) = (subject, body) {
                    self.templates.insert(
                        key.clone(),
                        Template {
                            name: key,
                            subject,
                            body,
                            from,
                            original_subject,
                        },
                    );
                }
            }
        }
    }

    fn template_text(
        &mut self,
        file: FileId,
        s: &SString,
        template: &str,
        field: &str,
    ) -> Option<Text> {
        match Text::parse(s.get_ref()) {
            Ok(t) => Some(t),
            Err(errors) => {
                for e in errors {
                    let at = self.locate_in_string(file, s, &e);
                    self.errs
                        .error(file, at, format!("template `{template}` {field}: {e}"));
                }
                None
            }
        }
    }

    /// Points at the offending placeholder itself when the source spells it the same way as the
    /// parsed string (no escapes in between), else at the start of the string.
    fn locate_in_string(&self, file: FileId, s: &SString, e: &TemplateError) -> usize {
        let span = s.span();
        let src = &self.sources.files[file.0].text;
        let Some(literal) = src.get(span.clone()) else {
            return span.start;
        };
        let value = s.get_ref();
        let needle_end = value[e.offset()..]
            .find('}')
            .map_or(value.len(), |i| e.offset() + i + 1);
        let needle = &value[e.offset()
            ..needle_end
                .min(e.offset() + 40)
                .max(e.offset() + 1)
                .min(value.len())];
        literal.find(needle).map_or(span.start, |i| span.start + i)
    }

    fn address(&mut self, file: FileId, s: &SString) -> Option<Address> {
        match Address::parse_strict(s.get_ref()) {
            Ok(a) => Some(a),
            Err(e) => {
                self.errs
                    .error(file, s.span().start, format!("bad address: {e}"));
                None
            }
        }
    }

    fn accounts_and_aliases(&mut self, raws: &mut [RawFile], local: &[String]) {
        let mut origins: HashMap<Address, Origin> = HashMap::new();
        for raw in raws.iter_mut() {
            for entry in std::mem::take(&mut raw.accounts) {
                let origin = entry.origin.clone();
                let Some(address) =
                    self.key_address(&entry.key, &origin, local, &origins, "account")
                else {
                    continue;
                };
                origins.insert(address.clone(), origin);
                if let Some(account) = self.account(address.clone(), entry) {
                    self.index
                        .insert(address, Node::Account(self.accounts.len()));
                    self.accounts.push(account);
                }
            }
        }
        for raw in raws.iter_mut() {
            for Entry { key, origin, value } in std::mem::take(&mut raw.aliases) {
                let Some(address) = self.key_address(&key, &origin, local, &origins, "alias")
                else {
                    continue;
                };
                origins.insert(address.clone(), origin.clone());
                let mut members = Vec::with_capacity(value.len());
                for m in &value {
                    if let Some(a) = self.address(origin.file, m)
                        && !members.contains(&a)
                    {
                        members.push(a);
                    }
                }
                if value.is_empty() {
                    self.errs
                        .at(&origin, format!("alias `{address}` has no members"));
                    continue;
                }
                if !members.is_empty() {
                    self.index
                        .insert(address.clone(), Node::Alias(self.aliases.len()));
                    self.aliases.push(Alias {
                        address,
                        members,
                        origin,
                    });
                }
            }
        }
    }

    /// Checks an account or alias key: a valid address, in a local domain, named once.
    fn key_address(
        &mut self,
        key: &str,
        origin: &Origin,
        local: &[String],
        seen: &HashMap<Address, Origin>,
        what: &str,
    ) -> Option<Address> {
        let address = match Address::parse_strict(key) {
            Ok(a) => a,
            Err(e) => {
                self.errs.at(origin, format!("bad {what} address: {e}"));
                return None;
            }
        };
        if !local.iter().any(|d| d == address.domain()) {
            let msg = format!(
                "{what} `{address}` is not in a local domain ([domains] local = {local:?}); handoff would never see its mail"
            );
            self.errs.at(origin, msg);
            return None;
        }
        if let Some(first) = seen.get(&address) {
            let other = match self.index.get(&address) {
                Some(Node::Account(_)) => "an account",
                _ => "an alias",
            };
            let msg = format!(
                "`{address}` is already {other} at {}",
                self.sources.describe(first)
            );
            self.errs.at(origin, msg);
            return None;
        }
        Some(address)
    }

    fn account(&mut self, address: Address, entry: Entry<RawAccount>) -> Option<Account> {
        let Entry {
            origin, value: raw, ..
        } = entry;
        let file = origin.file;
        let state = self.state(file, &raw.state, "state");
        let then = raw.then.as_ref().and_then(|t| self.state(file, t, "then"));
        let until = raw.until.as_ref().and_then(|u| self.date(file, u));
        match (&raw.until, &raw.then) {
            (None, Some(t)) => self.errs.error(
                file,
                t.span().start,
                "`then` needs `until` (the date from which it applies)",
            ),
            (Some(u), None) => self.errs.error(
                file,
                u.span().start,
                "`until` needs `then` (the state from that date on)",
            ),
            _ => {}
        }
        let state = state?;
        let states: Vec<State> = [Some(state), then].into_iter().flatten().collect();
        let ever_departed = states.contains(&State::Departed);

        let successor = raw.successor.as_ref().and_then(|s| self.address(file, s));
        let mut forward = Vec::new();
        if let Some(list) = &raw.forward {
            for f in list.get_ref() {
                if let Some(a) = self.address(file, f) {
                    if a == address {
                        self.errs.error(
                            file,
                            f.span().start,
                            format!("`{address}` forwards to itself"),
                        );
                    } else if !forward.contains(&a) {
                        forward.push(a);
                    }
                }
            }
        } else if let Some(s) = &successor {
            forward.push(s.clone());
        }
        if let Some(s) = &successor
            && *s == address
        {
            let at = raw
                .successor
                .as_ref()
                .map_or(origin.span.start, |s| s.span().start);
            self.errs
                .error(file, at, format!("`{address}` names itself as successor"));
        }
        let keep_copy = raw.keep_copy.as_ref().is_none_or(|k| *k.get_ref());
        let autoreply = raw.autoreply.as_ref().map(|t| t.get_ref().clone());

        if ever_departed {
            if raw.forward.is_some() && forward.is_empty() && !keep_copy {
                let at = raw
                    .keep_copy
                    .as_ref()
                    .map_or(origin.span.start, |k| k.span().start);
                self.errs.error(file, at, "a departed account with `keep_copy = false` needs somewhere to forward to: mail would go nowhere");
            } else if raw.forward.is_none() && successor.is_none() && !keep_copy {
                let at = raw
                    .keep_copy
                    .as_ref()
                    .map_or(origin.span.start, |k| k.span().start);
                self.errs.error(
                    file,
                    at,
                    "a departed account with `keep_copy = false` needs `successor` or `forward`",
                );
            }
        } else {
            let only_departed: [(&str, Option<usize>); 3] = [
                ("forward", raw.forward.as_ref().map(|f| f.span().start)),
                ("keep_copy", raw.keep_copy.as_ref().map(|k| k.span().start)),
                ("autoreply", raw.autoreply.as_ref().map(|a| a.span().start)),
            ];
            for (name, at) in only_departed {
                if let Some(at) = at {
                    self.errs.error(
                        file,
                        at,
                        format!(
                            "`{name}` has no effect: the account is `{state}` and never `departed`"
                        ),
                    );
                }
            }
        }
        if let Some(t) = &raw.autoreply
            && !self.templates.contains_key(t.get_ref())
            && !self.template_origins.contains_key(t.get_ref())
        {
            let known: Vec<&String> = self.template_origins.keys().collect();
            self.errs.error(
                file,
                t.span().start,
                format!("unknown template `{}` (defined: {known:?})", t.get_ref()),
            );
        }
        let reply = raw
            .reply
            .as_ref()
            .and_then(|r| self.reply(file, r, &states));
        let name = raw
            .name
            .as_ref()
            .map_or_else(|| address.local_part().to_string(), |n| n.get_ref().clone());
        if raw
            .name
            .as_ref()
            .is_some_and(|n| n.get_ref().contains(['\r', '\n']))
        {
            self.errs.at(&origin, "`name` must be one line");
        }
        Some(Account {
            address,
            state,
            name,
            department: raw.department.map(Spanned::into_inner),
            successor,
            forward,
            keep_copy,
            autoreply,
            until,
            then,
            reply,
            origin,
        })
    }

    fn state(&mut self, file: FileId, s: &SString, field: &str) -> Option<State> {
        let st = State::parse(s.get_ref().trim());
        if st.is_none() {
            let known: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
            let msg = format!(
                "unknown {field} `{}` (expected one of: {})",
                s.get_ref(),
                known.join(", ")
            );
            self.errs.error(file, s.span().start, msg);
        }
        st
    }

    fn date(&mut self, file: FileId, v: &Spanned<toml::Value>) -> Option<Date> {
        let parsed = match v.get_ref() {
            toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => dt
                .date
                .and_then(|d| Date::new(d.year as i16, d.month as i8, d.day as i8).ok()),
            toml::Value::String(s) => s.trim().parse::<Date>().ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.errs.error(
                file,
                v.span().start,
                format!(
                    "`until` must be a date like 2027-05-01, not `{}`",
                    v.get_ref()
                ),
            );
        }
        parsed
    }

    fn reply(&mut self, file: FileId, r: &SString, states: &[State]) -> Option<SmtpReply> {
        let at = r.span().start;
        let reply = match SmtpReply::parse(r.get_ref()) {
            Ok(reply) => reply,
            Err(e) => {
                self.errs.error(file, at, format!("bad reply: {e}"));
                return None;
            }
        };
        let classes: Vec<_> = states
            .iter()
            .filter_map(|s| s.refusal().map(|c| (*s, c)))
            .collect();
        if classes.is_empty() {
            let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
            self.errs.error(
                file,
                at,
                format!(
                    "`reply` has no effect: the account is {} and never refuses mail",
                    names.join(" then ")
                ),
            );
            return None;
        }
        for (state, class) in classes {
            if let Err(e) = reply.clone().require(class) {
                self.errs
                    .error(file, at, format!("bad reply for a {state} account: {e}"));
                return None;
            }
        }
        Some(reply)
    }

    /// Alias and forward chains must end, stay within [`MAX_DEPTH`] hops and expand to at most
    /// [`MAX_WIDTH`] addresses. Checked over every edge that can exist on any date (an account's
    /// forwards count if it is ever departed), so a date can never turn a valid policy into a
    /// looping one.
    fn check_graph(&mut self) {
        let n_acc = self.accounts.len();
        let total = n_acc + self.aliases.len();
        let id = |node: Node| match node {
            Node::Account(i) => i,
            Node::Alias(i) => n_acc + i,
        };
        let delimiter = self.delimiter;
        let lookup = |index: &Index, a: &Address| -> Option<Node> {
            index.get(a).copied().or_else(|| {
                let base = a.without_detail(delimiter?)?;
                index.get(&base).copied()
            })
        };
        // Edges to other policy nodes, and the count of plain addresses reached directly.
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); total];
        let mut leaves: Vec<usize> = vec![0; total];
        for (i, acc) in self.accounts.iter().enumerate() {
            // An account delivers to its own mailbox while active, and (with `keep_copy`) while
            // departed: either way its address is one of the expansion's, at most once.
            if delivers_to_self(acc) {
                leaves[i] += 1;
            }
            if !departs(acc) {
                continue;
            }
            for f in &acc.forward {
                match lookup(&self.index, f) {
                    Some(n) if id(n) != i => edges[i].push(id(n)),
                    Some(_) => {}
                    None => leaves[i] += 1,
                }
            }
        }
        for (j, alias) in self.aliases.iter().enumerate() {
            let i = n_acc + j;
            for m in &alias.members {
                match lookup(&self.index, m) {
                    Some(n) => edges[i].push(id(n)),
                    None => leaves[i] += 1,
                }
            }
        }
        let name = |i: usize| -> (&Address, &Origin) {
            if i < n_acc {
                (&self.accounts[i].address, &self.accounts[i].origin)
            } else {
                (
                    &self.aliases[i - n_acc].address,
                    &self.aliases[i - n_acc].origin,
                )
            }
        };

        // Iterative DFS: colour 0 unseen, 1 on the stack, 2 done. `depth[i]` is the longest chain
        // of expansions below i; `width[i]` an upper bound on the addresses it expands to.
        let mut colour = vec![0u8; total];
        let mut depth = vec![0usize; total];
        let mut width = vec![0usize; total];
        let mut reported_cycles: HashSet<Vec<usize>> = HashSet::new();
        let mut cyclic = vec![false; total];
        for root in 0..total {
            if colour[root] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            colour[root] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if *next < edges[node].len() {
                    let child = edges[node][*next];
                    *next += 1;
                    match colour[child] {
                        0 => {
                            colour[child] = 1;
                            stack.push((child, 0));
                        }
                        1 => {
                            let pos = stack.iter().position(|(n, _)| *n == child).unwrap_or(0);
                            let cycle: Vec<usize> = stack[pos..].iter().map(|(n, _)| *n).collect();
                            for &c in &cycle {
                                cyclic[c] = true;
                            }
                            let mut key = cycle.clone();
                            key.sort_unstable();
                            if reported_cycles.insert(key) {
                                let mut path: Vec<String> =
                                    cycle.iter().map(|&c| name(c).0.to_string()).collect();
                                path.push(name(child).0.to_string());
                                let (_, origin) = name(cycle[0]);
                                self.errs.at(
                                    origin,
                                    format!("alias/forward cycle: {}", path.join(" -> ")),
                                );
                            }
                        }
                        _ => {}
                    }
                } else {
                    stack.pop();
                    colour[node] = 2;
                    let kids = &edges[node];
                    depth[node] = 1 + kids.iter().map(|&k| depth[k]).max().unwrap_or(0);
                    width[node] = kids
                        .iter()
                        .fold(leaves[node], |w, &k| w.saturating_add(width[k]));
                }
            }
        }
        for i in 0..total {
            if cyclic[i] || edges[i].is_empty() && leaves[i] == 0 {
                continue;
            }
            let (address, origin) = name(i);
            if depth[i] > MAX_DEPTH {
                let msg = format!(
                    "`{address}` expands through {} levels of aliases and forwards (at most {MAX_DEPTH})",
                    depth[i]
                );
                self.errs.at(origin, msg);
            } else if width[i] > MAX_WIDTH {
                // The bound counts an address once per path; count exactly before refusing.
                let exact = self.exact_width(i, &edges, n_acc);
                if exact > MAX_WIDTH {
                    let msg =
                        format!("`{address}` expands to {exact} addresses (at most {MAX_WIDTH})");
                    self.errs.at(origin, msg);
                }
            }
        }
    }

    /// The number of distinct addresses node `i` delivers to (acyclic graph, checked depth).
    fn exact_width(&self, root: usize, edges: &[Vec<usize>], n_acc: usize) -> usize {
        let mut out: HashSet<&Address> = HashSet::new();
        let mut stack = vec![root];
        let mut seen = HashSet::new();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            stack.extend(edges[i].iter().copied());
            let targets: Vec<&Address> = if i < n_acc {
                let a = &self.accounts[i];
                let own = delivers_to_self(a).then_some(&a.address);
                let forward = if departs(a) { &a.forward[..] } else { &[] };
                own.into_iter().chain(forward).collect()
            } else {
                self.aliases[i - n_acc].members.iter().collect()
            };
            for t in targets {
                let is_node = self.index.contains_key(t)
                    && Some(t) != (i < n_acc).then(|| &self.accounts[i].address);
                if !is_node {
                    out.insert(t);
                }
            }
        }
        out.len()
    }
}

/// Whether the account is departed on some date, so that its forwards can be followed.
fn departs(acc: &Account) -> bool {
    acc.state == State::Departed || acc.then == Some(State::Departed)
}

/// Whether mail reaching the account lands in its own mailbox on some date: while it is active,
/// or while it is departed with `keep_copy`.
fn delivers_to_self(acc: &Account) -> bool {
    acc.state == State::Active || acc.then == Some(State::Active) || departs(acc) && acc.keep_copy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Policy::from_text("p.toml", text) {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn minimal_policy_loads_with_defaults() {
        let p = Policy::from_text("p.toml", "").unwrap();
        assert_eq!(
            p.settings.milter,
            Some(ListenAddr::Tcp("127.0.0.1:8891".parse().unwrap()))
        );
        assert_eq!(p.settings.retention_days, 1826);
        assert_eq!(p.settings.autoreply.days, 7);
        assert_eq!(p.settings.autoreply.max_per_hour_per_account, 100);
        assert_eq!(p.settings.autoreply.store, None);
        assert!(!p.settings.autoreply.require_authenticated);
        assert_eq!(p.recipient_delimiter, Some('+'));
        // Naming whom to trust turns the requirement on.
        let p = Policy::from_text(
            "p.toml",
            "[autoreply]\nauthserv_id = [\"mx.corp.example\"]\n",
        )
        .unwrap();
        assert!(p.settings.autoreply.require_authenticated);
        assert!(p.accounts.is_empty());
    }

    #[test]
    fn original_subject_is_a_template_setting_checked_with_its_line() {
        let p = Policy::from_text(
            "p.toml",
            "[templates.a]\nsubject = \"s\"\nbody = \"b\"\n\
             [templates.b]\nsubject = \"s\"\nbody = \"b\"\noriginal_subject = \"always\"\n\
             [templates.c]\nsubject = \"s\"\nbody = \"b\"\noriginal_subject = \"never\"\n",
        )
        .unwrap();
        assert_eq!(
            p.templates["a"].original_subject,
            OriginalSubject::Authenticated
        );
        assert_eq!(p.templates["b"].original_subject, OriginalSubject::Always);
        assert_eq!(p.templates["c"].original_subject, OriginalSubject::Never);
        let errs = errors(
            "[templates.a]\nsubject = \"s\"\nbody = \"b\"\noriginal_subject = \"yes\"\n\
             [templates.b]\nsubject = \"s\"\nbody = \"b\"\noriginal_subjet = \"never\"\n",
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert_eq!(
            errs[0],
            "p.toml:4:20: template `a`: original_subject `yes` is not one of always, authenticated, never"
        );
        assert!(
            errs[1].starts_with("p.toml:8:1: unknown field `original_subjet`"),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn autoreply_settings_are_validated_with_lines() {
        let p = Policy::from_text(
            "p.toml",
            "[autoreply]\nstore = \"redis://127.0.0.1:6379/2\"\nmax_per_hour_per_account = 5\n\
             require_authenticated = true\nauthserv_id = [\"MX.corp.example\", \"mx2.corp.example\"]\n",
        )
        .unwrap();
        let a = &p.settings.autoreply;
        assert_eq!(a.store.as_deref(), Some("redis://127.0.0.1:6379/2"));
        assert_eq!(a.max_per_hour_per_account, 5);
        assert!(a.require_authenticated);
        assert_eq!(a.authserv_ids, ["mx.corp.example", "mx2.corp.example"]);

        let errs = errors(
            "[autoreply]\nstore = \"http://cache:6379\"\nmax_per_hour_per_account = 0\n\
             require_authenticated = true\n",
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[0].starts_with("p.toml:2:9: `autoreply.store`"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with("p.toml:3:28: `autoreply.max_per_hour_per_account` is 0"),
            "{}",
            errs[1]
        );
        assert!(
            errs[2]
                .starts_with("p.toml:4:25: `autoreply.require_authenticated` needs `authserv_id`"),
            "{}",
            errs[2]
        );
        let errs = errors(
            "[autoreply]\nauthserv_id = [\"mx.corp.example; dmarc=pass\", \"\"]\nstore = \"redis://[::1\"\n",
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("p.toml:2:16:") && e.contains("not an authserv-id")),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("p.toml:2:47:")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("p.toml:3:9:") && e.contains("autoreply.store")),
            "{errs:#?}"
        );
        let errs = errors("[autoreply]\nreply_days = 3\n");
        assert!(
            errs.len() == 1 && errs[0].starts_with("p.toml:2:1: unknown field `reply_days`"),
            "{errs:#?}"
        );
    }

    #[test]
    fn a_redis_url_is_refused_without_its_password() {
        for url in [
            "redis://:s3cret@[::1",
            "redis://user:s3cret@host:notaport/0",
            "rediss://user:s3cret@host:6379/0",
            "redis://user:s3cret@host:6379/0?protocol=bogus",
        ] {
            let errs = errors(&format!("[autoreply]\nstore = \"{url}\"\n"));
            assert_eq!(errs.len(), 1, "{errs:#?}");
            assert!(errs[0].contains("autoreply.store"), "{errs:#?}");
            assert!(!errs[0].contains("s3cret"), "{errs:#?}");
            assert!(errs[0].contains(":***@"), "{errs:#?}");
        }
        let errs = errors("[autoreply]\nstore = \"redis+unix:///run/r.sock?db=x&pass=s3cret\"\n");
        assert!(errs.len() == 1 && !errs[0].contains("s3cret"), "{errs:#?}");
        for (url, shown) in [
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("redis://user@h/0", "redis://user@h/0"),
            ("redis://u:p@ss:w@h/0", "redis://u:***@h/0"),
            ("redis://:p/w@h", "redis://:***@h"),
            (
                "redis+unix:///s?user=u&pass=p",
                "redis+unix:///s?user=u&pass=***",
            ),
        ] {
            assert_eq!(redact_password(url), shown);
        }
    }

    #[test]
    fn relative_storage_paths_follow_the_policy_file() {
        let p = Policy::from_text(
            "/etc/handoff/h.toml",
            "[storage]\njournal = \"j\"\nstate = \"/abs\"\n",
        )
        .unwrap();
        assert_eq!(p.settings.journal_dir, PathBuf::from("/etc/handoff/j"));
        assert_eq!(p.settings.state_dir, PathBuf::from("/abs"));
    }

    #[test]
    fn lmtp_settings_default_to_the_reinjection_port_and_are_checked() {
        let p = Policy::from_text("/x/p.toml", "[relay]\naddress = \"127.0.0.1:2525\"\n").unwrap();
        let o = &p.settings.lmtp_options;
        assert_eq!(o.next_hop, NextHop::Smtp("127.0.0.1:2525".parse().unwrap()));
        assert_eq!((o.max_connections, o.max_recipients), (100, 1000));
        assert_eq!(o.max_message_bytes, 64 * 1024 * 1024);
        let base = Path::new("/x");
        let cases = [
            (
                "127.0.0.1:10025",
                Ok(NextHop::Smtp("127.0.0.1:10025".parse().unwrap())),
            ),
            (
                "smtp:[::1]:25",
                Ok(NextHop::Smtp("[::1]:25".parse().unwrap())),
            ),
            (
                "lmtp:inet:127.0.0.1:24",
                Ok(NextHop::Lmtp(ListenAddr::Tcp(
                    "127.0.0.1:24".parse().unwrap(),
                ))),
            ),
            (
                "lmtp:unix:lmtp.sock",
                Ok(NextHop::Lmtp(ListenAddr::Unix("/x/lmtp.sock".into()))),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_next_hop(text, base), want, "{text}");
        }
        assert!(parse_next_hop("smtp:unix:/s", base).is_err());
        assert!(parse_next_hop("mx.example:25", base).is_err());
        let errs = errors(
            "[lmtp]\nnext_hop = \"nowhere\"\nmax_connections = 0\nmax_recipients = -1\nmax_message_mb = 9999\nfoo = 1\n",
        );
        assert_eq!(errs.len(), 1, "unknown key first: {errs:#?}");
        let errs = errors(
            "[lmtp]\nnext_hop = \"nowhere\"\nmax_connections = 0\nmax_recipients = -1\nmax_message_mb = 9999\n",
        );
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(
            errs[0].starts_with("p.toml:2:12: lmtp.next_hop"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn listen_forms() {
        let base = Path::new("/x");
        assert_eq!(
            parse_listen("unix:/run/h.sock", base),
            Ok(ListenAddr::Unix("/run/h.sock".into()))
        );
        assert_eq!(
            parse_listen("inet:127.0.0.1:1", base),
            Ok(ListenAddr::Tcp("127.0.0.1:1".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("[::1]:2", base),
            Ok(ListenAddr::Tcp("[::1]:2".parse().unwrap()))
        );
        assert!(parse_listen("mail.example:25", base).is_err());
        assert!(parse_listen("127.0.0.1", base).is_err());
    }

    #[test]
    fn unknown_keys_are_errors_everywhere() {
        let errs = errors(
            "colour = 1\n[listen]\nmilterr = \"x\"\n[accounts.\"a@corp.example\"]\nstate = \"active\"\nkeep_cpy = true\n",
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[0].starts_with("p.toml:1:1: unknown key `colour`"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with("p.toml:3:1:") && errs[1].contains("milterr"),
            "{}",
            errs[1]
        );
        assert!(
            errs[2].starts_with("p.toml:6:1:") && errs[2].contains("keep_cpy"),
            "{}",
            errs[2]
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errs = errors(
            "[domains]\nlocal = [\"corp.example\"]\n[accounts.\"a@corp.example\"]\nstate = departed\n",
        );
        assert!(!errs.is_empty());
        assert!(errs[0].starts_with("p.toml:4:9:"), "{errs:#?}");
        assert!(errs[0].contains("TOML syntax"), "{errs:#?}");
    }

    #[test]
    fn cycles_are_printed() {
        let errs = errors(
            r#"
[aliases]
"a@corp.example" = ["b@corp.example"]
"b@corp.example" = ["c@corp.example"]
"c@corp.example" = ["a@corp.example", "x@corp.example"]
"#,
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0].contains(
                "cycle: a@corp.example -> b@corp.example -> c@corp.example -> a@corp.example"
            ),
            "{}",
            errs[0]
        );
        assert!(errs[0].starts_with("p.toml:3:1:"), "{}", errs[0]);
    }

    #[test]
    fn forward_cycles_through_departed_accounts_are_found() {
        let errs = errors(
            r#"
[accounts."a@corp.example"]
state = "departed"
successor = "b@corp.example"
[accounts."b@corp.example"]
state = "active"
until = 2030-01-01
then = "departed"
forward = ["a+old@corp.example"]
"#,
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].contains("cycle"), "{}", errs[0]);
    }

    #[test]
    fn depth_and_width_bounds() {
        let mut chain = String::from("[aliases]\n");
        for i in 0..10 {
            chain.push_str(&format!(
                "\"l{i}@corp.example\" = [\"l{}@corp.example\"]\n",
                i + 1
            ));
        }
        let errs = errors(&chain);
        assert!(
            errs.iter()
                .any(|e| e.contains("`l0@corp.example` expands through 10 levels")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("`l1@corp.example` expands through 9 levels")),
            "{errs:#?}"
        );
        assert_eq!(
            errs.len(),
            2,
            "l2 has exactly 8 levels and is fine: {errs:#?}"
        );

        let members: Vec<String> = (0..1001)
            .map(|i| format!("\"m{i}@corp.example\""))
            .collect();
        let wide = format!(
            "[aliases]\n\"all@corp.example\" = [{}]\n",
            members.join(",")
        );
        let errs = errors(&wide);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].contains("expands to 1001 addresses"), "{}", errs[0]);

        // Two halves sharing their 600 members: the bound says 1200, the real width is 600.
        let shared: Vec<String> = (0..600).map(|i| format!("\"m{i}@corp.example\"")).collect();
        let diamond = format!(
            "[aliases]\n\"all@corp.example\" = [\"h1@corp.example\", \"h2@corp.example\"]\n\"h1@corp.example\" = [{s}]\n\"h2@corp.example\" = [{s}]\n",
            s = shared.join(",")
        );
        assert_eq!(errors(&diamond), Vec::<String>::new());
    }

    #[test]
    fn active_members_count_towards_the_width() {
        let policy = |n: usize| {
            let mut text = String::new();
            let members: Vec<String> = (0..n).map(|i| format!("\"a{i}@corp.example\"")).collect();
            text.push_str(&format!(
                "[aliases]\n\"all@corp.example\" = [{}]\n",
                members.join(",")
            ));
            for i in 0..n {
                text.push_str(&format!(
                    "[accounts.\"a{i}@corp.example\"]\nstate = \"active\"\n"
                ));
            }
            errors(&text)
        };
        assert_eq!(policy(MAX_WIDTH), Vec::<String>::new());
        let errs = policy(MAX_WIDTH + 1);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].contains("expands to 1001 addresses"), "{}", errs[0]);
    }
}
