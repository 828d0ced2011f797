//! Edits of one policy document, pure: a [`toml_edit::DocumentMut`] and an [`Edit`] in, the
//! edited document out. Only the keys an edit is about change; comments, blank lines, key order
//! and the formatting of everything else stay as the admin wrote them, and a changed value keeps
//! the comment at the end of its line.

use std::collections::HashMap;

use jiff::civil::Date;
use toml_edit::{Array, DocumentMut, Item, Table, TableLike, Value};

use crate::address::Address;
use crate::policy::{SmtpReply, State};

/// One change to the policy, for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub address: Address,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create or update the account `[accounts."ADDRESS"]`.
    Account(AccountChange),
    /// Create or replace the alias `[aliases] "ADDRESS" = [MEMBERS]`.
    Alias(Vec<Address>),
}

/// An account's new state and, for a departure, where its mail goes.
///
/// Applying it sets `state` and replaces the departure settings (`successor` when given,
/// `forward`, `keep_copy`, `autoreply`) and the scheduled switch (`until`, `then`): a key the
/// change does not give is removed, so the result means exactly what the command said. `name`,
/// `department`, comments and unknown-to-this-change keys stay. A `reply` stays while it fits
/// the new state (a 5xx for disabled or deleted, a 4xx for frozen) and is removed otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    pub state: State,
    pub successor: Option<Address>,
    /// Empty: mail goes to the successor (the key is left out).
    pub forward: Vec<Address>,
    pub keep_copy: Option<bool>,
    pub autoreply: Option<String>,
    /// From this date on, behave as this state.
    pub until: Option<(Date, State)>,
}

impl AccountChange {
    /// A state change with nothing else: `disable`, `freeze`, `delete`, `restore`.
    pub fn state(state: State) -> AccountChange {
        AccountChange {
            state,
            successor: None,
            forward: Vec::new(),
            keep_copy: None,
            autoreply: None,
            until: None,
        }
    }
}

/// Why an edit cannot be made to a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("`{address}` is an alias; remove it from [aliases] before giving it an account state")]
    IsAlias { address: Address },
    #[error("`{address}` is an account; remove its [accounts] entry before making it an alias")]
    IsAccount { address: Address },
    #[error("`{section}` is not a table in this file, so `{address}` cannot be added to it")]
    NotATable {
        section: &'static str,
        address: Address,
    },
}

/// The keys of a document's `[accounts]` and `[aliases]` tables by the address they name (as
/// written: case and quoting may differ from the address's normal form), so a batch of edits (an
/// import of 20,000 rows) finds each entry in constant time instead of parsing every key per edit.
/// Kept in step with the document by [`apply_indexed`].
#[derive(Debug, Clone, Default)]
pub struct Keys {
    accounts: HashMap<Address, String>,
    aliases: HashMap<Address, String>,
}

impl Keys {
    /// Reads the keys of `doc` (the first key wins when two name the same address).
    pub fn of(doc: &DocumentMut) -> Keys {
        let index = |section: Option<&Item>| {
            let mut keys = HashMap::new();
            if let Some(table) = section.and_then(Item::as_table_like) {
                for (k, _) in table.iter() {
                    if let Ok(a) = Address::parse_strict(k) {
                        keys.entry(a).or_insert_with(|| k.to_string());
                    }
                }
            }
            keys
        };
        Keys {
            accounts: index(doc.get("accounts")),
            aliases: index(doc.get("aliases")),
        }
    }
}

/// Applies `edit` to `doc`.
pub fn apply(doc: &mut DocumentMut, edit: &Edit) -> Result<(), EditError> {
    apply_indexed(doc, &mut Keys::of(doc), edit)
}

/// Applies `edit` to `doc`, whose keys are `keys` (from [`Keys::of`] and earlier calls).
pub fn apply_indexed(doc: &mut DocumentMut, keys: &mut Keys, edit: &Edit) -> Result<(), EditError> {
    let address = &edit.address;
    match &edit.change {
        Change::Account(change) => {
            if keys.aliases.contains_key(address) {
                return Err(EditError::IsAlias {
                    address: address.clone(),
                });
            }
            let existing = keys.accounts.get(address).cloned();
            let (key, table) = entry_table(doc, "accounts", existing, address)?;
            apply_account(table, change);
            keys.accounts.entry(address.clone()).or_insert(key);
            Ok(())
        }
        Change::Alias(members) => {
            if keys.accounts.contains_key(address) {
                return Err(EditError::IsAccount {
                    address: address.clone(),
                });
            }
            let key = keys
                .aliases
                .get(address)
                .cloned()
                .unwrap_or_else(|| address.as_str().to_string());
            let aliases = section(doc, "aliases", address)?;
            set(aliases, &key, Value::Array(addresses(members)));
            keys.aliases.entry(address.clone()).or_insert(key);
            Ok(())
        }
    }
}

