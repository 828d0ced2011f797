//! The policy's one file edge: reads the main policy file and the files it includes, each
//! bounded, and hands their text to the pure compiler. Everything else in `policy` is pure (the
//! architecture test in tests/architecture.rs holds it so).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::diag::{Collector, Diagnostic, Diagnostics, FileId, SourceFile, Sources};
use super::{Policy, compile};

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
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
    let mut policy = compile::compile(sources, Some(&includes)).map_err(LoadError::Invalid)?;
    read_srs_secrets(&mut policy)?;
    policy.dkim = dkim_keys(&policy).map_err(LoadError::Invalid)?;
    Ok(policy)
}

/// The largest DKIM key file read: a 4096-bit RSA key in PEM is about 3.3 KB.
const MAX_KEY_BYTES: u64 = 64 * 1024;

/// Reads and parses the `[dkim]` key files. Each problem (missing, unreadable, readable by
/// others than handoff's user, not a key of its algorithm) is reported at the `key = ` line that
/// names the file, all of them at once.
fn dkim_keys(policy: &Policy) -> Result<crate::autoreply::dkim::Keys, Diagnostics> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut errs = Collector::default();
    let mut keys = Vec::new();
    for d in &policy.settings.dkim {
        let path = d.key_file.display();
        let read = || -> Result<Vec<u8>, String> {
            let file = std::fs::File::open(&d.key_file)
                .map_err(|e| format!("DKIM key {path}: cannot read it: {e}"))?;
            let meta = file
                .metadata()
                .map_err(|e| format!("DKIM key {path}: cannot read it: {e}"))?;
            if !meta.is_file() {
                return Err(format!("DKIM key {path}: not a regular file"));
            }
            // A private key others can read is a key others can sign with.
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "DKIM key {path}: mode {mode:04o} lets other users read it; it must be readable only by handoff's user (chmod 600)"
                ));
            }
            let mut pem = Vec::new();
            file.take(MAX_KEY_BYTES + 1)
                .read_to_end(&mut pem)
                .map_err(|e| format!("DKIM key {path}: cannot read it: {e}"))?;
            if pem.len() as u64 > MAX_KEY_BYTES {
                return Err(format!(
                    "DKIM key {path}: larger than {} KiB; not a key",
                    MAX_KEY_BYTES >> 10
                ));
            }
            Ok(pem)
        };
        let key = read().and_then(|pem| {
            crate::autoreply::dkim::DomainKey::from_pem(&d.domain, &d.selector, d.algorithm, &pem)
                .map_err(|e| format!("DKIM key {path}: {e}"))
        });
        match key {
            Ok(k) => keys.push(k),
            Err(message) => errs.at(&d.origin, message),
        }
    }
    if !errs.is_empty() {
        return Err(errs.finish(&policy.sources));
    }
    Ok(crate::autoreply::dkim::Keys::new(keys))
}

/// Reads `[srs] secret_file` into the policy's rewriter. The file must be a regular file that
/// only handoff's user can read (a secret others can read lets them forge SRS addresses, and
/// with them turn the SRS domain into an open relay for bounces); a failure is a load error at
/// the `secret_file` line, naming the file. The secrets never appear in a message.
fn read_srs_secrets(policy: &mut Policy) -> Result<(), LoadError> {
    let Some(srs) = policy.settings.srs.as_ref() else {
        return Ok(());
    };
    let diagnostic = |message: String| {
        let (line, column) = policy.sources.line_col(FileId(0), srs.secret_file_at);
        LoadError::Invalid(Diagnostics(vec![Diagnostic {
            path: policy.sources.path(FileId(0)).to_path_buf(),
            line,
            column,
            message: format!(
                "cannot use SRS secret file {}: {message}",
                srs.secret_file.display()
            ),
        }]))
    };
    let secrets = srs_secrets(&srs.secret_file).map_err(diagnostic)?;
    let rewriter =
        crate::srs::Srs::new(srs.domain.clone(), secrets).map_err(|e| diagnostic(e.to_string()))?;
    if let Some(srs) = policy.settings.srs.as_mut() {
        srs.srs = Some(rewriter);
    }
    Ok(())
}

/// The secrets of an SRS secret file: one a line, blank lines and `#` comments skipped.
fn srs_secrets(path: &Path) -> Result<Vec<crate::srs::Secret>, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "its mode {mode:04o} lets other users read or change it; it must be readable only by handoff's user (chmod 600)"
        ));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(format!(
            "it is owned by uid {}, not by handoff's user (uid {euid})",
            meta.uid()
        ));
    }
    let text = read_file(path).map_err(|e| e.to_string())?;
    let secrets: Vec<crate::srs::Secret> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(crate::srs::Secret::new)
        .collect();
    if secrets.is_empty() {
        return Err("it holds no secret (one a line; the first signs)".into());
    }
    Ok(secrets)
}

