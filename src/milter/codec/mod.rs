//! The milter wire codec, sans-IO: bytes in, typed frames out; typed frames in, bytes out.
//!
//! # Framing
//!
//! Every packet, in both directions, is a `u32` big-endian length `N`, one code byte, then
//! `N - 1` payload bytes; `N` counts the code byte but not the four length bytes, so `N = 0` is
//! invalid (libmilter `comm.c` `mi_rd_cmd`, Postfix `milter8.c` `milter8_read_resp`). Integers
//! in a payload are big-endian, strings end in NUL, and lists are strings end to end with no
//! count. A missing NUL or bytes left after the last field is a protocol error to Postfix, so
//! the decoder rejects both rather than guessing.
//!
//! # Text
//!
//! Header values ([`Command::Header`], the edits in [`Reply`]) and body bytes are kept as raw
//! bytes: header values may be 8-bit (not UTF-8) and carry LF folding, and a filter that signs
//! or copies them needs them exactly. Every other string (host names, addresses, ESMTP
//! parameters, macro names and values, header names) is decoded as UTF-8 *lossily*: invalid
//! sequences become U+FFFD, the way [`String::from_utf8_lossy`] does. They are ASCII in practice
//! (SMTP, RFC 5321) or UTF-8 (SMTPUTF8, RFC 6531); replacing rather than rejecting means one odd
//! byte in, say, a HELO name cannot make the filter drop the session.
//!
//! The wire cannot carry a NUL inside a string, so encoding writes each string field up to its
//! first NUL and no further. Truncating keeps the frame's field boundaries where the caller meant
//! them: a value with an embedded NUL can never be read by the peer as an extra field.
//!
//! # Decoding
//!
//! [`FrameDecoder`] buffers what the transport read ([`FrameDecoder::feed`]) and hands out one
//! frame per call ([`FrameDecoder::decode_command`] on the filter side,
//! [`FrameDecoder::decode_reply`] on the MTA side). "Not enough bytes yet" is
//! [`Decoded::Incomplete`], not an error. A length field above [`MAX_FRAME_LEN`] is
//! [`Decoded::TooLarge`], reported as soon as the four length bytes are in, before any payload is
//! buffered. Memory use is therefore bounded by the cap plus one read, whatever the peer claims.
//!
//! # Files
//!
//! `flags` holds the negotiation bit sets; `codes` the code bytes; `commands` and `replies` the
//! frames of each direction, their encoding and parsing; `decoder` the framing of a byte stream;
//! `fields` the payload cursor and frame writer both directions use; `error` what a malformed
//! frame is.

mod codes;
mod commands;
mod decoder;
mod error;
mod fields;
mod flags;
mod replies;
#[cfg(test)]
mod testing;

pub use commands::{Command, Family};
pub use decoder::{Decoded, FrameDecoder, MAX_FRAME_LEN, READ_AHEAD};
pub use error::{CodecError, Direction, FrameCode};
pub use flags::{Actions, Protocol};
pub use replies::{Reply, escape_reply_text};
