//! Where each account's import stands (`handoff archive import --status`): the model, and how
//! it is shown as a table or as CSV. Pure; [`super::run`] keeps it in the journal directory.
//!
//! The status is derived: the journal is the source of truth for what was imported (a rerun
//! rebuilds its seen-set from the journal's imported records), so a lost status file loses
//! only the display of past runs.

use serde::{Deserialize, Serialize};

/// An account's import, as a run leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    NotStarted,
    Running,
    Done,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::NotStarted => "not started",
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
        }
    }
}

/// Messages of one account's run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Messages found at the source (and pieces that were none: failed).
    pub seen: u64,
    pub imported: u64,
    /// The same bytes were archived for this account before.
    pub duplicate: u64,
    /// Pieces that are no message (an empty file), or could not be read.
    pub failed: u64,
}

/// One account's line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub account: String,
    pub sources: Vec<String>,
    pub state: State,
    /// Why the account failed, or why messages did (the first few).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub counts: Counts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
}

/// Every account any run was given, in the order first given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub accounts: Vec<Account>,
}

impl Status {
    /// The account's line, added (not started) when it has none.
    pub fn entry(&mut self, account: &str) -> &mut Account {
        let i = match self.accounts.iter().position(|a| a.account == account) {
            Some(i) => i,
            None => {
                self.accounts.push(Account {
                    account: account.to_string(),
                    sources: Vec::new(),
                    state: State::NotStarted,
                    reason: None,
                    counts: Counts::default(),
                    started: None,
                    finished: None,
                });
                self.accounts.len() - 1
            }
        };
        &mut self.accounts[i]
    }

    /// Accounts a run left `running` when no run holds the journal any more: it was stopped.
    pub fn interrupted(&mut self) {
        for a in &mut self.accounts {
            if a.state == State::Running {
                a.state = State::Failed;
                a.reason =
                    Some("interrupted: the import stopped before this account was done".into());
            }
        }
    }

    /// As CSV: a header row, then a row per account.
    pub fn to_csv(&self) -> String {
        let mut w = ::csv::Writer::from_writer(Vec::new());
        // Writing CSV to memory cannot fail.
        let _ = w.write_record([
            "account",
            "state",
            "seen",
            "imported",
            "duplicate",
            "failed",
            "reason",
            "sources",
            "started",
            "finished",
        ]);
        for a in &self.accounts {
            let n = |v: u64| v.to_string();
            let _ = w.write_record([
                a.account.as_str(),
                a.state.as_str(),
                &n(a.counts.seen),
                &n(a.counts.imported),
                &n(a.counts.duplicate),
                &n(a.counts.failed),
                a.reason.as_deref().unwrap_or(""),
                &a.sources.join(" "),
                a.started.as_deref().unwrap_or(""),
                a.finished.as_deref().unwrap_or(""),
            ]);
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }

    /// As a table for a person: aligned columns; the reason (the source's text: a path, an
    /// error) escaped so it cannot forge a line or drive the terminal.
    pub fn to_table(&self) -> String {
        let width = self
            .accounts
            .iter()
            .map(|a| a.account.len())
            .max()
            .unwrap_or(0)
            .max("ACCOUNT".len());
        let mut out = format!(
            "{:width$}  {:11}  {:>8}  {:>8}  {:>9}  {:>6}  REASON\n",
            "ACCOUNT", "STATE", "SEEN", "IMPORTED", "DUPLICATE", "FAILED"
        );
        for a in &self.accounts {
            let c = &a.counts;
            out.push_str(&format!(
                "{:width$}  {:11}  {:>8}  {:>8}  {:>9}  {:>6}  {}\n",
                a.account,
                a.state.as_str(),
                c.seen,
                c.imported,
                c.duplicate,
                c.failed,
                crate::runtime::escape::escape(a.reason.as_deref().unwrap_or("")),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_as_csv_and_as_a_table() {
        let mut s = Status::default();
        let a = s.entry("alice@corp.example");
        a.state = State::Done;
        a.counts = Counts {
            seen: 3,
            imported: 2,
            duplicate: 0,
            failed: 1,
        };
        a.reason = Some("/m/x: empty file, \"quoted\"".into());
        s.entry("bob@corp.example").state = State::Running;
        s.entry("carol@corp.example");
        assert_eq!(s.entry("alice@corp.example").counts.imported, 2);
        s.interrupted();
        let csv = s.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4, "{csv}");
        assert_eq!(
            lines[1],
            "alice@corp.example,done,3,2,0,1,\"/m/x: empty file, \"\"quoted\"\"\",,,"
        );
        assert!(lines[2].starts_with("bob@corp.example,failed,0,0,0,0,interrupted"));
        assert!(lines[3].starts_with("carol@corp.example,not started,"));
        let table = s.to_table();
        assert!(table.contains("carol@corp.example  not started"), "{table}");
    }
}
