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

use std::fmt;
use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign};

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

// ---------------------------------------------------------------------------------------------
// Negotiation flags
// ---------------------------------------------------------------------------------------------

/// Defines a `u32` flag newtype with named bits, set operations and a `Debug` that names them.
///
/// Unknown bits are kept, not dropped: Postfix passes protocol bits it does not know through
/// (Postfix `milter8.c` `milter8_connect`), and a newer MTA may offer bits we have no name for.
macro_rules! flags {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$flag_meta:meta])* const $flag:ident = $bit:expr; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(u32);

        impl $name {
            $( $(#[$flag_meta])* pub const $flag: Self = Self($bit); )*

            /// The bits with a name, in wire order, for `Debug`.
            const NAMED: &[(&str, u32)] = &[$( (stringify!($flag), $bit) ),*];

            /// No bit set.
            pub const fn empty() -> Self {
                Self(0)
            }

            /// Wraps raw bits as read from or written to the wire; unknown bits are kept.
            pub const fn from_bits(bits: u32) -> Self {
                Self(bits)
            }

            /// The raw bits.
            pub const fn bits(self) -> u32 {
                self.0
            }

            /// Whether every bit of `other` is set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether no bit is set.
            /// Both sets together; `const` so that flag sets can be constants.
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }
        }

        impl BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                Self(self.0 | rhs.0)
            }
        }

        impl BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: Self) {
                self.0 |= rhs.0;
            }
        }

        impl BitAnd for $name {
            type Output = Self;
            fn bitand(self, rhs: Self) -> Self {
                Self(self.0 & rhs.0)
            }
        }

        impl BitAndAssign for $name {
            fn bitand_assign(&mut self, rhs: Self) {
                self.0 &= rhs.0;
            }
        }

        /// Lists the named bits, then any unknown ones in hex: `Actions(ADDHDRS | 0x8000)`.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                let mut rest = self.0;
                let mut first = true;
                for &(name, bit) in Self::NAMED {
                    if rest & bit != 0 {
                        if !first {
                            f.write_str(" | ")?;
                        }
                        f.write_str(name)?;
                        rest &= !bit;
                        first = false;
                    }
                }
                if rest != 0 || first {
                    if !first {
                        f.write_str(" | ")?;
                    }
                    write!(f, "{rest:#x}")?;
                }
                f.write_str(")")
            }
        }
    };
}

flags! {
    /// What the filter may do to a message (`SMFIF_*`, libmilter `mfdef.h`), negotiated in
    /// OPTNEG. Postfix offers all nine (0x1FF) and rejects a filter that asks for more than it
    /// offered (Postfix `milter8.c` `milter8_connect`).
    pub struct Actions {
        /// Add headers (ADDHEADER, INSHEADER).
        const ADDHDRS = 0x1;
        /// Replace the body (REPLBODY).
        const CHGBODY = 0x2;
        /// Add recipients (ADDRCPT).
        const ADDRCPT = 0x4;
        /// Delete recipients (DELRCPT).
        const DELRCPT = 0x8;
        /// Change or delete headers (CHGHEADER).
        const CHGHDRS = 0x10;
        /// Quarantine the message (QUARANTINE).
        const QUARANTINE = 0x20;
        /// Change the envelope sender (CHGFROM).
        const CHGFROM = 0x40;
        /// Add recipients with ESMTP parameters (ADDRCPT_PAR).
        const ADDRCPT_PAR = 0x80;
        /// Send the list of macros wanted per stage in the OPTNEG reply.
        const SETSYMLIST = 0x100;
    }
}

flags! {
    /// Which events the MTA should not send and which need no reply (`SMFIP_*`, libmilter
    /// `mfdef.h`), negotiated in OPTNEG. Postfix offers 0x1FFFFF at milter protocol 6 and never
    /// offers the `MDS_*` bits.
    pub struct Protocol {
        /// Do not send CONNECT.
        const NOCONNECT = 0x1;
        /// Do not send HELO.
        const NOHELO = 0x2;
        /// Do not send MAIL.
        const NOMAIL = 0x4;
        /// Do not send RCPT.
        const NORCPT = 0x8;
        /// Do not send BODY.
        const NOBODY = 0x10;
        /// Do not send HEADER.
        const NOHDRS = 0x20;
        /// Do not send EOH.
        const NOEOH = 0x40;
        /// No reply to HEADER (libmilter also calls it `SMFIP_NOHREPL`).
        const NR_HDR = 0x80;
        /// Do not send UNKNOWN.
        const NOUNKNOWN = 0x100;
        /// Do not send DATA.
        const NODATA = 0x200;
        /// The MTA understands SKIP.
        const SKIP = 0x400;
        /// Also send the recipients the MTA rejected.
        const RCPT_REJ = 0x800;
        /// No reply to CONNECT.
        const NR_CONN = 0x1000;
        /// No reply to HELO.
        const NR_HELO = 0x2000;
        /// No reply to MAIL.
        const NR_MAIL = 0x4000;
        /// No reply to RCPT.
        const NR_RCPT = 0x8000;
        /// No reply to DATA.
        const NR_DATA = 0x10000;
        /// No reply to UNKNOWN.
        const NR_UNKN = 0x20000;
        /// No reply to EOH.
        const NR_EOH = 0x40000;
        /// No reply to BODY.
        const NR_BODY = 0x80000;
        /// Send header values with their leading space.
        const HDR_LEADSPC = 0x100000;
        /// Payloads up to 256 KiB - 1 (libmilter only; Postfix never offers it).
        const MDS_256K = 0x10000000;
        /// Payloads up to 1 MiB - 1 (libmilter only; Postfix never offers it).
        const MDS_1M = 0x20000000;
    }
}

impl Protocol {
    /// libmilter's older name for [`Protocol::NR_HDR`].
    pub const NOHREPL: Self = Self::NR_HDR;
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// A command from the MTA to the filter (`SMFIC_*`, libmilter `mfdef.h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `O`: the MTA's offer; the filter answers [`Reply::OptNeg`].
    OptNeg {
        version: u32,
        actions: Actions,
        protocol: Protocol,
    },
    /// `D`: macros for the command whose code is `stage` (`C`, `H`, `M`, …); may hold no pair.
    /// Never answered.
    Macro {
        stage: u8,
        pairs: Vec<(String, String)>,
    },
    /// `C`: the SMTP client. For [`Family::Unknown`] the wire carries no port and no address:
    /// decoding gives `port` 0 and an empty `address`, and encoding leaves both out.
    Connect {
        hostname: String,
        family: Family,
        port: u16,
        address: String,
    },
    /// `H`: the HELO/EHLO argument.
    Helo(String),
    /// `M`: element 0 is the sender as the client typed it (usually with `<>`), then one element
    /// per ESMTP parameter (`SIZE=123`). Decoding requires element 0.
    Mail(Vec<String>),
    /// `R`: like [`Command::Mail`], for one recipient.
    Rcpt(Vec<String>),
    /// `T`: DATA.
    Data,
    /// `L`: one header; the value is raw (8-bit, LF-folded) and, without
    /// [`Protocol::HDR_LEADSPC`], lacks the one space Postfix strips after the colon.
    Header { name: String, value: Vec<u8> },
    /// `N`: end of headers.
    Eoh,
    /// `B`: a body chunk, CRLF line ends; Postfix sends 65535-byte chunks that may split a CRLF.
    Body(Vec<u8>),
    /// `E`: end of message; always answered.
    BodyEob,
    /// `A`: abort the current message (the session goes on).
    Abort,
    /// `Q`: end of session.
    Quit,
    /// `K`: end of this connection's session, another follows on the same connection (libmilter;
    /// Postfix never sends it).
    QuitNc,
    /// `U`: an SMTP command the MTA did not recognise, raw, without its NUL.
    Unknown(Vec<u8>),
}

