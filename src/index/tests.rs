use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use jiff::civil::Date;

use super::analysis::department_matches;
use super::corpus::{self, CHINESE, DEPARTMENTS, Message, Params, Rng, WORDS};
use super::*;
use crate::journal::record::{MessageMeta, RecipientMeta};
use crate::journal::search::{self, Parts, Query};
use crate::journal::writer::{Body, Entry};

const SEGMENT: u64 = 256 * 1024;

fn meta(sender: &str, to: &str, departments: &[&str]) -> MessageMeta {
    MessageMeta {
        time: "2026-03-04T10:00:00Z".into(),
        origin: "milter".into(),
        sender: sender.into(),
        recipients: vec![RecipientMeta {
            address: to.into(),
            rule: "deliver".into(),
            ..RecipientMeta::default()
        }],
        final_recipients: vec![to.into()],
        accounts: vec![to.into()],
        departments: departments.iter().map(|d| d.to_string()).collect(),
        size: 1,
        ..MessageMeta::default()
    }
}

/// Writes `(meta, message)` pairs as message records; returns their ids.
fn journal_of(dir: &Path, records: &[(MessageMeta, Vec<u8>)]) -> Vec<RecordId> {
    let (mut w, _) = crate::journal::writer::Writer::open(dir, SEGMENT).unwrap();
    let mut entries: Vec<Entry> = records
        .iter()
        .map(|(m, b)| Entry::new(Kind::Message, m, Body::Bytes(b.clone())))
        .collect();
    w.append(&mut entries).unwrap().0
}

fn indexed(journal: &Path, index_dir: &Path) -> Index {
    let index = Index::open_or_create(index_dir).unwrap();
    let mut w = index.writer().unwrap();
    catch_up(journal, &index, &mut w, 1000).unwrap();
    index
}

fn ids(hits: &[Hit]) -> BTreeSet<String> {
    hits.iter().map(|h| h.id.clone()).collect()
}

fn text_query(words: &[&str]) -> Query {
    Query {
        text: words.iter().map(|w| w.to_string()).collect(),
        ..Query::default()
    }
}

fn gbk_message() -> Vec<u8> {
    let subject = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        encoding_rs::GBK.encode("关于Q3季度报告的通知").0,
    );
    let body = encoding_rs::GBK.encode("请查收附件中的销售合同 draft。").0;
    let mut m = format!(
        "From: a@example.com\r\nSubject: =?GB2312?B?{subject}?=\r\nContent-Type: text/plain; charset=GBK\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&body);
    m
}

#[test]
fn gbk_and_utf8_chinese_is_found_by_a_two_character_word_and_the_ascii_around_it() {
    let t = tempfile::tempdir().unwrap();
    let (journal, index_dir) = (t.path().join("journal"), t.path().join("index"));
    let utf8 = "From: b@example.com\r\nSubject: =?UTF-8?B?5Lya6K6u57qq6KaBIGZvcg==?= Monday\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMinutes: 会议纪要 attached\r\n";
    let ids_written = journal_of(
        &journal,
        &[
            (meta("a@example.com", "x@example.com", &[]), gbk_message()),
            (
                meta("b@example.com", "y@example.com", &[]),
                utf8.as_bytes().to_vec(),
            ),
        ],
    );
    let index = indexed(&journal, &index_dir);
    let find = |words: &[&str]| {
        let got = ids(&index.search(&Search::all(text_query(words))).unwrap().hits);
        let scan = ids(&search::search(&journal, &text_query(words)).unwrap());
        assert_eq!(got, scan, "{words:?}");
        got
    };
    let gbk = BTreeSet::from([ids_written[0].to_string()]);
    let utf = BTreeSet::from([ids_written[1].to_string()]);
    assert_eq!(find(&["季度"]), gbk);
    assert_eq!(find(&["报告"]), gbk);
    assert_eq!(find(&["Q3"]), gbk);
    assert_eq!(find(&["季度报告", "q3"]), gbk);
    assert_eq!(find(&["合同", "DRAFT"]), gbk);
    assert_eq!(find(&["会议"]), utf);
    assert_eq!(find(&["会议纪要", "monday"]), utf);
    assert!(find(&["报季"]).is_empty());
}

