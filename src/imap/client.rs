//! A blocking IMAP connection over TLS: connect, log in, list, examine, fetch, search, create,
//! append, log out. Responses are read a line and a literal at a time; every literal goes
//! into a [`Capture`] (memory while small, a spool file beyond, hashed as it is read), so a
//! 50 MiB message costs a buffer. Parsing is [`super::proto`]'s.
//!
//! Errors name the server (and the user for a refused login), never the password.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

use super::proto::{self, MAX_LINE, Token};
use super::{Secret, Server};
use crate::import::source::Capture;

/// How long a read or a write may wait before the connection is given up.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an IMAP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("{server}: cannot connect: {cause}")]
    Connect { server: String, cause: io::Error },
    #[error("{server}: TLS: {cause}")]
    Tls { server: String, cause: String },
    #[error("{server}: {cause}")]
    Io { server: String, cause: io::Error },
    #[error("{server}: login as `{user}` refused: {text}")]
    Login {
        server: String,
        user: String,
        text: String,
    },
    #[error("{server}: {command}: {text}")]
    Refused {
        server: String,
        command: String,
        text: String,
    },
    #[error("{server}: bad response: {text}")]
    Protocol { server: String, text: String },
    /// The caller's callback asked to stop (its own error is what it reports).
    #[error("stopped")]
    Stopped,
    #[error("CA file {path}: {cause}")]
    CaFile { path: String, cause: String },
}

/// How to reach a server.
#[derive(Debug, Clone)]
pub struct Connect {
    pub server: Server,
    /// PEM certificates to trust instead of the system's (a private CA).
    pub ca_file: Option<PathBuf>,
}

/// A mailbox LIST returned, selectable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The name on the wire (modified UTF-7).
    pub raw: String,
    /// The name decoded, its levels joined with `/` whatever the server's delimiter.
    pub name: String,
}

/// What EXAMINE/SELECT says of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    pub uidvalidity: u32,
    pub exists: u32,
}

/// One message of a FETCH.
#[derive(Debug)]
pub struct Message {
    pub uid: u32,
    pub internal_date: Option<jiff::Timestamp>,
    pub body: Capture,
}

/// An untagged response: its first line, tokens, and literals.
struct Untagged {
    tokens: Vec<Token>,
    first: Vec<u8>,
    literals: Vec<Capture>,
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A logged-in (or about to be) connection.
pub struct Client {
    io: BufReader<Tls>,
    server: String,
    tag: u32,
    spool_dir: PathBuf,
    capabilities: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects over TLS and reads the greeting. Literals are spooled in `spool_dir`.
    pub fn connect(c: &Connect, spool_dir: &Path) -> Result<Client, ImapError> {
        let shown = c.server.to_string();
        let config = tls_config(c.ca_file.as_deref())?;
        let name = ServerName::try_from(c.server.host.clone()).map_err(|e| ImapError::Tls {
            server: shown.clone(),
            cause: e.to_string(),
        })?;
        let conn =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| ImapError::Tls {
                server: shown.clone(),
                cause: e.to_string(),
            })?;
        let connect_err = |cause| ImapError::Connect {
            server: shown.clone(),
            cause,
        };
        let addrs = (c.server.host.as_str(), c.server.port)
            .to_socket_addrs()
            .map_err(connect_err)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or_else(|| connect_err(last))?;
        let setup = |t: &TcpStream| -> io::Result<()> {
            t.set_read_timeout(Some(IO_TIMEOUT))?;
            t.set_write_timeout(Some(IO_TIMEOUT))?;
            t.set_nodelay(true)
        };
        setup(&tcp).map_err(connect_err)?;
        let mut client = Client {
            io: BufReader::with_capacity(64 * 1024, rustls::StreamOwned::new(conn, tcp)),
            server: shown,
            tag: 0,
            spool_dir: spool_dir.to_path_buf(),
            capabilities: Vec::new(),
        };
        let greeting = client.line()?;
        if !greeting.starts_with(b"* OK") {
            return Err(client.protocol(&greeting));
        }
        client.capabilities = capabilities_in(&greeting);
        if client.capabilities.is_empty() {
            client.command("CAPABILITY", |c, u| {
                if u.first.to_ascii_uppercase().starts_with(b"* CAPABILITY") {
                    c.capabilities = capabilities_in(&u.first);
                }
                Ok(())
            })?;
        }
        Ok(client)
    }

