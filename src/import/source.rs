//! Reading messages out of mail files (the I/O edge of the import): `.eml` files and
//! directories of them, mbox files ([`super::mbox`] splits them), Maildir with its subfolders.
//!
//! Every message is copied once into a [`Spool`] (memory while small, an unnamed file in the
//! journal's directory beyond that) while it is hashed: the bytes hashed are the bytes the
//! journal gets, even if the file changes under the import, and a 50 MiB message costs a
//! buffer, not 50 MiB of memory.

use std::fs::{File, Metadata};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::mbox::{self, Piece, Quoting, Splitter};
use crate::journal::spool::Spool;
use crate::journal::writer::Body;

/// What the header is looked for in: the first bytes of a message.
pub const HEAD: usize = 64 * 1024;

/// The kind of files a source is, as `--format` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tell from the path: a directory with `cur/` or `new/` (its own or a Maildir++
    /// `.Folder`'s) is a Maildir, another directory
    /// holds `.eml` files; a file that starts with a From_ line is an mbox, another is one
    /// message.
    Auto,
    Eml,
    Mbox,
    Maildir,
}

/// The kind of a source, once known (the provenance's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Eml,
    Mbox,
    Maildir,
    Imap,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Eml => "eml",
            Kind::Mbox => "mbox",
            Kind::Maildir => "maildir",
            Kind::Imap => "imap",
        }
    }
}

/// One message read from a source: spooled and hashed.
#[derive(Debug)]
pub struct Found {
    /// The folder it is filed under at the source (`INBOX`, `Sent`, `Archive/2024`).
    pub folder: String,
    pub path: PathBuf,
    /// Where its From_ line starts, in an mbox.
    pub offset: Option<u64>,
    /// The file's modification time: the time when the message's own Date is no good.
    pub mtime: Timestamp,
    pub body: Body,
    pub sha256: [u8; 32],
    /// The message's first [`HEAD`] bytes.
    pub head: Vec<u8>,
    /// IMAP: the mailbox's UIDVALIDITY and the message's UID.
    pub uid: Option<(u32, u32)>,
}

/// What a source yields: a message, or a piece of it that is no message, with why.
#[derive(Debug)]
pub enum Item {
    Message(Found),
    Failed { path: String, reason: String },
}

/// Which kind of source `path` is.
pub fn detect(path: &Path, format: Format) -> io::Result<Kind> {
    let meta = std::fs::metadata(path)?;
    Ok(match format {
        Format::Eml => Kind::Eml,
        Format::Mbox => Kind::Mbox,
        Format::Maildir => Kind::Maildir,
        Format::Auto if meta.is_dir() => match is_maildir(path) || has_maildirpp(path)? {
            true => Kind::Maildir,
            false => Kind::Eml,
        },
        Format::Auto => {
            let mut first = Vec::with_capacity(mbox::LOOK);
            File::open(path)?
                .take(mbox::LOOK as u64)
                .read_to_end(&mut first)?;
            let line = first.split_inclusive(|&b| b == b'\n').next().unwrap_or(&[]);
            match mbox::is_from_line(line) {
                true => Kind::Mbox,
                false => Kind::Eml,
            }
        }
    })
}

fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir() || dir.join("new").is_dir()
}

/// Whether `dir` has a Maildir++ folder (a Maildir whose INBOX was never created).
fn has_maildirpp(dir: &Path) -> io::Result<bool> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if maildirpp_folder(&e.file_name().to_string_lossy()).is_some() && is_maildir(&e.path()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Calls `f` with every message (or failure) of the source at `path`, in a stable order:
/// folders and files by name, an mbox front to back. An error reading the source itself (it
/// is gone, a directory cannot be listed) ends the walk; a file that cannot be read is an
/// [`Item::Failed`] and the walk goes on.
pub fn each<E: From<io::Error>>(
    path: &Path,
    kind: Kind,
    quoting: Quoting,
    spool_dir: &Path,
    f: &mut dyn FnMut(Item) -> Result<(), E>,
) -> Result<(), E> {
    match kind {
        Kind::Mbox => {
            let folder = mbox_folder(path);
            read_mbox(path, &folder, quoting, spool_dir, f)
        }
        Kind::Eml => {
            let mut files = Vec::new();
            if std::fs::metadata(path)?.is_dir() {
                eml_files(path, "", &mut files)?;
            } else {
                files.push(("INBOX".to_string(), path.to_path_buf()));
            }
            for (folder, file) in files {
                f(read_file(&file, &folder, spool_dir))?;
            }
            Ok(())
        }
        Kind::Imap => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an IMAP source is read by import::remote",
        )
        .into()),
        Kind::Maildir => {
            let mut files = Vec::new();
            maildir_files(path, "INBOX", true, &mut files)?;
            for (folder, file) in files {
                f(read_file(&file, &folder, spool_dir))?;
            }
            Ok(())
        }
    }
}

