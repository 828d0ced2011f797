//! The Sender Rewriting Scheme (SRS) for mail handoff forwards out of the company, in the
//! format of libsrs2 and postsrsd, so that either can read what handoff writes and back:
//!
//! - **SRS0** `SRS0=HHHH=TT=domain=local@srs-domain`: a sender from elsewhere, rewritten into
//!   the SRS domain. `TT` is the day (two base32 characters of days since 1970 modulo 1024),
//!   `HHHH` the first four base64 characters of HMAC-SHA1 over `TT`, `domain` and `local`,
//!   lower-cased (so that an MTA folding the case of the address on the way back breaks
//!   nothing; hashes compare case-insensitively for the same reason).
//! - **SRS1** `SRS1=HHHH=first-hop==HHHH=TT=domain=local@srs-domain`: a sender that another
//!   forwarder already rewrote. Its address is not wrapped again (it would grow with each hop):
//!   handoff names the first hop and signs the first hop's part with its own hash, over
//!   `first-hop` and the rest. A bounce to it goes back to the first hop's SRS0 address.
//!
//! Several secrets may be configured: the first signs, every one verifies, so a new secret can
//! be put first while addresses signed with the old one are still in flight. An SRS0 address
//! is valid for [`MAX_AGE_DAYS`] days (libsrs2's default); the timestamp wraps around every
//! 1024 days, and the age is counted modulo that.
//!
//! Pure: no I/O, no clock. The caller passes the day and the secrets; this module never logs
//! and its `Debug` never shows a secret.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Days an SRS0 address stays valid (libsrs2's and postsrsd's `maxage`).
pub const MAX_AGE_DAYS: u32 = 21;

/// Characters of the hash kept in an address (libsrs2's `hashlength`); shorter ones are refused.
const HASH_LEN: usize = 4;

/// The alphabet of the timestamp (RFC 4648 base32), 5 bits a character.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// 1024: two base32 characters.
const TIME_SLOTS: i64 = 1 << 10;

/// Separators libsrs2 accepts right after the `SRS0`/`SRS1` tag; handoff writes `=`.
const TAG_SEPARATORS: &[char] = &['=', '-', '+'];

/// Why an address could not be rewritten or reversed. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrsError {
    #[error("no SRS secret is configured")]
    NoSecret,
    #[error("`{0}` has no `@domain` part")]
    NoDomain(String),
    #[error("`{0}` is not a well-formed SRS address")]
    Malformed(String),
    #[error("`{0}` has a timestamp that is not two base32 characters")]
    BadTimestamp(String),
    #[error("`{0}` has expired (SRS addresses are valid for {MAX_AGE_DAYS} days)")]
    Expired(String),
    #[error("`{0}` has a hash that none of the SRS secrets made")]
    Forged(String),
}

/// One secret, bytes as written in the secret file. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The rewriter: the SRS domain and the secrets, the first of which signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srs {
    domain: String,
    secrets: Vec<Secret>,
}

/// What [`Srs::reverse`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reversed {
    /// Not an SRS address (no `SRS0`/`SRS1` tag): not this module's to judge.
    NotSrs,
    /// The address the SRS address stands for.
    Address(String),
}

