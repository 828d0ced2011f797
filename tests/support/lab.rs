//! `Lab`: a private Postfix instance on loopback, under a fresh directory, with a capturing
//! sink as its only next hop. This module owns the instance's life: writing its config,
//! starting and stopping its master, local submission and queue inspection, and cleaning
//! up after test processes that died without stopping theirs.
//!
//! Why it is safe to run many labs at once, in one process or many:
//! - Each lab has its own config, queue, data directory, log and master (the master's pid and
//!   lock files live in its queue and data directories), its own smtpd port and its own sink.
//! - Nothing is written to the system's /etc/postfix. Postfix only demands that a non-default
//!   config directory be listed in /etc/postfix/main.cf `alternate_config_directories` when
//!   the command is not run by root: mail_conf.c checks `geteuid() != 0` before
//!   `mail_conf_checkdir()`, and postfix(1), sendmail(1) and postqueue(1) document "the
//!   command is invoked by the super-user" as the alternative. Postfix(1) itself refuses to
//!   run for anyone but root or the mail owner, so the lab requires root, and with root
//!   `postfix -c`, `postconf -c`, `postqueue -c` and `sendmail -C` all work without touching
//!   the default main.cf (checked on Postfix 3.7.11).
//! - The smtpd port is picked by binding port 0 and released for Postfix to bind; if another
//!   process takes it in between, master logs "Address already in use", start fails, and the
//!   lab retries with a new port.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::config::{LabConfig, master_entry, substitute};
use super::sink::{Sink, SinkMode};
use super::smtp::SmtpClient;

/// Where Debian installs postfix(1), postconf(1), postqueue(1), sendmail(1), saslpasswd2(8).
const SBIN: &str = "/usr/sbin";
/// Lab directories are `/tmp/handoff-lab-XXXXXX`. Not `$TMPDIR`: Postfix daemons run as the
/// `postfix` user and must be able to reach `data_directory` and the sasldb by absolute path,
/// which a private temp dir (mode 0700 in a home directory) would forbid.
const DEFAULT_BASE: &str = "/tmp";
const DIR_PREFIX: &str = "handoff-lab-";
/// Holds the pid of the test process that owns the lab, for `reap_stale_labs`.
const OWNER_FILE: &str = "owner.pid";
/// Marks a lab kept for inspection after a failure; the reaper leaves it alone.
const KEPT_FILE: &str = "kept";
/// The lab's myhostname, also its SASL realm for user names without a domain.
pub const LAB_HOSTNAME: &str = "lab.example";
/// Attempts at finding a free smtpd port (see the module docs).
const PORT_ATTEMPTS: usize = 5;
/// Set to keep every lab directory, not only those of failed tests.
const KEEP_ENV: &str = "HANDOFF_LAB_KEEP";
/// Overrides `DEFAULT_BASE`.
const BASE_ENV: &str = "HANDOFF_LAB_DIR";

/// A running private Postfix. Dropping it stops Postfix and removes its directory, unless
/// the thread is panicking (a failed test): then the directory is kept and its path and the
/// end of the Postfix log are printed.
pub struct Lab {
    root: PathBuf,
    /// `None` once the directory is to be kept.
    tempdir: Option<TempDir>,
    conf_dir: PathBuf,
    queue_dir: PathBuf,
    log_path: PathBuf,
    smtpd_port: u16,
    sink: Sink,
    started_in: Duration,
}

/// One message in the queue, from `postqueue -j` (see postqueue(1), "JSON object format").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    pub queue_id: String,
    /// "incoming", "active", "deferred", "hold" or "maildrop".
    pub queue_name: String,
    pub sender: String,
    pub recipients: Vec<QueuedRecipient>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedRecipient {
    pub address: String,
    /// Why delivery was deferred, with the next hop's reply if it gave one.
    pub delay_reason: Option<String>,
}