/// The folder an mbox file stands for: its name without `.mbox`/`.mbx`.
fn mbox_folder(path: &Path) -> String {
    let name = path
        .file_name()
        .map_or_else(|| "INBOX".into(), |n| n.to_string_lossy().into_owned());
    for ext in [".mbox", ".mbx"] {
        if let Some(stem) = name.strip_suffix(ext)
            && !stem.is_empty()
        {
            return stem.to_string();
        }
    }
    name
}

/// The entries of a directory, sorted by name, with their metadata (links not followed: a
/// link in a mailbox is not mail).
fn entries(dir: &Path) -> io::Result<Vec<(String, PathBuf, Metadata)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path(), meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `.eml` files under `dir`, each with its folder: the directories below the source joined
/// with `/`, `INBOX` for the source's own files.
fn eml_files(dir: &Path, folder: &str, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for (name, path, meta) in entries(dir)? {
        if meta.is_dir() && !name.starts_with('.') {
            let sub = match folder {
                "" => name.clone(),
                f => format!("{f}/{name}"),
            };
            eml_files(&path, &sub, out)?;
        } else if meta.is_file() && name.to_ascii_lowercase().ends_with(".eml") {
            let f = if folder.is_empty() { "INBOX" } else { folder };
            out.push((f.to_string(), path));
        }
    }
    Ok(())
}

/// The messages of the Maildir at `dir` (its `new/` and `cur/`; `tmp/` holds deliveries in
/// progress), then of its subfolders: Maildir++ `.Sub.Folder` directories (only at the top,
/// where Dovecot and Courier put them) and nested directories (`Projects/Alpha/cur`), whose
/// path is the folder's name.
fn maildir_files(
    dir: &Path,
    folder: &str,
    top: bool,
    out: &mut Vec<(String, PathBuf)>,
) -> io::Result<()> {
    for sub in ["new", "cur"] {
        let d = dir.join(sub);
        if !d.is_dir() {
            continue;
        }
        for (name, path, meta) in entries(&d)? {
            if meta.is_file() && !name.starts_with('.') {
                out.push((folder.to_string(), path));
            }
        }
    }
    for (name, path, meta) in entries(dir)? {
        if !meta.is_dir() || matches!(name.as_str(), "new" | "cur" | "tmp") {
            continue;
        }
        if let Some(plus) = maildirpp_folder(&name) {
            if top {
                maildir_files(&path, &plus, false, out)?;
            }
        } else if !name.starts_with('.') {
            // A nested folder (`Projects/Alpha`), or a directory that only holds folders.
            let sub = match top {
                true => name,
                false => format!("{folder}/{name}"),
            };
            maildir_files(&path, &sub, false, out)?;
        }
    }
    Ok(())
}

/// The folder a Maildir++ directory name stands for: `.Sub.Folder` → `Sub/Folder`. `None` for
/// a name that is not one (no leading dot, or `.`, `..`, an empty part).
pub fn maildirpp_folder(name: &str) -> Option<String> {
    let rest = name.strip_prefix('.')?;
    if rest.is_empty() || rest.split('.').any(str::is_empty) {
        return None;
    }
    Some(rest.replace('.', "/"))
}

/// What a message is copied into as it is read: the spool, the hash, the first bytes.
#[derive(Debug)]
pub struct Capture {
    spool: Spool,
    hash: Sha256,
    /// The first [`HEAD`] bytes.
    pub head: Vec<u8>,
}

impl Capture {
    pub fn new(spool_dir: &Path) -> Capture {
        Capture {
            spool: Spool::new(spool_dir),
            hash: Sha256::new(),
            head: Vec::new(),
        }
    }

    pub fn write(&mut self, b: &[u8]) -> io::Result<()> {
        if self.head.len() < HEAD {
            let n = b.len().min(HEAD - self.head.len());
            self.head.extend_from_slice(&b[..n]);
        }
        self.hash.update(b);
        self.spool.write(b)
    }

