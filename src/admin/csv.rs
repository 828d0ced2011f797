//! `handoff import --csv`: bulk departures, state changes and aliases from a spreadsheet, pure:
//! CSV text in, [`Edit`]s with their CSV line out, or every row's mistakes at once.
//!
//! The first row names the columns, in any order: `address` and `state` are required;
//! `successor`, `forward`, `keep_copy`, `autoreply`, `until`, `then` are optional. One row per
//! address:
//!
//! - `state` = `active`, `departed`, `disabled`, `frozen`, `deleted`: the account gets that state,
//!   as `handoff depart` / `disable` / … would set it;
//! - `state` = `alias`: the address becomes an alias whose members are the `forward` column
//!   (the other columns stay empty);
//! - `forward`: addresses separated by spaces, `;` or `,` (quote the cell for commas);
//! - `keep_copy`: `true`/`false` (also `yes`/`no`, `1`/`0`), empty for the default (true);
//! - `until` (`YYYY-MM-DD`) and `then` (a state) go together.

use std::collections::HashMap;

use jiff::civil::Date;

use super::edit::{AccountChange, Change, Edit};
use crate::address::Address;
use crate::policy::State;

/// One row of the import, turned into an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based line of the CSV file the row starts on.
    pub line: u64,
    pub edit: Edit,
}

const COLUMNS: [&str; 8] = [
    "address",
    "state",
    "successor",
    "forward",
    "keep_copy",
    "autoreply",
    "until",
    "then",
];

/// Parses the CSV text of `name`. Errors are `NAME:LINE: message`, all of them.
pub fn parse(name: &str, text: &str) -> Result<Vec<Row>, Vec<String>> {
    let mut rows: Vec<Row> = Vec::new();
    // The line each address was first seen on: a map, so the import stays linear in its rows.
    let mut first_line: HashMap<Address, u64> = HashMap::new();
    let errors =
        crate::csvtable::each_row(name, text, &COLUMNS, &[0, 1], |line, cells| {
            match row(&cells) {
                Ok(edit) => match first_line.get(&edit.address) {
                    Some(first) => vec![format!("`{}` is already on line {first}", edit.address)],
                    None => {
                        first_line.insert(edit.address.clone(), line);
                        rows.push(Row { line, edit });
                        Vec::new()
                    }
                },
                Err(messages) => messages,
            }
        });
    match errors.is_empty() {
        true => Ok(rows),
        false => Err(errors),
    }
}

/// One row's cells, in [`COLUMNS`] order.
fn row(c: &[&str; COLUMNS.len()]) -> Result<Edit, Vec<String>> {
    let [
        address,
        state,
        successor,
        forward,
        keep_copy,
        autoreply,
        until,
        then,
    ] = *c;
    let mut errs = Vec::new();
    let address = parse_address("address", address, &mut errs);
    let forward = parse_list(forward, &mut errs);
    if state.eq_ignore_ascii_case("alias") {
        for (col, value) in [
            ("successor", successor),
            ("keep_copy", keep_copy),
            ("autoreply", autoreply),
            ("until", until),
            ("then", then),
        ] {
            if !value.is_empty() {
                errs.push(format!(
                    "`{col}` does not apply to an alias (its members go in `forward`)"
                ));
            }
        }
        if forward.is_empty() && errs.is_empty() {
            errs.push("an alias needs its members in `forward`".into());
        }
        return match (address, errs.is_empty()) {
            (Some(address), true) => Ok(Edit {
                address,
                change: Change::Alias(forward),
            }),
            _ => Err(errs),
        };
    }
    let state = parse_state("state", state, &mut errs);
    let successor = match successor {
        "" => None,
        s => parse_address("successor", s, &mut errs),
    };
    let keep_copy = match keep_copy.to_ascii_lowercase().as_str() {
        "" => None,
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        other => {
            errs.push(format!("keep_copy `{other}` is not true or false"));
            None
        }
    };
    let autoreply = Some(autoreply.to_string()).filter(|a| !a.is_empty());
    let until = match (until, then) {
        ("", "") => None,
        ("", _) => {
            errs.push("`then` needs `until` (the date from which it applies)".into());
            None
        }
        (_, "") => {
            errs.push("`until` needs `then` (the state from that date on)".into());
            None
        }
        (u, t) => {
            let date = u.parse::<Date>().map_err(|_| {
                errs.push(format!("until `{u}` is not a date like 2027-05-01"));
            });
            let then = parse_state("then", t, &mut errs);
            date.ok().zip(then)
        }
    };
    match (address, state, errs.is_empty()) {
        (Some(address), Some(state), true) => Ok(Edit {
            address,
            change: Change::Account(AccountChange {
                state,
                successor,
                forward,
                keep_copy,
                autoreply,
                until,
            }),
        }),
        _ => Err(errs),
    }
}

