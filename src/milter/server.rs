//! The milter listener: sockets, timeouts, a connection cap and graceful shutdown around the
//! sans-IO [`Session`]. One task per connection; a connection's error stays in its task.

use std::io;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runtime::listen::{Listener, MadeRoom, ReadRoom, Slot, Slots, Stream, drain};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::codec::{Command, Decoded, FrameDecoder, Reply};
use super::session::{Message, MessageOutcome, Session, Step, header_line};
use crate::autoreply::AutoReplier;
use crate::journal::spool::Spool;
use crate::journal::{Entry, Journal, Kind};
use crate::runtime::metrics;
use crate::runtime::store::PolicyStore;

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once. Postfix opens one milter connection per SMTP session, so this
    /// bounds handoff's share of a mail storm. At the cap, a connection that has not sent its
    /// option negotiation in its first second is closed to make room (see [`Slots`]); when every
    /// connection has, new ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a connection may stay silent. Postfix's own milter timeouts are 30 s per command
    /// and 300 s per content step (milter_command_timeout, milter_content_timeout); an SMTP
    /// client may idle up to smtpd_timeout (300 s) between messages, so 600 s is never too short
    /// for a live MTA and still frees sockets of dead ones.
    pub idle_timeout: Duration,
    /// On shutdown, how long sessions in the middle of a message may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1000,
            idle_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What the milter front end works with: the live policy and, when archiving is on, the
/// journal every accepted message goes into before it is acknowledged.
pub struct Services {
    pub store: Arc<PolicyStore>,
    pub journal: Option<Journal>,
    /// Accepted messages are offered to it once answered.
    pub autoreply: AutoReplier,
}

