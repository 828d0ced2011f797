//! `Dovecot`: a private Dovecot IMAP server on loopback for the import and restore tests, under
//! a fresh `/tmp/handoff-dovecot-XXXXXX`: its own config file, base_dir (sockets, master pid),
//! state_dir, log, passwd-file users and Maildirs, and a test CA made with the openssl CLI at
//! start (the server's certificate names `localhost` and 127.0.0.1). Nothing under
//! /etc/dovecot is read or written; the system instance is never started.
//!
//! - IMAP over TLS only (`imaps` on a random port; the plain listener is off), LOGIN and PLAIN.
//! - Mail is owned by the `dovecot` user (Debian's package creates it): the directory is
//!   0755 so its processes can reach it.
//! - The port is picked by binding port 0 and releasing it; if another process takes it
//!   before Dovecot binds it, start retries with another.
//! - Dropping it stops the master (SIGTERM, then waits for it); a failed test keeps the
//!   directory and prints its path and the end of the log.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use handoff::imap::{Client, Connect, Secret, Server};

const DOVECOT: &str = "/usr/sbin/dovecot";
const PORT_ATTEMPTS: usize = 5;
/// Set to keep every Dovecot directory, not only those of failed tests.
const KEEP_ENV: &str = "HANDOFF_LAB_KEEP";

pub struct Dovecot {
    root: PathBuf,
    tempdir: Option<tempfile::TempDir>,
    port: u16,
    master: Option<Child>,
    users: Vec<(String, String)>,
}