impl Lab {
    /// Starts a private Postfix: config, queue, data directory and log under a fresh
    /// `/tmp/handoff-lab-XXXXXX`, smtpd on 127.0.0.1 at a free port, every message handed to
    /// the lab's sink. Panics (keeping the directory, printing the log) if Postfix does not
    /// start.
    pub fn start(config: LabConfig) -> Lab {
        let began = Instant::now();
        require_root();
        let base = PathBuf::from(std::env::var_os(BASE_ENV).unwrap_or(DEFAULT_BASE.into()));
        reap_stale_labs(&base);

        let tempdir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(&base)
            .unwrap_or_else(|e| {
                panic!("lab: cannot create a directory in {}: {e}", base.display())
            });
        let root = tempdir.path().to_path_buf();
        write(&root.join(OWNER_FILE), std::process::id().to_string());
        // The postfix user must traverse the root to reach data_directory and the sasldb.
        set_mode(&root, 0o755);
        let conf_dir = root.join("conf");
        let queue_dir = root.join("queue");
        let data_dir = root.join("data");
        for dir in [&conf_dir, &queue_dir, &data_dir] {
            fs::create_dir(dir).unwrap_or_else(|e| panic!("lab: mkdir {}: {e}", dir.display()));
        }
        // postfix-script's create-missing makes the queue subdirectories; data_directory must
        // belong to the mail owner (postconf(5) data_directory) before master starts.
        let (uid, gid) = postfix_ids();
        chown(&data_dir, uid, gid);

        let sink = Sink::start(config.sink_mode)
            .unwrap_or_else(|e| panic!("lab: cannot start the sink: {e}"));
        let mut lab = Lab {
            log_path: root.join("postfix.log"),
            root,
            tempdir: Some(tempdir),
            conf_dir,
            queue_dir,
            smtpd_port: 0,
            sink,
            started_in: Duration::ZERO,
        };
        if !config.sasl_users.is_empty() {
            lab.write_sasl(&config.sasl_users, gid);
        }
        for attempt in 1..=PORT_ATTEMPTS {
            lab.smtpd_port = free_port();
            lab.configure(&config);
            let log_before = lab.log().len();
            match lab.postfix_start() {
                Ok(()) => break,
                Err(why) => {
                    let new_log = lab.log().get(log_before..).unwrap_or("").to_string();
                    if new_log.contains("Address already in use") && attempt < PORT_ATTEMPTS {
                        continue;
                    }
                    panic!("lab: postfix start failed: {why}\n{new_log}");
                }
            }
        }
        lab.started_in = began.elapsed();
        eprintln!(
            "lab: Postfix started in {} ms, smtpd on {}, sink on {}, log {}",
            lab.started_in.as_millis(),
            lab.smtp_addr(),
            lab.sink.addr(),
            lab.log_path.display()
        );
        lab
    }

