//! `handoff archive …`: the admin's side of the journal.
//!
//! Every command runs as the journal's owner: root running one on the daemon's journal (owned
//! by `handoff`) first becomes that user, for good (see [`fsops::become_owner_of`]). The owner
//! controls every name in the directory, so root must not follow them; and what the command
//! writes (audit and prune records, a new segment, a torn tail's copy, exported messages)
//! belongs to the owner, so the daemon can go on appending.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::archive_index;
use super::common::report_load_error;
use super::progress::{ProgressArg, Reporter};
use crate::fsops;
use crate::index::verify as index_verify;
use crate::index::{Page, Search, analysis};
use crate::journal::audit::{self, AuditEntry, AuditFilter};
use crate::journal::writer::DEFAULT_SEGMENT_BYTES;
use crate::journal::{RecordId, reader, retention, search};
use crate::policy::{self, Policy};
use crate::runtime::escape::{escape, field};

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Walk the whole hash chain; name the first bad record (exit 1) or print the head hash;
    /// then compare the search index with the journal (exit 3 if it is damaged or differs)
    Verify(VerifyArgs),
    /// List matching messages, newest first, from the index (every search is recorded in the
    /// journal's audit trail)
    Search(SearchArgs),
    /// Rebuild the search index from the journal (the journal is not changed; recorded in the
    /// audit trail)
    Reindex(ReindexArgs),
    /// Write messages byte for byte as ID.eml files (recorded in the audit trail)
    Export(ExportArgs),
    /// Remove sealed segments older than [archive] retention_days, except legal holds
    Prune(PruneArgs),
    /// List the audit trail, oldest first: who searched, exported, pruned or read the trail,
    /// when, with what query, how many messages (recorded in the audit trail too)
    Audit(AuditArgs),
    /// Bring existing mail (.eml, mbox, Maildir) into the archive, per account (recorded in the
    /// audit trail); --status shows where each account stands
    Import(super::import::ImportArgs),
    /// Append archived messages (a search's hits, or --id) byte for byte to a mailbox on an IMAP
    /// server, e.g. a successor's (recorded in the audit trail; a rerun appends nothing)
    Restore(Box<super::restore::RestoreArgs>),
}

#[derive(Debug, Args)]
pub struct JournalArg {
    /// Journal directory [default: [storage] journal of the policy]
    #[arg(long, value_name = "DIR")]
    pub journal: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 the journal is whole and the index agrees with it (or is only behind, \
or there is none); 1 the journal is damaged; 3 the journal is whole but the index is damaged or differs \
from it (`handoff archive reindex` rebuilds it)."
)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    #[command(flatten)]
    pub index: IndexArg,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub progress: ProgressArg,
}

/// `verify`'s exit status when the journal is whole but the index is damaged or differs from
/// it (1 is a damaged journal, 2 a usage error).
const INDEX_DIFFERS: u8 = 3;

/// Where the search index is.
#[derive(Debug, Args)]
pub struct IndexArg {
    /// Index directory [default: [storage] index of the policy for its journal, else `index`
    /// beside the journal directory]
    #[arg(long, value_name = "DIR")]
    pub index: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReindexArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    #[command(flatten)]
    pub index: IndexArg,
    #[command(flatten)]
    pub progress: ProgressArg,
}

/// `archive search`'s exit status when the index is behind the journal and the daemon's
/// indexer, which holds it, did not catch up within `--wait` (1 is any other failure, 2 a
/// usage error).
pub const EXIT_INDEX_BEHIND: u8 = 3;

/// Hits shown when no `--limit` is given (and no `--export`, which takes every hit).
const DEFAULT_LIMIT: usize = 100;

