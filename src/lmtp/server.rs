//! The LMTP/SMTP listener: sockets, timeouts, a connection cap and graceful shutdown around the
//! sans-IO codec and session; spooling, storing in the journal, and handing each message to the
//! next hop before any recipient hears 250. One task per connection; a connection's error
//! stays in its task.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::codec::{self, Decoder, Frame, Reply};
use super::next_hop::{self, Connection, Content};
use super::session::{self, Action, Delivery, Session};
use crate::autoreply::AutoReplier;
use crate::journal::{Body, Entry, Journal, Kind};
use crate::metrics;
use crate::policy::NextHop;
use crate::runtime::listen::{self, Accepted, Answer, AtCap, FrontEnd, Handler, Listener};
use crate::runtime::listen::{MadeRoom, ReadRoom, Slot, Socket, Spooling};
use crate::runtime::record;
use crate::runtime::store::PolicyStore;
use crate::transaction::Client;

/// Serves connections until `stop` turns true, then lets sessions in the middle of a message
/// finish (up to [`Limits::shutdown_grace`]) and returns.
pub async fn serve(
    listener: Listener,
    services: Arc<Services>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    // At the cap a new connection hears 421 at once (Postfix defers the message and retries),
    // once a silent connection still within its grace has been waited for (briefly); new
    // connections wait in the backlog meanwhile.
    let full = AtCap::Refuse(too_many_connections(&services.hostname));
    let (cap, grace) = (limits.max_connections, limits.shutdown_grace);
    let lmtp = Lmtp {
        cx: services,
        limits,
    };
    listen::serve(listener, Arc::new(lmtp), full, cap, grace, stop).await;
}

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sessions served at once. At the cap, a connection that has not said LHLO/EHLO/HELO in
    /// its first second is closed with `421 4.3.2` to make room (see
    /// [`Slots`](listen::Slots)); when every connection has, the new one gets that reply, and
    /// Postfix retries the message later. Match it to the `maxproc` of the handoff transport.
    pub max_connections: usize,
    /// How long a client may take to send the next command or content chunk inside a
    /// transaction. RFC 5321 section 4.5.3.2.7: a server should wait at least 5 minutes.
    pub command_timeout: Duration,
    /// How long a connection may stay silent between transactions. Postfix keeps a cached
    /// connection idle for smtp_connection_cache_time_limit (2 s) only.
    pub idle_timeout: Duration,
    /// On shutdown, how long sessions in the middle of a message may take to finish.
    pub shutdown_grace: Duration,
    pub codec: codec::Limits,
    pub session: session::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100,
            command_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
            codec: codec::Limits::default(),
            session: session::Limits::default(),
        }
    }
}

impl Limits {
    /// The limits an `[lmtp]` section sets.
    pub fn from_settings(o: &crate::policy::LmtpSettings) -> Limits {
        let mut l = Limits {
            max_connections: o.max_connections,
            ..Limits::default()
        };
        l.codec.message_size = o.max_message_bytes;
        l.session.message_size = o.max_message_bytes;
        l.session.max_recipients = o.max_recipients;
        l
    }
}

/// What the LMTP front end works with.
pub struct Services {
    pub store: Arc<PolicyStore>,
    pub journal: Option<Journal>,
    pub next_hop: NextHop,
    /// Names handoff in greetings and in its EHLO/LHLO to the next hop.
    pub hostname: String,
    /// Where spooled messages spill when archiving is off (with it on: the journal directory).
    pub spool_dir: PathBuf,
    /// Offered each message once a recipient of it was accepted.
    pub autoreply: AutoReplier,
}

/// RFC 5321 section 3.8: 421 and close; the client retries later.
fn too_many_connections(hostname: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Reply::new(421, format!("4.3.2 {hostname} Error: too many connections")).encode(&mut out);
    out
}

