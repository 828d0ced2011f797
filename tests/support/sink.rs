//! The lab's next hop: a capturing SMTP (or LMTP) server on 127.0.0.1 that Postfix delivers
//! everything to (`transport_maps = inline:{ * = smtp:[127.0.0.1]:PORT }`), recording each
//! accepted transaction as a `Delivered`.
//!
//! It speaks what Postfix's smtp(8)/lmtp(8) client uses: EHLO (or LHLO) advertising
//! PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES and SMTPUTF8; MAIL, RCPT, DATA with
//! dot-unstuffing, RSET, NOOP, QUIT. It advertises neither DSN nor CHUNKING, so Postfix sends
//! no ORCPT/NOTIFY and no BDAT. Replies can be chosen per recipient to play a refusing next
//! hop. One thread accepts, one thread serves each connection; `session` does the protocol
//! over any `BufRead`/`Write`, so it is tested without sockets at the bottom of this file.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::smtp::unstuff_line;

/// A connection idle this long is dropped. Postfix keeps idle cached connections for
/// `smtp_connection_cache_time_limit` (2s); this only bounds a client that vanished.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Which protocol the sink speaks, and so which Postfix transport the lab routes to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SinkMode {
    /// SMTP via Postfix's smtp(8) client: one reply at end of data for the whole transaction.
    #[default]
    Smtp,
    /// LMTP (RFC 2033) via lmtp(8): LHLO, and one end-of-data reply per accepted recipient.
    Lmtp,
}

/// One transaction the sink accepted: the envelope and the message exactly as received
/// (CRLF line ends, dot-stuffing undone). `rcpt_to` holds only the recipients that were
/// accepted (at RCPT, and in LMTP also at end of data), in the order Postfix sent them.
#[derive(Clone, PartialEq, Eq)]
pub struct Delivered {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
    /// MAIL carried the SMTPUTF8 parameter (RFC 6531).
    pub smtputf8: bool,
}

impl Delivered {
    /// The message as text (lossy for non-UTF-8 bytes).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The unfolded value of the first header named `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// The unfolded values of every header named `name` (case-insensitive), in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let mut found = Vec::new();
        let mut current: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(value) = current.as_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            found.extend(current.take());
            if let Some((field, value)) = line.split_once(':')
                && field.trim().eq_ignore_ascii_case(name)
            {
                current = Some(value.trim().to_string());
            }
        }
        found.extend(current);
        found
    }
}

impl fmt::Debug for Delivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivered")
            .field("mail_from", &self.mail_from)
            .field("rcpt_to", &self.rcpt_to)
            .field("smtputf8", &self.smtputf8)
            .field("data", &self.text())
            .finish()
    }
}

/// The capturing server. Dropping it stops accepting; connections end when Postfix closes
/// them (the lab stops Postfix before its sink).
pub struct Sink {
    addr: SocketAddr,
    mode: SinkMode,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Notified whenever a delivery is recorded.
    arrived: Condvar,
    stopping: AtomicBool,
}

