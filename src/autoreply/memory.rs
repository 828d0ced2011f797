//! Who was answered: one entry per (account, sender) pair, expiring after `[autoreply] days`.
//!
//! Two stores behind one [`Memory`]:
//! - **embedded** (the default): a table of 16-byte pair hashes in memory, persisted as an
//!   append-only log under `[storage] state` (`autoreply.memory`), compacted by writing a new
//!   file, fsync, rename. A crash can tear only the last record, which the next start detects
//!   (length and CRC) and cuts off.
//! - **Redis** (`[autoreply] store = "redis://…"`), shared by several handoff instances:
//!   `SET key token NX EX ttl` is the atomic "first one to answer this sender" test.
//!
//! A pair goes through two steps. [`Memory::reserve`] claims it before anything is sent, so two
//! messages (or two instances) racing for the same sender send one reply; the claim is pending
//! and lives at most [`PENDING_SECS`]. [`Memory::confirm`] records the reply once the relay
//! accepted it, for `days`; on Redis, a confirm that fails because Redis went away meanwhile is
//! tried again in the background while the claim lives. When sending finally fails,
//! [`Memory::release`] gives the claim up (on Redis only if it is still ours), so the sender's
//! next message may try again. If handoff dies between reserving and confirming, the claim
//! simply expires: the embedded store keeps pending claims in memory only, Redis drops the key
//! after [`PENDING_SECS`].
//!
//! Redis must keep its data across restarts (`appendonly yes`): a Redis that forgets its keys
//! forgets who was answered, and they are answered again.
//!
//! Only this module does the store's I/O; it knows nothing about mail.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::address::Address;
use crate::policy::AutoreplySettings;

/// How long a claim waits for its reply to be sent: longer than the sender's whole retry
/// schedule (see `sender::RetryPolicy`), so a claim never expires while its reply is still
/// being tried.
pub const PENDING_SECS: u32 = 30 * 60;
/// The embedded store's capacity. 1,500,000 pairs fit in 2^21 hash buckets: about 44 MB. At
/// the default caps (1000 replies an hour) seven days make at most 168,000 pairs.
pub const MAX_PAIRS: usize = 1_500_000;
/// The log file under `[storage] state`.
pub const FILE_NAME: &str = "autoreply.memory";
/// The first bytes of the log file: name and format version.
const MAGIC: &[u8; 8] = b"HOARMEM1";
/// key (16) + replied-at, unix seconds (4, LE) + CRC-32 of those 20 bytes (4, LE).
const RECORD_LEN: usize = 24;
/// Compaction runs when the log holds this many more records than live pairs (and twice as
/// many): a rewrite then costs less than the dead records it removes.
const COMPACT_SLACK: u64 = 10_000;
/// Redis round trips give up after this long: the worker must not hang on a dead server.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Releases a claim only if it still holds our token (another instance may own the key now).
const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// A (account, sender) pair as 16 bytes of SHA-256: addresses are never stored, and a pair
/// costs the same whatever the address lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairKey(pub [u8; 16]);

impl PairKey {
    pub fn new(account: &Address, sender: &Address) -> PairKey {
        let mut h = Sha256::new();
        h.update(b"handoff autoreply\0");
        h.update(account.as_str().as_bytes());
        h.update(b"\0");
        h.update(sender.as_str().as_bytes());
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        PairKey(key)
    }

    /// The key for `account` answering `sender`, with the sender taken without its `+detail`
    /// (`delimiter`, `+` when the policy has none): `a+1@x`, `a+2@x` and `a@x` are one sender,
    /// or every tag would get its own reply (backscatter). Addresses are already lower case. A
    /// sender without a detail hashes as before, so the entries written by earlier versions
    /// still count; those of tagged senders no longer match and simply expire.
    pub fn for_sender(account: &Address, sender: &Address, delimiter: Option<char>) -> PairKey {
        match sender.without_detail(delimiter.unwrap_or('+')) {
            Some(base) => PairKey::new(account, &base),
            None => PairKey::new(account, sender),
        }
    }

    fn redis_key(&self) -> String {
        format!("handoff:autoreply:{}", hex::encode(self.0))
    }
}

