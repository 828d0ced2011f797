//! The journal's errors: why it could not do its job ([`JournalError`]), and why it refused to
//! write a record ([`EntryError`]).
//!
//! A variant either says what failed and keeps the cause as its `source`, or is the cause
//! (`transparent`); never both, so that an error printed with its chain names each cause once.

use super::format;

/// Why the journal could not do its job.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("journal i/o error: {0}")]
    Io(String),
    #[error(
        "journal damaged at segment {segment} offset {offset}: {reason}; run `handoff archive verify`"
    )]
    Corrupt {
        segment: u64,
        offset: u64,
        reason: String,
    },
    #[error("journal is not healthy after an earlier write error: {0}")]
    Unhealthy(String),
    #[error("journal writer is not running")]
    Stopped,
    /// Its message names the refusal: the record is the journal's, the reason is the entry's.
    #[error(transparent)]
    Refused(#[from] EntryError),
}

impl From<std::io::Error> for JournalError {
    fn from(e: std::io::Error) -> Self {
        JournalError::Io(e.to_string())
    }
}

/// Why the journal refused to write a record: it would not read back. Nothing was written and
/// the journal stays healthy; the front end answers 4xx and the MTA keeps the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error(
        "journal refused the record: the {kind} record's meta is {len} bytes, over the reader's limit of {} bytes",
        format::MAX_META_LEN
    )]
    MetaTooLong { kind: &'static str, len: usize },
    #[error("journal refused the record: {0} records are written by the journal itself")]
    Reserved(&'static str),
    #[error("journal refused the record: the prune record's meta is unreadable: {0}")]
    BadPrune(String),
}

/// `e` and its causes, joined by `: ` (what a reason string in a record's place must say).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each cause is printed once: by its own message when the error is printed with its
    /// chain, never also inside the message of the error that wraps it.
    #[test]
    fn a_chain_names_each_cause_once() {
        let refused = JournalError::from(EntryError::Reserved("seal"));
        assert_eq!(
            chain(&refused),
            "journal refused the record: seal records are written by the journal itself"
        );
        let read = super::super::segment::ReadError::from(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&read), "i/o: disk on fire");
        let header = super::super::segment::ReadError::from(super::super::format::HeaderError::Crc);
        assert_eq!(
            chain(&header),
            "bad record header: header checksum mismatch"
        );
    }
}
