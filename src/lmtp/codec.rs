//! SMTP/LMTP framing, sans-IO: bytes in, command lines and message content out; replies in,
//! bytes out. No tokio, no sockets, no policy.
//!
//! Two modes, switched by the session:
//! - **commands**: one line at a time, ended by LF (CRLF expected, LF tolerated as Postfix's
//!   smtpd does for commands). A line longer than [`Limits::command_line`] is skipped up to its
//!   end and reported as [`Frame::CommandTooLong`] (RFC 5321 section 4.5.3.1.4; `500 5.5.6`).
//! - **message content** after `354`: the content ends only at `CRLF . CRLF` (RFC 5321 section
//!   4.1.1.4). Dot-stuffing is undone. A bare LF or a bare CR anywhere in the content is a flaw
//!   ([`DataFlaw::BareLineEnd`]): it never ends the content, never counts as a line end for
//!   the end-of-data sequence, and the message is refused at the end, so nothing after it is
//!   handed on (this is what defeats SMTP smuggling: a next hop that would read `\n.\n` as the
//!   end of data never sees it). A NUL is a flaw the same way ([`DataFlaw::Nul`]): a next hop
//!   that drops NULs would read `CRLF NUL . CRLF` as the end. Content lines longer than
//!   [`Limits::text_line`] and messages
//!   over [`Limits::message_size`] are flaws too; content stops being produced at the first
//!   flaw, but the stream is still read to its real end so the session stays in step.

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Octets in a command line, CRLF included. RFC 5321 section 4.5.3.1.4 sets 512, plus 500
    /// per ESMTP extension in use (RFC 1869); Postfix's smtpd allows `line_length_limit` (2048).
    pub command_line: usize,
    /// Octets in a line of message content, CRLF included, after dot-unstuffing: 1000 (RFC 5321
    /// section 4.5.3.1.6). Postfix's smtp(8) and lmtp(8) break longer lines at
    /// `smtp_line_length_limit` (998 + CRLF) before sending, so a sane client never reaches it.
    pub text_line: usize,
    /// Octets of message content (dot-unstuffed, CRLF line ends).
    pub message_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            command_line: 2048,
            text_line: 1000,
            message_size: 64 * 1024 * 1024,
        }
    }
}

/// What the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One command line, its line end included.
    Command(Vec<u8>),
    /// A command line over the limit (skipped to its end).
    CommandTooLong,
    /// Message content, dot-unstuffed, lines ended by CRLF.
    Data(Vec<u8>),
    /// The end of the message content; the decoder is back in command mode.
    DataEnd(DataEnd),
}

/// How message content ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataEnd {
    /// Content octets seen (dot-unstuffed, counted up to the first flaw).
    pub size: u64,
    /// The first flaw, if any: the message must then be refused.
    pub flaw: Option<DataFlaw>,
}

/// Why message content cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFlaw {
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineEnd,
    /// A NUL octet (RFC 5321 section 4.1.1.4 and RFC 5322 section 2.1 allow none).
    Nul,
    /// A content line over [`Limits::text_line`].
    LineTooLong,
    /// More than [`Limits::message_size`] octets.
    TooBig,
}

/// The stream decoder. Feed it bytes as they arrive; take frames until `None`.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    input: Vec<u8>,
    pos: usize,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Command {
        /// Inside a command line that is over the limit: discard up to its LF.
        skipping: bool,
    },
    Data(DataState),
    /// The content ended; `DataEnd` is the next frame.
    Ended(DataEnd),
}

#[derive(Debug, Default)]
struct DataState {
    /// The line being assembled (raw, still stuffed), up to its LF.
    line: Vec<u8>,
    /// The previous line ended with CRLF (or the content just began): only then can a line
    /// of `.` end the content, and only then is a leading dot a stuffing dot.
    at_line_start: bool,
    /// The current line went over the limit; only its last byte is kept.
    long_line: bool,
    size: u64,
    flaw: Option<DataFlaw>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            input: Vec::new(),
            pos: 0,
            mode: Mode::Command { skipping: false },
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Switches to message content (after the session answered DATA with 354).
    pub fn start_data(&mut self) {
        self.mode = Mode::Data(DataState {
            at_line_start: true,
            ..DataState::default()
        });
    }

    /// Whether the decoder is inside message content.
    pub fn in_data(&self) -> bool {
        !matches!(self.mode, Mode::Command { .. })
    }

    /// Bytes received and not yet framed.
    pub fn pending(&self) -> usize {
        self.input.len() - self.pos
    }