    /// The server as errors name it (`host:port`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Logs in: AUTHENTICATE PLAIN (RFC 4616) when offered, else LOGIN.
    pub fn login(&mut self, user: &str, password: &Secret) -> Result<(), ImapError> {
        let refused = |server: &str, text: String| ImapError::Login {
            server: server.to_string(),
            user: user.to_string(),
            text,
        };
        let result = if self.has("AUTH=PLAIN") {
            use base64::Engine;
            let plain = format!("\0{user}\0{}", password.expose());
            let b64 = base64::engine::general_purpose::STANDARD.encode(plain);
            match self.has("SASL-IR") {
                true => self.raw_command(&format!("AUTHENTICATE PLAIN {b64}"), &[]),
                false => self.raw_command("AUTHENTICATE PLAIN", &[b64.as_bytes()]),
            }
        } else {
            let (u, p) = (astring(user), astring(password.expose()));
            let mut line = String::from("LOGIN ");
            let mut literals: Vec<&[u8]> = Vec::new();
            for (s, raw) in [(&u, user), (&p, password.expose())] {
                match s {
                    Some(q) => line.push_str(q),
                    None => {
                        line.push_str(&format!("{{{}}}", raw.len()));
                        literals.push(raw.as_bytes());
                    }
                }
                line.push(' ');
            }
            self.raw_command(line.trim_end(), &literals)
        };
        match result {
            Ok(t) if t.ok => Ok(()),
            Ok(t) => Err(refused(&self.server, t.text)),
            Err(e) => Err(e),
        }
    }

