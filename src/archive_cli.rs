//! `handoff archive …`: the admin's side of the journal.
//!
//! Every command runs as the journal's owner: root running one on the daemon's journal (owned
//! by `handoff`) first becomes that user, for good (see [`fsops::become_owner_of`]). The owner
//! controls every name in the directory, so root must not follow them; and what the command
//! writes (audit and prune records, a new segment, a torn tail's copy, exported messages)
//! belongs to the owner, so the daemon can go on appending.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{
    ArchiveCommand, ExportArgs, JournalArg, PruneArgs, SearchArgs, report_load_error,
};
use crate::fsops;
use crate::journal::writer::DEFAULT_SEGMENT_BYTES;
use crate::journal::{reader, retention, search};
use crate::policy::{self, Policy};
use crate::runtime::escape::escape;

pub fn run(config: PathBuf, cmd: &ArchiveCommand) -> ExitCode {
    let (arg, writes) = match cmd {
        ArchiveCommand::Verify(a) => (a, false),
        ArchiveCommand::Search(a) => (&a.journal, true),
        ArchiveCommand::Export(a) => (&a.journal, true),
        ArchiveCommand::Prune(a) => (&a.journal, true),
    };
    let need_policy = matches!(cmd, ArchiveCommand::Prune(_));
    let result = target(&config, arg, need_policy, writes).and_then(|t| match cmd {
        ArchiveCommand::Verify(_) => verify(&t.dir),
        ArchiveCommand::Search(a) => search_cmd(&t, a),
        ArchiveCommand::Export(a) => export_cmd(&t, a),
        ArchiveCommand::Prune(a) => prune_cmd(&t, a),
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

fn verify(dir: &Path) -> Outcome {
    match reader::verify(dir) {
        Ok(v) => {
            println!(
                "{}: ok: {} records in {} segments ({} pruned); head {}",
                dir.display(),
                v.records,
                v.segments,
                v.pruned_segments,
                v.head
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(fail(format!("{}: {e}", dir.display()))),
    }
}

fn search_cmd(t: &Target, a: &SearchArgs) -> Outcome {
    let dir = t.dir.as_path();
    let q = search::Query {
        account: a.account.clone(),
        from: a.from.clone(),
        to: a.to.clone(),
        since: a.since,
        until: a.until,
        text: a
            .text
            .as_deref()
            .map(|t| t.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        parts: a.parts.unwrap_or_default(),
        department: a.department.clone(),
    };
    let hits = search::search(dir, &q).map_err(fail)?;
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
        search::export(dir, &ids, out).map_err(|e| t.export_failed(e))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&hits).map_err(fail)?);
    } else {
        // Addresses and the decoded subject are the sender's text: escaped, so a tab cannot
        // shift a column and CR/LF or ESC (an RFC 2047 encoded word can carry any byte) cannot
        // forge a line or drive the terminal.
        for h in &hits {
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
        eprintln!("{} messages", hits.len());
    }
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
    let written = search::export(dir, &a.ids, &a.out).map_err(|e| t.export_failed(e))?;
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
    let report = retention::prune(
        &t.dir,
        t.segment_bytes,
        s.retention_days,
        &s.legal_hold,
        jiff::Timestamp::now(),
        a.dry_run,
    )
    .map_err(fail)?;
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
    Ok(ExitCode::SUCCESS)
}
