//! Root running `handoff archive …` on a journal that belongs to the daemon's user: it runs as
//! that user, never follows a link the owner planted, leaves the journal writable by the
//! owner, starts segments at the policy's `segment_mb`; exports are private and never written
//! through a link; the state directory and its files are private.
//!
//! The tests run as root (like the whole suite); `nobody` plays the daemon's `handoff` user.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use handoff::journal::writer::{Body, DEFAULT_SEGMENT_BYTES, Entry, Writer};
use handoff::journal::{Kind, RecordId};

use crate::daemon::{Daemon, free_port, http_get, wait_for};

/// The uid and gid of `nobody`, from the password database.
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("a `nobody` user");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// A test directory `nobody` can pass through, with a policy whose journal is `journal` in it.
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new(segment_mb: u32) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).unwrap();
        let config = root.join("handoff.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\nmilter = \"127.0.0.1:{}\"\nmetrics = \"127.0.0.1:{}\"\n\
                 [storage]\njournal = \"{}\"\nstate = \"{}\"\n[archive]\nsegment_mb = {segment_mb}\n",
                free_port(),
                free_port(),
                root.join("journal").display(),
                root.join("state").display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        Setup {
            _tmp: tmp,
            root,
            config,
        }
    }

    fn journal(&self) -> PathBuf {
        self.root.join("journal")
    }

    /// An empty journal directory owned by `nobody`, as the daemon's first start leaves it.
    fn owned_journal(&self) -> PathBuf {
        let j = self.journal();
        std::fs::create_dir(&j).unwrap();
        std::fs::set_permissions(&j, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown_tree(&j, nobody());
        j
    }

    /// `handoff --config … ARGS` as root; returns (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run(Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("--config")
            .arg(&self.config)
            .args(args))
    }

    /// The same as `nobody`.
    fn cli_as_nobody(&self, args: &[&str]) -> (i32, String, String) {
        let (uid, gid) = nobody();
        run(Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir("/")
            .uid(uid)
            .gid(gid))
    }
}

fn run(c: &mut Command) -> (i32, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), (uid, gid));
        }
    }
}

/// A root-only file outside the journal, and what it held.
fn root_secret(dir: &Path) -> (PathBuf, Vec<u8>) {
    let p = dir.join("root-only");
    let content = b"root's own bytes, not a journal\n".to_vec();
    std::fs::write(&p, &content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    (p, content)
}

fn assert_untouched(p: &Path, content: &[u8]) {
    let m = std::fs::metadata(p).unwrap();
    assert_eq!(
        std::fs::read(p).unwrap(),
        content,
        "{} was written",
        p.display()
    );
    assert_eq!(m.mode() & 0o7777, 0o600, "{} was chmodded", p.display());
    assert_eq!(m.uid(), 0);
}

/// Every entry of the journal belongs to `nobody` and is closed to others (a planted link's
/// own mode means nothing).
fn assert_owned_by_nobody(journal: &Path) {
    let (uid, _) = nobody();
    for e in std::fs::read_dir(journal).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        assert_eq!(m.uid(), uid, "{} is not the owner's", e.path().display());
        if !m.file_type().is_symlink() {
            assert_eq!(
                m.mode() & 0o077,
                0,
                "{} is open to others",
                e.path().display()
            );
        }
    }
}

fn segments(journal: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(journal)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("seg-"))
        .collect();
    v.sort();
    v
}

/// Writes one message record (as root, before the journal is handed to `nobody`).
fn write_message(journal: &Path, body: Vec<u8>) -> RecordId {
    let (mut w, _) = Writer::open(journal, DEFAULT_SEGMENT_BYTES).unwrap();
    let meta = serde_json::json!({});
    let (ids, _) = w
        .append(&mut [Entry::new(Kind::Message, &meta, Body::Bytes(body))])
        .unwrap();
    ids[0]
}

/// `lock` is a link to a path that does not exist: old code created it as root (any file, any
/// place). The command must not create it.
#[test]
fn root_archive_command_does_not_create_through_a_planted_lock_link() {
    let s = Setup::new(64);
    let j = s.owned_journal();
    let target = s.root.join("created-by-root");
    symlink(&target, j.join("lock")).unwrap();
    chown_tree(&j, nobody());

    let (code, out, err) = s.cli(&["archive", "search"]);
    assert!(
        std::fs::symlink_metadata(&target).is_err(),
        "root created {} through the link",
        target.display()
    );
    assert_ne!(code, 0, "a planted lock link is refused: {out}{err}");
    assert!(err.contains("lock"), "the refusal names the file: {err}");
}

