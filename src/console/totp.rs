//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP): the console's optional second
//! factor. Pure: the time is passed in, so the RFC's test vectors and the window are tested
//! without a clock.
//!
//! The profile every authenticator app implements: HMAC-SHA1, 30-second steps from the Unix
//! epoch, 6 digits, a 160-bit secret (RFC 4226 section 4, R6: at least 128, 160 recommended)
//! shown as unpadded base32 in an `otpauth://` URI. A code is accepted one step early or late
//! (RFC 6238 section 5.2: clocks drift, people type slowly), and never twice: the caller keeps
//! the last step accepted for each user and passes it in (section 5.2: "the verifier MUST NOT
//! accept the second attempt of the OTP after the successful validation").

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// RFC 6238's default time step.
pub const STEP_SECONDS: u64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Bytes of a new secret (160 bits, the size of an HMAC-SHA1 output).
pub const SECRET_BYTES: usize = 20;
/// Steps accepted either side of now.
const SKEW: u64 = 1;

/// RFC 4226's HOTP: the `digits`-digit code for `counter`.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC accepts a key of any length, so this cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    // Dynamic truncation (RFC 4226 section 5.3): 4 bytes at the offset the last nibble names.
    let at = usize::from(h[19] & 0x0f);
    let bin = u32::from_be_bytes([h[at] & 0x7f, h[at + 1], h[at + 2], h[at + 3]]);
    bin % 10u32.pow(digits)
}

/// The time step `unix_seconds` falls in.
pub fn step(unix_seconds: u64) -> u64 {
    unix_seconds / STEP_SECONDS
}

/// The step whose code `typed` is (now, one before or one after), if it is later than
/// `last_used` (the step of the code this user last logged in with). `typed` may hold spaces
/// (apps show `123 456`).
pub fn verify(
    secret: &[u8],
    typed: &str,
    unix_seconds: u64,
    last_used: Option<u64>,
) -> Option<u64> {
    let digits: String = typed.chars().filter(|c| *c != ' ').collect();
    if digits.len() != DIGITS as usize || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step(unix_seconds);
    let mut found = None;
    // Every candidate is computed and compared, so the time does not tell which one matched.
    for s in now.saturating_sub(SKEW)..=now + SKEW {
        let want = format!(
            "{:0width$}",
            hotp(secret, s, DIGITS),
            width = DIGITS as usize
        );
        let fresh = last_used.is_none_or(|l| s > l);
        if bool::from(want.as_bytes().ct_eq(digits.as_bytes())) && fresh && found.is_none() {
            found = Some(s);
        }
    }
    found
}

/// A new random secret.
pub fn new_secret() -> Result<[u8; SECRET_BYTES], String> {
    let mut s = [0u8; SECRET_BYTES];
    getrandom::fill(&mut s).map_err(|e| format!("no random secret: {e}"))?;
    Ok(s)
}

/// The `otpauth://` URI authenticator apps read (Google's Key Uri Format): `user` is a checked
/// console user name (letters, digits, `.`, `_`, `-`, `@`), which is safe in the path as it is.
pub fn uri(user: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/handoff:{user}?secret={}&issuer=handoff&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        base32(secret)
    )
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, without padding (as the URI format wants it).
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The bytes of RFC 4648 base32 text (upper or lower case, padding optional).
pub fn unbase32(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .ok_or_else(|| {
                format!(
                    "`{}` is not a base32 character",
                    char::from(c).escape_debug()
                )
            })?;
        buffer = (buffer << 5) | v as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
        buffer &= (1 << bits) - 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B: the SHA-1 rows (secret "12345678901234567890", 8 digits).
    #[test]
    fn the_rfc_6238_sha1_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(secret, step(time), 8), code, "T = {time}");
        }
        // RFC 4226 appendix D: HOTP, 6 digits, counters 0 and 9.
        assert_eq!(hotp(secret, 0, 6), 755224);
        assert_eq!(hotp(secret, 9, 6), 520489);
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_only_once() {
        let secret = b"12345678901234567890";
        let t = 1111111109;
        let now = format!("{:06}", hotp(secret, step(t), 6));
        assert_eq!(verify(secret, &now, t, None), Some(step(t)));
        assert_eq!(
            verify(secret, &format!("{} {}", &now[..3], &now[3..]), t, None),
            Some(step(t))
        );
        // Replayed: refused once its step was used.
        assert_eq!(verify(secret, &now, t, Some(step(t))), None);
        // The previous and the next step's codes pass; two steps away does not.
        for (s, ok) in [
            (step(t) - 1, true),
            (step(t) + 1, true),
            (step(t) + 2, false),
            (step(t) - 2, false),
        ] {
            let code = format!("{:06}", hotp(secret, s, 6));
            assert_eq!(verify(secret, &code, t, None).is_some(), ok, "step {s}");
        }
        // An older code after a newer one was used: refused.
        let before = format!("{:06}", hotp(secret, step(t) - 1, 6));
        assert_eq!(verify(secret, &before, t, Some(step(t))), None);
        for bad in ["", "12345", "1234567", "abcdef", "１２３４５６"] {
            assert_eq!(verify(secret, bad, t, None), None, "{bad}");
        }
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        // RFC 4648 section 10, without the padding.
        for (raw, enc) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(raw.as_bytes()), enc);
            assert_eq!(unbase32(enc).unwrap(), raw.as_bytes());
            assert_eq!(unbase32(&enc.to_lowercase()).unwrap(), raw.as_bytes());
        }
        assert_eq!(unbase32("MZXW6===").unwrap(), b"foo");
        assert!(unbase32("MZ1W").is_err());
        let s = new_secret().unwrap();
        assert_eq!(unbase32(&base32(&s)).unwrap(), s);
        assert_eq!(
            uri("alice", b"12345678901234567890"),
            "otpauth://totp/handoff:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=handoff&algorithm=SHA1&digits=6&period=30"
        );
    }
}
