//! Splitting an mbox file into messages, sans-IO: lines in, message boundaries and message
//! bytes out. The reading is done by [`super::source`].
//!
//! An mbox is messages each introduced by a `From ` line (the "From_" line: `From sender
//! asctime-date`), with a body line that starts with `From ` quoted as `>From ` (RFC 4155).
//! The two common variants differ in the quoting: mboxo quotes only `From `, so a body line
//! `>From ` cannot be told from a quoted one and is left as written; mboxrd quotes every
//! `>*From ` with one more `>`, so one `>` is taken off again and the message comes back
//! byte for byte. Lines end in LF or CRLF; either is kept as the file has it.
//!
//! Writers do not always quote (a hand-built mbox, a broken client): a body line `From here on…`
//! must not cut a message in two. A line starts a message only when it is the first line of the
//! file or follows an empty line, and reads as a From_ line: a sender, then a date with a month
//! name, a time and a year. The empty line before a From_ line is the separator, not part of the
//! message before it.

use std::borrow::Cow;

/// How body lines that start with `From ` were quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quoting {
    /// `>From `, `>>From `, … lose one `>` (the message comes back as it was).
    Mboxrd,
    /// Lines are kept as written (`>From ` may have been `From ` or `>From `).
    Mboxo,
}

/// How much of a line the splitter must see at once to tell a From_ line (RFC 5322 lines are
/// at most 998 bytes; a From_ line is far shorter).
pub const LOOK: usize = 1000;

/// What a piece of the file is, as [`Splitter::line`] tells it.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A From_ line: a new message starts after it (the one before, if any, has ended).
    Start,
    /// Bytes of the current message (a line, a held-back empty line, or part of a long line).
    Bytes(Cow<'a, [u8]>),
    /// Bytes before the first From_ line: not in any message.
    Outside,
}

/// The splitter's state between lines.
#[derive(Debug)]
pub struct Splitter {
    quoting: Quoting,
    /// The next piece starts a line (the last one ended with LF).
    at_line_start: bool,
    /// The previous line was empty, or nothing has been read yet.
    after_empty: bool,
    /// An empty line held back: the separator if a From_ line follows, else message bytes.
    held: Option<&'static [u8]>,
    in_message: bool,
}

impl Splitter {
    pub fn new(quoting: Quoting) -> Splitter {
        Splitter {
            quoting,
            at_line_start: true,
            after_empty: true,
            held: None,
            in_message: false,
        }
    }

    /// Takes the next piece of the file: a whole line with its LF, or a part of a long line.
    /// The reader may cut a long line anywhere after its first [`LOOK`] bytes: only a piece
    /// that starts a line is looked at, and a From_ line is shorter.
    /// Returns what the piece is, preceded by a held-back empty line when that turned out to
    /// be the message's own.
    pub fn line<'a>(&mut self, piece: &'a [u8]) -> (Option<Piece<'static>>, Piece<'a>) {
        let starts_line = self.at_line_start;
        self.at_line_start = piece.ends_with(b"\n");
        if !starts_line {
            self.after_empty = false;
            return (self.release(), self.bytes(Cow::Borrowed(piece)));
        }
        if self.after_empty && is_from_line(piece) {
            // The held empty line was the separator.
            self.held = None;
            self.after_empty = false;
            self.in_message = true;
            return (None, Piece::Start);
        }
        let empty = piece == b"\n" || piece == b"\r\n";
        let released = self.release();
        self.after_empty = empty;
        if empty && self.in_message {
            self.held = Some(if piece == b"\n" { b"\n" } else { b"\r\n" });
            return (released, Piece::Bytes(Cow::Borrowed(b"")));
        }
        let out = match self.quoting {
            Quoting::Mboxrd => unquote(piece),
            Quoting::Mboxo => Cow::Borrowed(piece),
        };
        (released, self.bytes(out))
    }

    /// The end of the file: a held empty line is the last message's separator.
    pub fn finish(&mut self) {
        self.held = None;
    }

    fn release(&mut self) -> Option<Piece<'static>> {
        self.held.take().map(|b| Piece::Bytes(Cow::Borrowed(b)))
    }

    fn bytes<'a>(&self, b: Cow<'a, [u8]>) -> Piece<'a> {
        match self.in_message {
            true => Piece::Bytes(b),
            false => Piece::Outside,
        }
    }
}

/// `>From ` → `From `, `>>From ` → `>From `: mboxrd's quoting taken off once.
fn unquote(line: &[u8]) -> Cow<'_, [u8]> {
    let quotes = line.iter().take_while(|&&b| b == b'>').count();
    match quotes > 0 && line[quotes..].starts_with(b"From ") {
        true => Cow::Borrowed(&line[1..]),
        false => Cow::Borrowed(line),
    }
}