/// The client address family of [`Command::Connect`] (`SMFIA_*`, libmilter `mfdef.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `4`: IPv4.
    Inet4,
    /// `6`: IPv6 (Postfix sends the address without an `IPv6:` prefix).
    Inet6,
    /// `L`: a local (unix-domain) socket; Postfix sends port 0.
    Unix,
    /// `U`: unknown; no port or address follows.
    Unknown,
}

/// A reply from the filter to the MTA (`SMFIR_*`, libmilter `mfdef.h`).
///
/// Edits (`AddRcpt` … `ReplBody`) are valid only in answer to [`Command::BodyEob`], followed
/// by exactly one final reply, or Postfix drops the filter (Postfix `milter8.c`
/// `milter8_event`); enforcing that order is the session's job, not the codec's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `O`: the filter's answer to [`Command::OptNeg`], optionally with the macro names wanted
    /// per stage (`stage` 0 CONNECT, 1 HELO, 2 MAIL, 3 RCPT, 4 DATA, 5 EOM, 6 EOH; `names`
    /// space-separated).
    OptNeg {
        version: u32,
        actions: Actions,
        protocol: Protocol,
        macros: Vec<(u32, String)>,
    },
    /// `a`: accept.
    Accept,
    /// `c`: continue.
    Continue,
    /// `r`: reject.
    Reject,
    /// `t`: temporary failure.
    Tempfail,
    /// `d`: accept, then discard.
    Discard,
    /// `4`: 421, close the SMTP session.
    Shutdown,
    /// `y`: a full SMTP reply (`550 5.7.1 text`); escape the text with [`escape_reply_text`].
    /// The codec carries it as is; Postfix wants `[45]dd` then a space or `-`, and treats
    /// anything else as a configuration error (Postfix `milter8.c`).
    ReplyCode(String),
    /// `+`: add a recipient.
    AddRcpt(String),
    /// `2`: add a recipient with ESMTP arguments (one space-separated string).
    AddRcptPar { rcpt: String, args: Option<String> },
    /// `-`: delete a recipient.
    DelRcpt(String),
    /// `h`: append a header.
    AddHeader { name: String, value: Vec<u8> },
    /// `i`: insert a header at `index` (0 = top).
    InsHeader {
        index: u32,
        name: String,
        value: Vec<u8>,
    },
    /// `m`: change the `index`-th (1-based) header called `name`; an empty value deletes it.
    ChgHeader {
        index: u32,
        name: String,
        value: Vec<u8>,
    },
    /// `e`: change the envelope sender, with ESMTP arguments (one space-separated string).
    ChgFrom {
        sender: String,
        args: Option<String>,
    },
    /// `q`: quarantine (hold) the message, with a reason.
    Quarantine(String),
    /// `p`: still working; resets the MTA's timeout.
    Progress,
    /// `s`: skip the rest of this kind of event (libmilter: BODY only).
    Skip,
    /// `b`: one chunk of the replacement body. Postfix takes chunks of any size; libmilter
    /// sends at most 65535 bytes per chunk (`smfi.c` `smfi_replacebody`).
    ReplBody(Vec<u8>),
}

/// Whether a frame travels from the MTA to the filter or back; names the code byte in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// MTA to filter: a [`Command`].
    Command,
    /// Filter to MTA: a [`Reply`].
    Reply,
}

/// The code byte of a frame and its direction, as named in errors: `command 'L' (HEADER)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameCode {
    pub direction: Direction,
    pub byte: u8,
}

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

/// A frame that cannot be what it claims to be.
///
/// The decoder consumes the offending frame before returning one of these, but the peer has
/// broken the protocol: Postfix closes the connection in the same situation, and so should the
/// caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The length field is 0, so the frame has not even a code byte.
    #[error("frame length is 0, so it has no command byte")]
    ZeroLength,
    /// The code byte names no frame of this direction.
    #[error("unknown {direction} byte '{}'", .byte.escape_ascii())]
    UnknownCode { direction: Direction, byte: u8 },
    /// A frame that has no payload came with one.
    #[error("{code}: takes no payload but has {len} bytes")]
    UnexpectedPayload { code: FrameCode, len: usize },
    /// The payload ended where a field should start.
    #[error("{code}: {field} is missing")]
    MissingField {
        code: FrameCode,
        field: &'static str,
    },
    /// A string field runs to the end of the payload without its NUL.
    #[error("{code}: {field} is not NUL-terminated")]
    MissingNul {
        code: FrameCode,
        field: &'static str,
    },
    /// A fixed-size field is cut short.
    #[error("{code}: payload too short for {field}: needs {needed} bytes, has {got}")]
    ShortPayload {
        code: FrameCode,
        field: &'static str,
        needed: usize,
        got: usize,
    },
    /// Bytes are left after the last field.
    #[error("{code}: {count} unexpected bytes after the last field")]
    TrailingBytes { code: FrameCode, count: usize },
    /// CONNECT names an address family that is not `4`, `6`, `L` or `U`.
    #[error("{code}: unknown address family '{}'", .family.escape_ascii())]
    UnknownFamily { code: FrameCode, family: u8 },
}

/// Splits a byte stream into frames; see the module docs.
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

// ---------------------------------------------------------------------------------------------
// Wire codes
// ---------------------------------------------------------------------------------------------

/// Command codes, MTA to filter (`SMFIC_*`, libmilter `mfdef.h`).
mod cmd {
    pub const ABORT: u8 = b'A';
    pub const BODY: u8 = b'B';
    pub const CONNECT: u8 = b'C';
    pub const MACRO: u8 = b'D';
    pub const BODYEOB: u8 = b'E';
    pub const HELO: u8 = b'H';
    pub const QUIT_NC: u8 = b'K';
    pub const HEADER: u8 = b'L';
    pub const MAIL: u8 = b'M';
    pub const EOH: u8 = b'N';
    pub const OPTNEG: u8 = b'O';
    pub const QUIT: u8 = b'Q';
    pub const RCPT: u8 = b'R';
    pub const DATA: u8 = b'T';
    pub const UNKNOWN: u8 = b'U';
}

/// Reply codes, filter to MTA (`SMFIR_*`, libmilter `mfdef.h`). `f` (CONN_FAIL) and `l`
/// (SETSYMLIST) are defined there too but are protocol errors as replies to Postfix, so they are
/// unknown here.
mod rep {
    pub const ADDRCPT: u8 = b'+';
    pub const DELRCPT: u8 = b'-';
    pub const ADDRCPT_PAR: u8 = b'2';
    pub const SHUTDOWN: u8 = b'4';
    pub const ACCEPT: u8 = b'a';
    pub const REPLBODY: u8 = b'b';
    pub const CONTINUE: u8 = b'c';
    pub const DISCARD: u8 = b'd';
    pub const CHGFROM: u8 = b'e';
    pub const ADDHEADER: u8 = b'h';
    pub const INSHEADER: u8 = b'i';
    pub const CHGHEADER: u8 = b'm';
    pub const OPTNEG: u8 = b'O';
    pub const PROGRESS: u8 = b'p';
    pub const QUARANTINE: u8 = b'q';
    pub const REJECT: u8 = b'r';
    pub const SKIP: u8 = b's';
    pub const TEMPFAIL: u8 = b't';
    pub const REPLYCODE: u8 = b'y';
}