#[test]
fn the_scan_matches_words_not_substrings() {
    let t = tempfile::tempdir().unwrap();
    let journal = t.path().join("journal");
    let body = b"From: a@example.com\r\nSubject: your invoices\r\n\r\nsee the attached invoice\r\n";
    journal_of(
        &journal,
        &[(meta("a@example.com", "x@example.com", &[]), body.to_vec())],
    );
    let n = |words: &[&str]| search::search(&journal, &text_query(words)).unwrap().len();
    assert_eq!(n(&["invoice"]), 1);
    assert_eq!(n(&["voice"]), 0, "a substring is no word");
    assert_eq!(n(&["attached invoice"]), 1, "an element is a phrase");
    assert_eq!(n(&["invoice attached"]), 0);
    assert_eq!(n(&["invoices see"]), 0, "a phrase stays within one part");
}

#[test]
fn a_department_includes_its_sub_departments_in_the_scan_and_the_index() {
    let t = tempfile::tempdir().unwrap();
    let (journal, index_dir) = (t.path().join("journal"), t.path().join("index"));
    let body = b"Subject: hi\r\n\r\nhello\r\n".to_vec();
    let written = journal_of(
        &journal,
        &[
            (
                meta("a@example.com", "x@example.com", &["Sales"]),
                body.clone(),
            ),
            (
                meta("a@example.com", "x@example.com", &["sales/EMEA"]),
                body.clone(),
            ),
            (
                meta("a@example.com", "x@example.com", &["salesforce"]),
                body.clone(),
            ),
            (meta("a@example.com", "x@example.com", &["hr"]), body),
        ],
    );
    let index = indexed(&journal, &index_dir);
    let q = |d: &str| Query {
        department: Some(d.into()),
        ..Query::default()
    };
    let set =
        |i: &[usize]| -> BTreeSet<String> { i.iter().map(|&i| written[i].to_string()).collect() };
    assert_eq!(
        ids(&search::search(&journal, &q("sales")).unwrap()),
        set(&[0, 1])
    );
    assert_eq!(
        ids(&search::search(&journal, &q("SALES/emea")).unwrap()),
        set(&[1])
    );
    let mut s = Search::all(q("sales"));
    assert_eq!(ids(&index.search(&s).unwrap().hits), set(&[0, 1]));
    s.filter.exact_department = true;
    assert_eq!(ids(&index.search(&s).unwrap().hits), set(&[0]));
    s.filter = q("sales/emea/");
    assert_eq!(ids(&index.search(&s).unwrap().hits), set(&[1]));
}

#[test]
fn the_commit_keeps_the_journal_position_and_an_uncommitted_batch_is_gone() {
    let t = tempfile::tempdir().unwrap();
    let (journal, index_dir) = (t.path().join("journal"), t.path().join("index"));
    let p = Params {
        max_words: 30,
        ..Params::default()
    };
    corpus::write_journal(&journal, &p, 120, 64 * 1024).unwrap();
    let index = Index::open_or_create(&index_dir).unwrap();
    assert_eq!(index.position().unwrap(), Position::START);
    let mut w = index.writer().unwrap();
    let first = catch_up(&journal, &index, &mut w, 50).unwrap();
    assert!(first.reached.segment > 1, "the corpus spans segments");
    assert_eq!(index.position().unwrap(), first.reached);
    assert_eq!(index.records().unwrap(), first.indexed);
    // Documents added but never committed (a crash before the commit) are not in the index,
    // and the position still says where to resume.
    w.add(&[Doc::new(
        RecordId {
            segment: 99,
            offset: 0,
        },
        Kind::Message,
        &serde_json::to_vec(&meta("a@example.com", "b@example.com", &[])).unwrap(),
        b"Subject: lost\r\n\r\nx\r\n",
    )
    .unwrap()])
        .unwrap();
    drop(w);
    let index = Index::open_or_create(&index_dir).unwrap();
    assert_eq!(index.position().unwrap(), first.reached);
    assert_eq!(index.records().unwrap(), first.indexed);
    // More mail, then resume: every record once.
    corpus::write_journal(&journal, &Params { seed: 2, ..p }, 80, 64 * 1024).unwrap();
    let mut w = index.writer().unwrap();
    let second = catch_up(&journal, &index, &mut w, 30).unwrap();
    assert!(second.reached > first.reached);
    let scan = search::search(&journal, &Query::default()).unwrap();
    let page = index.search(&Search::all(Query::default())).unwrap();
    assert_eq!(page.total, scan.len());
    assert_eq!(ids(&page.hits), ids(&scan));
    // Nothing new: nothing added.
    assert_eq!(catch_up(&journal, &index, &mut w, 30).unwrap().indexed, 0);
    assert_eq!(index.records().unwrap() as usize, scan.len());
}

