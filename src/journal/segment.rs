//! Segment files: naming, listing, and reading records back with their hashes checked.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::format::{HASH_LEN, HEADER_LEN, Hash, Header, HeaderError};
use super::records::Position;

/// `seg-0000000001.hj`: zero-padded so that names sort in segment order.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(segment_name(n))
}

/// The file name of segment `n` (see [`segment_path`]).
pub fn segment_name(n: u64) -> String {
    format!("seg-{n:010}.hj")
}

/// The segment numbers present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("seg-")
            .and_then(|s| s.strip_suffix(".hj"))
            .and_then(|s| s.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The journal's footprint, from the directory alone (no record is read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub segments: usize,
    pub bytes: u64,
    /// When the newest segment was last written: the time of the last record (appends are the
    /// only writes to a segment).
    pub last_write: Option<std::time::SystemTime>,
}

/// The segments in `dir`, their total size and the last write. A directory that does not exist
/// yet is an empty journal.
pub fn usage(dir: &Path) -> io::Result<Usage> {
    UsageCache::default().usage(dir)
}

/// The sizes of segments before the newest, remembered between [`UsageCache::usage`] calls: only
/// the newest segment is ever appended to (the others are sealed and read-only), and a segment
/// retention removed drops out of the listing. So a daemon's `/status` over 50,000 segments
/// lists the directory and stats the segments it has not seen, not all 50,000 each time.
#[derive(Debug, Default)]
pub struct UsageCache(std::sync::Mutex<CachedSizes>);

#[derive(Debug, Default)]
pub struct CachedSizes {
    dir: std::path::PathBuf,
    sizes: std::collections::BTreeMap<u64, (u64, Option<std::time::SystemTime>)>,
}

impl UsageCache {
    /// [`usage`], statting only what may have changed since the last call.
    pub fn usage(&self, dir: &Path) -> io::Result<Usage> {
        let segments = match list_segments(dir) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Usage::default()),
            Err(e) => return Err(e),
        };
        // A poisoned lock only means another call panicked mid-way: the map is still sizes.
        let mut cache = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.dir != dir {
            *cache = CachedSizes {
                dir: dir.to_path_buf(),
                ..CachedSizes::default()
            };
        }
        cache.sizes.retain(|n, _| segments.binary_search(n).is_ok());
        let newest = segments.last().copied();
        let mut usage = Usage {
            segments: segments.len(),
            ..Usage::default()
        };
        for &n in &segments {
            let known = cache.sizes.get(&n).copied().filter(|_| Some(n) != newest);
            let (len, modified) = match known {
                Some(size) => size,
                None => {
                    let meta = std::fs::metadata(segment_path(dir, n))?;
                    let size = (meta.len(), meta.modified().ok());
                    if Some(n) != newest {
                        cache.sizes.insert(n, size);
                    }
                    size
                }
            };
            usage.bytes += len;
            // Ascending order: the newest segment with a record wins (a freshly opened one is empty).
            if len > 0 {
                usage.last_write = modified;
            }
        }
        Ok(usage)
    }
}

/// Where a record is: its segment and byte offset. Stable for the record's whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    pub segment: u64,
    pub offset: u64,
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.segment, self.offset)
    }
}

