//! Listening sockets shared by the front ends: TCP or unix, binding, accepting, the connection
//! cap, the accept loop that hands each connection to its front end, and waiting for sessions
//! to finish at shutdown; with what both front ends do alike around a message (spooling it,
//! storing it in the journal in time, the outcome it is logged and counted with) and the name
//! this host gives itself.
//!
//! The protocols themselves are not here: `milter::server` and `lmtp::server` say what a
//! connection does, this module how connections come and go.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinSet;

use crate::journal::spool::Spool;
use crate::journal::{Body, Entry, Journal, JournalError, RecordId};
use crate::metrics;
use crate::policy::ListenAddr;
use crate::runtime::record;
use crate::transaction::Message;

/// A bound listening socket (milter or LMTP).
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds `addr`. A unix socket replaces a stale socket file and gets mode 0660, so the
    /// `postfix` group can connect when the socket's directory gives it access.
    pub async fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).await?)),
            ListenAddr::Unix(path) => {
                remove_stale_socket(path)?;
                let l = UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Ok(Listener::Unix(l))
            }
        }
    }

    /// Where it listens, for the log.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("tcp (unknown: {e})"), |a| a.to_string()),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix socket".into()),
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// An accepted connection.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    /// The next connection, with the peer's address for TCP.
    pub async fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                // Replies are written whole, each when it is due: Nagle would only delay them.
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Some(peer)))
            }
            Listener::Unix(l) => l.accept().await.map(|(s, _)| (Stream::Unix(s), None)),
        }
    }
}

/// Which front end a listener serves: the name its logs, metrics and journal records use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    Milter,
    Lmtp,
}

impl FrontEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            FrontEnd::Milter => "milter",
            FrontEnd::Lmtp => "lmtp",
        }
    }

    fn session_started(self) {
        match self {
            FrontEnd::Milter => metrics::milter_session_started(),
            FrontEnd::Lmtp => metrics::lmtp_session_started(),
        }
    }

    fn session_ended(self) {
        match self {
            FrontEnd::Milter => metrics::milter_session_ended(),
            FrontEnd::Lmtp => metrics::lmtp_session_ended(),
        }
    }
}

/// An accepted socket, TCP or unix. Both protocols are request/response (reads and writes take
/// turns), so a connection does not split its socket.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send {
    /// Acknowledges what was read at once instead of delaying the ACK. After a read that no
    /// reply answers (milter headers and body chunks, which Postfix asks no reply to; LMTP
    /// content while handoff stores and delivers it) nothing goes back to carry the ACK; the
    /// kernel delays it 40 ms, and the peer's socket (Nagle on) holds its next small write
    /// until then: 40 ms per message. Linux turns quick ACKs off again on its own, so the front
    /// ends call this after each such read. Measured: 19 → 340 msg/s for one milter session.
    fn quick_ack(&self) {}
}

impl Socket for UnixStream {}

impl Socket for TcpStream {
    fn quick_ack(&self) {
        let _ = socket2::SockRef::from(self).set_tcp_quickack(true);
    }
}

/// What a listener does with a new connection when every slot is taken.
pub enum AtCap {
    /// Leaves it in the kernel's accept queue until there is room: the listener waits for room
    /// before it accepts.
    Backlog,
    /// Accepts it, writes these bytes (the protocol's "too busy, retry later") and closes it;
    /// a silent connection still within its grace is waited for first.
    Refuse(Vec<u8>),
}

/// What a front end does with one connection.
pub trait Handler: Send + Sync + 'static {
    /// Names the connections in logs and metrics.
    const FRONT_END: FrontEnd;

    /// Why a connection ended abnormally (logged, and the connection closed).
    type Error: Display + Send;

    /// Runs one connection to its end.
    fn connection<S: Socket>(
        &self,
        stream: S,
        c: Accepted<'_>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What the listener knows of a connection it accepted and gave a slot.
pub struct Accepted<'a> {
    /// The client's address for TCP.
    pub peer: Option<SocketAddr>,
    /// Its place under the cap: see [`Slot::established`] and [`Slot::must_make_room`].
    pub slot: &'a mut Slot,
    /// Turns true at shutdown.
    pub stop: watch::Receiver<bool>,
}

