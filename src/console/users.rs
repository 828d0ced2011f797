//! The console's users file: who may use the archive console, in which role, with which scope.
//!
//! A file of its own (`[console] users`), never the policy: the people who edit offboarding
//! policy do not manage archive access. Mode 0600 is enforced when it is read (a readable hash
//! can be attacked offline). Passwords are kept as argon2id PHC strings (RFC 9106, the crate's
//! default parameters: 19 MiB, 2 passes, OWASP's recommendation); nothing else is accepted.
//!
//! ```toml
//! [users.alice]
//! role = "archive_admin"
//! password = "$argon2id$v=19$m=19456,t=2,p=1$…"
//! departments = ["sales"]   # optional: only mail of these departments (and sub-departments)
//! totp = "GEZDGNBVGY3TQOJQ…"  # optional: the TOTP secret (base32), from `console user totp`
//! token = "sha256:9f86d0…"    # optional: the SHA-256 of the API token, from `console user token`
//! ```
//!
//! The TOTP secret is kept as it is (a verifier needs it; the file's mode protects it); the API
//! token only as its SHA-256 (a token is 256 random bits, so a fast hash is enough: there is
//! nothing to guess offline).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use serde::{Deserialize, Serialize};

/// A users file larger than this is refused (a few thousand users fit in a tenth of it).
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// NIST SP 800-63B section 5.1.1.2: at least 8 characters; the archive holds every message the
/// company sent, so more.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Bounds the work one login attempt can ask for.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Role {
    /// Search, view, download and export mail; read the summary.
    ArchiveAdmin,
    /// Read and download the audit log; no mail.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ArchiveAdmin => "archive_admin",
            Role::Auditor => "auditor",
        }
    }
}

/// One console user, as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub role: Role,
    /// The argon2id PHC string.
    pub password: String,
    /// Only mail of accounts in these departments (and their sub-departments); empty: all mail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departments: Vec<String>,
    /// The TOTP secret, base32 (RFC 6238 second factor); none: password only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
    /// `sha256:` and the hex SHA-256 of the user's API token; none: no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl User {
    /// The TOTP secret's bytes (checked when the file was read).
    pub fn totp_secret(&self) -> Option<Vec<u8>> {
        self.totp
            .as_deref()
            .and_then(|t| super::totp::unbase32(t).ok())
    }
}

/// The whole file: users by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    #[serde(default)]
    pub users: BTreeMap<String, User>,
}

/// Why the users file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error(
        "{path}: mode {mode:04o}: the users file holds password hashes and must be readable by its owner only (chmod 600 {path})"
    )]
    Mode { path: String, mode: u32 },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    #[error("{path}: larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl Users {
    /// Reads the users file at `path`. A missing file is an empty one when `missing_ok` (the
    /// first `user add` creates it); the daemon refuses to start without one.
    pub fn load(path: &Path, missing_ok: bool) -> Result<Users, UsersError> {
        let name = path.display().to_string();
        let io = |cause| UsersError::Io {
            path: name.clone(),
            cause,
        };
        // O_NOFOLLOW: the file is checked, not what a link points to.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Users::default());
            }
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(UsersError::NotAFile { path: name });
        }
        if meta.mode() & 0o077 != 0 {
            return Err(UsersError::Mode {
                path: name,
                mode: meta.mode() & 0o7777,
            });
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(UsersError::TooLarge { path: name });
        }
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_FILE_BYTES + 1),
            &mut text,
        )
        .map_err(io)?;
        Users::parse(&text).map_err(|reason| UsersError::Invalid { path: name, reason })
    }

    /// The file's text, checked: every name, role, hash and department.
    pub fn parse(text: &str) -> Result<Users, String> {
        let users: Users = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        for (name, u) in &users.users {
            if let Err(e) = check_name(name) {
                problems.push(e);
            }
            if let Err(e) = check_hash(&u.password) {
                problems.push(format!("user `{name}`: {e}"));
            }
            for d in &u.departments {
                if let Err(e) = check_department(d) {
                    problems.push(format!("user `{name}`: {e}"));
                }
            }
            if let Some(t) = &u.totp {
                match super::totp::unbase32(t) {
                    Ok(b) if b.len() >= 16 => {}
                    Ok(_) => problems.push(format!(
                        "user `{name}`: the TOTP secret is shorter than 128 bits"
                    )),
                    Err(e) => problems.push(format!("user `{name}`: totp: {e}")),
                }
            }
            if let Some(t) = &u.token
                && !t
                    .strip_prefix("sha256:")
                    .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                problems.push(format!(
                    "user `{name}`: token is not `sha256:` and 64 hex digits"
                ));
            }
        }
        match problems.is_empty() {
            true => Ok(users),
            false => Err(problems.join("; ")),
        }
    }

    /// Writes the file whole (a temporary file, fsynced, renamed over it), mode 0600, keeping
    /// the owner and group of the file it replaces (the daemon's user must go on reading it).
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let name = path.display().to_string();
        let io = |cause| UsersError::Io {
            path: name.clone(),
            cause,
        };
        let text = toml::to_string(self).map_err(|e| UsersError::Invalid {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let old = std::fs::symlink_metadata(path).ok();
        let tmp: PathBuf = dir.join(format!(
            ".{}.tmp{}",
            path.file_name()
                .map_or("users".into(), |n| n.to_string_lossy()),
            std::process::id()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let written = (|| {
            f.write_all(
                b"# handoff console users: written by `handoff console user`; mode 0600.\n",
            )?;
            f.write_all(text.as_bytes())?;
            if let Some(m) = &old {
                std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)
    }
}

/// A user name: 1 to 64 of ASCII letters, digits, `.`, `_`, `-`, `@` (a login or an email
/// address), starting with a letter or digit. It appears in the audit trail and the pages.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "`{}` is not a user name (1-64 letters, digits, `.`, `_`, `-`, `@`, starting with a letter or digit)",
            name.escape_debug()
        )),
    }
}

