//! The next hop: where a filtered message goes, over SMTP (Postfix's reinjection listener, by
//! default) or LMTP (a final delivery agent). A client built on mail-send; handoff keeps no
//! queue, so every outcome is reported back per address and turned into the replies Postfix
//! acts on.
//!
//! One connection per handoff session is kept open between messages (Postfix keeps its lmtp
//! or smtp connection to handoff cached the same way), and re-opened once if the next hop
//! closed it while idle.

use std::time::Duration;

use mail_send::SmtpClient;
use smtp_proto::{EXT_8BIT_MIME, EXT_PIPELINING, EXT_SMTP_UTF8, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::Reply;
use super::session::Delivery;
use crate::address::smtp_mailbox;
use crate::policy::{ListenAddr, NextHop};

/// How long one exchange with the next hop may take. Postfix waits up to 600 s for the end of
/// data (lmtp_data_done_timeout); the next hop must answer well within that.
pub const TIMEOUT: Duration = Duration::from_secs(120);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open connection to the next hop, greeted.
pub struct Connection {
    client: SmtpClient<Box<dyn Io>>,
    lmtp: bool,
    pipelining: bool,
    eight_bit: bool,
    smtputf8: bool,
}

/// The message content to send: what handoff received, read from memory or its spool file.
pub enum Content<'a> {
    Bytes(&'a [u8]),
    File(tokio::fs::File),
}

/// Why the next hop could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    #[error("cannot connect to {hop}: {cause}")]
    Connect { hop: String, cause: std::io::Error },
    #[error("{hop}: {cause}")]
    Protocol {
        hop: String,
        cause: mail_send::Error,
    },
    #[error("{hop} greeted with {code} {text}")]
    Greeting {
        hop: String,
        code: u16,
        text: String,
    },
    #[error("reading the spooled message: {0}")]
    Spool(std::io::Error),
    /// The session refuses such addresses at MAIL/RCPT; this guards the writing itself.
    #[error("{hop}: {cause}")]
    Address {
        hop: String,
        cause: crate::address::PathError,
    },
}

impl HopError {
    /// Whether nothing was sent yet on a connection that may just have gone stale.
    fn stale(&self) -> bool {
        matches!(
            self,
            HopError::Protocol {
                cause: mail_send::Error::Io(_) | mail_send::Error::UnparseableReply,
                ..
            }
        )
    }
}

/// Where a next hop is, for logs and replies.
pub fn describe(hop: &NextHop) -> String {
    match hop {
        NextHop::Smtp(a) => format!("smtp:{a}"),
        NextHop::Lmtp(ListenAddr::Tcp(a)) => format!("lmtp:{a}"),
        NextHop::Lmtp(ListenAddr::Unix(p)) => format!("lmtp:unix:{}", p.display()),
    }
}

/// The envelope as the next hop answered it, before any content was sent.
pub struct Envelope {
    /// The reply for each address of the outgoing envelope so far: RCPT's for those refused,
    /// and for all of them when the transaction cannot go on.
    replies: Vec<Reply>,
    /// Addresses the next hop accepted at RCPT.
    accepted: Vec<usize>,
    /// The next hop answered DATA with 354 and waits for the content.
    open: bool,
}

impl Envelope {
    /// Whether the content is to be sent (the next hop accepted at least one address and DATA).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The replies when the content is not sent.
    pub fn into_replies(self) -> Vec<Reply> {
        self.replies
    }
}

/// Opens (or re-opens) the connection and sends MAIL, RCPT for every address and DATA. The
/// caller then stores the message and either [`send`]s the content or [`abort`]s, so that the
/// journal never holds a message the next hop refused outright, and the next hop never gets
/// one the journal does not hold.
pub async fn begin(
    conn: &mut Option<Connection>,
    hop: &NextHop,
    helo: &str,
    d: &Delivery,
) -> Result<Envelope, HopError> {
    let reused = conn.is_some();
    if conn.is_none() {
        *conn = Some(connect(hop, helo).await?);
    }
    // `conn` was filled just above.
    let c = conn.as_mut().expect("connection opened above");
    if d.needs_smtputf8 && !c.smtputf8 {
        return Ok(no_smtputf8(hop, d));
    }
    let result = match envelope(c, hop, d).await {
        Err(e) if reused && e.stale() => {
            // The next hop closed the idle connection: open a new one, once.
            tracing::debug!(next_hop = %describe(hop), "cached connection was closed; reconnecting");
            *conn = Some(connect(hop, helo).await?);
            let c = conn.as_mut().expect("connection opened above");
            match envelope(c, hop, d).await {
                Ok(replies) => judge(c, hop, d, replies).await,
                Err(e) => Err(e),
            }
        }
        Ok(replies) => judge(c, hop, d, replies).await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        *conn = None;
    }
    result
}