/// Sees the index's commits from outside while a catch-up runs: before each record it is
/// handed, the position of the last commit, and the journal bytes handed to it by then.
struct Commits<'a> {
    index: &'a Index,
    read: u64,
    /// Journal bytes read when each commit was first seen.
    seen_at: Vec<u64>,
    last: Position,
}

impl journal::Progress for Commits<'_> {
    fn total(&mut self, _bytes: u64) {}

    fn advance(&mut self, bytes: u64, _records: u64) {
        let now = self.index.position().unwrap();
        if now != self.last {
            self.last = now;
            self.seen_at.push(self.read);
        }
        self.read += bytes;
    }
}

#[test]
fn a_catch_up_commits_each_time_its_writer_has_taken_its_bound_in_bytes() {
    let t = tempfile::tempdir().unwrap();
    let (journal, index_dir) = (t.path().join("journal"), t.path().join("index"));
    corpus::write_journal(&journal, &Params::default(), 200, 1 << 20).unwrap();
    let total = Records::from(&journal, Position::START).bytes_ahead();
    let run = |commit_bytes: u64| {
        let _ = std::fs::remove_dir_all(&index_dir);
        let index = Index::open_or_create(&index_dir).unwrap();
        let mut w = index.daemon_writer().unwrap();
        w.commit_bytes = commit_bytes;
        let mut commits = Commits {
            index: &index,
            read: 0,
            seen_at: Vec::new(),
            last: Position::START,
        };
        let done = catch_up_to(&journal, &index, &mut w, 10_000, None, &mut commits).unwrap();
        assert_eq!((done.indexed, index.records().unwrap()), (200, 200));
        commits.seen_at
    };
    // No bound: one commit, at the end (none seen while records were handed over).
    assert_eq!(run(u64::MAX), Vec::<u64>::new());
    // A quarter of the journal: a commit after each quarter, each once its bytes were taken.
    let quarter = total / 4;
    let seen = run(quarter);
    assert!((3..=4).contains(&seen.len()), "{seen:?} of {total}");
    let mut before = 0;
    for at in seen {
        assert!(
            at - before >= quarter,
            "{at} after {before}, bound {quarter}"
        );
        before = at;
    }
}

#[test]
fn deleting_by_id_and_by_segment() {
    let t = tempfile::tempdir().unwrap();
    let (journal, index_dir) = (t.path().join("journal"), t.path().join("index"));
    let written = corpus::write_journal(&journal, &Params::default(), 60, 64 * 1024).unwrap();
    let index = indexed(&journal, &index_dir);
    let before = index.search(&Search::all(Query::default())).unwrap();
    let mut w = index.writer().unwrap();
    let reached = index.position().unwrap();
    w.delete(written[3]);
    w.delete_segment(written[0].segment);
    w.commit(reached, None).unwrap();
    let after = ids(&index.search(&Search::all(Query::default())).unwrap().hits);
    let expected: BTreeSet<String> = before
        .hits
        .iter()
        .filter(|h| {
            let id: RecordId = h.id.parse().unwrap();
            id != written[3] && id.segment != written[0].segment
        })
        .map(|h| h.id.clone())
        .collect();
    assert!(expected.len() < before.total - 1);
    assert_eq!(after, expected);
}

