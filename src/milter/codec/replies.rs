//! Replies, filter to MTA: what each one carries, its code byte, and how it is encoded (the
//! filter's side) and parsed (the MTA's side, for tests and fakes).

use super::codes::rep;
use super::error::{CodecError, Direction, FrameCode};
use super::fields::{Fields, put_str, write_frame};
use super::flags::{Actions, Protocol};

/// A reply from the filter to the MTA (`SMFIR_*`, libmilter `mfdef.h`).
///
/// Edits (`AddRcpt` … `ReplBody`) are valid only in answer to
/// [`Command::BodyEob`](super::Command::BodyEob), followed by exactly one final reply, or Postfix
/// drops the filter (Postfix `milter8.c` `milter8_event`); enforcing that order is the session's
/// job, not the codec's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `O`: the filter's answer to [`Command::OptNeg`](super::Command::OptNeg), optionally with
    /// the macro names wanted per stage (`stage` 0 CONNECT, 1 HELO, 2 MAIL, 3 RCPT, 4 DATA, 5 EOM,
    /// 6 EOH; `names` space-separated).
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
    /// String fields are written up to their first NUL (see the [codec docs](super)).
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
    pub(super) fn parse(byte: u8, payload: &[u8]) -> Result<Reply, CodecError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milter::codec::Decoded;
    use crate::milter::codec::testing::*;
    use proptest::prelude::*;

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
    fn escape_reply_text_doubles_every_percent() {
        assert_eq!(escape_reply_text("no percent"), "no percent");
        assert_eq!(
            escape_reply_text("550 5.7.1 100% gone, 50%% off"),
            "550 5.7.1 100%% gone, 50%%%% off"
        );
    }

    proptest! {
        #[test]
        fn prop_reply_round_trips(reply in any_reply()) {
            let bytes = reply_bytes(&reply);
            prop_assert_eq!(decode_one_reply(&bytes), Ok(Decoded::Frame(reply)));
        }
    }
}
