//! A message on its way into the journal, as the MTA streams it: kept in memory while small,
//! spilled to an unnamed temporary file beside the journal when it grows, so a 50 MiB message
//! costs a 64 KiB buffer, not 50 MiB of memory.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::writer::Body;

/// Messages up to this size stay in memory.
pub const IN_MEMORY: usize = 64 * 1024;

/// Room reserved for a message's first bytes: most messages fit, so the buffer is not grown and
/// copied again and again, header by header.
const FIRST_RESERVE: usize = 16 * 1024;

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    mem: Vec<u8>,
    file: Option<io::BufWriter<File>>,
    len: u64,
}

impl Spool {
    /// A spool whose overflow file goes in `dir` (the journal's directory: same file system, so
    /// the copy into the journal never crosses devices, and the same owner-only permissions).
    pub fn new(dir: &Path) -> Spool {
        Spool {
            dir: dir.to_path_buf(),
            mem: Vec::new(),
            file: None,
            len: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.len += bytes.len() as u64;
        if let Some(f) = self.file.as_mut() {
            return f.write_all(bytes);
        }
        if self.mem.len() + bytes.len() <= IN_MEMORY {
            if self.mem.capacity() == 0 {
                self.mem.reserve(FIRST_RESERVE.max(bytes.len()));
            }
            self.mem.extend_from_slice(bytes);
            return Ok(());
        }
        // The file has no name (O_TMPFILE or unlinked at once): a crash leaves nothing behind.
        let mut f = io::BufWriter::with_capacity(IN_MEMORY, tempfile::tempfile_in(&self.dir)?);
        f.write_all(&self.mem)?;
        f.write_all(bytes)?;
        self.mem = Vec::new();
        self.file = Some(f);
        Ok(())
    }

    /// The spooled bytes, ready to be appended.
    pub fn into_body(self) -> io::Result<Body> {
        match self.file {
            None => Ok(Body::Bytes(self.mem)),
            Some(f) => {
                let file = f.into_inner().map_err(|e| e.into_error())?;
                Ok(Body::File {
                    file,
                    len: self.len,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn small_stays_in_memory_large_spills_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new(dir.path());
        s.write(b"Subject: x\r\n\r\n").unwrap();
        assert!(matches!(s.into_body().unwrap(), Body::Bytes(b) if b == b"Subject: x\r\n\r\n"));

        let mut s = Spool::new(dir.path());
        let chunk: Vec<u8> = (0..65535u32).map(|i| (i % 251) as u8).collect();
        for _ in 0..40 {
            s.write(&chunk).unwrap();
        }
        assert_eq!(s.len(), 40 * 65535);
        let Body::File { mut file, len } = s.into_body().unwrap() else {
            panic!("expected a spill file")
        };
        assert_eq!(len, 40 * 65535);
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back.len() as u64, len);
        assert!(back.chunks(65535).all(|c| c == chunk.as_slice()));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the spill file has no name"
        );
    }
}