/// What `archive search` and `archive restore` choose messages by: every filter must match.
#[derive(Debug, Args)]
pub struct Filters {
    /// Mail of this policy account (as sender, recipient or forward target)
    #[arg(long, value_name = "ADDRESS")]
    pub account: Option<String>,
    /// Envelope sender or From: address
    #[arg(long, value_name = "ADDRESS")]
    pub from: Option<String>,
    /// Recipient, before or after handoff's rewrites
    #[arg(long, value_name = "ADDRESS")]
    pub to: Option<String>,
    /// On or after this date (YYYY-MM-DD, local time)
    #[arg(long, value_name = "DATE")]
    pub since: Option<jiff::civil::Date>,
    /// On or before this date
    #[arg(long, value_name = "DATE")]
    pub until: Option<jiff::civil::Date>,
    /// Words that must all appear (case-insensitive); "a phrase" in double quotes must appear
    /// as written
    #[arg(long, value_name = "WORDS")]
    pub text: Option<String>,
    /// Where --text looks: subject,body,attachment [default: all three]
    #[arg(long = "in", value_name = "PARTS")]
    pub parts: Option<search::Parts>,
    /// Mail of accounts in this department or its sub-departments (`sales` includes
    /// `sales/emea`)
    #[arg(long, value_name = "NAME")]
    pub department: Option<String>,
    /// --department without its sub-departments
    #[arg(long, requires = "department")]
    pub exact_department: bool,
    /// Imported mail filed under this folder (`INBOX` in any case)
    #[arg(long, value_name = "NAME")]
    pub folder: Option<String>,
}

impl Filters {
    /// The journal query these filters ask for.
    pub fn query(&self) -> search::Query {
        search::Query {
            account: self.account.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            since: self.since,
            until: self.until,
            text: self
                .text
                .as_deref()
                .map(analysis::split_query)
                .unwrap_or_default(),
            parts: self.parts.unwrap_or_default(),
            department: self.department.clone(),
            exact_department: self.exact_department,
            folder: self.folder.clone(),
        }
    }

