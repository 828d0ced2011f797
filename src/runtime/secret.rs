//! The loop-marker secret: `loop.secret` in `[storage] state`, created on first start.
//!
//! 32 random bytes as hex text (so it can be copied to another instance), mode 0600. Every
//! instance that handles the same mail (two MX hosts, a shared journal or Redis) needs the same
//! file, or one instance's markers do not count at the other. Read at start and on each reload;
//! see [`crate::loopmark`] for what it signs.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::loopmark::LoopKey;

/// The file under `[storage] state`.
pub const FILE_NAME: &str = "loop.secret";

/// The secret could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("loop-marker secret {}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error(
        "loop-marker secret {}: not at least {} bytes of hex (delete it to have a new one made)",
        path.display(),
        LoopKey::MIN_LEN
    )]
    Invalid { path: PathBuf },
    #[error("loop-marker secret {}: cannot get random bytes: {cause}", path.display())]
    Random {
        path: PathBuf,
        cause: getrandom::Error,
    },
}

/// Reads the secret in `state_dir`, creating the directory (0700) and the file (0600, written
/// whole then linked into place, so a crash never leaves half a secret) when absent.
pub fn load(state_dir: &Path) -> Result<LoopKey, SecretError> {
    let path = state_dir.join(FILE_NAME);
    let io = |cause| SecretError::Io {
        path: path.clone(),
        cause,
    };
    match fs::read_to_string(&path) {
        Ok(text) => return parse(&text).ok_or(SecretError::Invalid { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(io)?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|cause| SecretError::Random {
        path: path.clone(),
        cause,
    })?;
    // tempfile creates 0600; set it anyway, the umask cannot widen it but say what is meant.
    let mut tmp = tempfile::NamedTempFile::new_in(state_dir).map_err(io)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    writeln!(tmp, "{}", hex::encode(secret)).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    match tmp.persist_noclobber(&path) {
        Ok(_) => {}
        // Another instance sharing the directory made one first: use theirs.
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e.error)),
    }
    let text = fs::read_to_string(&path).map_err(io)?;
    parse(&text).ok_or(SecretError::Invalid { path })
}

/// Reads the secret if there is one (the reload path: it never creates files).
pub fn read(state_dir: &Path) -> Result<Option<LoopKey>, SecretError> {
    let path = state_dir.join(FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => parse(&text).map(Some).ok_or(SecretError::Invalid { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(SecretError::Io { path, cause }),
    }
}

fn parse(text: &str) -> Option<LoopKey> {
    LoopKey::new(&hex::decode(text.trim()).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn created_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let account = crate::address::Address::parse_strict("gone@corp.example").unwrap();
        let today = jiff::civil::date(2026, 12, 4);
        let first = load(&state).unwrap();
        let meta = fs::metadata(state.join(FILE_NAME)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        // The same secret on the next start: its markers still count.
        let again = load(&state).unwrap();
        let mark = first.mark(&account, today);
        assert_eq!(again.verify(&mark, today), Some(account.clone()));
        // Another directory, another secret.
        let other = load(&dir.path().join("other")).unwrap();
        assert_eq!(other.verify(&mark, today), None);
        // A copied file makes a second instance agree.
        fs::copy(
            state.join(FILE_NAME),
            dir.path().join("other").join(FILE_NAME),
        )
        .unwrap();
        let copied = load(&dir.path().join("other")).unwrap();
        assert_eq!(copied.verify(&mark, today), Some(account));
        fs::write(state.join(FILE_NAME), "abcd\n").unwrap();
        assert!(matches!(load(&state), Err(SecretError::Invalid { .. })));
    }

    /// A replaced secret is taken on reload, even with the policy unchanged; a broken one keeps
    /// the running key.
    #[test]
    fn reload_reads_the_secret_again() {
        use crate::runtime::reload::{Outcome, reload_once};
        use crate::runtime::store::PolicyStore;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("handoff.toml");
        fs::write(&config, "[storage]\nstate = \"state\"\n").unwrap();
        let policy = crate::policy::load(&config).unwrap();
        let state = policy.settings.state_dir.clone();
        let store = PolicyStore::with_loop_key(policy, load(&state).unwrap());
        assert!(matches!(reload_once(&config, &store), Outcome::Unchanged));
        let replacement = "ab".repeat(32);
        fs::write(state.join(FILE_NAME), format!("{replacement}\n")).unwrap();
        assert!(matches!(
            reload_once(&config, &store),
            Outcome::Applied { .. }
        ));
        let key = LoopKey::new(&hex::decode(&replacement).unwrap()).unwrap();
        assert_eq!(store.snapshot().loop_key, key);
        fs::write(state.join(FILE_NAME), "short\n").unwrap();
        assert!(matches!(reload_once(&config, &store), Outcome::Unchanged));
        assert_eq!(store.snapshot().loop_key, key);
    }
}