impl Hash for PairKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a cryptographic hash: its first 8 bytes are as good as any hasher's output.
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes [`PairKey`]'s own bits through.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap<V> = HashMap<PairKey, V, BuildHasherDefault<KeyHasher>>;

/// The memory could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("auto-reply memory {}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("{} is not a handoff auto-reply memory file (bad header)", path.display())]
    NotAMemoryFile { path: PathBuf },
    #[error("redis: {0}")]
    Redis(String),
}

/// The outcome of a claim.
#[derive(Debug)]
pub enum Reserve {
    /// Ours: send, then confirm or release.
    Reserved(Reservation),
    /// Answered within `days`, or being answered right now.
    AlreadyReplied,
    /// The store did not answer (Redis down): no reply, the mail itself is unaffected.
    Unavailable(String),
    /// The embedded store is at [`MAX_PAIRS`].
    Full,
}

/// A claim on a pair, to confirm or release.
#[derive(Debug, Clone)]
pub struct Reservation {
    key: PairKey,
    /// The Redis token that proves the claim is ours.
    token: Option<String>,
}

/// The memory handoff uses: embedded or Redis.
#[derive(Clone)]
pub enum Memory {
    Local(Arc<Mutex<LocalMemory>>),
    Redis(Arc<RedisMemory>),
}

impl Memory {
    /// The embedded store in `state_dir` (created if missing), or Redis when `store` is set.
    /// Redis is not contacted here: handoff starts, and mail flows, while Redis is down.
    pub fn open(state_dir: &Path, store: Option<&str>) -> Result<Memory, MemoryError> {
        match store {
            Some(url) => Ok(Memory::Redis(Arc::new(RedisMemory::new(url)?))),
            None => {
                // Private like the journal: 0700, and refused when another user owns it (see
                // crate::fsops); a looser directory of ours is tightened, with a warning.
                let (_, was) =
                    crate::fsops::Dir::open_private(state_dir, 0o700).map_err(|cause| {
                        MemoryError::Io {
                            path: state_dir.to_path_buf(),
                            cause,
                        }
                    })?;
                if let Some(mode) = was {
                    tracing::warn!(dir = %state_dir.display(), "state directory was mode {mode:o}: now 700");
                }
                let local = LocalMemory::open(&state_dir.join(FILE_NAME), MAX_PAIRS)?;
                Ok(Memory::Local(Arc::new(Mutex::new(local))))
            }
        }
    }

    /// Claims `key` unless it was answered within `days` or is being answered now.
    pub async fn reserve(&self, key: PairKey, days: u32) -> Reserve {
        match self {
            Memory::Local(m) => lock(m).reserve(key, unix_now(), days, Instant::now()),
            Memory::Redis(r) => r.reserve(key).await,
        }
    }

    /// Records that the reply for this claim was accepted by the relay.
    pub async fn confirm(&self, r: &Reservation, days: u32) -> Result<(), MemoryError> {
        match self {
            Memory::Local(m) => {
                let m = m.clone();
                let key = r.key;
                // An fsync, and now and then a compaction: not on a runtime thread.
                tokio::task::spawn_blocking(move || lock(&m).confirm(key, unix_now(), days))
                    .await
                    .map_err(|e| MemoryError::Redis(format!("confirm task failed: {e}")))?
            }
            Memory::Redis(redis) => {
                let confirmed = redis.confirm(r, days).await;
                if confirmed.is_err() {
                    // The reply went out. Forgotten, its pair would be answered again once the
                    // claim lapses: keep trying while the claim still guards the pair.
                    tokio::spawn(redis.clone().confirm_later(r.clone(), days));
                }
                confirmed
            }
        }
    }

    /// Gives a claim up after its reply could not be sent.
    pub async fn release(&self, r: &Reservation) {
        match self {
            Memory::Local(m) => lock(m).release(r.key),
            Memory::Redis(redis) => redis.release(r).await,
        }
    }

    /// Pairs remembered by the embedded store (`None` for Redis).
    pub fn pairs(&self) -> Option<usize> {
        match self {
            Memory::Local(m) => Some(lock(m).len()),
            Memory::Redis(_) => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Memory::Local(m) => format!("file {}", lock(m).path.display()),
            Memory::Redis(r) => format!("redis {}", r.describe),
        }
    }
}