/// Whether `line` reads as a From_ line: `From `, a sender, then a month name, a time
/// (`hh:mm`) and a four-digit year among the words after it (asctime, as RFC 4155 has it, and
/// the variants writers use: a zone, a comma, the year before the time).
pub fn is_from_line(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"From ") else {
        return false;
    };
    let mut words = rest
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    if words.next().is_none() {
        return false;
    }
    const MONTHS: [&[u8]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let (mut month, mut time, mut year) = (false, false, false);
    for w in words {
        let w = w.strip_suffix(b",").unwrap_or(w);
        month |= w.len() == 3 && MONTHS.iter().any(|m| w.eq_ignore_ascii_case(m));
        time |= w.len() >= 4
            && w.len() <= 8
            && w.contains(&b':')
            && w.iter().all(|b| b.is_ascii_digit() || *b == b':')
            && w.first().is_some_and(u8::is_ascii_digit);
        year |= w.len() == 4 && w.iter().all(u8::is_ascii_digit) && (w[0] == b'1' || w[0] == b'2');
    }
    month && time && year
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `file` fed in pieces of at most `chunk` bytes (lines cut where the reader cuts
    /// them): the messages' bytes.
    fn split(file: &[u8], quoting: Quoting, chunk: usize) -> Vec<Vec<u8>> {
        let mut s = Splitter::new(quoting);
        let mut out: Vec<Vec<u8>> = Vec::new();
        for line in file.split_inclusive(|&b| b == b'\n') {
            for piece in line.chunks(chunk) {
                let (held, now) = s.line(piece);
                for p in held.into_iter().chain([now]) {
                    match p {
                        Piece::Start => out.push(Vec::new()),
                        Piece::Bytes(b) => out.last_mut().unwrap().extend_from_slice(&b),
                        Piece::Outside => {}
                    }
                }
            }
        }
        s.finish();
        out
    }

    const FROM: &str = "From alice@example.net Thu Mar  5 10:00:00 2026";

    #[test]
    fn messages_come_back_byte_for_byte_with_lf_or_crlf_at_any_cut() {
        for eol in ["\n", "\r\n"] {
            let long = "x".repeat(3000);
            let m1 = format!("Subject: one{eol}{eol}hello {long}{eol}{eol}>From the start{eol}");
            let m2 = format!("Subject: two{eol}{eol}From here on, no date{eol}bye{eol}");
            let rd1 = m1.replace(">From", ">>From");
            let file = format!("{FROM}{eol}{rd1}{eol}{FROM}{eol}{m2}{eol}");
            for chunk in [LOOK, LOOK + 1, 1500, 64 * 1024] {
                let got = split(file.as_bytes(), Quoting::Mboxrd, chunk);
                assert_eq!(
                    got,
                    [m1.as_bytes(), m2.as_bytes()],
                    "eol {eol:?} chunk {chunk}"
                );
            }
            // mboxo: quoting is kept.
            let got = split(file.as_bytes(), Quoting::Mboxo, 4096);
            assert_eq!(got, [rd1.as_bytes(), m2.as_bytes()], "mboxo {eol:?}");
        }
    }

    #[test]
    fn a_from_line_in_a_body_does_not_start_a_message() {
        // Unquoted, and even after an empty line: it has no date, so it is the body's.
        let file = format!(
            "{FROM}\nSubject: a\n\nFrom me to you\n\nFrom the desk of the CEO, on Monday\nend\n"
        );
        let got = split(file.as_bytes(), Quoting::Mboxrd, 4096);
        assert_eq!(got.len(), 1);
        assert!(got[0].ends_with(b"From the desk of the CEO, on Monday\nend\n"));
        // Not after an empty line: never a start, whatever it looks like.
        let file = format!("{FROM}\nSubject: a\n\nline\n{FROM}\n");
        assert_eq!(split(file.as_bytes(), Quoting::Mboxrd, 4096).len(), 1);
    }

    #[test]
    fn from_lines_in_their_variants() {
        for yes in [
            "From a@b Thu Mar  5 10:00:00 2026\n",
            "From a@b Thu Mar 5 10:00 2026\r\n",
            "From MAILER-DAEMON Fri Jan 02 03:04:05 +0000 2015\n",
            "From a@b Thu, 05 Mar 2026 10:00:00 +0100\n",
            "From - Sat Dec 05 00:00:00 2026\n",
        ] {
            assert!(is_from_line(yes.as_bytes()), "{yes}");
        }
        for no in [
            "From the desk of the CEO\n",
            "From: a@b Thu Mar 5 10:00:00 2026\n",
            "From \n",
            ">From a@b Thu Mar  5 10:00:00 2026\n",
            "From a@b on 10:00 2026\n",
        ] {
            assert!(!is_from_line(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn bytes_before_the_first_from_line_are_in_no_message() {
        let file = format!("garbage\n\n{FROM}\nSubject: x\n\nb\n");
        assert_eq!(
            split(file.as_bytes(), Quoting::Mboxrd, 4096),
            [b"Subject: x\n\nb\n".to_vec()]
        );
    }
}