impl std::str::FromStr for RecordId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}` is not a record id (like 3-4096)"))?;
        let segment = a
            .parse()
            .map_err(|_| format!("`{s}`: bad segment number"))?;
        let offset = b.parse().map_err(|_| format!("`{s}`: bad offset"))?;
        Ok(RecordId { segment, offset })
    }
}

/// A record read back, with its hash verified against its content. The body stays on disk.
#[derive(Debug, Clone)]
pub struct RecordInfo {
    pub id: RecordId,
    pub header: Header,
    pub meta: Vec<u8>,
    pub body_offset: u64,
    pub hash: Hash,
}

impl RecordInfo {
    pub fn end(&self) -> u64 {
        self.id.offset + self.header.record_len()
    }
}

/// Why a record could not be read (see [`super::records`]). A cause is this error's source, not
/// part of its message: print it with its chain (`reason` strings do).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("i/o")]
    Io(#[from] io::Error),
    #[error("record is cut short: it needs {needed} bytes, {available} remain in the file")]
    Incomplete { needed: u64, available: u64 },
    #[error("bad record header")]
    Header(#[from] HeaderError),
    #[error("content does not match its hash (altered or damaged)")]
    HashMismatch,
}

/// The hash a segment file ends with: its last record's (for a sealed segment, the seal's), as
/// stored, not recomputed; `None` for a file too short to hold one. Start-up recovery links
/// the newest segment to it without reading the whole segment before; `verify` recomputes it.
pub fn stored_last_hash(mut file: File) -> io::Result<Option<Hash>> {
    let len = file.metadata()?.len();
    if len < (HEADER_LEN + HASH_LEN) as u64 {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(len - HASH_LEN as u64))?;
    let mut hash = [0u8; HASH_LEN];
    file.read_exact(&mut hash)?;
    Ok(Some(hash))
}

/// The hash stored just before `at` in its segment of the journal in `dir`: the hash of the
/// record that ends there, if one does (`None` when the segment is shorter than `at`). A
/// segment that is not there is a `NotFound` error.
pub fn stored_hash_before(dir: &Path, at: Position) -> io::Result<Option<Hash>> {
    let mut file = File::open(segment_path(dir, at.segment))?;
    let len = file.metadata()?.len();
    let Some(start) = at.offset.checked_sub(HASH_LEN as u64) else {
        return Ok(None);
    };
    if at.offset > len {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(start))?;
    let mut hash = [0u8; HASH_LEN];
    file.read_exact(&mut hash)?;
    Ok(Some(hash))
}

/// Reads a record's body into memory.
pub fn read_body(file: &mut File, info: &RecordInfo) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(info.body_offset))?;
    let mut body = vec![0u8; info.header.body_len as usize];
    file.read_exact(&mut body)?;
    Ok(body)
}

/// Whether a valid record header (magic and CRC) starts anywhere after `from`: tells damage in
/// the middle of a segment (refuse to touch it) from a torn tail (safe to cut).
pub fn valid_header_after(file: &mut File, from: u64, file_len: u64) -> io::Result<Option<u64>> {
    let mut buf = Vec::new();
    file.seek(SeekFrom::Start(from))?;
    file.take(file_len - from).read_to_end(&mut buf)?;
    for i in 1..buf.len().saturating_sub(HEADER_LEN - 1) {
        if buf[i..i + 4] == super::format::MAGIC {
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&buf[i..i + HEADER_LEN]);
            if Header::decode(&h).is_ok() {
                return Ok(Some(from + i as u64));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, n: u64, len: usize) {
        std::fs::write(segment_path(dir, n), vec![0u8; len]).unwrap();
    }

    /// The cached figures equal a fresh listing as segments grow, are added and are pruned; a
    /// segment before the newest is statted once (sealed segments never change).
    #[test]
    fn the_usage_cache_agrees_with_a_fresh_listing() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let cache = UsageCache::default();
        assert_eq!(cache.usage(dir).unwrap(), Usage::default());
        write(dir, 1, 100);
        write(dir, 2, 50);
        assert_eq!(cache.usage(dir).unwrap(), usage(dir).unwrap());
        write(dir, 2, 70); // the newest grows
        write(dir, 3, 0); // a new, empty newest: the last write stays segment 2's
        let u = cache.usage(dir).unwrap();
        assert_eq!((u.segments, u.bytes), (3, 170));
        assert_eq!(u, usage(dir).unwrap());
        std::fs::remove_file(segment_path(dir, 1)).unwrap(); // pruned
        assert_eq!(cache.usage(dir).unwrap(), usage(dir).unwrap());
        // Segment 2 is no longer the newest: its size is remembered, not statted again.
        write(dir, 2, 1);
        assert_eq!(cache.usage(dir).unwrap().bytes, 70);
        assert_eq!(usage(dir).unwrap().bytes, 1);
    }
}