/// Gives up on a transaction whose envelope is open: closing the connection in the middle of
/// DATA makes the next hop discard what it got (RFC 5321 section 4.1.1.4).
pub fn abort(conn: &mut Option<Connection>) {
    *conn = None;
}

/// Sends the content of an open envelope; returns the reply for each address.
pub async fn send(
    conn: &mut Option<Connection>,
    hop: &NextHop,
    d: &Delivery,
    env: Envelope,
    mut content: Content<'_>,
) -> Result<Vec<Reply>, HopError> {
    let Some(c) = conn.as_mut().filter(|_| env.open) else {
        return Ok(env.replies);
    };
    let result = content_and_replies(c, hop, d, env, &mut content).await;
    if result.is_err() {
        *conn = None;
    }
    result
}

async fn connect(hop: &NextHop, helo: &str) -> Result<Connection, HopError> {
    let name = describe(hop);
    let connect_err = |cause| HopError::Connect {
        hop: name.clone(),
        cause,
    };
    let stream: Box<dyn Io> = match hop {
        NextHop::Smtp(a) | NextHop::Lmtp(ListenAddr::Tcp(a)) => {
            let s = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(a))
                .await
                .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
                .map_err(connect_err)?;
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
        NextHop::Lmtp(ListenAddr::Unix(p)) => Box::new(
            tokio::net::UnixStream::connect(p)
                .await
                .map_err(connect_err)?,
        ),
    };
    let lmtp = matches!(hop, NextHop::Lmtp(_));
    let mut client = SmtpClient {
        stream,
        timeout: TIMEOUT,
    };
    let protocol = |cause| HopError::Protocol {
        hop: name.clone(),
        cause,
    };
    let greeting = tokio::time::timeout(TIMEOUT, client.read())
        .await
        .map_err(|_| protocol(mail_send::Error::Timeout))?
        .map_err(protocol)?;
    if greeting.code != 220 {
        return Err(HopError::Greeting {
            hop: name.clone(),
            code: greeting.code,
            text: greeting.message,
        });
    }
    let ehlo = match lmtp {
        true => client.lhlo(helo).await,
        false => client.ehlo(helo).await,
    }
    .map_err(protocol)?;
    Ok(Connection {
        client,
        lmtp,
        pipelining: ehlo.has_capability(EXT_PIPELINING),
        eight_bit: ehlo.has_capability(EXT_8BIT_MIME),
        smtputf8: ehlo.has_capability(EXT_SMTP_UTF8),
    })
}

/// MAIL, RCPT for every address, DATA: pipelined when the next hop allows it.
async fn envelope(
    c: &mut Connection,
    hop: &NextHop,
    d: &Delivery,
) -> Result<Vec<Response<String>>, HopError> {
    let body = if d.body_8bit && c.eight_bit {
        " BODY=8BITMIME"
    } else {
        ""
    };
    // RFC 5321 form: a local part that is no Dot-string goes quoted (the SMTP parser handed
    // it out unquoted), so no address can end its path early and inject parameters.
    let path = |a: &str| {
        smtp_mailbox(a)
            .map(std::borrow::Cow::into_owned)
            .map_err(|cause| HopError::Address {
                hop: describe(hop),
                cause,
            })
    };
    // Passed on whenever the client declared it or an address needs it (RFC 6531 section 3.4);
    // [`begin`] has already refused a message that needs it when the next hop lacks it.
    let utf8 = if (d.smtputf8 || d.needs_smtputf8) && c.smtputf8 {
        " SMTPUTF8"
    } else {
        ""
    };
    let mut cmds = Vec::with_capacity(d.envelope.len() + 2);
    cmds.push(format!("MAIL FROM:<{}>{body}{utf8}\r\n", path(&d.sender)?));
    for to in &d.envelope {
        cmds.push(format!("RCPT TO:<{}>\r\n", path(to)?));
    }
    cmds.push("DATA\r\n".to_string());
    let protocol = |cause| HopError::Protocol {
        hop: describe(hop),
        cause,
    };
    if c.pipelining {
        return c.client.cmds(&cmds).await.map_err(protocol);
    }
    let mut replies = Vec::with_capacity(cmds.len());
    for cmd in &cmds {
        replies.push(c.client.cmd(cmd).await.map_err(protocol)?);
    }
    Ok(replies)
}

