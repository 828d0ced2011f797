//! Stage two of loading: read the includes, then judge what the admin wrote and build the
//! policy: the daemon's settings in [`settings`](super::settings), the account and alias graph in
//! [`graph`](super::graph). Errors are collected, never returned early, so one run of
//! `handoff check` shows them all.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::diag::{Collector, FileId, SourceFile, Sources};
use super::graph::{Builder, domains};
use super::raw::{self, RawFile};
use super::settings::settings;
use super::{Diagnostics, Policy};

/// Reads the files an include pattern names, relative to a base directory.
pub(crate) type IncludeReader<'a> = &'a dyn Fn(&Path, &str) -> Result<Vec<SourceFile>, String>;

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

    let mut b = Builder::new(&sources, errs, delimiter);
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
        dkim: Default::default(),
        index,
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
        ("srs", raw.srs.as_ref().map(|(o, _)| o)),
        ("dkim", raw.dkim.first().map(|e| &e.origin)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ListenAddr;

    use crate::policy::test_errors as errors;

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
}