/// Address family bytes of CONNECT (`SMFIA_*`, libmilter `mfdef.h`).
mod fam {
    pub const UNKNOWN: u8 = b'U';
    pub const UNIX: u8 = b'L';
    pub const INET: u8 = b'4';
    pub const INET6: u8 = b'6';
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

impl Command {
    /// The code byte this command travels under.
    pub fn code(&self) -> u8 {
        match self {
            Command::OptNeg { .. } => cmd::OPTNEG,
            Command::Macro { .. } => cmd::MACRO,
            Command::Connect { .. } => cmd::CONNECT,
            Command::Helo(_) => cmd::HELO,
            Command::Mail(_) => cmd::MAIL,
            Command::Rcpt(_) => cmd::RCPT,
            Command::Data => cmd::DATA,
            Command::Header { .. } => cmd::HEADER,
            Command::Eoh => cmd::EOH,
            Command::Body(_) => cmd::BODY,
            Command::BodyEob => cmd::BODYEOB,
            Command::Abort => cmd::ABORT,
            Command::Quit => cmd::QUIT,
            Command::QuitNc => cmd::QUIT_NC,
            Command::Unknown(_) => cmd::UNKNOWN,
        }
    }

    /// Appends this command as one frame to `out`; this is the MTA's side, for tests and fakes.
    ///
    /// String fields are written up to their first NUL (see the module docs).
    ///
    /// # Panics
    ///
    /// If the frame would exceed `u32::MAX` bytes, which the length field cannot express.
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_frame(out, self.code(), |out| match self {
            Command::OptNeg {
                version,
                actions,
                protocol,
            } => {
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&actions.bits().to_be_bytes());
                out.extend_from_slice(&protocol.bits().to_be_bytes());
            }
            Command::Macro { stage, pairs } => {
                out.push(*stage);
                for (name, value) in pairs {
                    put_str(out, name.as_bytes());
                    put_str(out, value.as_bytes());
                }
            }
            Command::Connect {
                hostname,
                family,
                port,
                address,
            } => {
                put_str(out, hostname.as_bytes());
                out.push(family.byte());
                // libmilter `engine.c` `st_connect`: nothing follows an unknown family.
                if *family != Family::Unknown {
                    out.extend_from_slice(&port.to_be_bytes());
                    put_str(out, address.as_bytes());
                }
            }
            Command::Helo(name) => put_str(out, name.as_bytes()),
            Command::Mail(args) | Command::Rcpt(args) => {
                for arg in args {
                    put_str(out, arg.as_bytes());
                }
            }
            Command::Header { name, value } => {
                put_str(out, name.as_bytes());
                put_str(out, value);
            }
            Command::Body(chunk) => out.extend_from_slice(chunk),
            Command::Unknown(line) => put_str(out, line),
            Command::Data
            | Command::Eoh
            | Command::BodyEob
            | Command::Abort
            | Command::Quit
            | Command::QuitNc => {}
        });
    }

    /// Parses one command from its code byte and payload.
    fn parse(byte: u8, payload: &[u8]) -> Result<Command, CodecError> {
        let code = FrameCode::command(byte);
        let mut p = Fields::new(code, payload);
        let command = match byte {
            cmd::OPTNEG => Command::OptNeg {
                version: p.u32("version")?,
                actions: Actions::from_bits(p.u32("actions")?),
                protocol: Protocol::from_bits(p.u32("protocol")?),
            },
            cmd::MACRO => {
                let stage = p.byte("macro stage")?;
                let mut pairs = Vec::new();
                while !p.is_empty() {
                    let name = p.string("macro name")?;
                    let value = p.string("macro value")?;
                    pairs.push((name, value));
                }
                Command::Macro { stage, pairs }
            }
            cmd::CONNECT => {
                let hostname = p.string("hostname")?;
                let family_byte = p.byte("address family")?;
                let family = Family::from_byte(family_byte).ok_or(CodecError::UnknownFamily {
                    code,
                    family: family_byte,
                })?;
                let (port, address) = if family == Family::Unknown {
                    (0, String::new())
                } else {
                    (p.u16("port")?, p.string("address")?)
                };
                Command::Connect {
                    hostname,
                    family,
                    port,
                    address,
                }
            }
            cmd::HELO => Command::Helo(p.string("helo name")?),
            cmd::MAIL => Command::Mail(p.arg_list("sender")?),
            cmd::RCPT => Command::Rcpt(p.arg_list("recipient")?),
            cmd::HEADER => Command::Header {
                name: p.string("header name")?,
                value: p.bytes("header value")?.to_vec(),
            },
            // A body chunk is raw bytes to the end of the frame: no NUL, nothing to check.
            cmd::BODY => Command::Body(p.take_rest().to_vec()),
            cmd::UNKNOWN => Command::Unknown(p.bytes("command line")?.to_vec()),
            cmd::DATA => Command::Data,
            cmd::EOH => Command::Eoh,
            cmd::BODYEOB => Command::BodyEob,
            cmd::ABORT => Command::Abort,
            cmd::QUIT => Command::Quit,
            cmd::QUIT_NC => Command::QuitNc,
            _ => {
                return Err(CodecError::UnknownCode {
                    direction: Direction::Command,
                    byte,
                });
            }
        };
        if command.has_no_payload() && !payload.is_empty() {
            return Err(CodecError::UnexpectedPayload {
                code,
                len: payload.len(),
            });
        }
        p.finish()?;
        Ok(command)
    }

    fn has_no_payload(&self) -> bool {
        matches!(
            self,
            Command::Data
                | Command::Eoh
                | Command::BodyEob
                | Command::Abort
                | Command::Quit
                | Command::QuitNc
        )
    }
}

impl Family {
    fn byte(self) -> u8 {
        match self {
            Family::Inet4 => fam::INET,
            Family::Inet6 => fam::INET6,
            Family::Unix => fam::UNIX,
            Family::Unknown => fam::UNKNOWN,
        }
    }

