//! A generated mail corpus, for the index's differential test and for benchmarks: varied
//! messages (plain, multipart/alternative, HTML only, attachments, GBK and UTF-8 Chinese,
//! RFC 2047 encoded words in B and Q form, RFC 2231 file names), several departments (paths
//! with sub-departments) and five years of dates, written through the real journal writer.
//!
//! Message `i` of seed `s` depends on nothing else ([`message`]): a benchmark can generate a
//! million in any order, and a test can regenerate any of them to pick words it contains.
//!
//! Two shapes: the default is small and varied, for the differential test (every feature
//! often, a few words per message). [`Params::realistic`] is mail as an archive holds it, for
//! the archive benchmark: sizes from 1 KiB to 200 KiB (log-normal, most of them small), about
//! 10 % with attachments (text and binary), about 5 % Chinese, departments with
//! sub-departments derived from the accounts involved, and words drawn from a Zipf vocabulary
//! of two million words ([`word`]), so that a rare word and a common word mean what they mean
//! in real mail (rank 0 is in about one word of twenty, rank 1,000,000 in a few dozen messages
//! of a million).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::journal::JournalError;
use crate::journal::record::{MessageMeta, RecipientMeta};
use crate::journal::writer::{Body, Entry, Writer};
use crate::journal::{Kind, RecordId};

/// Latin words, most common first (the generator draws them with a skew, so some are common
/// and some rare).
#[rustfmt::skip]
pub const WORDS: &[&str] = &[
    "the", "and", "meeting", "report", "please", "review", "invoice", "project", "budget",
    "schedule", "customer", "contract", "update", "quarterly", "attached", "deadline", "team",
    "office", "travel", "approval", "payment", "order", "shipment", "delivery", "release",
    "server", "backup", "password", "holiday", "training", "agenda", "minutes", "forecast",
    "revenue", "pricing", "proposal", "draft", "final", "urgent", "reminder", "feedback",
    "roadmap", "hiring", "interview", "candidate", "security", "audit", "compliance", "legal",
    "merger", "acquisition", "supplier", "warehouse", "logistics", "catalog", "discount",
    "renewal", "license", "support", "ticket", "outage", "incident", "postmortem", "migration",
    "database", "network", "firewall", "certificate", "expense", "receipt", "reimbursement",
    "lunch", "birthday", "party", "conference", "webinar", "newsletter", "survey", "café",
    "résumé", "naïve", "Zürich", "München", "straße", "zebra", "quokka", "xylophone",
    "kumquat", "narwhal", "obsidian", "pelican", "quasar", "zeppelin", "fjord", "glacier",
];

/// Chinese words: two-character words, and longer ones (found as phrases of bigrams).
#[rustfmt::skip]
pub const CHINESE: &[&str] = &[
    "会议", "报告", "季度", "合同", "发票", "客户", "项目", "预算", "销售", "市场", "财务",
    "通知", "安排", "邮件", "附件", "经理", "部门", "公司", "数据", "审批", "季度报告",
    "会议纪要", "销售合同", "财务报表", "年度预算", "北京", "上海", "深圳",
];

/// Departments, as paths (with the case an administrator might write them in).
pub const DEPARTMENTS: &[&str] = &[
    "sales",
    "sales/emea",
    "sales/apac",
    "Sales/EMEA/North",
    "engineering",
    "engineering/platform",
    "engineering/platform/storage",
    "hr",
    "finance",
    "finance/ap",
    "legal",
    "support",
];

/// Departments of the realistic shape: ten, most with sub-departments. Account `n` belongs
/// to one of them ([`department_of`]).
pub const COMPANY_DEPARTMENTS: &[&str] = &[
    "sales",
    "sales/emea",
    "sales/emea/north",
    "sales/apac",
    "sales/americas",
    "engineering",
    "engineering/platform",
    "engineering/platform/storage",
    "engineering/apps",
    "finance",
    "finance/ap",
    "finance/ar",
    "hr",
    "hr/recruiting",
    "legal",
    "support",
    "support/tier1",
    "support/tier2",
    "marketing",
    "marketing/events",
    "operations",
    "operations/facilities",
    "it",
    "it/security",
    "procurement",
];

