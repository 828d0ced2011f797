//! What the codec's tests share: frames built by hand, one-shot encoding and decoding, and
//! proptest strategies for any command and any reply.

use proptest::prelude::*;

use super::*;

/// A frame built by hand, independently of `encode`: BE length, code byte, payload.
pub(super) fn raw(code: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len() + 1).expect("test frames are small");
    let mut frame = len.to_be_bytes().to_vec();
    frame.push(code);
    frame.extend_from_slice(payload);
    frame
}

/// NUL-terminated strings end to end, as lists travel on the wire.
pub(super) fn strs(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(part);
        out.push(0);
    }
    out
}

pub(super) fn macro_payload(stage: u8, pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![stage];
    for (name, value) in pairs {
        out.extend(strs(&[name.as_bytes(), value.as_bytes()]));
    }
    out
}

pub(super) fn macros(stage: u8, pairs: &[(&str, &str)]) -> Command {
    Command::Macro {
        stage,
        pairs: pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

pub(super) fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Decodes every whole command in `bytes`, failing the test on errors and leftovers.
pub(super) fn decode_all_commands(bytes: &[u8]) -> Vec<Command> {
    let mut decoder = FrameDecoder::new();
    decoder.feed(bytes);
    let mut out = Vec::new();
    while let Decoded::Frame(command) = decoder.decode_command().expect("valid stream") {
        out.push(command);
    }
    assert_eq!(decoder.buffered(), 0, "bytes left after the last frame");
    out
}

pub(super) fn decode_one_command(bytes: &[u8]) -> Result<Decoded<Command>, CodecError> {
    let mut decoder = FrameDecoder::new();
    decoder.feed(bytes);
    decoder.decode_command()
}

pub(super) fn decode_one_reply(bytes: &[u8]) -> Result<Decoded<Reply>, CodecError> {
    let mut decoder = FrameDecoder::new();
    decoder.feed(bytes);
    decoder.decode_reply()
}

pub(super) fn command_bytes(command: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    command.encode(&mut out);
    out
}

pub(super) fn reply_bytes(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    reply.encode(&mut out);
    out
}

/// Strings the wire can carry: any Unicode without NUL.
pub(super) fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,12}"
}

/// Header values and UNKNOWN lines: any bytes but NUL.
pub(super) fn nul_free_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, 0..24)
}

pub(super) fn any_command() -> impl Strategy<Value = Command> {
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

pub(super) fn any_reply() -> impl Strategy<Value = Reply> {
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
