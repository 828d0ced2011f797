//! The daemon's settings: `[listen]`, `[relay]`, `[lmtp]`, `[storage]`, `[archive]`,
//! `[autoreply]` and `[log]` of the main policy file, checked and completed with their defaults.
//! A wrong value is reported with its line and replaced by its default (or left out), so that
//! the rest is still checked.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::diag::{Collector, FileId};
use super::raw::{self, RawFile, SString};
use super::{
    AutoreplySettings, ConsoleSettings, DkimAlgorithm, DkimDomain, ListenAddr, LmtpSettings,
    NextHop, Settings, SrsSettings,
};
use crate::address::Address;

const DEFAULT_MILTER: &str = "127.0.0.1:8891";
const DEFAULT_METRICS: &str = "127.0.0.1:9464";
const DEFAULT_RELAY: &str = "127.0.0.1:10025";
const DEFAULT_JOURNAL: &str = "/var/lib/handoff/journal";
const DEFAULT_STATE: &str = "/var/lib/handoff/state";
/// Five years, counting one leap day.
const DEFAULT_RETENTION_DAYS: u32 = 1826;
/// RFC 3834 section 3.1.1 suggests a week between replies to the same sender; Sieve vacation
/// (RFC 5230 section 4.1) allows 1 day as a minimum, and handoff caps the setting at
/// [`AutoreplySettings::MAX_DAYS`].
const DEFAULT_AUTOREPLY_DAYS: u32 = 7;
const DEFAULT_AUTOREPLY_MAX_PER_HOUR: u32 = 1000;
const DEFAULT_AUTOREPLY_MAX_PER_HOUR_PER_ACCOUNT: u32 = 100;

/// Where the archive index of `journal` goes when nothing says otherwise: `index` beside it
/// (the default journal `/var/lib/handoff/journal` gives `/var/lib/handoff/index`). Beside, not
/// inside: the journal directory holds only the journal's own files.
pub fn default_index_dir(journal: &Path) -> PathBuf {
    journal.parent().unwrap_or(journal).join("index")
}

pub(super) fn settings(main_path: &Path, raw: &RawFile, errs: &mut Collector) -> Settings {
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
    let index_dir = match storage.and_then(|s| s.index.as_ref()) {
        Some(i) => path(Some(i), ""),
        None => default_index_dir(&journal_dir),
    };

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
    let srs = raw
        .srs
        .as_ref()
        .and_then(|(origin, s)| srs_settings(origin.span.start, s, &base, errs));
    Settings {
        milter,
        lmtp,
        lmtp_options,
        metrics,
        relay,
        journal_dir,
        state_dir,
        index_dir,
        indexer: storage.and_then(|s| s.indexer).unwrap_or(true),
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
        srs,
        dkim: dkim_settings(raw, &base, errs),
        console: raw
            .console
            .as_ref()
            .and_then(|(origin, c)| console_settings(origin.span.start, c, &base, errs)),
    }
}

/// Default session timeouts: OWASP's session management cheat sheet suggests 15-30 minutes idle
/// for high-value applications and an absolute limit of a working day.
const DEFAULT_CONSOLE_IDLE_MINUTES: i64 = 15;
const DEFAULT_CONSOLE_MAX_HOURS: i64 = 8;

/// `[console]`, validated. Absent `listen` means the console is off (the other keys are still
/// checked). Anything but a loopback address needs TLS: the console carries passwords and the
/// archive's mail.
fn console_settings(
    at: usize,
    raw: &raw::RawConsole,
    base: &Path,
    errs: &mut Collector,
) -> Option<ConsoleSettings> {
    let f = FileId(0);
    let path = |s: &SString| {
        let p = PathBuf::from(s.get_ref());
        if p.is_relative() { base.join(p) } else { p }
    };
    let listen = raw
        .listen
        .as_ref()
        .and_then(|s| match socket_addr(s.get_ref()) {
            Ok(a) => Some((a, s.span().start)),
            Err(e) => {
                errs.error(f, s.span().start, format!("`console.listen`: {e}"));
                None
            }
        });
    let tls = match (&raw.tls_cert, &raw.tls_key) {
        (Some(c), Some(k)) => Some((path(c), path(k))),
        (None, None) => None,
        (Some(s), None) | (None, Some(s)) => {
            errs.error(
                f,
                s.span().start,
                "`console.tls_cert` and `console.tls_key` go together: the certificate chain and its private key (PEM)",
            );
            None
        }
    };
    let minutes =
        |v: Option<&Spanned<i64>>, default: i64, max: i64, name: &str, errs: &mut Collector| {
            let Some(v) = v else { return default };
            let n = *v.get_ref();
            if !(1..=max).contains(&n) {
                errs.error(
                    f,
                    v.span().start,
                    format!("`{name}` is {n}; it must be between 1 and {max}"),
                );
                return default;
            }
            n
        };
    let idle = minutes(
        raw.idle_minutes.as_ref(),
        DEFAULT_CONSOLE_IDLE_MINUTES,
        24 * 60,
        "console.idle_minutes",
        errs,
    );
    let max_hours = minutes(
        raw.max_hours.as_ref(),
        DEFAULT_CONSOLE_MAX_HOURS,
        7 * 24,
        "console.max_hours",
        errs,
    );
    let Some(users) = raw.users.as_ref() else {
        errs.error(
            f,
            at,
            "`[console]` needs `users`, the file of console users (`handoff console user add` writes it)",
        );
        return None;
    };
    let (listen, listen_at) = listen?;
    if !listen.ip().is_loopback() && tls.is_none() {
        errs.error(
            f,
            listen_at,
            format!(
                "`console.listen` = {listen} is not a loopback address: the console needs TLS there \
                 (`tls_cert` and `tls_key`)"
            ),
        );
        return None;
    }
    Some(ConsoleSettings {
        listen,
        users: path(users),
        require_totp: raw.require_totp.as_ref().is_some_and(|r| *r.get_ref()),
        tls,
        idle: std::time::Duration::from_secs(idle as u64 * 60),
        max_age: std::time::Duration::from_secs(max_hours as u64 * 3600),
    })
}