/// The same link in root's own journal (nothing to drop to): the link is refused all the same
/// (O_NOFOLLOW, the second line of defence).
#[test]
fn root_archive_command_refuses_a_lock_link_in_roots_own_journal() {
    let s = Setup::new(64);
    let j = s.journal();
    std::fs::create_dir(&j).unwrap();
    let target = s.root.join("created-by-root");
    symlink(&target, j.join("lock")).unwrap();

    let (code, out, err) = s.cli(&["archive", "search"]);
    assert!(
        std::fs::symlink_metadata(&target).is_err(),
        "root created {} through the link",
        target.display()
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("lock is a symbolic link"), "{err}");
}

/// The last segment is a link to a root-only file: old code truncated it (a "torn tail") and
/// copied its bytes into the journal.
#[test]
fn root_archive_command_does_not_truncate_through_a_planted_segment_link() {
    let s = Setup::new(64);
    let (secret, content) = root_secret(&s.root);
    let j = s.owned_journal();
    symlink(&secret, j.join("seg-0000000001.hj")).unwrap();
    chown_tree(&j, nobody());

    // prune opens the writer (recovery) before it reads anything.
    let (code, out, err) = s.cli(&["archive", "prune"]);
    assert_untouched(&secret, &content);
    assert_ne!(code, 0, "{out}{err}");
    let torn: Vec<_> = std::fs::read_dir(&j)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("torn-")
        })
        .collect();
    assert!(torn.is_empty(), "the secret was copied into the journal");
}

/// A torn tail's copy goes to `torn-SEG-OFFSET.bin`; the owner made that name a link to a
/// root-only file: old code wrote the torn (attacker's) bytes there and chmodded it.
#[test]
fn root_archive_command_does_not_write_a_torn_copy_through_a_planted_link() {
    let s = Setup::new(64);
    let (secret, content) = root_secret(&s.root);
    let j = s.journal();
    write_message(&j, b"Subject: first\r\n\r\nfirst\r\n".to_vec());
    let seg = j.join("seg-0000000001.hj");
    let offset = std::fs::metadata(&seg).unwrap().len();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"attacker's bytes for root's file");
    std::fs::write(&seg, &bytes).unwrap();
    symlink(&secret, j.join(format!("torn-0000000001-{offset}.bin"))).unwrap();
    chown_tree(&j, nobody());

    let (code, out, err) = s.cli(&["archive", "prune"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_untouched(&secret, &content);
    let kept = std::fs::read(j.join(format!("torn-0000000001-{offset}.1.bin"))).unwrap();
    assert_eq!(kept, b"attacker's bytes for root's file");
    assert_owned_by_nobody(&j);
}

/// The journal directory itself is a link (its parent belongs to the owner): old code
/// chmodded the link's target to 0700 and wrote a journal there.
#[test]
fn root_archive_command_does_not_chmod_a_linked_journal_directory() {
    let s = Setup::new(64);
    let elsewhere = s.root.join("root-dir");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink(&elsewhere, s.journal()).unwrap();
    std::os::unix::fs::lchown(s.journal(), Some(nobody().0), Some(nobody().1)).unwrap();

    let (code, out, err) = s.cli(&["archive", "search"]);
    let m = std::fs::metadata(&elsewhere).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755, "root chmodded the link's target");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("symbolic link"), "{err}");
}