fn apply_account(t: &mut dyn TableLike, c: &AccountChange) {
    set(t, "state", Value::from(c.state.as_str()));
    if let Some(s) = &c.successor {
        set(t, "successor", Value::from(s.as_str()));
    }
    let departs = c.state == State::Departed || c.until.is_some_and(|(_, s)| s == State::Departed);
    match (departs, c.forward.is_empty()) {
        (true, false) => set(t, "forward", Value::Array(addresses(&c.forward))),
        _ => {
            t.remove("forward");
        }
    }
    match (departs, c.keep_copy) {
        (true, Some(k)) => set(t, "keep_copy", Value::from(k)),
        _ => {
            t.remove("keep_copy");
        }
    }
    match (departs, &c.autoreply) {
        (true, Some(a)) => set(t, "autoreply", Value::from(a.as_str())),
        _ => {
            t.remove("autoreply");
        }
    }
    match c.until {
        Some((date, then)) => {
            set(t, "until", Value::from(toml_date(date)));
            set(t, "then", Value::from(then.as_str()));
        }
        None => {
            t.remove("until");
            t.remove("then");
        }
    }
    let states: Vec<State> = [Some(c.state), c.until.map(|(_, s)| s)]
        .into_iter()
        .flatten()
        .collect();
    let reply_fits = t
        .get("reply")
        .and_then(Item::as_str)
        .and_then(|r| SmtpReply::parse(r).ok())
        .is_some_and(|reply| {
            states.iter().any(|s| s.refusal().is_some())
                && states
                    .iter()
                    .filter_map(|s| s.refusal())
                    .all(|class| reply.clone().require(class).is_ok())
        });
    if !reply_fits {
        t.remove("reply");
    }
}

/// Sets `key` to `value`, keeping the decoration (the comment after it, the spacing around `=`)
/// of the value it replaces.
fn set(t: &mut dyn TableLike, key: &str, mut value: Value) {
    if let Some(old) = t.get(key).and_then(Item::as_value) {
        *value.decor_mut() = old.decor().clone();
        t.insert(key, Item::Value(value));
        return;
    }
    // A new key goes after the existing ones, formatted like a freshly written `key = value`.
    value.decor_mut().clear();
    t.insert(key, Item::Value(value));
}

/// The top-level table `name`, created (as an implicit table, so no empty `[name]` header is
/// written) when the file has none.
fn section<'d>(
    doc: &'d mut DocumentMut,
    name: &'static str,
    address: &Address,
) -> Result<&'d mut dyn TableLike, EditError> {
    if !doc.contains_key(name) {
        let mut t = Table::new();
        t.set_implicit(true);
        doc.insert(name, Item::Table(t));
    }
    doc.get_mut(name)
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| EditError::NotATable {
            section: name,
            address: address.clone(),
        })
}

/// The entry table of `address` under `section` (its key `existing` when it has one), created at
/// the end of the file when absent. Returns the key and the table.
fn entry_table<'d>(
    doc: &'d mut DocumentMut,
    name: &'static str,
    existing: Option<String>,
    address: &Address,
) -> Result<(String, &'d mut dyn TableLike), EditError> {
    let sec = section(doc, name, address)?;
    let key = match existing {
        Some(k) => k,
        None => {
            sec.insert(address.as_str(), Item::Table(Table::new()));
            address.as_str().to_string()
        }
    };
    let table = sec
        .get_mut(&key)
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| EditError::NotATable {
            section: name,
            address: address.clone(),
        })?;
    Ok((key, table))
}

fn addresses(list: &[Address]) -> Array {
    list.iter().map(|a| a.as_str()).collect()
}