/// `[dkim."DOMAIN"]` entries, checked but for the key files (read by `load`). The domain is
/// taken in any form (U-labels, A-labels, any case) and kept in lookup form, so it matches a
/// reply's `From:` domain however either was written.
fn dkim_settings(raw: &RawFile, base: &Path, errs: &mut Collector) -> Vec<DkimDomain> {
    let mut out: Vec<DkimDomain> = Vec::new();
    for e in &raw.dkim {
        let Some(domain) = crate::address::domain_lookup_form(&e.key) else {
            errs.at(
                &e.origin,
                format!("`[dkim]`: `{}` is not a domain name", e.key),
            );
            continue;
        };
        if out.iter().any(|d| d.domain == domain) {
            errs.at(
                &e.origin,
                format!("`[dkim]`: `{}` is named twice (as {domain})", e.key),
            );
            continue;
        }
        let v = &e.value;
        // RFC 6376 section 3.1: a selector is dot-separated sub-domain labels.
        let selector = v.selector.get_ref().trim();
        if !super::is_dkim_selector(selector) {
            errs.error(
                FileId(0),
                v.selector.span().start,
                format!("`dkim.selector`: `{selector}` is not a DKIM selector (letters, digits, inner hyphens, dot-separated)"),
            );
            continue;
        }
        let Some(algorithm) = DkimAlgorithm::parse(v.algorithm.get_ref().trim()) else {
            errs.error(
                FileId(0),
                v.algorithm.span().start,
                format!(
                    "`dkim.algorithm`: `{}` is not one of {}",
                    v.algorithm.get_ref(),
                    DkimAlgorithm::NAMES
                ),
            );
            continue;
        };
        let key = PathBuf::from(v.key.get_ref());
        if v.key.get_ref().trim().is_empty() {
            errs.error(FileId(0), v.key.span().start, "`dkim.key`: empty path");
            continue;
        }
        out.push(DkimDomain {
            domain,
            selector: selector.to_ascii_lowercase(),
            algorithm,
            key_file: if key.is_relative() {
                base.join(key)
            } else {
                key
            },
            origin: super::diag::Origin {
                file: FileId(0),
                span: v.key.span(),
            },
        });
    }
    out
}

/// `[srs]`, validated: the SRS domain and the exclusions in lookup form, the secret file made
/// absolute. The secrets themselves are read by the loader ([`super::load`]), the policy's file
/// edge; until then [`SrsSettings::srs`] is `None` and nothing is rewritten.
fn srs_settings(
    at: usize,
    raw: &raw::RawSrs,
    base: &Path,
    errs: &mut Collector,
) -> Option<SrsSettings> {
    let f = FileId(0);
    let domain = |s: &SString, what: &str, errs: &mut Collector| {
        let d = crate::address::domain_lookup_form(s.get_ref());
        if d.is_none() {
            errs.error(
                f,
                s.span().start,
                format!("`{what}` = `{}` is not a valid domain name", s.get_ref()),
            );
        }
        d
    };
    let Some(raw_domain) = raw.domain.as_ref() else {
        errs.error(
            f,
            at,
            "`[srs]` needs `domain`, the domain SRS addresses are in",
        );
        return None;
    };
    let Some(secret) = raw.secret_file.as_ref() else {
        errs.error(
            f,
            at,
            "`[srs]` needs `secret_file`, the file of SRS secrets (one a line)",
        );
        return None;
    };
    let exclude_domains = raw
        .exclude_domains
        .iter()
        .flatten()
        .filter_map(|s| domain(s, "srs.exclude_domains", errs))
        .collect();
    let domain = domain(raw_domain, "srs.domain", errs)?;
    let path = PathBuf::from(secret.get_ref());
    Some(SrsSettings {
        domain,
        secret_file: if path.is_relative() {
            base.join(path)
        } else {
            path
        },
        secret_file_at: secret.span().start,
        exclude_domains,
        srs: None,
    })
}