/// Serves connections with `handler` until `stop` turns true, then lets sessions in the middle
/// of a message finish (up to `grace`) and returns. At most `cap` connections are served at
/// once (see [`Slots`]). One task per connection; a connection's error stays in its task.
pub async fn serve<H: Handler>(
    listener: Listener,
    handler: Arc<H>,
    at_cap: AtCap,
    cap: usize,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let front_end = H::FRONT_END.as_str();
    let slots = Slots::new(cap);
    let mut tasks = JoinSet::new();
    loop {
        if let AtCap::Backlog = at_cap {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                () = slots.room() => {}
            }
        }
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!("{front_end} listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (slot, refusal) = match &at_cap {
            AtCap::Backlog => (Some(slots.admit_now()), None),
            AtCap::Refuse(bytes) => {
                let slot = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    s = slots.admit() => s,
                };
                let refusal = slot.is_none().then(|| bytes.clone());
                (slot, refusal)
            }
        };
        let (handler, stop) = (handler.clone(), stop.clone());
        tasks.spawn(async move {
            let Some(mut slot) = slot else {
                let out = refusal.unwrap_or_default();
                let _ = match stream {
                    Stream::Tcp(mut s) => s.write_all(&out).await,
                    Stream::Unix(mut s) => s.write_all(&out).await,
                };
                tracing::warn!("{front_end} connection refused: {cap} sessions already");
                return;
            };
            H::FRONT_END.session_started();
            let c = Accepted {
                peer,
                slot: &mut slot,
                stop,
            };
            let result = match stream {
                Stream::Tcp(s) => handler.connection(s, c).await,
                Stream::Unix(s) => handler.connection(s, c).await,
            };
            H::FRONT_END.session_ended();
            if let Err(e) = result {
                tracing::warn!("{front_end} connection closed: {e}");
            }
        });
        // Reap finished tasks so the set does not grow with the connection count.
        while tasks.try_join_next().is_some() {}
    }
    drain(&mut tasks, grace, front_end).await;
}

/// The name this host gives itself (in the LMTP greeting, and in EHLO to the next hop and to
/// the auto-reply relay): the kernel's host name, or `handoff` when that is unreadable or not a
/// plain host name (RFC 1123 letters, digits, dots and hyphens: it goes into replies and
/// commands as it is).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| is_host_name(h))
        .unwrap_or_else(|| "handoff".into())
}

fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// A message being received, spooled for the journal (and the LMTP next hop). The first failed
/// write is kept and later ones are skipped: the message cannot be stored, so it will not be
/// acknowledged.
pub struct Spooling {
    spool: Spool,
    failed: Option<io::Error>,
}

impl Spooling {
    /// Spills to `dir` once the message outgrows memory.
    pub fn new(dir: &Path) -> Spooling {
        Spooling {
            spool: Spool::new(dir),
            failed: None,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        if self.failed.is_none()
            && let Err(e) = self.spool.write(bytes)
        {
            self.failed = Some(e);
        }
    }

    /// The message as received and its size in bytes, or why it cannot be had (for the log).
    pub fn into_body(self) -> Result<(u64, Body), String> {
        if let Some(e) = self.failed {
            return Err(format!("spooling the message failed: {e}"));
        }
        let size = self.spool.len();
        match self.spool.into_body() {
            Ok(body) => Ok((size, body)),
            Err(e) => Err(format!("reading the spooled message failed: {e}")),
        }
    }
}

/// How long a message may wait for the journal before the MTA is told to retry: well inside
/// Postfix's milter_content_timeout (300 s) and lmtp_data_done_timeout (600 s).
pub const STORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a message did not get into the journal. The cause is printed in the message and is not
/// a `source`, so a printed chain names it once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("journal: {0}")]
    Journal(JournalError),
    #[error("journal did not answer within {0:?}")]
    Timeout(Duration),
}

/// Appends a message's record to the journal, waiting at most [`STORE_TIMEOUT`]. The message
/// may be acknowledged only once this returns `Ok`.
pub async fn store(journal: &Journal, entry: Entry) -> Result<RecordId, StoreError> {
    match tokio::time::timeout(STORE_TIMEOUT, journal.append(entry)).await {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(e)) => Err(StoreError::Journal(e)),
        Err(_) => Err(StoreError::Timeout(STORE_TIMEOUT)),
    }
}

