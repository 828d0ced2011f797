//! The client side of the lab: SMTP reply parsing, dot-stuffing, a blocking `SmtpClient`, and
//! `send`, which runs one whole transaction and keeps every reply in a `Transcript` so a test
//! can assert on each command ("RCPT for this recipient got 550 5.2.1, the other got 250").
//!
//! Wire helpers (`Reply::parse`, `encode_data`, `unstuff_line`, `base64`) are pure and shared
//! with the sink; everything that touches a socket is in `SmtpClient`.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::Lab;

/// How long the client waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client waits for one reply. Longer than Postfix's default
/// `milter_command_timeout` (30s), so a test whose milter hangs sees Postfix's own verdict
/// (`milter_default_action`) rather than a client-side timeout.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// One SMTP reply: the code, the RFC 3463 enhanced status code when the server sent one, and
/// the text of all lines (joined by `\n`, each without its code and enhanced code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<String>,
    pub text: String,
}

impl Reply {
    /// Parses the lines of one reply (line endings already removed). Every line must carry the
    /// same code; all but the last use `-` after it (RFC 5321 section 4.2.1).
    pub fn parse(lines: &[String]) -> Result<Reply, String> {
        let Some(first) = lines.first() else {
            return Err("empty reply".to_string());
        };
        let code = reply_code(first)?;
        let mut enhanced = None;
        let mut texts = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            if reply_code(line)? != code {
                return Err(format!("reply line {line:?} does not carry code {code}"));
            }
            let last = i + 1 == lines.len();
            let rest = match line.as_bytes().get(3) {
                None if last => "",
                Some(b' ') if last => &line[4..],
                Some(b'-') if !last => &line[4..],
                _ => return Err(format!("malformed reply line {line:?}")),
            };
            let (this_enhanced, text) = split_enhanced(code, rest);
            if i == 0 {
                enhanced = this_enhanced.map(str::to_string);
            }
            texts.push(text);
        }
        Ok(Reply {
            code,
            enhanced,
            text: texts.join("\n"),
        })
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// "code enhanced", e.g. "550 5.2.1", the part of a reply that tests usually compare.
    pub fn status(&self) -> String {
        match &self.enhanced {
            Some(enhanced) => format!("{} {enhanced}", self.code),
            None => self.code.to_string(),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status())?;
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

fn reply_code(line: &str) -> Result<u16, String> {
    let digits = line.get(..3).unwrap_or("");
    if digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()) {
        // Three ASCII digits always fit in u16.
        Ok(digits.parse().expect("three digits"))
    } else {
        Err(format!(
            "reply line {line:?} does not start with a 3-digit code"
        ))
    }
}

/// Splits "5.2.1 text" into the enhanced code and the text. RFC 3463: class.subject.detail,
/// where the class repeats the first digit of the reply code; anything else is text.
fn split_enhanced(code: u16, rest: &str) -> (Option<&str>, String) {
    let (word, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let parts: Vec<&str> = word.split('.').collect();
    let numeric = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let is_enhanced = parts.len() == 3
        && parts[0] == (code / 100).to_string()
        && numeric(parts[1], 3)
        && numeric(parts[2], 3);
    if is_enhanced {
        (Some(word), text.to_string())
    } else {
        (None, rest.to_string())
    }
}

/// Reads one (possibly multi-line) reply.
pub fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let mut lines = Vec::new();
    loop {
        let mut raw = Vec::new();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            let so_far = if lines.is_empty() {
                String::new()
            } else {
                format!(" after {lines:?}")
            };
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed before a complete reply{so_far}"),
            ));
        }
        let line = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line);
        if !more {
            break;
        }
    }
    Reply::parse(&lines).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A message as it goes over the wire after DATA's 354: line ends made CRLF (a lone LF
