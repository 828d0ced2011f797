//! Field reading and writing: the payload cursor both directions parse with, and the frame
//! writer both encode with.

use super::error::{CodecError, FrameCode};

/// Bytes in a length field.
pub(super) const LEN_BYTES: usize = 4;

/// A cursor over one frame's payload that names the frame and the field in every error.
pub(super) struct Fields<'a> {
    code: FrameCode,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(super) fn new(code: FrameCode, payload: &'a [u8]) -> Self {
        Self {
            code,
            rest: payload,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
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

    pub(super) fn byte(&mut self, field: &'static str) -> Result<u8, CodecError> {
        let [byte] = self.fixed::<1>(field)?;
        Ok(byte)
    }

    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        self.fixed(field).map(u16::from_be_bytes)
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        self.fixed(field).map(u32::from_be_bytes)
    }

    /// A NUL-terminated field, without its NUL.
    pub(super) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
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

    /// A NUL-terminated field decoded as UTF-8, invalid sequences replaced (see the
    /// [codec docs](super)).
    pub(super) fn string(&mut self, field: &'static str) -> Result<String, CodecError> {
        self.bytes(field)
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    }

    /// A string field that may be absent at the end of the payload.
    pub(super) fn optional_string(
        &mut self,
        field: &'static str,
    ) -> Result<Option<String>, CodecError> {
        if self.rest.is_empty() {
            Ok(None)
        } else {
            self.string(field).map(Some)
        }
    }

    /// MAIL/RCPT: a required first string, then strings to the end of the payload.
    pub(super) fn arg_list(&mut self, first: &'static str) -> Result<Vec<String>, CodecError> {
        let mut args = vec![self.string(first)?];
        while !self.is_empty() {
            args.push(self.string("ESMTP parameter")?);
        }
        Ok(args)
    }

    pub(super) fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    pub(super) fn finish(self) -> Result<(), CodecError> {
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
pub(super) fn write_frame(out: &mut Vec<u8>, code: u8, payload: impl FnOnce(&mut Vec<u8>)) {
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
pub(super) fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    out.extend_from_slice(&s[..end]);
    out.push(0);
}

#[cfg(test)]
mod tests {
    use crate::milter::codec::testing::*;
    use crate::milter::codec::{Command, Reply};

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
}
