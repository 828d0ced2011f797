//! The index's schema, and the document one journal record becomes (pure: bytes in, fields out).

use mail_parser::MessageParser;
use tantivy::TantivyDocument;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};

use super::analysis::{TOKENIZER, department_paths, normal_department};
use crate::address::Address;
use crate::journal::record::{MessageMeta, message_of};
use crate::journal::search::{Parts, text_of};
use crate::journal::{Kind, RecordId};

/// The fields of the index. Addresses are stored in their lookup form ([`address_key`]),
/// departments lowercased; text fields go through [`super::analysis::Words`].
#[derive(Debug, Clone)]
pub struct Fields {
    pub schema: Schema,
    /// `SEGMENT-OFFSET`, the record's id.
    pub id: Field,
    /// The segment alone: retention removes whole segments.
    pub segment: Field,
    pub kind: Field,
    /// Microseconds since the epoch (`i64::MIN` when the record's time is unreadable, so that
    /// no date range selects it, as in the scan). A fast field only: date ranges run on it (as
    /// tantivy's range query does on a fast field) and it orders the results; indexing each
    /// instant as a term would give the term dictionary a term per message for no query.
    pub time: Field,
    /// The record's time as written, for results.
    pub time_text: Field,
    pub sender: Field,
    /// The envelope sender as written, for results.
    pub sender_text: Field,
    pub header_from: Field,
    /// Recipients as the sender addressed them.
    pub recipient: Field,
    /// What they became: final recipients (and each recipient's expansion).
    pub final_recipient: Field,
    /// Final recipients as written, for results.
    pub final_text: Field,
    pub account: Field,
    /// Every department and each of its ancestors (`sales`, `sales/emea`).
    pub department: Field,
    pub department_exact: Field,
    pub message_id: Field,
    pub queue_id: Field,
    /// The message's size in bytes (fast: no query filters on it yet).
    pub size: Field,
    /// The decoded subject as the scan shows it, for results.
    pub subject_text: Field,
    pub subject: Field,
    pub body: Field,
    /// Attachment names and text attachments, as the scan's `--in attachment` reads them.
    pub attachment: Field,
    /// The folder an imported message is filed under ([`crate::journal::record::folder_key`]); none for other records.
    pub folder: Field,
}

/// Name of the fast field results are ordered by.
pub const TIME: &str = "time";

impl Fields {
    pub fn new() -> Fields {
        let mut b = Schema::builder();
        let words = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let id = b.add_text_field("id", STRING | STORED);
        let segment = b.add_u64_field("segment", INDEXED);
        let kind = b.add_text_field("kind", STRING | STORED);
        let time = b.add_i64_field(TIME, FAST);
        let time_text = b.add_text_field("time_text", STORED);
        let sender = b.add_text_field("sender", STRING);
        let sender_text = b.add_text_field("sender_text", STORED);
        let header_from = b.add_text_field("header_from", STRING);
        let recipient = b.add_text_field("recipient", STRING);
        let final_recipient = b.add_text_field("final_recipient", STRING);
        let final_text = b.add_text_field("final_text", STORED);
        let account = b.add_text_field("account", STRING);
        let department = b.add_text_field("department", STRING);
        let department_exact = b.add_text_field("department_exact", STRING);
        let message_id = b.add_text_field("message_id", STRING);
        let queue_id = b.add_text_field("queue_id", STRING);
        let size = b.add_u64_field("size", FAST);
        let subject_text = b.add_text_field("subject_text", STORED);
        let subject = b.add_text_field("subject", words.clone());
        let body = b.add_text_field("body", words.clone());
        let attachment = b.add_text_field("attachment", words);
        let folder = b.add_text_field("folder", STRING);
        Fields {
            schema: b.build(),
            id,
            segment,
            kind,
            time,
            time_text,
            sender,
            sender_text,
            header_from,
            recipient,
            final_recipient,
            final_text,
            account,
            department,
            department_exact,
            message_id,
            queue_id,
            size,
            subject_text,
            subject,
            body,
            attachment,
            folder,
        }
    }
}

impl Default for Fields {
    fn default() -> Self {
        Fields::new()
    }
}