/// Common Chinese characters (all in GB2312) that the realistic shape pairs into made-up
/// two-character words after [`CHINESE`].
const HANZI: &str = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只";

/// Words in the realistic shape's Zipf vocabulary.
pub const VOCABULARY: u64 = 2_000_000;

/// Words in the realistic shape's Chinese vocabulary: [`CHINESE`], then pairs of [`HANZI`].
pub fn chinese_vocabulary() -> u64 {
    let n = HANZI.chars().count() as u64;
    CHINESE.len() as u64 + n * n
}

/// Message sizes of the realistic shape, in bytes.
pub const MIN_SIZE: u64 = 1024;
pub const MAX_SIZE: u64 = 200 * 1024;

/// The local domain's accounts are `user{N}@example.com`.
pub const DOMAIN: &str = "example.com";

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub seed: u64,
    pub accounts: u64,
    /// Dates are spread over this many days from 2021-01-01 (UTC).
    pub days: u64,
    /// Words in a message body: from `min_words` to `max_words`.
    pub min_words: usize,
    pub max_words: usize,
    /// Mail as an archive holds it (see the module's documentation); `min_words` and
    /// `max_words` are then unused (sizes decide).
    pub realistic: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            seed: 1,
            accounts: 200,
            days: 5 * 365,
            min_words: 10,
            max_words: 200,
            realistic: false,
        }
    }
}

impl Params {
    /// The realistic shape: 5,000 accounts, five years of dates.
    pub fn realistic(seed: u64) -> Params {
        Params {
            seed,
            accounts: 5_000,
            days: 5 * 365,
            realistic: true,
            ..Params::default()
        }
    }
}

/// One generated record.
#[derive(Debug, Clone)]
pub struct Message {
    pub kind: Kind,
    pub meta: MessageMeta,
    pub body: Vec<u8>,
    /// Words (Latin and Chinese) placed in the subject, the body and the attachments: a test
    /// draws query words from them.
    pub subject_words: Vec<String>,
    pub body_words: Vec<String>,
    pub attachment_words: Vec<String>,
    pub header_from: String,
}

/// SplitMix64: tiny, seedable and good enough to vary test mail.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A uniform draw in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A Zipf rank in `0..n` (exponent 1): rank `k` is drawn with a probability of about
    /// `1 / ((k + 1.5) ln n)`, from the continuous approximation, in constant time.
    pub fn zipf(&mut self, n: u64) -> u64 {
        let rank = ((n as f64 + 1.0).ln() * self.unit()).exp() as u64;
        rank.saturating_sub(1).min(n.saturating_sub(1))
    }

    /// A log-normal draw with median `median` and shape `sigma` (Box-Muller).
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        let (u, v) = (1.0 - self.unit(), self.unit());
        let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        median * (sigma * z).exp()
    }

    /// An index skewed towards the start (the square of a uniform draw).
    pub fn skewed(&mut self, n: usize) -> usize {
        let u = self.below(1 << 16) as f64 / (1u64 << 16) as f64;
        ((u * u) * n as f64) as usize
    }
}

/// The address of account `n`.
pub fn account(n: u64) -> String {
    format!("user{n}@{DOMAIN}")
}

/// The word of Zipf rank `rank` in the realistic vocabulary: [`WORDS`] first, then made-up
/// words of two-letter syllables spelling the rank in bijective base 64 (one word per rank,
/// up to eight letters for [`VOCABULARY`]).
pub fn word(rank: u64) -> String {
    if let Some(w) = WORDS.get(rank as usize) {
        return w.to_string();
    }
    const CONSONANTS: &[u8] = b"bcdfghjklmnprstv";
    const VOWELS: &[u8] = b"aeio";
    let mut n = rank - WORDS.len() as u64 + 1;
    let mut out = String::new();
    while n > 0 {
        n -= 1;
        let d = (n % 64) as usize;
        out.push(CONSONANTS[d / 4] as char);
        out.push(VOWELS[d % 4] as char);
        n /= 64;
    }
    out
}

