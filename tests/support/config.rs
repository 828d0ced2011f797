//! What a test asks of its lab (`LabConfig`), and the pure text work on it: reading
//! `name = value` lines from a main.cf snippet and filling `{placeholder}`s once the lab's
//! ports and paths are known. Nothing here touches Postfix.

use std::fs;
use std::path::Path;

use super::sink::SinkMode;

/// A lab's configuration beyond the fixed base (see `Lab::start`). Build it with the struct
/// literal and `..Default::default()`, or with the builder methods below.
///
/// `main_cf` lines and `master_cf` entries may use placeholders, filled in at start:
/// `{smtpd_port}`, `{sink_port}`, `{lab_dir}`, `{conf_dir}`, `{queue_dir}`, plus every `vars`
/// name (e.g. `{milter_port}`). An unknown placeholder is an error, so a typo cannot silently
/// produce a broken setting. `${name}` is Postfix's own expansion and is left alone.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// `relay_domains`: the domains the lab's smtpd accepts mail for from anyone.
    pub relay_domains: Vec<String>,
    /// main.cf lines, `name = value`, applied after the base with `postconf -e`, so they
    /// override it; a later line for the same name overrides an earlier one. So a test can
    /// load a deploy snippet and point it at its own milter:
    /// `.main_cf_file("deploy/postfix/main.cf.milter")
    ///  .main_cf_line("smtpd_milters = inet:127.0.0.1:{milter_port}")`.
    pub main_cf: Vec<String>,
    /// master.cf entries (`name type private unpriv chroot wakeup maxproc command args…`,
    /// continuation lines allowed), applied with `postconf -M`: an entry with the same
    /// name/type as a base service replaces it.
    pub master_cf: Vec<String>,
    /// Users for SMTP AUTH (Cyrus SASL, sasldb). Empty: AUTH is not offered.
    pub sasl_users: Vec<(&'static str, &'static str)>,
    /// Placeholder values for `main_cf` and `master_cf`.
    pub vars: Vec<(String, String)>,
    /// The protocol the sink speaks (and so the transport Postfix uses to reach it).
    pub sink_mode: SinkMode,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            relay_domains: vec!["corp.example".to_string(), "example.net".to_string()],
            main_cf: Vec::new(),
            master_cf: Vec::new(),
            sasl_users: Vec::new(),
            vars: Vec::new(),
            sink_mode: SinkMode::Smtp,
        }
    }
}

impl LabConfig {
    /// Adds one `name = value` main.cf line.
    pub fn main_cf_line(mut self, line: impl Into<String>) -> Self {
        self.main_cf.push(line.into());
        self
    }