/// How the MTA is answered for a message, reply by reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Accepted (milter CONTINUE or ACCEPT, 2xx).
    Positive,
    /// To be retried (milter TEMPFAIL, 4xx).
    Transient,
    /// Refused (5xx, milter REJECT or DISCARD).
    Permanent,
}

/// The outcome label of a message (the label set of [`metrics::MESSAGES`]): `accepted` when
/// every answer is positive, `tempfailed` when one is transient, else `rejected`.
pub fn outcome(answers: impl IntoIterator<Item = Answer>) -> &'static str {
    let (mut all_positive, mut transient) = (true, false);
    for a in answers {
        all_positive &= a == Answer::Positive;
        transient |= a == Answer::Transient;
    }
    if all_positive {
        "accepted"
    } else if transient {
        "tempfailed"
    } else {
        "rejected"
    }
}

/// Logs and counts a message at its end (see [`record::message`]), with the outcome its
/// `answers` make.
pub fn finished(msg: &Message, answers: impl IntoIterator<Item = Answer>, front_end: FrontEnd) {
    record::message(msg, outcome(answers), front_end.as_str());
}

/// How much a connection asks of each read: little until a read fills that (an idle or silent
/// connection costs little: a thousand of them 4 MiB), then `busy` (a busy one reads in large
/// steps).
#[derive(Debug, Clone, Copy)]
pub struct ReadRoom {
    now: usize,
    busy: usize,
}

impl ReadRoom {
    const START: usize = 4 * 1024;

    pub fn new(busy: usize) -> ReadRoom {
        ReadRoom {
            now: Self::START.min(busy),
            busy,
        }
    }

    pub fn get(self) -> usize {
        self.now
    }

    /// After a read of `n` bytes: a full read means there is more to come.
    pub fn after_read(&mut self, n: usize) {
        if n >= self.now {
            self.now = self.busy;
        }
    }
}

/// After the listener stopped accepting: waits for the sessions in `tasks` to end, up to
/// `grace`, then closes the rest (their MTA retries what they had not finished).
pub async fn drain(tasks: &mut JoinSet<()>, grace: Duration, front_end: &str) {
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                tracing::warn!(remaining = tasks.len(), "{front_end} sessions still busy at shutdown; closing them (the MTA retries)");
                tasks.abort_all();
                break;
            }
        }
    }
}

/// The connection cap of one listener: at most `cap` connections at once.
///
/// A connection starts out *opening*: it has not spoken the protocol yet (no milter option
/// negotiation, no LHLO/EHLO/HELO). An MTA speaks at once: Postfix sends OPTNEG as soon as its
/// milter connection is up, and LHLO as soon as it has read the greeting. So when the cap is
/// reached, the oldest opening connection that has been silent for [`SILENT_GRACE`] is closed to
/// make room for the newcomer: idle or hostile peers (a port scanner, a client that connects and
/// says nothing, one that writes a byte now and then) can hold slots only while nobody else
/// needs them, and never keep Postfix out. A younger one is waited for (it may be an MTA whose
/// first words are still unread); one that has spoken is *established* and never closed to make
/// room: it is an MTA's, and closing it could fail its message.
pub struct Slots {
    cap: usize,
    grace: Duration,
    state: Mutex<SlotState>,
    /// Notified whenever a slot is given back.
    freed: Notify,
}

/// How long a new connection may stay silent before it can be made to give its slot away. An MTA
/// speaks within milliseconds; the grace keeps a burst of connections at the cap from pushing out
/// an MTA's connection that handoff has not read yet. Each wave of silent connections then delays
/// the next MTA connection by at most this, far inside Postfix's timeouts (milter_command_timeout
/// 30 s for the answer to its negotiation, lmtp_lhlo_timeout 300 s for the greeting).
pub const SILENT_GRACE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct SlotState {
    next_id: u64,
    /// Opening connections by id (ids grow, so the first is the oldest).
    opening: BTreeMap<u64, Opening>,
    established: usize,
}

struct Opening {
    since: Instant,
    /// Tells the connection to make room.
    make_room: oneshot::Sender<()>,
}

/// What a newcomer would get now.
enum Verdict {
    /// A free slot.
    Free,
    /// The slot of the oldest opening connection, silent for the grace.
    MakeRoom,
    /// Nothing until the oldest opening connection has been silent for the grace.
    WaitUntil(Instant),
    /// Nothing: every connection is established.
    Full,
}