/// The Chinese word of rank `rank` (below [`chinese_vocabulary`]).
pub fn chinese_word(rank: u64) -> String {
    if let Some(w) = CHINESE.get(rank as usize) {
        return w.to_string();
    }
    let chars: Vec<char> = HANZI.chars().collect();
    let k = (rank as usize - CHINESE.len()) % (chars.len() * chars.len());
    [chars[k / chars.len()], chars[k % chars.len()]]
        .iter()
        .collect()
}

/// The department of account `n` in the realistic shape.
pub fn department_of(n: u64) -> &'static str {
    COMPANY_DEPARTMENTS[(n.wrapping_mul(0x9E37_79B9) % COMPANY_DEPARTMENTS.len() as u64) as usize]
}

/// Message `i` of a corpus.
pub fn message(p: &Params, i: u64) -> Message {
    let mut r = Rng::new(p.seed.wrapping_mul(0x1000_0000_01B3) ^ i);
    r.next_u64();
    let start = jiff::Timestamp::from_second(1_609_459_200).unwrap_or_default(); // 2021-01-01
    let secs = r.below(p.days.max(1) * 86_400) as i64;
    let time = match r.chance(1) {
        // An unreadable time: no date range may select it.
        true => "yesterday".to_string(),
        false => start
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap_or(start)
            .to_string(),
    };
    let sender_account = r.below(p.accounts);
    let sender = match r.below(20) {
        0 => String::new(),
        1..=6 if p.realistic => format!("contact{}@partner{}.example", r.below(200), r.below(500)),
        1..=6 => format!("Partner{}@Vendor{}.example", r.below(50), r.below(5)),
        _ => account(sender_account),
    };
    let header_from = match r.below(10) {
        0 => format!("Boss{}@{DOMAIN}", r.below(5)),
        _ if sender.is_empty() => format!("mailer-daemon@{DOMAIN}"),
        _ => sender.to_lowercase(),
    };
    let mut meta = MessageMeta {
        time,
        origin: "milter".into(),
        queue_id: Some(format!("{:X}", r.next_u64() & 0xFF_FFFF_FFFF)),
        message_id: Some(format!("<{:x}.{i}@{DOMAIN}>", r.next_u64())),
        sender: sender.clone(),
        policy_generation: 1,
        ..MessageMeta::default()
    };
    if sender.ends_with(DOMAIN) {
        meta.accounts.push(sender.clone());
    }
    for _ in 0..1 + r.below(3) {
        let n = r.below(p.accounts);
        let addressed = match r.below(4) {
            0 => format!("User{n}@EXAMPLE.com"),
            _ => account(n),
        };
        let mut rcpt = RecipientMeta {
            address: addressed,
            rule: "deliver".into(),
            ..RecipientMeta::default()
        };
        let finals: Vec<String> = match r.below(5) {
            // An alias: several accounts, in either form a record may hold.
            0 => (0..2 + r.below(3))
                .map(|_| account(r.below(p.accounts)))
                .collect(),
            // A departed user's successor.
            1 => vec![account(r.below(p.accounts))],
            _ => vec![account(n)],
        };
        let mut indexes = Vec::new();
        for f in &finals {
            let at = match meta.final_recipients.iter().position(|x| x == f) {
                Some(at) => at,
                None => {
                    meta.final_recipients.push(f.clone());
                    meta.final_recipients.len() - 1
                }
            };
            indexes.push(at as u32);
            if !meta.accounts.contains(f) {
                meta.accounts.push(f.clone());
            }
        }
        if finals.len() > 1 {
            rcpt.rule = "alias".into();
            match r.chance(50) {
                true => rcpt.deliver = finals.clone(),
                false => {
                    meta.expansions.push(indexes);
                    rcpt.expansion = Some(meta.expansions.len() as u32 - 1);
                }
            }
        } else if finals[0] != rcpt.address.to_lowercase() {
            rcpt.rule = "departed".into();
            rcpt.deliver = finals.clone();
        }
        meta.recipients.push(rcpt);
    }
    if p.realistic {
        // The departments of the local accounts involved, as the policy would record them.
        for a in &meta.accounts {
            let n = a
                .strip_prefix("user")
                .and_then(|a| a.strip_suffix(&format!("@{DOMAIN}")))
                .and_then(|n| n.parse().ok());
            if let Some(d) = n.map(department_of)
                && !meta.departments.iter().any(|x| x == d)
            {
                meta.departments.push(d.to_string());
            }
        }
    } else {
        for _ in 0..r.below(3) {
            let d = r.pick(DEPARTMENTS).to_string();
            if !meta.departments.contains(&d) {
                meta.departments.push(d);
            }
        }
    }
    let kind = match r.chance(5) {
        true => Kind::Created,
        false => Kind::Message,
    };
    let mut m = Message {
        kind,
        meta,
        body: Vec::new(),
        subject_words: Vec::new(),
        body_words: Vec::new(),
        attachment_words: Vec::new(),
        header_from,
    };
    m.body = build(&mut r, p, &mut m);
    m.meta.size = m.body.len() as u64;
    m
}