/// Serves milter connections until `stop` turns true, then lets sessions in the middle of a
/// message finish (up to [`Limits::shutdown_grace`]) and returns.
pub async fn serve(
    listener: Listener,
    services: Arc<Services>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Slots::new(limits.max_connections);
    let cx = services;
    let mut tasks = JoinSet::new();
    loop {
        // Wait for room before accepting: at the cap, with every connection negotiated (or
        // within its grace), new connections wait in the backlog (Postfix waits
        // milter_connect_timeout, 30 s, for the connection and milter_command_timeout, 30 s, for
        // the answer to its negotiation).
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = slots.room() => {}
        }
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!("milter listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut slot = slots.admit_now();
        let (cx, stop, idle) = (cx.clone(), stop.clone(), limits.idle_timeout);
        tasks.spawn(async move {
            metrics::milter_session_started();
            let result = match stream {
                Stream::Tcp(s) => {
                    let _ = s.set_nodelay(true);
                    connection(s, &cx, idle, stop, &mut slot).await
                }
                Stream::Unix(s) => connection(s, &cx, idle, stop, &mut slot).await,
            };
            metrics::milter_session_ended();
            if let Err(e) = result {
                tracing::warn!("milter connection closed: {e}");
            }
            drop(slot);
        });
        // Reap finished tasks so the set does not grow with the connection count.
        while tasks.try_join_next().is_some() {}
    }
    drain(&mut tasks, limits.shutdown_grace, "milter").await;
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("malformed frame from the MTA: {0}")]
    Codec(#[from] super::codec::CodecError),
    #[error("protocol error: {0}")]
    Protocol(#[from] super::session::ProtocolError),
    #[error("frame of {0} bytes is over the {max} byte limit", max = super::codec::MAX_FRAME_LEN)]
    TooLarge(usize),
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    MadeRoom(#[from] MadeRoom),
}

/// Spare room for each read of a busy connection, beyond what a frame in progress needs: enough
/// for the commands of a whole small message in one read.
const READ_BUSY: usize = 16 * 1024;

/// A milter socket. Reads and writes take turns (the protocol is request/response), so the
/// stream is not split.
trait MilterStream: AsyncRead + AsyncWrite + Unpin {
    /// Called after a read that returned data and got no reply: its ACK must not wait.
    fn ack_now(&self) {}
}

impl MilterStream for tokio::net::UnixStream {}

impl MilterStream for tokio::net::TcpStream {
    fn ack_now(&self) {
        // Postfix asks for no reply to headers and body chunks (NR_HDR, NR_BODY), so after the
        // DATA-stage macros nothing goes back to carry an ACK; the kernel delays it 40 ms, and
        // Postfix's socket (Nagle on) holds its next writes until then: 40 ms per message.
        // Quick ACKs fix that; Linux turns them off again on its own, so set them after every
        // read that gets no reply (a reply carries the ACK). Measured: 19 → 340 msg/s for one
        // SMTP session.
        let _ = socket2::SockRef::from(self).set_tcp_quickack(true);
    }
}

/// Runs one connection to its end.
async fn connection<S: MilterStream>(
    mut stream: S,
    cx: &Services,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
    slot: &mut Slot,
) -> Result<(), ConnectionError> {
    let mut decoder = FrameDecoder::new();
    let mut session = Session::new();
    let mut room = ReadRoom::new(READ_BUSY);
    let mut out = Vec::with_capacity(256);
    let mut capture = Capture::default();
    // Messages answered with CONTINUE, handed to the auto-replier once the answer is written.
    let mut accepted: Vec<Box<Message>> = Vec::new();
    // Commands waiting for their reply to be written, for the stage latency histograms.
    let mut waiting: Vec<(&'static str, Instant)> = Vec::new();
    // The last read brought data that no reply has acknowledged yet.
    let mut unanswered = false;
    loop {
        loop {
            let cmd = match decoder.decode_command()? {
                Decoded::Frame(cmd) => cmd,
                Decoded::Incomplete => break,
                Decoded::TooLarge { declared } => return Err(ConnectionError::TooLarge(declared)),
            };
            // The message goes to the spool as it streams in. A command the session then refuses
            // closes the connection, and the spool with it.
            capture.observe(&cmd, cx.journal.as_ref(), session.header_leadspc());
            let stage = match &cmd {
                Command::Mail(_) => Some("mail"),
                Command::Rcpt(_) => Some("rcpt"),
                Command::BodyEob => Some("eom"),
                _ => None,
            };
            if let Some(stage) = stage {
                waiting.push((stage, Instant::now()));
            }
            let step = session.handle(cmd, &*cx.store)?;
            if session.negotiated() {
                slot.established()?;
            }
            if let Some(r) = session.take_refusal() {
                crate::runtime::record::refusal(r);
            }
            match step {
                Step::Reply(replies) => {
                    replies.iter().for_each(|r| r.encode(&mut out));
                }
                Step::EndOfMessage(msg) => {
                    let stored = store(&msg, capture.take(), cx.journal.as_ref()).await;
                    let replies = session.finish(&msg, stored);
                    record(&msg, &replies);
                    replies.iter().for_each(|r| r.encode(&mut out));
                    if replies.last() == Some(&Reply::Continue) {
                        accepted.push(msg);
                    }
                }
                Step::Close => {
                    if !out.is_empty() {
                        stream.write_all(&out).await?;
                    }
                    for m in &accepted {
                        cx.autoreply.offer(m);
                    }
                    return Ok(());
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        } else if unanswered {
            stream.ack_now();
        }
        unanswered = false;
        for m in accepted.drain(..) {
            cx.autoreply.offer(&m);
        }
        for (stage, since) in waiting.drain(..) {
            metrics::milter_stage(stage, since.elapsed());
        }
        if *stop.borrow() && !session.in_transaction() {
            // Between messages: closing now loses nothing; Postfix reconnects for the next one.
            return Ok(());
        }
        let n = tokio::select! {
            r = tokio::time::timeout(idle, stream.read_buf(decoder.read_buffer(room.get()))) => match r {
                Ok(n) => n?,
                Err(_) => return Err(ConnectionError::Idle(idle)),
            },
            _ = stop.changed(), if !*stop.borrow() => continue,
            made_room = slot.must_make_room() => return Err(made_room.into()),
        };
        if n == 0 {
            // EOF anywhere ends the session; an unfinished message was never acknowledged.
            return Ok(());
        }
        room.after_read(n);
        unanswered = true;
    }
}

/// The message being received, spooled for the journal.
#[derive(Default)]
struct Capture {
    spool: Option<Spool>,
    body_started: bool,
    /// A spool write failed: the message cannot be stored, so it will not be acknowledged.
    failed: Option<std::io::Error>,
}

impl Capture {
    fn observe(&mut self, cmd: &Command, journal: Option<&Journal>, leadspc: bool) {
        let result = match cmd {
            Command::Mail(_) => {
                *self = Capture {
                    spool: journal.map(|j| Spool::new(j.dir())),
                    ..Capture::default()
                };
                Ok(())
            }
            Command::Header { name, value } => self.write(&header_line(name, value, leadspc)),
            Command::Body(chunk) => self.body(chunk),
            Command::BodyEob => self.body(b""),
            Command::Abort | Command::QuitNc => {
                *self = Capture::default();
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.failed.get_or_insert(e);
        }
    }

    fn body(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if !self.body_started {
            // The empty line between header and body, which the milter protocol leaves out.
            self.body_started = true;
            self.write(b"\r\n")?;
        }
        self.write(chunk)
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match (&mut self.spool, &self.failed) {
            (Some(spool), None) => spool.write(bytes),
            _ => Ok(()),
        }
    }

    fn take(&mut self) -> Result<Option<Spool>, String> {
        let taken = std::mem::take(self);
        match taken.failed {
            Some(e) => Err(format!("spooling the message failed: {e}")),
            None => Ok(taken.spool),
        }
    }
}

/// How long a message may wait for the journal before the MTA is told to retry. Well inside
/// Postfix's milter_content_timeout (300 s).
const STORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Stores a finished message in the journal before it is acknowledged. Returns whether it is
/// durable; with archiving off there is nothing to store and the answer is yes.
async fn store(
    msg: &Message,
    spool: Result<Option<Spool>, String>,
    journal: Option<&Journal>,
) -> bool {
    if msg.outcome != MessageOutcome::Accept {
        return false;
    }
    let Some(journal) = journal else { return true };
    let queue_id = msg.queue_id.as_deref().unwrap_or("-");
    let spool = match spool {
        Ok(Some(spool)) => spool,
        Ok(None) => {
            tracing::error!(queue_id, "no spooled message to store; tempfailing it");
            return false;
        }
        Err(e) => {
            tracing::error!(queue_id, "{e}; tempfailing the message");
            return false;
        }
    };
    let size = spool.len();
    let body = match spool.into_body() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(
                queue_id,
                "reading the spooled message failed: {e}; tempfailing it"
            );
            return false;
        }
    };
    let entry = Entry::new(Kind::Message, &msg.archive_meta(size, "milter"), body);
    match tokio::time::timeout(STORE_TIMEOUT, journal.append(entry)).await {
        Ok(Ok(id)) => {
            tracing::debug!(queue_id, record = %id, "journaled");
            true
        }
        Ok(Err(e)) => {
            tracing::error!(queue_id, "journal: {e}; tempfailing the message");
            false
        }
        Err(_) => {
            tracing::error!(
                queue_id,
                "journal did not answer within {STORE_TIMEOUT:?}; tempfailing the message"
            );
            false
        }
    }
}

/// Logs the decision for one message and counts it. Refused recipients and blocked senders were
/// counted when decided (see [`Session::take_refusal`]); the recipients of a message refused as a
/// whole are not counted again.
fn record(msg: &Message, replies: &[Reply]) {
    let outcome = match replies.last() {
        Some(Reply::Continue | Reply::Accept) => "accepted",
        Some(Reply::Tempfail) => "tempfailed",
        Some(Reply::ReplyCode(code)) if code.starts_with('4') => "tempfailed",
        _ => "rejected",
    };
    crate::runtime::record::message(msg, outcome, "milter");
}