impl Dovecot {
    /// Starts a Dovecot with `users` (name, password).
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        assert!(
            Path::new(DOVECOT).exists(),
            "{DOVECOT} is missing: run tests/setup.sh (it installs dovecot-imapd)"
        );
        let tempdir = tempfile::Builder::new()
            .prefix("handoff-dovecot-")
            .tempdir_in("/tmp")
            .unwrap();
        let root = tempdir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["base", "state", "mail"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        chown_dovecot(&root.join("mail"));
        make_certificates(&root);
        let mut d = Dovecot {
            root,
            tempdir: Some(tempdir),
            port: 0,
            master: None,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
        };
        d.write_passwd();
        for attempt in 1..=PORT_ATTEMPTS {
            d.port = free_port();
            d.write_config();
            match d.try_start() {
                Ok(()) => return d,
                Err(e) if attempt < PORT_ATTEMPTS => eprintln!("dovecot start: {e}; retrying"),
                Err(e) => panic!("dovecot did not start: {e}\n{}", d.log_tail()),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `127.0.0.1:PORT`, as a CSV's host column or `imaps://user@HOST` names it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The test CA's certificate (PEM), to trust with `--ca-file`.
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The server's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("dovecot.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Adds users (Dovecot rereads its passwd-file when it changes).
    pub fn add_users(&mut self, users: &[(String, String)]) {
        self.users.extend_from_slice(users);
        self.write_passwd();
    }

    /// A logged-in connection as `user`.
    pub fn client(&self, user: &str) -> Client {
        let password = self
            .users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("no user {user}"));
        let connect = Connect {
            server: Server::parse(&self.host()).unwrap(),
            ca_file: Some(self.ca_file()),
        };
        let mut c = Client::connect(&connect, &self.root).unwrap();
        c.login(user, &Secret::new(password)).unwrap();
        c
    }

    /// Appends messages to `user`'s `mailbox` (a `/`-separated name, created if need be), each
    /// with its INTERNALDATE.
    pub fn append(&self, user: &str, mailbox: &str, messages: &[(&[u8], Option<&str>)]) {
        let mut c = self.client(user);
        let raw = handoff::imap::proto::utf7_encode(mailbox);
        if !mailbox.eq_ignore_ascii_case("INBOX") {
            c.create(&raw).unwrap();
        }
        for (body, date) in messages {
            let date = date.map(|d| d.parse::<jiff::Timestamp>().unwrap());
            c.append(&raw, false, date, body.len() as u64, &mut &body[..])
                .unwrap();
        }
        c.logout();
    }

    /// Writes messages straight into `user`'s Maildir INBOX (`cur/`, as seen by no client):
    /// for many users at once without a login each. Call [`Dovecot::own_mail`] after.
    pub fn deliver(&self, user: &str, messages: &[&[u8]]) {
        let md = self.root.join("mail").join(user);
        for d in ["cur", "new", "tmp"] {
            fs::create_dir_all(md.join(d)).unwrap();
        }
        for (i, m) in messages.iter().enumerate() {
            fs::write(md.join(format!("cur/{i}.handoff-test:2,")), m).unwrap();
        }
    }

    /// Gives every Maildir to the `dovecot` user (mail written by [`Dovecot::deliver`]).
    pub fn own_mail(&self) {
        let status = Command::new("chown")
            .arg("-R")
            .arg("dovecot:dovecot")
            .arg(self.root.join("mail"))
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Every message of `user`'s `mailbox`: (UID, bytes), by UID.
    pub fn messages(&self, user: &str, mailbox: &str) -> Vec<(u32, Vec<u8>)> {
        self.messages_dated(user, mailbox)
            .into_iter()
            .map(|(uid, _, body)| (uid, body))
            .collect()
    }

    /// Every message of `user`'s `mailbox`: (UID, INTERNALDATE, bytes), by UID.
    pub fn messages_dated(
        &self,
        user: &str,
        mailbox: &str,
    ) -> Vec<(u32, Option<jiff::Timestamp>, Vec<u8>)> {
        let mut c = self.client(user);
        let raw = handoff::imap::proto::utf7_encode(mailbox);
        let mut out = Vec::new();
        c.open(&raw, false).unwrap();
        let uids = c.uids_from(1).unwrap();
        if let (Some(&first), Some(&last)) = (uids.first(), uids.last()) {
            c.fetch(first, last, &mut |m| {
                let mut body = Vec::new();
                let found = m
                    .body
                    .found("x", Path::new("x"), None, jiff::Timestamp::UNIX_EPOCH)
                    .unwrap();
                std::io::Read::read_to_end(&mut found.body.into_reader().unwrap(), &mut body)
                    .unwrap();
                out.push((m.uid, m.internal_date, body));
                Ok(())
            })
            .unwrap();
        }
        c.logout();
        out
    }

    /// Deletes `user`'s `mailbox` and creates it again: a new UIDVALIDITY for the same name.
    pub fn recreate(&self, user: &str, mailbox: &str) {
        let mut c = self.client(user);
        let raw = handoff::imap::proto::utf7_encode(mailbox);
        c.delete(&raw).unwrap();
        c.create(&raw).unwrap();
        c.logout();
    }

    fn write_passwd(&self) {
        let mut text = String::new();
        for (u, p) in &self.users {
            text.push_str(&format!("{u}:{{PLAIN}}{p}::::::\n"));
        }
        let tmp = self.root.join("passwd.new");
        fs::write(&tmp, text).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        fs::rename(&tmp, self.root.join("passwd")).unwrap();
    }

    fn write_config(&self) {
        let r = self.root.display();
        let instance = self
            .root
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let conf = format!(
            r#"# A private test instance (tests/support/dovecot.rs).
base_dir = {r}/base
state_dir = {r}/state
instance_name = {instance}
protocols = imap
listen = 127.0.0.1
log_path = {r}/dovecot.log
ssl = required
ssl_cert = <{r}/server.pem
ssl_key = <{r}/server.key
disable_plaintext_auth = yes
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{r}/mail/%u
first_valid_uid = 1
# 1,000 accounts in a row come from one address.
mail_max_userip_connections = 100
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {r}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={r}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"#,
            port = self.port
        );
        fs::write(self.root.join("dovecot.conf"), conf).unwrap();
    }

    fn try_start(&mut self) -> Result<(), String> {
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(self.root.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.root.join("master.err")).unwrap())
            .spawn()
            .map_err(|e| format!("{DOVECOT}: {e}"))?;
        self.master = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.master.as_mut().unwrap().try_wait().unwrap() {
                self.master = None;
                let err = fs::read_to_string(self.root.join("master.err")).unwrap_or_default();
                return Err(format!("master exited with {status}: {err}"));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err("port not listening after 20 s".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.master.take() else {
            return;
        };
        // SIGTERM lets the master stop its children; SIGKILL only if it hangs.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
        if (thread::panicking() || std::env::var_os(KEEP_ENV).is_some())
            && let Some(t) = self.tempdir.take()
        {
            let kept = t.keep();
            eprintln!(
                "dovecot kept at {}; log tail:\n{}",
                kept.display(),
                self.log_tail()
            );
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chown_dovecot(path: &Path) {
    let status = Command::new("chown")
        .arg("dovecot:dovecot")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown dovecot {}", path.display());
}

/// A CA and a server certificate it signs (localhost, 127.0.0.1), with the openssl CLI.
fn make_certificates(root: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=handoff test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    let mut ext = fs::File::create(root.join("server.ext")).unwrap();
    ext.write_all(
        b"subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    // Dovecot reads the key as root before dropping privileges; 0600 is enough.
    fs::set_permissions(root.join("ca.pem"), fs::Permissions::from_mode(0o644)).unwrap();
}