/// How long a run of text is: at least this many words and this many bytes.
#[derive(Debug, Clone, Copy)]
struct Length {
    words: usize,
    bytes: usize,
}

impl Length {
    fn words(words: usize) -> Length {
        Length { words, bytes: 0 }
    }

    fn bytes(bytes: usize) -> Length {
        Length { words: 1, bytes }
    }
}

/// A run of text: Latin words, or Chinese (with some Latin inside), noting the words used.
fn text(r: &mut Rng, p: &Params, len: Length, chinese: bool, used: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut k = 0;
    while k < len.words || out.len() < len.bytes {
        k += 1;
        if chinese && r.chance(70) {
            let w = match p.realistic {
                true => chinese_word(r.zipf(chinese_vocabulary())),
                false => r.pick(CHINESE).to_string(),
            };
            out.push_str(&w);
            used.push(w);
            if r.chance(20) {
                out.push_str(if r.chance(50) { "，" } else { "。" });
            }
            continue;
        }
        let w = match p.realistic {
            true => word(r.zipf(VOCABULARY)),
            false => WORDS[r.skewed(WORDS.len())].to_string(),
        };
        let w = match r.below(10) {
            0 => w.to_uppercase(),
            _ => w,
        };
        if k > 1 && !(chinese && r.chance(50)) {
            out.push(' ');
        }
        out.push_str(&w);
        used.push(w);
        if r.chance(8) {
            out.push_str(if r.chance(50) { "," } else { "." });
        }
    }
    out
}

fn gbk(s: &str) -> Vec<u8> {
    encoding_rs::GBK.encode(s).0.into_owned()
}

/// An RFC 2047 encoded word for a header (B or Q, UTF-8 or GB2312), or the text as it is.
fn header_text(r: &mut Rng, s: &str) -> String {
    match r.below(5) {
        0 => format!("=?UTF-8?B?{}?=", B64.encode(s)),
        1 => format!("=?GB2312?B?{}?=", B64.encode(gbk(s))),
        2 => {
            let mut q = String::from("=?utf-8?q?");
            for b in s.bytes() {
                match b {
                    b' ' => q.push('_'),
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => q.push(b as char),
                    _ => q.push_str(&format!("={b:02X}")),
                }
            }
            q.push_str("?=");
            q
        }
        // Raw UTF-8 in a header (RFC 6532): mail-parser takes it as it is.
        _ if !s.is_ascii() && r.chance(50) => s.to_string(),
        _ if !s.is_ascii() => format!("=?UTF-8?B?{}?=", B64.encode(s)),
        _ => s.to_string(),
    }
}