/// becomes CRLF, as sendmail-style clients do), lines starting with "." get another "."
/// (RFC 5321 section 4.5.2), a final CRLF if the message lacked one, then ".\r\n".
pub fn encode_data(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 8);
    let mut at_line_start = true;
    let mut i = 0;
    while i < message.len() {
        let b = message[i];
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        match b {
            b'\r' if message.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
                at_line_start = true;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            _ => {
                out.push(b);
                at_line_start = false;
            }
        }
        i += 1;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Undoes dot-stuffing on one received DATA line: RFC 5321 section 4.5.2, "if the first
/// character is a period and there are other characters on the line, the first character is
/// deleted". The caller has already recognised the lone "." that ends the data.
pub fn unstuff_line(line: &[u8]) -> &[u8] {
    match line {
        [b'.', rest @ ..] if !rest.is_empty() => rest,
        _ => line,
    }
}

/// Standard base64 (RFC 4648, with padding), enough for AUTH PLAIN.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A blocking SMTP client that returns every reply, including refusals: only I/O failures
/// (refused connection, server hung up, timeout) are errors.
pub struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    greeting: Reply,
}

impl SmtpClient {
    /// Connects and reads the greeting.
    pub fn connect(addr: SocketAddr) -> io::Result<SmtpClient> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let greeting = read_reply(&mut reader)?;
        Ok(SmtpClient {
            reader,
            writer,
            greeting,
        })
    }

    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// Sends one command line (CRLF is added) and reads its reply.
    pub fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    pub fn ehlo(&mut self, name: &str) -> io::Result<Reply> {
        self.command(&format!("EHLO {name}"))
    }

    /// AUTH PLAIN with an initial response (RFC 4616): authzid empty, then user and password.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> io::Result<Reply> {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        self.command(&format!("AUTH PLAIN {token}"))
    }

    pub fn mail_from(&mut self, from: &str) -> io::Result<Reply> {
        self.command(&format!("MAIL FROM:<{from}>"))
    }

    pub fn rcpt_to(&mut self, to: &str) -> io::Result<Reply> {
        self.command(&format!("RCPT TO:<{to}>"))
    }

    /// DATA, then (if the server said 354) the message, dot-stuffed and terminated by
    /// `encode_data`. Returns the end-of-data reply, or DATA's own reply if it was not 354.
    pub fn data(&mut self, message: &[u8]) -> io::Result<Reply> {
        let go_ahead = self.command("DATA")?;
        if go_ahead.code != 354 {
            return Ok(go_ahead);
        }
        self.writer.write_all(&encode_data(message))?;
        self.read_reply()
    }

    /// DATA, then `raw` exactly as given (no line-end fixing, no dot-stuffing, no
    /// terminator): for tests of malformed input such as bare LF or smuggled ".\n".
    pub fn data_raw(&mut self, raw: &[u8]) -> io::Result<Reply> {
        let go_ahead = self.command("DATA")?;
        if go_ahead.code != 354 {
            return Ok(go_ahead);
        }
        self.writer.write_all(raw)?;
        self.read_reply()
    }

    pub fn rset(&mut self) -> io::Result<Reply> {
        self.command("RSET")
    }

    pub fn noop(&mut self) -> io::Result<Reply> {
        self.command("NOOP")
    }

    pub fn quit(&mut self) -> io::Result<Reply> {
        self.command("QUIT")
    }

    /// Writes bytes as they are, reading nothing.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    pub fn read_reply(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader)
    }
}

/// How `send_with` opens its session.
#[derive(Clone, Debug)]
pub struct SendOptions<'a> {
    pub helo: &'a str,
    /// AUTH PLAIN with this user and password after EHLO.
    pub auth: Option<(&'a str, &'a str)>,
    /// Declare SMTPUTF8 on MAIL (RFC 6531), for UTF-8 addresses and headers.
    pub smtputf8: bool,
}

impl Default for SendOptions<'_> {
    fn default() -> Self {
        SendOptions {
            helo: "client.example",
            auth: None,
            smtputf8: false,
        }
    }
}

/// Every reply of one `send`: `rcpts` has one entry per recipient tried, in order; `data` is
/// `None` when no recipient was accepted (DATA was not sent).
#[derive(Clone, Debug)]
pub struct Transcript {
    pub greeting: Reply,
    pub ehlo: Reply,
    pub auth: Option<Reply>,
    pub mail: Reply,
    pub rcpts: Vec<(String, Reply)>,
    pub data: Option<Reply>,
    pub quit: Option<Reply>,
}