/// The `bounded` integer check of [`settings`]: value, default, min, max, name.
type BoundedCheck<'a> =
    dyn Fn(Option<&Spanned<i64>>, u32, i64, i64, &str, &mut Collector) -> u32 + 'a;

impl AutoreplySettings {
    /// The largest `days` a policy may set. The embedded reply memory forgets pairs older than
    /// this when it loads its log (`autoreply::memory`), so a longer setting would be cut short
    /// by a restart.
    pub const MAX_DAYS: u32 = 60;
}

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
        i64::from(AutoreplySettings::MAX_DAYS),
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
    // `localhost:8891` is the IPv4 loopback (RFC 6761 section 6.3: the name is the loopback
    // wherever it is looked up), so the policy means the same on every machine and compiling it
    // never asks a resolver; IPv6 is written `[::1]:8891`. A name that needs DNS is refused so
    // that start-up never depends on a resolver.
    match text.rsplit_once(':') {
        Some(("localhost", port)) => {
            let port: u16 = port.parse().map_err(|_| format!("`{text}`: bad port"))?;
            Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        }
        _ => Err(format!(
            "`{text}` is not an address with a port, like 127.0.0.1:8891, [::1]:8891 or unix:/path"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    use crate::policy::test_errors as errors;

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
    fn autoreply_days_reach_no_further_than_the_reply_memory() {
        let max = AutoreplySettings::MAX_DAYS;
        let p = Policy::from_text("p.toml", &format!("[autoreply]\ndays = {max}\n")).unwrap();
        assert_eq!(p.settings.autoreply.days, max);
        let errs = errors(&format!("[autoreply]\ndays = {}\n", max + 1));
        assert_eq!(
            errs,
            [format!(
                "p.toml:2:8: `autoreply.days` is {}; it must be between 1 and {max}",
                max + 1
            )]
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
        assert_eq!(p.settings.index_dir, PathBuf::from("/etc/handoff/index"));
        let p = Policy::from_text(
            "/etc/handoff/h.toml",
            "[storage]\njournal = \"/srv/j\"\nindex = \"i\"\n",
        )
        .unwrap();
        assert_eq!(p.settings.index_dir, PathBuf::from("/etc/handoff/i"));
        let p = Policy::from_text("/etc/handoff/h.toml", "").unwrap();
        assert_eq!(
            p.settings.index_dir,
            PathBuf::from("/var/lib/handoff/index")
        );
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
    fn console_settings_need_users_and_tls_off_loopback() {
        let p = Policy::from_text(
            "/etc/handoff/h.toml",
            "[console]\nlisten = \"127.0.0.1:8443\"\nusers = \"console-users.toml\"\n",
        )
        .unwrap();
        let c = p.settings.console.unwrap();
        assert_eq!(c.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.users, PathBuf::from("/etc/handoff/console-users.toml"));
        assert!(!c.require_totp && c.tls.is_none());
        assert_eq!(c.idle.as_secs(), 15 * 60);
        assert_eq!(c.max_age.as_secs(), 8 * 3600);
        let p = Policy::from_text(
            "/e/h.toml",
            "[console]\nlisten = \"[::]:443\"\nusers = \"/u\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nidle_minutes = 5\n",
        )
        .unwrap();
        let c = p.settings.console.unwrap();
        assert_eq!(c.tls, Some(("/e/c.pem".into(), "/e/k.pem".into())));
        assert_eq!(c.idle.as_secs(), 300);
        // No listen: off.
        let p = Policy::from_text("/e/h.toml", "[console]\nusers = \"/u\"\n").unwrap();
        assert!(p.settings.console.is_none());
        assert!(
            Policy::from_text("/e/h.toml", "")
                .unwrap()
                .settings
                .console
                .is_none()
        );

        let errs = errors("[console]\nlisten = \"0.0.0.0:8443\"\nusers = \"/u\"\n");
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0].starts_with(
                "p.toml:2:10: `console.listen` = 0.0.0.0:8443 is not a loopback address"
            ),
            "{}",
            errs[0]
        );
        let errs = errors(
            "[console]\nlisten = \"nowhere\"\ntls_key = \"k\"\nidle_minutes = 0\nmax_hours = 1000\n",
        );
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("p.toml:2:10: `console.listen`")),
            "{errs:#?}"
        );
        assert!(errs.iter().any(|e| e.contains("go together")), "{errs:#?}");
        assert!(
            errs.iter().any(|e| e.contains("needs `users`")),
            "{errs:#?}"
        );
        let errs = errors("[console]\npassword = \"x\"\n");
        assert!(
            errs.len() == 1 && errs[0].contains("unknown field `password`"),
            "{errs:#?}"
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
        // The loopback by definition, without a resolver (RFC 6761 section 6.3).
        assert_eq!(
            parse_listen("localhost:8891", base),
            Ok(ListenAddr::Tcp("127.0.0.1:8891".parse().unwrap()))
        );
        assert!(parse_listen("localhost:x", base).is_err());
        assert!(parse_listen("mail.example:25", base).is_err());
        assert!(parse_listen("127.0.0.1", base).is_err());
    }
}