    /// Every selectable mailbox (LIST "" "*"), by name.
    pub fn list(&mut self) -> Result<Vec<Mailbox>, ImapError> {
        let mut out = Vec::new();
        self.command("LIST \"\" \"*\"", |c, u| {
            let names: Vec<Vec<u8>> = u.literals.iter().map(|l| l.head.clone()).collect();
            let Some(l) = proto::list(&u.tokens, &names) else {
                return Ok(());
            };
            if l.noselect {
                return Ok(());
            }
            let decoded = proto::utf7_decode(&l.raw).ok_or_else(|| ImapError::Protocol {
                server: c.server.clone(),
                text: format!("mailbox name `{}` is not modified UTF-7", l.raw),
            })?;
            let name = match l.delimiter {
                Some(d) if d != '/' => decoded.replace(d, "/"),
                _ => decoded,
            };
            out.push(Mailbox { raw: l.raw, name });
            Ok(())
        })?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// EXAMINE (read-only: nothing is marked seen) or SELECT a mailbox.
    pub fn open(&mut self, raw: &str, write: bool) -> Result<Selected, ImapError> {
        let verb = if write { "SELECT" } else { "EXAMINE" };
        let mut sel = Selected {
            uidvalidity: 0,
            exists: 0,
        };
        let mut validity = None;
        self.command(&format!("{verb} {}", self.mailbox_arg(raw)?), |_, u| {
            if let Some(n) = proto::exists(&u.tokens) {
                sel.exists = n;
            }
            if let Some(v) = proto::code_number(&u.first, "UIDVALIDITY") {
                validity = u32::try_from(v).ok();
            }
            Ok(())
        })?;
        sel.uidvalidity = validity.ok_or_else(|| ImapError::Protocol {
            server: self.server.clone(),
            text: format!("{verb} {raw} gave no UIDVALIDITY"),
        })?;
        Ok(sel)
    }

    /// The UIDs of the open mailbox from `first` on, ascending. Asked as `UID FETCH first:*
    /// (UID)`, one short response per message, not as a SEARCH, whose one response line
    /// grows with the mailbox.
    pub fn uids_from(&mut self, first: u32) -> Result<Vec<u32>, ImapError> {
        let mut uids = Vec::new();
        self.command(&format!("UID FETCH {first}:* (UID)"), |_, u| {
            if let Some(uid) = proto::fetch(&u.tokens).and_then(|f| f.uid) {
                uids.push(uid);
            }
            Ok(())
        })?;
        // `N:*` includes the highest UID even below N (RFC 3501 section 6.4.8).
        uids.retain(|&u| u >= first);
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// Fetches the messages `first..=last` (UIDs) of the open mailbox without marking them
    /// seen (BODY.PEEK[]), handing each to `each` as it arrives.
    pub fn fetch(
        &mut self,
        first: u32,
        last: u32,
        each: &mut dyn FnMut(Message) -> Result<(), ImapError>,
    ) -> Result<(), ImapError> {
        let cmd = format!("UID FETCH {first}:{last} (UID INTERNALDATE BODY.PEEK[])");
        self.command(&cmd, |c, u| {
            let Some(f) = proto::fetch(&u.tokens) else {
                return Ok(());
            };
            let (Some(uid), Some(body)) = (f.uid, f.body) else {
                // A FETCH the server sent on its own (flags changed elsewhere).
                return Ok(());
            };
            let body = u
                .literals
                .into_iter()
                .nth(body)
                .ok_or_else(|| c.protocol(b"FETCH"))?;
            if !(first..=last).contains(&uid) {
                return Ok(());
            }
            each(Message {
                uid,
                internal_date: f.internal_date,
                body,
            })
        })
    }

    /// CREATE a mailbox (its parents too, as RFC 3501 lets servers do); one that exists is
    /// fine.
    pub fn create(&mut self, raw: &str) -> Result<(), ImapError> {
        let arg = self.mailbox_arg(raw)?;
        let t = self.raw_command(&format!("CREATE {arg}"), &[])?;
        if t.ok || t.text.to_ascii_uppercase().contains("[ALREADYEXISTS]") {
            return Ok(());
        }
        // Servers without RFC 5530 codes: the mailbox may exist; EXAMINE tells.
        match self.open(raw, false) {
            Ok(_) => Ok(()),
            Err(_) => Err(ImapError::Refused {
                server: self.server.clone(),
                command: format!("CREATE {raw}"),
                text: t.text,
            }),
        }
    }

    /// DELETE a mailbox.
    pub fn delete(&mut self, raw: &str) -> Result<(), ImapError> {
        let arg = self.mailbox_arg(raw)?;
        self.command(&format!("DELETE {arg}"), |_, _| Ok(()))
    }

    /// APPENDs `body` (read from `reader`, `len` bytes) to a mailbox with `date` as its
    /// INTERNALDATE, `\Seen` when `seen`; the new UID when the server says (UIDPLUS).
    pub fn append(
        &mut self,
        raw: &str,
        seen: bool,
        date: Option<jiff::Timestamp>,
        len: u64,
        reader: &mut dyn Read,
    ) -> Result<Option<u32>, ImapError> {
        let arg = self.mailbox_arg(raw)?;
        let date = match date {
            Some(d) => format!(" \"{}\"", proto::format_internal_date(d)),
            None => String::new(),
        };
        self.tag += 1;
        let tag = format!("h{}", self.tag);
        let flags = if seen { "(\\Seen)" } else { "()" };
        let head = format!("{tag} APPEND {arg} {flags}{date} {{{len}}}\r\n");
        self.write(head.as_bytes())?;
        self.flush()?;
        self.continuation(&tag)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = reader.read(&mut buf[..want]).map_err(|e| self.io_err(e))?;
            if n == 0 {
                return Err(self.io_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the message is shorter than its length",
                )));
            }
            self.write(&buf[..n])?;
            left -= n as u64;
        }
        self.write(b"\r\n")?;
        self.flush()?;
        let t = self.finish(&tag, &mut |_, _| Ok(()))?;
        if !t.ok {
            return Err(ImapError::Refused {
                server: self.server.clone(),
                command: format!("APPEND {raw}"),
                text: t.text,
            });
        }
        Ok(
            proto::code_number(t.text.as_bytes(), "APPENDUID").and_then(|_| {
                // `[APPENDUID validity uid]`: the second number.
                let upper = t.text.to_ascii_uppercase();
                let at = upper.find("[APPENDUID ")? + "[APPENDUID ".len();
                let rest = &t.text[at..];
                let (_, uid) = rest.split_once(' ')?;
                uid.split(']').next()?.trim().parse().ok()
            }),
        )
    }

    /// LOGOUT (errors ignored: the work is done).
    pub fn logout(mut self) {
        let _ = self.command("LOGOUT", |_, _| Ok(()));
    }

    fn has(&self, cap: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case(cap))
    }

    /// A mailbox name as a command argument: quoted (names are modified UTF-7, so ASCII).
    fn mailbox_arg(&self, raw: &str) -> Result<String, ImapError> {
        proto::quote(raw).ok_or_else(|| ImapError::Protocol {
            server: self.server.clone(),
            text: format!("mailbox name `{}` cannot be quoted", raw.escape_debug()),
        })
    }

    /// Runs a command; `on` sees each untagged response. A NO or BAD is an error.
    fn command(
        &mut self,
        cmd: &str,
        mut on: impl FnMut(&mut Client, Untagged) -> Result<(), ImapError>,
    ) -> Result<(), ImapError> {
        let t = self.raw_command_with(cmd, &[], &mut on)?;
        match t.ok {
            true => Ok(()),
            false => Err(ImapError::Refused {
                server: self.server.clone(),
                command: cmd.split(' ').next().unwrap_or(cmd).to_string(),
                text: t.text,
            }),
        }
    }

    fn raw_command(&mut self, cmd: &str, literals: &[&[u8]]) -> Result<proto::Tagged, ImapError> {
        self.raw_command_with(cmd, literals, &mut |_, _| Ok(()))
    }

    /// Sends `cmd` (with `literals` after continuations: each `{N}` of the line waits for
    /// `+`; for AUTHENTICATE, each literal is a response line) and reads to its completion.
    fn raw_command_with(
        &mut self,
        cmd: &str,
        literals: &[&[u8]],
        on: &mut dyn FnMut(&mut Client, Untagged) -> Result<(), ImapError>,
    ) -> Result<proto::Tagged, ImapError> {
        self.tag += 1;
        let tag = format!("h{}", self.tag);
        let auth = cmd.starts_with("AUTHENTICATE");
        if auth {
            self.write(format!("{tag} {cmd}\r\n").as_bytes())?;
            for l in literals {
                self.flush()?;
                self.continuation(&tag)?;
                self.write(l)?;
                self.write(b"\r\n")?;
            }
        } else {
            // `LOGIN {3} {7}`: split after each literal marker.
            let mut rest = cmd;
            let mut first = true;
            for l in literals {
                let marker = format!("{{{}}}", l.len());
                let at = rest.find(&marker).map_or(rest.len(), |i| i + marker.len());
                if first {
                    self.write(format!("{tag} ").as_bytes())?;
                    first = false;
                }
                self.write(&rest.as_bytes()[..at])?;
                self.write(b"\r\n")?;
                self.flush()?;
                self.continuation(&tag)?;
                self.write(l)?;
                rest = &rest[at..];
            }
            if first {
                self.write(format!("{tag} ").as_bytes())?;
            }
            self.write(rest.as_bytes())?;
            self.write(b"\r\n")?;
        }
        self.flush()?;
        self.finish(&tag, on)
    }

    /// Waits for a `+` continuation; a tagged response instead is the command's refusal.
    fn continuation(&mut self, tag: &str) -> Result<(), ImapError> {
        loop {
            let line = self.line()?;
            if line.starts_with(b"+") {
                return Ok(());
            }
            if let Some(t) = proto::tagged(&line, tag) {
                return Err(ImapError::Refused {
                    server: self.server.clone(),
                    command: "command".into(),
                    text: t.text,
                });
            }
            // An untagged response meanwhile: read its literals and move on.
            self.untagged(line)?;
        }
    }

    /// Reads responses until the one tagged `tag`.
    fn finish(
        &mut self,
        tag: &str,
        on: &mut dyn FnMut(&mut Client, Untagged) -> Result<(), ImapError>,
    ) -> Result<proto::Tagged, ImapError> {
        loop {
            let line = self.line()?;
            if let Some(t) = proto::tagged(&line, tag) {
                return Ok(t);
            }
            if line.starts_with(b"+") {
                // A continuation we did not ask for (AUTHENTICATE wanting more): cancel.
                self.write(b"*\r\n")?;
                self.flush()?;
                continue;
            }
            // A BYE needs nothing here: LOGOUT's comes before its completion, and a server
            // that closes instead ends the stream, which `line` reports.
            let u = self.untagged(line)?;
            on(self, u)?;
        }
    }

    /// Reads the rest of an untagged response that starts with `first`: its literals and the
    /// text after each.
    fn untagged(&mut self, first: Vec<u8>) -> Result<Untagged, ImapError> {
        let mut tokens = Vec::new();
        let mut literals = Vec::new();
        let mut line = first.clone();
        loop {
            proto::tokenize(&line, &mut tokens).map_err(|e| ImapError::Protocol {
                server: self.server.clone(),
                text: e.to_string(),
            })?;
            let Some(n) = proto::literal_len(&line) else {
                break;
            };
            let mut cap = Capture::new(&self.spool_dir);
            let mut left = n;
            while left > 0 {
                let step = match self.io.fill_buf() {
                    Ok([]) => Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(buf) => {
                        let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        cap.write(&buf[..take]).map(|()| take)
                    }
                    Err(e) => Err(e),
                };
                let take = step.map_err(|e| self.io_err(e))?;
                self.io.consume(take);
                left -= take as u64;
            }
            tokens.push(Token::Literal(literals.len()));
            literals.push(cap);
            line = self.line()?;
        }
        Ok(Untagged {
            tokens,
            first,
            literals,
        })
    }

    /// One line, CRLF included, at most [`MAX_LINE`] bytes.
    fn line(&mut self) -> Result<Vec<u8>, ImapError> {
        let mut line = Vec::new();
        let n = (&mut self.io)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| self.io_err(e))?;
        if n == 0 {
            return Err(self.io_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        if !line.ends_with(b"\n") {
            return Err(ImapError::Protocol {
                server: self.server.clone(),
                text: format!("a response line longer than {MAX_LINE} bytes"),
            });
        }
        Ok(line)
    }

    fn write(&mut self, b: &[u8]) -> Result<(), ImapError> {
        let r = self.io.get_mut().write_all(b);
        r.map_err(|e| self.io_err(e))
    }

    fn flush(&mut self) -> Result<(), ImapError> {
        let r = self.io.get_mut().flush();
        r.map_err(|e| self.io_err(e))
    }

    fn io_err(&self, cause: io::Error) -> ImapError {
        // rustls reports a failed handshake as an InvalidData io::Error.
        if cause.kind() == io::ErrorKind::InvalidData {
            return ImapError::Tls {
                server: self.server.clone(),
                cause: cause.to_string(),
            };
        }
        ImapError::Io {
            server: self.server.clone(),
            cause,
        }
    }

    fn protocol(&self, line: &[u8]) -> ImapError {
        let shown: String = String::from_utf8_lossy(line).chars().take(200).collect();
        ImapError::Protocol {
            server: self.server.clone(),
            text: shown.trim_end().to_string(),
        }
    }
}

/// The capabilities a `[CAPABILITY …]` code or a `* CAPABILITY …` response lists.
fn capabilities_in(line: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(line);
    let upper = text.to_ascii_uppercase();
    let list = if let Some(at) = upper.find("[CAPABILITY ") {
        let rest = &text[at + "[CAPABILITY ".len()..];
        rest.split(']').next().unwrap_or("")
    } else if let Some(rest) = upper.strip_prefix("* CAPABILITY ") {
        &text[text.len() - rest.len()..]
    } else {
        ""
    };
    list.split_whitespace().map(str::to_string).collect()
}

/// A LOGIN argument as a quoted string, or `None` when it must be a literal.
fn astring(s: &str) -> Option<String> {
    proto::quote(s)
}

/// The TLS client configuration: the system's roots, or the certificates of `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ImapError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |cause: String| ImapError::CaFile {
                path: path.display().to_string(),
                cause,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| bad(e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                // A system certificate rustls cannot use is skipped, as browsers do.
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImapError::Tls {
            server: String::new(),
            cause: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
