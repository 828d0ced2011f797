//! The one reload path. A change to the policy file or its includes (seen by a file watcher) and
//! SIGHUP both send a [`Trigger`]; the reload task builds the new policy completely, then swaps
//! it in, or keeps the running one and reports every error. [`emit`] is the single place that
//! logs the outcome and counts it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::store::PolicyStore;
use crate::metrics;
use crate::policy::{self, LoadError, Policy};

/// Why a reload was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    FileChanged,
    Signal,
}

/// What a reload attempt did.
#[derive(Debug)]
pub enum Outcome {
    Applied {
        generation: u64,
        restart_needed: Vec<&'static str>,
    },
    /// The files are byte-for-byte what is running.
    Unchanged,
    /// The new files are invalid or unreadable; the running policy stays.
    Refused(LoadError),
}

/// Editors save in bursts (write temp, rename, chmod); one reload per burst is enough.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Loads the policy at `path` and installs it if it is valid and different.
pub fn reload_once(path: &Path, store: &PolicyStore) -> Outcome {
    let policy = match policy::load(path) {
        Ok(p) => p,
        Err(e) => return Outcome::Refused(e),
    };
    let current = store.snapshot();
    // A replaced loop-marker secret counts as a change; an unreadable one keeps the running key.
    let loop_key = match super::secret::read(&current.policy.settings.state_dir) {
        Ok(Some(key)) => key,
        Ok(None) => current.loop_key.clone(),
        Err(e) => {
            tracing::warn!("{e}; the running loop-marker secret stays");
            current.loop_key.clone()
        }
    };
    if policy.sources.digest() == current.digest
        && policy.sources == current.policy.sources
        && loop_key == current.loop_key
        // A rotated SRS secret file changes no policy text.
        && policy.settings.srs == current.policy.settings.srs
        // A replaced DKIM key file under an unchanged policy is a change too.
        && policy.dkim == current.policy.dkim
    {
        return Outcome::Unchanged;
    }
    let restart_needed = current.policy.settings.restart_needed(&policy.settings);
    let snap = store.replace(policy, loop_key);
    policy_in_force(&snap.policy, snap.generation, snap.loaded_at);
    Outcome::Applied {
        generation: snap.generation,
        restart_needed,
    }
}

/// Publishes the gauges that describe the policy now in force (at start-up and after each
/// applied reload); the state labels are the policy's own names.
pub(super) fn policy_in_force(policy: &Policy, generation: u64, loaded_at: jiff::Timestamp) {
    let by_state = policy
        .accounts_by_state()
        .map(|(state, n)| (state.as_str(), n));
    metrics::policy_in_force(&by_state, policy.aliases.len(), generation, loaded_at);
}

/// Logs and counts a reload outcome.
pub fn emit(trigger: Trigger, outcome: &Outcome) {
    match outcome {
        Outcome::Applied {
            generation,
            restart_needed,
        } => {
            metrics::reload("applied");
            tracing::info!(?trigger, generation, "policy reloaded");
            if !restart_needed.is_empty() {
                tracing::warn!(settings = ?restart_needed, "these settings changed but take effect only after a restart; the running values stay");
            }
        }
        Outcome::Unchanged => {
            metrics::reload("unchanged");
            // An operator who sent SIGHUP wants to hear back; editor noise does not need a line.
            match trigger {
                Trigger::Signal => {
                    tracing::info!(?trigger, "policy files unchanged; nothing to reload")
                }
                Trigger::FileChanged => {
                    tracing::debug!(?trigger, "policy files unchanged; nothing to reload")
                }
            }
        }
        Outcome::Refused(err) => {
            metrics::reload("refused");
            match err {
                LoadError::Invalid(diags) => {
                    for d in diags.iter() {
                        tracing::warn!(?trigger, "policy reload refused: {d}");
                    }
                    tracing::warn!(
                        ?trigger,
                        errors = diags.len(),
                        "policy reload refused; the running policy stays"
                    );
                }
                LoadError::Read { .. } => tracing::warn!(
                    ?trigger,
                    "policy reload refused: {err}; the running policy stays"
                ),
            }
        }
    }
}

/// Runs reloads until `shutdown` completes. `watcher`, when given, sends on the `triggers`
/// channel and is pointed at the files of every policy applied; SIGHUP handling sends on another
/// sender of the same channel.
pub async fn run(
    path: PathBuf,
    store: Arc<PolicyStore>,
    mut watcher: Option<PolicyWatcher>,
    mut triggers: mpsc::Receiver<Trigger>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let mut trigger = tokio::select! {
            _ = &mut shutdown => return,
            t = triggers.recv() => match t {
                Some(t) => t,
                None => return,
            },
        };
        if trigger == Trigger::FileChanged {
            tokio::time::sleep(DEBOUNCE).await;
        }
        while let Ok(t) = triggers.try_recv() {
            if t == Trigger::Signal {
                trigger = t;
            }
        }
        super::notify::reloading();
        let (p, s) = (path.clone(), store.clone());
        let outcome = match tokio::task::spawn_blocking(move || reload_once(&p, &s)).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!("policy reload task failed: {e}; the running policy stays");
                super::notify::ready("policy reload failed; the running policy stays");
                continue;
            }
        };
        emit(trigger, &outcome);
        super::notify::ready(&format!(
            "policy generation {}",
            store.snapshot().generation
        ));
        if let (Outcome::Applied { .. }, Some(w)) = (&outcome, watcher.as_mut()) {
            w.follow(&store.snapshot().policy);
        }
    }
}

