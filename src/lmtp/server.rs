//! The LMTP/SMTP listener: sockets, timeouts, a connection cap and graceful shutdown around the
//! sans-IO codec and session; spooling, storing in the journal, and handing each message to the
//! next hop before any recipient hears 250. One task per connection; a connection's error
//! stays in its task.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::codec::{self, Decoder, Frame, Reply};
use super::next_hop::{self, Connection, Content};
use super::session::{self, Action, Delivery, Session};
use crate::autoreply::AutoReplier;
use crate::journal::spool::Spool;
use crate::journal::{Body, Entry, Journal, Kind};
use crate::policy::NextHop;
use crate::runtime::listen::{Listener, MadeRoom, ReadRoom, Slot, Slots, Stream, drain};
use crate::runtime::metrics;
use crate::runtime::record;
use crate::runtime::store::PolicyStore;
use crate::transaction::Client;

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sessions served at once. At the cap, a connection that has not said LHLO/EHLO/HELO in
    /// its first second is closed with `421 4.3.2` to make room (see [`Slots`]); when every
    /// connection has, the new one gets that reply, and Postfix retries the message later. Match
    /// it to the `maxproc` of the handoff transport.
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

/// Serves connections until `stop` turns true, then lets sessions in the middle of a message
/// finish (up to [`Limits::shutdown_grace`]) and returns.
pub async fn serve(
    listener: Listener,
    services: Arc<Services>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Slots::new(limits.max_connections);
    let limits = Arc::new(limits);
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (stream, client) = match accepted {
            Ok((s, peer)) => (s, client_of(peer)),
            Err(e) => {
                tracing::error!("lmtp listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // At the cap, a silent connection still within its grace is waited for (briefly); new
        // connections wait in the backlog meanwhile.
        let slot = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            s = slots.admit() => s,
        };
        let (cx, stop, limits) = (services.clone(), stop.clone(), limits.clone());
        tasks.spawn(async move {
            let Some(mut slot) = slot else {
                let out = too_many_connections(&cx.hostname);
                let _ = match stream {
                    Stream::Tcp(mut s) => s.write_all(&out).await,
                    Stream::Unix(mut s) => s.write_all(&out).await,
                };
                tracing::warn!(
                    "lmtp connection refused: {} sessions already",
                    limits.max_connections
                );
                return;
            };
            metrics::lmtp_session_started();
            let result = match stream {
                Stream::Tcp(s) => {
                    let _ = s.set_nodelay(true);
                    connection(s, client, &cx, &limits, stop, &mut slot).await
                }
                Stream::Unix(s) => connection(s, client, &cx, &limits, stop, &mut slot).await,
            };
            metrics::lmtp_session_ended();
            if let Err(e) = result {
                tracing::warn!("lmtp connection closed: {e}");
            }
            drop(slot);
        });
        while tasks.try_join_next().is_some() {}
    }
    drain(&mut tasks, limits.shutdown_grace, "lmtp").await;
}

/// RFC 5321 section 3.8: 421 and close; the client retries later.
fn too_many_connections(hostname: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Reply::new(421, format!("4.3.2 {hostname} Error: too many connections")).encode(&mut out);
    out
}

/// What the session knows of a client: its address for TCP, nothing for a unix socket.
fn client_of(peer: Option<std::net::SocketAddr>) -> Client {
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
    Io(#[from] io::Error),
    #[error("no command for {0:?}; closed with 421")]
    Timeout(Duration),
    #[error(transparent)]
    MadeRoom(#[from] MadeRoom),
}

/// The message being received: spooled for the journal and the next hop.
struct Capture {
    spool: Spool,
    failed: Option<io::Error>,
}

/// An LMTP/SMTP socket. Reads and writes take turns (replies go out before the next read), so
/// the stream is not split.
trait LmtpStream: AsyncRead + AsyncWrite + Unpin {
    /// Called after every read that returned data.
    fn after_read(&self) {}
}

impl LmtpStream for tokio::net::UnixStream {}

impl LmtpStream for tokio::net::TcpStream {
    fn after_read(&self) {
        // While handoff stores and delivers a message nothing goes back to carry the ACK of
        // its last bytes; a delayed ACK (40 ms on Linux) then holds the client's next small
        // write under Nagle. Quick ACKs avoid that; Linux turns them off again on its own, so
        // set them after every read (as the milter listener does).
        let _ = socket2::SockRef::from(self).set_tcp_quickack(true);
    }
}

/// Runs one connection to its end.
async fn connection<S: LmtpStream>(
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
    let mut capture: Option<Capture> = None;
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
                            capture = Some(Capture {
                                spool: Spool::new(dir),
                                failed: None,
                            });
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
                    if let Some(c) = capture.as_mut().filter(|c| c.failed.is_none())
                        && let Err(e) = c.spool.write(&bytes)
                    {
                        c.failed = Some(e);
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
                            let outcome = outcome_label(&replies);
                            record::message(&d.message, outcome, "lmtp");
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
                            let outcome = outcome_label(&refused.replies);
                            record::message(&refused.message, outcome, "lmtp");
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
        stream.after_read();
        decoder.feed(&buf[..n]);
        room.after_read(n);
        buf.resize(room.get(), 0);
    }
}

/// How long a message may wait for the journal before the recipients are told to retry.
const STORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Stores the message, hands it to the next hop, and returns the replies.
async fn deliver(
    d: &Delivery,
    captured: Option<Capture>,
    cx: &Services,
    session: &Session,
    next: &mut Option<Connection>,
) -> Vec<Reply> {
    let failed = |why: &str| {
        tracing::error!("{why}; recipients tempfailed");
        session.finish(d, false, &[])
    };
    let spool = match captured {
        Some(Capture {
            spool,
            failed: None,
        }) => spool,
        Some(Capture {
            failed: Some(e), ..
        }) => {
            return failed(&format!("spooling the message failed: {e}"));
        }
        None => return failed("no spooled message"),
    };
    let size = spool.len();
    let body = match spool.into_body() {
        Ok(b) => b,
        Err(e) => return failed(&format!("reading the spooled message failed: {e}")),
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
        let entry = Entry::new(
            Kind::Message,
            &d.message.archive_meta(size, "lmtp"),
            for_journal,
        );
        let stored = match tokio::time::timeout(STORE_TIMEOUT, journal.append(entry)).await {
            Ok(Ok(id)) => {
                tracing::debug!(record = %id, "journaled");
                Ok(())
            }
            Ok(Err(e)) => Err(format!("journal: {e}")),
            Err(_) => Err(format!("journal did not answer within {STORE_TIMEOUT:?}")),
        };
        if let Err(why) = stored {
            next_hop::abort(next);
            return failed(&why);
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

fn outcome_label(replies: &[Reply]) -> &'static str {
    if replies.iter().all(Reply::is_positive) {
        "accepted"
    } else if replies.iter().any(Reply::is_transient) {
        "tempfailed"
    } else {
        "rejected"
    }
}