/// Root's audit records, and the segment they start, belong to the journal's owner: the owner
/// (the daemon's user) can go on appending, and the daemon starts on it. Old code left a
/// root-owned `lock` and segment: the owner's next append failed (the daemon answered 451).
#[test]
fn root_archive_commands_leave_the_journal_to_its_owner() {
    let s = Setup::new(64);
    let j = s.owned_journal();

    let (code, out, err) = s.cli(&["archive", "search", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(segments(&j), ["seg-0000000001.hj"]);
    assert_owned_by_nobody(&j);
    // The audit trail names who ran it, not the user it ran as.
    let mut audit = Vec::new();
    handoff::journal::reader::for_each_record(&j, |info, _| {
        if info.header.kind == Kind::Audit {
            audit.push(serde_json::from_slice::<serde_json::Value>(&info.meta).unwrap());
        }
        Ok(())
    })
    .unwrap();
    assert!(
        audit[0]["user"].as_str().unwrap().ends_with("(uid 0)"),
        "{audit:?}"
    );

    let (code, out, err) = s.cli_as_nobody(&["archive", "search"]);
    assert_eq!(code, 0, "the owner appends after root: {out}{err}");
    let (code, out, err) = s.cli(&["archive", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 records"), "{out}");

    // The daemon, as the owner, opens the journal root wrote to.
    let mut daemon = spawn_serve_as_nobody(&s);
    let port = metrics_port(&s.config);
    let status = wait_for(
        Duration::from_secs(10),
        "the daemon to answer /readyz",
        || {
            if let Some(st) = daemon.try_wait().unwrap() {
                panic!("handoff serve as nobody exited: {st}");
            }
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| http_get(port, "/readyz").0)
        },
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(status, 200);
}

fn spawn_serve_as_nobody(s: &Setup) -> Child {
    let (uid, gid) = nobody();
    // The state directory is the daemon's too.
    std::fs::create_dir(s.root.join("state")).unwrap();
    chown_tree(&s.root.join("state"), (uid, gid));
    Command::new(env!("CARGO_BIN_EXE_handoff"))
        .arg("serve")
        .arg("--config")
        .arg(&s.config)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .uid(uid)
        .gid(gid)
        .spawn()
        .unwrap()
}

fn metrics_port(config: &Path) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text.lines().find(|l| l.starts_with("metrics")).unwrap();
    line.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('"')
        .parse()
        .unwrap()
}

/// An archive command seals a segment where the daemon would, at `[archive] segment_mb`, not
/// at the built-in 64 MiB.
#[test]
fn archive_commands_use_the_policys_segment_size() {
    let s = Setup::new(1);
    let j = s.journal();
    write_message(&j, vec![b'x'; 1100 * 1024]);
    chown_tree(&j, nobody());
    assert_eq!(segments(&j), ["seg-0000000001.hj"]);

    let (code, out, err) = s.cli(&["archive", "search"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        segments(&j),
        ["seg-0000000001.hj", "seg-0000000002.hj"],
        "the audit record goes to a new segment: the first is over 1 MiB"
    );
    assert_owned_by_nobody(&j);
    let (code, out, err) = s.cli(&["archive", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// `archive export` writes new 0600 files in a 0700 directory, and refuses (naming it) a name
/// that exists, above all a link planted in the output directory.
#[test]
fn export_is_private_and_never_written_through_a_link() {
    let s = Setup::new(64);
    let j = s.journal();
    let body = b"Subject: evidence\r\n\r\nbody\r\n".to_vec();
    let id = write_message(&j, body.clone());

    // Root's own journal: the command runs as root, the export is root's.
    let out = s.root.join("exports/case-1");
    let (code, o, e) = s.cli(&[
        "archive",
        "export",
        "--id",
        &id.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let file = out.join(format!("{id}.eml"));
    assert_eq!(std::fs::read(&file).unwrap(), body);
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    for d in [&out, &s.root.join("exports")] {
        assert_eq!(std::fs::metadata(d).unwrap().mode() & 0o777, 0o700);
    }

    // A link where the export goes: refused, the target is not written.
    let (secret, content) = root_secret(&s.root);
    let out2 = s.root.join("shared-out");
    std::fs::create_dir(&out2).unwrap();
    symlink(&secret, out2.join(format!("{id}.eml"))).unwrap();
    let (code, o, e) = s.cli(&[
        "archive",
        "export",
        "--id",
        &id.to_string(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{o}{e}");
    assert!(
        e.contains(&format!("{id}.eml")) && e.contains("exists"),
        "{e}"
    );
    assert_untouched(&secret, &content);
}

/// The state directory is 0700 and the auto-reply memory 0600, also when they existed with
/// looser modes (they are tightened, with a warning).
#[test]
fn state_directory_and_files_are_private() {
    let mut d = Daemon::prepare("", None, None);
    d.spawn(&[]);
    let state = d.path("state");
    let memory = state.join("autoreply.memory");
    assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&memory).unwrap().mode() & 0o777, 0o600);
    d.kill();

    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&memory, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.spawn(&[]);
    assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&memory).unwrap().mode() & 0o777, 0o600);
    assert!(d.log_text().contains("state directory was mode 755"));
}

/// Root exporting from the daemon's journal exports as its owner: the files are the owner's
/// (0600 in 0700 directories), and a directory the owner cannot write is refused with why.
#[test]
fn root_exports_from_the_owners_journal_as_the_owner() {
    let s = Setup::new(64);
    let j = s.journal();
    let body = b"Subject: evidence\r\n\r\nbody\r\n".to_vec();
    let id = write_message(&j, body.clone());
    chown_tree(&j, nobody());

    let private = s.root.join("root-only-dir");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, o, e) = s.cli(&[
        "archive",
        "export",
        "--id",
        &id.to_string(),
        "--out",
        private.join("case").to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{o}{e}");
    assert!(e.contains("run as the journal's owner"), "{e}");

    let shared = s.root.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = shared.join("case");
    let (code, o, e) = s.cli(&[
        "archive",
        "export",
        "--id",
        &id.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let file = out.join(format!("{id}.eml"));
    assert_eq!(std::fs::read(&file).unwrap(), body);
    for (p, mode) in [(&file, 0o600), (&out, 0o700)] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (nobody().0, mode),
            "{}",
            p.display()
        );
    }
    assert_owned_by_nobody(&j);
}