/// A text part: headers and encoded content, in UTF-8 or GBK.
fn text_part(r: &mut Rng, subtype: &str, s: &str, extra: &str) -> String {
    let gbk_ok = !s.is_ascii() && r.chance(40);
    match (gbk_ok, r.below(3)) {
        (true, _) => format!(
            "Content-Type: text/{subtype}; charset=GBK{extra}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            wrap(&B64.encode(gbk(s)))
        ),
        (false, 0) => format!(
            "Content-Type: text/{subtype}; charset=utf-8{extra}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            wrap(&B64.encode(s))
        ),
        (false, 1) => format!(
            "Content-Type: text/{subtype}; charset=utf-8{extra}\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n",
            quoted_printable(s)
        ),
        _ => format!(
            "Content-Type: text/{subtype}; charset=utf-8{extra}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
            s
        ),
    }
}

fn wrap(s: &str) -> String {
    s.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn quoted_printable(s: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for b in s.bytes() {
        let piece = match b {
            b'=' => "=3D".to_string(),
            0x21..=0x7E | b' ' => (b as char).to_string(),
            _ => format!("={b:02X}"),
        };
        if line + piece.len() > 73 {
            out.push_str("=\r\n");
            line = 0;
        }
        line += piece.len();
        out.push_str(&piece);
    }
    out
}

/// The MIME structure of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Plain,
    Alternative,
    Html,
    Attachments,
}

/// The message itself (headers and MIME structure).
fn build(r: &mut Rng, p: &Params, m: &mut Message) -> Vec<u8> {
    let chinese = r.chance(if p.realistic { 5 } else { 25 });
    let (shape, body_len, attached_bytes) = match p.realistic {
        false => {
            let shape = match r.below(10) {
                0..=3 => Shape::Plain,
                4 => Shape::Alternative,
                5 => Shape::Html,
                _ => Shape::Attachments,
            };
            let n = p.min_words + r.below((p.max_words - p.min_words + 1) as u64) as usize;
            (shape, Length::words(n), 0)
        }
        true => {
            // Sizes as an archive sees them: most messages a few KiB of text, those with
            // attachments larger; the headers take about 500 bytes.
            let attached = r.chance(10);
            let size = match attached {
                true => r.log_normal(16_384.0, 1.0),
                false => r.log_normal(2_560.0, 0.7),
            };
            let room = (size.clamp(MIN_SIZE as f64, MAX_SIZE as f64) as usize).saturating_sub(500);
            match (attached, r.below(10)) {
                (true, _) => {
                    let body = (room / 5).clamp(100, 4_000);
                    (
                        Shape::Attachments,
                        Length::bytes(body),
                        room - body.min(room),
                    )
                }
                (false, 0..=4) => (Shape::Plain, Length::bytes(room), 0),
                // Both alternatives carry the text.
                (false, 5..=7) => (Shape::Alternative, Length::bytes(room / 2), 0),
                (false, _) => (Shape::Html, Length::bytes(room), 0),
            }
        }
    };
    let words = 2 + r.below(6) as usize;
    let subject_plain = text(r, p, Length::words(words), chinese, &mut m.subject_words);
    let subject = header_text(r, &subject_plain);
    let body_text = text(r, p, body_len, chinese, &mut m.body_words);
    let to: Vec<&str> = m
        .meta
        .recipients
        .iter()
        .map(|x| x.address.as_str())
        .collect();
    let from = match r.below(3) {
        0 => format!("{} <{}>", header_text(r, "张伟 Zhang"), m.header_from),
        1 => format!("\"Some One\" <{}>", m.header_from),
        _ => m.header_from.clone(),
    };
    let mut msg = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: {}\r\nDate: {}\r\nMIME-Version: 1.0\r\n",
        to.join(", "),
        m.meta.message_id.as_deref().unwrap_or(""),
        m.meta.time,
    );
    let boundary = format!("b{:x}", r.next_u64());
    match shape {
        Shape::Plain => msg.push_str(&text_part(r, "plain", &body_text, "")),
        Shape::Alternative => {
            msg.push_str(&format!(
                "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n{}--{boundary}\r\n{}--{boundary}--\r\n",
                text_part(r, "plain", &body_text, ""),
                text_part(r, "html", &format!("<html><body><p>{body_text}</p></body></html>"), ""),
            ));
        }
        Shape::Html => msg.push_str(&text_part(
            r,
            "html",
            &format!("<html><body><div>{body_text}</div></body></html>"),
            "",
        )),
        Shape::Attachments => {
            msg.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n{}",
                text_part(r, "plain", &body_text, "")
            ));
            let count = 1 + r.below(2) as usize;
            for _ in 0..count {
                msg.push_str(&format!("--{boundary}\r\n"));
                msg.push_str(&attachment(r, p, m, chinese, attached_bytes / count));
            }
            msg.push_str(&format!("--{boundary}--\r\n"));
        }
    }
    msg.into_bytes()
}