#[test]
fn pages_are_newest_first_with_the_total() {
    let t = tempfile::tempdir().unwrap();
    let (journal, index_dir) = (t.path().join("journal"), t.path().join("index"));
    corpus::write_journal(&journal, &Params::default(), 50, SEGMENT).unwrap();
    let index = indexed(&journal, &index_dir);
    let all = index.search(&Search::all(Query::default())).unwrap();
    let times: Vec<i64> = all.hits.iter().map(|h| micros(&h.time)).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let mut s = Search::all(Query::default());
    (s.limit, s.offset) = (7, 10);
    let page = index.search(&s).unwrap();
    assert_eq!(page.total, all.total);
    assert_eq!(ids(&page.hits), ids(&all.hits[10..17]));
    s.limit = 0;
    let count = index.search(&s).unwrap();
    assert_eq!((count.total, count.hits.len()), (all.total, 0));
}

fn micros(time: &str) -> i64 {
    time.parse::<jiff::Timestamp>()
        .map_or(i64::MIN, |t| t.as_microsecond())
}

// The differential test: the index against the full scan, the oracle.

/// A hit as a comparable value.
fn key(h: &Hit) -> String {
    serde_json::to_string(h).unwrap()
}

fn vary_case(r: &mut Rng, s: &str) -> String {
    match r.below(4) {
        0 => s.to_uppercase(),
        _ => s.to_string(),
    }
}

/// A random query, mostly built from message `base`'s own facts and words (so that most
/// queries find something), sometimes from anywhere.
fn random_query(r: &mut Rng, p: &Params, base: &Message) -> (Query, bool) {
    let m = &base.meta;
    let mut q = Query::default();
    if r.chance(25) {
        let from_message: Vec<&String> = m
            .accounts
            .iter()
            .chain(std::iter::once(&m.sender))
            .chain(m.final_recipients.iter())
            .collect();
        q.account = Some(match r.chance(80) {
            true => {
                let a = r.pick(&from_message).to_string();
                vary_case(r, &a)
            }
            false => corpus::account(r.below(p.accounts)),
        });
    }
    if r.chance(20) {
        q.from = Some(match r.below(5) {
            0 => base.header_from.clone(),
            1 => "<>".into(),
            2 => format!("Partner{}@vendor{}.example", r.below(50), r.below(5)),
            _ => vary_case(r, &m.sender),
        });
    }
    if r.chance(20) {
        let rcpts: Vec<&String> = m
            .recipients
            .iter()
            .map(|x| &x.address)
            .chain(m.final_recipients.iter())
            .collect();
        let a = r.pick(&rcpts).to_string();
        q.to = Some(vary_case(r, &a));
    }
    if r.chance(25) {
        let day = m
            .time
            .parse::<jiff::Timestamp>()
            .map(|t| t.to_zoned(jiff::tz::TimeZone::system()).date())
            .unwrap_or(Date::constant(2023, 6, 1));
        let shift = |d: Date, days: i64| d.checked_add(jiff::Span::new().days(days)).unwrap_or(d);
        match r.below(3) {
            0 => q.since = Some(shift(day, -(r.below(400) as i64))),
            1 => q.until = Some(shift(day, r.below(400) as i64)),
            _ => {
                q.since = Some(shift(day, -(r.below(60) as i64)));
                q.until = Some(shift(day, r.below(60) as i64));
            }
        }
    }
    if r.chance(60) {
        if r.chance(35) {
            q.parts = Parts {
                subject: r.chance(50),
                body: r.chance(50),
                attachment: r.chance(50),
            };
            if q.parts
                == (Parts {
                    subject: false,
                    body: false,
                    attachment: false,
                })
            {
                q.parts.attachment = true;
            }
        }
        let pools = [
            &base.subject_words,
            &base.body_words,
            &base.attachment_words,
        ];
        for _ in 0..1 + r.below(3) {
            let pool = *r.pick(&pools);
            let element = match r.below(10) {
                _ if pool.is_empty() => r.pick(WORDS).to_string(),
                // Two neighbouring words: a phrase.
                0 | 1 if pool.len() > 1 => {
                    let i = r.below(pool.len() as u64 - 1) as usize;
                    format!("{} {}", pool[i], pool[i + 1])
                }
                2 => r.pick(WORDS).to_string(),
                3 => r.pick(CHINESE).to_string(),
                // A two-character word cut out of a longer Chinese one.
                4 => {
                    let long: Vec<char> = r.pick(&CHINESE[20..]).chars().collect();
                    let i = r.below(long.len() as u64 - 1) as usize;
                    long[i..i + 2].iter().collect()
                }
                _ => {
                    let w = r.pick(pool).clone();
                    vary_case(r, &w)
                }
            };
            q.text.push(element);
        }
    }
    let mut exact = false;
    if r.chance(20) {
        let d = match r.chance(60) && !m.departments.is_empty() {
            true => r.pick(&m.departments).to_string(),
            false => r.pick(DEPARTMENTS).to_string(),
        };
        // A path or one of its ancestors.
        let cut = d.match_indices('/').map(|(i, _)| i).collect::<Vec<_>>();
        let d = match cut.is_empty() || r.chance(50) {
            true => d,
            false => d[..*r.pick(&cut)].to_string(),
        };
        q.department = Some(vary_case(r, &d));
        exact = r.chance(30);
        q.exact_department = exact;
    }
    (q, exact)
}

