//! `handoff archive import --csv`: the accounts to import, pure: CSV text in, rows with their
//! line out, or every mistake at once, each naming its line (as `handoff import --csv` does).
//!
//! The first row names the columns, in any order: `account` (the handoff account the mail
//! belongs to) and `source` (a path, or the IMAP user) are required, `password` and `host`
//! (`host` or `host:port`) optional. A row with a `host` or a `password` is an IMAP row. The
//! password is kept as a [`Secret`]: it never prints.

use std::collections::HashMap;

use crate::address::Address;
use crate::imap::Secret;

/// One row of the accounts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based line of the CSV file the row starts on.
    pub line: u64,
    pub account: Address,
    pub source: String,
    pub host: Option<String>,
    /// The IMAP password, when the row gives one.
    pub password: Option<Secret>,
}

impl Row {
    /// Whether the row needs IMAP (a host or a password).
    pub fn is_imap(&self) -> bool {
        self.host.is_some() || self.password.is_some()
    }
}

const COLUMNS: [&str; 4] = ["account", "source", "password", "host"];

/// Parses the CSV text of `name`. Errors are `NAME:LINE: message`, all of them.
pub fn parse(name: &str, text: &str) -> Result<Vec<Row>, Vec<String>> {
    let mut rows = Vec::new();
    let mut first: HashMap<(Address, String), u64> = HashMap::new();
    let errors = crate::csvtable::each_row(name, text, &COLUMNS, &[0, 1], |line, cells| {
        let [account, source, password, host] = cells;
        let mut bad = Vec::new();
        let account = match account {
            "" => {
                bad.push("the `account` cell is empty".to_string());
                None
            }
            a => match Address::parse_strict(a) {
                Ok(a) => Some(a),
                Err(e) => {
                    bad.push(format!("account `{a}`: {e}"));
                    None
                }
            },
        };
        if source.is_empty() {
            bad.push("the `source` cell is empty".to_string());
        }
        let Some(account) = account.filter(|_| bad.is_empty()) else {
            return bad;
        };
        match first.get(&(account.clone(), source.to_string())) {
            Some(l) => vec![format!(
                "`{account}` with source `{source}` is already on line {l}"
            )],
            None => {
                first.insert((account.clone(), source.to_string()), line);
                rows.push(Row {
                    line,
                    account,
                    source: source.to_string(),
                    host: Some(host.to_string()).filter(|h| !h.is_empty()),
                    password: Some(password).filter(|p| !p.is_empty()).map(Secret::new),
                });
                Vec::new()
            }
        }
    });
    match errors.is_empty() {
        true => Ok(rows),
        false => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_with_their_lines_and_imap_rows_told_apart() {
        let text = "Source,ACCOUNT,host,password\n\
/m/alice,alice@corp.example,,\n\
\n\
\"/m/with,comma\",bob@corp.example,,\n\
bob,bob@corp.example,imap.corp.example,\n\
carol,carol@corp.example,,secret\n";
        let rows = parse("a.csv", text).unwrap();
        let got: Vec<(u64, String, &str, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.line,
                    r.account.to_string(),
                    r.source.as_str(),
                    r.is_imap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (2, "alice@corp.example".into(), "/m/alice", false),
                (4, "bob@corp.example".into(), "/m/with,comma", false),
                (5, "bob@corp.example".into(), "bob", true),
                (6, "carol@corp.example".into(), "carol", true),
            ]
        );
    }

    #[test]
    fn every_mistake_names_its_line_and_no_password_is_shown() {
        let text = "account,source,password\n\
alice@corp.example,/m/a,\n\
not an address,/m/b,hunter2\n\
,/m/c,\n\
dave@corp.example,,\n\
alice@corp.example,/m/a,\n\
eve@corp.example,/m/e,x,extra\n";
        let errors = parse("a.csv", text).unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:#?}");
        for (e, line) in errors.iter().zip([3, 4, 5, 6, 7]) {
            assert!(e.starts_with(&format!("a.csv:{line}: ")), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(errors[3].contains("already on line 2"), "{}", errors[3]);
    }

    #[test]
    fn header_mistakes_are_line_one() {
        let errors = parse("a.csv", "account,src,account\nx,y\n").unwrap_err();
        assert_eq!(
            errors,
            [
                "a.csv:1: unknown column `src` (known: account, source, password, host)",
                "a.csv:1: column `account` appears twice",
                "a.csv:1: the header has no `source` column",
            ]
        );
    }

    #[test]
    fn a_thousand_rows_keep_their_lines() {
        let mut text = String::from("account,source\n");
        for i in 0..1500 {
            text.push_str(&format!("u{i}@corp.example,/m/u{i}\n"));
        }
        let rows = parse("a.csv", &text).unwrap();
        assert_eq!(rows.len(), 1500);
        assert_eq!(rows[1499].line, 1501);
    }
}