    fn from_byte(byte: u8) -> Option<Family> {
        match byte {
            fam::INET => Some(Family::Inet4),
            fam::INET6 => Some(Family::Inet6),
            fam::UNIX => Some(Family::Unix),
            fam::UNKNOWN => Some(Family::Unknown),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

impl Reply {
    /// The code byte this reply travels under.
    pub fn code(&self) -> u8 {
        match self {
            Reply::OptNeg { .. } => rep::OPTNEG,
            Reply::Accept => rep::ACCEPT,
            Reply::Continue => rep::CONTINUE,
            Reply::Reject => rep::REJECT,
            Reply::Tempfail => rep::TEMPFAIL,
            Reply::Discard => rep::DISCARD,
            Reply::Shutdown => rep::SHUTDOWN,
            Reply::ReplyCode(_) => rep::REPLYCODE,
            Reply::AddRcpt(_) => rep::ADDRCPT,
            Reply::AddRcptPar { .. } => rep::ADDRCPT_PAR,
            Reply::DelRcpt(_) => rep::DELRCPT,
            Reply::AddHeader { .. } => rep::ADDHEADER,
            Reply::InsHeader { .. } => rep::INSHEADER,
            Reply::ChgHeader { .. } => rep::CHGHEADER,
            Reply::ChgFrom { .. } => rep::CHGFROM,
            Reply::Quarantine(_) => rep::QUARANTINE,
            Reply::Progress => rep::PROGRESS,
            Reply::Skip => rep::SKIP,
            Reply::ReplBody(_) => rep::REPLBODY,
        }
    }

    /// Appends this reply as one frame to `out`.
    ///
    /// String fields are written up to their first NUL (see the module docs).
    ///
    /// # Panics
    ///
    /// If the frame would exceed `u32::MAX` bytes, which the length field cannot express.
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_frame(out, self.code(), |out| match self {
            Reply::OptNeg {
                version,
                actions,
                protocol,
                macros,
            } => {
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&actions.bits().to_be_bytes());
                out.extend_from_slice(&protocol.bits().to_be_bytes());
                for (stage, names) in macros {
                    out.extend_from_slice(&stage.to_be_bytes());
                    put_str(out, names.as_bytes());
                }
            }
            Reply::ReplyCode(text)
            | Reply::AddRcpt(text)
            | Reply::DelRcpt(text)
            | Reply::Quarantine(text) => put_str(out, text.as_bytes()),
            Reply::AddRcptPar { rcpt: addr, args } | Reply::ChgFrom { sender: addr, args } => {
                put_str(out, addr.as_bytes());
                if let Some(args) = args {
                    put_str(out, args.as_bytes());
                }
            }
            Reply::AddHeader { name, value } => {
                put_str(out, name.as_bytes());
                put_str(out, value);
            }
            Reply::InsHeader { index, name, value } | Reply::ChgHeader { index, name, value } => {
                out.extend_from_slice(&index.to_be_bytes());
                put_str(out, name.as_bytes());
                put_str(out, value);
            }
            Reply::ReplBody(chunk) => out.extend_from_slice(chunk),
            Reply::Accept
            | Reply::Continue
            | Reply::Reject
            | Reply::Tempfail
            | Reply::Discard
            | Reply::Shutdown
            | Reply::Progress
            | Reply::Skip => {}
        });
    }

    /// Parses one reply from its code byte and payload.
    fn parse(byte: u8, payload: &[u8]) -> Result<Reply, CodecError> {
        let code = FrameCode::reply(byte);
        let mut p = Fields::new(code, payload);
        let reply = match byte {
            rep::OPTNEG => {
                let version = p.u32("version")?;
                let actions = Actions::from_bits(p.u32("actions")?);
                let protocol = Protocol::from_bits(p.u32("protocol")?);
                // Postfix `milter8.c` `milter8_connect`: {u32 stage, names\0} pairs until the
                // payload ends.
                let mut macros = Vec::new();
                while !p.is_empty() {
                    let stage = p.u32("macro stage")?;
                    let names = p.string("macro names")?;
                    macros.push((stage, names));
                }
                Reply::OptNeg {
                    version,
                    actions,
                    protocol,
                    macros,
                }
            }
            rep::REPLYCODE => Reply::ReplyCode(p.string("reply text")?),
            rep::ADDRCPT => Reply::AddRcpt(p.string("recipient")?),
            rep::DELRCPT => Reply::DelRcpt(p.string("recipient")?),
            rep::QUARANTINE => Reply::Quarantine(p.string("reason")?),
            rep::ADDRCPT_PAR => Reply::AddRcptPar {
                rcpt: p.string("recipient")?,
                args: p.optional_string("ESMTP arguments")?,
            },
            rep::CHGFROM => Reply::ChgFrom {
                sender: p.string("sender")?,
                args: p.optional_string("ESMTP arguments")?,
            },
            rep::ADDHEADER => Reply::AddHeader {
                name: p.string("header name")?,
                value: p.bytes("header value")?.to_vec(),
            },
            rep::INSHEADER => Reply::InsHeader {
                index: p.u32("header index")?,
                name: p.string("header name")?,
                value: p.bytes("header value")?.to_vec(),
            },
            rep::CHGHEADER => Reply::ChgHeader {
                index: p.u32("header index")?,
                name: p.string("header name")?,
                value: p.bytes("header value")?.to_vec(),
            },
            rep::REPLBODY => Reply::ReplBody(p.take_rest().to_vec()),
            rep::ACCEPT => Reply::Accept,
            rep::CONTINUE => Reply::Continue,
            rep::REJECT => Reply::Reject,
            rep::TEMPFAIL => Reply::Tempfail,
            rep::DISCARD => Reply::Discard,
            rep::SHUTDOWN => Reply::Shutdown,
            rep::PROGRESS => Reply::Progress,
            rep::SKIP => Reply::Skip,
            _ => {
                return Err(CodecError::UnknownCode {
                    direction: Direction::Reply,
                    byte,
                });
            }
        };
        // Postfix `milter8.c` `milter8_event` treats a payload on these as a protocol error.
        if reply.has_no_payload() && !payload.is_empty() {
            return Err(CodecError::UnexpectedPayload {
                code,
                len: payload.len(),
            });
        }
        p.finish()?;
        Ok(reply)
    }

    fn has_no_payload(&self) -> bool {
        matches!(
            self,
            Reply::Accept
                | Reply::Continue
                | Reply::Reject
                | Reply::Tempfail
                | Reply::Discard
                | Reply::Shutdown
                | Reply::Progress
                | Reply::Skip
        )
    }
}

/// Doubles every `%` in SMTP reply text meant for [`Reply::ReplyCode`].
///
/// Sendmail uses the reply text as a format string, so libmilter's convention is that `%` is
/// sent doubled; Postfix follows it and turns `%%` back into `%`, silently dropping a lone `%`
/// (Postfix `milter8.c`, `milter8_event`, case `SMFIR_REPLYCODE`). Without this, "100% sure"
/// would reach the client as "100 sure".
pub fn escape_reply_text(s: &str) -> String {
    s.replace('%', "%%")
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/// Bytes in a length field.
const LEN_BYTES: usize = 4;

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

// ---------------------------------------------------------------------------------------------
// Field reading and writing
// ---------------------------------------------------------------------------------------------

/// A cursor over one frame's payload that names the frame and the field in every error.
struct Fields<'a> {
    code: FrameCode,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(code: FrameCode, payload: &'a [u8]) -> Self {
        Self {
            code,
            rest: payload,
        }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        match self.rest.split_first_chunk::<N>() {
            Some((bytes, rest)) => {
                self.rest = rest;
                Ok(*bytes)
            }
            None if self.rest.is_empty() => Err(self.missing(field)),
            None => Err(CodecError::ShortPayload {
                code: self.code,
                field,
                needed: N,
                got: self.rest.len(),
            }),
        }
    }

    fn byte(&mut self, field: &'static str) -> Result<u8, CodecError> {
        let [byte] = self.fixed::<1>(field)?;
        Ok(byte)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        self.fixed(field).map(u16::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        self.fixed(field).map(u32::from_be_bytes)
    }

    /// A NUL-terminated field, without its NUL.
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        if self.rest.is_empty() {
            return Err(self.missing(field));
        }
        let Some(nul) = self.rest.iter().position(|&b| b == 0) else {
            return Err(CodecError::MissingNul {
                code: self.code,
                field,
            });
        };
        let bytes = &self.rest[..nul];
        self.rest = &self.rest[nul + 1..];
        Ok(bytes)
    }

    /// A NUL-terminated field decoded as UTF-8, invalid sequences replaced (see module docs).
    fn string(&mut self, field: &'static str) -> Result<String, CodecError> {
        self.bytes(field)
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    }

    /// A string field that may be absent at the end of the payload.
    fn optional_string(&mut self, field: &'static str) -> Result<Option<String>, CodecError> {
        if self.rest.is_empty() {
            Ok(None)
        } else {
            self.string(field).map(Some)
        }
    }

    /// MAIL/RCPT: a required first string, then strings to the end of the payload.
    fn arg_list(&mut self, first: &'static str) -> Result<Vec<String>, CodecError> {
        let mut args = vec![self.string(first)?];
        while !self.is_empty() {
            args.push(self.string("ESMTP parameter")?);
        }
        Ok(args)
    }

    fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    fn finish(self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError::TrailingBytes {
                code: self.code,
                count: self.rest.len(),
            })
        }
    }

    fn missing(&self, field: &'static str) -> CodecError {
        CodecError::MissingField {
            code: self.code,
            field,
        }
    }
}

