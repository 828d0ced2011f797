//! Framing: splits the byte stream into frames and hands them to [`Command`] or [`Reply`] to
//! parse, with the length cap checked before any payload is buffered.

use super::commands::Command;
use super::error::CodecError;
use super::fields::LEN_BYTES;
use super::replies::Reply;

/// The largest frame [`FrameDecoder`] accepts, counted as the length field counts it (code byte
/// plus payload): 1 MiB.
///
/// Postfix's largest frames are a header (up to `header_size_limit`, 102400 bytes by default,
/// Postfix `mail_params.h`) and body chunks of 65535 bytes (`MILTER_CHUNK_SIZE`, Postfix
/// `milter8.c`), so the 64 KiB libmilter default would cut off long headers. 1 MiB leaves room for
/// a raised `header_size_limit`, and it is libmilter's own largest negotiable data size
/// (`MILTER_MDS_1M`, 1 MiB - 1 payload bytes plus the code byte, libmilter `mfdef.h`), so no
/// libmilter peer sends more. It also bounds what one hostile connection can make us buffer.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// What [`FrameDecoder`] made of the buffered bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// One whole, valid frame; it has been consumed.
    Frame(T),
    /// Not a whole frame yet: feed more bytes and ask again.
    Incomplete,
    /// The next frame declares `declared` bytes, more than [`MAX_FRAME_LEN`]. Nothing was
    /// consumed or allocated; the caller must drop the connection, since the stream cannot be
    /// resynchronised without reading the oversized payload.
    TooLarge { declared: usize },
}

/// Splits a byte stream into frames; see the [codec docs](super).
///
/// Feed it what the transport read, then call the `decode_*` method for your side until it
/// returns [`Decoded::Incomplete`]. Used that way, it never holds more than one frame (at most
/// [`MAX_FRAME_LEN`] + 4 bytes) plus one read.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Bytes fed and not yet consumed start at `start`; everything before it is spent.
    buf: Vec<u8>,
    start: usize,
}

