//! `handoff archive …`: the admin's side of the journal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{
    ArchiveCommand, ExportArgs, JournalArg, PruneArgs, SearchArgs, report_load_error,
};
use crate::journal::{reader, retention, search};
use crate::policy::{self, Policy};
use crate::runtime::escape::escape;

pub fn run(config: PathBuf, cmd: &ArchiveCommand) -> ExitCode {
    let result = match cmd {
        ArchiveCommand::Verify(a) => journal_dir(&config, a).and_then(|d| verify(&d)),
        ArchiveCommand::Search(a) => {
            journal_dir(&config, &a.journal).and_then(|d| search_cmd(&d, a))
        }
        ArchiveCommand::Export(a) => {
            journal_dir(&config, &a.journal).and_then(|d| export_cmd(&d, a))
        }
        ArchiveCommand::Prune(a) => prune_cmd(&config, a),
    };
    result.unwrap_or_else(|code| code)
}

type Outcome = Result<ExitCode, ExitCode>;

fn load(config: &Path) -> Result<Policy, ExitCode> {
    policy::load(config).map_err(|e| report_load_error(&e))
}

fn journal_dir(config: &Path, a: &JournalArg) -> Result<PathBuf, ExitCode> {
    match &a.journal {
        Some(d) => Ok(d.clone()),
        None => Ok(load(config)?.settings.journal_dir),
    }
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

fn search_cmd(dir: &Path, a: &SearchArgs) -> Outcome {
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
    search::audit(dir, command, &q, hits.len())
        .map_err(|e| fail(format!("cannot write the audit record: {e}")))?;
    if let Some(out) = &a.export {
        let ids: Vec<_> = hits.iter().filter_map(|h| h.id.parse().ok()).collect();
        search::export(dir, &ids, out).map_err(fail)?;
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

fn export_cmd(dir: &Path, a: &ExportArgs) -> Outcome {
    let ids: Vec<String> = a.ids.iter().map(|i| i.to_string()).collect();
    search::audit(
        dir,
        "export",
        &serde_json::json!({ "ids": ids, "out": a.out }),
        a.ids.len(),
    )
    .map_err(|e| fail(format!("cannot write the audit record: {e}")))?;
    let written = search::export(dir, &a.ids, &a.out).map_err(fail)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn prune_cmd(config: &Path, a: &PruneArgs) -> Outcome {
    let policy = load(config)?;
    let s = &policy.settings;
    let dir = a
        .journal
        .journal
        .clone()
        .unwrap_or_else(|| s.journal_dir.clone());
    let report = retention::prune(
        &dir,
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