fn parse_address(col: &str, s: &str, errs: &mut Vec<String>) -> Option<Address> {
    match Address::parse_strict(s) {
        Ok(a) => Some(a),
        Err(e) => {
            errs.push(format!("bad {col}: {e}"));
            None
        }
    }
}

fn parse_state(col: &str, s: &str, errs: &mut Vec<String>) -> Option<State> {
    let st = State::parse(&s.to_ascii_lowercase());
    if st.is_none() {
        let known: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
        let alias = if col == "state" { ", alias" } else { "" };
        errs.push(format!(
            "unknown {col} `{s}` (expected one of: {}{alias})",
            known.join(", ")
        ));
    }
    st
}

fn parse_list(s: &str, errs: &mut Vec<String>) -> Vec<Address> {
    s.split([' ', ';', ',', '\t'])
        .filter(|p| !p.is_empty())
        .filter_map(|p| parse_address("forward address", p, errs))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_edits_with_their_lines() {
        let text = "address,state,successor,forward,keep_copy,autoreply,until,then\n\
                    a@corp.example,departed,s@corp.example,,no,left,2027-01-31,deleted\n\
                    \n\
                    team@corp.example,alias,,\"x@corp.example, y@corp.example\",,,,\n\
                    b@corp.example,Disabled,,,,,,\n";
        let rows = parse("in.csv", text).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![2, 4, 5]
        );
        let Change::Account(a) = &rows[0].edit.change else {
            panic!()
        };
        assert_eq!(a.state, State::Departed);
        assert_eq!(a.keep_copy, Some(false));
        assert_eq!(
            a.until,
            Some((Date::new(2027, 1, 31).unwrap(), State::Deleted))
        );
        assert_eq!(
            rows[1].edit.change,
            Change::Alias(vec![
                Address::parse_strict("x@corp.example").unwrap(),
                Address::parse_strict("y@corp.example").unwrap()
            ])
        );
        assert_eq!(
            rows[2].edit.change,
            Change::Account(AccountChange::state(State::Disabled))
        );
    }

    #[test]
    fn columns_may_come_in_any_order_and_be_left_out() {
        let rows = parse("in.csv", "state,address\nfrozen,f@corp.example\n").unwrap();
        assert_eq!(
            rows[0].edit.change,
            Change::Account(AccountChange::state(State::Frozen))
        );
    }

    #[test]
    fn every_mistake_names_its_line() {
        let text = "address,state,forward,until,then,keep_copy\n\
                    not-an-address,departed,,,,\n\
                    a@corp.example,gone,,,,\n\
                    b@corp.example,alias,,,,\n\
                    c@corp.example,frozen,,2027-13-01,deleted,\n\
                    d@corp.example,departed,,,,maybe\n\
                    a@corp.example,active,,,,\n";
        let errs = parse("in.csv", text).unwrap_err();
        let want = [
            "in.csv:2: bad address: `not-an-address` has no `@domain` part",
            "in.csv:3: unknown state `gone`",
            "in.csv:4: an alias needs its members in `forward`",
            "in.csv:5: until `2027-13-01` is not a date like 2027-05-01",
            "in.csv:6: keep_copy `maybe` is not true or false",
        ];
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        for (got, want) in errs.iter().zip(want) {
            assert!(got.starts_with(want), "{got}\nwant {want}");
        }
    }

    #[test]
    fn a_repeated_address_is_an_error() {
        let errs = parse(
            "in.csv",
            "address,state\na@corp.example,frozen\nA@corp.example,deleted\n",
        )
        .unwrap_err();
        assert_eq!(
            errs,
            vec!["in.csv:3: `a@corp.example` is already on line 2"]
        );
    }

    #[test]
    fn a_bad_header_is_reported_before_any_row() {
        let errs = parse("in.csv", "adress,state\nx,y\n").unwrap_err();
        assert_eq!(
            errs,
            vec![
                "in.csv:1: unknown column `adress` (known: address, state, successor, forward, keep_copy, autoreply, until, then)",
                "in.csv:1: the header has no `address` column"
            ]
        );
    }
}