fn read(path: &Path) -> Result<String, LoadError> {
    read_file(path).map_err(|cause| LoadError::Read {
        path: path.to_path_buf(),
        cause,
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A policy file with `[srs]` naming `secrets` (written with `mode`) in a fresh directory.
    fn with_secrets(secrets: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("srs.secrets");
        std::fs::write(&secret, secrets).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        let policy = dir.path().join("policy.toml");
        let text = "[domains]\nlocal = [\"corp.example\"]\n\n[srs]\ndomain = \"SRS.Corp.Example\"\nsecret_file = \"srs.secrets\"\nexclude_domains = [\"partner.example\"]\n";
        std::fs::write(&policy, text).unwrap();
        (dir, policy)
    }

    fn error_of(policy: &Path) -> String {
        match load(policy) {
            Err(LoadError::Invalid(d)) => d.iter().map(|d| d.to_string()).collect(),
            other => panic!("expected a diagnostic, got {other:?}"),
        }
    }

    #[test]
    fn srs_secrets_are_read_first_signing_and_never_shown() {
        let (_dir, path) = with_secrets("# rotated 2026-11\nn3w-secret\n\nold-secret\n", 0o600);
        let policy = load(&path).unwrap();
        let srs = policy.settings.srs.as_ref().unwrap();
        assert_eq!(srs.domain, "srs.corp.example");
        assert_eq!(srs.exclude_domains, ["partner.example"]);
        let rewriter = srs.srs.as_ref().expect("secrets read");
        let day = 20_000;
        let with = |secret: &str| {
            crate::srs::Srs::new("srs.corp.example", vec![crate::srs::Secret::new(secret)])
                .unwrap()
                .forward("a@example.net", day)
                .unwrap()
        };
        assert_eq!(
            rewriter.forward("a@example.net", day).unwrap(),
            with("n3w-secret")
        );
        let old = with("old-secret");
        assert!(rewriter.reverse(&old, day).is_ok());
        assert!(!format!("{policy:?}").contains("secret\""));
        assert!(!format!("{policy:?}").contains("n3w-secret"));
    }

    #[test]
    fn an_srs_secret_file_others_can_read_is_refused_with_its_name_and_line() {
        let (dir, path) = with_secrets("s3cret\n", 0o644);
        let err = error_of(&path);
        let file = dir.path().join("srs.secrets");
        assert!(
            err.contains(&format!(
                "policy.toml:6:15: cannot use SRS secret file {}",
                file.display()
            )) && err.contains("0644")
                && !err.contains("s3cret"),
            "{err}"
        );
        let (_dir, path) = with_secrets("# only a comment\n", 0o600);
        assert!(
            error_of(&path).contains("holds no secret"),
            "{}",
            error_of(&path)
        );
        let (dir, path) = with_secrets("x\n", 0o600);
        std::fs::remove_file(dir.path().join("srs.secrets")).unwrap();
        assert!(
            error_of(&path).contains("srs.secrets"),
            "{}",
            error_of(&path)
        );
    }

    #[test]
    fn srs_settings_are_checked_with_their_lines() {
        let errs = crate::policy::test_errors(
            "[domains]\nlocal = [\"corp.example\"]\n[srs]\ndomain = \"bad domain\"\nsecret_file = \"s\"\nexclude_domains = [\"x..y\"]\nbogus = 1\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("p.toml:7:1") && e.contains("bogus")),
            "{errs:?}"
        );
        let errs = crate::policy::test_errors(
            "[domains]\nlocal = [\"corp.example\"]\n[srs]\ndomain = \"bad domain\"\nsecret_file = \"s\"\nexclude_domains = [\"x..y\"]\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("p.toml:4:") && e.contains("srs.domain")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("p.toml:6:") && e.contains("srs.exclude_domains")),
            "{errs:?}"
        );
        let errs = crate::policy::test_errors(
            "[domains]\nlocal = [\"corp.example\"]\n[srs]\ndomain = \"srs.corp.example\"\n",
        );
        assert!(
            errs.iter().any(|e| e.contains("needs `secret_file`")),
            "{errs:?}"
        );
        // Without `[srs]`, no rewriting (today's behaviour).
        let p = Policy::from_text("p.toml", "[domains]\nlocal = [\"corp.example\"]\n").unwrap();
        assert_eq!(p.settings.srs, None);
    }
}
