//! Listening sockets shared by the front ends: TCP or unix, binding, accepting, the connection
//! cap, and waiting for sessions to finish at shutdown.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;

use crate::policy::ListenAddr;

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
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Listener {
    /// The next connection, with the peer's address for TCP.
    pub async fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(l) => l
                .accept()
                .await
                .map(|(s, peer)| (Stream::Tcp(s), Some(peer))),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| (Stream::Unix(s), None)),
        }
    }
}

/// A connection's read buffer starts at this size: an idle or silent connection costs little.
const READ_BUF_START: usize = 4 * 1024;
/// ... and grows to this once a read fills it: a busy connection reads in large steps (a
/// Postfix body chunk is 65535 bytes, milter8.c MILTER_CHUNK_SIZE).
const READ_BUF_MAX: usize = 64 * 1024;

/// The buffer a connection reads into.
pub fn read_buf() -> Vec<u8> {
    vec![0u8; READ_BUF_START]
}

/// After a read of `n` bytes into `buf`: a full buffer grows, so the next read takes more.
pub fn grow_read_buf(buf: &mut Vec<u8>, n: usize) {
    if n == buf.len() && buf.len() < READ_BUF_MAX {
        buf.resize(READ_BUF_MAX, 0);
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
/// reached, the oldest opening connection is closed to make room for the newcomer: idle or
/// hostile peers (a port scanner, a client that connects and says nothing, one that writes a
/// byte now and then) can hold slots only while nobody else needs them, and never keep Postfix
/// out. A connection that has spoken is *established* and is never closed to make room: it is an
/// MTA's, and closing it could fail its message.
pub struct Slots {
    cap: usize,
    state: Mutex<SlotState>,
    /// Notified whenever a slot is given back.
    freed: Notify,
}

#[derive(Default)]
struct SlotState {
    next_id: u64,
    /// Opening connections by id (ids grow, so the first is the oldest), each with the sender
    /// that tells it to make room.
    opening: BTreeMap<u64, oneshot::Sender<()>>,
    established: usize,
}

impl SlotState {
    fn in_use(&self) -> usize {
        self.opening.len() + self.established
    }
}

impl Slots {
    pub fn new(cap: usize) -> Arc<Slots> {
        Arc::new(Slots {
            cap,
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
        self.lock().in_use()
    }

    /// Waits until a newcomer would get a slot: one is free, or an opening connection can make
    /// room.
    pub async fn room(&self) {
        loop {
            // Created before the check, so a slot given back in between is not missed.
            let freed = self.freed.notified();
            {
                let s = self.lock();
                if s.in_use() < self.cap || !s.opening.is_empty() {
                    return;
                }
            }
            freed.await;
        }
    }

    /// A slot for a new connection, closing the oldest opening connection at the cap; `None`
    /// when every slot is taken by an established connection.
    pub fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        self.admit_inner(false)
    }

    /// Like [`Slots::try_admit`], but admits over the cap when no connection can make room. For
    /// a listener that waited for [`Slots::room`] before accepting: then this happens only when
    /// the connection that was to make room spoke in between, and one connection over the cap
    /// for a while is better than closing an MTA's.
    pub fn admit(self: &Arc<Self>) -> Slot {
        self.admit_inner(true)
            .expect("admit_inner(true) always admits")
    }

    fn admit_inner(self: &Arc<Self>, over_cap: bool) -> Option<Slot> {
        let mut s = self.lock();
        if s.in_use() >= self.cap {
            match s.opening.pop_first() {
                // The evicted connection's task sees this and closes; its slot is the newcomer's.
                Some((_, make_room)) => {
                    let _ = make_room.send(());
                }
                None if over_cap => {}
                None => return None,
            }
        }
        let id = s.next_id;
        s.next_id += 1;
        let (tx, rx) = oneshot::channel();
        s.opening.insert(id, tx);
        Some(Slot {
            slots: self.clone(),
            id,
            established: false,
            make_room: Some(rx),
        })
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

    async fn told(slot: &mut Slot) -> bool {
        tokio::time::timeout(Duration::from_millis(100), slot.must_make_room())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_silent_connection_makes_room() {
        let slots = Slots::new(2);
        let mut a = slots.try_admit().unwrap();
        let mut b = slots.try_admit().unwrap();
        b.established().unwrap();
        // Full: the newcomer takes the slot of the oldest opening connection (a, not b).
        let mut c = slots.try_admit().unwrap();
        assert_eq!(slots.in_use(), 2);
        assert!(told(&mut a).await);
        assert!(a.established().is_err(), "too late to speak");
        drop(a);
        assert_eq!(slots.in_use(), 2);
        // Every slot established: nobody makes room, nobody is told to.
        c.established().unwrap();
        assert!(slots.try_admit().is_none());
        assert!(!told(&mut b).await);
        assert!(!told(&mut c).await);
        // A listener that waited for room admits over the cap rather than refuse.
        let over = slots.admit();
        assert_eq!(slots.in_use(), 3);
        drop((b, c, over));
        assert_eq!(slots.in_use(), 0);
    }

    #[tokio::test]
    async fn room_waits_for_a_slot_given_back() {
        let slots = Slots::new(1);
        let mut a = slots.try_admit().unwrap();
        // An opening connection can make room.
        tokio::time::timeout(Duration::from_millis(100), slots.room())
            .await
            .expect("room: a is opening");
        a.established().unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), slots.room())
                .await
                .is_err(),
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
}