fn toml_date(d: Date) -> toml_edit::Datetime {
    toml_edit::Datetime {
        // A civil date's parts are in range by construction.
        date: Some(toml_edit::Date {
            year: d.year() as u16,
            month: d.month() as u8,
            day: d.day() as u8,
        }),
        time: None,
        offset: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse_strict(s).unwrap()
    }

    fn edit(text: &str, e: Edit) -> String {
        let mut doc: DocumentMut = text.parse().unwrap();
        apply(&mut doc, &e).unwrap();
        doc.to_string()
    }

    const POLICY: &str = r#"# the policy
[domains]
local = ["corp.example"]

[aliases]
"sales@corp.example" = ["a@corp.example"]  # the sales team

# Alice left in May.
[accounts."Alice@corp.example"]
state = "frozen"   # until HR decides
name = "Alice"
reply = "450 4.2.1 ask HR"
"#;

    #[test]
    fn a_departure_keeps_comments_and_other_keys() {
        let out = edit(
            POLICY,
            Edit {
                address: addr("alice@corp.example"),
                change: Change::Account(AccountChange {
                    state: State::Departed,
                    successor: Some(addr("bob@corp.example")),
                    forward: Vec::new(),
                    keep_copy: Some(false),
                    autoreply: None,
                    until: Some((Date::new(2027, 5, 1).unwrap(), State::Deleted)),
                }),
            },
        );
        assert_eq!(
            out,
            r#"# the policy
[domains]
local = ["corp.example"]

[aliases]
"sales@corp.example" = ["a@corp.example"]  # the sales team

# Alice left in May.
[accounts."Alice@corp.example"]
state = "departed"   # until HR decides
name = "Alice"
successor = "bob@corp.example"
keep_copy = false
until = 2027-05-01
then = "deleted"
"#
        );
    }

    #[test]
    fn a_reply_stays_while_it_fits_the_state() {
        let out = edit(
            POLICY,
            Edit {
                address: addr("alice@corp.example"),
                change: Change::Account(AccountChange::state(State::Frozen)),
            },
        );
        assert!(out.contains("reply = \"450 4.2.1 ask HR\""), "{out}");
        let out = edit(
            POLICY,
            Edit {
                address: addr("alice@corp.example"),
                change: Change::Account(AccountChange::state(State::Disabled)),
            },
        );
        assert!(!out.contains("reply"), "{out}");
    }

    #[test]
    fn a_new_account_and_a_new_alias_go_at_the_end() {
        let out = edit(
            POLICY,
            Edit {
                address: addr("carol@corp.example"),
                change: Change::Account(AccountChange::state(State::Disabled)),
            },
        );
        assert!(
            out.ends_with("\n[accounts.\"carol@corp.example\"]\nstate = \"disabled\"\n"),
            "{out}"
        );
        let out = edit(
            "[domains]\nlocal = [\"corp.example\"]\n",
            Edit {
                address: addr("team@corp.example"),
                change: Change::Alias(vec![addr("a@corp.example"), addr("b@corp.example")]),
            },
        );
        assert_eq!(
            out,
            "[domains]\nlocal = [\"corp.example\"]\n\n[aliases]\n\"team@corp.example\" = [\"a@corp.example\", \"b@corp.example\"]\n"
        );
    }

    #[test]
    fn an_alias_is_replaced_in_place_with_its_comment() {
        let out = edit(
            POLICY,
            Edit {
                address: addr("SALES@corp.example"),
                change: Change::Alias(vec![addr("b@corp.example")]),
            },
        );
        assert!(
            out.contains("\"sales@corp.example\" = [\"b@corp.example\"]  # the sales team\n"),
            "{out}"
        );
    }

    #[test]
    fn an_alias_cannot_become_an_account_nor_the_reverse() {
        let mut doc: DocumentMut = POLICY.parse().unwrap();
        let e = Edit {
            address: addr("sales@corp.example"),
            change: Change::Account(AccountChange::state(State::Disabled)),
        };
        assert!(matches!(
            apply(&mut doc, &e),
            Err(EditError::IsAlias { .. })
        ));
        let e = Edit {
            address: addr("alice@corp.example"),
            change: Change::Alias(vec![addr("b@corp.example")]),
        };
        assert!(matches!(
            apply(&mut doc, &e),
            Err(EditError::IsAccount { .. })
        ));
        assert_eq!(doc.to_string(), POLICY, "a refused edit changes nothing");
    }

    #[test]
    fn restore_removes_the_departure() {
        let text = "[accounts.\"d@corp.example\"]\nstate = \"departed\"\nsuccessor = \"s@corp.example\"\nforward = [\"s@corp.example\"]\nkeep_copy = false\nautoreply = \"t\"\n";
        let out = edit(
            text,
            Edit {
                address: addr("d@corp.example"),
                change: Change::Account(AccountChange::state(State::Active)),
            },
        );
        assert_eq!(
            out,
            "[accounts.\"d@corp.example\"]\nstate = \"active\"\nsuccessor = \"s@corp.example\"\n"
        );
    }
}