const IMPORTED_EVERY: usize = 10;
const FOLDERS: [&str; 3] = ["INBOX", "Sent", "Archive/2024"];

/// Appends every `every`-th message again as an imported record, in one of [`FOLDERS`].
fn import_copies(journal: &Path, messages: &[Message], every: usize) -> Vec<RecordId> {
    use crate::journal::record::{ImportedMeta, Provenance};
    let (mut w, _) = crate::journal::writer::Writer::open(journal, 512 * 1024).unwrap();
    let mut entries: Vec<Entry> = messages
        .iter()
        .step_by(every)
        .enumerate()
        .map(|(i, m)| {
            let meta = ImportedMeta {
                message: m.meta.clone(),
                import: Provenance {
                    source: "maildir".into(),
                    folder: FOLDERS[i % FOLDERS.len()].into(),
                    ..Provenance::default()
                },
            };
            Entry::new(Kind::Imported, &meta, Body::Bytes(m.body.clone()))
        })
        .collect();
    w.append(&mut entries).unwrap().0
}

#[test]
fn the_index_finds_what_the_full_scan_finds() {
    let seed = std::env::var("HANDOFF_INDEX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).unwrap();
            u64::from_le_bytes(b)
        });
    let why = format!("seed {seed} (rerun with HANDOFF_INDEX_SEED={seed})");
    let p = Params {
        seed,
        accounts: 60,
        days: 3 * 365,
        min_words: 5,
        max_words: 60,
        ..Params::default()
    };
    const COUNT: u64 = 2000;
    const QUERIES: usize = 320;
    let t = tempfile::tempdir().unwrap();
    let (journal, index_dir) = (t.path().join("journal"), t.path().join("index"));
    let mut written = corpus::write_journal(&journal, &p, COUNT, 512 * 1024).unwrap();
    let messages: Vec<Message> = (0..COUNT).map(|i| corpus::message(&p, i)).collect();
    // Every tenth message imported again into one of a few folders: imported records are found
    // by the same filters, and `--folder` selects them in both.
    written.extend(import_copies(&journal, &messages, IMPORTED_EVERY));
    let copies = messages.iter().step_by(IMPORTED_EVERY);
    let by_id: BTreeMap<String, &Message> = written
        .iter()
        .map(|id| id.to_string())
        .zip(messages.iter().chain(copies))
        .collect();
    let index = indexed(&journal, &index_dir);
    assert_eq!(index.records().unwrap(), by_id.len() as u64, "{why}");

    let mut r = Rng::new(seed ^ 0x5EED);
    let (mut found, mut queries) = (0, 0);
    for n in 0..QUERIES {
        let base = &messages[r.below(COUNT) as usize];
        let (q, exact) = random_query(&mut r, &p, base);
        let mut scan = search::search(&journal, &q).unwrap();
        if exact {
            let d = q.department.as_deref().unwrap_or("");
            scan.retain(|h| {
                by_id[&h.id]
                    .meta
                    .departments
                    .iter()
                    .any(|x| department_matches(x, d, true))
            });
        }
        let mut s = Search::all(q.clone());
        if r.chance(10) {
            // INBOX is named in any case; the other folders exactly.
            let folder = r.pick(&FOLDERS).replace("INBOX", "Inbox");
            s.filter.folder = Some(folder);
            scan = search::search(&journal, &s.filter).unwrap();
            scan.retain(|h| {
                !exact
                    || by_id[&h.id]
                        .meta
                        .departments
                        .iter()
                        .any(|x| department_matches(x, q.department.as_deref().unwrap_or(""), true))
            });
        }
        if r.chance(10) {
            let kind = *r.pick(&["message", "created", "imported"]);
            scan.retain(|h| h.kind == kind);
            s.kind = Some(kind.to_string());
        }
        let got = index.search(&s).unwrap();
        let want: BTreeSet<String> = scan.iter().map(key).collect();
        let have: BTreeSet<String> = got.hits.iter().map(key).collect();
        assert_eq!(
            have, want,
            "query {n} {q:?} exact={exact} kind={:?}: index and scan differ; {why}",
            s.kind
        );
        assert_eq!(got.total, scan.len(), "query {n} {q:?}: total; {why}");
        let times: Vec<i64> = got.hits.iter().map(|h| micros(&h.time)).collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "query {n}: not newest first; {why}"
        );
        queries += 1;
        found += usize::from(!scan.is_empty());
    }
    // Most queries must find something, or the comparison proves little.
    assert!(
        found * 10 >= queries * 6,
        "only {found} of {queries} queries found anything; {why}"
    );
}