/// Appends a length field, `code`, and what `payload` writes, then fills in the length.
fn write_frame(out: &mut Vec<u8>, code: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_BYTES]);
    out.push(code);
    payload(out);
    let len = out.len() - start - LEN_BYTES;
    let len = u32::try_from(len)
        .expect("a frame over u32::MAX bytes is a caller bug, documented under # Panics");
    out[start..start + LEN_BYTES].copy_from_slice(&len.to_be_bytes());
}

/// Appends `s` up to its first NUL, then the NUL that ends it on the wire.
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    out.extend_from_slice(&s[..end]);
    out.push(0);
}

// ---------------------------------------------------------------------------------------------
// Error display
// ---------------------------------------------------------------------------------------------

impl FrameCode {
    fn command(byte: u8) -> Self {
        Self {
            direction: Direction::Command,
            byte,
        }
    }

    fn reply(byte: u8) -> Self {
        Self {
            direction: Direction::Reply,
            byte,
        }
    }

    /// The libmilter name of this code, without its `SMFIC_`/`SMFIR_` prefix.
    fn name(self) -> Option<&'static str> {
        let name = match (self.direction, self.byte) {
            (Direction::Command, cmd::ABORT) => "ABORT",
            (Direction::Command, cmd::BODY) => "BODY",
            (Direction::Command, cmd::CONNECT) => "CONNECT",
            (Direction::Command, cmd::MACRO) => "MACRO",
            (Direction::Command, cmd::BODYEOB) => "BODYEOB",
            (Direction::Command, cmd::HELO) => "HELO",
            (Direction::Command, cmd::QUIT_NC) => "QUIT_NC",
            (Direction::Command, cmd::HEADER) => "HEADER",
            (Direction::Command, cmd::MAIL) => "MAIL",
            (Direction::Command, cmd::EOH) => "EOH",
            (Direction::Command, cmd::OPTNEG) => "OPTNEG",
            (Direction::Command, cmd::QUIT) => "QUIT",
            (Direction::Command, cmd::RCPT) => "RCPT",
            (Direction::Command, cmd::DATA) => "DATA",
            (Direction::Command, cmd::UNKNOWN) => "UNKNOWN",
            (Direction::Reply, rep::ADDRCPT) => "ADDRCPT",
            (Direction::Reply, rep::DELRCPT) => "DELRCPT",
            (Direction::Reply, rep::ADDRCPT_PAR) => "ADDRCPT_PAR",
            (Direction::Reply, rep::SHUTDOWN) => "SHUTDOWN",
            (Direction::Reply, rep::ACCEPT) => "ACCEPT",
            (Direction::Reply, rep::REPLBODY) => "REPLBODY",
            (Direction::Reply, rep::CONTINUE) => "CONTINUE",
            (Direction::Reply, rep::DISCARD) => "DISCARD",
            (Direction::Reply, rep::CHGFROM) => "CHGFROM",
            (Direction::Reply, rep::ADDHEADER) => "ADDHEADER",
            (Direction::Reply, rep::INSHEADER) => "INSHEADER",
            (Direction::Reply, rep::CHGHEADER) => "CHGHEADER",
            (Direction::Reply, rep::OPTNEG) => "OPTNEG",
            (Direction::Reply, rep::PROGRESS) => "PROGRESS",
            (Direction::Reply, rep::QUARANTINE) => "QUARANTINE",
            (Direction::Reply, rep::REJECT) => "REJECT",
            (Direction::Reply, rep::SKIP) => "SKIP",
            (Direction::Reply, rep::TEMPFAIL) => "TEMPFAIL",
            (Direction::Reply, rep::REPLYCODE) => "REPLYCODE",
            _ => return None,
        };
        Some(name)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Command => "command",
            Direction::Reply => "reply",
        })
    }
}

