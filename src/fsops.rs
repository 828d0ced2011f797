//! Opening the files of a directory another user may control (the journal, `[storage] state`)
//! without ever following that user's links, and the one place where root running an admin
//! command becomes the journal's owner.
//!
//! The owner of a directory controls every name in it: a process with more rights that opens
//! `DIR/lock` by path can be made, by a symbolic link planted there, to write, truncate or
//! create any file, and `chmod DIR` to change any directory's mode. So here:
//! - a directory is opened once, `O_DIRECTORY|O_NOFOLLOW`, and everything in it is opened
//!   relative to that handle (`openat`) with `O_NOFOLLOW`; a file to be written must be a
//!   regular file with one link (a hard link to someone else's file is refused too);
//! - modes are changed through the open handle (`fchmod`), never through a path;
//! - a directory owned by another user than this process's is refused, unless it is root's;
//! - [`become_owner_of`]: root drops to the journal's owner before touching it, so nothing it
//!   does there can exceed what the owner could do, and what it creates belongs to the owner.
//!
//! This module owns only these system calls; it knows nothing about records or mail.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, User, unlinkat};

/// An open directory: the handle every file in it is opened through.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the existing directory `path`; its last component must not be a symbolic link.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(nix::fcntl::AT_FDCWD, path, flags, Mode::empty())
            .map_err(|e| refusal(e, path, "directory"))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens `path` as a private directory, creating it (mode `mode`) and its missing parents
    /// first. Refused when it belongs to another user than this process's (root's own
    /// excepted: root is not the attacker); its mode is set to `mode` through the handle when
    /// it differs. Returns the mode it had when that was changed.
    pub fn open_private(path: &Path, mode: u32) -> io::Result<(Dir, Option<u32>)> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        match mkdirat(nix::fcntl::AT_FDCWD, path, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(context(e, path, "cannot create the directory")),
        }
        let dir = Dir::open(path)?;
        let st = dir.stat()?;
        let me = Uid::effective();
        if st.st_uid != me.as_raw() && st.st_uid != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to uid {}, not to this process's user (uid {me}): refused (run as its owner)",
                    path.display(),
                    st.st_uid
                ),
            ));
        }
        let old = st.st_mode & 0o7777;
        if old != mode && st.st_uid == me.as_raw() {
            fchmod(&dir.fd, Mode::from_bits_truncate(mode))
                .map_err(|e| context(e, path, "cannot change the mode of"))?;
            return Ok((dir, Some(old)));
        }
        Ok((dir, None))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle on the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// The directory's owner, group and mode, from the handle.
    pub fn stat(&self) -> io::Result<FileStat> {
        fstat(&self.fd).map_err(|e| context(e, &self.path, "cannot stat"))
    }

    /// Opens `name` for reading.
    pub fn read(&self, name: &str) -> io::Result<File> {
        self.open_at(name, OFlag::O_RDONLY, 0, false)
    }

    /// Opens the existing file `name` for reading and appending.
    pub fn append(&self, name: &str) -> io::Result<File> {
        self.open_at(name, OFlag::O_RDWR | OFlag::O_APPEND, 0, true)
    }

    /// Opens `name` for reading and appending, creating it with `mode` if missing. An existing
    /// file keeps its content; a mode looser than `mode` is tightened.
    pub fn open_or_create(&self, name: &str, mode: u32) -> io::Result<File> {
        let file = self.open_at(
            name,
            OFlag::O_RDWR | OFlag::O_APPEND | OFlag::O_CREAT,
            mode,
            true,
        )?;
        tighten(&file, mode).map_err(|e| with_name(e, &self.path.join(name)))?;
        Ok(file)
    }

    /// Creates `name` with `mode` for reading and appending; an existing name (file or link)
    /// is an error of kind `AlreadyExists`.
    pub fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        self.open_at(
            name,
            OFlag::O_RDWR | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_EXCL,
            mode,
            true,
        )
    }

    /// Removes the file `name` (a link is removed, never what it points to).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| context(e, &self.path.join(name), "cannot remove"))
    }

    /// Renames `from` to `to`, both in this directory.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| context(e, &self.path.join(to), "cannot rename into"))
    }

    /// Makes the directory's entries durable (new and removed names).
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(&self.fd).map_err(|e| context(e, &self.path, "cannot fsync"))
    }

    fn open_at(&self, name: &str, flags: OFlag, mode: u32, write: bool) -> io::Result<File> {
        let path = self.path.join(name);
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let fd = openat(&self.fd, name, flags, Mode::from_bits_truncate(mode))
            .map_err(|e| refusal(e, &path, "file"))?;
        let st = fstat(&fd).map_err(|e| context(e, &path, "cannot stat"))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file: refused", path.display()),
            ));
        }
        // A second name for the file may be someone else's file, hard-linked here.
        if write && st.st_nlink != 1 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} has {} hard links: refused (a journal or state file has one)",
                    path.display(),
                    st.st_nlink
                ),
            ));
        }
        Ok(File::from(fd))
    }
}

/// Creates `path` and its missing parents with `mode`, then opens it (its last component must
/// not be a link). An existing directory keeps its mode: it is the caller's choice, e.g. an
/// export target; what is created in it is private by its own mode.
pub fn create_dirs_open(path: &Path, mode: u32) -> io::Result<Dir> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| with_name(e, path))?;
    Dir::open(path)
}