impl Srs {
    /// `domain`: the SRS domain, in the form the address module gives domains (lower case,
    /// A-labels). `secrets`: the first signs; none is an error.
    pub fn new(domain: impl Into<String>, secrets: Vec<Secret>) -> Result<Srs, SrsError> {
        if secrets.is_empty() || secrets.iter().any(|s| s.0.is_empty()) {
            return Err(SrsError::NoSecret);
        }
        Ok(Srs {
            domain: domain.into(),
            secrets,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Rewrites the envelope sender `local@domain` for a forward on `day` (days since
    /// 1970-01-01): SRS0, or SRS1 for a sender already rewritten by someone else. A sender in
    /// the SRS domain itself is returned unchanged (it is handoff's own, libsrs2 does the same).
    pub fn forward(&self, sender: &str, day: i64) -> Result<String, SrsError> {
        let (local, domain) = sender
            .rsplit_once('@')
            .filter(|(l, d)| !l.is_empty() && !d.is_empty())
            .ok_or_else(|| SrsError::NoDomain(sender.to_string()))?;
        if domain.eq_ignore_ascii_case(&self.domain) {
            return Ok(sender.to_string());
        }
        // `=` separates the fields: a domain holding one (no DNS name does) would be read back
        // as a different sender under the same hash, since the hash covers the fields joined.
        if domain.contains('=') {
            return Err(malformed(sender));
        }
        if let Some(rest) = tagged(local, "SRS1") {
            // `SRS1=HHHH=hop==...@elsewhere`: keep the first hop and its part, sign anew.
            let (_hash, rest) = field(rest).ok_or_else(|| malformed(sender))?;
            let (hop, user) = field(rest).ok_or_else(|| malformed(sender))?;
            if hop.is_empty() || user.is_empty() {
                return Err(malformed(sender));
            }
            return Ok(self.srs1(hop, user));
        }
        if tagged(local, "SRS0").is_some() {
            // `SRS0=HHHH=TT=d=l@hop`: the first hop is the address's domain, its part is all
            // after the tag (separator included, as libsrs2 keeps it).
            return Ok(self.srs1(domain, &local[4..]));
        }
        let stamp = timestamp(day);
        let hash = self.hash(0, &[&stamp, domain, local]);
        Ok(format!(
            "SRS0={hash}={stamp}={domain}={local}@{}",
            self.domain
        ))
    }

    fn srs1(&self, hop: &str, user: &str) -> String {
        let hash = self.hash(0, &[hop, user]);
        format!("SRS1={hash}={hop}={user}@{}", self.domain)
    }

    /// What an address in the SRS domain stands for on `day`: the original sender of an SRS0
    /// address, the first hop's SRS0 address of an SRS1 one. The domain is not checked here
    /// (the caller routes by it). A wrong hash, an expired or a malformed SRS address is an
    /// error; an address without an SRS tag is [`Reversed::NotSrs`].
    pub fn reverse(&self, address: &str, day: i64) -> Result<Reversed, SrsError> {
        let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
        if let Some(rest) = tagged(local, "SRS1") {
            let (hash, rest) = field(rest).ok_or_else(|| malformed(address))?;
            let (hop, user) = field(rest).ok_or_else(|| malformed(address))?;
            if hash.is_empty() || hop.is_empty() || user.is_empty() {
                return Err(malformed(address));
            }
            self.check_hash(address, hash, &[hop, user])?;
            return Ok(Reversed::Address(format!("SRS0{user}@{hop}")));
        }
        if let Some(rest) = tagged(local, "SRS0") {
            let (hash, rest) = field(rest).ok_or_else(|| malformed(address))?;
            let (stamp, rest) = field(rest).ok_or_else(|| malformed(address))?;
            let (domain, user) = field(rest).ok_or_else(|| malformed(address))?;
            if hash.is_empty() || domain.is_empty() || user.is_empty() {
                return Err(malformed(address));
            }
            // The hash first: an address handoff never made is forged, whatever its date says.
            self.check_hash(address, hash, &[stamp, domain, user])?;
            check_timestamp(address, stamp, day)?;
            return Ok(Reversed::Address(format!("{user}@{domain}")));
        }
        Ok(Reversed::NotSrs)
    }

    fn check_hash(&self, address: &str, hash: &str, data: &[&str]) -> Result<(), SrsError> {
        // libsrs2 refuses a hash shorter than its length and compares a longer one on its first
        // `hashlength` characters.
        let Some(given) = hash.get(..HASH_LEN).filter(|_| hash.is_ascii()) else {
            return Err(SrsError::Forged(address.to_string()));
        };
        let genuine =
            (0..self.secrets.len()).any(|i| self.hash(i, data).eq_ignore_ascii_case(given));
        match genuine {
            true => Ok(()),
            false => Err(SrsError::Forged(address.to_string())),
        }
    }

    /// The first [`HASH_LEN`] base64 characters of HMAC-SHA1 with secret `index` over `data`,
    /// lower-cased (libsrs2 lower-cases the data before hashing).
    fn hash(&self, index: usize, data: &[&str]) -> String {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&self.secrets[index].0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        for d in data {
            mac.update(d.to_ascii_lowercase().as_bytes());
        }
        let digest = mac.finalize().into_bytes();
        let mut text = base64::engine::general_purpose::STANDARD.encode(digest);
        text.truncate(HASH_LEN);
        text
    }
}

/// The day number (days since 1970-01-01) of `date`, for [`Srs::forward`] and [`Srs::reverse`].
pub fn day_number(date: jiff::civil::Date) -> i64 {
    let epoch = jiff::civil::date(1970, 1, 1);
    // Every civil date is within jiff's span limits from 1970 in days.
    epoch
        .until((jiff::Unit::Day, date))
        .map_or(0, |span| i64::from(span.get_days()))
}

/// The rest of `local` after `tag` (case-insensitive) and one of libsrs2's separators.
fn tagged<'a>(local: &'a str, tag: &str) -> Option<&'a str> {
    let head = local.get(..tag.len())?;
    let rest = &local[tag.len()..];
    let sep = rest.chars().next()?;
    (head.eq_ignore_ascii_case(tag) && TAG_SEPARATORS.contains(&sep)).then(|| &rest[1..])
}

/// Splits at the first `=`: the field and what follows it.
fn field(s: &str) -> Option<(&str, &str)> {
    s.split_once('=')
}

fn malformed(address: &str) -> SrsError {
    SrsError::Malformed(address.to_string())
}

/// Two base32 characters of `day` modulo 1024, high bits first.
fn timestamp(day: i64) -> String {
    let t = day.rem_euclid(TIME_SLOTS) as usize;
    let chars = [BASE32[t >> 5], BASE32[t & 31]];
    chars.iter().map(|&b| b as char).collect()
}

/// Whether the timestamp is at most [`MAX_AGE_DAYS`] old on `day`, counting modulo 1024 as
/// libsrs2 does: a stamp "from the future" is one that wrapped around, and too old.
fn check_timestamp(address: &str, stamp: &str, day: i64) -> Result<(), SrsError> {
    let bad = || SrsError::BadTimestamp(address.to_string());
    if stamp.len() != 2 {
        return Err(bad());
    }
    let mut then = 0i64;
    for b in stamp.bytes() {
        let i = BASE32
            .iter()
            .position(|&c| c == b.to_ascii_uppercase())
            .ok_or_else(bad)?;
        then = (then << 5) | i as i64;
    }
    let age = (day.rem_euclid(TIME_SLOTS) - then).rem_euclid(TIME_SLOTS);
    match age <= i64::from(MAX_AGE_DAYS) {
        true => Ok(()),
        false => Err(SrsError::Expired(address.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 20_000;

    fn srs() -> Srs {
        Srs::new("srs.corp.example", vec![Secret::new("s3cret")]).unwrap()
    }

    fn reversed(s: &Srs, a: &str, day: i64) -> Result<String, SrsError> {
        match s.reverse(a, day)? {
            Reversed::Address(a) => Ok(a),
            Reversed::NotSrs => panic!("{a} is not SRS"),
        }
    }

    /// The hash as libsrs2 computes it, worked out independently: HMAC-SHA1 of the
    /// concatenated lower-cased fields, standard base64, four characters.
    fn reference_hash(secret: &str, data: &str) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(data.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())[..4]
            .to_string()
    }

    #[test]
    fn srs0_has_the_libsrs2_shape_and_round_trips() {
        let s = srs();
        let a = s.forward("Alice@example.net", DAY).unwrap();
        // 20000 mod 1024 = 544 = 17*32 + 0: `R` `A`.
        let hash = reference_hash("s3cret", "raexample.netalice");
        assert_eq!(
            a,
            format!("SRS0={hash}=RA=example.net=Alice@srs.corp.example")
        );
        assert_eq!(reversed(&s, &a, DAY).unwrap(), "Alice@example.net");
    }

    #[test]
    fn srs1_for_an_already_rewritten_sender_round_trips() {
        let s = srs();
        let first = "SRS0=abcd=RA=example.net=alice@fwd.example";
        let a = s.forward(first, DAY).unwrap();
        let hash = reference_hash("s3cret", "fwd.example=abcd=ra=example.net=alice");
        assert_eq!(
            a,
            format!("SRS1={hash}=fwd.example==abcd=RA=example.net=alice@srs.corp.example")
        );
        // The bounce goes back to the first hop, which checks its own hash.
        assert_eq!(reversed(&s, &a, DAY).unwrap(), first);
        // An SRS1 sender is not wrapped again: the first hop and its part stay.
        let again = Srs::new("other.example", vec![Secret::new("x")]).unwrap();
        let b = again.forward(&a, DAY).unwrap();
        assert!(
            b.starts_with("SRS1=")
                && b.ends_with("=fwd.example==abcd=RA=example.net=alice@other.example"),
            "{b}"
        );
        assert_eq!(reversed(&again, &b, DAY).unwrap(), first);
        // No expiry on SRS1 (the first hop's SRS0 carries the date).
        assert!(reversed(&s, &a, DAY + 500).is_ok());
    }

    #[test]
    fn the_hash_and_the_address_compare_without_case() {
        let s = srs();
        let a = s.forward("alice@example.net", DAY).unwrap();
        for folded in [a.to_ascii_lowercase(), a.to_ascii_uppercase()] {
            let back = reversed(&s, &folded, DAY).unwrap();
            assert!(back.eq_ignore_ascii_case("alice@example.net"), "{back}");
        }
    }

    #[test]
    fn timestamps_wrap_around_every_1024_days() {
        let s = srs();
        // Signed on the last day of a 1024-day cycle, checked in the next one.
        let day = 1023 + 1024 * 19;
        let a = s.forward("a@example.net", day).unwrap();
        assert!(a.contains("=77="), "{a}");
        assert_eq!(reversed(&s, &a, day + 5).unwrap(), "a@example.net");
        assert_eq!(reversed(&s, &a, day + 21).unwrap(), "a@example.net");
        assert!(matches!(s.reverse(&a, day + 22), Err(SrsError::Expired(_))));
        // One whole cycle later the stamp reads as new again: libsrs2 has the same window.
        assert!(s.reverse(&a, day + 1024).is_ok());
    }

    #[test]
    fn expires_after_21_days_and_refuses_the_future() {
        let s = srs();
        let a = s.forward("a@example.net", DAY).unwrap();
        assert!(s.reverse(&a, DAY + 21).is_ok());
        assert_eq!(s.reverse(&a, DAY + 22), Err(SrsError::Expired(a.clone())));
        // A stamp from tomorrow wrapped around: 1023 days old.
        assert!(matches!(s.reverse(&a, DAY - 1), Err(SrsError::Expired(_))));
    }

    #[test]
    fn the_first_secret_signs_and_every_secret_verifies() {
        let old = srs();
        let a = old.forward("a@example.net", DAY).unwrap();
        let rotated = Srs::new(
            "srs.corp.example",
            vec![Secret::new("n3w"), Secret::new("s3cret")],
        )
        .unwrap();
        assert_eq!(reversed(&rotated, &a, DAY).unwrap(), "a@example.net");
        let b = rotated.forward("a@example.net", DAY).unwrap();
        assert_ne!(a, b);
        // Signed with the new secret: the old configuration alone does not know it.
        assert!(matches!(old.reverse(&b, DAY), Err(SrsError::Forged(_))));
        let dropped = Srs::new("srs.corp.example", vec![Secret::new("n3w")]).unwrap();
        assert!(matches!(dropped.reverse(&a, DAY), Err(SrsError::Forged(_))));
    }

    #[test]
    fn a_forged_hash_is_refused() {
        let s = srs();
        let a = s.forward("a@example.net", DAY).unwrap();
        let hash = &a[5..9];
        let other = if hash.starts_with('A') { "B" } else { "A" };
        let forged = format!("SRS0={other}{}", &a[6..]);
        assert_eq!(
            s.reverse(&forged, DAY),
            Err(SrsError::Forged(forged.clone()))
        );
        // A different sender under a genuine hash.
        let swapped = a.replace("=a@", "=b@");
        assert!(matches!(s.reverse(&swapped, DAY), Err(SrsError::Forged(_))));
        // Too short a hash.
        let short = format!("SRS0={}={}", &hash[..3], &a[10..]);
        assert!(matches!(s.reverse(&short, DAY), Err(SrsError::Forged(_))));
        // SRS1 with a forged hash.
        let one = s
            .forward("SRS0=abcd=RA=example.net=a@fwd.example", DAY)
            .unwrap();
        let forged1 = format!("SRS1=zzzz{}", &one[9..]);
        assert!(matches!(s.reverse(&forged1, DAY), Err(SrsError::Forged(_))));
    }

    #[test]
    fn malformed_addresses_are_errors_or_not_srs() {
        let s = srs();
        for bad in [
            "SRS0=@srs.corp.example",
            "SRS0=abcd@srs.corp.example",
            "SRS0=abcd=RA@srs.corp.example",
            "SRS0=abcd=RA=example.net@srs.corp.example",
            "SRS0=abcd=RA=example.net=@srs.corp.example",
            "SRS0==RA=example.net=a@srs.corp.example",
            "SRS1=abcd@srs.corp.example",
            "SRS1=abcd=fwd.example@srs.corp.example",
            "SRS1=abcd==x@srs.corp.example",
        ] {
            assert!(
                matches!(s.reverse(bad, DAY), Err(SrsError::Malformed(_))),
                "{bad}: {:?}",
                s.reverse(bad, DAY)
            );
        }
        for plain in [
            "postmaster@srs.corp.example",
            "SRS2=x@srs.corp.example",
            "SRS0",
            "",
            "SRS0x=a",
        ] {
            assert_eq!(s.reverse(plain, DAY), Ok(Reversed::NotSrs), "{plain}");
        }
        // A genuine hash with a stamp that is not base32.
        let a = s.forward("a@example.net", DAY).unwrap();
        let bad_stamp = a.replace("=RA=", "=R1=");
        assert!(matches!(
            s.reverse(&bad_stamp, DAY),
            Err(SrsError::Forged(_))
        ));
        assert!(matches!(
            s.forward("nodomain", DAY),
            Err(SrsError::NoDomain(_))
        ));
        assert!(matches!(
            s.forward("SRS1=x@fwd.example", DAY),
            Err(SrsError::Malformed(_))
        ));
        assert_eq!(Srs::new("d", vec![]), Err(SrsError::NoSecret));
    }

    #[test]
    fn a_sender_in_the_srs_domain_is_kept_and_secrets_never_show() {
        let s = srs();
        assert_eq!(
            s.forward("bounce@SRS.corp.example", DAY).unwrap(),
            "bounce@SRS.corp.example"
        );
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn day_numbers_count_from_1970() {
        assert_eq!(day_number(jiff::civil::date(1970, 1, 1)), 0);
        assert_eq!(day_number(jiff::civil::date(2024, 10, 4)), 20_000);
    }
}