/// The form addresses are compared in: the scan's (`Address::from_envelope`, lower case, IDN
/// domains in their lookup form). An address that is no address (the null sender `<>`) is
/// `"\0"`, a key no real address has (argv and the MTA carry no NUL): the scan takes two
/// non-addresses as equal, so `--from '<>'` finds the null sender's mail.
pub fn address_key(a: &str) -> String {
    Address::from_envelope(a).map_or_else(|| "\0".to_string(), |a| a.to_string())
}

/// What the index keeps of one journal record.
#[derive(Debug, Clone)]
pub struct Doc {
    pub id: RecordId,
    pub kind: Kind,
    pub meta: MessageMeta,
    /// The folder of an imported message, as [`crate::journal::record::folder_key`] writes it.
    pub folder: Option<String>,
    /// The first header From address, lowercased (as the scan compares it).
    pub header_from: Option<String>,
    /// The decoded subject, for results.
    pub subject: String,
    /// Searchable text of each part, exactly as the scan extracts it ([`text_of`]).
    pub subject_words: String,
    pub body_words: String,
    /// Attachment names and text attachments.
    pub attachment_words: String,
}

impl Doc {
    /// The document for a record, or `None` for records that are no message, or whose meta is
    /// unreadable (the scan skips both).
    pub fn new(id: RecordId, kind: Kind, meta: &[u8], body: &[u8]) -> Option<Doc> {
        let (meta, folder) = message_of(kind, meta)?;
        let mut doc = Doc {
            id,
            kind,
            meta,
            folder,
            header_from: None,
            subject: String::new(),
            subject_words: String::new(),
            body_words: String::new(),
            attachment_words: String::new(),
        };
        // A body mail-parser cannot parse has no text: no word finds it (as in the scan).
        if let Some(m) = MessageParser::default().parse(body) {
            let only = |subject, body, attachment| Parts {
                subject,
                body,
                attachment,
            };
            doc.header_from = m
                .from()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .map(str::to_lowercase);
            doc.subject = m.subject().unwrap_or("").to_string();
            doc.subject_words = text_of(&m, only(true, false, false));
            doc.body_words = text_of(&m, only(false, true, false));
            doc.attachment_words = text_of(&m, only(false, false, true));
        }
        Some(doc)
    }

    /// The tantivy document.
    pub fn to_tantivy(&self, f: &Fields) -> TantivyDocument {
        let m = &self.meta;
        let mut d = TantivyDocument::default();
        d.add_text(f.id, self.id.to_string());
        d.add_u64(f.segment, self.id.segment);
        d.add_text(f.kind, self.kind.as_str());
        let micros = m
            .time
            .parse::<jiff::Timestamp>()
            .map_or(i64::MIN, |t| t.as_microsecond());
        d.add_i64(f.time, micros);
        d.add_text(f.time_text, &m.time);
        d.add_text(f.sender, address_key(&m.sender));
        d.add_text(f.sender_text, &m.sender);
        if let Some(h) = &self.header_from {
            d.add_text(f.header_from, address_key(h));
        }
        for r in &m.recipients {
            d.add_text(f.recipient, address_key(&r.address));
            for a in m.deliver_of(r) {
                d.add_text(f.final_recipient, address_key(a));
            }
        }
        for a in &m.final_recipients {
            d.add_text(f.final_recipient, address_key(a));
            d.add_text(f.final_text, a);
        }
        for a in &m.accounts {
            d.add_text(f.account, address_key(a));
        }
        for dept in &m.departments {
            for p in department_paths(dept) {
                d.add_text(f.department, p);
            }
            d.add_text(f.department_exact, normal_department(dept));
        }
        if let Some(id) = &m.message_id {
            d.add_text(
                f.message_id,
                id.trim().trim_start_matches('<').trim_end_matches('>'),
            );
        }
        if let Some(q) = &m.queue_id {
            d.add_text(f.queue_id, q);
        }
        d.add_u64(f.size, m.size);
        if let Some(folder) = &self.folder {
            d.add_text(f.folder, folder);
        }
        d.add_text(f.subject_text, &self.subject);
        d.add_text(f.subject, &self.subject_words);
        d.add_text(f.body, &self.body_words);
        d.add_text(f.attachment, &self.attachment_words);
        d
    }
}
