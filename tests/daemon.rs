//! Runs the real `handoff serve` binary for tests: free loopback ports, a temp directory, its
//! log captured, killed on drop (even when the test panics).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub milter_port: u16,
    pub metrics_port: u16,
    /// The content-filter (LMTP/SMTP) listener's port, when started with one.
    pub lmtp_port: Option<u16>,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Extra environment for the process (e.g. NOTIFY_SOCKET).
    pub env: Vec<(String, String)>,
}

/// A port that was free a moment ago (the OS picks it; the listener is closed again).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms until it returns Some, or panics after `timeout` naming `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    /// Starts handoff with `policy` (the `[listen]` and `[storage]` sections are added here)
    /// and waits until it listens.
    pub fn start(policy: &str) -> Daemon {
        Daemon::start_with(policy, &[])
    }

    pub fn start_with(policy: &str, args: &[&str]) -> Daemon {
        Daemon::start_custom(policy, None, None, args)
    }

    /// Starts handoff with its milter on `milter` (a `[listen] milter` value) instead of a free
    /// loopback port.
    pub fn start_listening(policy: &str, milter: Option<&str>, args: &[&str]) -> Daemon {
        Daemon::start_custom(policy, milter, None, args)
    }

    /// Starts handoff as a content filter too: its LMTP/SMTP listener on a free port, handing
    /// messages to `next_hop` (an `[lmtp] next_hop` value, e.g. Postfix's reinjection port).
    pub fn start_content_filter(policy: &str, next_hop: &str) -> Daemon {
        Daemon::start_content_filter_with(policy, next_hop, "")
    }

    /// Like [`Daemon::start_content_filter`], with more `[lmtp]` settings (`key = value` lines).
    pub fn start_content_filter_with(policy: &str, next_hop: &str, lmtp: &str) -> Daemon {
        Daemon::start_full(policy, None, None, &[], || {
            let lmtp_port = free_port();
            let extra = format!(
                "lmtp = \"127.0.0.1:{lmtp_port}\"\n[lmtp]\nnext_hop = \"{next_hop}\"\n{lmtp}"
            );
            (extra, Some(lmtp_port))
        })
    }

    /// Starts handoff with its journal in `journal` instead of its temp directory.
    pub fn start_custom(
        policy: &str,
        milter: Option<&str>,
        journal: Option<&Path>,
        args: &[&str],
    ) -> Daemon {
        Daemon::start_full(policy, milter, journal, args, || (String::new(), None))
    }

    /// `extra()`: lines that go at the end of the `[listen]` table (and may open more tables),
    /// and the content filter's port if they give it one.
    ///
    /// A port [`free_port`] picked can be taken by another test before handoff binds it; then
    /// handoff exits (`Address already in use`) and the start is tried again with new ports, a
    /// few times: nothing knows the ports of a first start yet.
    fn start_full(
        policy: &str,
        milter: Option<&str>,
        journal: Option<&Path>,
        args: &[&str],
        extra: impl Fn() -> (String, Option<u16>),
    ) -> Daemon {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let (lines, lmtp_port) = extra();
            let mut d = Daemon::prepare_full(policy, milter, journal, &lines);
            d.lmtp_port = lmtp_port;
            match d.try_spawn(args) {
                Ok(()) => return d,
                Err(log) if attempt < ATTEMPTS && log.contains("Address already in use") => {
                    eprintln!("daemon: a port was taken meanwhile (attempt {attempt}); retrying");
                }
                Err(log) => panic!("handoff exited early:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Writes the policy and picks the ports, without starting the process (see [`spawn`]).
    pub fn prepare(policy: &str, milter: Option<&str>, journal: Option<&Path>) -> Daemon {
        Daemon::prepare_full(policy, milter, journal, "")
    }

    fn prepare_full(
        policy: &str,
        milter: Option<&str>,
        journal: Option<&Path>,
        extra: &str,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let (milter_port, metrics_port) = (free_port(), free_port());
        let config = dir.path().join("handoff.toml");
        let milter = milter.map_or_else(|| format!("127.0.0.1:{milter_port}"), str::to_string);
        let journal = journal.map_or_else(|| "journal".to_string(), |p| p.display().to_string());
        let text = format!(
            "[listen]\nmilter = \"{milter}\"\nmetrics = \"127.0.0.1:{metrics_port}\"\n{extra}\
             [storage]\njournal = \"{journal}\"\nstate = \"state\"\n{policy}"
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("handoff.log");
        Daemon {
            child: None,
            dir,
            milter_port,
            metrics_port,
            lmtp_port: None,
            config,
            log,
            env: Vec::new(),
        }
    }

    /// (Re)starts the process on the same ports and files.
    pub fn spawn(&mut self, args: &[&str]) {
        if let Err(log) = self.try_spawn(args) {
            panic!("handoff exited early:\n{log}");
        }
    }

    /// [`Daemon::spawn`], or the log of a process that exited before it listened.
    fn try_spawn(&mut self, args: &[&str]) -> Result<(), String> {
        let logged = self.log_text().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("HANDOFF_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // handoff binds its milter listener before the metrics one, so a metrics endpoint that
        // listens means mail can flow. Its log says so: a port that accepts could be another
        // process's that took it after `free_port` let it go.
        let port = self.metrics_port;
        let listening = format!("metrics endpoint listening address=127.0.0.1:{port}");
        wait_for(Duration::from_secs(10), "handoff to listen", || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Some(Err(format!("({status})\n{}", self.log_text())));
            }
            let log = self.log_text();
            log.get(logged..)
                .is_some_and(|new| new.contains(&listening))
                .then_some(Ok(()))
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal by name (`HUP`, `TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let status = wait_for(timeout, "handoff to exit", || child.try_wait().unwrap());
        status.code()
    }

    /// A memory figure of the process in KiB, from /proc/PID/status (`VmRSS`, `VmHWM`, …).
    #[allow(dead_code)] // harness API that not every set of test modules uses
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status:\n{status}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    #[allow(dead_code)] // harness API that not every set of test modules uses
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    #[allow(dead_code)] // harness API that not every set of test modules uses
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Where the journal is (unless the test chose another directory).
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    /// The loop marker this daemon writes for `account` today, with the secret it created in
    /// its state directory.
    pub fn loop_marker(&self, account: &str) -> String {
        let key = handoff::runtime::secret::read(&self.dir.path().join("state"))
            .unwrap()
            .expect("the daemon made its loop-marker secret");
        let account = handoff::address::Address::parse_strict(account).unwrap();
        key.mark(&account, handoff::runtime::today())
    }

    /// Runs `handoff ARGS --config <this daemon's policy>` and returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// GET a path from the metrics listener; returns (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_port, path)
    }

    /// The value of one metric sample (`name{labels}` exactly as exported), if present.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics");
        body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            l.rsplit_once(' ')
                .filter(|(k, _)| *k == sample)
                .and_then(|(_, v)| v.parse().ok())
        })
    }
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- handoff log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}