/// A message that needs SMTPUTF8 for a next hop that does not offer it: refused for every
/// address, nothing sent. RFC 6531 section 3.2 forbids passing it on, and handoff does not
/// downgrade (rewriting a UTF-8 address would deliver to someone else). Permanent, like Postfix's
/// own smtp client ("SMTPUTF8 is required, but was not offered"): the sender learns why.
fn no_smtputf8(hop: &NextHop, d: &Delivery) -> Envelope {
    let reply = Reply::new(
        553,
        format!(
            "5.6.7 next hop {} does not offer SMTPUTF8, which this message needs (a UTF-8 address or header; RFC 6531)",
            describe(hop)
        ),
    );
    Envelope {
        replies: vec![reply; d.envelope.len()],
        accepted: Vec::new(),
        open: false,
    }
}

/// The envelope's replies, mapped to the addresses; `open` when DATA got 354.
async fn judge(
    c: &mut Connection,
    hop: &NextHop,
    d: &Delivery,
    replies: Vec<Response<String>>,
) -> Result<Envelope, HopError> {
    let protocol = |cause| HopError::Protocol {
        hop: describe(hop),
        cause,
    };
    let n = d.envelope.len();
    if replies.len() != n + 2 {
        return Err(protocol(mail_send::Error::UnparseableReply));
    }
    let mail = reply(&replies[0]);
    if !mail.is_positive() {
        return Ok(Envelope {
            replies: vec![mail; n],
            accepted: Vec::new(),
            open: false,
        });
    }
    let mut out: Vec<Reply> = replies[1..=n].iter().map(reply).collect();
    let accepted: Vec<usize> = (0..n).filter(|&i| out[i].is_positive()).collect();
    let data = &replies[n + 1];
    if data.code == 354 {
        return Ok(Envelope {
            replies: out,
            accepted,
            open: true,
        });
    }
    // No content will be sent; leave the next hop outside any transaction.
    let said = reply(data);
    let said = if said.is_positive() {
        Reply::new(451, "4.4.0 next hop did not accept the content")
    } else {
        said
    };
    for &i in &accepted {
        out[i] = said.clone();
    }
    c.client.cmd(b"RSET\r\n").await.map_err(protocol)?;
    Ok(Envelope {
        replies: out,
        accepted: Vec::new(),
        open: false,
    })
}

/// The content of an open envelope and the replies to it.
async fn content_and_replies(
    c: &mut Connection,
    hop: &NextHop,
    d: &Delivery,
    env: Envelope,
    content: &mut Content<'_>,
) -> Result<Vec<Reply>, HopError> {
    let protocol = |cause| HopError::Protocol {
        hop: describe(hop),
        cause,
    };
    write_content(&mut c.client.stream, &d.prepend, content).await?;
    let expected = if c.lmtp { env.accepted.len() } else { 1 };
    let ends = tokio::time::timeout(TIMEOUT, c.client.read_many(expected))
        .await
        .map_err(|_| protocol(mail_send::Error::Timeout))?
        .map_err(protocol)?;
    let mut out = env.replies;
    for (k, &i) in env.accepted.iter().enumerate() {
        let end = if c.lmtp { &ends[k] } else { &ends[0] };
        out[i] = reply(end);
    }
    Ok(out)
}

/// Writes the prepended headers and the content, dot-stuffed, and the end of data. The
/// content has CRLF line ends only (the codec refuses anything else).
async fn write_content(
    w: &mut (impl AsyncWrite + Unpin),
    prepend: &[u8],
    content: &mut Content<'_>,
) -> Result<(), HopError> {
    let io = |e: std::io::Error| HopError::Protocol {
        hop: "next hop".into(),
        cause: mail_send::Error::Io(e),
    };
    let mut out = Vec::with_capacity(64 * 1024 + 1024);
    let mut at_line_start = true;
    let mut push = |bytes: &[u8], out: &mut Vec<u8>| {
        for &b in bytes {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
    };
    push(prepend, &mut out);
    match content {
        Content::Bytes(b) => {
            for chunk in b.chunks(64 * 1024) {
                push(chunk, &mut out);
                w.write_all(&out).await.map_err(io)?;
                out.clear();
            }
        }
        Content::File(f) => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = f.read(&mut buf).await.map_err(HopError::Spool)?;
                if n == 0 {
                    break;
                }
                push(&buf[..n], &mut out);
                w.write_all(&out).await.map_err(io)?;
                out.clear();
            }
        }
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    w.write_all(&out).await.map_err(io)?;
    w.flush().await.map_err(io)
}

fn reply(r: &Response<String>) -> Reply {
    let text = r.message.replace(['\r', '\n'], " ");
    match r.esc {
        [0, 0, 0] => Reply::new(r.code, text),
        [a, b, c] => Reply::new(r.code, format!("{a}.{b}.{c} {text}")),
    }
}