/// Takes from `file`'s mode every permission `mode` does not grant.
pub fn tighten(file: &File, mode: u32) -> io::Result<()> {
    let st = fstat(file.as_fd()).map_err(io::Error::from)?;
    let old = st.st_mode & 0o7777;
    if old & !mode != 0 {
        fchmod(file.as_fd(), Mode::from_bits_truncate(old & mode)).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Whose the process became (see [`become_owner_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Became {
    pub uid: u32,
    pub gid: u32,
    /// The owner's login name, when the password database knows the uid.
    pub name: Option<String>,
}

/// When this process runs as root and the directory `path` belongs to another user (the
/// daemon's `handoff`), becomes that user for good (supplementary groups, group, user) before
/// anything in it is touched: every file root's command then creates belongs to the owner (so
/// the daemon can still append), and no link the owner planted can lead anywhere the owner
/// could not go already. Returns who the process became, or None when nothing changed (not
/// root, a root-owned directory, or no directory yet).
pub fn become_owner_of(path: &Path) -> io::Result<Option<Became>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let dir = match Dir::open(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = dir.stat()?;
    if st.st_uid == 0 {
        return Ok(None);
    }
    let uid = Uid::from_raw(st.st_uid);
    let user = User::from_uid(uid).map_err(io::Error::from)?;
    let fail = |e: Errno, what: &str| {
        io::Error::other(format!(
            "cannot become uid {uid} (the owner of {}): {what}: {e}",
            path.display()
        ))
    };
    // Groups first: once the uid is changed, they can no longer be.
    let gid = match &user {
        Some(u) => {
            let name = CString::new(u.name.as_str())
                .map_err(|_| io::Error::other("user name with a NUL byte"))?;
            nix::unistd::initgroups(&name, u.gid).map_err(|e| fail(e, "initgroups"))?;
            u.gid
        }
        None => {
            let gid = Gid::from_raw(st.st_gid);
            nix::unistd::setgroups(&[gid]).map_err(|e| fail(e, "setgroups"))?;
            gid
        }
    };
    nix::unistd::setgid(gid).map_err(|e| fail(e, "setgid"))?;
    nix::unistd::setuid(uid).map_err(|e| fail(e, "setuid"))?;
    // setuid(2) as root sets the real, effective and saved ids: there is no way back.
    if Uid::current() != uid
        || Uid::effective() != uid
        || nix::unistd::setuid(Uid::from_raw(0)).is_ok()
    {
        return Err(io::Error::other(format!(
            "cannot become uid {uid} (the owner of {}) for good",
            path.display()
        )));
    }
    Ok(Some(Became {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        name: user.map(|u| u.name),
    }))
}

/// A refused or failed open, said plainly: a link where a file or directory was expected is
/// refused, not followed.
fn refusal(e: Errno, path: &Path, what: &str) -> io::Error {
    match e {
        Errno::ELOOP => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a symbolic link, not a {what}: refused",
                path.display()
            ),
        ),
        // O_DIRECTORY|O_NOFOLLOW on a link gives ENOTDIR: say which it was.
        Errno::ENOTDIR if what == "directory" => {
            let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            let (kind, is) = match link {
                true => (
                    io::ErrorKind::PermissionDenied,
                    "a symbolic link, not a directory: refused",
                ),
                false => (io::ErrorKind::InvalidInput, "not a directory"),
            };
            io::Error::new(kind, format!("{} is {is}", path.display()))
        }
        e => context(e, path, "cannot open"),
    }
}

fn context(e: Errno, path: &Path, what: &str) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn with_name(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_planted_link_is_refused_and_its_target_untouched() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::write(&outside, b"precious").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (dir, _) = Dir::open_private(&t.path().join("j"), 0o700).unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join("lock")).unwrap();

        for r in [
            dir.open_or_create("lock", 0o600),
            dir.append("lock"),
            dir.create_new("lock", 0o600),
            dir.read("lock"),
        ] {
            let e = r.unwrap_err();
            assert!(
                e.to_string().contains("lock") && e.kind() != io::ErrorKind::NotFound,
                "{e}"
            );
        }
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
        assert_eq!(std::fs::metadata(&outside).unwrap().mode() & 0o777, 0o644);
    }

    #[test]
    fn a_linked_directory_is_refused_and_not_chmodded() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = Dir::open_private(&link, 0o700).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::metadata(&real).unwrap().mode() & 0o777, 0o755);
    }

    #[test]
    fn a_directory_of_another_user_is_refused_unless_it_is_roots() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("j");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The suite runs as root: 65534 (nobody) is another user.
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        let e = Dir::open_private(&p, 0o700).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o755);
    }

    #[test]
    fn modes_are_set_through_the_handle_and_hard_links_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("state");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (dir, was) = Dir::open_private(&p, 0o700).unwrap();
        assert_eq!(was, Some(0o755));
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o700);

        std::fs::write(p.join("f"), b"x").unwrap();
        std::fs::set_permissions(p.join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = dir.open_or_create("f", 0o600).unwrap();
        f.write_all(b"y").unwrap();
        assert_eq!(
            std::fs::metadata(p.join("f")).unwrap().mode() & 0o777,
            0o600
        );
        let mut s = String::new();
        dir.read("f").unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "xy");

        std::fs::hard_link(p.join("f"), t.path().join("second-name")).unwrap();
        let e = dir.append("f").unwrap_err();
        assert!(e.to_string().contains("hard links"), "{e}");
        let e = dir.create_new("f", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    }
}