/// Watches the directories that hold the policy file and its includes. Directories, not files:
/// editors that save by writing a new file and renaming it over the old one replace the inode a
/// file watch would follow.
pub struct PolicyWatcher {
    watcher: RecommendedWatcher,
    dirs: HashSet<PathBuf>,
    filter: Arc<std::sync::Mutex<Filter>>,
}

#[derive(Default)]
struct Filter {
    files: HashSet<PathBuf>,
    patterns: Vec<glob::Pattern>,
}

impl Filter {
    fn wants(&self, path: &Path) -> bool {
        self.files.contains(path) || self.patterns.iter().any(|p| p.matches_path(path))
    }
}

impl PolicyWatcher {
    /// Starts a watcher that sends [`Trigger::FileChanged`] on `tx`. Returns `None` (and logs)
    /// when the platform refuses a watcher; SIGHUP still works then.
    pub fn new(main: &Path, tx: mpsc::Sender<Trigger>) -> Option<PolicyWatcher> {
        let filter = Arc::new(std::sync::Mutex::new(Filter::default()));
        let f = filter.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if event.kind.is_access() {
                return;
            }
            let wanted = match f.lock() {
                Ok(filter) => event.paths.is_empty() || event.paths.iter().any(|p| filter.wants(p)),
                Err(_) => true,
            };
            if wanted {
                // A full channel already holds a pending reload, which will read the new files.
                let _ = tx.try_send(Trigger::FileChanged);
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(watcher) => {
                let mut w = PolicyWatcher {
                    watcher,
                    dirs: HashSet::new(),
                    filter,
                };
                w.watch_dir(&policy::base_dir(main));
                Some(w)
            }
            Err(e) => {
                tracing::warn!("cannot watch policy files ({e}); reload with SIGHUP");
                None
            }
        }
    }

    /// Points the watcher at the files of `policy` (its main file, includes and include patterns).
    pub fn follow(&mut self, policy: &Policy) {
        let mut filter = Filter::default();
        for f in &policy.sources.files {
            filter.files.insert(f.path.clone());
            if let Some(dir) = f.path.parent() {
                self.watch_dir(dir);
            }
        }
        // The DKIM key files: replacing one reloads the keys.
        for d in &policy.settings.dkim {
            filter.files.insert(d.key_file.clone());
            if let Some(dir) = d.key_file.parent() {
                self.watch_dir(dir);
            }
        }
        for pattern in &policy.include_patterns {
            if let Ok(p) = glob::Pattern::new(&pattern.to_string_lossy()) {
                filter.patterns.push(p);
            }
            let fixed: PathBuf = pattern
                .components()
                .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                .collect();
            let dir = if fixed == *pattern {
                fixed.parent().map(Path::to_path_buf).unwrap_or(fixed)
            } else {
                fixed
            };
            self.watch_dir(&dir);
        }
        if let Ok(mut f) = self.filter.lock() {
            *f = filter;
        }
    }

    fn watch_dir(&mut self, dir: &Path) {
        if self.dirs.contains(dir) {
            return;
        }
        match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.dirs.insert(dir.to_path_buf());
            }
            Err(e) => tracing::warn!(
                "cannot watch {}: {e}; changes there need SIGHUP",
                dir.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A new secret put first in the SRS secret file (the policy text unchanged) is a change:
    /// the reload applies it, and the new secret signs while the old one still verifies.
    #[test]
    fn a_rotated_srs_secret_is_applied_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("srs.secrets");
        let write = |text: &str| {
            std::fs::write(&secret, text).unwrap();
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        write("old\n");
        let path = dir.path().join("policy.toml");
        let text = "[domains]\nlocal = [\"corp.example\"]\n[storage]\nstate = \"state\"\n[srs]\ndomain = \"srs.corp.example\"\nsecret_file = \"srs.secrets\"\n";
        std::fs::write(&path, text).unwrap();
        let store = PolicyStore::new(policy::load(&path).unwrap());
        let rewriter = |store: &PolicyStore| {
            let snap = store.snapshot();
            snap.policy.settings.srs.clone().unwrap().srs.unwrap()
        };
        let signed_old = rewriter(&store).forward("a@example.net", 100).unwrap();
        assert!(matches!(reload_once(&path, &store), Outcome::Unchanged));
        write("new\nold\n");
        assert!(matches!(
            reload_once(&path, &store),
            Outcome::Applied { .. }
        ));
        let now = rewriter(&store);
        assert_ne!(now.forward("a@example.net", 100).unwrap(), signed_old);
        assert!(now.reverse(&signed_old, 100).is_ok());
    }
}
