//! The journal's record framing, sans-IO: bytes in, records out.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "HJR1"
//!      4     1  kind (see [`Kind`])
//!      5     3  zero
//!      8     4  meta length, u32 big-endian
//!     12     8  body length, u64 big-endian
//!     20    32  hash of the previous record (zeros before the first record ever written)
//!     52     4  CRC-32 of bytes 0..52
//!     56     …  meta (JSON), then body (the raw message, byte for byte)
//!   end-32  32  SHA-256 over bytes 0..56, the meta and the body
//! ```
//!
//! The header CRC lets a reader trust the two lengths before it reads (a flipped bit in a length
//! cannot make it allocate gigabytes or skip records); the SHA-256 covers everything and, because
//! each header carries the previous record's hash, chains the records: changing, removing,
//! reordering or inserting a record breaks the chain at that point.

use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 4] = *b"HJR1";
pub const HEADER_LEN: usize = 56;
pub const HASH_LEN: usize = 32;
/// Meta is a small JSON document; anything larger is corruption, not data.
pub const MAX_META_LEN: u32 = 16 * 1024 * 1024;

pub type Hash = [u8; HASH_LEN];

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A message accepted from the MTA.
    Message,
    /// A message handoff created (an auto-reply).
    Created,
    /// Someone searched or exported.
    Audit,
    /// First record of a segment: names the segment and links to the previous one.
    SegmentStart,
    /// Last record of a sealed segment.
    Seal,
    /// Whole segments were removed by retention.
    Prune,
    /// A message brought in from an existing mailbox (`handoff archive import`), with where it
    /// came from ([`super::record::ImportedMeta`]).
    Imported,
}

impl Kind {
    pub fn code(self) -> u8 {
        match self {
            Kind::Message => 1,
            Kind::Created => 2,
            Kind::Audit => 3,
            Kind::SegmentStart => 4,
            Kind::Seal => 5,
            Kind::Prune => 6,
            Kind::Imported => 7,
        }
    }

    pub fn from_code(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Message,
            2 => Kind::Created,
            3 => Kind::Audit,
            4 => Kind::SegmentStart,
            5 => Kind::Seal,
            6 => Kind::Prune,
            7 => Kind::Imported,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Created => "created",
            Kind::Audit => "audit",
            Kind::SegmentStart => "segment_start",
            Kind::Seal => "seal",
            Kind::Prune => "prune",
            Kind::Imported => "imported",
        }
    }

    /// Whether the record's body is a message (what search, export and the index read).
    pub fn holds_message(self) -> bool {
        matches!(self, Kind::Message | Kind::Created | Kind::Imported)
    }
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub meta_len: u32,
    pub body_len: u64,
    pub prev: Hash,
}

/// Why bytes are not a valid header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("bad magic (not a record start)")]
    Magic,
    #[error("header checksum mismatch")]
    Crc,
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("meta length {0} is over the limit")]
    MetaTooLong(u32),
}

impl Header {
    /// Total bytes of the record this header starts.
    pub fn record_len(&self) -> u64 {
        // Saturating: a body length near 2^64 (with a valid CRC) is a record longer than any
        // file, not an overflow.
        (HEADER_LEN as u64 + u64::from(self.meta_len) + HASH_LEN as u64)
            .saturating_add(self.body_len)
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = self.kind.code();
        h[8..12].copy_from_slice(&self.meta_len.to_be_bytes());
        h[12..20].copy_from_slice(&self.body_len.to_be_bytes());
        h[20..52].copy_from_slice(&self.prev);
        let crc = crc32fast::hash(&h[..52]);
        h[52..56].copy_from_slice(&crc.to_be_bytes());
        h
    }

    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
        if h[0..4] != MAGIC {
            return Err(HeaderError::Magic);
        }
        let crc = u32::from_be_bytes([h[52], h[53], h[54], h[55]]);
        if crc32fast::hash(&h[..52]) != crc {
            return Err(HeaderError::Crc);
        }
        let kind = Kind::from_code(h[4]).ok_or(HeaderError::Kind(h[4]))?;
        let meta_len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        if meta_len > MAX_META_LEN {
            return Err(HeaderError::MetaTooLong(meta_len));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&h[12..20]);
        let mut prev = [0u8; HASH_LEN];
        prev.copy_from_slice(&h[20..52]);
        Ok(Header {
            kind,
            meta_len,
            body_len: u64::from_be_bytes(len),
            prev,
        })
    }
}

/// Hashes a record as it is written or read: header, meta, then the body in pieces.
pub struct RecordHasher(Sha256);

impl RecordHasher {
    pub fn new(header: &[u8; HEADER_LEN]) -> RecordHasher {
        let mut h = Sha256::new();
        h.update(header);
        RecordHasher(h)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Hash {
        self.0.finalize().into()
    }
}

/// Encodes a whole record held in memory; returns the bytes and the record's hash.
pub fn encode(kind: Kind, prev: &Hash, meta: &[u8], body: &[u8]) -> (Vec<u8>, Hash) {
    let header = Header {
        kind,
        meta_len: meta.len() as u32,
        body_len: body.len() as u64,
        prev: *prev,
    }
    .encode();
    let mut hasher = RecordHasher::new(&header);
    hasher.update(meta);
    hasher.update(body);
    let hash = hasher.finish();
    let mut out = Vec::with_capacity(HEADER_LEN + meta.len() + body.len() + HASH_LEN);
    out.extend_from_slice(&header);
    out.extend_from_slice(meta);
    out.extend_from_slice(body);
    out.extend_from_slice(&hash);
    (out, hash)
}

pub fn hex(hash: &Hash) -> String {
    hex::encode(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_every_bit_flip_is_caught() {
        let h = Header {
            kind: Kind::Message,
            meta_len: 77,
            body_len: 5 << 33,
            prev: [7; 32],
        };
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok(h));
        assert_eq!(h.record_len(), 56 + 77 + (5 << 33) + 32);
        for bit in 0..(HEADER_LEN * 8) {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Header::decode(&b).is_err(),
                "flip of bit {bit} not detected"
            );
        }
    }

    #[test]
    fn record_hash_covers_meta_and_body() {
        let (a, ha) = encode(Kind::Message, &[0; 32], b"{}", b"body");
        let (_, hb) = encode(Kind::Message, &[0; 32], b"{}", b"bodY");
        let (_, hc) = encode(Kind::Message, &[1; 32], b"{}", b"body");
        assert_ne!(ha, hb);
        assert_ne!(ha, hc, "the previous hash is part of the record");
        assert_eq!(a.len(), HEADER_LEN + 2 + 4 + HASH_LEN);
        assert_eq!(&a[a.len() - 32..], &ha);
    }

    #[test]
    fn garbage_headers_are_refused_with_a_reason() {
        assert_eq!(Header::decode(&[0u8; HEADER_LEN]), Err(HeaderError::Magic));
        let mut h = Header {
            kind: Kind::Audit,
            meta_len: MAX_META_LEN + 1,
            body_len: 0,
            prev: [0; 32],
        }
        .encode();
        assert_eq!(
            Header::decode(&h),
            Err(HeaderError::MetaTooLong(MAX_META_LEN + 1))
        );
        h[4] = 99;
        let crc = crc32fast::hash(&h[..52]);
        h[52..56].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(Header::decode(&h), Err(HeaderError::Kind(99)));
    }
}