    /// The next frame, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        match &mut self.mode {
            Mode::Command { skipping } => {
                let rest = &self.input[self.pos..];
                match rest.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        let line = &rest[..=nl];
                        self.pos += nl + 1;
                        if std::mem::take(skipping) || line.len() > self.limits.command_line {
                            Some(Frame::CommandTooLong)
                        } else {
                            Some(Frame::Command(line.to_vec()))
                        }
                    }
                    None => {
                        if *skipping || rest.len() > self.limits.command_line {
                            *skipping = true;
                            self.pos = self.input.len();
                        }
                        None
                    }
                }
            }
            Mode::Ended(end) => {
                let end = *end;
                self.mode = Mode::Command { skipping: false };
                Some(Frame::DataEnd(end))
            }
            Mode::Data(state) => {
                let mut out = Vec::new();
                let ended = state.decode(&self.input, &mut self.pos, &self.limits, &mut out);
                if let Some(end) = ended {
                    self.mode = Mode::Ended(end);
                    if out.is_empty() {
                        return self.next_frame();
                    }
                }
                (!out.is_empty()).then_some(Frame::Data(out))
            }
        }
    }
}

impl DataState {
    /// Decodes the complete lines in `input[*pos..]` into `out`; `Some` at the end of data.
    fn decode(
        &mut self,
        input: &[u8],
        pos: &mut usize,
        limits: &Limits,
        out: &mut Vec<u8>,
    ) -> Option<DataEnd> {
        loop {
            let rest = &input[*pos..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                self.append(rest, limits);
                *pos = input.len();
                return None;
            };
            self.append(&rest[..=nl], limits);
            *pos += nl + 1;
            if let Some(end) = self.line_done(limits, out) {
                return Some(end);
            }
        }
    }

    fn append(&mut self, bytes: &[u8], limits: &Limits) {
        // Checked here, before a long line is cut: a NUL anywhere is a flaw. The first flaw is
        // the one whose byte comes first, however the stream was split: the part before the
        // NUL may already make the line too long.
        match bytes.iter().position(|&b| b == 0) {
            Some(nul) => {
                self.extend(&bytes[..nul], limits);
                self.flaw.get_or_insert(DataFlaw::Nul);
                self.extend(&bytes[nul..], limits);
            }
            None => self.extend(bytes, limits),
        }
    }

    fn extend(&mut self, bytes: &[u8], limits: &Limits) {
        self.line.extend_from_slice(bytes);
        // The stuffing dot does not count against the line limit.
        let stuffed = usize::from(self.at_line_start && self.line.first() == Some(&b'.'));
        if self.line.len() > limits.text_line + stuffed {
            self.long_line = true;
            self.flaw.get_or_insert(DataFlaw::LineTooLong);
            // Keep the last two bytes: enough to tell whether the line ends with CRLF.
            let keep = self.line.len().saturating_sub(2);
            self.line.drain(..keep);
        }
    }

