//! The running policy: one immutable snapshot at a time, swapped atomically on reload.
//!
//! A mail transaction takes one [`Snapshot`] when it starts and uses it to the end, so a reload in
//! the middle of a message never mixes two policies in one decision.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::policy::Policy;

/// A policy with its generation number (1 for the policy loaded at start-up, +1 per reload).
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub policy: Policy,
    pub digest: u64,
    pub loaded_at: jiff::Timestamp,
}

#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Snapshot>,
}

impl PolicyStore {
    pub fn new(policy: Policy) -> PolicyStore {
        let digest = policy.sources.digest();
        let snap = Snapshot {
            generation: 1,
            policy,
            digest,
            loaded_at: jiff::Timestamp::now(),
        };
        PolicyStore {
            current: ArcSwap::from_pointee(snap),
        }
    }

    /// The policy in force now. Cheap: one atomic load and a reference count.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs a new policy and returns its generation. Only the reload task calls this, so
    /// generations never race.
    pub(crate) fn replace(&self, policy: Policy) -> Arc<Snapshot> {
        let generation = self.current.load().generation + 1;
        let digest = policy.sources.digest();
        let snap = Arc::new(Snapshot {
            generation,
            policy,
            digest,
            loaded_at: jiff::Timestamp::now(),
        });
        self.current.store(snap.clone());
        snap
    }
}

impl crate::transaction::Context for PolicyStore {
    fn snapshot(&self) -> Arc<Snapshot> {
        PolicyStore::snapshot(self)
    }

    fn today(&self) -> jiff::civil::Date {
        super::today()
    }
}