fn lock(m: &Mutex<LocalMemory>) -> std::sync::MutexGuard<'_, LocalMemory> {
    // A panic while holding the lock leaves the table consistent (every change is one insert
    // or remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u32 {
    jiff::Timestamp::now()
        .as_second()
        .clamp(0, i64::from(u32::MAX)) as u32
}

/// The embedded store: a hash table of pairs and an append-only log.
pub struct LocalMemory {
    path: PathBuf,
    file: File,
    /// Pair → when it was answered (unix seconds).
    replied: KeyMap<u32>,
    /// Pair → when its claim lapses.
    pending: KeyMap<Instant>,
    /// Records in the log file, live or not.
    records: u64,
    max_pairs: usize,
    /// When expired pairs were last swept because the table was full.
    last_sweep: Option<Instant>,
}

impl LocalMemory {
    /// Opens (or creates) the log at `path` and loads every pair answered in the last
    /// [`AutoreplySettings::MAX_DAYS`] days. A torn or corrupt tail is cut off, with a warning.
    pub fn open(path: &Path, max_pairs: usize) -> Result<LocalMemory, MemoryError> {
        let io_err = |cause| MemoryError::Io {
            path: path.to_path_buf(),
            cause,
        };
        // A compaction that did not reach its rename left this behind; the log is intact.
        let _ = fs::remove_file(tmp_path(path));
        let mut file = private_file(OpenOptions::new().read(true).append(true).create(true))
            .open(path)
            .map_err(io_err)?;
        crate::fsops::tighten(&file, 0o600).map_err(io_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err)?;
        if bytes.is_empty() {
            file.write_all(MAGIC).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            sync_dir(path).map_err(io_err)?;
            bytes.extend_from_slice(MAGIC);
        }
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(MemoryError::NotAMemoryFile {
                path: path.to_path_buf(),
            });
        }
        let now = unix_now();
        let oldest = now.saturating_sub(AutoreplySettings::MAX_DAYS * 86_400);
        let in_file = (bytes.len() - MAGIC.len()) / RECORD_LEN;
        let mut replied =
            KeyMap::with_capacity_and_hasher(in_file.min(max_pairs), Default::default());
        let mut records = 0u64;
        let mut good_end = MAGIC.len();
        for chunk in bytes[MAGIC.len()..].chunks(RECORD_LEN) {
            let Some((key, at)) = decode(chunk) else {
                break;
            };
            records += 1;
            good_end += RECORD_LEN;
            if at >= oldest {
                let e = replied.entry(key).or_insert(at);
                *e = (*e).max(at);
            }
        }
        if good_end < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                offset = good_end,
                dropped_bytes = bytes.len() - good_end,
                "auto-reply memory: torn or corrupt record at the end of the log (a crash while writing); cut off"
            );
            file.set_len(good_end as u64).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        let mut m = LocalMemory {
            path: path.to_path_buf(),
            file,
            replied,
            pending: KeyMap::default(),
            records,
            max_pairs,
            last_sweep: None,
        };
        if m.needs_compaction() {
            m.compact(now, AutoreplySettings::MAX_DAYS)?;
        }
        Ok(m)
    }

    /// Pairs remembered (answered within the last [`AutoreplySettings::MAX_DAYS`] days, at most).
    pub fn len(&self) -> usize {
        self.replied.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replied.is_empty()
    }

    /// Heap bytes the table takes: hashbrown allocates a power of two of buckets, each holding
    /// one entry and one control byte.
    pub fn heap_bytes(&self) -> usize {
        let buckets = |cap: usize| {
            if cap == 0 {
                0
            } else {
                (cap * 8 / 7).next_power_of_two()
            }
        };
        let entry = std::mem::size_of::<(PairKey, u32)>() + 1;
        let pending = std::mem::size_of::<(PairKey, Instant)>() + 1;
        buckets(self.replied.capacity()) * entry + buckets(self.pending.capacity()) * pending
    }

    pub fn reserve(&mut self, key: PairKey, now: u32, days: u32, at: Instant) -> Reserve {
        let window = days.saturating_mul(86_400);
        if let Some(&when) = self.replied.get(&key) {
            // A clock that went back makes `when` future: still a recent reply.
            if now.saturating_sub(when) < window {
                return Reserve::AlreadyReplied;
            }
        }
        if self.pending.get(&key).is_some_and(|&until| at < until) {
            return Reserve::AlreadyReplied;
        }
        if self.replied.len() + self.pending.len() >= self.max_pairs {
            self.sweep(now, days, at);
            if self.replied.len() + self.pending.len() >= self.max_pairs {
                return Reserve::Full;
            }
        }
        self.pending
            .insert(key, at + Duration::from_secs(u64::from(PENDING_SECS)));
        Reserve::Reserved(Reservation { key, token: None })
    }

    /// Records the pair as answered at `now`: appended to the log and synced before returning.
    pub fn confirm(&mut self, key: PairKey, now: u32, days: u32) -> Result<(), MemoryError> {
        self.pending.remove(&key);
        self.replied.insert(key, now);
        let record = encode(key, now);
        let io_err = |cause| MemoryError::Io {
            path: self.path.clone(),
            cause,
        };
        self.file.write_all(&record).map_err(io_err)?;
        self.file.sync_data().map_err(io_err)?;
        self.records += 1;
        if self.needs_compaction() {
            self.compact(now, days)?;
        }
        Ok(())
    }

    pub fn release(&mut self, key: PairKey) {
        self.pending.remove(&key);
    }

    fn needs_compaction(&self) -> bool {
        let live = self.replied.len() as u64;
        self.records > live.saturating_mul(2) + COMPACT_SLACK
    }

    /// Drops pairs older than `days` and rewrites the log with the live ones: a new file,
    /// fsync, rename over the old one, fsync of the directory.
    pub fn compact(&mut self, now: u32, days: u32) -> Result<(), MemoryError> {
        let window = days.saturating_mul(86_400);
        self.replied
            .retain(|_, at| now.saturating_sub(*at) < window);
        let tmp = tmp_path(&self.path);
        let io_err = |cause| MemoryError::Io {
            path: tmp.clone(),
            cause,
        };
        let _ = fs::remove_file(&tmp);
        let mut out = io::BufWriter::new(
            private_file(OpenOptions::new().write(true).create_new(true))
                .open(&tmp)
                .map_err(io_err)?,
        );
        out.write_all(MAGIC).map_err(io_err)?;
        for (key, at) in &self.replied {
            out.write_all(&encode(*key, *at)).map_err(io_err)?;
        }
        let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(io_err)?;
        sync_dir(&self.path).map_err(io_err)?;
        self.file = private_file(OpenOptions::new().append(true))
            .open(&self.path)
            .map_err(|cause| MemoryError::Io {
                path: self.path.clone(),
                cause,
            })?;
        self.records = self.replied.len() as u64;
        Ok(())
    }

    /// Frees the pairs that expired, at most once a minute (it walks the whole table).
    fn sweep(&mut self, now: u32, days: u32, at: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| at.duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        self.last_sweep = Some(at);
        let window = days.saturating_mul(86_400);
        self.replied
            .retain(|_, when| now.saturating_sub(*when) < window);
        self.pending.retain(|_, until| at < *until);
    }
}