    /// No filter given: every message would match.
    pub fn is_empty(&self) -> bool {
        self.account.is_none()
            && self.from.is_none()
            && self.to.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.text.is_none()
            && self.department.is_none()
            && self.folder.is_none()
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "The search is answered by the index, first brought up to the end of the journal. \
When the index cannot be used (damaged, not writable), it says so and reads the whole journal instead. \
While the daemon's indexer holds the index, the search waits (--wait, usually well under a second) until it has indexed everything \
the journal held when the search began; if it does not, the search says how far behind the index is \
and exits with status 3 (--scan reads the whole journal instead)."
)]
pub struct SearchArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    #[command(flatten)]
    pub index: IndexArg,
    #[command(flatten)]
    pub filters: Filters,
    /// Show at most N hits, newest first [default: 100; every hit with --export]
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Skip the N newest hits first
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub offset: usize,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Also export the hits shown to DIR (all of them unless --limit is given)
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// Read the whole journal instead of the index (slow on a large journal; needs no index)
    #[arg(long)]
    pub scan: bool,
    /// How long to wait for the daemon's indexer when the index is behind the journal
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub wait: u64,
    // --quiet: no progress for the index catch-up or the export.
    #[command(flatten)]
    pub progress: ProgressArg,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    /// Record ids, as search prints them
    #[arg(long = "id", value_name = "ID", required = true, num_args = 1..)]
    pub ids: Vec<RecordId>,
    /// Directory to write ID.eml files to
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub progress: ProgressArg,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    #[command(flatten)]
    pub index: IndexArg,
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub progress: ProgressArg,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Columns: record id, time (UTC), user, command, messages touched, query (key=value; --json gives it as recorded). \
Oldest first, as the journal holds them; this listing is itself recorded (command `audit`) \
and shows from the next listing on."
)]
pub struct AuditArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    /// Who ran the command: a login name, or the recorded `name (uid N)`
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// On or after this date (YYYY-MM-DD, local time)
    #[arg(long, value_name = "DATE")]
    pub since: Option<jiff::civil::Date>,
    /// On or before this date
    #[arg(long, value_name = "DATE")]
    pub until: Option<jiff::civil::Date>,
    /// Only this command (`search --export` counts as both search and export)
    #[arg(long, value_name = "COMMAND", value_parser = clap::builder::PossibleValuesParser::new(audit::COMMANDS))]
    pub command: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: PathBuf, cmd: &ArchiveCommand) -> ExitCode {
    let (arg, writes) = match cmd {
        ArchiveCommand::Verify(a) => (&a.journal, false),
        ArchiveCommand::Search(a) => (&a.journal, true),
        ArchiveCommand::Reindex(a) => (&a.journal, true),
        ArchiveCommand::Export(a) => (&a.journal, true),
        ArchiveCommand::Prune(a) => (&a.journal, true),
        ArchiveCommand::Audit(a) => (&a.journal, true),
        ArchiveCommand::Import(a) => (&a.journal, true),
        ArchiveCommand::Restore(a) => (&a.journal, true),
    };
    let need_policy = match cmd {
        ArchiveCommand::Prune(_) => true,
        ArchiveCommand::Import(a) => super::import::needs_policy(a),
        _ => false,
    };
    // Only an import may start a journal: any other command pointed at a directory that does
    // not exist (a mistyped --journal) would otherwise answer from, or audit into, a new empty
    // journal of its own making.
    let result = target(&config, arg, need_policy, writes)
        .and_then(|t| match (cmd, t.dir.is_dir()) {
            (ArchiveCommand::Import(_), _) | (_, true) => Ok(t),
            (_, false) => Err(fail(format!(
                "no journal at {} (--journal DIR, or [storage] journal in the policy)",
                t.dir.display()
            ))),
        })
        .and_then(|t| match cmd {
            ArchiveCommand::Verify(a) => verify(&t, a),
            ArchiveCommand::Search(a) => search_cmd(&t, a),
            ArchiveCommand::Reindex(a) => reindex_cmd(&t, a),
            ArchiveCommand::Export(a) => export_cmd(&t, a),
            ArchiveCommand::Prune(a) => prune_cmd(&t, a),
            ArchiveCommand::Audit(a) => audit_cmd(&t, a),
            ArchiveCommand::Import(a) => Ok(super::import::run(
                &t.dir,
                t.segment_bytes,
                t.policy.as_ref(),
                a,
            )),
            ArchiveCommand::Restore(a) => Ok(super::restore::run(
                &t.dir,
                t.segment_bytes,
                t.policy.as_ref(),
                a,
            )),
        });
    result.unwrap_or_else(|code| code)
}

/// The journal a command works on, with what it needs from the policy.
struct Target {
    dir: PathBuf,
    /// `[archive] segment_mb`: a record the command appends may start a segment, and must start
    /// it where the daemon would.
    segment_bytes: u64,
    policy: Option<Policy>,
    /// The journal's owner this process became (root running on the daemon's journal).
    became: Option<fsops::Became>,
}

impl Target {
    /// An export error, with why the directory may be out of reach after becoming the owner.
    fn export_failed(&self, e: search::SearchError) -> ExitCode {
        match &self.became {
            Some(b) => fail(format!(
                "{e} (archive commands run as the journal's owner, {} (uid {}): choose an --out directory it can write)",
                b.name.as_deref().unwrap_or("?"),
                b.uid
            )),
            None => fail(e),
        }
    }
}