/// One attachment; `bytes` is its size in the realistic shape.
fn attachment(r: &mut Rng, p: &Params, m: &mut Message, chinese: bool, bytes: usize) -> String {
    let stem = match p.realistic {
        true => word(r.zipf(VOCABULARY)).to_lowercase(),
        false => WORDS[r.below(WORDS.len() as u64) as usize].to_lowercase(),
    };
    let kind = match (p.realistic, r.below(5)) {
        (false, k) => k % 4,
        // Two in five are text (their words are searchable); the rest binary, named in the
        // message's language.
        (true, 0 | 1) => 0,
        (true, _) if chinese => 2,
        (true, _) => 3,
    };
    match kind {
        // A text attachment: its text is searchable.
        0 | 1 => {
            let chinese = match p.realistic {
                true => chinese,
                false => r.chance(30),
            };
            let len = match p.realistic {
                true => Length::bytes(bytes),
                false => Length::words(5 + r.below(40) as usize),
            };
            let body = text(r, p, len, chinese, &mut m.attachment_words);
            m.attachment_words.push(stem.clone());
            let name = format!("; name=\"{stem}-notes.txt\"");
            let part = text_part(r, "plain", &body, &name);
            format!("Content-Disposition: attachment; filename=\"{stem}-notes.txt\"\r\n{part}")
        }
        // A binary attachment with a Chinese name (RFC 2231): only its name is text.
        2 => {
            let word = match p.realistic {
                true => chinese_word(r.zipf(chinese_vocabulary())),
                false => r.pick(CHINESE).to_string(),
            };
            m.attachment_words.push(word.clone());
            let encoded: String = word.bytes().map(|b| format!("%{b:02X}")).collect();
            let len = if p.realistic { bytes * 3 / 4 } else { 300 };
            format!(
                "Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*=UTF-8''{encoded}.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                wrap(&B64.encode(random_bytes(r, len)))
            )
        }
        _ => {
            m.attachment_words.push(stem.clone());
            let (len, ext) = match p.realistic {
                true => (
                    bytes * 3 / 4,
                    *r.pick(&["pdf", "docx", "xlsx", "png", "zip"]),
                ),
                false => (200, "bin"),
            };
            format!(
                "Content-Type: application/octet-stream; name=\"{stem}.{ext}\"\r\nContent-Disposition: attachment; filename=\"{stem}.{ext}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                wrap(&B64.encode(random_bytes(r, len)))
            )
        }
    }
}

fn random_bytes(r: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Writes messages `0..count` into a (new or existing) journal at `dir`, in batches, and
/// returns their record ids in order.
pub fn write_journal(
    dir: &Path,
    p: &Params,
    count: u64,
    segment_bytes: u64,
) -> Result<Vec<RecordId>, JournalError> {
    let (mut w, _) = Writer::open(dir, segment_bytes)?;
    let mut ids = Vec::with_capacity(count as usize);
    let mut i = 0;
    while i < count {
        let end = (i + 256).min(count);
        let mut batch: Vec<Entry> = (i..end)
            .map(|k| {
                let m = message(p, k);
                Entry::new(m.kind, &m.meta, Body::Bytes(m.body))
            })
            .collect();
        ids.extend(w.append(&mut batch)?.0);
        i = end;
    }
    Ok(ids)
}