#[test]
fn addresses_match_in_either_spelling_of_an_idn_domain_and_the_null_sender() {
    let t = tempfile::tempdir().unwrap();
    let (journal, index_dir) = (t.path().join("journal"), t.path().join("index"));
    let body = "From: 王 <wang@公司.中国>\r\nSubject: idn\r\n\r\nbody\r\n";
    journal_of(
        &journal,
        &[
            (
                meta("", "张三@xn--55qx5d.xn--fiqs8s", &[]),
                body.as_bytes().to_vec(),
            ),
            (
                meta("a@example.com", "b@example.com", &[]),
                body.as_bytes().to_vec(),
            ),
        ],
    );
    let index = indexed(&journal, &index_dir);
    let both = |q: Query| {
        let scan = search::search(&journal, &q).unwrap().len();
        let got = index.search(&Search::all(q.clone())).unwrap();
        assert_eq!(got.total, scan, "{q:?}");
        scan
    };
    for to in ["张三@公司.中国", "张三@XN--55QX5D.xn--fiqs8s"] {
        let q = Query {
            to: Some(to.into()),
            ..Query::default()
        };
        assert_eq!(both(q), 1, "--to {to}");
    }
    for from in ["wang@xn--55qx5d.xn--fiqs8s", "WANG@公司.中国"] {
        let q = Query {
            from: Some(from.into()),
            ..Query::default()
        };
        assert_eq!(both(q), 2, "--from {from}");
    }
    let q = |from: &str| Query {
        from: Some(from.into()),
        ..Query::default()
    };
    assert_eq!(both(q("<>")), 1, "the null sender");
    assert_eq!(both(q("a@EXAMPLE.com")), 1);
    let q = Query {
        account: Some("张三@公司.中国".into()),
        ..Query::default()
    };
    assert_eq!(both(q), 1);
}

#[test]
fn records_removed_by_prune_leave_the_index_when_it_passes_the_prune_record() {
    let t = tempfile::tempdir().unwrap();
    let (journal, index_dir) = (t.path().join("journal"), t.path().join("index"));
    let p = Params {
        max_words: 30,
        ..Params::default()
    };
    corpus::write_journal(&journal, &p, 150, 64 * 1024).unwrap();
    let index = indexed(&journal, &index_dir);
    let before = index.records().unwrap();
    let now = "2040-01-01T00:00:00Z".parse().unwrap();
    let report = crate::journal::retention::prune(&journal, 64 * 1024, 1, &[], now, false).unwrap();
    assert!(!report.removed.is_empty());
    let mut w = index.writer().unwrap();
    catch_up(&journal, &index, &mut w, 1000).unwrap();
    let scan = ids(&search::search(&journal, &Query::default()).unwrap());
    let page = index.search(&Search::all(Query::default())).unwrap();
    assert!((page.total as u64) < before);
    assert_eq!(page.total, scan.len());
    assert_eq!(ids(&page.hits), scan);
}