#[derive(Default)]
struct State {
    delivered: Vec<Delivered>,
    /// Lowercased recipient → reply to its RCPT.
    rcpt_replies: HashMap<String, String>,
    /// Reply at end of data (SMTP), or the default per-recipient one (LMTP).
    data_reply: Option<String>,
    /// LMTP: lowercased recipient → its end-of-data reply.
    data_replies: HashMap<String, String>,
    transactions: u64,
    /// EHLO/LHLO leaves SMTPUTF8 out (a next hop without `smtputf8_enable`).
    no_smtputf8: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking session thread must not hide the deliveries from the test.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink {
    /// Binds 127.0.0.1:0 and starts serving.
    pub fn start(mode: SinkMode) -> io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("lab-sink-{}", addr.port()))
                .spawn(move || accept_loop(listener, mode, shared))?
        };
        Ok(Sink {
            addr,
            mode,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn mode(&self) -> SinkMode {
        self.mode
    }

    /// Everything delivered so far, in order of completion.
    pub fn all(&self) -> Vec<Delivered> {
        self.shared.lock().delivered.clone()
    }

    /// Everything delivered so far, leaving the sink empty (for tests in phases).
    pub fn take(&self) -> Vec<Delivered> {
        std::mem::take(&mut self.shared.lock().delivered)
    }

    /// Waits until at least `count` deliveries have arrived and returns all of them; panics
    /// with what did arrive if `timeout` passes first.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Delivered> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.delivered.len() < count {
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "sink {}: expected {count} deliveries within {timeout:?}, got {}: {:#?}",
                    self.addr,
                    state.delivered.len(),
                    state.delivered
                );
            }
            state = self
                .shared
                .arrived
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.delivered.clone()
    }

    /// How many deliveries the sink holds, without copying them.
    pub fn count(&self) -> usize {
        self.shared.lock().delivered.len()
    }

    /// Waits until at least `count` deliveries have arrived, without copying them (for
    /// benchmarks, where there are thousands). Returns how many there are, which is less
    /// than `count` if `timeout` passed first.
    pub fn wait_for_count(&self, count: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.delivered.len() < count {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .shared
                .arrived
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.delivered.len()
    }

    /// Asserts that the sink holds exactly `count` deliveries and that no other arrives
    /// within `within`. Waiting out the whole period is the point: it is how long the test
    /// is willing to give a stray delivery to show up.
    pub fn assert_no_more(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        let mut state = self.shared.lock();
        loop {
            assert!(
                state.delivered.len() == count,
                "sink {}: expected exactly {count} deliveries, got {}: {:#?}",
                self.addr,
                state.delivered.len(),
                state.delivered
            );
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            state = self
                .shared
                .arrived
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Answers RCPT for `rcpt` (case-insensitive) with `reply`, e.g.
    /// `"550 5.1.1 <gone@corp.example>: user unknown"` or `"450 4.2.0 try later"`.
    pub fn reply_to_rcpt(&self, rcpt: &str, reply: &str) {
        let reply = checked_reply(reply);
        self.shared
            .lock()
            .rcpt_replies
            .insert(rcpt.to_ascii_lowercase(), reply);
    }

    /// The end-of-data reply: for the whole transaction in SMTP mode; in LMTP mode for
    /// every recipient without its own `reply_to_data_for`.
    pub fn reply_to_data(&self, reply: &str) {
        let reply = checked_reply(reply);
        self.shared.lock().data_reply = Some(reply);
    }

    /// LMTP only: the end-of-data reply for one recipient.
    pub fn reply_to_data_for(&self, rcpt: &str, reply: &str) {
        assert_eq!(
            self.mode,
            SinkMode::Lmtp,
            "per-recipient data replies need an LMTP sink"
        );
        let reply = checked_reply(reply);
        self.shared
            .lock()
            .data_replies
            .insert(rcpt.to_ascii_lowercase(), reply);
    }

    /// Back to accepting everything.
    /// Whether EHLO/LHLO offers SMTPUTF8 (it does unless told otherwise).
    pub fn offer_smtputf8(&self, on: bool) {
        self.shared.lock().no_smtputf8 = !on;
    }

    pub fn reset_replies(&self) {
        let mut state = self.shared.lock();
        state.rcpt_replies.clear();
        state.data_reply = None;
        state.data_replies.clear();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // accept() has no timeout: a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A reply the sink may send: "ddd text" with a 2xx, 4xx or 5xx code.
fn checked_reply(reply: &str) -> String {
    let b = reply.as_bytes();
    let ok = b.len() >= 4
        && matches!(b[0], b'2' | b'4' | b'5')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && b[3] == b' '
        && !reply.contains(['\r', '\n']);
    assert!(
        ok,
        "sink reply {reply:?} is not \"ddd text\" with a 2xx/4xx/5xx code"
    );
    reply.to_string()
}

fn accept_loop(listener: TcpListener, mode: SinkMode, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        let shared = Arc::clone(&shared);
        // Session errors (peer gone, timeout) end that session only.
        let _ = thread::Builder::new()
            .name("lab-sink-session".to_string())
            .spawn(move || {
                let _ = serve(stream, mode, &shared);
            });
    }
}

fn serve(stream: TcpStream, mode: SinkMode, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    // Replies go out in more than one write (a reply, then its CRLF; 354, then the final
    // reply). With Nagle's algorithm a write waits for the ACK of the previous one, which
    // Postfix delays (up to 40 ms on Linux) while it waits for the rest of the line: that
    // capped a lab at about 130 deliveries per second.
    stream.set_nodelay(true)?;
    let writer = stream.try_clone()?;
    session(BufReader::new(stream), writer, mode, shared)
}

/// The envelope of the transaction in progress.
struct Transaction {
    mail_from: String,
    rcpt_to: Vec<String>,
    smtputf8: bool,
}

/// One SMTP/LMTP session. Replies are written as each command is read, which is all
/// PIPELINING needs: the client reads them in order (RFC 2920).
fn session(
    mut reader: impl BufRead,
    mut writer: impl Write,
    mode: SinkMode,
    shared: &Shared,
) -> io::Result<()> {
    writer.write_all(b"220 sink.lab.example ESMTP handoff test sink\r\n")?;
    let mut transaction: Option<Transaction> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
        let verb = verb.to_ascii_uppercase();
        let reply = match (verb.as_str(), mode) {
            ("EHLO", SinkMode::Smtp) | ("LHLO", SinkMode::Lmtp) => {
                transaction = None;
                match shared.lock().no_smtputf8 {
                    false => "250-sink.lab.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 104857600\r\n\
                              250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8",
                    true => "250-sink.lab.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 104857600\r\n\
                             250 ENHANCEDSTATUSCODES",
                }
                .to_string()
            }
            ("HELO", SinkMode::Smtp) => {
                transaction = None;
                "250 sink.lab.example".to_string()
            }
            ("MAIL", _) => match parse_path(arg, "FROM:") {
                Some(from) => {
                    let smtputf8 = arg.rsplit_once('>').is_some_and(|(_, params)| {
                        params
                            .split_whitespace()
                            .any(|p| p.eq_ignore_ascii_case("SMTPUTF8"))
                    });
                    transaction = Some(Transaction {
                        mail_from: from,
                        rcpt_to: Vec::new(),
                        smtputf8,
                    });
                    "250 2.1.0 Ok".to_string()
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>".to_string(),
            },
            ("RCPT", _) => match (transaction.as_mut(), parse_path(arg, "TO:")) {
                (None, _) => "503 5.5.1 Error: need MAIL command".to_string(),
                (Some(_), None) => "501 5.5.4 Syntax: RCPT TO:<address>".to_string(),
                (Some(t), Some(to)) => {
                    let chosen = shared
                        .lock()
                        .rcpt_replies
                        .get(&to.to_ascii_lowercase())
                        .cloned();
                    let reply = chosen.unwrap_or_else(|| "250 2.1.5 Ok".to_string());
                    if reply.starts_with('2') {
                        t.rcpt_to.push(to);
                    }
                    reply
                }
            },
            ("DATA", _) => match transaction.take() {
                None => "503 5.5.1 Error: need RCPT command".to_string(),
                Some(t) if t.rcpt_to.is_empty() => {
                    "554 5.5.1 Error: no valid recipients".to_string()
                }
                Some(t) => {
                    writer.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                    let data = read_data(&mut reader)?;
                    end_of_data(t, data, mode, shared)
                }
            },
            ("RSET", _) => {
                transaction = None;
                "250 2.0.0 Ok".to_string()
            }
            ("NOOP", _) => "250 2.0.0 Ok".to_string(),
            ("QUIT", _) => {
                writer.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => "502 5.5.2 Error: command not recognized".to_string(),
        };
        writer.write_all(reply.as_bytes())?;
        writer.write_all(b"\r\n")?;
        writer.flush()?;
    }
}

/// Reads message lines up to the lone "." and undoes dot-stuffing.
fn read_data(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside DATA",
            ));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        data.extend_from_slice(unstuff_line(&line));
    }
}

/// Records what was accepted and returns the end-of-data reply (one line per recipient in
/// LMTP, RFC 2033 section 4.2).
fn end_of_data(t: Transaction, data: Vec<u8>, mode: SinkMode, shared: &Shared) -> String {
    let mut state = shared.lock();
    state.transactions += 1;
    let (accepted, reply) = match mode {
        SinkMode::Smtp => {
            let reply = state.data_reply.clone().unwrap_or_else(|| {
                format!("250 2.0.0 Ok: delivered as sink-{}", state.transactions)
            });
            let accepted = if reply.starts_with('2') {
                t.rcpt_to
            } else {
                Vec::new()
            };
            (accepted, reply)
        }
        SinkMode::Lmtp => {
            let mut accepted = Vec::new();
            let mut lines = Vec::new();
            for rcpt in t.rcpt_to {
                let reply = state
                    .data_replies
                    .get(&rcpt.to_ascii_lowercase())
                    .or(state.data_reply.as_ref())
                    .cloned()
                    .unwrap_or_else(|| format!("250 2.0.0 <{rcpt}> Ok"));
                if reply.starts_with('2') {
                    accepted.push(rcpt);
                }
                lines.push(reply);
            }
            (accepted, lines.join("\r\n"))
        }
    };
    if !accepted.is_empty() {
        state.delivered.push(Delivered {
            mail_from: t.mail_from,
            rcpt_to: accepted,
            data,
            smtputf8: t.smtputf8,
        });
        shared.arrived.notify_all();
    }
    reply
}

/// The address in "FROM:<a@b> SIZE=1" (keyword matched case-insensitively; the angle
/// brackets may be missing, as some clients send). "<>" is the null sender, "".
fn parse_path(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        // The path ends at the first `>` outside a quoted string (RFC 5321 section 4.1.2:
        // `"a> B=C"@d` is one local part); the path is kept as written, quotes included.
        let (mut quoted, mut escaped) = (false, false);
        let end = inner.char_indices().find_map(|(i, c)| {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '>' if !quoted => return Some(i),
                _ => {}
            }
            None
        })?;
        Some(inner[..end].to_string())
    } else {
        let addr = rest.split_whitespace().next()?;
        Some(addr.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
            stopping: AtomicBool::new(false),
        }
    }

    fn run(input: &str, mode: SinkMode, shared: &Shared) -> String {
        let mut out = Vec::new();
        session(input.as_bytes(), &mut out, mode, shared).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn paths_parse_from_mail_and_rcpt_arguments() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("FROM:<a@example.net>", "FROM:", Some("a@example.net")),
            (
                "from:<a@example.net> SIZE=123 BODY=8BITMIME",
                "FROM:",
                Some("a@example.net"),
            ),
            ("FROM: <a@example.net>", "FROM:", Some("a@example.net")),
            ("FROM:<>", "FROM:", Some("")),
            ("FROM:a@example.net", "FROM:", Some("a@example.net")),
            ("TO:<b@corp.example>", "TO:", Some("b@corp.example")),
            (
                "TO:<\"v@evil.example> NOTIFY=NEVER\"@corp.example>",
                "TO:",
                Some("\"v@evil.example> NOTIFY=NEVER\"@corp.example"),
            ),
            (
                "TO:<\"q\\\">x\"@corp.example> NOTIFY=NEVER",
                "TO:",
                Some("\"q\\\">x\"@corp.example"),
            ),
            ("TO:<b@corp.example", "TO:", None),
            ("TO:", "TO:", None),
            ("FROM:<a@example.net>", "TO:", None),
            ("", "FROM:", None),
        ];
        for (arg, keyword, expected) in cases {
            assert_eq!(parse_path(arg, keyword).as_deref(), *expected, "{arg:?}");
        }
    }

    #[test]
    fn pipelined_smtp_session_records_accepted_recipients_and_unstuffed_data() {
        let shared = shared();
        shared
            .lock()
            .rcpt_replies
            .insert("gone@corp.example".into(), "550 5.1.1 user unknown".into());
        let out = run(
            "EHLO postfix\r\nMAIL FROM:<s@example.net> SIZE=20\r\nRCPT TO:<a@corp.example>\r\n\
             RCPT TO:<Gone@corp.example>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\n.\r\n\
             RSET\r\nQUIT\r\n",
            SinkMode::Smtp,
            &shared,
        );
        let replies: Vec<&str> = out.lines().map(|l| &l[..4]).collect();
        assert_eq!(
            replies,
            [
                "220 ", "250-", "250-", "250-", "250-", "250-", "250 ", "250 ", "250 ", "550 ",
                "354 ", "250 ", "250 ", "221 "
            ]
        );
        let delivered = shared.lock().delivered.clone();
        assert_eq!(
            delivered,
            [Delivered {
                mail_from: "s@example.net".into(),
                rcpt_to: vec!["a@corp.example".into()],
                data: b"Subject: x\r\n\r\n.dot\r\n".to_vec(),
                smtputf8: false,
            }]
        );
        assert_eq!(delivered[0].header("subject").as_deref(), Some("x"));
    }

    #[test]
    fn out_of_order_commands_are_refused_and_record_nothing() {
        let shared = shared();
        let out = run(
            "EHLO x\r\nRCPT TO:<a@corp.example>\r\nDATA\r\nMAIL FROM:<s@x>\r\nDATA\r\nLHLO x\r\nBDAT 1\r\n",
            SinkMode::Smtp,
            &shared,
        );
        let codes: Vec<&str> = out.lines().skip(7).map(|l| &l[..3]).collect();
        assert_eq!(codes, ["503", "503", "250", "554", "502", "502"]);
        assert!(shared.lock().delivered.is_empty());
    }

    #[test]
    fn lmtp_session_replies_per_recipient_after_data() {
        let shared = shared();
        shared
            .lock()
            .data_replies
            .insert("full@corp.example".into(), "452 4.2.2 mailbox full".into());
        let out = run(
            "LHLO postfix\r\nMAIL FROM:<>\r\nRCPT TO:<a@corp.example>\r\nRCPT TO:<full@corp.example>\r\n\
             DATA\r\nx\r\n.\r\nQUIT\r\n",
            SinkMode::Lmtp,
            &shared,
        );
        let tail: Vec<&str> = out.lines().skip(11).collect();
        assert_eq!(
            tail,
            [
                "250 2.0.0 <a@corp.example> Ok",
                "452 4.2.2 mailbox full",
                "221 2.0.0 Bye"
            ]
        );
        let delivered = shared.lock().delivered.clone();
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].mail_from, "");
        assert_eq!(delivered[0].rcpt_to, ["a@corp.example"]);
    }

    #[test]
    fn folded_and_repeated_headers_are_found() {
        let d = Delivered {
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            smtputf8: false,
            data: b"Received: one\r\n\tfolded\r\nSubject: s\r\nreceived: two\r\n\r\nReceived: body\r\n".to_vec(),
        };
        assert_eq!(d.headers("Received"), ["one folded", "two"]);
        assert_eq!(d.header("subject").as_deref(), Some("s"));
        assert_eq!(d.header("X-Missing"), None);
    }
}