/// What the session knows of a client: its address for TCP, nothing for a unix socket.
fn client_of(peer: Option<SocketAddr>) -> Client {
    match peer {
        Some(p) => Client {
            address: p.ip().to_string(),
            port: p.port(),
            ..Client::default()
        },
        None => Client::default(),
    }
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(io::Error),
    #[error("no command for {0:?}; closed with 421")]
    Timeout(Duration),
    #[error(transparent)]
    MadeRoom(#[from] MadeRoom),
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> ConnectionError {
        ConnectionError::Io(e)
    }
}

/// The LMTP front end's side of a connection.
struct Lmtp {
    cx: Arc<Services>,
    limits: Limits,
}

impl Handler for Lmtp {
    const FRONT_END: FrontEnd = FrontEnd::Lmtp;
    type Error = ConnectionError;

    async fn connection<S: Socket>(&self, s: S, c: Accepted<'_>) -> Result<(), ConnectionError> {
        let client = client_of(c.peer);
        connection(s, client, &self.cx, &self.limits, c.stop, c.slot).await
    }
}

/// Runs one connection to its end.
async fn connection<S: Socket>(
    mut stream: S,
    client: Client,
    cx: &Services,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
    slot: &mut Slot,
) -> Result<(), ConnectionError> {
    let mut decoder = Decoder::new(limits.codec);
    let mut session = Session::new(cx.hostname.clone(), client, limits.session);
    let mut next: Option<Connection> = None;
    // The message being received: spooled for the journal and the next hop.
    let mut capture: Option<Spooling> = None;
    // Content is read in steps of up to 64 KiB once the connection is busy.
    let mut room = ReadRoom::new(64 * 1024);
    let mut buf = vec![0u8; room.get()];
    let mut out = Vec::with_capacity(1024);
    session.greeting().encode(&mut out);
    loop {
        while let Some(frame) = decoder.next_frame() {
            match frame {
                Frame::Command(line) => {
                    let action = session.handle(&line, &*cx.store);
                    if session.dialect().is_some()
                        && let Err(made_room) = slot.established()
                    {
                        let _ = stream.write_all(&too_many_connections(&cx.hostname)).await;
                        return Err(made_room.into());
                    }
                    if let Some(r) = session.take_refusal() {
                        record::refusal(r);
                    }
                    match action {
                        Action::Reply(r) => {
                            r.encode(&mut out);
                        }
                        Action::StartData(r) => {
                            r.encode(&mut out);
                            decoder.start_data();
                            let dir = cx
                                .journal
                                .as_ref()
                                .map_or(cx.spool_dir.as_path(), |j| j.dir());
                            capture = Some(Spooling::new(dir));
                        }
                        Action::Close(r) => {
                            r.encode(&mut out);
                            stream.write_all(&out).await?;
                            return Ok(());
                        }
                        // Only the end of data delivers or refuses a message.
                        Action::Refused(_) | Action::Deliver(_) => {}
                    }
                }
                Frame::CommandTooLong => {
                    Reply::new(500, "5.5.6 Error: line too long").encode(&mut out)
                }
                Frame::Data(bytes) => {
                    session.data(&bytes);
                    if let Some(c) = capture.as_mut() {
                        c.write(&bytes);
                    }
                }
                Frame::DataEnd(end) => {
                    let captured = capture.take();
                    match session.data_end(end) {
                        Action::Deliver(d) => {
                            // Answer what was pipelined before, then work on the message.
                            if !out.is_empty() {
                                stream.write_all(&out).await?;
                                out.clear();
                            }
                            let replies = deliver(&d, captured, cx, &session, &mut next).await;
                            listen::finished(
                                &d.message,
                                replies.iter().map(answer),
                                FrontEnd::Lmtp,
                            );
                            replies.iter().for_each(|r| r.encode(&mut out));
                            if replies.iter().any(Reply::is_positive) {
                                // After the replies are written: auto-replies never delay mail.
                                stream.write_all(&out).await?;
                                out.clear();
                                cx.autoreply.offer(&d.message);
                            }
                        }
                        Action::Refused(refused) => {
                            if let Some(r) = refused.replies.first() {
                                tracing::info!(reply = %r, "message refused at end of data");
                            }
                            // Counted and logged like every message at end of data.
                            let answers = refused.replies.iter().map(answer);
                            listen::finished(&refused.message, answers, FrontEnd::Lmtp);
                            refused.replies.iter().for_each(|r| r.encode(&mut out));
                        }
                        Action::Reply(r) | Action::StartData(r) | Action::Close(r) => {
                            r.encode(&mut out)
                        }
                    }
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        let busy = session.in_transaction() || decoder.in_data();
        if *stop.borrow() && !busy {
            // Between messages: closing loses nothing; Postfix reconnects for the next one.
            Reply::new(421, "4.3.2 Error: shutting down").encode(&mut out);
            let _ = stream.write_all(&out).await;
            return Ok(());
        }
        let wait = if busy {
            limits.command_timeout
        } else {
            limits.idle_timeout
        };
        let n = tokio::select! {
            r = tokio::time::timeout(wait, stream.read(&mut buf)) => match r {
                Ok(n) => n?,
                Err(_) => {
                    // RFC 5321 section 4.5.3.2: the server may close after its timeout, with 421.
                    Reply::new(421, "4.4.2 Error: timeout exceeded").encode(&mut out);
                    let _ = stream.write_all(&out).await;
                    return Err(ConnectionError::Timeout(wait));
                }
            },
            _ = stop.changed(), if !*stop.borrow() => continue,
            made_room = slot.must_make_room() => {
                let _ = stream.write_all(&too_many_connections(&cx.hostname)).await;
                return Err(made_room.into());
            }
        };
        if n == 0 {
            // EOF: an unfinished message was never acknowledged.
            return Ok(());
        }
        // While handoff stores and delivers a message nothing goes back to carry the ACK of its
        // last bytes.
        stream.quick_ack();
        decoder.feed(&buf[..n]);
        room.after_read(n);
        buf.resize(room.get(), 0);
    }
}

/// Stores the message, hands it to the next hop, and returns the replies.
async fn deliver(
    d: &Delivery,
    captured: Option<Spooling>,
    cx: &Services,
    session: &Session,
    next: &mut Option<Connection>,
) -> Vec<Reply> {
    let failed = |why: &str| {
        tracing::error!("{why}; recipients tempfailed");
        session.finish(d, false, &[])
    };
    let Some(spool) = captured else {
        return failed("no spooled message");
    };
    let (size, body) = match spool.into_body() {
        Ok(b) => b,
        Err(why) => return failed(&why),
    };
    // The journal gets the message as received; the next hop needs it too, so keep a handle.
    let (for_journal, content) = match body {
        Body::Bytes(bytes) => (Body::Bytes(bytes.clone()), Held::Bytes(bytes)),
        Body::File { file, len } => match file.try_clone() {
            Ok(copy) => (Body::File { file: copy, len }, Held::File(file)),
            Err(e) => return failed(&format!("cannot reopen the spooled message: {e}")),
        },
    };
    // The envelope first: a next hop that is down or refuses every address costs no journal
    // record; the content goes only once the journal holds the message.
    let hop_failed = |e: next_hop::HopError| {
        metrics::next_hop_error();
        tracing::warn!("next hop: {e}; recipients tempfailed");
        let reply = Reply::new(
            451,
            format!(
                "4.4.1 next hop {} unavailable",
                next_hop::describe(&cx.next_hop)
            ),
        );
        vec![reply; d.envelope.len()]
    };
    let env = match next_hop::begin(next, &cx.next_hop, &cx.hostname, d).await {
        Ok(env) => env,
        Err(e) => return session.finish(d, true, &hop_failed(e)),
    };
    if !env.is_open() {
        return session.finish(d, true, &env.into_replies());
    }
    if let Some(journal) = &cx.journal {
        let meta = d.message.archive_meta(size, FrontEnd::Lmtp.as_str());
        match listen::store(journal, Entry::new(Kind::Message, &meta, for_journal)).await {
            Ok(id) => tracing::debug!(record = %id, "journaled"),
            Err(e) => {
                next_hop::abort(next);
                return failed(&e.to_string());
            }
        }
    }
    let content = match &content {
        Held::Bytes(b) => Content::Bytes(b),
        Held::File(f) => {
            use std::io::{Seek, SeekFrom};
            let reopened = f.try_clone().and_then(|mut f| {
                f.seek(SeekFrom::Start(0))?;
                Ok(f)
            });
            match reopened {
                Ok(f) => Content::File(tokio::fs::File::from_std(f)),
                Err(e) => {
                    next_hop::abort(next);
                    return failed(&format!("cannot reopen the spooled message: {e}"));
                }
            }
        }
    };
    let results = match next_hop::send(next, &cx.next_hop, d, env, content).await {
        Ok(r) => r,
        Err(e) => hop_failed(e),
    };
    session.finish(d, true, &results)
}

enum Held {
    Bytes(Vec<u8>),
    File(std::fs::File),
}

/// What one reply (per recipient in LMTP, for the message in SMTP) tells the client.
fn answer(reply: &Reply) -> Answer {
    if reply.is_positive() {
        Answer::Positive
    } else if reply.is_transient() {
        Answer::Transient
    } else {
        Answer::Permanent
    }
}
