//! A search (the scan's filters, same meaning) as a tantivy query. Pure: no index is touched.

use std::ops::Bound;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use tantivy::Term;
use tantivy::query::{AllQuery, BooleanQuery, Occur, PhraseQuery, Query, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};

use super::analysis::{normal_department, terms};
use super::document::{Fields, address_key};
use crate::journal::record::folder_key;
use crate::journal::search;

/// A search through the index: the scan's [`search::Query`] (every filter keeps its meaning:
/// the README's table of search flags) and what only the index offers.
#[derive(Debug, Clone)]
pub struct Search {
    pub filter: search::Query,
    /// Only records of this kind (`message`, `created`, `imported`); all of them when `None`.
    pub kind: Option<String>,
    /// Hits returned, newest first, after skipping `offset`.
    pub limit: usize,
    pub offset: usize,
    /// Only mail of these departments or their sub-departments (a console user's scope), on
    /// top of every other filter; empty: no limit.
    pub scope: Vec<String>,
}

impl Search {
    /// Every hit of `filter`, newest first.
    pub fn all(filter: search::Query) -> Search {
        Search {
            filter,
            kind: None,
            limit: usize::MAX,
            offset: 0,
            scope: Vec::new(),
        }
    }
}

/// The tantivy query for `s`. Every filter must match; within `--text`, every element (a word,
/// or a phrase: see [`super::analysis::split_query`]) must be found in one of the parts asked
/// for, its terms next to each other.
pub fn translate(f: &Fields, s: &Search) -> Box<dyn Query> {
    let q = &s.filter;
    let mut must: Vec<Box<dyn Query>> = Vec::new();
    if let Some(a) = &q.account {
        let k = address_key(a);
        must.push(any_of(
            &[f.account, f.sender, f.recipient, f.final_recipient],
            &k,
        ));
    }
    if let Some(from) = &q.from {
        // The scan lowercases `--from` before comparing (an IDN domain's case included).
        let k = address_key(&from.to_lowercase());
        must.push(any_of(&[f.sender, f.header_from], &k));
    }
    if let Some(to) = &q.to {
        must.push(any_of(&[f.recipient, f.final_recipient], &address_key(to)));
    }
    if let Some(d) = &q.department {
        let field = match q.exact_department {
            true => f.department_exact,
            false => f.department,
        };
        must.push(term(field, &normal_department(d)));
    }
    if !s.scope.is_empty() {
        must.push(Box::new(BooleanQuery::union(
            s.scope
                .iter()
                .map(|d| term(f.department, &normal_department(d)))
                .collect(),
        )));
    }
    if let Some(folder) = &q.folder {
        must.push(term(f.folder, &folder_key(folder)));
    }
    if let Some(k) = &s.kind {
        must.push(term(f.kind, k));
    }
    if q.since.is_some() || q.until.is_some() {
        // `i64::MIN` marks an unreadable time: no range selects it.
        let low = q.since.and_then(day_start).unwrap_or(i64::MIN + 1);
        let high = match q.until.and_then(|u| u.tomorrow().ok()).and_then(day_start) {
            Some(t) => Bound::Excluded(Term::from_field_i64(f.time, t)),
            None => Bound::Unbounded,
        };
        must.push(Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_i64(f.time, low)),
            high,
        )));
    }
    let parts = [
        (q.parts.subject, f.subject),
        (q.parts.body, f.body),
        (q.parts.attachment, f.attachment),
    ];
    let fields: Vec<Field> = parts.iter().filter(|p| p.0).map(|p| p.1).collect();
    for element in &q.text {
        let words = terms(element);
        if words.is_empty() {
            continue;
        }
        let alternatives: Vec<Box<dyn Query>> =
            fields.iter().map(|&field| phrase(field, &words)).collect();
        must.push(Box::new(BooleanQuery::union(alternatives)));
    }
    match must.len() {
        0 => Box::new(AllQuery),
        _ => Box::new(BooleanQuery::new(
            must.into_iter().map(|q| (Occur::Must, q)).collect(),
        )),
    }
}

/// The first instant of `d` in the system's time zone: the scan compares the record's date
/// there.
fn day_start(d: Date) -> Option<i64> {
    d.to_zoned(TimeZone::system())
        .ok()
        .map(|z| z.timestamp().as_microsecond())
}

fn term(field: Field, text: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, text),
        IndexRecordOption::Basic,
    ))
}

fn any_of(fields: &[Field], text: &str) -> Box<dyn Query> {
    Box::new(BooleanQuery::union(
        fields.iter().map(|&f| term(f, text)).collect(),
    ))
}

fn phrase(field: Field, words: &[String]) -> Box<dyn Query> {
    match words {
        [one] => Box::new(TermQuery::new(
            Term::from_field_text(field, one),
            IndexRecordOption::Basic,
        )),
        _ => Box::new(PhraseQuery::new(
            words
                .iter()
                .map(|w| Term::from_field_text(field, w))
                .collect(),
        )),
    }
}