impl Transcript {
    /// The RCPT reply for `addr`; panics (showing the transcript) if it was not tried.
    pub fn rcpt(&self, addr: &str) -> &Reply {
        match self
            .rcpts
            .iter()
            .find(|(to, _)| to.eq_ignore_ascii_case(addr))
        {
            Some((_, reply)) => reply,
            None => panic!("no RCPT TO:<{addr}> in this transcript:\n{self}"),
        }
    }

    /// The queue id from Postfix's end-of-data reply ("250 2.0.0 Ok: queued as 4Zx…").
    pub fn queue_id(&self) -> Option<&str> {
        let reply = self.data.as_ref().filter(|r| r.is_positive())?;
        let (_, id) = reply.text.split_once("queued as ")?;
        id.split_whitespace().next()
    }
}

impl fmt::Display for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "<- {}", self.greeting)?;
        writeln!(f, "-> EHLO\n<- {}", self.ehlo)?;
        if let Some(auth) = &self.auth {
            writeln!(f, "-> AUTH PLAIN\n<- {auth}")?;
        }
        writeln!(f, "-> MAIL FROM\n<- {}", self.mail)?;
        for (to, reply) in &self.rcpts {
            writeln!(f, "-> RCPT TO:<{to}>\n<- {reply}")?;
        }
        if let Some(data) = &self.data {
            writeln!(f, "-> DATA …\n<- {data}")?;
        }
        if let Some(quit) = &self.quit {
            writeln!(f, "-> QUIT\n<- {quit}")?;
        }
        Ok(())
    }
}

/// One transaction with the lab's smtpd: EHLO, MAIL, one RCPT per recipient, DATA if any
/// recipient was accepted, QUIT. Refusals are recorded, not errors; an I/O failure panics.
pub fn send(lab: &Lab, from: &str, rcpts: &[&str], message: impl AsRef<[u8]>) -> Transcript {
    send_with(lab, &SendOptions::default(), from, rcpts, message)
}

/// `send` after AUTH PLAIN as `user` (so Postfix hands `{auth_authen}` to milters).
pub fn send_authenticated(
    lab: &Lab,
    (user, password): (&str, &str),
    from: &str,
    rcpts: &[&str],
    message: impl AsRef<[u8]>,
) -> Transcript {
    let options = SendOptions {
        auth: Some((user, password)),
        ..SendOptions::default()
    };
    send_with(lab, &options, from, rcpts, message)
}