/// A department as the policy writes them: `sales` or `sales/emea`.
pub fn check_department(d: &str) -> Result<(), String> {
    let ok = !d.is_empty()
        && d.len() <= 200
        && d.split('/').all(|p| !p.trim().is_empty())
        && !d.chars().any(char::is_control);
    match ok {
        true => Ok(()),
        false => Err(format!("`{}` is not a department", d.escape_debug())),
    }
}

/// A new password's rules.
pub fn check_password(p: &str) -> Result<(), String> {
    if p.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password is too short: at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if p.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is too long: at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(())
}

fn check_hash(h: &str) -> Result<(), String> {
    let parsed =
        PasswordHash::new(h).map_err(|e| format!("the password is not a PHC string ({e})"))?;
    match parsed.algorithm.as_str() == Algorithm::Argon2id.ident().as_str() {
        true => Ok(()),
        false => Err(format!(
            "the password hash is {}, not argon2id",
            parsed.algorithm
        )),
    }
}

/// The argon2id hash of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `hash` (argon2's comparison is constant-time).
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Checks `password` against `user`'s hash, or against a stand-in hash when there is no such
/// user: the answer takes as long either way, so its time does not tell which names exist.
pub fn authenticate<'a>(users: &'a Users, name: &str, password: &str) -> Option<&'a User> {
    static STAND_IN: OnceLock<String> = OnceLock::new();
    match users.users.get(name) {
        Some(u) => verify_password(&u.password, password).then_some(u),
        None => {
            let h = STAND_IN.get_or_init(|| {
                hash_password("no such user; no such password").unwrap_or_default()
            });
            let _ = verify_password(h, password);
            None
        }
    }
}

