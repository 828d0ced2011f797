//! handoff's loop marker, `X-Handoff-Forwarded`, made unforgeable.
//!
//! A message that comes back carrying the marker for a departed account is kept in that
//! account's mailbox instead of being forwarded again, and gets no auto-reply. A marker anyone
//! can write would let any sender stop both, so each marker carries an HMAC-SHA-256 (RFC 2104)
//! over the account and the day it was added, keyed with a secret only handoff knows:
//!
//! ```text
//! X-Handoff-Forwarded: gone@corp.example; d=2026-12-04; mac=0f3a…(32 hex digits)
//! ```
//!
//! Only a marker whose MAC verifies, dated within [`MAX_AGE_DAYS`] of today, counts; anything
//! else in the header is ignored (and left in place). The date limits how long a genuine marker
//! seen outside (by the successor's mail system, say) can be replayed to stop forwards.
//!
//! Pure: the key is given (the runtime reads it from the state directory), and so is the date.

use hmac::{Hmac, Mac};
use jiff::ToSpan;
use jiff::civil::Date;
use sha2::Sha256;

use crate::address::Address;

/// How old a marker may be and still count. A loop goes through two mail systems; Postfix keeps
/// a message queued up to `maximal_queue_lifetime` (5 days by default), so two queues take at
/// most 10 days for one round.
pub const MAX_AGE_DAYS: i32 = 10;

/// Bytes of the MAC kept in the header: 128 bits, as many as the pair keys of the auto-reply
/// memory; forging one means guessing them.
const MAC_LEN: usize = 16;

/// Domain separation: the key signs nothing else, but a version keeps later formats apart.
const CONTEXT: &[u8] = b"handoff loop marker v1\0";

/// The secret that signs loop markers. Every instance that may see another's markers (the
/// same mail flow, a shared journal or Redis) needs the same one.
#[derive(Clone, PartialEq, Eq)]
pub struct LoopKey(Vec<u8>);

impl std::fmt::Debug for LoopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoopKey(..)")
    }
}

impl LoopKey {
    /// Shortest secret accepted: 128 bits.
    pub const MIN_LEN: usize = 16;

    /// A key from secret bytes; `None` when shorter than [`LoopKey::MIN_LEN`].
    pub fn new(secret: &[u8]) -> Option<LoopKey> {
        (secret.len() >= LoopKey::MIN_LEN).then(|| LoopKey(secret.to_vec()))
    }

    /// The header value that marks `account` as forwarded on `today`.
    pub fn mark(&self, account: &Address, today: Date) -> String {
        let mac = hex::encode(&self.mac(account, today)[..MAC_LEN]);
        format!("{account}; d={today}; mac={mac}")
    }

    /// The account a header value marks, when its MAC is this key's and its date lies within
    /// [`MAX_AGE_DAYS`] before `today` (or one day after, for clocks a little ahead).
    pub fn verify(&self, value: &str, today: Date) -> Option<Address> {
        let mut parts = value.split(';').map(str::trim);
        let account = Address::from_envelope(parts.next()?)?;
        let (mut date, mut mac) = (None, None);
        for part in parts {
            match part.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("d", v)) => date = v.parse::<Date>().ok(),
                Some(("mac", v)) => mac = hex::decode(v).ok(),
                _ => return None,
            }
        }
        let (date, mac) = (date?, mac?);
        if mac.len() != MAC_LEN {
            return None;
        }
        let oldest = today.checked_sub(MAX_AGE_DAYS.days()).ok()?;
        let newest = today.checked_add(1.day()).ok()?;
        if date < oldest || date > newest {
            return None;
        }
        self.hmac(&account, date)
            .verify_truncated_left(&mac)
            .ok()
            .map(|()| account)
    }

    fn hmac(&self, account: &Address, date: Date) -> Hmac<Sha256> {
        // HMAC takes a key of any length (RFC 2104 section 2).
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        m.update(CONTEXT);
        m.update(account.as_str().as_bytes());
        m.update(b"\0");
        m.update(date.to_string().as_bytes());
        m
    }

    fn mac(&self, account: &Address, date: Date) -> Vec<u8> {
        self.hmac(account, date).finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        Address::parse_strict(s).unwrap()
    }

    fn key(b: u8) -> LoopKey {
        LoopKey::new(&[b; 32]).unwrap()
    }

    const TODAY: Date = jiff::civil::date(2026, 12, 4);

    #[test]
    fn a_genuine_marker_verifies() {
        let k = key(1);
        let v = k.mark(&a("gone@corp.example"), TODAY);
        assert!(
            v.starts_with("gone@corp.example; d=2026-12-04; mac="),
            "{v}"
        );
        assert_eq!(k.verify(&v, TODAY), Some(a("gone@corp.example")));
        // Folded or spaced as another system may rewrite it.
        let spaced = v.replace("; ", " ;\n\t");
        assert_eq!(k.verify(&spaced, TODAY), Some(a("gone@corp.example")));
    }

    #[test]
    fn forged_markers_do_not_verify() {
        let k = key(1);
        let genuine = k.mark(&a("gone@corp.example"), TODAY);
        for forged in [
            "gone@corp.example".to_string(),
            "gone@corp.example; d=2026-12-04".to_string(),
            "gone@corp.example; d=2026-12-04; mac=00000000000000000000000000000000".to_string(),
            genuine.replace("gone@", "other@"),
            genuine.replace("d=2026-12-04", "d=2026-12-03"),
            format!("{genuine}; x=1"),
            genuine[..genuine.len() - 2].to_string(),
            String::new(),
        ] {
            assert_eq!(k.verify(&forged, TODAY), None, "{forged}");
        }
        // Another instance's secret.
        assert_eq!(key(2).verify(&genuine, TODAY), None);
        assert!(LoopKey::new(&[0; 15]).is_none());
    }

    #[test]
    fn a_marker_counts_for_ten_days() {
        let k = key(1);
        let account = a("gone@corp.example");
        let day = |d: i32| TODAY.checked_add(d.days()).unwrap();
        assert!(k.verify(&k.mark(&account, day(-10)), TODAY).is_some());
        assert!(k.verify(&k.mark(&account, day(-11)), TODAY).is_none());
        assert!(k.verify(&k.mark(&account, day(1)), TODAY).is_some());
        assert!(k.verify(&k.mark(&account, day(2)), TODAY).is_none());
    }
}