    /// Adds the `name = value` lines of a main.cf-syntax file (comments, blank lines and
    /// continuation lines as in main.cf). Panics listing every malformed line, as
    /// `path:line: message`.
    pub fn main_cf_file(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let text = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("lab config: cannot read {}: {e}", path.display()));
        match parse_main_cf(&text, &path.display().to_string()) {
            Ok(lines) => self.main_cf.extend(lines),
            Err(errors) => panic!("lab config: {}", errors.join("\n")),
        }
        self
    }

    /// Adds one master.cf entry.
    pub fn master_cf_entry(mut self, entry: impl Into<String>) -> Self {
        self.master_cf.push(entry.into());
        self
    }

    /// Adds the entries of a master.cf-syntax file: an entry starts at a line that does not
    /// begin with whitespace; indented lines continue it; `#` lines are comments.
    pub fn master_cf_file(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let text = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("lab config: cannot read {}: {e}", path.display()));
        self.master_cf.extend(master_cf_entries(&text));
        self
    }

    /// handoff as an after-queue content filter, exactly as deploy/postfix/main.cf.content-filter
    /// and master.cf.content-filter say, with handoff's LMTP port (10026 there) and the
    /// reinjection port (10025 there) replaced.
    pub fn content_filter(self, lmtp_port: u16, reinject_port: u16) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/postfix");
        let read = |name: &str| {
            let path = dir.join(name);
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("lab config: cannot read {}: {e}", path.display()));
            assert!(
                text.contains("[127.0.0.1]:10026") || text.contains("127.0.0.1:10025"),
                "{name} no longer uses the documented ports"
            );
            let text = text
                .replace("[127.0.0.1]:10026", &format!("[127.0.0.1]:{lmtp_port}"))
                .replace("127.0.0.1:10025", &format!("127.0.0.1:{reinject_port}"));
            (path.display().to_string(), text)
        };
        let (main_path, main) = read("main.cf.content-filter");
        let mut config = self;
        match parse_main_cf(&main, &main_path) {
            Ok(lines) => config.main_cf.extend(lines),
            Err(errors) => panic!("lab config: {}", errors.join("\n")),
        }
        let (_, master) = read("master.cf.content-filter");
        config.master_cf.extend(master_cf_entries(&master));
        config
    }

    /// Sets the value of `{name}`.
    pub fn var(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        self.vars.push((name.into(), value.to_string()));
        self
    }

    pub fn sasl_user(mut self, user: &'static str, password: &'static str) -> Self {
        self.sasl_users.push((user, password));
        self
    }

    pub fn sink_mode(mut self, mode: SinkMode) -> Self {
        self.sink_mode = mode;
        self
    }
}

/// The settings of a main.cf-syntax text as `name = value` lines. Follows postconf(5): `#`
/// starts a comment line, a line starting with whitespace continues the previous one. All
/// malformed lines are reported, each as `origin:line: message`.
pub fn parse_main_cf(text: &str, origin: &str) -> Result<Vec<String>, Vec<String>> {
    let mut settings: Vec<(usize, String)> = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match settings.last_mut() {
                Some((_, setting)) => {
                    setting.push(' ');
                    setting.push_str(trimmed);
                }
                None => errors.push(format!(
                    "{origin}:{number}: continuation line without a setting"
                )),
            }
            continue;
        }
        settings.push((number, trimmed.to_string()));
    }
    let mut lines = Vec::new();
    for (number, setting) in settings {
        match setting.split_once('=') {
            Some((name, value)) if is_parameter_name(name.trim()) => {
                lines.push(format!("{} = {}", name.trim(), value.trim()));
            }
            Some((name, _)) => errors.push(format!(
                "{origin}:{number}: {:?} is not a parameter name",
                name.trim()
            )),
            None => errors.push(format!(
                "{origin}:{number}: expected \"name = value\", found {setting:?}"
            )),
        }
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

/// The entries of a master.cf-syntax text, continuation lines joined.
pub fn master_cf_entries(text: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match (line.starts_with([' ', '\t']), entries.last_mut()) {
            (true, Some(entry)) => {
                entry.push(' ');
                entry.push_str(trimmed);
            }
            _ => entries.push(trimmed.to_string()),
        }
    }
    entries
}