/// Loads the policy (needed without `--journal`, and by `prune`; otherwise read for its segment
/// size when it loads), then becomes the journal's owner (when root): nothing in the journal
/// is touched before.
fn target(
    config: &Path,
    a: &JournalArg,
    need_policy: bool,
    writes: bool,
) -> Result<Target, ExitCode> {
    let (dir, policy) = match &a.journal {
        None => {
            let p = load(config)?;
            (p.settings.journal_dir.clone(), Some(p))
        }
        Some(d) if need_policy => (d.clone(), Some(load(config)?)),
        Some(d) => match policy::load(config) {
            Ok(p) => (d.clone(), Some(p)),
            Err(e) => {
                if writes {
                    eprintln!(
                        "handoff archive: warning: cannot load the policy {} ({e}): a new segment uses the default size, {} MiB",
                        config.display(),
                        DEFAULT_SEGMENT_BYTES / (1024 * 1024)
                    );
                }
                (d.clone(), None)
            }
        },
    };
    let segment_bytes = policy
        .as_ref()
        .map_or(DEFAULT_SEGMENT_BYTES, |p| p.settings.segment_bytes);
    // The audit trail names the person who ran the command, not the user it runs as.
    search::operator();
    let became =
        fsops::become_owner_of(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    Ok(Target {
        dir,
        segment_bytes,
        policy,
        became,
    })
}

type Outcome = Result<ExitCode, ExitCode>;

fn load(config: &Path) -> Result<Policy, ExitCode> {
    policy::load(config).map_err(|e| report_load_error(&e))
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("handoff archive: {msg}");
    ExitCode::FAILURE
}

fn verify(t: &Target, a: &VerifyArgs) -> Outcome {
    let dir = t.dir.as_path();
    let index = archive_index::index_dir(dir, a.index.index.as_deref(), t.policy.as_ref());
    // The index's commit is read before the journal is walked: the journal then holds at
    // least everything the index has seen, even while the daemon goes on writing both.
    let (mut state, mut compare) = IndexState::open(dir, &index, &a.progress);
    let mut progress = Reporter::new("verify", &a.progress);
    let result = reader::verify_observing(dir, &mut progress, &mut |info| {
        if let Some(c) = compare.as_mut() {
            c.record(info);
        }
    });
    progress.finish(result.is_ok());
    if result.is_ok()
        && let Some(c) = compare
    {
        state = match c.finish() {
            Ok(report) => IndexState::Compared(Box::new(report)),
            Err(e) => IndexState::damaged(&index, e),
        };
    } else if matches!(state, IndexState::Comparing) {
        state = IndexState::NotCompared;
    }
    let journal = match &result {
        Ok(v) => serde_json::json!({
            "journal": dir, "ok": true, "records": v.records, "segments": v.segments,
            "pruned_segments": v.pruned_segments, "head": v.head,
        }),
        Err(e) => serde_json::json!({
            "journal": dir, "ok": false, "error": e.to_string(),
            "segment": e.id.segment, "offset": e.id.offset,
        }),
    };
    if a.json {
        let out = serde_json::json!({ "journal": journal, "index": state.json(&index) });
        println!("{}", serde_json::to_string_pretty(&out).map_err(fail)?);
    } else {
        match &result {
            Ok(v) => println!(
                "{}: ok: {} records in {} segments ({} pruned); head {}",
                dir.display(),
                v.records,
                v.segments,
                v.pruned_segments,
                v.head
            ),
            Err(e) => eprintln!("handoff archive: {}: {e}", dir.display()),
        }
        state.print(&index);
    }
    if result.is_err() {
        Err(ExitCode::FAILURE)
    } else if state.failed() {
        Err(ExitCode::from(INDEX_DIFFERS))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// The index as `verify` finds it.
enum IndexState {
    None,
    /// Its `handoff-journal` names this other journal: not this journal's index.
    OtherJournal(String),
    Damaged(Vec<index_verify::Damage>),
    /// Whole, being compared with the journal as it is walked.
    Comparing,
    /// The journal is damaged: the index was not compared with it.
    NotCompared,
    Compared(Box<index_verify::Report>),
}

impl IndexState {
    /// Opens the index in `index` and checks its files' checksums (with progress: the index
    /// is read whole); when they are whole, the comparison to feed the journal's records.
    fn open(
        journal: &Path,
        index: &Path,
        arg: &ProgressArg,
    ) -> (IndexState, Option<index_verify::Compare>) {
        // A commit made meanwhile (the daemon's indexer) may have taken files of the one
        // being checked with it: damage is only damage if the commit still stands.
        let mut attempts = 3;
        loop {
            attempts -= 1;
            let snapshot = match index_verify::open(index) {
                Ok(index_verify::Opened::None) => return (IndexState::None, None),
                Ok(index_verify::Opened::Damaged(d)) => return (IndexState::Damaged(d), None),
                Ok(index_verify::Opened::Snapshot(s)) => s,
                Err(e) => return (IndexState::damaged(index, e), None),
            };
            if let Some(theirs) = archive_index::follows_other(journal, index) {
                return (IndexState::OtherJournal(theirs), None);
            }
            let mut progress = Reporter::new("verify index", arg);
            let damage = snapshot.checksums(&mut progress);
            progress.finish(damage.is_empty());
            let outcome = if damage.is_empty() {
                match snapshot.compare() {
                    Ok(c) => return (IndexState::Comparing, Some(c)),
                    Err(e) => IndexState::damaged(index, e),
                }
            } else {
                IndexState::Damaged(damage)
            };
            if attempts == 0 || !snapshot.superseded() {
                return (outcome, None);
            }
        }
    }

    fn damaged(index: &Path, e: crate::index::IndexError) -> IndexState {
        IndexState::Damaged(vec![index_verify::Damage {
            file: index.to_path_buf(),
            reason: e.to_string(),
        }])
    }

    fn failed(&self) -> bool {
        match self {
            IndexState::OtherJournal(_) | IndexState::Damaged(_) => true,
            IndexState::Compared(r) => r.differs(),
            IndexState::None | IndexState::Comparing | IndexState::NotCompared => false,
        }
    }

    fn json(&self, index: &Path) -> serde_json::Value {
        use serde_json::json;
        match self {
            IndexState::None => json!({ "index": index, "status": "none" }),
            IndexState::OtherJournal(theirs) => {
                json!({ "index": index, "status": "other-journal", "follows": theirs })
            }
            IndexState::Damaged(d) => json!({ "index": index, "status": "damaged", "damage": d }),
            IndexState::Comparing | IndexState::NotCompared => {
                json!({ "index": index, "status": "not-compared" })
            }
            IndexState::Compared(r) => {
                let status = if r.differs() {
                    "differs"
                } else if r.behind > 0 || r.pruned_pending > 0 {
                    "behind"
                } else {
                    "ok"
                };
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["status"] = json!(status);
                v
            }
        }
    }

    /// What a person reads: agreement on stdout, damage and differences on stderr (with what
    /// fixes them).
    fn print(&self, index: &Path) {
        let name = index.display();
        let fix = || {
            eprintln!(
                "handoff archive: {name}: `handoff archive reindex` rebuilds the index from the journal"
            )
        };
        match self {
            IndexState::None => println!(
                "{name}: no index (the first search builds it, or `handoff archive reindex`)"
            ),
            IndexState::OtherJournal(theirs) => {
                eprintln!("handoff archive: {name}: the index of another journal, {theirs}");
                fix();
            }
            IndexState::Damaged(damage) => {
                for d in damage {
                    eprintln!(
                        "handoff archive: {name}: damaged: {}: {}",
                        d.file.display(),
                        d.reason
                    );
                }
                fix();
            }
            IndexState::Comparing | IndexState::NotCompared => {
                println!("{name}: not compared with a damaged journal")
            }
            IndexState::Compared(r) if r.differs() => {
                eprintln!(
                    "handoff archive: {name}: differs from the journal: it holds {} messages, the journal's up to {} hold {}",
                    r.documents, r.position, r.expected
                );
                if let Some(p) = &r.bad_position {
                    eprintln!("  {p}");
                }
                let ids = |what: &str, i: &index_verify::Ids| {
                    if i.count > 0 {
                        let more = if i.count > i.first.len() as u64 {
                            ", …"
                        } else {
                            ""
                        };
                        eprintln!("  {} {what}: {}{more}", i.count, i.first.join(", "));
                    }
                };
                ids("missing from the index", &r.missing);
                ids("in the index but not in the journal", &r.extra);
                ids("in the index twice", &r.twice);
                if r.unidentified > 0 {
                    eprintln!(
                        "  {} documents with no record id of this journal",
                        r.unidentified
                    );
                }
                fix();
            }
            IndexState::Compared(r) => {
                let last = r.last_indexed.as_deref().unwrap_or("none");
                if r.behind == 0 && r.pruned_pending == 0 {
                    println!(
                        "{name}: ok: {} messages, the journal's up to {} (last {last})",
                        r.documents, r.position
                    );
                    return;
                }
                let mut line = format!(
                    "{name}: behind the journal by {} messages (it holds the journal up to {}, last {last}",
                    r.behind, r.position
                );
                if let Some(j) = &r.journal_last {
                    line.push_str(&format!("; the journal's last message is {j}"));
                }
                if r.pruned_pending > 0 {
                    line.push_str(&format!(
                        "; {} messages of pruned segments still to remove",
                        r.pruned_pending
                    ));
                }
                println!(
                    "{line}): the daemon's indexer may still be catching up, and a search catches up first"
                );
            }
        }
    }
}

fn search_cmd(t: &Target, a: &SearchArgs) -> Outcome {
    let dir = t.dir.as_path();
    let q = a.filters.query();
    let limit = match (a.limit, &a.export) {
        (Some(n), _) => n,
        (None, Some(_)) => usize::MAX,
        (None, None) => DEFAULT_LIMIT,
    };
    let s = Search {
        limit,
        offset: a.offset,
        ..Search::all(q.clone())
    };
    let index = archive_index::index_dir(dir, a.index.index.as_deref(), t.policy.as_ref());
    let scan = || -> Result<Page, ExitCode> {
        let mut hits = search::search(dir, &q).map_err(fail)?;
        hits.reverse();
        let total = hits.len();
        let hits = hits.into_iter().skip(s.offset).take(s.limit).collect();
        Ok(Page { total, hits })
    };
    let wait = std::time::Duration::from_secs(a.wait);
    let page = match a.scan {
        true => scan()?,
        false => match search_index(dir, &index, &s, wait, &a.progress) {
            Ok(page) => page,
            // Never silently incomplete: say how far behind, and let scripts tell.
            Err(e @ archive_index::Unusable::Behind { .. }) => {
                eprintln!("handoff archive: {e}");
                return Err(ExitCode::from(EXIT_INDEX_BEHIND));
            }
            Err(e) => {
                // The scan reads every record.
                eprintln!(
                    "handoff archive: the index cannot be used ({e}); reading the whole journal instead (`handoff archive reindex` rebuilds the index)"
                );
                scan()?
            }
        },
    };
    let hits = &page.hits;
    let command = if a.export.is_some() {
        "search+export"
    } else {
        "search"
    };
    // The audit record is written before anything is shown: no audit, no results.
    search::audit(dir, t.segment_bytes, command, &q, hits.len())
        .map_err(|e| fail(format!("cannot write the audit record: {e}")))?;
    if let Some(out) = &a.export {
        let ids: Vec<_> = hits.iter().filter_map(|h| h.id.parse().ok()).collect();
        let mut progress = Reporter::new("export", &a.progress);
        let result = search::export_with(dir, &ids, out, &mut progress);
        progress.finish(result.is_ok());
        result.map_err(|e| t.export_failed(e))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(hits).map_err(fail)?);
    } else {
        // Addresses and the decoded subject are the sender's text: escaped, so a tab cannot
        // shift a column and CR/LF or ESC (an RFC 2047 encoded word can carry any byte) cannot
        // forge a line or drive the terminal.
        for h in hits {
            let to: Vec<_> = h.to.iter().map(|t| escape(t)).collect();
            println!(
                "{}\t{}\t{}\t{}\t{}",
                h.id,
                escape(&h.time),
                escape(or_null(&h.from)),
                to.join(","),
                escape(&h.subject)
            );
        }
    }
    if hits.len() == page.total {
        eprintln!("{} messages", page.total);
    } else if hits.is_empty() {
        eprintln!(
            "{} messages, none shown after --offset {}",
            page.total, s.offset
        );
    } else {
        eprintln!(
            "showing {}-{} of {} messages, newest first; --limit/--offset for more",
            s.offset + 1,
            s.offset + hits.len(),
            page.total
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// [`archive_index::search`] with its progress shown: a search whose index was deleted
/// rebuilds it first, which on a large journal takes minutes.
pub(super) fn search_index(
    journal: &Path,
    index: &Path,
    s: &Search,
    wait: std::time::Duration,
    arg: &ProgressArg,
) -> Result<Page, archive_index::Unusable> {
    let mut progress = Reporter::new("index", arg);
    let result = archive_index::search(journal, index, s, wait, &mut progress);
    progress.finish(result.is_ok());
    result
}

fn reindex_cmd(t: &Target, a: &ReindexArgs) -> Outcome {
    let dir = t.dir.as_path();
    let index = archive_index::index_dir(dir, a.index.index.as_deref(), t.policy.as_ref());
    // Recorded before anything is read: the index holds every message's text.
    search::audit(
        dir,
        t.segment_bytes,
        "reindex",
        &serde_json::json!({ "index": index }),
        0,
    )
    .map_err(|e| fail(format!("cannot write the audit record: {e}")))?;
    let mut progress = Reporter::new("reindex", &a.progress);
    let done = archive_index::rebuild(dir, &index, &mut progress);
    progress.finish(done.is_ok());
    let done = done.map_err(fail)?;
    println!(
        "{}: {} messages indexed from {} journal records in {:.1} s",
        index.display(),
        done.progress.indexed,
        done.progress.records,
        done.took.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn or_null(s: &str) -> &str {
    if s.is_empty() { "<>" } else { s }
}

fn export_cmd(t: &Target, a: &ExportArgs) -> Outcome {
    let dir = t.dir.as_path();
    let ids: Vec<String> = a.ids.iter().map(|i| i.to_string()).collect();
    search::audit(
        dir,
        t.segment_bytes,
        "export",
        &serde_json::json!({ "ids": ids, "out": a.out }),
        a.ids.len(),
    )
    .map_err(|e| fail(format!("cannot write the audit record: {e}")))?;
    let mut progress = Reporter::new("export", &a.progress);
    let result = search::export_with(dir, &a.ids, &a.out, &mut progress);
    progress.finish(result.is_ok());
    let written = result.map_err(|e| t.export_failed(e))?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn prune_cmd(t: &Target, a: &PruneArgs) -> Outcome {
    let Some(policy) = &t.policy else {
        return Err(fail("prune needs the policy (retention_days, legal_hold)"));
    };
    let s = &policy.settings;
    let mut progress = Reporter::new("prune", &a.progress);
    let result = retention::prune_with(
        &t.dir,
        t.segment_bytes,
        s.retention_days,
        &s.legal_hold,
        jiff::Timestamp::now(),
        a.dry_run,
        &mut progress,
    );
    progress.finish(result.is_ok());
    let report = result.map_err(fail)?;
    let verb = if a.dry_run { "would remove" } else { "removed" };
    for r in &report.removed {
        println!("{verb} segment {} ({} records)", r.segment, r.records);
    }
    for n in &report.held {
        println!("kept segment {n}: legal hold");
    }
    println!(
        "{} segments {verb}, {} kept for legal hold, {} younger than {} days",
        report.removed.len(),
        report.held.len(),
        report.young.len(),
        s.retention_days
    );
    if !a.dry_run && !report.removed.is_empty() {
        // The pruned messages leave the index now, not at the next search: retention is about
        // their text too. The journal is pruned either way; the index follows it later.
        let index = archive_index::index_dir(&t.dir, a.index.index.as_deref(), Some(policy));
        match archive_index::follow(&t.dir, &index) {
            Ok(Some(_)) => println!(
                "{}: the pruned segments' messages removed from the index",
                index.display()
            ),
            Ok(None) => {}
            Err(e) => eprintln!(
                "handoff archive: warning: the index cannot be updated ({e}): the next search or the daemon's indexer removes the pruned messages from it (`handoff archive reindex` rebuilds it)"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn audit_cmd(t: &Target, a: &AuditArgs) -> Outcome {
    let dir = t.dir.as_path();
    let filter = AuditFilter {
        user: a.user.clone(),
        since: a.since,
        until: a.until,
        command: a.command.clone(),
    };
    let entries = audit::trail(dir, &filter).map_err(fail)?;
    // Reading the trail is an access too: recorded before anything is shown.
    search::audit(dir, t.segment_bytes, "audit", &filter, entries.len())
        .map_err(|e| fail(format!("cannot write the audit record: {e}")))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&entries).map_err(fail)?);
    } else {
        for e in &entries {
            println!("{}", audit_line(e));
        }
        eprintln!("{} audit records", entries.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// One entry as a tab-separated line. The user (a login name from the environment) and the
/// query (words a user typed) are escaped: no column shift, forged line or terminal control.
fn audit_line(e: &AuditEntry) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}",
        e.id,
        escape(&e.time),
        escape(if e.user.is_empty() { "?" } else { &e.user }),
        escape(&e.command),
        e.hits,
        query_text(&e.query)
    )
}

/// A recorded query as `key=value` fields, unset filters left out: each value as a log field
/// ([`field`]: quoted when it holds a space, `=` or `"`, escaped as by [`escape`]), a list's
/// items joined by spaces, a set of flags (`parts`) as the names that are on.
fn query_text(q: &serde_json::Value) -> String {
    use serde_json::Value;
    let plain = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let Value::Object(m) = q else {
        return escape(&plain(q)).into_owned();
    };
    let mut out = Vec::new();
    for (k, v) in m {
        let value = match v {
            Value::Null => continue,
            Value::Array(items) if items.is_empty() => continue,
            Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(" "),
            Value::Object(flags) if flags.values().all(Value::is_boolean) => flags
                .iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            other => plain(other),
        };
        out.push(format!("{}={}", escape(k), field(&value)));
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A recorded query reads as fields: unset filters left out, lists joined, flags by name,
    /// and what a user typed escaped and quoted so it can neither forge a field or a line nor
    /// drive the terminal.
    #[test]
    fn a_query_prints_as_escaped_fields() {
        let cases = [
            (
                json!({ "text": ["invoice", "2026"], "to": "b@corp.example", "from": null,
                        "parts": { "subject": true, "body": false, "attachment": true } }),
                r#"parts=attachment,subject text="invoice 2026" to=b@corp.example"#,
            ),
            (
                json!({ "text": ["\u{1b}]0;owned\u{7}", "x=y\r\nforged=1"], "account": [] }),
                r#"text="\u{1b}]0;owned\u{7} x=y\r\nforged=1""#,
            ),
            (
                json!({ "ids": ["1-0"], "out": "/tmp/a b", "hits": 3, "odd": { "k": "v" } }),
                r#"hits=3 ids=1-0 odd="{\"k\":\"v\"}" out="/tmp/a b""#,
            ),
            (json!({ "user": "\u{202e}evil" }), r#"user="\u{202e}evil""#),
            (json!("raw\tmeta\u{1b}"), r"raw\tmeta\u{1b}"),
            (json!({}), ""),
        ];
        for (q, want) in cases {
            assert_eq!(query_text(&q), want, "{q}");
        }
    }
}