fn encode(key: PairKey, at: u32) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[..16].copy_from_slice(&key.0);
    r[16..20].copy_from_slice(&at.to_le_bytes());
    let crc = crc32fast::hash(&r[..20]);
    r[20..].copy_from_slice(&crc.to_le_bytes());
    r
}

fn decode(chunk: &[u8]) -> Option<(PairKey, u32)> {
    if chunk.len() != RECORD_LEN {
        return None;
    }
    let crc = u32::from_le_bytes(chunk[20..24].try_into().ok()?);
    if crc32fast::hash(&chunk[..20]) != crc {
        return None;
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&chunk[..16]);
    let at = u32::from_le_bytes(chunk[16..20].try_into().ok()?);
    Some((PairKey(key), at))
}

/// Owner-only, and never through a link planted in the state directory.
fn private_file(o: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    o.mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes a create or rename durable (the entry lives in the directory).
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// A connection that no longer works (closed by the server, reset), as opposed to an error
/// answer or a timeout: worth one more try on a new connection.
fn broken(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error()
}

/// The Redis store.
pub struct RedisMemory {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// Host and port, for logs (never the password).
    describe: String,
}

impl RedisMemory {
    pub fn new(url: &str) -> Result<RedisMemory, MemoryError> {
        let client = redis::Client::open(url).map_err(|e| MemoryError::Redis(e.to_string()))?;
        let describe = format!("{}", client.get_connection_info().addr());
        Ok(RedisMemory {
            client,
            conn: tokio::sync::Mutex::new(None),
            describe,
        })
    }

    /// A connection, reusing the last one that worked; `true` when it is that cached one.
    async fn connection(&self) -> Result<(redis::aio::MultiplexedConnection, bool), String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok((c.clone(), true));
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let c = tokio::time::timeout(
            REDIS_TIMEOUT,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
        *slot = Some(c.clone());
        Ok((c, false))
    }

    /// Runs one command; on any failure the cached connection is dropped so the next call
    /// reconnects. A cached connection that is broken (Redis restarted since it was made) fails
    /// at once: the command is then tried once more on a new connection, so the first message
    /// after a restart is not left without its reply. Every command here may run twice: a second
    /// `SET NX` after a first that Redis did carry out finds the key and answers "already
    /// replied", which can lose a reply but never send two.
    async fn run<T: redis::FromRedisValue>(
        &self,
        f: impl AsyncFn(&mut redis::aio::MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let (mut c, cached) = self.connection().await?;
        let mut result = tokio::time::timeout(REDIS_TIMEOUT, f(&mut c)).await;
        if cached && matches!(&result, Ok(Err(e)) if broken(e)) {
            *self.conn.lock().await = None;
            c = self.connection().await?.0;
            result = tokio::time::timeout(REDIS_TIMEOUT, f(&mut c)).await;
        }
        let result = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        result
    }

    async fn reserve(&self, key: PairKey) -> Reserve {
        let token = super::unique_token();
        let k = key.redis_key();
        let t = token.clone();
        let set: Result<Option<String>, String> = self
            .run(async move |c| {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(&t)
                    .arg("NX")
                    .arg("EX")
                    .arg(PENDING_SECS)
                    .query_async(c)
                    .await
            })
            .await;
        match set {
            Ok(Some(_)) => Reserve::Reserved(Reservation {
                key,
                token: Some(token),
            }),
            Ok(None) => Reserve::AlreadyReplied,
            Err(e) => Reserve::Unavailable(e),
        }
    }

    async fn confirm(&self, r: &Reservation, days: u32) -> Result<(), MemoryError> {
        let k = r.key.redis_key();
        let ttl = u64::from(days) * 86_400;
        self.run(async move |c| {
            redis::cmd("SET")
                .arg(&k)
                .arg("sent")
                .arg("EX")
                .arg(ttl)
                .query_async::<()>(c)
                .await
        })
        .await
        .map_err(MemoryError::Redis)
    }

    /// Confirms after a failed attempt (Redis went away between the claim and the relay's
    /// answer): tried again with backoff, 1 s doubling to 60 s, for as long as a pending claim
    /// lives ([`PENDING_SECS`]). Until then the pending claim keeps other messages from the same
    /// sender unanswered, so the sender gets one reply whenever Redis comes back within it.
    async fn confirm_later(self: Arc<Self>, r: Reservation, days: u32) {
        let give_up = Instant::now() + Duration::from_secs(u64::from(PENDING_SECS));
        let mut wait = Duration::from_secs(1);
        while Instant::now() + wait < give_up {
            tokio::time::sleep(wait).await;
            if self.confirm(&r, days).await.is_ok() {
                tracing::info!(
                    "auto-reply memory: redis answers again; a reply sent meanwhile is remembered"
                );
                return;
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
        tracing::error!(
            "auto-reply memory: redis did not answer for {} minutes; a reply sent meanwhile is not remembered, and its sender may be answered again",
            PENDING_SECS / 60
        );
    }

    async fn release(&self, r: &Reservation) {
        let Some(token) = r.token.clone() else {
            return;
        };
        let k = r.key.redis_key();
        let released = self
            .run(async move |c| {
                redis::Script::new(RELEASE_SCRIPT)
                    .key(&k)
                    .arg(&token)
                    .invoke_async::<i64>(c)
                    .await
            })
            .await;
        if let Err(e) = released {
            // The claim lapses after PENDING_SECS anyway.
            tracing::warn!(
                "auto-reply memory: cannot release a claim in redis ({e}); it expires by itself"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> PairKey {
        let a = Address::parse_strict("gone@corp.example").unwrap();
        let s = Address::parse_strict(&format!("s{i}@partner.example")).unwrap();
        PairKey::new(&a, &s)
    }

    const DAY: u32 = 86_400;
    const T0: u32 = 1_800_000_000;

    #[test]
    fn reserve_confirm_release_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut m = LocalMemory::open(&path, 100).unwrap();
        let at = Instant::now();
        let Reserve::Reserved(_) = m.reserve(key(1), T0, 7, at) else {
            panic!("first claim")
        };
        // Claimed and not yet sent: a second message waits for nothing and sends nothing.
        assert!(matches!(
            m.reserve(key(1), T0, 7, at),
            Reserve::AlreadyReplied
        ));
        // Sending failed: the claim is released and the next message may try again.
        m.release(key(1));
        assert!(matches!(m.reserve(key(1), T0, 7, at), Reserve::Reserved(_)));
        m.confirm(key(1), T0, 7).unwrap();
        assert!(matches!(
            m.reserve(key(1), T0 + 7 * DAY - 1, 7, at),
            Reserve::AlreadyReplied
        ));
        assert!(matches!(
            m.reserve(key(1), T0 + 7 * DAY, 7, at),
            Reserve::Reserved(_)
        ));
        // A claim that was never confirmed lapses.
        let later = at + Duration::from_secs(u64::from(PENDING_SECS) + 1);
        assert!(matches!(m.reserve(key(2), T0, 7, at), Reserve::Reserved(_)));
        assert!(matches!(
            m.reserve(key(2), T0, 7, later),
            Reserve::Reserved(_)
        ));
    }

    #[test]
    fn confirmed_pairs_survive_a_restart_and_pending_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let now = unix_now();
        {
            let mut m = LocalMemory::open(&path, 100).unwrap();
            let at = Instant::now();
            assert!(matches!(
                m.reserve(key(1), now, 7, at),
                Reserve::Reserved(_)
            ));
            m.confirm(key(1), now, 7).unwrap();
            assert!(matches!(
                m.reserve(key(2), now, 7, at),
                Reserve::Reserved(_)
            ));
        }
        let mut m = LocalMemory::open(&path, 100).unwrap();
        assert_eq!(m.len(), 1);
        let at = Instant::now();
        assert!(matches!(
            m.reserve(key(1), now, 7, at),
            Reserve::AlreadyReplied
        ));
        assert!(matches!(
            m.reserve(key(2), now, 7, at),
            Reserve::Reserved(_)
        ));
    }

    /// The longest `days` a policy may set is how far back a restart remembers.
    #[test]
    fn a_restart_remembers_as_many_days_as_the_policy_may_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let days = AutoreplySettings::MAX_DAYS;
        let now = unix_now();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&encode(key(1), now - days * DAY + 3600));
        bytes.extend_from_slice(&encode(key(2), now - days * DAY - 3600));
        fs::write(&path, &bytes).unwrap();
        let mut m = LocalMemory::open(&path, 100).unwrap();
        assert_eq!(m.len(), 1);
        let at = Instant::now();
        assert!(matches!(
            m.reserve(key(1), now, days, at),
            Reserve::AlreadyReplied
        ));
        assert!(matches!(
            m.reserve(key(2), now, days, at),
            Reserve::Reserved(_)
        ));
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let now = unix_now();
        {
            let mut m = LocalMemory::open(&path, 100).unwrap();
            for i in 0..3 {
                m.confirm(key(i), now, 7).unwrap();
            }
        }
        // A crash in the middle of the fourth record, then garbage in a fifth.
        let mut bytes = fs::read(&path).unwrap();
        let full = bytes.len();
        bytes.extend_from_slice(&encode(key(3), now)[..10]);
        fs::write(&path, &bytes).unwrap();
        let m = LocalMemory::open(&path, 100).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, full);

        let mut bad = encode(key(4), now);
        bad[3] ^= 0xff;
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&bad);
        fs::write(&path, &bytes).unwrap();
        drop(m);
        let mut m = LocalMemory::open(&path, 100).unwrap();
        assert_eq!(m.len(), 3);
        // Appending after the cut works.
        m.confirm(key(5), now, 7).unwrap();
        drop(m);
        assert_eq!(LocalMemory::open(&path, 100).unwrap().len(), 4);
    }

    #[test]
    fn a_foreign_file_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, b"something else entirely").unwrap();
        assert!(matches!(
            LocalMemory::open(&path, 100),
            Err(MemoryError::NotAMemoryFile { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"something else entirely");
    }

    #[test]
    fn compaction_keeps_live_pairs_and_drops_expired_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let now = unix_now();
        let mut m = LocalMemory::open(&path, 100_000).unwrap();
        // The same pair answered again and again (after expiry) fills the log with dead records.
        for i in 0..(COMPACT_SLACK as u32 + 10) {
            m.confirm(key(0), now - 3 * DAY + i, 1).unwrap();
        }
        m.confirm(key(1), now, 7).unwrap();
        assert!(m.records <= 2 + COMPACT_SLACK, "{}", m.records);
        m.compact(now, 1).unwrap();
        assert_eq!(m.len(), 1, "only the pair answered within a day is left");
        assert_eq!(m.records, 1);
        assert!(!tmp_path(&path).exists());
        drop(m);
        let m = LocalMemory::open(&path, 100_000).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(
            fs::metadata(&path).unwrap().len() as usize,
            MAGIC.len() + RECORD_LEN
        );
    }

    #[test]
    fn a_full_table_refuses_new_pairs_until_some_expire() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = LocalMemory::open(&dir.path().join(FILE_NAME), 3).unwrap();
        let at = Instant::now();
        for i in 0..3 {
            m.confirm(key(i), T0, 1).unwrap();
        }
        assert!(matches!(m.reserve(key(9), T0, 1, at), Reserve::Full));
        assert!(matches!(
            m.reserve(key(9), T0 + DAY, 1, at + Duration::from_secs(61)),
            Reserve::Reserved(_)
        ));
    }

    /// Loads a log of 1,000,000 pairs and reports what they cost. Run with `--nocapture` to see
    /// the figures.
    #[test]
    fn one_million_pairs() {
        const N: u32 = 1_000_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let now = unix_now();
        let mut bytes = Vec::with_capacity(MAGIC.len() + N as usize * RECORD_LEN);
        bytes.extend_from_slice(MAGIC);
        for i in 0..N {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k[4..8].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
            bytes.extend_from_slice(&encode(PairKey(k), now - (i % 7) * 3600));
        }
        fs::write(&path, &bytes).unwrap();
        let file_len = bytes.len();
        drop(bytes);
        let rss_before = rss_kib();
        let started = Instant::now();
        let mut m = LocalMemory::open(&path, MAX_PAIRS).unwrap();
        let load = started.elapsed();
        let rss_after = rss_kib();
        assert_eq!(m.len(), N as usize);
        let heap = m.heap_bytes();
        eprintln!(
            "1M pairs: file {} MB, table {:.1} MB ({:.1} bytes/pair), RSS +{} MB, loaded in {:?}",
            file_len / 1_000_000,
            heap as f64 / 1e6,
            heap as f64 / f64::from(N),
            rss_after.saturating_sub(rss_before) / 1024,
            load
        );
        assert!(heap < 48_000_000, "{heap}");
        let mut probe = [0u8; 16];
        probe[..4].copy_from_slice(&777u32.to_le_bytes());
        probe[4..8].copy_from_slice(&777u32.wrapping_mul(2_654_435_761).to_le_bytes());
        assert!(matches!(
            m.reserve(PairKey(probe), now, 7, Instant::now()),
            Reserve::AlreadyReplied
        ));
        assert!(matches!(
            m.reserve(key(1), now, 7, Instant::now()),
            Reserve::Reserved(_)
        ));
    }

    fn rss_kib() -> usize {
        fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn pair_keys_depend_on_both_addresses() {
        let a = Address::parse_strict("a@corp.example").unwrap();
        let b = Address::parse_strict("b@corp.example").unwrap();
        assert_ne!(PairKey::new(&a, &b), PairKey::new(&b, &a));
        assert_eq!(PairKey::new(&a, &b), PairKey::new(&a, &b));
        assert_eq!(
            PairKey::new(&a, &b).redis_key().len(),
            "handoff:autoreply:".len() + 32
        );
    }
}