/// What the users file keeps of an API token.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// The user whose API token `token` is. Every user's hash is compared, each in constant time,
/// so the answer's time tells nothing about which hashes exist or how much of one matched.
pub fn by_token<'a>(users: &'a Users, token: &str) -> Option<(&'a str, &'a User)> {
    use subtle::ConstantTimeEq;
    let want = token_hash(token);
    let mut found = None;
    for (name, u) in &users.users {
        let Some(h) = &u.token else { continue };
        if bool::from(h.as_bytes().ct_eq(want.as_bytes())) && found.is_none() {
            found = Some((name.as_str(), u));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_departments_and_passwords_are_checked() {
        for ok in ["alice", "a.b-c_d", "alice@corp.example", "7"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "-x",
            "a b",
            "a/b",
            "<script>",
            "é",
            "a\n",
            long.as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_department("sales/emea").is_ok());
        for bad in ["", "sales/", "/x", "a\u{1b}b"] {
            assert!(check_department(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("short").is_err());
        assert!(check_password("twelve chars").is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[test]
    fn a_password_verifies_against_its_argon2id_hash_only() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterY"));
        assert!(!verify_password("not a hash", "correct horse battery"));
        // A fresh salt each time.
        assert_ne!(h, hash_password("correct horse battery").unwrap());
        let users = Users {
            users: BTreeMap::from([(
                "alice".to_string(),
                User {
                    role: Role::Auditor,
                    password: h,
                    departments: vec![],
                    totp: None,
                    token: None,
                },
            )]),
        };
        assert!(authenticate(&users, "alice", "correct horse battery").is_some());
        assert!(authenticate(&users, "alice", "wrong").is_none());
        assert!(authenticate(&users, "bob", "correct horse battery").is_none());
    }

    #[test]
    fn a_token_finds_its_user_by_hash() {
        let h = hash_password("correct horse battery").unwrap();
        let user = |token: Option<&str>| User {
            role: Role::ArchiveAdmin,
            password: h.clone(),
            departments: vec![],
            totp: None,
            token: token.map(token_hash),
        };
        let users = Users {
            users: BTreeMap::from([
                ("alice".to_string(), user(Some("a-token"))),
                ("bob".to_string(), user(Some("b-token"))),
                ("carol".to_string(), user(None)),
            ]),
        };
        assert_eq!(by_token(&users, "b-token").map(|u| u.0), Some("bob"));
        assert_eq!(by_token(&users, "a-token").map(|u| u.0), Some("alice"));
        assert!(by_token(&users, "c-token").is_none());
        assert!(by_token(&users, "").is_none());
        assert!(token_hash("x").starts_with("sha256:") && token_hash("x").len() == 71);
    }

    #[test]
    fn the_file_round_trips_and_bad_entries_are_all_named() {
        let h = hash_password("correct horse battery").unwrap();
        let text = format!(
            "[users.alice]\nrole = \"archive_admin\"\npassword = \"{h}\"\ndepartments = [\"sales\"]\n\
             [users.bob]\nrole = \"auditor\"\npassword = \"{h}\"\n"
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.users["alice"].role, Role::ArchiveAdmin);
        assert_eq!(users.users["alice"].departments, ["sales"]);
        assert_eq!(users.users["bob"].role, Role::Auditor);
        let again = Users::parse(&toml::to_string(&users).unwrap()).unwrap();
        assert_eq!(again, users);

        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        let bad = format!(
            "[users.\"a b\"]\nrole = \"auditor\"\npassword = \"{h}\"\n\
             [users.carol]\nrole = \"auditor\"\npassword = \"{bcrypt}\"\ndepartments = [\"\"]\n"
        );
        let e = Users::parse(&bad).unwrap_err();
        assert!(e.contains("`a b` is not a user name"), "{e}");
        assert!(e.contains("user `carol`: the password"), "{e}");
        assert!(e.contains("user `carol`: `` is not a department"), "{e}");
        let short = format!(
            "[users.x]\nrole = \"auditor\"\npassword = \"{h}\"\ntotp = \"MZXW6\"\ntoken = \"abc\"\n"
        );
        let e = Users::parse(&short).unwrap_err();
        assert!(
            e.contains("shorter than 128 bits") && e.contains("token is not"),
            "{e}"
        );
        for bad in [
            "[users.x]\nrole = \"postmaster\"\npassword = \"x\"\n",
            "[users.x]\nrole = \"auditor\"\n",
            "[users.x]\nrole = \"auditor\"\npassword = \"x\"\nadmin = true\n",
        ] {
            assert!(Users::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_file_is_written_0600_and_refused_when_others_can_read_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        assert_eq!(Users::load(&path, true).unwrap(), Users::default());
        assert!(matches!(
            Users::load(&path, false),
            Err(UsersError::Io { .. })
        ));
        let mut users = Users::default();
        users.users.insert(
            "alice".into(),
            User {
                role: Role::ArchiveAdmin,
                password: hash_password("correct horse battery").unwrap(),
                departments: vec!["sales/emea".into()],
                totp: Some(super::super::totp::base32(&[7; 20])),
                token: Some(token_hash("t")),
            },
        );
        users.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Users::load(&path, false).unwrap(), users);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Users::load(&path, false).unwrap_err();
        assert!(matches!(e, UsersError::Mode { mode: 0o640, .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        // A link is not followed.
        let link = dir.path().join("link.toml");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(Users::load(&link, false).is_err());
    }
}
