//! `handoff serve` reloads its policy when the files change or on SIGHUP, refuses a broken policy
//! while the old one keeps answering, and stops cleanly on SIGTERM. These tests drive the real
//! binary and watch it through its metrics endpoint and its log.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long anything the daemon does in reaction to a test may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// A `handoff serve` child with its own directory, ports and log. Killed when dropped, so a
/// failing test leaves no daemon behind.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    /// The start of every policy this daemon reads: listeners and storage.
    header: String,
    metrics: SocketAddr,
}

impl Daemon {
    /// Writes the policy `body` (accounts, aliases, includes) under a header that puts listeners
    /// on free loopback ports and storage inside a temporary directory, then starts `serve` with
    /// `args` and waits until `/healthz` answers.
    fn start(body: &str, args: &[&str]) -> Daemon {
        Daemon::start_with("", body, args, |_| {})
    }

    /// Like [`Daemon::start`], with top-level keys (`include`) before the header, and a chance
    /// to add files before the daemon starts.
    fn start_with(top: &str, body: &str, args: &[&str], prepare: impl FnOnce(&Path)) -> Daemon {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // serve does not open the milter listener yet; the setting is there for when it does.
        let (milter, metrics) = (free_port(), free_port());
        let fixed = format!(
            "[listen]\nmilter = \"{milter}\"\nmetrics = \"{metrics}\"\n\n\
             [storage]\njournal = \"journal\"\nstate = \"state\"\n\n\
             [domains]\nlocal = [\"corp.example\"]\n\n"
        );
        assert_eq!(fixed.lines().count(), HEADER_LINES);
        let header = format!("{top}{fixed}");
        let config = dir.path().join("handoff.toml");
        fs::write(&config, format!("{header}{body}")).expect("the policy written");
        prepare(dir.path());
        let log = fs::File::create(dir.path().join("stderr.log")).expect("the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("serve")
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("HANDOFF_CONFIG")
            .env("HANDOFF_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("handoff serve starts");
        let mut daemon = Daemon {
            child,
            dir,
            header,
            metrics,
        };
        let start = Instant::now();
        while !matches!(http_get(daemon.metrics, "/healthz"), Ok((200, _))) {
            if let Some(status) = daemon.child.try_wait().expect("the child's status") {
                panic!("handoff serve exited ({status}); log:\n{}", daemon.log());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "/healthz did not answer within {DEADLINE:?}; log:\n{}",
                daemon.log()
            );
            std::thread::sleep(POLL);
        }
        daemon
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("handoff.toml")
    }

    /// A complete policy file. The header never changes between edits, so no edit touches a
    /// setting that needs a restart.
    fn policy(&self, body: &str) -> String {
        format!("{}{body}", self.header)
    }

    /// Saves the policy the way most editors do: write a new file, rename it over the old one.
    fn save_by_rename(&self, body: &str) {
        let tmp = self.dir.path().join(".handoff.toml.swp");
        fs::write(&tmp, self.policy(body)).expect("the new policy written");
        fs::rename(&tmp, self.config()).expect("the new policy renamed into place");
    }

    /// Saves the policy in place: truncate the file and write it again.
    fn save_in_place(&self, body: &str) {
        let mut f = fs::File::create(self.config()).expect("the policy truncated");
        f.write_all(self.policy(body).as_bytes())
            .expect("the policy rewritten");
    }

    /// Sends a signal with kill(1), which saves a dependency on libc.
    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The value of one sample on `/metrics`, by its exact name and labels as rendered
    /// (`handoff_policy_accounts{state="frozen"}`).
    fn metric(&self, sample: &str) -> Option<f64> {
        let (status, body) = http_get(self.metrics, "/metrics").ok()?;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(name, _)| *name == sample)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// Like [`Daemon::metric`], for a sample that must be there.
    fn value(&self, sample: &str) -> f64 {
        self.metric(sample)
            .unwrap_or_else(|| panic!("no sample {sample} on /metrics\n{}", self.log()))
    }

    fn reloads(&self, result: &str) -> f64 {
        self.value(&format!(
            "handoff_policy_reloads_total{{result=\"{result}\"}}"
        ))
    }

    fn generation(&self) -> f64 {
        self.value("handoff_policy_generation")
    }

    /// Accounts per configured state, in the order active, departed, disabled, frozen, deleted.
    fn accounts(&self) -> [f64; 5] {
        ["active", "departed", "disabled", "frozen", "deleted"]
            .map(|s| self.value(&format!("handoff_policy_accounts{{state=\"{s}\"}}")))
    }

    /// Polls `check` until it returns something, or fails the test with the daemon's log.
    fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = check() {
                return v;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "waited {DEADLINE:?} for {what}; daemon log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the reload counter for `result` reaches `n`.
    fn wait_reloads(&self, result: &str, n: f64) {
        self.wait_for(&format!("{n} {result} reloads"), || {
            (self.reloads(result) >= n).then_some(())
        });
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                return status;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "handoff serve did not exit within {DEADLINE:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago. Another process may take it before the daemon
/// binds it; on a test machine that is rare enough.
fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("the bound address")
}

/// A one-shot HTTP/1.1 GET: status code and body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let bad = || std::io::Error::other(format!("malformed response: {response:?}"));
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// Lines of the header [`Daemon::start_with`] puts before every policy body.
const HEADER_LINES: usize = 11;

const START: &str = r#"[accounts."gone@corp.example"]
state = "disabled"

[accounts."paused@corp.example"]
state = "frozen"
"#;

/// A state that does not exist, on line 5 of the body: line 16 of the file, column 9.
const BAD_STATE: &str = r#"[accounts."gone@corp.example"]
state = "disabled"

[accounts."paused@corp.example"]
state = "departd"
"#;

/// A table header without its `]`, on line 4 of the body: line 15 of the file, column 32.
const BAD_SYNTAX: &str = r#"[accounts."gone@corp.example"]
state = "disabled"

[accounts."paused@corp.example"
state = "frozen"
"#;

const NEXT: &str = r#"[accounts."alice@corp.example"]
state = "active"

[accounts."bob@corp.example"]
state = "active"

[accounts."carol@corp.example"]
state = "departed"
successor = "alice@corp.example"

[accounts."gone@corp.example"]
state = "disabled"
"#;

/// Active, departed, disabled, frozen, deleted.
const START_ACCOUNTS: [f64; 5] = [0.0, 0.0, 1.0, 1.0, 0.0];
const NEXT_ACCOUNTS: [f64; 5] = [2.0, 1.0, 1.0, 0.0, 0.0];

#[test]
fn file_edits_are_applied_or_refused() {
    let d = Daemon::start(START, &[]);
    assert_eq!(d.generation(), 1.0);
    assert_eq!(d.accounts(), START_ACCOUNTS);
    assert_eq!(d.reloads("refused"), 0.0);
    assert_eq!(d.reloads("applied"), 0.0);
    let config = d.config().display().to_string();

    // An editor that saves by rename, with a mistake.
    d.save_by_rename(BAD_STATE);
    d.wait_reloads("refused", 1.0);
    assert_eq!(
        d.generation(),
        1.0,
        "a refused policy must not be installed"
    );
    assert_eq!(d.accounts(), START_ACCOUNTS);
    d.wait_for("the error with its line in the log", || {
        let want = format!("policy reload refused: {config}:16:9: unknown state `departd`");
        d.log().contains(&want).then_some(())
    });

    // An editor that truncates and rewrites, with another mistake.
    d.save_in_place(BAD_SYNTAX);
    d.wait_reloads("refused", 2.0);
    assert_eq!(d.generation(), 1.0);
    assert_eq!(d.accounts(), START_ACCOUNTS);
    d.wait_for("the syntax error with its line in the log", || {
        let want = format!("policy reload refused: {config}:15:32: TOML syntax: unclosed table");
        d.log().contains(&want).then_some(())
    });

    // A valid, different policy goes live.
    d.save_by_rename(NEXT);
    d.wait_reloads("applied", 1.0);
    assert_eq!(d.generation(), 2.0);
    assert_eq!(d.accounts(), NEXT_ACCOUNTS);
    assert_eq!(d.value("handoff_policy_aliases"), 0.0);

    // And in place too.
    d.save_in_place(START);
    d.wait_reloads("applied", 2.0);
    assert_eq!(d.generation(), 3.0);
    assert_eq!(d.accounts(), START_ACCOUNTS);
}

#[test]
fn sighup_reloads_when_not_watching() {
    let d = Daemon::start(START, &["--no-watch"]);
    assert_eq!(d.generation(), 1.0);

    // Without a watcher an edit stays on disk until SIGHUP. Waiting for nothing to happen is
    // the one fixed wait here: longer than the watcher's debounce and a load.
    d.save_by_rename(NEXT);
    let quiet = Instant::now() + Duration::from_millis(800);
    while Instant::now() < quiet {
        assert_eq!(d.generation(), 1.0, "--no-watch reloaded on an edit");
        std::thread::sleep(POLL);
    }
    assert_eq!(d.reloads("applied"), 0.0);
    assert_eq!(d.accounts(), START_ACCOUNTS);

    d.signal("HUP");
    d.wait_reloads("applied", 1.0);
    assert_eq!(d.generation(), 2.0);
    assert_eq!(d.accounts(), NEXT_ACCOUNTS);

    // SIGHUP with nothing new says so.
    d.signal("HUP");
    d.wait_reloads("unchanged", 1.0);
    assert_eq!(d.generation(), 2.0);
    d.wait_for("the unchanged note in the log", || {
        d.log().contains("nothing to reload").then_some(())
    });

    // A broken edit is refused on SIGHUP; the policy in force stays.
    d.save_in_place(BAD_SYNTAX);
    d.signal("HUP");
    d.wait_reloads("refused", 1.0);
    assert_eq!(d.generation(), 2.0);
    assert_eq!(d.accounts(), NEXT_ACCOUNTS);
    let config = d.config().display().to_string();
    d.wait_for("the refusal with its line in the log", || {
        let want = format!("policy reload refused: {config}:15:32: TOML syntax: unclosed table");
        d.log().contains(&want).then_some(())
    });
}

#[test]
fn a_new_file_in_an_include_directory_is_picked_up() {
    let top = "include = [\"accounts.d/*.toml\"]\n";
    let d = Daemon::start_with(top, "", &[], |dir| {
        fs::create_dir(dir.join("accounts.d")).expect("accounts.d");
        fs::write(
            dir.join("accounts.d/alice.toml"),
            "[accounts.\"alice@corp.example\"]\nstate = \"active\"\n",
        )
        .expect("an included file");
    });
    assert_eq!(d.accounts(), [1.0, 0.0, 0.0, 0.0, 0.0]);

    fs::write(
        d.dir.path().join("accounts.d/carol.toml"),
        "[accounts.\"carol@corp.example\"]\nstate = \"departed\"\nsuccessor = \"alice@corp.example\"\n",
    )
    .expect("a new included file");
    d.wait_reloads("applied", 1.0);
    assert_eq!(d.generation(), 2.0);
    assert_eq!(d.accounts(), [1.0, 1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn sigterm_stops_serve_cleanly() {
    let mut d = Daemon::start(START, &[]);
    let asked = Instant::now();
    d.signal("TERM");
    let status = d.wait_exit();
    assert!(status.success(), "{status}; log:\n{}", d.log());
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?} to stop",
        asked.elapsed()
    );
    assert!(d.log().contains("shutting down"), "{}", d.log());
}