    pub fn found(
        self,
        folder: &str,
        path: &Path,
        offset: Option<u64>,
        mtime: Timestamp,
    ) -> io::Result<Found> {
        Ok(Found {
            folder: folder.to_string(),
            path: path.to_path_buf(),
            offset,
            mtime,
            sha256: self.hash.finalize().into(),
            head: self.head,
            body: self.spool.into_body()?,
            uid: None,
        })
    }
}

fn mtime_of(meta: &Metadata) -> Timestamp {
    meta.modified()
        .ok()
        .and_then(|t| Timestamp::try_from(t).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// One file, one message.
fn read_file(path: &Path, folder: &str, spool_dir: &Path) -> Item {
    let failed = |reason: String| Item::Failed {
        path: path.display().to_string(),
        reason,
    };
    let read = || -> io::Result<Option<Found>> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        if meta.len() == 0 {
            return Ok(None);
        }
        let mut c = Capture::new(spool_dir);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => c.write(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if c.spool.is_empty() {
            return Ok(None);
        }
        c.found(folder, path, None, mtime_of(&meta)).map(Some)
    };
    match read() {
        Ok(Some(found)) => Item::Message(found),
        Ok(None) => failed("empty file: no message to archive".into()),
        Err(e) => failed(e.to_string()),
    }
}

/// The messages of an mbox file, split by [`Splitter`].
fn read_mbox<E: From<io::Error>>(
    path: &Path,
    folder: &str,
    quoting: Quoting,
    spool_dir: &Path,
    f: &mut dyn FnMut(Item) -> Result<(), E>,
) -> Result<(), E> {
    let shown = path.display().to_string();
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let mtime = mtime_of(&meta);
    if meta.len() == 0 {
        return f(Item::Failed {
            path: shown,
            reason: "empty file: no message to archive".into(),
        });
    }
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut splitter = Splitter::new(quoting);
    let mut current: Option<(u64, Capture)> = None;
    let mut outside = 0u64;
    let mut offset = 0u64;
    let mut piece = Vec::with_capacity(mbox::LOOK);
    // Emits the message being read: a From_ line with nothing after it is no message.
    let emit = |m: Option<(u64, Capture)>, f: &mut dyn FnMut(Item) -> Result<(), E>| {
        let Some((at, c)) = m else { return Ok(()) };
        if c.spool.is_empty() {
            return f(Item::Failed {
                path: format!("{shown} at byte {at}"),
                reason: "a From_ line with no message after it".into(),
            });
        }
        f(Item::Message(c.found(folder, path, Some(at), mtime)?))
    };
    loop {
        piece.clear();
        // A line, or the first 64 KiB of a longer one: memory stays bounded whatever the file.
        let n = (&mut reader)
            .take(64 * 1024)
            .read_until(b'\n', &mut piece)?;
        if n == 0 {
            break;
        }
        let (held, now) = splitter.line(&piece);
        for p in held.into_iter().chain([now]) {
            match p {
                Piece::Start => {
                    emit(current.take(), f)?;
                    current = Some((offset, Capture::new(spool_dir)));
                }
                Piece::Bytes(b) => {
                    if let Some((_, c)) = current.as_mut() {
                        c.write(&b)?;
                    }
                }
                Piece::Outside => outside += n as u64,
            }
        }
        offset += n as u64;
    }
    splitter.finish();
    emit(current.take(), f)?;
    if outside > 0 {
        let reason = match offset == outside {
            true => "no From_ line: not an mbox (import it with --format eml)".to_string(),
            false => format!("{outside} bytes before the first From_ line are in no message"),
        };
        f(Item::Failed {
            path: shown,
            reason,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maildir_plus_plus_names() {
        assert_eq!(maildirpp_folder(".Sent").as_deref(), Some("Sent"));
        assert_eq!(
            maildirpp_folder(".Archive.2024").as_deref(),
            Some("Archive/2024")
        );
        for no in [".", "..", "Sent", ".a..b", ".a."] {
            assert_eq!(maildirpp_folder(no), None, "{no}");
        }
    }

    #[test]
    fn mbox_folder_names() {
        assert_eq!(mbox_folder(Path::new("/x/Sent.mbox")), "Sent");
        assert_eq!(mbox_folder(Path::new("/x/inbox")), "inbox");
        assert_eq!(mbox_folder(Path::new("/x/.mbox")), ".mbox");
    }
}