fn is_parameter_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Replaces each `{name}` (name: lowercase letters, digits, `_`; not preceded by `$`) with
/// its value. Other braces, such as `inline:{ a = b }` or `${name}`, are left alone.
pub fn substitute(text: &str, vars: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let (before, from_brace) = rest.split_at(open);
        out.push_str(before);
        let after_dollar = out.ends_with('$');
        let name_len = from_brace[1..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(from_brace.len() - 1);
        let name = &from_brace[1..1 + name_len];
        let closed = from_brace[1 + name_len..].starts_with('}');
        if after_dollar
            || !closed
            || name.is_empty()
            || !name.starts_with(|c: char| c.is_ascii_lowercase())
        {
            out.push('{');
            rest = &from_brace[1..];
            continue;
        }
        match vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, value)) => out.push_str(value),
            None => {
                let known: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
                return Err(format!(
                    "unknown placeholder {{{name}}} in {text:?} (known: {})",
                    known.join(", ")
                ));
            }
        }
        rest = &from_brace[name_len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A master.cf entry as one line for `postconf -M name/type=entry`, and its `name/type`.
pub fn master_entry(entry: &str) -> Result<(String, String), String> {
    let joined = entry.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut fields = joined.split(' ');
    match (fields.next(), fields.next(), fields.nth(5)) {
        (Some(name), Some(kind), Some(_command)) if !name.is_empty() => {
            Ok((format!("{name}/{kind}"), joined.clone()))
        }
        _ => Err(format!(
            "master.cf entry {entry:?} needs name, type, private, unpriv, chroot, wakeup, maxproc and command"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn main_cf_text_yields_settings_with_continuations_joined() {
        let text = "# handoff snippet\n\nsmtpd_milters = inet:127.0.0.1:{milter_port}\n\
                    milter_default_action=tempfail\n  # indented comment\n\
                    non_smtpd_milters =\n    $smtpd_milters\n";
        assert_eq!(
            parse_main_cf(text, "snippet.cf").unwrap(),
            [
                "smtpd_milters = inet:127.0.0.1:{milter_port}",
                "milter_default_action = tempfail",
                "non_smtpd_milters = $smtpd_milters",
            ]
        );
    }

    #[test]
    fn main_cf_errors_are_all_reported_with_file_and_line() {
        let text = "  leading continuation\nok = 1\nno equals sign\nbad name! = 2\n";
        assert_eq!(
            parse_main_cf(text, "x.cf").unwrap_err(),
            [
                "x.cf:1: continuation line without a setting",
                "x.cf:3: expected \"name = value\", found \"no equals sign\"",
                "x.cf:4: \"bad name!\" is not a parameter name",
            ]
        );
    }

    #[test]
    fn placeholders_are_filled_and_postfix_braces_left_alone() {
        let v = vars(&[("milter_port", "4242"), ("sink_port", "25")]);
        let cases: &[(&str, &str)] = &[
            ("inet:127.0.0.1:{milter_port}", "inet:127.0.0.1:4242"),
            (
                "inline:{ * = smtp:[127.0.0.1]:{sink_port} }",
                "inline:{ * = smtp:[127.0.0.1]:25 }",
            ),
            ("${queue_directory}/x", "${queue_directory}/x"),
            (
                "{ inet:x:1, connect_timeout=10s }",
                "{ inet:x:1, connect_timeout=10s }",
            ),
            ("{Upper}", "{Upper}"),
            ("{", "{"),
            ("{}{milter_port}", "{}4242"),
        ];
        for (input, expected) in cases {
            assert_eq!(substitute(input, &v).unwrap(), *expected, "{input:?}");
        }
        let err = substitute("inet:127.0.0.1:{miltr_port}", &v).unwrap_err();
        assert!(
            err.contains("{miltr_port}") && err.contains("milter_port"),
            "{err}"
        );
    }

    #[test]
    fn master_cf_text_yields_entries_with_continuations_joined() {
        let text = "# comment\nhandoff unix - - n - 10 lmtp\n    -o a=b\n  # indented comment\n    -o c=\n\n10025 inet n - n - - smtpd\n";
        assert_eq!(
            master_cf_entries(text),
            [
                "handoff unix - - n - 10 lmtp -o a=b -o c=",
                "10025 inet n - n - - smtpd"
            ]
        );
    }

    #[test]
    fn master_entries_are_keyed_by_name_and_type() {
        assert_eq!(
            master_entry("127.0.0.1:10026 inet n - n - - smtpd\n  -o content_filter=\n").unwrap(),
            (
                "127.0.0.1:10026/inet".to_string(),
                "127.0.0.1:10026 inet n - n - - smtpd -o content_filter=".to_string()
            )
        );
        assert!(master_entry("handoff unix - n n - -").is_err());
    }
}