#[test]
fn an_index_with_other_fields_is_named_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tantivy::schema::Schema::builder();
    b.add_text_field("id", tantivy::schema::STRING);
    tantivy::Index::create_in_dir(dir.path(), b.build()).unwrap();
    let e = Index::open_or_create(dir.path()).unwrap_err();
    assert!(matches!(e, IndexError::OtherSchema { .. }), "{e:?}");
    assert!(e.to_string().contains("archive reindex"), "{e}");
}

#[test]
fn the_daemon_starts_an_index_of_other_fields_over_and_keeps_its_journal_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (journal, dir) = (tmp.path().join("journal"), tmp.path().join("index"));
    let p = Params {
        max_words: 30,
        ..Params::default()
    };
    corpus::write_journal(&journal, &p, 40, 64 * 1024).unwrap();
    // A current index names the journal; then an older version's index takes its place.
    drop(Index::open_for(&journal, &dir).unwrap());
    let name = std::fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        if e.file_name() != JOURNAL_FILE {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let mut b = tantivy::schema::Schema::builder();
    b.add_text_field("id", tantivy::schema::STRING);
    tantivy::Index::create_in_dir(&dir, b.build()).unwrap();
    assert!(matches!(
        Index::open_for(&journal, &dir),
        Err(IndexError::OtherSchema { .. })
    ));

    let (index, emptied) = Index::open_for_or_start_over(&journal, &dir).unwrap();
    assert!(emptied);
    assert_eq!(
        std::fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap(),
        name
    );
    let mut w = index.writer().unwrap();
    catch_up(&journal, &index, &mut w, 1000).unwrap();
    let scan = ids(&search::search(&journal, &Query::default()).unwrap());
    assert_eq!(
        ids(&index.search(&Search::all(Query::default())).unwrap().hits),
        scan
    );
    assert_eq!(scan.len(), 40);
    // A current index is opened as it is.
    drop((index, w));
    assert!(!Index::open_for_or_start_over(&journal, &dir).unwrap().1);
}

/// A command's catch-up merges only small segments, once there are enough of them, and at
/// most [`SmallSegments::AT_MOST`] of the smallest at a time: never `reindex`'s large ones.
#[test]
fn a_catch_up_merges_only_small_segments_a_bounded_number_at_a_time() {
    use tantivy::indexer::MergePolicy;
    let mut schema = tantivy::schema::Schema::builder();
    schema.add_u64_field("n", tantivy::schema::INDEXED);
    let index = tantivy::Index::create_in_ram(schema.build());
    let metas = |sizes: &[u32]| -> Vec<tantivy::SegmentMeta> {
        sizes
            .iter()
            .map(|&n| index.new_segment_meta(tantivy::index::SegmentId::generate_random(), n))
            .collect()
    };
    let merged = |segments: &[tantivy::SegmentMeta]| -> Vec<Vec<u32>> {
        SmallSegments
            .compute_merge_candidates(segments)
            .into_iter()
            .map(|c| {
                let mut docs: Vec<u32> =
                    c.0.iter()
                        .map(|id| segments.iter().find(|s| s.id() == *id).unwrap().max_doc())
                        .collect();
                docs.sort();
                docs
            })
            .collect()
    };
    let big = SmallSegments::DOCS;
    // Too few small ones: nothing, however many large ones.
    assert!(merged(&metas(&[1, 2, 3, 4, 5, 6, 7, big, big * 10, big, big, big])).is_empty());
    // Enough: the small ones, without the large.
    assert_eq!(
        merged(&metas(&[5, big, 1, 2, 3, big - 1, 4, 6, 7, big * 10])),
        vec![vec![1, 2, 3, 4, 5, 6, 7, big - 1]]
    );
    // Many: the smallest AT_MOST.
    let sizes: Vec<u32> = (1..=100).rev().collect();
    assert_eq!(
        merged(&metas(&sizes)),
        vec![(1..=SmallSegments::AT_MOST as u32).collect::<Vec<_>>()]
    );
}
