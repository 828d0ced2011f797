//! What the archive and console benchmarks share: the query types, each drawing a new value per
//! run from the generated corpus, and the percentiles they print. Included by both with
//! `#[path]` (a bench is its own crate).

use std::time::Duration;

use handoff::index::analysis::is_cjk;
use handoff::index::corpus::{self, COMPANY_DEPARTMENTS, Message, Params, Rng, VOCABULARY};
use handoff::journal::search::{Parts, Query};

/// The query types, each drawing a value from its own band for every run.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    RareWord,
    CommonWord,
    Sender,
    Recipient,
    AccountMonth,
    DepartmentWord,
    AttachmentWord,
    ChineseWord,
    Phrase,
}

pub const KINDS: [Kind; 9] = [
    Kind::RareWord,
    Kind::CommonWord,
    Kind::Sender,
    Kind::Recipient,
    Kind::AccountMonth,
    Kind::DepartmentWord,
    Kind::AttachmentWord,
    Kind::ChineseWord,
    Kind::Phrase,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::RareWord => "rare word",
            Kind::CommonWord => "common word",
            Kind::Sender => "sender",
            Kind::Recipient => "recipient",
            Kind::AccountMonth => "account + 30 days",
            Kind::DepartmentWord => "department + word",
            Kind::AttachmentWord => "attachment word",
            Kind::ChineseWord => "Chinese word",
            Kind::Phrase => "phrase",
        }
    }
}

/// A message of `p` (below `n`) for which `want` holds.
fn some_message(r: &mut Rng, p: &Params, n: u64, want: impl Fn(&Message) -> bool) -> Message {
    loop {
        let m = corpus::message(p, r.below(n));
        if want(&m) {
            return m;
        }
    }
}

fn is_chinese(w: &str) -> bool {
    w.chars().any(is_cjk)
}

/// A query of kind `k` on messages `0..n` of `p`.
pub fn query(k: Kind, r: &mut Rng, p: &Params, n: u64) -> Query {
    let mut q = Query::default();
    let account = |r: &mut Rng| corpus::account(r.below(p.accounts));
    match k {
        Kind::RareWord => {
            q.text = vec![corpus::word(200_000 + r.below(VOCABULARY - 200_000))];
        }
        Kind::CommonWord => q.text = vec![corpus::word(r.below(100))],
        Kind::Sender => q.from = Some(account(r)),
        Kind::Recipient => q.to = Some(account(r)),
        Kind::AccountMonth => {
            q.account = Some(account(r));
            let day = jiff::civil::date(2021, 1, 1)
                .checked_add(jiff::Span::new().days(r.below(p.days - 30) as i64))
                .unwrap();
            q.since = Some(day);
            q.until = Some(day.checked_add(jiff::Span::new().days(29)).unwrap());
        }
        Kind::DepartmentWord => {
            let d = r.pick(COMPANY_DEPARTMENTS);
            q.department = Some(d.split('/').next().unwrap_or(d).to_string());
            q.text = vec![corpus::word(1_000 + r.below(9_000))];
        }
        Kind::AttachmentWord => {
            let m = some_message(r, p, n, |m| !m.attachment_words.is_empty());
            q.text = vec![r.pick(&m.attachment_words).clone()];
            q.parts = Parts {
                subject: false,
                body: false,
                attachment: true,
            };
        }
        Kind::ChineseWord => {
            let m = some_message(r, p, n, |m| m.body_words.iter().any(|w| is_chinese(w)));
            let words: Vec<&String> = m.body_words.iter().filter(|w| is_chinese(w)).collect();
            q.text = vec![r.pick(&words).to_string()];
        }
        Kind::Phrase => {
            // Latin text only: Chinese words run together, and their bigrams cross words.
            let m = some_message(r, p, n, |m| {
                m.body_words.len() > 1 && !m.body_words.iter().any(|w| is_chinese(w))
            });
            let i = r.below(m.body_words.len() as u64 - 1) as usize;
            q.text = vec![format!("{} {}", m.body_words[i], m.body_words[i + 1])];
        }
    }
    q
}

/// A query's words as a search takes them (`--text`, the form's text field): a phrase in
/// double quotes, the words separated by spaces.
pub fn text_field(q: &Query) -> String {
    let words: Vec<String> = q
        .text
        .iter()
        .map(|t| match t.contains(' ') {
            true => format!("\"{t}\""),
            false => t.clone(),
        })
        .collect();
    words.join(" ")
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    match ms < 10.0 {
        true => format!("{ms:.2}"),
        false => format!("{ms:.1}"),
    }
}