    /// Handles the line in `self.line` (it ends with LF).
    fn line_done(&mut self, limits: &Limits, out: &mut Vec<u8>) -> Option<DataEnd> {
        let line = std::mem::take(&mut self.line);
        let proper = line.ends_with(b"\r\n");
        let content = &line[..line.len() - if proper { 2 } else { 1 }];
        let long = std::mem::take(&mut self.long_line);
        let at_start = self.at_line_start;
        self.at_line_start = proper;
        if at_start && proper && !long && content == b"." {
            return Some(DataEnd {
                size: self.size,
                flaw: self.flaw,
            });
        }
        if !proper || (!long && content.contains(&b'\r')) {
            self.flaw.get_or_insert(DataFlaw::BareLineEnd);
        }
        if self.flaw.is_some() {
            return None;
        }
        let content = match (at_start, content.first()) {
            (true, Some(b'.')) => &content[1..],
            _ => content,
        };
        self.size += content.len() as u64 + 2;
        if self.size > limits.message_size {
            self.flaw = Some(DataFlaw::TooBig);
            return None;
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
        self.line = line;
        self.line.clear();
        None
    }
}

/// One reply: a code and one or more lines of text (the enhanced status code, when there is
/// one, starts the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    pub fn multi(code: u16, lines: Vec<String>) -> Reply {
        Reply { code, lines }
    }

    /// The text of the first line.
    pub fn text(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Appends the reply on the wire: `code-text` for every line but the last, `code text` for
    /// the last (RFC 5321 section 4.2.1). Control characters in the text become spaces, so a
    /// reply can never end early or inject a line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map_or("", String::as_str);
            let sep = if i + 1 < n { '-' } else { ' ' };
            out.extend_from_slice(format!("{:03}{sep}", self.code).as_bytes());
            out.extend(
                text.bytes()
                    .map(|b| if b.is_ascii_control() { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in chunks of `chunk` bytes and collects every frame, with adjacent data
    /// frames joined (their boundaries depend on the chunking, their content must not).
    fn frames(stream: &[u8], chunk: usize, data_after: &[&[u8]], limits: Limits) -> Vec<Frame> {
        let mut d = Decoder::new(limits);
        let mut out: Vec<Frame> = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            d.feed(piece);
            while let Some(f) = d.next_frame() {
                if let Frame::Command(line) = &f
                    && data_after.contains(&line.as_slice())
                {
                    d.start_data();
                }
                match (out.last_mut(), f) {
                    (Some(Frame::Data(prev)), Frame::Data(more)) => prev.extend(more),
                    (_, f) => out.push(f),
                }
            }
        }
        out
    }

    /// The frames for `stream` at every chunk size from 1 to its length: all must agree.
    fn at_every_chunk_size(stream: &[u8], limits: Limits) -> Vec<Frame> {
        let whole = frames(stream, stream.len(), &[b"DATA\r\n"], limits);
        for chunk in 1..stream.len() {
            assert_eq!(
                frames(stream, chunk, &[b"DATA\r\n"], limits),
                whole,
                "chunk size {chunk} disagrees for {:?}",
                String::from_utf8_lossy(stream)
            );
        }
        whole
    }

    fn cmd(s: &str) -> Frame {
        Frame::Command(s.as_bytes().to_vec())
    }

    fn data(s: &str) -> Frame {
        Frame::Data(s.as_bytes().to_vec())
    }

    fn end(size: u64, flaw: Option<DataFlaw>) -> Frame {
        Frame::DataEnd(DataEnd { size, flaw })
    }

    #[test]
    fn commands_and_content_frame_alike_at_every_chunk_size() {
        let stream = b"LHLO mx\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n";
        assert_eq!(
            at_every_chunk_size(stream, Limits::default()),
            [
                cmd("LHLO mx\r\n"),
                cmd("MAIL FROM:<a@b>\r\n"),
                cmd("RCPT TO:<c@d>\r\n"),
                cmd("DATA\r\n"),
                data("Subject: x\r\n\r\n.dot\r\nbody\r\n"),
                end(26, None),
                cmd("QUIT\r\n"),
            ]
        );
    }

    #[test]
    fn empty_content_and_lone_dots() {
        let cases: &[(&[u8], Vec<Frame>)] = &[
            (b"DATA\r\n.\r\n", vec![cmd("DATA\r\n"), end(0, None)]),
            (
                b"DATA\r\n..\r\n.\r\n",
                vec![cmd("DATA\r\n"), data(".\r\n"), end(3, None)],
            ),
            (
                b"DATA\r\n.x\r\n...\r\n.\r\n",
                vec![cmd("DATA\r\n"), data("x\r\n..\r\n"), end(7, None)],
            ),
            (
                b"DATA\r\na.\r\n.\r\n",
                vec![cmd("DATA\r\n"), data("a.\r\n"), end(4, None)],
            ),
        ];
        for (stream, want) in cases {
            assert_eq!(
                &at_every_chunk_size(stream, Limits::default()),
                want,
                "{:?}",
                String::from_utf8_lossy(stream)
            );
        }
    }

    #[test]
    fn a_command_line_over_the_limit_is_skipped_to_its_end() {
        let limits = Limits {
            command_line: 16,
            ..Limits::default()
        };
        let stream = b"NOOP 0123456789abcdef\r\nNOOP\r\nNOOP 0123456789abcdefghij";
        assert_eq!(
            at_every_chunk_size(stream, limits),
            [Frame::CommandTooLong, cmd("NOOP\r\n")]
        );
        // Exactly at the limit is fine.
        assert_eq!(
            at_every_chunk_size(b"NOOP 123456789\r\n", limits),
            [cmd("NOOP 123456789\r\n")]
        );
    }

    /// A NUL and a too-long line in one message: the flaw reported is the one whose byte comes
    /// first, at every chunk size (a NUL past the limit used to win when it arrived in the same
    /// chunk as the bytes that made the line too long).
    #[test]
    fn the_first_flaw_in_the_stream_wins_whatever_the_chunking() {
        let limits = Limits {
            text_line: 8,
            ..Limits::default()
        };
        assert_eq!(
            at_every_chunk_size(b"DATA\r\nok\r\n1234567890\x00\r\n.\r\n", limits),
            [
                cmd("DATA\r\n"),
                data("ok\r\n"),
                end(4, Some(DataFlaw::LineTooLong))
            ]
        );
        assert_eq!(
            at_every_chunk_size(b"DATA\r\nok\r\n12\x0034567890\r\n.\r\n", limits),
            [cmd("DATA\r\n"), data("ok\r\n"), end(4, Some(DataFlaw::Nul))]
        );
    }

    #[test]
    fn content_limits() {
        let limits = Limits {
            text_line: 8,
            message_size: 20,
            ..Limits::default()
        };
        // 6 octets + CRLF is within 8; a stuffing dot does not count.
        assert_eq!(
            at_every_chunk_size(b"DATA\r\n123456\r\n.123456\r\n.\r\n", limits),
            [cmd("DATA\r\n"), data("123456\r\n123456\r\n"), end(16, None)]
        );
        assert_eq!(
            at_every_chunk_size(b"DATA\r\nok\r\n1234567890\r\n.\r\nNOOP\r\n", limits),
            [
                cmd("DATA\r\n"),
                data("ok\r\n"),
                end(4, Some(DataFlaw::LineTooLong)),
                cmd("NOOP\r\n")
            ]
        );
        // A long line that ends in CRLF followed by "." still ends the data.
        assert_eq!(
            at_every_chunk_size(b"DATA\r\n0123456789012.\r\n.\r\n", limits),
            [cmd("DATA\r\n"), end(0, Some(DataFlaw::LineTooLong))]
        );
        assert_eq!(
            at_every_chunk_size(b"DATA\r\n12345\r\n12345\r\n12345\r\n.\r\nNOOP\r\n", limits),
            [
                cmd("DATA\r\n"),
                data("12345\r\n12345\r\n"),
                end(21, Some(DataFlaw::TooBig)),
                cmd("NOOP\r\n")
            ]
        );
    }

    /// End-of-data look-alikes from the SMTP smuggling research (SEC Consult, December 2023,
    /// and the Postfix advisory on smtpd_forbid_bare_newline): none of them may end the
    /// content, and none may reach a next hop as a line end. The real end comes after each.
    #[test]
    fn smuggling_sequences_never_end_the_data_nor_pass_as_line_ends() {
        let variants: &[&[u8]] = &[
            b"\n.\n",
            b"\r.\r",
            b"\r\n.\n",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\n..\n",
            b"\r\n\x00.\r\n",
            b"\r\n.\x00\r\n",
            b"\n.\r",
            b"\r.\n",
            b"\r\n .\r\n",
            b"\r\r\n.\r\r\n",
            b"\r\n.\r\r\n",
            b"\n\n.\n\n",
        ];
        for v in variants {
            let mut stream = b"DATA\r\nSubject: s\r\n\r\nbefore".to_vec();
            stream.extend_from_slice(v);
            stream.extend_from_slice(
                b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n",
            );
            let got = at_every_chunk_size(&stream, Limits::default());
            let shown = String::from_utf8_lossy(v).escape_debug().to_string();
            // DATA, possibly content, exactly one end, then the NOOP: the smuggled MAIL, RCPT
            // and DATA were content, not commands.
            let ends: Vec<&Frame> = got
                .iter()
                .filter(|f| matches!(f, Frame::DataEnd(_)))
                .collect();
            assert_eq!(ends.len(), 1, "{shown}: {got:?}");
            assert_eq!(got.first(), Some(&cmd("DATA\r\n")), "{shown}");
            assert_eq!(got.last(), Some(&cmd("NOOP\r\n")), "{shown}: {got:?}");
            assert!(
                !got.iter().any(|f| f == &cmd("MAIL FROM:<evil@x>\r\n")),
                "{shown} smuggled a command"
            );
            let Frame::DataEnd(end) = ends[0] else {
                unreachable!()
            };
            // Variants without a bare CR or LF are not flawed but still do not end the data.
            let bare = v.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n')
                || v.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r')
                || v.first() == Some(&b'\n')
                || v.last() == Some(&b'\r');
            if bare {
                assert_eq!(end.flaw, Some(DataFlaw::BareLineEnd), "{shown}");
            }
            // Whatever content was produced has only CRLF line ends.
            for f in &got {
                if let Frame::Data(bytes) = f {
                    for (i, b) in bytes.iter().enumerate() {
                        match b {
                            b'\r' => assert_eq!(bytes.get(i + 1), Some(&b'\n'), "{shown}"),
                            b'\n' => assert_eq!(bytes[i - 1], b'\r', "{shown}"),
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_bare_lf_line_before_a_real_end_is_not_a_line_start() {
        // "\n.\r\n" must not end: the "." follows a bare LF, not a CRLF.
        let got = at_every_chunk_size(b"DATA\r\na\n.\r\nb\r\n.\r\n", Limits::default());
        assert_eq!(got, [cmd("DATA\r\n"), end(0, Some(DataFlaw::BareLineEnd))]);
    }

    #[test]
    fn replies_encode_single_and_multi_line_and_never_inject_lines() {
        let mut out = Vec::new();
        Reply::new(250, "2.1.0 Ok").encode(&mut out);
        Reply::multi(
            250,
            vec!["mx".into(), "PIPELINING".into(), "SIZE 10".into()],
        )
        .encode(&mut out);
        Reply::new(550, "5.1.1 <a@b>:\r\n250 evil").encode(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "250 2.1.0 Ok\r\n250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n550 5.1.1 <a@b>:  250 evil\r\n"
        );
    }
}
