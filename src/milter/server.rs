//! The milter listener: sockets, timeouts, a connection cap and graceful shutdown around the
//! sans-IO [`Session`]. One task per connection; a connection's error stays in its task.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::codec::{Command, Decoded, FrameDecoder, Reply};
use super::session::{Message, MessageOutcome, Session, Step, header_line};
use crate::autoreply::AutoReplier;
use crate::journal::{Entry, Journal, Kind};
use crate::metrics;
use crate::runtime::listen::{self, Accepted, Answer, AtCap, FrontEnd, Handler, Listener};
use crate::runtime::listen::{MadeRoom, ReadRoom, Slot, Socket, Spooling};
use crate::runtime::store::PolicyStore;

/// Serves milter connections until `stop` turns true, then lets sessions in the middle of a
/// message finish (up to [`Limits::shutdown_grace`]) and returns.
pub async fn serve(
    listener: Listener,
    services: Arc<Services>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let (cap, grace) = (limits.max_connections, limits.shutdown_grace);
    let milter = Arc::new(Milter {
        cx: services,
        idle: limits.idle_timeout,
    });
    // At the cap, with every connection negotiated (or within its grace), new connections wait
    // in the backlog: Postfix waits milter_connect_timeout (30 s) for the connection and
    // milter_command_timeout (30 s) for the answer to its negotiation.
    listen::serve(listener, milter, AtCap::Backlog, cap, grace, stop).await;
}

impl Handler for Milter {
    const FRONT_END: FrontEnd = FrontEnd::Milter;
    type Error = ConnectionError;

    async fn connection<S: Socket>(&self, s: S, c: Accepted<'_>) -> Result<(), ConnectionError> {
        connection(s, &self.cx, self.idle, c.stop, c.slot).await
    }
}

/// The milter front end's side of a connection.
struct Milter {
    cx: Arc<Services>,
    idle: Duration,
}

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once. Postfix opens one milter connection per SMTP session, so this
    /// bounds handoff's share of a mail storm. At the cap, a connection that has not sent its
    /// option negotiation in its first second is closed to make room (see
    /// [`Slots`](listen::Slots)); when every connection has, new ones wait in the kernel's
    /// accept queue.
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

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(io::Error),
    #[error("malformed frame from the MTA: {0}")]
    Codec(super::codec::CodecError),
    #[error("protocol error: {0}")]
    Protocol(super::session::ProtocolError),
    #[error("frame of {0} bytes is over the {max} byte limit", max = super::codec::MAX_FRAME_LEN)]
    TooLarge(usize),
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    MadeRoom(#[from] MadeRoom),
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> ConnectionError {
        ConnectionError::Io(e)
    }
}

impl From<super::codec::CodecError> for ConnectionError {
    fn from(e: super::codec::CodecError) -> ConnectionError {
        ConnectionError::Codec(e)
    }
}

impl From<super::session::ProtocolError> for ConnectionError {
    fn from(e: super::session::ProtocolError) -> ConnectionError {
        ConnectionError::Protocol(e)
    }
}

/// Spare room for each read of a busy connection, beyond what a frame in progress needs: enough
/// for the commands of a whole small message in one read.
const READ_BUSY: usize = 16 * 1024;

/// Runs one connection to its end.
async fn connection<S: Socket>(
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
            // Headers and body chunks get no reply (Postfix asks for none: NR_HDR, NR_BODY),
            // so nothing carries the ACK of their bytes; a reply carries its own.
            stream.quick_ack();
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
    /// From MAIL on, when archiving is on.
    spool: Option<Spooling>,
    body_started: bool,
}

impl Capture {
    fn observe(&mut self, cmd: &Command, journal: Option<&Journal>, leadspc: bool) {
        match cmd {
            Command::Mail(_) => {
                *self = Capture {
                    spool: journal.map(|j| Spooling::new(j.dir())),
                    body_started: false,
                };
            }
            Command::Header { name, value } => self.write(&header_line(name, value, leadspc)),
            Command::Body(chunk) => self.body(chunk),
            Command::BodyEob => self.body(b""),
            Command::Abort | Command::QuitNc => *self = Capture::default(),
            _ => {}
        }
    }

    fn body(&mut self, chunk: &[u8]) {
        if !self.body_started {
            // The empty line between header and body, which the milter protocol leaves out.
            self.body_started = true;
            self.write(b"\r\n");
        }
        self.write(chunk)
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(spool) = &mut self.spool {
            spool.write(bytes);
        }
    }

    fn take(&mut self) -> Option<Spooling> {
        std::mem::take(self).spool
    }
}

/// Stores a finished message in the journal before it is acknowledged. Returns whether it is
/// durable; with archiving off there is nothing to store and the answer is yes.
async fn store(msg: &Message, spool: Option<Spooling>, journal: Option<&Journal>) -> bool {
    if msg.outcome != MessageOutcome::Accept {
        return false;
    }
    let Some(journal) = journal else { return true };
    let queue_id = msg.queue_id.as_deref().unwrap_or("-");
    let Some(spool) = spool else {
        tracing::error!(queue_id, "no spooled message to store; tempfailing it");
        return false;
    };
    let (size, body) = match spool.into_body() {
        Ok(b) => b,
        Err(why) => {
            tracing::error!(queue_id, "{why}; tempfailing the message");
            return false;
        }
    };
    let meta = msg.archive_meta(size, FrontEnd::Milter.as_str());
    match listen::store(journal, Entry::new(Kind::Message, &meta, body)).await {
        Ok(id) => {
            tracing::debug!(queue_id, record = %id, "journaled");
            true
        }
        Err(e) => {
            tracing::error!(queue_id, "{e}; tempfailing the message");
            false
        }
    }
}

/// Logs the decision for one message and counts it. Refused recipients and blocked senders were
/// counted when decided (see [`Session::take_refusal`]); the recipients of a message refused as a
/// whole are not counted again.
fn record(msg: &Message, replies: &[Reply]) {
    // The last reply is the message's answer; those before it are edits.
    let answer = match replies.last() {
        Some(Reply::Continue | Reply::Accept) => Answer::Positive,
        Some(Reply::Tempfail) => Answer::Transient,
        Some(Reply::ReplyCode(code)) if code.starts_with('4') => Answer::Transient,
        _ => Answer::Permanent,
    };
    listen::finished(msg, [answer], FrontEnd::Milter);
}
