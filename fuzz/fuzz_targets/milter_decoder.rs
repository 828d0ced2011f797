//! The milter frame decoder on arbitrary bytes: never panics, and feeding the same bytes split
//! at any point yields the same frames (the decoder keeps no state but its buffer).
#![no_main]

use handoff::milter::codec::{Decoded, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fn frames(chunks: &[&[u8]]) -> Vec<String> {
    let mut d = FrameDecoder::new();
    let mut out = Vec::new();
    for chunk in chunks {
        d.feed(chunk);
        loop {
            match d.decode_command() {
                Ok(Decoded::Frame(c)) => out.push(format!("{c:?}")),
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::TooLarge { declared }) => {
                    out.push(format!("too large {declared}"));
                    return out;
                }
                Err(e) => {
                    out.push(format!("error {e}"));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let whole = frames(&[data]);
    let split = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    let (a, b) = data.split_at(split);
    assert_eq!(whole, frames(&[a, b]), "split at {split}");
});