impl Slots {
    pub fn new(cap: usize) -> Arc<Slots> {
        Slots::with_grace(cap, SILENT_GRACE)
    }

    pub fn with_grace(cap: usize, grace: Duration) -> Arc<Slots> {
        Arc::new(Slots {
            cap,
            grace,
            state: Mutex::new(SlotState::default()),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // Every change under the lock is a single insert, remove or count: a panic cannot leave
        // it half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections holding a slot (opening and established).
    pub fn in_use(&self) -> usize {
        let s = self.lock();
        s.opening.len() + s.established
    }

    fn verdict(&self, s: &SlotState) -> Verdict {
        if s.opening.len() + s.established < self.cap {
            return Verdict::Free;
        }
        match s.opening.first_key_value() {
            None => Verdict::Full,
            Some((_, o)) if o.since.elapsed() >= self.grace => Verdict::MakeRoom,
            Some((_, o)) => Verdict::WaitUntil(o.since + self.grace),
        }
    }

    /// Waits until a newcomer would get a slot at once: one is free, or an opening connection
    /// has been silent for the grace. For a listener that leaves connections in the kernel's
    /// accept queue when every slot is established.
    pub async fn room(&self) {
        loop {
            // Created before the check, so a slot given back in between is not missed.
            let freed = self.freed.notified();
            let verdict = self.verdict(&self.lock());
            match verdict {
                Verdict::Free | Verdict::MakeRoom => return,
                Verdict::WaitUntil(t) => {
                    tokio::select! {
                        () = freed => {}
                        () = tokio::time::sleep_until(t.into()) => {}
                    }
                }
                Verdict::Full => freed.await,
            }
        }
    }

    /// A slot for a connection just accepted: a free one, or that of the oldest opening
    /// connection once it has been silent for the grace (waiting for that); `None` when every
    /// slot is taken by an established connection.
    pub async fn admit(self: &Arc<Self>) -> Option<Slot> {
        loop {
            let freed = self.freed.notified();
            let until = {
                let mut s = self.lock();
                match self.verdict(&s) {
                    Verdict::Free => return Some(self.insert(&mut s)),
                    Verdict::MakeRoom => {
                        self.make_room(&mut s);
                        return Some(self.insert(&mut s));
                    }
                    Verdict::Full => return None,
                    Verdict::WaitUntil(t) => t,
                }
            };
            tokio::select! {
                () = freed => {}
                () = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    /// A slot for a connection accepted after [`Slots::room`]: admitted at once, over the cap if
    /// the room vanished in between (the connection that was to make room spoke). One connection
    /// over the cap for a while is better than closing an MTA's.
    pub fn admit_now(self: &Arc<Self>) -> Slot {
        let mut s = self.lock();
        if let Verdict::MakeRoom = self.verdict(&s) {
            self.make_room(&mut s);
        }
        self.insert(&mut s)
    }

    /// Closes the oldest opening connection; its slot is the newcomer's.
    fn make_room(&self, s: &mut SlotState) {
        if let Some((_, o)) = s.opening.pop_first() {
            // Its task sees this and closes the connection.
            let _ = o.make_room.send(());
        }
    }

    fn insert(self: &Arc<Self>, s: &mut SlotState) -> Slot {
        let id = s.next_id;
        s.next_id += 1;
        let (tx, rx) = oneshot::channel();
        s.opening.insert(
            id,
            Opening {
                since: Instant::now(),
                make_room: tx,
            },
        );
        Slot {
            slots: self.clone(),
            id,
            established: false,
            make_room: Some(rx),
        }
    }
}

/// One connection's place under the cap; given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    established: bool,
    /// Resolves when the connection must close to make room (while it is opening).
    make_room: Option<oneshot::Receiver<()>>,
}

/// The connection was closed to make room for a new one before it spoke the protocol.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("closed to make room for a new connection: silent since it connected")]
pub struct MadeRoom;

impl Slot {
    /// The connection has spoken the protocol: it keeps its slot from now on. Fails if it was
    /// already told to make room (the caller then closes it).
    pub fn established(&mut self) -> Result<(), MadeRoom> {
        if self.established {
            return Ok(());
        }
        let mut s = self.slots.lock();
        if s.opening.remove(&self.id).is_none() {
            return Err(MadeRoom);
        }
        s.established += 1;
        self.established = true;
        self.make_room = None;
        Ok(())
    }

    /// Resolves when the connection must close to make room; never once it is established.
    pub async fn must_make_room(&mut self) -> MadeRoom {
        if let Some(rx) = self.make_room.as_mut()
            && rx.await.is_ok()
        {
            return MadeRoom;
        }
        // Established (the sender was dropped with its entry): nothing will ask any more.
        self.make_room = None;
        std::future::pending().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock();
        if self.established {
            s.established -= 1;
        } else {
            // Absent when it was made to give its slot away.
            s.opening.remove(&self.id);
        }
        drop(s);
        self.slots.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(200);

    async fn told(slot: &mut Slot) -> bool {
        tokio::time::timeout(Duration::from_millis(100), slot.must_make_room())
            .await
            .is_ok()
    }

    async fn admit_within(slots: &Arc<Slots>, within: Duration) -> Option<Option<Slot>> {
        tokio::time::timeout(within, slots.admit()).await.ok()
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_silent_connection_makes_room_after_the_grace() {
        let slots = Slots::with_grace(2, GRACE);
        let mut a = slots.admit().await.unwrap();
        let mut b = slots.admit().await.unwrap();
        b.established().unwrap();
        // Full, and a has been silent for less than the grace: the newcomer waits for it.
        let started = Instant::now();
        let mut c = slots.admit().await.unwrap();
        assert!(started.elapsed() >= GRACE / 2, "{:?}", started.elapsed());
        // The slot was a's (the oldest opening one), not b's.
        assert_eq!(slots.in_use(), 2);
        assert!(told(&mut a).await);
        assert!(a.established().is_err(), "too late to speak");
        drop(a);
        assert_eq!(slots.in_use(), 2);
        // A newcomer waits while c is young; c speaks in time and keeps its slot; then every
        // slot is established and the newcomer gets nothing.
        assert!(
            admit_within(&slots, GRACE / 4).await.is_none(),
            "still waiting"
        );
        c.established().unwrap();
        assert!(matches!(admit_within(&slots, GRACE).await, Some(None)));
        assert!(!told(&mut b).await);
        assert!(!told(&mut c).await);
        // After room(), a listener admits over the cap rather than close an MTA's connection.
        let over = slots.admit_now();
        assert_eq!(slots.in_use(), 3);
        drop((b, c, over));
        assert_eq!(slots.in_use(), 0);
    }

    #[tokio::test]
    async fn room_waits_for_a_slot_given_back_or_a_silent_connection() {
        let slots = Slots::with_grace(1, GRACE);
        let mut a = slots.admit().await.unwrap();
        // a is opening: room once it has been silent for the grace.
        let started = Instant::now();
        tokio::time::timeout(GRACE * 3, slots.room())
            .await
            .expect("room: a has been silent");
        assert!(started.elapsed() >= GRACE / 2);
        a.established().unwrap();
        assert!(
            tokio::time::timeout(GRACE, slots.room()).await.is_err(),
            "no room while a holds the only slot"
        );
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("room once the slot is given back")
            .unwrap();
    }

    #[test]
    fn the_outcome_label_is_accepted_only_when_every_answer_is_positive() {
        use Answer::*;
        let cases: &[(&[Answer], &str)] = &[
            (&[Positive], "accepted"),
            (&[Positive, Positive], "accepted"),
            (&[Transient], "tempfailed"),
            (&[Positive, Transient, Permanent], "tempfailed"),
            (&[Permanent], "rejected"),
            (&[Positive, Permanent], "rejected"),
        ];
        for (answers, label) in cases {
            assert_eq!(outcome(answers.iter().copied()), *label, "{answers:?}");
        }
    }

    #[test]
    fn a_host_name_is_plain_letters_digits_dots_and_hyphens() {
        for ok in ["mx1.example.net", "localhost", "host-2"] {
            assert!(is_host_name(ok), "{ok}");
        }
        // Each would break the greeting or EHLO it goes into.
        for bad in ["", "two words", "a_b.example", "[192.0.2.1]", "h\r\n250 x"] {
            assert!(!is_host_name(bad), "{bad:?}");
        }
    }
}