/// How far [`FrameDecoder::read_buffer`] reserves ahead for a frame in progress: a whole body
/// chunk as Postfix sends it (65535 bytes, `MILTER_CHUNK_SIZE`, Postfix `milter8.c`) with its
/// length field and code byte.
pub const READ_AHEAD: usize = 65535 + 5;

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the transport.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer itself, for a transport that reads straight into it instead of reading into a
    /// buffer of its own and calling [`FrameDecoder::feed`]: that saves a copy of every byte and
    /// a read buffer per connection. Only append to it (tokio's `read_buf` does): the bytes
    /// already in it are frames not yet decoded.
    ///
    /// At least `min` bytes of spare capacity are reserved, and as much as the frame in progress
    /// still needs, up to [`READ_AHEAD`], so that a large frame arrives in few reads. The
    /// reservation never follows a length field further than that: memory still grows only by
    /// what the peer actually sent.
    pub fn read_buffer(&mut self, min: usize) -> &mut Vec<u8> {
        self.compact();
        let pending = &self.buf[self.start..];
        let needed = pending.first_chunk::<LEN_BYTES>().map_or(0, |len| {
            let declared = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
            declared
                .saturating_add(LEN_BYTES)
                .saturating_sub(pending.len())
        });
        self.buf.reserve(needed.min(READ_AHEAD).max(min));
        &mut self.buf
    }

    /// How many fed bytes are not consumed yet; non-zero at EOF means a frame was cut off.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Decodes the next command (the filter's side).
    pub fn decode_command(&mut self) -> Result<Decoded<Command>, CodecError> {
        self.decode(Command::parse)
    }

    /// Decodes the next reply (the MTA's side, for tests and fakes).
    pub fn decode_reply(&mut self) -> Result<Decoded<Reply>, CodecError> {
        self.decode(Reply::parse)
    }

    fn decode<T>(
        &mut self,
        parse: fn(u8, &[u8]) -> Result<T, CodecError>,
    ) -> Result<Decoded<T>, CodecError> {
        let pending = &self.buf[self.start..];
        let Some(len_field) = pending.first_chunk::<LEN_BYTES>() else {
            return Ok(Decoded::Incomplete);
        };
        // Saturating: on a target where usize is narrower than u32, any such length is too
        // large anyway.
        let declared = usize::try_from(u32::from_be_bytes(*len_field)).unwrap_or(usize::MAX);
        if declared == 0 {
            self.consume(LEN_BYTES);
            return Err(CodecError::ZeroLength);
        }
        // Checked before waiting for the payload, so a hostile length costs nothing: the buffer
        // only ever grows by what was actually fed.
        if declared > MAX_FRAME_LEN {
            return Ok(Decoded::TooLarge { declared });
        }
        let Some(frame) = pending.get(LEN_BYTES..LEN_BYTES + declared) else {
            return Ok(Decoded::Incomplete);
        };
        let (&byte, payload) = frame
            .split_first()
            .expect("declared >= 1 was checked above, so the frame has a code byte");
        let parsed = parse(byte, payload);
        self.consume(LEN_BYTES + declared);
        parsed.map(Decoded::Frame)
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            // The common case, free: everything fed has been decoded.
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Drops spent bytes before new ones are appended, but only once at least as many bytes are
    /// spent as are still pending. Each move then costs no more than the bytes consumed since the
    /// last one, so compaction stays amortised O(1) per byte, even when many small frames sit in
    /// front of a large partial one.
    fn compact(&mut self) {
        let pending = self.buf.len() - self.start;
        if self.start > 0 && self.start >= pending {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(pending);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milter::codec::testing::*;
    use crate::milter::codec::{Actions, Family, Protocol};
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// A Postfix smtpd session as milter8.c sends it, built by hand, and the commands it holds.
    fn postfix_session() -> (Vec<u8>, Vec<Command>) {
        // 64-byte lines, so the first chunk of exactly MILTER_CHUNK_SIZE (65535) bytes ends
        // between a CR and its LF: Postfix's chunks are not line-aligned.
        let line = format!("{:<62}\r\n", "The quarterly numbers are attached.");
        let body = line.repeat(1100).into_bytes();
        let (chunk1, chunk2) = body.split_at(65_535);
        let (chunk1, chunk2) = (chunk1.to_vec(), chunk2.to_vec());
        assert_eq!(
            (chunk1.last(), chunk2.first()),
            (Some(&b'\r'), Some(&b'\n'))
        );
        assert_eq!(chunk1.len(), 65_535);

        let latin1_value: &[u8] = b"caf\xe9 cr\xe8me";
        let folded_value: &[u8] = b"Quarterly report\n\tfor Q3";
        let connect_macros = [
            ("j", "mx.example.org"),
            ("{daemon_name}", "smtpd"),
            ("{daemon_addr}", "192.0.2.1"),
            ("v", "Postfix 3.8.6"),
            ("_", "mail.example.net [198.51.100.7]"),
        ];

        let mut s = Vec::new();
        let mut want = Vec::new();
        let mut both = |bytes: Vec<u8>, command: Command| {
            s.extend(bytes);
            want.push(command);
        };
        both(
            raw(b'O', b"\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff"),
            Command::OptNeg {
                version: 6,
                actions: Actions::from_bits(0x1FF),
                protocol: Protocol::from_bits(0x1F_FFFF),
            },
        );
        both(
            raw(b'D', &macro_payload(b'C', &connect_macros)),
            macros(b'C', &connect_macros),
        );
        let mut connect = strs(&[b"mail.example.net"]);
        connect.extend_from_slice(b"4\xa1\x12");
        connect.extend(strs(&[b"198.51.100.7"]));
        both(
            raw(b'C', &connect),
            Command::Connect {
                hostname: "mail.example.net".into(),
                family: Family::Inet4,
                port: 0xa112,
                address: "198.51.100.7".into(),
            },
        );
        both(
            raw(b'H', &strs(&[b"mail.example.net"])),
            Command::Helo("mail.example.net".into()),
        );
        let mail_macros = [
            ("{mail_addr}", "alice@example.net"),
            ("{mail_mailer}", "smtp"),
        ];
        both(
            raw(b'D', &macro_payload(b'M', &mail_macros)),
            macros(b'M', &mail_macros),
        );
        both(
            raw(
                b'M',
                &strs(&[b"<alice@example.net>", b"SIZE=70123", b"BODY=8BITMIME"]),
            ),
            Command::Mail(strings(&[
                "<alice@example.net>",
                "SIZE=70123",
                "BODY=8BITMIME",
            ])),
        );
        for (rcpt, extra) in [
            ("bob@example.org", None),
            ("carol@example.org", Some("NOTIFY=NEVER")),
        ] {
            let pairs = [("{rcpt_addr}", rcpt), ("{rcpt_mailer}", "local")];
            both(
                raw(b'D', &macro_payload(b'R', &pairs)),
                macros(b'R', &pairs),
            );
            let typed = format!("<{rcpt}>");
            let mut args = vec![typed.as_str()];
            args.extend(extra);
            let parts: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            both(raw(b'R', &strs(&parts)), Command::Rcpt(strings(&args)));
        }
        both(
            raw(b'D', &macro_payload(b'T', &[("i", "4XyZ1c2d3")])),
            macros(b'T', &[("i", "4XyZ1c2d3")]),
        );
        both(raw(b'T', b""), Command::Data);
        let headers: [(&str, &[u8]); 3] = [
            ("From", b"Alice <alice@example.net>"),
            ("Subject", folded_value),
            ("X-Legacy", latin1_value),
        ];
        for (name, value) in headers {
            both(
                raw(b'D', &macro_payload(b'L', &[("i", "4XyZ1c2d3")])),
                macros(b'L', &[("i", "4XyZ1c2d3")]),
            );
            both(
                raw(b'L', &strs(&[name.as_bytes(), value])),
                Command::Header {
                    name: name.into(),
                    value: value.to_vec(),
                },
            );
        }
        both(raw(b'N', b""), Command::Eoh);
        for chunk in [chunk1, chunk2] {
            both(raw(b'D', &macro_payload(b'B', &[])), macros(b'B', &[]));
            both(raw(b'B', &chunk), Command::Body(chunk));
        }
        both(
            raw(b'D', &macro_payload(b'E', &[("i", "4XyZ1c2d3")])),
            macros(b'E', &[("i", "4XyZ1c2d3")]),
        );
        both(raw(b'E', b""), Command::BodyEob);
        both(raw(b'A', b""), Command::Abort);
        both(raw(b'Q', b""), Command::Quit);
        (s, want)
    }

    #[test]
    fn postfix_session_decodes_the_same_at_every_chunk_size() {
        let (stream, want) = postfix_session();
        assert_eq!(decode_all_commands(&stream), want);
        for size in 1..=stream.len() {
            let mut decoder = FrameDecoder::new();
            let mut got = 0;
            for chunk in stream.chunks(size) {
                decoder.feed(chunk);
                loop {
                    match decoder.decode_command() {
                        Ok(Decoded::Frame(command)) => {
                            assert_eq!(command, want[got], "frame {got} at chunk size {size}");
                            got += 1;
                        }
                        Ok(Decoded::Incomplete) => break,
                        other => panic!("chunk size {size}: {other:?}"),
                    }
                }
            }
            assert_eq!(got, want.len(), "frames at chunk size {size}");
            assert_eq!(decoder.buffered(), 0, "leftover at chunk size {size}");
        }
    }

    /// A transport that reads straight into [`FrameDecoder::read_buffer`], a few bytes at a time,
    /// gets the same frames as one that feeds.
    #[test]
    fn reading_into_the_buffer_decodes_the_same_at_every_chunk_size() {
        let (stream, want) = postfix_session();
        for size in [1, 2, 3, 7, 64, 4096, stream.len()] {
            let mut decoder = FrameDecoder::new();
            let mut got = 0;
            for chunk in stream.chunks(size) {
                let buf = decoder.read_buffer(16);
                assert!(
                    buf.capacity() - buf.len() >= 16,
                    "spare room at chunk size {size}"
                );
                buf.extend_from_slice(chunk);
                while let Decoded::Frame(command) = decoder.decode_command().unwrap() {
                    assert_eq!(command, want[got], "frame {got} at chunk size {size}");
                    got += 1;
                }
            }
            assert_eq!(got, want.len(), "frames at chunk size {size}");
            assert_eq!(decoder.buffered(), 0, "leftover at chunk size {size}");
        }
    }

    #[test]
    fn the_read_buffer_reserves_for_the_frame_in_progress_but_no_further_than_a_chunk() {
        let mut decoder = FrameDecoder::new();
        let body = raw(b'B', &[b'x'; 30_000]);
        decoder.feed(&body[..100]);
        let buf = decoder.read_buffer(16);
        assert!(buf.capacity() - buf.len() >= body.len() - 100);
        // A length field claiming the largest frame reserves one chunk's worth, not 1 MiB.
        let mut decoder = FrameDecoder::new();
        decoder.feed(&(MAX_FRAME_LEN as u32).to_be_bytes());
        let buf = decoder.read_buffer(16);
        assert!(buf.capacity() >= READ_AHEAD && buf.capacity() < 2 * (READ_AHEAD + 4));
    }

    #[test]
    fn hostile_length_is_too_large_without_allocating() {
        let mut decoder = FrameDecoder::new();
        decoder.feed(b"\xff\xff\xff\xf0B");
        for _ in 0..2 {
            assert_eq!(
                decoder.decode_command(),
                Ok(Decoded::TooLarge {
                    declared: 0xFFFF_FFF0
                })
            );
        }
        // Nothing consumed, and the buffer holds only the five bytes fed.
        assert_eq!(decoder.buffered(), 5);
        assert!(decoder.buf.capacity() < 64, "{}", decoder.buf.capacity());
    }

    #[test]
    fn frame_of_exactly_max_len_is_accepted_and_one_more_is_too_large() {
        let payload = vec![b'x'; MAX_FRAME_LEN - 1];
        assert_eq!(
            decode_one_command(&raw(b'B', &payload)),
            Ok(Decoded::Frame(Command::Body(payload.clone())))
        );
        let declared = u32::try_from(MAX_FRAME_LEN + 1).expect("1 MiB fits u32");
        let mut header = declared.to_be_bytes().to_vec();
        header.push(b'B');
        assert_eq!(
            decode_one_command(&header),
            Ok(Decoded::TooLarge {
                declared: MAX_FRAME_LEN + 1
            })
        );
    }

    #[test]
    fn incomplete_is_not_an_error() {
        let frame = raw(b'H', b"mx\0");
        for cut in 0..frame.len() {
            assert_eq!(decode_one_command(&frame[..cut]), Ok(Decoded::Incomplete));
        }
    }

    #[test]
    fn decoder_goes_on_after_a_malformed_frame() {
        let mut decoder = FrameDecoder::new();
        decoder.feed(b"\0\0\0\x02Tx");
        decoder.feed(&raw(b'N', b""));
        assert!(decoder.decode_command().is_err());
        assert_eq!(decoder.decode_command(), Ok(Decoded::Frame(Command::Eoh)));
        assert_eq!(decoder.decode_command(), Ok(Decoded::Incomplete));
    }

    #[test]
    fn compaction_moves_bytes_only_when_spent_outweighs_pending() {
        let mut decoder = FrameDecoder::new();
        let mut stream = Vec::new();
        for _ in 0..100 {
            stream.extend(raw(b'T', b""));
        }
        let body = raw(b'B', &[b'x'; 20_000]);
        stream.extend_from_slice(&body[..3]);
        decoder.feed(&stream);
        for _ in 0..100 {
            assert_eq!(decoder.decode_command(), Ok(Decoded::Frame(Command::Data)));
        }
        assert_eq!(decoder.decode_command(), Ok(Decoded::Incomplete));
        assert_eq!((decoder.start, decoder.buffered()), (500, 3));

        // 500 spent bytes outweigh 3 pending ones: the next feed moves them to the front.
        decoder.feed(&body[3..10_000]);
        assert_eq!((decoder.start, decoder.buf.len()), (0, 10_000));

        // One small frame spent in front of a large pending one: no move.
        let mut decoder = FrameDecoder::new();
        decoder.feed(&raw(b'T', b""));
        decoder.feed(&body[..10_000]);
        assert_eq!(decoder.decode_command(), Ok(Decoded::Frame(Command::Data)));
        decoder.feed(&body[10_000..10_001]);
        assert_eq!(decoder.start, 5);
        decoder.feed(&body[10_001..]);
        assert_eq!(
            decoder.decode_command(),
            Ok(Decoded::Frame(Command::Body(vec![b'x'; 20_000])))
        );
        // Everything consumed: the buffer is reset without a move.
        assert_eq!((decoder.start, decoder.buf.len()), (0, 0));
    }

    /// Feeds `stream` cut at `cuts` (indices into it, any order) and decodes after each piece.
    fn decode_split<T>(
        stream: &[u8],
        cuts: &[Index],
        decode: fn(&mut FrameDecoder) -> Result<Decoded<T>, CodecError>,
    ) -> Vec<T> {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut decoder = FrameDecoder::new();
        let mut out = Vec::new();
        for pair in points.windows(2) {
            decoder.feed(&stream[pair[0]..pair[1]]);
            while let Decoded::Frame(frame) = decode(&mut decoder).expect("valid stream") {
                out.push(frame);
            }
        }
        assert_eq!(decoder.buffered(), 0);
        out
    }

    proptest! {
        #[test]
        fn prop_commands_split_anywhere_decode_the_same(
            commands in prop::collection::vec(any_command(), 0..12),
            cuts in prop::collection::vec(any::<Index>(), 0..16),
        ) {
            let mut stream = Vec::new();
            for command in &commands {
                command.encode(&mut stream);
            }
            prop_assert_eq!(decode_split(&stream, &cuts, FrameDecoder::decode_command), commands);
        }

        #[test]
        fn prop_replies_split_anywhere_decode_the_same(
            replies in prop::collection::vec(any_reply(), 0..12),
            cuts in prop::collection::vec(any::<Index>(), 0..16),
        ) {
            let mut stream = Vec::new();
            for reply in &replies {
                reply.encode(&mut stream);
            }
            prop_assert_eq!(decode_split(&stream, &cuts, FrameDecoder::decode_reply), replies);
        }
    }
}
