//! The running policy: one immutable [`Snapshot`] at a time, swapped atomically on reload.
//!
//! A mail transaction takes one snapshot when it starts and uses it to the end, so a reload in
//! the middle of a message never mixes two policies in one decision.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::loopmark::LoopKey;
use crate::policy::Policy;
/// Where the snapshots this store swaps are defined; named here too for the callers that take
/// both.
pub use crate::transaction::Snapshot;

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
        let snap = Snapshot::new(1, policy, loop_key, jiff::Timestamp::now());
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
        let snap = Arc::new(Snapshot::new(
            generation,
            policy,
            loop_key,
            jiff::Timestamp::now(),
        ));
        self.current.store(snap.clone());
        snap
    }
}

/// 256 bits from the operating system; should that fail, 128 bits from std's per-process
/// random hasher keys, stretched over four hashes (this key signs markers that only this process
/// checks).
fn random_key() -> LoopKey {
    let mut secret = [0u8; 32];
    if getrandom::fill(&mut secret).is_err() {
        let keys = std::collections::hash_map::RandomState::new();
        for (i, chunk) in (0u64..).zip(secret.chunks_exact_mut(8)) {
            let mut h = keys.build_hasher();
            h.write_u64(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    LoopKey::new(&secret).unwrap_or_else(|| unreachable!("32 bytes is long enough"))
}

impl crate::transaction::Context for PolicyStore {
    fn snapshot(&self) -> Arc<Snapshot> {
        PolicyStore::snapshot(self)
    }

    fn today(&self) -> jiff::civil::Date {
        super::today()
    }
}