    /// The lab's smtpd.
    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.smtpd_port))
    }

    pub fn smtp_port(&self) -> u16 {
        self.smtpd_port
    }

    /// A new SMTP session with the lab's smtpd (greeting already read).
    pub fn connect(&self) -> SmtpClient {
        SmtpClient::connect(self.smtp_addr())
            .unwrap_or_else(|e| panic!("lab: connect to {}: {e}", self.smtp_addr()))
    }

    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// The lab's root directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The Postfix config directory (main.cf, master.cf), for `postconf -c` and friends.
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    pub fn queue_dir(&self) -> &Path {
        &self.queue_dir
    }

    /// Postfix's log (`maillog_file`, written by postlogd).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The log so far. postlogd writes asynchronously: use `wait_for_log` to wait for a line.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Polls the log until a line contains `needle` and returns that line; panics with the
    /// log if `timeout` passes first.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|line| line.contains(needle)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "lab: no log line with {needle:?} within {timeout:?}; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// How long `start` took, from the call to Postfix accepting connections.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Local submission through Postfix's sendmail(1): postdrop → pickup → cleanup, the path
    /// that `non_smtpd_milters` sees. `-oi` so a line with a lone "." does not end the
    /// message. Returns sendmail's exit status and output; it exits once the message is in
    /// the maildrop queue.
    pub fn sendmail(&self, from: &str, rcpts: &[&str], message: impl AsRef<[u8]>) -> Output {
        let mut child = Command::new(Path::new(SBIN).join("sendmail"))
            .arg("-C")
            .arg(&self.conf_dir)
            .args(["-oi", "-f", from, "--"])
            .args(rcpts)
            .env_remove("MAIL_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("lab: cannot run sendmail: {e}"));
        // stdin was requested as piped just above.
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(message.as_ref())
            .unwrap_or_else(|e| panic!("lab: writing to sendmail: {e}"));
        drop(stdin);
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("lab: waiting for sendmail: {e}"))
    }

    /// `postqueue -f`: attempt delivery of everything queued now.
    pub fn flush(&self) {
        self.postfix_tool("postqueue", &["-f"]);
    }

    /// The queue (`postqueue -j`).
    pub fn queue(&self) -> Vec<QueuedMessage> {
        let output = self.postfix_tool("postqueue", &["-j"]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                parse_queue_line(line).unwrap_or_else(|e| panic!("lab: postqueue -j: {e}: {line}"))
            })
            .collect()
    }

    /// Polls the queue until `settled` holds for it and returns it; panics with the queue if
    /// `timeout` passes first. A message that qmgr(8) is moving from `active` to `deferred`
    /// while showq(8) walks the directories is listed twice, so a test that has just seen
    /// `status=deferred` in the log waits for the move to finish rather than reading once.
    pub fn wait_queue(
        &self,
        timeout: Duration,
        settled: impl Fn(&[QueuedMessage]) -> bool,
    ) -> Vec<QueuedMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let queue = self.queue();
            if settled(&queue) {
                return queue;
            }
            assert!(
                Instant::now() < deadline,
                "lab: the queue did not settle in {timeout:?}: {queue:#?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn queue_len(&self) -> usize {
        self.queue().len()
    }

    /// Polls the queue until it is empty; panics with its content if `timeout` passes first.
    pub fn wait_queue_empty(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let queue = self.queue();
            if queue.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "lab: queue not empty after {timeout:?}: {queue:#?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `postconf -e` these `name = value` lines (placeholders are not filled here); call
    /// `reload` for a running Postfix to use them.
    pub fn postconf(&self, lines: &[&str]) {
        let mut args = vec!["-e"];
        args.extend_from_slice(lines);
        self.postfix_tool("postconf", &args);
        self.backdate_main_cf();
    }

    /// `postfix reload`: master re-reads the config, new processes use it.
    pub fn reload(&self) {
        self.postfix_tool("postfix", &["reload"]);
    }

    /// Runs a Postfix command (`postconf`, `postqueue`, `postsuper`, `postfix`, …) against
    /// this lab's config and returns its output; panics if it fails.
    pub fn postfix_tool(&self, program: &str, args: &[&str]) -> Output {
        let output = postfix_command(program, &self.conf_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("lab: cannot run {program}: {e}"));
        assert!(
            output.status.success(),
            "lab: {program} {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Writes main.cf and master.cf: the base, then the caller's lines and entries with
    /// placeholders filled.
    fn configure(&self, config: &LabConfig) {
        write(&self.conf_dir.join("main.cf"), self.base_main_cf(config));
        write(
            &self.conf_dir.join("master.cf"),
            base_master_cf(self.smtpd_port),
        );
        let mut vars = vec![
            ("smtpd_port".to_string(), self.smtpd_port.to_string()),
            ("sink_port".to_string(), self.sink.port().to_string()),
            ("lab_dir".to_string(), self.root.display().to_string()),
            ("conf_dir".to_string(), self.conf_dir.display().to_string()),
            (
                "queue_dir".to_string(),
                self.queue_dir.display().to_string(),
            ),
        ];
        vars.extend(config.vars.iter().cloned());
        let fill =
            |text: &str| substitute(text, &vars).unwrap_or_else(|e| panic!("lab config: {e}"));

        // Later lines win, as in main.cf; postconf -e would warn about the earlier ones.
        let mut settings: Vec<(String, String)> = Vec::new();
        for line in &config.main_cf {
            let Some((name, _)) = line.split_once('=') else {
                panic!("lab config: main.cf line {line:?} is not \"name = value\"");
            };
            let name = name.trim().to_string();
            settings.retain(|(earlier, _)| *earlier != name);
            settings.push((name, fill(line)));
        }
        let mut main_args = vec!["-e".to_string()];
        main_args.extend(settings.into_iter().map(|(_, line)| line));
        if main_args.len() > 1 {
            let args: Vec<&str> = main_args.iter().map(String::as_str).collect();
            self.postfix_tool("postconf", &args);
        }
        let mut master_args = vec!["-M".to_string()];
        for entry in &config.master_cf {
            let (key, line) =
                master_entry(&fill(entry)).unwrap_or_else(|e| panic!("lab config: {e}"));
            master_args.push(format!("{key}={line}"));
        }
        if master_args.len() > 1 {
            let args: Vec<&str> = master_args.iter().map(String::as_str).collect();
            self.postfix_tool("postconf", &args);
        }
        self.backdate_main_cf();
    }

    /// Postfix reads main.cf with load_file(), which reads a file again, after a 300 ms doze,
    /// for as long as its mtime is not more than a second in the past ("let it cool down"),
    /// so that it never trusts a file that may still be being written.
    /// A just-written main.cf cost every Postfix command about 1.5 s; making it look older
    /// costs nothing, since the lab writes it completely before running any command.
    fn backdate_main_cf(&self) {
        let path = self.conf_dir.join("main.cf");
        let past = std::time::SystemTime::now() - Duration::from_secs(10);
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(past))
            .unwrap_or_else(|e| panic!("lab: set mtime of {}: {e}", path.display()));
    }

    fn base_main_cf(&self, config: &LabConfig) -> String {
        let root = self.root.display();
        let sink_port = self.sink.port();
        let next_hop = match self.sink.mode() {
            SinkMode::Smtp => format!("smtp:[127.0.0.1]:{sink_port}"),
            SinkMode::Lmtp => format!("lmtp:inet:127.0.0.1:{sink_port}"),
        };
        let relay_domains = config.relay_domains.join(", ");
        let mut text = format!(
            "# Written by the handoff test lab (tests/support/lab.rs); see tests/README.md.
# The compatibility level of Postfix 3.7's own defaults, so it logs no backwards-compatibility notice.
compatibility_level = 3.6
myhostname = {LAB_HOSTNAME}
queue_directory = {root}/queue
data_directory = {root}/data
# Log to a file through postlogd (master.cf has the postlog service); postlogd only opens
# files under maillog_file_prefixes.
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# No local delivery: every domain is remote and goes to the sink.
mydestination =
alias_maps =
alias_database =
relay_domains = {relay_domains}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
# transport(5): \"*\" matches every address, bounces and notices included. inline(5) splits
# entries at whitespace, so no spaces around \"=\".
transport_maps = inline:{{ *={next_hop} }}
smtp_dns_support_level = disabled
# No pause before accepting mail from a busy client (postconf(5) in_flow_delay).
in_flow_delay = 0
# Retry deferred mail within seconds, not the default 300s..4000s.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
# Postfix 3.9's default, which 3.7.11 only has as an option; and loopback must not be exempt
# (the default exclusion is $mynetworks), since all test clients are on loopback.
smtpd_forbid_bare_newline = normalize
smtpd_forbid_bare_newline_exclusions =
# Lets a test pose as another client (address, name, or SASL login) with XCLIENT.
smtpd_authorized_xclient_hosts = 127.0.0.0/8
"
        );
        if !config.sasl_users.is_empty() {
            text.push_str(&format!(
                "# SMTP AUTH with Cyrus SASL and a sasldb. Debian's Postfix looks for smtpd.conf in
# $config_directory/sasl (cyrus_sasl_config_path had no effect there).
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
# The realm of user names given without @domain.
smtpd_sasl_local_domain = {LAB_HOSTNAME}
# Plaintext mechanisms over plain TCP: loopback only, no TLS in the lab.
smtpd_sasl_security_options = noanonymous
smtpd_tls_auth_only = no
"
            ));
        }
        text
    }

    /// Cyrus SASL for smtpd: `conf/sasl/smtpd.conf` and a sasldb with the users, each stored
    /// as user name + realm, the way Cyrus splits "user2@corp.example" at login.
    fn write_sasl(&self, users: &[(&str, &str)], gid: u32) {
        let sasl_dir = self.conf_dir.join("sasl");
        fs::create_dir(&sasl_dir)
            .unwrap_or_else(|e| panic!("lab: mkdir {}: {e}", sasl_dir.display()));
        let sasldb = sasl_dir.join("sasldb2");
        write(
            &sasl_dir.join("smtpd.conf"),
            format!(
                "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {}\nmech_list: PLAIN LOGIN\n",
                sasldb.display()
            ),
        );
        for (user, password) in users {
            let (name, realm) = user.rsplit_once('@').unwrap_or((user, LAB_HOSTNAME));
            // -p: the password is the first line of stdin; -c: create the user.
            let mut child = Command::new(Path::new(SBIN).join("saslpasswd2"))
                .arg("-f")
                .arg(&sasldb)
                .args(["-p", "-c", "-u", realm, name])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("lab: cannot run saslpasswd2 (install sasl2-bin): {e}"));
            // stdin was requested as piped just above.
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin
                .write_all(password.as_bytes())
                .unwrap_or_else(|e| panic!("lab: writing to saslpasswd2: {e}"));
            drop(stdin);
            let output = child
                .wait_with_output()
                .unwrap_or_else(|e| panic!("lab: saslpasswd2: {e}"));
            assert!(
                output.status.success(),
                "lab: saslpasswd2 for {user} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // smtpd reads the sasldb after dropping privileges to the postfix user; root stays
        // the owner, as postfix-script check-warn wants for everything in the config dir.
        chown(&sasldb, 0, gid);
        set_mode(&sasldb, 0o640);
    }

    /// `postfix start`: check-fatal (creates the queue directories), check-warn, then
    /// `master -w`, which returns once master has bound its listeners. Output goes to a file,
    /// not a pipe: the daemons it starts are children of this command, and a pipe they
    /// inherited and held open would keep `output()` (or a test runner) waiting.
    fn postfix_start(&self) -> Result<(), String> {
        let out_path = self.root.join("postfix-start.out");
        let out = fs::File::create(&out_path)
            .map_err(|e| format!("create {}: {e}", out_path.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let status = postfix_command("postfix", &self.conf_dir)
            .arg("start")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(|e| format!("cannot run postfix: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            let said = fs::read_to_string(&out_path).unwrap_or_default();
            Err(format!("{status}: {said}"))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        stop_master(&self.conf_dir, &self.queue_dir);
        let failed = thread::panicking();
        if failed || std::env::var_os(KEEP_ENV).is_some() {
            if let Some(tempdir) = self.tempdir.take() {
                let _ = fs::write(self.root.join(KEPT_FILE), "");
                let _ = tempdir.keep();
            }
            if failed {
                let log = self.log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                eprintln!(
                    "lab: test failed; kept {} (Postfix log: {}). Last log lines:\n{tail}",
                    self.root.display(),
                    self.log_path.display()
                );
            } else {
                eprintln!("lab: kept {} ({KEEP_ENV} is set)", self.root.display());
            }
        }
        // Otherwise TempDir removes the directory; the sink stops after this (field drop).
    }
}

/// A Postfix command with `-c DIR` (postfix, postconf, postqueue, postsuper).
fn postfix_command(program: &str, conf_dir: &Path) -> Command {
    let mut command = Command::new(Path::new(SBIN).join(program));
    command.arg("-c").arg(conf_dir).env_remove("MAIL_CONFIG");
    command
}

/// Stops the master of a lab if it runs: `postfix stop` (SIGTERM; master terminates its
/// children and postfix-script waits for it), or SIGKILL to its process group if that fails.
fn stop_master(conf_dir: &Path, queue_dir: &Path) {
    let Some(pid) = running_master(queue_dir) else {
        return;
    };
    let stopped = postfix_command("postfix", conf_dir)
        .arg("stop")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stopped && running_master(queue_dir).is_some() {
        // master runs in its own session, so its pid is its process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
    }
}

/// The pid of the lab's master if it is alive (pid file in `$queue_directory/pid`).
fn running_master(queue_dir: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(queue_dir.join("pid/master.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "master" && process_alive(pid)).then_some(pid)
}

/// Alive and not a zombie.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; the command before it is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Stops the masters of labs whose test process died without dropping them (killed by a
/// runner's timeout, say), and removes their directories unless they were kept for
/// inspection. Labs being set up have no owner file yet and are skipped.
fn reap_stale_labs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let owner = fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let Some(owner) = owner else { continue };
        if process_alive(owner) {
            continue;
        }
        stop_master(&dir.join("conf"), &dir.join("queue"));
        if !dir.join(KEPT_FILE).exists() {
            // Another test process may be reaping it at the same time: errors are harmless.
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

fn require_root() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("");
    assert!(
        euid == "0",
        "lab: the Postfix lab must run as root (postfix(1) is reserved for the superuser, \
         and only root may use a config directory not listed in /etc/postfix/main.cf)"
    );
}

/// The postfix user's uid and primary gid.
fn postfix_ids() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 3 && fields[0] == "postfix")
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .unwrap_or_else(|| {
            panic!("lab: no postfix user in /etc/passwd; install postfix (see .ci/run)")
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("lab: cannot find a free port: {e}"))
}

fn write(path: &Path, contents: impl AsRef<[u8]>) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("lab: write {}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("lab: chmod {}: {e}", path.display()));
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lab: chown {}: {e}", path.display()));
}

/// The master.cf of every lab: the services Postfix needs to accept, queue and relay mail,
/// none chrooted (the lab has no chroot jail), no smtp/inet on port 25, an smtpd on the
/// lab's port, and postlog for `maillog_file`.
fn base_master_cf(smtpd_port: u16) -> String {
    format!(
        "# Written by the handoff test lab (tests/support/lab.rs).
# service type  private unpriv  chroot  wakeup  maxproc command + args
{smtpd_port:<9} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
    )
}

/// One line of `postqueue -j`.
fn parse_queue_line(line: &str) -> Result<QueuedMessage, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let text = |v: &serde_json::Value, field: &str| -> Result<String, String> {
        v.get(field)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("no string field {field:?}"))
    };
    let recipients = value
        .get("recipients")
        .and_then(serde_json::Value::as_array)
        .ok_or("no recipients array")?
        .iter()
        .map(|r| {
            Ok(QueuedRecipient {
                address: text(r, "address")?,
                delay_reason: text(r, "delay_reason").ok(),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(QueuedMessage {
        queue_id: text(&value, "queue_id")?,
        queue_name: text(&value, "queue_name")?,
        sender: text(&value, "sender")?,
        recipients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postqueue_json_lines_parse() {
        let line = r#"{"queue_name": "deferred", "queue_id": "5F31598C170", "arrival_time": 1795261495, "message_size": 261, "forced_expire": false, "sender": "a@example.net", "recipients": [{"address": "u1@corp.example", "delay_reason": "connect to 127.0.0.1[127.0.0.1]:9: Connection refused"}, {"address": "u2@corp.example"}]}"#;
        let message = parse_queue_line(line).unwrap();
        assert_eq!(message.queue_id, "5F31598C170");
        assert_eq!(message.queue_name, "deferred");
        assert_eq!(message.sender, "a@example.net");
        assert_eq!(
            message.recipients,
            [
                QueuedRecipient {
                    address: "u1@corp.example".into(),
                    delay_reason: Some(
                        "connect to 127.0.0.1[127.0.0.1]:9: Connection refused".into()
                    ),
                },
                QueuedRecipient {
                    address: "u2@corp.example".into(),
                    delay_reason: None,
                },
            ]
        );
        assert!(parse_queue_line("{}").is_err());
    }
}