pub fn send_with(
    lab: &Lab,
    options: &SendOptions<'_>,
    from: &str,
    rcpts: &[&str],
    message: impl AsRef<[u8]>,
) -> Transcript {
    let addr = lab.smtp_addr();
    let io = |step: &str, e: io::Error| -> ! {
        panic!(
            "lab smtp client: {step} to {addr}: {e} (Postfix log: {})",
            lab.log_path().display()
        )
    };
    let mut client = SmtpClient::connect(addr).unwrap_or_else(|e| io("connect", e));
    let greeting = client.greeting().clone();
    let ehlo = client.ehlo(options.helo).unwrap_or_else(|e| io("EHLO", e));
    let auth = options.auth.map(|(user, password)| {
        client
            .auth_plain(user, password)
            .unwrap_or_else(|e| io("AUTH", e))
    });
    let mail = match options.smtputf8 {
        true => client.command(&format!("MAIL FROM:<{from}> SMTPUTF8")),
        false => client.mail_from(from),
    }
    .unwrap_or_else(|e| io("MAIL", e));
    let mut rcpt_replies = Vec::new();
    if mail.is_positive() {
        for to in rcpts {
            let reply = client.rcpt_to(to).unwrap_or_else(|e| io("RCPT", e));
            rcpt_replies.push((to.to_string(), reply));
        }
    }
    let data = if rcpt_replies.iter().any(|(_, r)| r.is_positive()) {
        Some(
            client
                .data(message.as_ref())
                .unwrap_or_else(|e| io("DATA", e)),
        )
    } else {
        None
    };
    // A server that already hung up (e.g. after a 421) has nothing more to say.
    let quit = client.quit().ok();
    Transcript {
        greeting,
        ehlo,
        auth,
        mail,
        rcpts: rcpt_replies,
        data,
        quit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn replies_parse_with_and_without_enhanced_codes() {
        let cases: &[(&[&str], u16, Option<&str>, &str)] = &[
            (&["250 2.1.5 Ok"], 250, Some("2.1.5"), "Ok"),
            (
                &["550 5.2.1 <gone@corp.example>: Recipient address rejected"],
                550,
                Some("5.2.1"),
                "<gone@corp.example>: Recipient address rejected",
            ),
            (
                &["354 End data with <CR><LF>.<CR><LF>"],
                354,
                None,
                "End data with <CR><LF>.<CR><LF>",
            ),
            (
                &["220 lab.example ESMTP Postfix"],
                220,
                None,
                "lab.example ESMTP Postfix",
            ),
            (&["250"], 250, None, ""),
            (&["250 2.0.0"], 250, Some("2.0.0"), ""),
            // The class must repeat the code's first digit, otherwise it is text.
            (&["250 5.1.1 odd"], 250, None, "5.1.1 odd"),
            (&["421 4.3.2 a.b.c x"], 421, Some("4.3.2"), "a.b.c x"),
            (
                &["250-lab.example", "250-PIPELINING", "250 8BITMIME"],
                250,
                None,
                "lab.example\nPIPELINING\n8BITMIME",
            ),
            (
                &["535-5.7.8 bad", "535 5.7.8 credentials"],
                535,
                Some("5.7.8"),
                "bad\ncredentials",
            ),
        ];
        for (input, code, enhanced, text) in cases {
            let reply = Reply::parse(&lines(input)).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(reply.code, *code, "{input:?}");
            assert_eq!(reply.enhanced.as_deref(), *enhanced, "{input:?}");
            assert_eq!(reply.text, *text, "{input:?}");
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cases: &[&[&str]] = &[
            &[],
            &["25"],
            &["abc text"],
            &["250-more", "251 mismatched code"],
            &["250-last line must not continue"],
            &["250 first", "250 not last"],
            &["250x"],
        ];
        for input in cases {
            assert!(Reply::parse(&lines(input)).is_err(), "{input:?} parsed");
        }
    }

    #[test]
    fn read_reply_reads_one_multiline_reply_and_stops() {
        let mut wire: &[u8] = b"250-a\r\n250 b\r\n221 bye\r\n";
        assert_eq!(read_reply(&mut wire).unwrap().text, "a\nb");
        assert_eq!(read_reply(&mut wire).unwrap().code, 221);
        let err = read_reply(&mut wire).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn data_is_dot_stuffed_crlf_terminated_and_unstuffs_back() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
            (b"a\nb", b"a\r\nb\r\n.\r\n"),
            (b".\n..x\n", b"..\r\n...x\r\n.\r\n"),
            (b"x\r\n.y\r\n", b"x\r\n..y\r\n.\r\n"),
            (b"", b".\r\n"),
            // A CR not followed by LF is content, and the next byte does not start a line.
            (b"a\rb.\r\n", b"a\rb.\r\n.\r\n"),
        ];
        for (message, wire) in cases {
            let encoded = encode_data(message);
            assert_eq!(encoded, *wire, "{:?}", String::from_utf8_lossy(message));
            let unstuffed: Vec<u8> = encoded
                .split_inclusive(|&b| b == b'\n')
                .take_while(|line| *line != b".\r\n")
                .flat_map(|line| unstuff_line(line).to_vec())
                .collect();
            let normalized = String::from_utf8_lossy(message).replace("\r\n", "\n");
            let normalized = normalized.replace('\n', "\r\n");
            let expected = if normalized.is_empty() || normalized.ends_with("\r\n") {
                normalized
            } else {
                normalized + "\r\n"
            };
            assert_eq!(String::from_utf8_lossy(&unstuffed), expected);
        }
    }

    #[test]
    fn base64_matches_rfc_4648_vectors_and_auth_plain() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            // What swaks sends for AUTH PLAIN user2@corp.example / secret.
            (
                "\0user2@corp.example\0secret",
                "AHVzZXIyQGNvcnAuZXhhbXBsZQBzZWNyZXQ=",
            ),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), *encoded, "{plain:?}");
        }
    }
}
