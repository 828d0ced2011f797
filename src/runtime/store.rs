//! The running policy: one immutable snapshot at a time, swapped atomically on reload.
//!
//! A mail transaction takes one [`Snapshot`] when it starts and uses it to the end, so a reload in
//! the middle of a message never mixes two policies in one decision.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::loopmark::LoopKey;
use crate::policy::Policy;

/// A policy with its generation number (1 for the policy loaded at start-up, +1 per reload).
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub policy: Policy,
    pub digest: u64,
    pub loaded_at: jiff::Timestamp,
    /// Signs and checks the loop markers (read from the state directory by the daemon).
    pub loop_key: LoopKey,
}

#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Snapshot>,
}

impl PolicyStore {
    /// A store whose loop markers are signed with a key of its own, random, for tools and tests:
    /// its markers count in this process only. The daemon uses [`PolicyStore::with_loop_key`].
    pub fn new(policy: Policy) -> PolicyStore {
        PolicyStore::with_loop_key(policy, random_key())
    }

    pub fn with_loop_key(policy: Policy, loop_key: LoopKey) -> PolicyStore {
        let digest = policy.sources.digest();
        let snap = Snapshot {
            generation: 1,
            policy,
            digest,
            loaded_at: jiff::Timestamp::now(),
            loop_key,
        };
        PolicyStore {
            current: ArcSwap::from_pointee(snap),
        }
    }

    /// The policy in force now. Cheap: one atomic load and a reference count.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs a new policy (and loop key) and returns its generation. Only the reload task
    /// calls this, so generations never race.
    pub(crate) fn replace(&self, policy: Policy, loop_key: LoopKey) -> Arc<Snapshot> {
        let generation = self.current.load().generation + 1;
        let digest = policy.sources.digest();
        let snap = Arc::new(Snapshot {
            generation,
            policy,
            digest,
            loaded_at: jiff::Timestamp::now(),
            loop_key,
        });
        self.current.store(snap.clone());
        snap
    }
}

/// 256 bits from the operating system; should that fail, 128 bits from std's per-process
/// random hasher keys (this key signs markers that only this process checks).
fn random_key() -> LoopKey {
    let mut secret = [0u8; 32];
    let key = match getrandom::fill(&mut secret) {
        Ok(()) => LoopKey::new(&secret),
        Err(_) => LoopKey::new(crate::autoreply::unique_token().as_bytes()),
    };
    key.unwrap_or_else(|| unreachable!("32 bytes is long enough"))
}

impl crate::transaction::Context for PolicyStore {
    fn snapshot(&self) -> Arc<Snapshot> {
        PolicyStore::snapshot(self)
    }

    fn today(&self) -> jiff::civil::Date {
        super::today()
    }
}
