//! `handoff archive import`: existing mail into the archive ([`crate::import`]), one account
//! with its sources or a CSV of accounts; `--status` shows where each account stands.
//!
//! Output: a line per account on stdout when it is done (`ACCOUNT: done: N seen, …`), and the
//! pieces that failed, on stderr. Progress on stderr: a bar per running account on a terminal,
//! a line every 5 s otherwise. Exit code 0 when every account is done and nothing failed, 1
//! otherwise (an account failed, a message could not be archived, a CSV mistake).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::archive::JournalArg;
use super::progress::{ProgressArg, every};
use crate::import::run::{Outcome, StatusFile, hostname, status_of};
use crate::import::source::Format;
use crate::import::status::{Counts, State, Status};
use crate::import::{FolderMode, Importer, Job, Options, Source, csv, mbox};
use crate::journal::search;
use crate::policy::Policy;
use crate::runtime::escape::escape;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  handoff archive import --account alice@corp.example /srv/old/alice/Maildir ~/alice.mbox
  handoff archive import --account alice@corp.example imaps://alice@imap.corp.example \
      --password-file alice.pw
  handoff archive import --csv accounts.csv      (columns: account, source, password, host)
  handoff archive import --status [--csv]

IMAP (over TLS only): a SOURCE `imaps://USER@HOST[:PORT]`, or a CSV row with a host or a
password (its source is the IMAP user). The password comes from the CSV's password column,
else --password-file, else the environment variable HANDOFF_IMAP_PASSWORD; never from an
argument.

A rerun imports only what is new: the same message bytes are archived once per account.
--follow --every 10m --for 30d runs again every 10 minutes for 30 days (a migration while the
old system still receives mail).")]
pub struct ImportArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    /// The handoff account the mail belongs to (an account of the policy)
    #[arg(long, value_name = "ADDRESS", conflicts_with = "status")]
    pub account: Option<String>,
    /// Where the account's mail is: .eml files or a directory of them, mbox files, Maildirs,
    /// or an IMAP mailbox `imaps://USER@HOST[:PORT]`
    #[arg(value_name = "SOURCE", requires = "account")]
    pub sources: Vec<PathBuf>,
    /// Accounts to import, one per row (account,source[,password][,host]); with --status: print
    /// the status as CSV
    #[arg(long, value_name = "FILE", num_args = 0..=1, conflicts_with = "account")]
    pub csv: Option<Option<PathBuf>>,
    /// List every account's import: not started, running, done, failed, with its counts
    #[arg(long)]
    pub status: bool,
    /// What the sources are [default: told from each path]
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// How an mbox quotes body lines that start with "From "
    #[arg(long, value_enum, default_value = "mboxrd")]
    pub mbox: mbox::Quoting,
    /// keep: each source folder's name; source: one folder named after the source address
    #[arg(long, value_enum, default_value = "keep")]
    pub folders: FolderMode,
    /// The mailbox's owner at the source (recorded; the folder name with --folders source)
    #[arg(long, value_name = "ADDRESS", requires = "account")]
    pub source_account: Option<String>,
    /// IMAP: a file whose first line is the password of sources without one of their own
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// IMAP: trust the PEM certificates in FILE (a private CA) instead of the system's
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// IMAP: read only this folder (`/`-separated levels; repeat for more) [default: every
    /// folder]
    #[arg(long = "imap-folder", value_name = "NAME")]
    pub imap_folders: Vec<String>,
    /// Keep syncing: after a run, import what is new again every --every, until --for has
    /// passed since the start (a migration while the old system still receives mail)
    #[arg(long, conflicts_with = "status")]
    pub follow: bool,
    /// With --follow: the time between the start of one run and the next (`90s`, `10m`, `1h`)
    #[arg(long, value_name = "INTERVAL", requires = "follow", default_value = "10m", value_parser = interval)]
    pub every: Duration,
    /// With --follow: how long to keep syncing (`8h`, `30d`)
    #[arg(long = "for", value_name = "INTERVAL", requires = "follow", default_value = "30d", value_parser = interval)]
    pub window: Duration,
    #[command(flatten)]
    pub progress: ProgressArg,
}

/// Where an IMAP source without a password of its own finds one.
pub(super) const PASSWORD_ENV: &str = "HANDOFF_IMAP_PASSWORD";

/// Whether the command needs the policy (every import: accounts and departments come from it).
pub fn needs_policy(a: &ImportArgs) -> bool {
    !a.status
}

