//! Commands, MTA to filter: what each one carries, its code byte, and how it is encoded (the
//! MTA's side, for tests and fakes) and parsed (the filter's side).

use super::codes::{cmd, fam};
use super::error::{CodecError, Direction, FrameCode};
use super::fields::{Fields, put_str, write_frame};
use super::flags::{Actions, Protocol};

/// A command from the MTA to the filter (`SMFIC_*`, libmilter `mfdef.h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `O`: the MTA's offer; the filter answers [`Reply::OptNeg`](super::Reply::OptNeg).
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
    /// String fields are written up to their first NUL (see the [codec docs](super)).
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
    pub(super) fn parse(byte: u8, payload: &[u8]) -> Result<Command, CodecError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milter::codec::Decoded;
    use crate::milter::codec::testing::*;
    use proptest::prelude::*;

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

    proptest! {
        #[test]
        fn prop_command_round_trips(command in any_command()) {
            let bytes = command_bytes(&command);
            prop_assert_eq!(decode_one_command(&bytes), Ok(Decoded::Frame(command)));
        }
    }
}
