//! Sessions and login throttling, in memory. Pure: the caller passes the time, so the
//! timeouts are tested without waiting.
//!
//! A session id is 32 random bytes (hex); the table is keyed by its SHA-256, so looking one up
//! neither compares secrets byte by byte nor keeps them in memory. A session is created before
//! the login (to carry the login form's CSRF token) and replaced by a new one at the login
//! (OWASP: renew the id on a privilege change, against session fixation).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Sessions kept at most: at the cap the least recently used goes (anonymous ones are cheap to
/// make, so an attacker could otherwise fill memory with them).
pub const MAX_SESSIONS: usize = 10_000;

/// A random token: 32 bytes from the OS, in hex.
pub fn token() -> String {
    let mut b = [0u8; 32];
    // getrandom fails only where the OS has no randomness at all; a session id must not be
    // guessable, so that is fatal for the request (the caller answers 500).
    getrandom::fill(&mut b).expect("the OS random source failed");
    hex::encode(b)
}

/// Whether two tokens are equal, in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// One session: anonymous (the login form) or a user's.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: Option<String>,
    /// The token every POST of this session must carry.
    pub csrf: String,
    created: Instant,
    last: Instant,
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    map: HashMap<[u8; 32], Session>,
    idle: Duration,
    max_age: Duration,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(idle: Duration, max_age: Duration) -> Sessions {
        Sessions {
            map: HashMap::new(),
            idle,
            max_age,
        }
    }

    /// A new session; returns its id (for the cookie) and the session.
    pub fn create(&mut self, user: Option<String>, now: Instant) -> (String, Session) {
        if self.map.len() >= MAX_SESSIONS {
            self.purge(now);
        }
        if self.map.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, s)| (s.user.is_some(), s.last))
                .map(|(k, _)| *k)
        {
            self.map.remove(&oldest);
        }
        let id = token();
        let s = Session {
            user,
            csrf: token(),
            created: now,
            last: now,
        };
        self.map.insert(key(&id), s.clone());
        (id, s)
    }

    /// The live session `id` names (its idle clock restarted), or `None`: unknown, idle too
    /// long, or past its absolute lifetime (then it is removed).
    pub fn get(&mut self, id: &str, now: Instant) -> Option<Session> {
        let k = key(id);
        let s = self.map.get_mut(&k)?;
        if now.duration_since(s.last) > self.idle || now.duration_since(s.created) > self.max_age {
            self.map.remove(&k);
            return None;
        }
        s.last = now;
        Some(s.clone())
    }

    pub fn remove(&mut self, id: &str) {
        self.map.remove(&key(id));
    }

    /// Ends every session of `user` (removed from the users file).
    pub fn remove_user(&mut self, user: &str) {
        self.map.retain(|_, s| s.user.as_deref() != Some(user));
    }

    /// Ends every session of `user` but `keep` (a password change ends the others).
    pub fn remove_user_except(&mut self, user: &str, keep: &str) {
        let keep = key(keep);
        self.map
            .retain(|k, s| *k == keep || s.user.as_deref() != Some(user));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn purge(&mut self, now: Instant) {
        let (idle, max) = (self.idle, self.max_age);
        self.map.retain(|_, s| {
            now.duration_since(s.last) <= idle && now.duration_since(s.created) <= max
        });
    }
}

/// Failed logins per user name and per source address: after [`Throttle::MAX_PER_USER`]
/// failures for one name (or [`Throttle::MAX_PER_SOURCE`] from one address) within
/// [`Throttle::WINDOW`], further attempts are refused until the window since the last failure
/// has passed, right password or not. Per name stops guessing one account from many
/// addresses; per address stops spraying many names from one.
#[derive(Debug, Default)]
pub struct Throttle {
    map: HashMap<String, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Whether a login may be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Locked out for this much longer.
    Locked(Duration),
}

impl Throttle {
    /// OWASP's authentication cheat sheet: lock after a handful of failures, for minutes.
    pub const MAX_PER_USER: u32 = 5;
    pub const MAX_PER_SOURCE: u32 = 20;
    pub const WINDOW: Duration = Duration::from_secs(15 * 60);
    /// Keys kept at most (names are attacker-chosen): the oldest go first.
    const MAX_KEYS: usize = 100_000;

