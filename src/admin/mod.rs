//! Admin commands that edit the policy: `depart`, `disable`, `freeze`, `delete`, `restore`,
//! `import --csv`.
//!
//! - [`edit`]: pure: a TOML document and an [`Edit`] in, the edited document out (toml_edit:
//!   comments, order and formatting of everything else are kept).
//! - [`csv`]: pure: CSV text in, edits with their CSV line out.
//! - [`plan`] and [`commit`] (this module) are the file edge. `plan` finds the file each address
//!   lives in (an account or alias in an included file is edited there; a new one goes into the
//!   main file), applies the edits in memory and validates the *whole* edited policy with the
//!   normal loader, includes and all. Only then does `commit` write each changed file atomically
//!   (a temporary file in the same directory, fsync, rename, fsync of the directory), so a running
//!   daemon that reloads sees the old file or the new one, never half of one.

pub mod csv;
pub mod edit;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use toml_edit::DocumentMut;

use crate::policy::{self, Diagnostics, LoadError, Node};
pub use edit::{AccountChange, Change, Edit, EditError};

/// One policy file an edit changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub path: PathBuf,
    pub before: String,
    pub after: String,
}

/// Why an edit was not made. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the policy does not load as it is; fix it before editing it:\n{0}")]
    Broken(LoadError),
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: cannot edit: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: {cause}", path.display())]
    Edit { path: PathBuf, cause: EditError },
    #[error("the edited policy would be invalid, so nothing was written:\n{0}")]
    Invalid(Diagnostics),
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Applies `edits` to the policy whose main file is `config`, in memory, and validates the
/// result. Returns the files that change, with their text before and after.
pub fn plan(config: &Path, edits: &[Edit]) -> Result<Vec<Changed>, AdminError> {
    let policy = policy::load(config).map_err(AdminError::Broken)?;
    // Per file: its text, the document being edited and its keys; found by path in a map, so
    // an import stays linear in its rows.
    let mut docs: Vec<(PathBuf, String, DocumentMut, edit::Keys)> = Vec::new();
    let mut by_path: HashMap<PathBuf, usize> = HashMap::new();
    for e in edits {
        let home = match policy.lookup(&e.address) {
            Some(hit) if !hit.via_detail => match hit.node {
                Node::Account(i) => policy.accounts[i].origin.file,
                Node::Alias(i) => policy.aliases[i].origin.file,
            },
            // New addresses (and `user+tag@` that only matched `user@`) go into the main file.
            _ => policy::diag::FileId(0),
        };
        let path = policy.sources.path(home).to_path_buf();
        let i = match by_path.get(&path) {
            Some(&i) => i,
            None => {
                // The text the policy was loaded from, not a second read: the edit applies to
                // exactly what was validated.
                let text = policy
                    .sources
                    .files
                    .get(home.0)
                    .map(|f| f.text.clone())
                    .unwrap_or_default();
                let doc = text
                    .parse::<DocumentMut>()
                    .map_err(|err| AdminError::Syntax {
                        path: path.clone(),
                        message: err.to_string().lines().next().unwrap_or("").to_string(),
                    })?;
                let keys = edit::Keys::of(&doc);
                docs.push((path.clone(), text, doc, keys));
                by_path.insert(path.clone(), docs.len() - 1);
                docs.len() - 1
            }
        };
        let (_, _, doc, keys) = &mut docs[i];
        edit::apply_indexed(doc, keys, e).map_err(|cause| AdminError::Edit { path, cause })?;
    }
    let changed: Vec<Changed> = docs
        .into_iter()
        .map(|(path, before, doc, _)| Changed {
            path,
            before,
            after: doc.to_string(),
        })
        .filter(|c| c.before != c.after)
        .collect();
    let edited: HashMap<PathBuf, String> = changed
        .iter()
        .map(|c| (c.path.clone(), c.after.clone()))
        .collect();
    match policy::load_with(config, &edited) {
        Ok(_) => Ok(changed),
        Err(LoadError::Invalid(d)) => Err(AdminError::Invalid(d)),
        Err(e) => Err(AdminError::Broken(e)),
    }
}

/// Writes each changed file atomically. Included files are written before the main file, so a
/// reload between two renames sees new entries before the main file could refer to them.
pub fn commit(changed: &[Changed], config: &Path) -> Result<(), AdminError> {
    let mut order: Vec<&Changed> = changed.iter().collect();
    order.sort_by_key(|c| c.path == config);
    for c in order {
        replace(&c.path, &c.after).map_err(|cause| AdminError::Write {
            path: c.path.clone(),
            cause,
        })?;
    }
    Ok(())
}

/// Replaces `path` with `text` atomically, keeping its permissions and owner.
fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = policy::base_dir(path);
    let meta = std::fs::metadata(path)?;
    // Not `*.toml`: an include pattern must not pick up the temporary file.
    let mut tmp = tempfile::Builder::new()
        .prefix(".handoff-edit-")
        .suffix(".tmp")
        .tempfile_in(&dir)?;
    tmp.write_all(text.as_bytes())?;
    let file = tmp.as_file();
    file.set_permissions(meta.permissions())?;
    // The daemon's user must still be able to read the file (e.g. root:handoff 0640).
    std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()))?;
    file.sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(&dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::policy::State;

    fn disable(a: &str) -> Edit {
        Edit {
            address: Address::parse_strict(a).unwrap(),
            change: Change::Account(AccountChange::state(State::Disabled)),
        }
    }

    #[test]
    fn an_account_in_an_included_file_is_edited_there() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("handoff.toml");
        std::fs::write(
            &main,
            "include = [\"accounts.d/*.toml\"]\n[domains]\nlocal = [\"corp.example\"]\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("accounts.d")).unwrap();
        let inc = dir.path().join("accounts.d/a.toml");
        std::fs::write(
            &inc,
            "# Alice\n[accounts.\"a@corp.example\"]\nstate = \"active\"\n",
        )
        .unwrap();
        let changed = plan(
            &main,
            &[disable("a@corp.example"), disable("b@corp.example")],
        )
        .unwrap();
        let paths: Vec<&Path> = changed.iter().map(|c| c.path.as_path()).collect();
        assert_eq!(paths, vec![inc.as_path(), main.as_path()]);
        assert_eq!(
            changed[0].after,
            "# Alice\n[accounts.\"a@corp.example\"]\nstate = \"disabled\"\n"
        );
        commit(&changed, &main).unwrap();
        assert_eq!(std::fs::read_to_string(&inc).unwrap(), changed[0].after);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("accounts.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temporary file is left: {leftovers:?}"
        );
    }

    #[test]
    fn an_edit_that_breaks_the_policy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("handoff.toml");
        std::fs::write(&main, "[domains]\nlocal = [\"corp.example\"]\n").unwrap();
        let e = Edit {
            address: Address::parse_strict("a@corp.example").unwrap(),
            change: Change::Account(AccountChange {
                autoreply: Some("missing".into()),
                ..AccountChange::state(State::Departed)
            }),
        };
        let err = plan(&main, &[e]).unwrap_err();
        assert!(
            err.to_string().contains("unknown template `missing`"),
            "{err}"
        );
    }
}
