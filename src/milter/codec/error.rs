//! What a malformed frame is: [`CodecError`], and the frame code it names, displayed the way
//! libmilter names it (`command 'L' (HEADER)`).

use std::fmt;

use super::codes::{cmd, rep};

/// Whether a frame travels from the MTA to the filter or back; names the code byte in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// MTA to filter: a `Command`.
    Command,
    /// Filter to MTA: a `Reply`.
    Reply,
}

/// The code byte of a frame and its direction, as named in errors: `command 'L' (HEADER)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameCode {
    pub direction: Direction,
    pub byte: u8,
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

impl FrameCode {
    pub(super) fn command(byte: u8) -> Self {
        Self {
            direction: Direction::Command,
            byte,
        }
    }

    pub(super) fn reply(byte: u8) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