    /// Whether `user` may try to log in from `source` now.
    pub fn gate(&self, user: &str, source: &str, now: Instant) -> Gate {
        let locked = |k: String, max: u32| {
            self.map
                .get(&k)
                .filter(|f| f.count >= max)
                .and_then(|f| Self::WINDOW.checked_sub(now.duration_since(f.last)))
        };
        match (
            locked(format!("u:{user}"), Self::MAX_PER_USER),
            locked(format!("s:{source}"), Self::MAX_PER_SOURCE),
        ) {
            (None, None) => Gate::Open,
            (a, b) => Gate::Locked(a.unwrap_or_default().max(b.unwrap_or_default())),
        }
    }

    /// Counts a failed login.
    pub fn failed(&mut self, user: &str, source: &str, now: Instant) {
        if self.map.len() >= Self::MAX_KEYS {
            self.map
                .retain(|_, f| now.duration_since(f.last) < Self::WINDOW);
        }
        for k in [format!("u:{user}"), format!("s:{source}")] {
            let f = self.map.entry(k).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.duration_since(f.last) >= Self::WINDOW {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
        }
    }

    /// A successful login clears the name's failures (not the address's).
    pub fn succeeded(&mut self, user: &str) {
        self.map.remove(&format!("u:{user}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_or_too_old() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut s = Sessions::new(15 * min, 60 * min);
        let (id, first) = s.create(Some("alice".into()), t0);
        assert_eq!(id.len(), 64);
        assert_ne!(id, first.csrf);
        assert!(s.get("nope", t0).is_none());
        // Each request restarts the idle clock…
        for i in 1..=4 {
            assert!(s.get(&id, t0 + i * 14 * min).is_some(), "{i}");
        }
        // …but not the absolute one.
        assert!(s.get(&id, t0 + 61 * min).is_none());
        assert!(s.is_empty(), "an expired session is removed");
        let (id, _) = s.create(None, t0);
        assert!(s.get(&id, t0 + 16 * min).is_none());
        let (a, _) = s.create(Some("bob".into()), t0);
        let (b, _) = s.create(Some("carol".into()), t0);
        assert_ne!(a, b);
        s.remove_user("bob");
        assert!(s.get(&a, t0).is_none() && s.get(&b, t0).is_some());
        s.remove(&b);
        assert!(s.get(&b, t0).is_none());
        let (c1, _) = s.create(Some("carol".into()), t0);
        let (c2, _) = s.create(Some("carol".into()), t0);
        let (d, _) = s.create(Some("dave".into()), t0);
        s.remove_user_except("carol", &c2);
        assert!(s.get(&c1, t0).is_none());
        assert!(s.get(&c2, t0).is_some() && s.get(&d, t0).is_some());
    }

    #[test]
    fn the_table_is_bounded_and_drops_anonymous_sessions_first() {
        let t0 = Instant::now();
        let h = Duration::from_secs(3600);
        let mut s = Sessions::new(h, h);
        let (user, _) = s.create(Some("alice".into()), t0);
        for i in 0..MAX_SESSIONS + 10 {
            s.create(None, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&user, t0).is_some());
    }

    #[test]
    fn tokens_compare_whole() {
        let t = token();
        assert!(same_token(&t, &t.clone()));
        assert!(!same_token(&t, &t[..63]));
        assert!(!same_token(&t, &token()));
        assert!(!same_token("", &t));
    }

    #[test]
    fn repeated_failures_lock_a_name_and_an_address_for_a_while() {
        let t0 = Instant::now();
        let mut th = Throttle::default();
        for i in 0..Throttle::MAX_PER_USER {
            assert_eq!(th.gate("alice", "10.0.0.1", t0), Gate::Open, "{i}");
            th.failed("alice", "10.0.0.1", t0);
        }
        assert!(matches!(th.gate("alice", "10.0.0.9", t0), Gate::Locked(_)));
        assert_eq!(th.gate("bob", "10.0.0.9", t0), Gate::Open);
        let later = t0 + Throttle::WINDOW + Duration::from_secs(1);
        assert_eq!(th.gate("alice", "10.0.0.1", later), Gate::Open);
        // One address spraying names.
        let mut th = Throttle::default();
        for i in 0..Throttle::MAX_PER_SOURCE {
            th.failed(&format!("user{i}"), "10.0.0.2", t0);
        }
        assert!(matches!(th.gate("zed", "10.0.0.2", t0), Gate::Locked(_)));
        assert_eq!(th.gate("zed", "10.0.0.3", t0), Gate::Open);
        // Success clears the name.
        let mut th = Throttle::default();
        for _ in 0..Throttle::MAX_PER_USER - 1 {
            th.failed("carol", "10.0.0.4", t0);
        }
        th.succeeded("carol");
        th.failed("carol", "10.0.0.4", t0);
        assert_eq!(th.gate("carol", "10.0.0.4", t0), Gate::Open);
    }
}