/// Runs the command on the journal at `dir`.
pub fn run(dir: &Path, segment_bytes: u64, policy: Option<&Policy>, a: &ImportArgs) -> ExitCode {
    if a.status {
        return show_status(dir, a);
    }
    let jobs = match jobs(a) {
        Ok(jobs) => jobs,
        Err(errors) => {
            for e in errors {
                eprintln!("handoff archive import: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let Some(policy) = policy else {
        eprintln!("handoff archive import: the policy is needed (accounts and departments)");
        return ExitCode::FAILURE;
    };
    let mut importer = match Importer::open(dir, segment_bytes) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("handoff archive import: {e}");
            return ExitCode::FAILURE;
        }
    };
    let password = match password(a) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("handoff archive import: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = Options {
        folders: a.folders,
        quoting: a.mbox,
        host: hostname(),
        by: search::operator().to_string(),
        password,
        ca_file: a.ca_file.clone(),
        imap_folders: a.imap_folders.clone(),
    };
    let file = match StatusFile::open(dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("handoff archive import: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut status = file.load();
    for job in &jobs {
        let e = status.entry(&job.account);
        e.state = State::NotStarted;
        e.reason = None;
        e.counts = Counts::default();
        e.sources = job.sources.iter().map(Source::describe).collect();
        e.started = None;
        e.finished = None;
    }
    let mut saver = Saver::new(&file);
    saver.save(&status, true);
    let started = Instant::now();
    let mut all_ok = true;
    let mut run = 1u64;
    loop {
        all_ok &= pass(
            &mut importer,
            policy,
            &jobs,
            &opts,
            a,
            &mut status,
            &mut saver,
        );
        if !a.follow {
            break;
        }
        // The next run starts `every` after this one started, and only inside the window.
        let next = started
            + a.every
                .saturating_mul(u32::try_from(run).unwrap_or(u32::MAX));
        if next.duration_since(started) >= a.window {
            eprintln!(
                "handoff archive import: --follow: the {} window is over after {run} runs",
                show_interval(a.window)
            );
            break;
        }
        let wait = next.saturating_duration_since(Instant::now());
        eprintln!(
            "handoff archive import: --follow: run {run} done; the next in {}",
            show_interval(wait)
        );
        std::thread::sleep(wait);
        run += 1;
    }
    match all_ok {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

/// One run over every job: imports what is new, keeps the status file current; whether every
/// account finished without a failure.
fn pass(
    importer: &mut Importer,
    policy: &Policy,
    jobs: &[Job],
    opts: &Options,
    a: &ImportArgs,
    status: &mut Status,
    saver: &mut Saver,
) -> bool {
    let mut all_ok = true;
    let mut totals = Counts::default();
    for job in jobs {
        {
            let e = status.entry(&job.account);
            e.state = State::Running;
            e.started = Some(jiff::Timestamp::now().to_string());
        }
        saver.save(status, false);
        let mut shown = Shown::new(&job.account, &a.progress);
        let result = importer.account(policy, job, opts, &mut |c: &Counts| {
            shown.update(c);
            if saver.due() {
                status.entry(&job.account).counts = *c;
                saver.save(status, true);
            }
        });
        shown.finish();
        let e = status.entry(&job.account);
        e.finished = Some(jiff::Timestamp::now().to_string());
        match result {
            Ok(Outcome {
                counts, failures, ..
            }) => {
                e.counts = counts;
                e.state = State::Done;
                e.reason = summary(&failures);
                println!("{}: done: {}", job.account, counts_text(&counts));
                for f in &failures {
                    eprintln!(
                        "handoff archive import: {}: failed: {}",
                        job.account,
                        escape(f)
                    );
                }
                all_ok &= failures.is_empty();
                add(&mut totals, &counts);
            }
            Err(err) => {
                e.state = State::Failed;
                e.reason = Some(err.to_string());
                println!("{}: failed: {}", job.account, escape(&err.to_string()));
                all_ok = false;
            }
        }
        saver.save(status, false);
    }
    saver.save(status, true);
    if jobs.len() > 1 {
        eprintln!("{} accounts: {}", jobs.len(), counts_text(&totals));
    }
    all_ok
}

/// An interval as `--every` and `--for` take it: a whole number and a unit, `s`, `m`, `h` or
/// `d` (`90s`, `10m`, `30d`); at least a second, at most ten years.
fn interval(text: &str) -> Result<Duration, String> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}`: give a unit: s, m, h or d (e.g. 10m)"))?;
    let (n, unit) = text.split_at(unit_at);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{text}`: a whole number and a unit (e.g. 10m)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit is s, m, h or d")),
    };
    match n.checked_mul(seconds) {
        Some(s) if (1..=10 * 366 * 86_400).contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(format!("`{text}`: from 1s to 3660d")),
    }
}

/// An interval for people: the largest whole unit.
fn show_interval(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s >= 86_400 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s >= 3600 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s >= 60 && s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// `--status`: the table, or CSV with `--csv`.
fn show_status(dir: &Path, a: &ImportArgs) -> ExitCode {
    let mut status = match status_of(dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("handoff archive import: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `--status --csv FILE`: the file's accounts no run was given yet are listed too.
    if let Some(Some(path)) = &a.csv {
        match csv_jobs(path) {
            Ok(jobs) => {
                for j in jobs {
                    let e = status.entry(&j.account);
                    if e.sources.is_empty() {
                        e.sources = j.sources.iter().map(Source::describe).collect();
                    }
                }
            }
            Err(errors) => {
                for e in errors {
                    eprintln!("handoff archive import: {e}");
                }
                return ExitCode::FAILURE;
            }
        }
    }
    match a.csv.is_some() {
        true => print!("{}", status.to_csv()),
        false => print!("{}", status.to_table()),
    }
    let failed = status
        .accounts
        .iter()
        .any(|a| a.state == State::Failed || a.counts.failed > 0);
    match failed {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}

/// The accounts to import, from the arguments or the CSV file; the CSV's mistakes all at once.
fn jobs(a: &ImportArgs) -> Result<Vec<Job>, Vec<String>> {
    match (&a.account, &a.csv) {
        (Some(account), _) => {
            if a.sources.is_empty() {
                return Err(vec![format!("--account {account}: no source given")]);
            }
            Ok(vec![Job {
                account: account.clone(),
                sources: a
                    .sources
                    .iter()
                    .map(|p| arg_source(p, a.format))
                    .collect::<Result<_, _>>()
                    .map_err(|e| vec![e])?,
                source_account: a.source_account.clone(),
            }])
        }
        (None, Some(Some(path))) => {
            let mut jobs = csv_jobs(path)?;
            for j in &mut jobs {
                for s in &mut j.sources {
                    if let Source::Path { format, .. } = s {
                        *format = a.format;
                    }
                }
            }
            Ok(jobs)
        }
        _ => Err(vec![
            "give --account ADDRESS with its sources, or --csv FILE (see --help)".to_string(),
        ]),
    }
}

/// The CSV's rows as jobs: rows of one account become one job with each row's source (a path
/// relative to the CSV file's directory).
fn csv_jobs(path: &Path) -> Result<Vec<Job>, Vec<String>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: {e}")])?;
    let rows = csv::parse(&name, &text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut jobs: Vec<Job> = Vec::new();
    for row in rows {
        let account = row.account.to_string();
        let source = match row.is_imap() {
            true => Source::Imap {
                host: row.host.clone(),
                user: row.source.clone(),
                password: row.password.clone(),
            },
            false => Source::Path {
                path: base.join(&row.source),
                format: Format::Auto,
            },
        };
        match jobs.iter_mut().find(|j| j.account == account) {
            Some(j) => j.sources.push(source),
            None => jobs.push(Job {
                account,
                sources: vec![source],
                source_account: None,
            }),
        }
    }
    Ok(jobs)
}

/// A SOURCE argument: `imaps://USER@HOST[:PORT]` is an IMAP mailbox, anything else a path.
fn arg_source(p: &Path, format: Format) -> Result<Source, String> {
    let Some(text) = p.to_str() else {
        return Ok(Source::Path {
            path: p.to_path_buf(),
            format,
        });
    };
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("imap://") {
        return Err(format!(
            "{text}: IMAP is read over TLS only: write imaps://"
        ));
    }
    let Some(rest) = text
        .get("imaps://".len()..)
        .filter(|_| lower.starts_with("imaps://"))
    else {
        return Ok(Source::Path {
            path: p.to_path_buf(),
            format,
        });
    };
    let rest = rest.trim_end_matches('/');
    let Some((user, host)) = rest.rsplit_once('@') else {
        return Err(format!("{text}: write imaps://USER@HOST[:PORT]"));
    };
    if user.contains(':') {
        return Err(
            "an imaps:// source with a password: give it with --password-file or HANDOFF_IMAP_PASSWORD, never as an argument"
                .to_string(),
        );
    }
    if user.is_empty() || host.is_empty() {
        return Err(format!("{text}: write imaps://USER@HOST[:PORT]"));
    }
    crate::imap::Server::parse(host).map_err(|e| format!("{text}: {e}"))?;
    Ok(Source::Imap {
        host: Some(host.to_string()),
        user: user.to_string(),
        password: None,
    })
}

/// The run's IMAP password: the first line of --password-file, else HANDOFF_IMAP_PASSWORD.
fn password(a: &ImportArgs) -> Result<Option<crate::imap::Secret>, String> {
    imap_password(a.password_file.as_deref())
}

/// An IMAP password as `import` and `restore` take it: the first line of `--password-file`,
/// else the environment variable [`PASSWORD_ENV`]; `None` when neither gives one.
pub(super) fn imap_password(file: Option<&Path>) -> Result<Option<crate::imap::Secret>, String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--password-file {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(format!(
                "--password-file {}: the first line is empty",
                path.display()
            ));
        }
        return Ok(Some(crate::imap::Secret::new(line)));
    }
    Ok(std::env::var(PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .map(crate::imap::Secret::new))
}

fn counts_text(c: &Counts) -> String {
    format!(
        "{} seen, {} imported, {} duplicate, {} failed",
        c.seen, c.imported, c.duplicate, c.failed
    )
}

fn add(t: &mut Counts, c: &Counts) {
    t.seen += c.seen;
    t.imported += c.imported;
    t.duplicate += c.duplicate;
    t.failed += c.failed;
}

/// The status's reason for an account whose messages failed: the first, and how many more.
fn summary(failures: &[String]) -> Option<String> {
    let first = failures.first()?;
    Some(match failures.len() {
        1 => first.clone(),
        n => format!("{first} (and {} more)", n - 1),
    })
}

/// Writes the status file at most once a second while accounts run (1,000 small accounts
/// must not cost 2,000 rewrites), and whenever told to.
struct Saver<'a> {
    file: &'a StatusFile,
    last: Option<Instant>,
}

impl<'a> Saver<'a> {
    fn new(file: &'a StatusFile) -> Saver<'a> {
        Saver { file, last: None }
    }

    fn due(&self) -> bool {
        self.last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
    }

    fn save(&mut self, status: &Status, force: bool) {
        if !force && !self.due() {
            return;
        }
        self.last = Some(Instant::now());
        // The status is a view: a failure to write it is said, and the import goes on.
        if let Err(e) = self.file.save(status) {
            eprintln!("handoff archive import: warning: cannot write the status: {e}");
        }
    }
}

/// One account's progress on stderr: a bar on a terminal, a line every 5 s otherwise.
struct Shown {
    account: String,
    start: Instant,
    how: How,
    last: Counts,
}

enum How {
    Off,
    Bar { bar: ProgressBar, next: Instant },
    Lines { every: Duration, next: Instant },
}

impl Shown {
    fn new(account: &str, arg: &ProgressArg) -> Shown {
        let start = Instant::now();
        let how = if arg.quiet {
            How::Off
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
                    // A constant template: it parses.
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(account.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            How::Bar { bar, next: start }
        } else {
            let every = every();
            How::Lines {
                every,
                next: start + every,
            }
        };
        Shown {
            account: account.to_string(),
            start,
            how,
            last: Counts::default(),
        }
    }

    fn update(&mut self, c: &Counts) {
        self.last = *c;
        let now = Instant::now();
        let rate = |c: &Counts| c.seen as f64 / self.start.elapsed().as_secs_f64().max(0.001);
        match &mut self.how {
            How::Off => {}
            How::Bar { bar, next } => {
                if now >= *next {
                    *next = now + Duration::from_millis(100);
                    bar.set_message(format!("{}, {:.0} msg/s", counts_text(c), rate(c)));
                }
            }
            How::Lines { every, next } => {
                if now >= *next {
                    *next = now + *every;
                    eprintln!(
                        "import {}: {}, {:.0} msg/s",
                        self.account,
                        counts_text(c),
                        rate(c)
                    );
                }
            }
        }
    }

    fn finish(self) {
        if let How::Bar { bar, .. } = self.how {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_take_a_whole_number_and_a_unit() {
        assert_eq!(interval("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(interval("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(interval("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(interval("30d"), Ok(Duration::from_secs(30 * 86_400)));
        for bad in [
            "",
            "10",
            "m",
            "1.5h",
            "-1m",
            "10 m",
            "10w",
            "0s",
            "3661d",
            "99999999999999999999d",
        ] {
            assert!(interval(bad).is_err(), "{bad:?} was taken");
        }
        assert_eq!(show_interval(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(show_interval(Duration::from_secs(5400)), "90m");
        assert_eq!(show_interval(Duration::from_secs(61)), "61s");
    }
}