impl fmt::Display for FrameCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.direction, self.byte.escape_ascii())?;
        if let Some(name) = self.name() {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// A frame built by hand, independently of `encode`: BE length, code byte, payload.
    fn raw(code: u8, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len() + 1).expect("test frames are small");
        let mut frame = len.to_be_bytes().to_vec();
        frame.push(code);
        frame.extend_from_slice(payload);
        frame
    }

    /// NUL-terminated strings end to end, as lists travel on the wire.
    fn strs(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(part);
            out.push(0);
        }
        out
    }

    fn macro_payload(stage: u8, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = vec![stage];
        for (name, value) in pairs {
            out.extend(strs(&[name.as_bytes(), value.as_bytes()]));
        }
        out
    }

    fn macros(stage: u8, pairs: &[(&str, &str)]) -> Command {
        Command::Macro {
            stage,
            pairs: pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn strings(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    /// Decodes every whole command in `bytes`, failing the test on errors and leftovers.
    fn decode_all_commands(bytes: &[u8]) -> Vec<Command> {
        let mut decoder = FrameDecoder::new();
        decoder.feed(bytes);
        let mut out = Vec::new();
        while let Decoded::Frame(command) = decoder.decode_command().expect("valid stream") {
            out.push(command);
        }
        assert_eq!(decoder.buffered(), 0, "bytes left after the last frame");
        out
    }

    fn decode_one_command(bytes: &[u8]) -> Result<Decoded<Command>, CodecError> {
        let mut decoder = FrameDecoder::new();
        decoder.feed(bytes);
        decoder.decode_command()
    }

    fn decode_one_reply(bytes: &[u8]) -> Result<Decoded<Reply>, CodecError> {
        let mut decoder = FrameDecoder::new();
        decoder.feed(bytes);
        decoder.decode_reply()
    }

    fn command_bytes(command: &Command) -> Vec<u8> {
        let mut out = Vec::new();
        command.encode(&mut out);
        out
    }

    fn reply_bytes(reply: &Reply) -> Vec<u8> {
        let mut out = Vec::new();
        reply.encode(&mut out);
        out
    }

    #[test]
    fn flags_have_the_mfdef_values_and_set_operations() {
        let actions = Actions::ADDHDRS | Actions::CHGHDRS | Actions::ADDRCPT_PAR;
        assert_eq!(actions.bits(), 0x91);
        assert!(actions.contains(Actions::CHGHDRS | Actions::ADDHDRS));
        assert!(!actions.contains(Actions::CHGBODY));
        assert_eq!((actions & Actions::from_bits(0x1FF)).bits(), 0x91);
        assert_eq!(Actions::SETSYMLIST.bits(), 0x100);
        assert!(Actions::empty().is_empty());

        assert_eq!(Protocol::NR_HDR, Protocol::NOHREPL);
        assert_eq!(Protocol::NR_HDR.bits(), 0x80);
        assert_eq!(Protocol::HDR_LEADSPC.bits(), 0x10_0000);
        assert_eq!(Protocol::MDS_256K.bits(), 0x1000_0000);
        assert_eq!(Protocol::MDS_1M.bits(), 0x2000_0000);
        // Every named bit below MDS is what Postfix offers at milter protocol 6.
        let named = Protocol::NAMED
            .iter()
            .filter(|(name, _)| !name.starts_with("MDS"))
            .fold(0, |all, (_, bit)| all | bit);
        assert_eq!(named, 0x1F_FFFF);
        let named = Actions::NAMED.iter().fold(0, |all, (_, bit)| all | bit);
        assert_eq!(named, 0x1FF);

        let mut p = Protocol::NOCONNECT;
        p |= Protocol::NR_BODY;
        p &= Protocol::NR_BODY | Protocol::SKIP;
        assert_eq!(p, Protocol::NR_BODY);
    }

    #[test]
    fn flags_debug_names_known_bits_and_shows_the_rest_in_hex() {
        assert_eq!(
            format!("{:?}", Actions::ADDHDRS | Actions::from_bits(0x8000)),
            "Actions(ADDHDRS | 0x8000)"
        );
        assert_eq!(
            format!("{:?}", Protocol::NOHELO | Protocol::NR_HDR),
            "Protocol(NOHELO | NR_HDR)"
        );
        assert_eq!(format!("{:?}", Actions::empty()), "Actions(0x0)");
    }

    #[test]
    fn command_table_exact_bytes_and_round_trip() {
        let table: Vec<(Command, &[u8])> = vec![
            (
                Command::OptNeg {
                    version: 6,
                    actions: Actions::from_bits(0x1FF),
                    protocol: Protocol::from_bits(0x1F_FFFF),
                },
                b"\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff",
            ),
            (
                macros(b'C', &[("j", "mx.example.org"), ("{daemon_name}", "smtpd")]),
                b"\0\0\0\x27DCj\0mx.example.org\0{daemon_name}\0smtpd\0",
            ),
            (macros(b'T', &[]), b"\0\0\0\x02DT"),
            (
                Command::Connect {
                    hostname: "mail.example.net".into(),
                    family: Family::Inet4,
                    port: 25,
                    address: "192.0.2.1".into(),
                },
                b"\0\0\0\x1fCmail.example.net\x004\x00\x19192.0.2.1\0",
            ),
            (
                Command::Connect {
                    hostname: "[2001:db8::1]".into(),
                    family: Family::Inet6,
                    port: 587,
                    address: "2001:db8::1".into(),
                },
                b"\0\0\0\x1eC[2001:db8::1]\x006\x02\x4b2001:db8::1\0",
            ),
            (
                Command::Connect {
                    hostname: "localhost".into(),
                    family: Family::Unix,
                    port: 0,
                    address: "/run/x.sock".into(),
                },
                b"\0\0\0\x1aClocalhost\0L\0\0/run/x.sock\0",
            ),
            (
                Command::Connect {
                    hostname: "unknown".into(),
                    family: Family::Unknown,
                    port: 0,
                    address: String::new(),
                },
                b"\0\0\0\x0aCunknown\0U",
            ),
            (
                Command::Helo("mx.example.org".into()),
                b"\0\0\0\x10Hmx.example.org\0",
            ),
            (
                Command::Mail(strings(&[
                    "<alice@example.org>",
                    "SIZE=1234",
                    "BODY=8BITMIME",
                ])),
                b"\0\0\0\x2dM<alice@example.org>\0SIZE=1234\0BODY=8BITMIME\0",
            ),
            (Command::Mail(strings(&["<>"])), b"\0\0\0\x04M<>\0"),
            (
                Command::Rcpt(strings(&["<bob@example.com>"])),
                b"\0\0\0\x13R<bob@example.com>\0",
            ),
            (Command::Data, b"\0\0\0\x01T"),
            (
                Command::Header {
                    name: "Subject".into(),
                    value: b"Hello\n\tworld".to_vec(),
                },
                b"\0\0\0\x16LSubject\0Hello\n\tworld\0",
            ),
            (Command::Eoh, b"\0\0\0\x01N"),
            (Command::Body(b"line\r\n".to_vec()), b"\0\0\0\x07Bline\r\n"),
            (Command::BodyEob, b"\0\0\0\x01E"),
            (Command::Abort, b"\0\0\0\x01A"),
            (Command::Quit, b"\0\0\0\x01Q"),
            (Command::QuitNc, b"\0\0\0\x01K"),
            (
                Command::Unknown(b"XCLIENT foo".to_vec()),
                b"\0\0\0\x0dUXCLIENT foo\0",
            ),
        ];
        for (command, bytes) in &table {
            assert_eq!(command_bytes(command), *bytes, "encoding {command:?}");
            assert_eq!(
                decode_one_command(bytes),
                Ok(Decoded::Frame(command.clone())),
                "decoding {command:?}"
            );
        }
        // Every command code appears in the table, so every variant is covered.
        let mut codes: Vec<u8> = table.iter().map(|(c, _)| c.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes, b"ABCDEHKLMNOQRTU");
    }

    #[test]
    fn reply_table_exact_bytes_and_round_trip() {
        let table: Vec<(Reply, &[u8])> = vec![
            (
                Reply::OptNeg {
                    version: 6,
                    actions: Actions::ADDHDRS | Actions::CHGHDRS,
                    protocol: Protocol::NOHELO | Protocol::NR_HDR,
                    macros: vec![],
                },
                b"\0\0\0\x0dO\0\0\0\x06\0\0\0\x11\0\0\0\x82",
            ),
            (
                Reply::OptNeg {
                    version: 6,
                    actions: Actions::empty(),
                    protocol: Protocol::empty(),
                    macros: vec![(0, "j {daemon_name}".into()), (5, "i".into())],
                },
                b"\0\0\0\x27O\0\0\0\x06\0\0\0\0\0\0\0\0\
                  \0\0\0\0j {daemon_name}\0\0\0\0\x05i\0",
            ),
            (Reply::Accept, b"\0\0\0\x01a"),
            (Reply::Continue, b"\0\0\0\x01c"),
            (Reply::Reject, b"\0\0\0\x01r"),
            (Reply::Tempfail, b"\0\0\0\x01t"),
            (Reply::Discard, b"\0\0\0\x01d"),
            (Reply::Shutdown, b"\0\0\0\x014"),
            (Reply::Progress, b"\0\0\0\x01p"),
            (Reply::Skip, b"\0\0\0\x01s"),
            (
                Reply::ReplyCode("550 5.7.1 gone".into()),
                b"\0\0\0\x10y550 5.7.1 gone\0",
            ),
            (
                Reply::AddRcpt("<carol@example.org>".into()),
                b"\0\0\0\x15+<carol@example.org>\0",
            ),
            (
                Reply::AddRcptPar {
                    rcpt: "<carol@example.org>".into(),
                    args: Some("NOTIFY=NEVER".into()),
                },
                b"\0\0\0\x222<carol@example.org>\0NOTIFY=NEVER\0",
            ),
            (
                Reply::AddRcptPar {
                    rcpt: "<carol@example.org>".into(),
                    args: None,
                },
                b"\0\0\0\x152<carol@example.org>\0",
            ),
            (
                Reply::DelRcpt("<bob@example.com>".into()),
                b"\0\0\0\x13-<bob@example.com>\0",
            ),
            (
                Reply::AddHeader {
                    name: "X-Handoff".into(),
                    value: b"departed".to_vec(),
                },
                b"\0\0\0\x14hX-Handoff\0departed\0",
            ),
            (
                Reply::InsHeader {
                    index: 0,
                    name: "X-A".into(),
                    value: b"1".to_vec(),
                },
                b"\0\0\0\x0bi\0\0\0\0X-A\x001\0",
            ),
            (
                Reply::ChgHeader {
                    index: 1,
                    name: "Subject".into(),
                    value: Vec::new(),
                },
                b"\0\0\0\x0em\0\0\0\x01Subject\0\0",
            ),
            (
                Reply::ChgFrom {
                    sender: "<>".into(),
                    args: None,
                },
                b"\0\0\0\x04e<>\0",
            ),
            (
                Reply::ChgFrom {
                    sender: "<a@b>".into(),
                    args: Some("RET=HDRS".into()),
                },
                b"\0\0\0\x10e<a@b>\0RET=HDRS\0",
            ),
            (Reply::Quarantine("held".into()), b"\0\0\0\x06qheld\0"),
            (Reply::ReplBody(b"new\r\n".to_vec()), b"\0\0\0\x06bnew\r\n"),
        ];
        for (reply, bytes) in &table {
            assert_eq!(reply_bytes(reply), *bytes, "encoding {reply:?}");
            assert_eq!(
                decode_one_reply(bytes),
                Ok(Decoded::Frame(reply.clone())),
                "decoding {reply:?}"
            );
        }
        let mut codes: Vec<u8> = table.iter().map(|(r, _)| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes, b"+-24Oabcdehimpqrsty");
    }

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
    fn malformed_commands_give_the_right_error() {
        let code = |byte| FrameCode::command(byte);
        let table: Vec<(&[u8], CodecError)> = vec![
            (b"\0\0\0\0", CodecError::ZeroLength),
            (
                b"\0\0\0\x01Z",
                CodecError::UnknownCode {
                    direction: Direction::Command,
                    byte: b'Z',
                },
            ),
            (
                b"\0\0\0\x02Tx",
                CodecError::UnexpectedPayload {
                    code: code(b'T'),
                    len: 1,
                },
            ),
            (
                b"\0\0\0\x03Qab",
                CodecError::UnexpectedPayload {
                    code: code(b'Q'),
                    len: 2,
                },
            ),
            (
                b"\0\0\0\x01H",
                CodecError::MissingField {
                    code: code(b'H'),
                    field: "helo name",
                },
            ),
            (
                b"\0\0\0\x03Hab",
                CodecError::MissingNul {
                    code: code(b'H'),
                    field: "helo name",
                },
            ),
            (
                b"\0\0\0\x05Hab\0c",
                CodecError::TrailingBytes {
                    code: code(b'H'),
                    count: 1,
                },
            ),
            (
                b"\0\0\0\x07O\0\0\0\x06\0\0",
                CodecError::ShortPayload {
                    code: code(b'O'),
                    field: "actions",
                    needed: 4,
                    got: 2,
                },
            ),
            (
                b"\0\0\0\x0eO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff\0",
                CodecError::TrailingBytes {
                    code: code(b'O'),
                    count: 1,
                },
            ),
            (
                b"\0\0\0\x01D",
                CodecError::MissingField {
                    code: code(b'D'),
                    field: "macro stage",
                },
            ),
            (
                b"\0\0\0\x04DCj\0",
                CodecError::MissingField {
                    code: code(b'D'),
                    field: "macro value",
                },
            ),
            (
                b"\0\0\0\x04Ch\0X",
                CodecError::UnknownFamily {
                    code: code(b'C'),
                    family: b'X',
                },
            ),
            (
                b"\0\0\0\x03Ch\0",
                CodecError::MissingField {
                    code: code(b'C'),
                    field: "address family",
                },
            ),
            (
                b"\0\0\0\x05Ch\x004\0",
                CodecError::ShortPayload {
                    code: code(b'C'),
                    field: "port",
                    needed: 2,
                    got: 1,
                },
            ),
            (
                b"\0\0\0\x06Ch\x004\0\x19",
                CodecError::MissingField {
                    code: code(b'C'),
                    field: "address",
                },
            ),
            (
                b"\0\0\0\x05Ch\0U\0",
                CodecError::TrailingBytes {
                    code: code(b'C'),
                    count: 1,
                },
            ),
            (
                b"\0\0\0\x01M",
                CodecError::MissingField {
                    code: code(b'M'),
                    field: "sender",
                },
            ),
            (
                b"\0\0\0\x06M<>\0SI",
                CodecError::MissingNul {
                    code: code(b'M'),
                    field: "ESMTP parameter",
                },
            ),
            (
                b"\0\0\0\x01R",
                CodecError::MissingField {
                    code: code(b'R'),
                    field: "recipient",
                },
            ),
            (
                b"\0\0\0\x03La\0",
                CodecError::MissingField {
                    code: code(b'L'),
                    field: "header value",
                },
            ),
            (
                b"\0\0\0\x06La\0b\0\0",
                CodecError::TrailingBytes {
                    code: code(b'L'),
                    count: 1,
                },
            ),
            (
                b"\0\0\0\x01U",
                CodecError::MissingField {
                    code: code(b'U'),
                    field: "command line",
                },
            ),
        ];
        for (bytes, error) in table {
            assert_eq!(decode_one_command(bytes), Err(error), "decoding {bytes:?}");
        }
    }

    #[test]
    fn malformed_replies_give_the_right_error() {
        let code = |byte| FrameCode::reply(byte);
        let table: Vec<(&[u8], CodecError)> = vec![
            (b"\0\0\0\0", CodecError::ZeroLength),
            (
                b"\0\0\0\x01f",
                CodecError::UnknownCode {
                    direction: Direction::Reply,
                    byte: b'f',
                },
            ),
            (
                b"\0\0\0\x01T",
                CodecError::UnknownCode {
                    direction: Direction::Reply,
                    byte: b'T',
                },
            ),
            (
                b"\0\0\0\x02cx",
                CodecError::UnexpectedPayload {
                    code: code(b'c'),
                    len: 1,
                },
            ),
            (
                b"\0\0\0\x01y",
                CodecError::MissingField {
                    code: code(b'y'),
                    field: "reply text",
                },
            ),
            (
                b"\0\0\0\x04y550",
                CodecError::MissingNul {
                    code: code(b'y'),
                    field: "reply text",
                },
            ),
            (
                b"\0\0\0\x0fO\0\0\0\x06\0\0\0\0\0\0\0\0\0\x01",
                CodecError::ShortPayload {
                    code: code(b'O'),
                    field: "macro stage",
                    needed: 4,
                    got: 2,
                },
            ),
            (
                b"\0\0\0\x11O\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\x01",
                CodecError::MissingField {
                    code: code(b'O'),
                    field: "macro names",
                },
            ),
            (
                b"\0\0\0\x03i\0\0",
                CodecError::ShortPayload {
                    code: code(b'i'),
                    field: "header index",
                    needed: 4,
                    got: 2,
                },
            ),
            (
                b"\0\0\0\x07m\0\0\0\x01S\0",
                CodecError::MissingField {
                    code: code(b'm'),
                    field: "header value",
                },
            ),
            (
                b"\0\0\0\x08e<>\0a\0b\0",
                CodecError::TrailingBytes {
                    code: code(b'e'),
                    count: 2,
                },
            ),
            (
                b"\0\0\0\x05+<>\0\0",
                CodecError::TrailingBytes {
                    code: code(b'+'),
                    count: 1,
                },
            ),
        ];
        for (bytes, error) in table {
            assert_eq!(decode_one_reply(bytes), Err(error), "decoding {bytes:?}");
        }
    }

    #[test]
    fn error_messages_name_the_frame_and_the_problem() {
        let cases = [
            (
                CodecError::ZeroLength,
                "frame length is 0, so it has no command byte",
            ),
            (
                CodecError::UnknownCode {
                    direction: Direction::Command,
                    byte: 0x05,
                },
                "unknown command byte '\\x05'",
            ),
            (
                CodecError::MissingNul {
                    code: FrameCode::command(b'H'),
                    field: "helo name",
                },
                "command 'H' (HELO): helo name is not NUL-terminated",
            ),
            (
                CodecError::TrailingBytes {
                    code: FrameCode::reply(b'e'),
                    count: 2,
                },
                "reply 'e' (CHGFROM): 2 unexpected bytes after the last field",
            ),
            (
                CodecError::UnknownFamily {
                    code: FrameCode::command(b'C'),
                    family: b'X',
                },
                "command 'C' (CONNECT): unknown address family 'X'",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
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
    fn invalid_utf8_in_strings_is_replaced_but_header_values_are_kept() {
        let mut stream = raw(b'H', b"mx\xff.example\0");
        stream.extend(raw(b'L', b"X-\xfe\0caf\xe9\0"));
        assert_eq!(
            decode_all_commands(&stream),
            [
                Command::Helo("mx\u{FFFD}.example".into()),
                Command::Header {
                    name: "X-\u{FFFD}".into(),
                    value: b"caf\xe9".to_vec(),
                },
            ]
        );
    }

    #[test]
    fn nul_inside_a_string_ends_the_field_on_encode() {
        let reply = Reply::AddHeader {
            name: "X-A\0X-B".into(),
            value: b"1\0evil".to_vec(),
        };
        assert_eq!(reply_bytes(&reply), b"\0\0\0\x07hX-A\x001\0");
        let command = Command::Mail(strings(&["<a@b>\0x", "SIZE=1"]));
        assert_eq!(command_bytes(&command), b"\0\0\0\x0eM<a@b>\0SIZE=1\0");
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

    #[test]
    fn escape_reply_text_doubles_every_percent() {
        assert_eq!(escape_reply_text("no percent"), "no percent");
        assert_eq!(
            escape_reply_text("550 5.7.1 100% gone, 50%% off"),
            "550 5.7.1 100%% gone, 50%%%% off"
        );
    }

    // --- property tests -------------------------------------------------------------------

    /// Strings the wire can carry: any Unicode without NUL.
    fn text() -> impl Strategy<Value = String> {
        "[^\\x00]{0,12}"
    }

    /// Header values and UNKNOWN lines: any bytes but NUL.
    fn nul_free_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(1u8..=255, 0..24)
    }

    fn any_command() -> impl Strategy<Value = Command> {
        let family = prop_oneof![Just(Family::Inet4), Just(Family::Inet6), Just(Family::Unix)];
        prop_oneof![
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(version, a, p)| {
                Command::OptNeg {
                    version,
                    actions: Actions::from_bits(a),
                    protocol: Protocol::from_bits(p),
                }
            }),
            (any::<u8>(), prop::collection::vec((text(), text()), 0..4))
                .prop_map(|(stage, pairs)| Command::Macro { stage, pairs }),
            (text(), family, any::<u16>(), text()).prop_map(|(hostname, family, port, address)| {
                Command::Connect {
                    hostname,
                    family,
                    port,
                    address,
                }
            }),
            text().prop_map(|hostname| Command::Connect {
                hostname,
                family: Family::Unknown,
                port: 0,
                address: String::new(),
            }),
            text().prop_map(Command::Helo),
            prop::collection::vec(text(), 1..4).prop_map(Command::Mail),
            prop::collection::vec(text(), 1..4).prop_map(Command::Rcpt),
            Just(Command::Data),
            (text(), nul_free_bytes()).prop_map(|(name, value)| Command::Header { name, value }),
            Just(Command::Eoh),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(Command::Body),
            Just(Command::BodyEob),
            Just(Command::Abort),
            Just(Command::Quit),
            Just(Command::QuitNc),
            nul_free_bytes().prop_map(Command::Unknown),
        ]
    }

    fn any_reply() -> impl Strategy<Value = Reply> {
        prop_oneof![
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                prop::collection::vec((any::<u32>(), text()), 0..4)
            )
                .prop_map(|(version, a, p, macros)| Reply::OptNeg {
                    version,
                    actions: Actions::from_bits(a),
                    protocol: Protocol::from_bits(p),
                    macros,
                }),
            Just(Reply::Accept),
            Just(Reply::Continue),
            Just(Reply::Reject),
            Just(Reply::Tempfail),
            Just(Reply::Discard),
            Just(Reply::Shutdown),
            text().prop_map(Reply::ReplyCode),
            text().prop_map(Reply::AddRcpt),
            (text(), prop::option::of(text()))
                .prop_map(|(rcpt, args)| Reply::AddRcptPar { rcpt, args }),
            text().prop_map(Reply::DelRcpt),
            (text(), nul_free_bytes()).prop_map(|(name, value)| Reply::AddHeader { name, value }),
            (any::<u32>(), text(), nul_free_bytes())
                .prop_map(|(index, name, value)| Reply::InsHeader { index, name, value }),
            (any::<u32>(), text(), nul_free_bytes())
                .prop_map(|(index, name, value)| Reply::ChgHeader { index, name, value }),
            (text(), prop::option::of(text()))
                .prop_map(|(sender, args)| Reply::ChgFrom { sender, args }),
            text().prop_map(Reply::Quarantine),
            Just(Reply::Progress),
            Just(Reply::Skip),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(Reply::ReplBody),
        ]
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
        fn prop_command_round_trips(command in any_command()) {
            let bytes = command_bytes(&command);
            prop_assert_eq!(decode_one_command(&bytes), Ok(Decoded::Frame(command)));
        }

        #[test]
        fn prop_reply_round_trips(reply in any_reply()) {
            let bytes = reply_bytes(&reply);
            prop_assert_eq!(decode_one_reply(&bytes), Ok(Decoded::Frame(reply)));
        }

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
