//! Reading an account's mailbox over IMAP (the I/O edge of an IMAP import): log in, LIST
//! every folder (or the chosen ones), EXAMINE each (read-only), and FETCH what is new in
//! batches of UIDs with BODY.PEEK[] (nothing is marked seen), in UID order.
//!
//! What is new: each folder's mark (its UIDVALIDITY and the highest UID read, from the
//! journal's import audit records) says where the last run stopped. A folder whose
//! UIDVALIDITY changed is read again whole; the importer's seen-set (account, SHA-256) keeps
//! that from archiving anything twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::source::Item;
use crate::imap::{Client, Connect, Secret};

/// UIDs per FETCH: a batch's responses are read one message at a time (bounded memory
/// whatever the batch), so this only bounds the command line and the round trips.
pub const FETCH_BATCH: usize = 256;

/// Where a folder's import stands: its UIDVALIDITY and the highest UID read in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The folder's name on the wire (modified UTF-7).
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
}

/// One IMAP source of one account.
#[derive(Debug)]
pub struct Mailbox<'a> {
    pub connect: Connect,
    pub user: &'a str,
    pub password: &'a Secret,
    /// Folders to read (decoded names, `/`-separated); every folder when empty.
    pub folders: &'a [String],
    /// Each folder's mark from earlier runs, by wire name.
    pub marks: &'a HashMap<String, (u32, u32)>,
}

/// An IMAP source's failure that fails the account (a message that fails is an
/// [`Item::Failed`]), or the importer's own.
#[derive(Debug)]
pub enum Error<E> {
    Imap(crate::imap::ImapError),
    Import(E),
}

/// Calls `f` with every new message of the mailbox, and returns each folder's new mark.
/// `url` is how the source is named (`imap://user@host:port`), for the messages' paths.
pub fn each<E>(
    m: &Mailbox<'_>,
    url: &str,
    spool_dir: &Path,
    f: &mut dyn FnMut(Item) -> Result<(), E>,
) -> Result<Vec<Mark>, Error<E>> {
    let mut client = Client::connect(&m.connect, spool_dir).map_err(Error::Imap)?;
    client.login(m.user, m.password).map_err(Error::Imap)?;
    let listed = client.list().map_err(Error::Imap)?;
    let mut chosen = Vec::new();
    for want in m.folders {
        match listed.iter().find(|l| same_folder(&l.name, want)) {
            Some(l) => chosen.push(l.clone()),
            None => f(Item::Failed {
                path: format!("{url}/{want}"),
                reason: "no such folder at the source".into(),
            })
            .map_err(Error::Import)?,
        }
    }
    if m.folders.is_empty() {
        chosen = listed;
    }
    let mut marks = Vec::new();
    for folder in &chosen {
        let sel = client.open(&folder.raw, false).map_err(Error::Imap)?;
        let (start, mut high) = match m.marks.get(&folder.raw) {
            Some(&(v, uid)) if v == sel.uidvalidity => (uid.saturating_add(1), uid),
            _ => (1, 0),
        };
        let uids = match sel.exists {
            0 => Vec::new(),
            _ => client.uids_from(start).map_err(Error::Imap)?,
        };
        for batch in uids.chunks(FETCH_BATCH) {
            // UIDs ascend: the batch's range holds no UID the search did not return, except
            // messages that arrived since, which are new anyway.
            let (first, last) = (batch[0], batch[batch.len() - 1]);
            let mut failed = None;
            let fetched = client.fetch(first, last, &mut |msg| {
                let path = PathBuf::from(format!(
                    "{url}/{};UIDVALIDITY={}/;UID={}",
                    folder.raw, sel.uidvalidity, msg.uid
                ));
                let time = msg.internal_date.unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                let item = if msg.body.head.is_empty() {
                    Item::Failed {
                        path: path.display().to_string(),
                        reason: "an empty message: nothing to archive".into(),
                    }
                } else {
                    match msg.body.found(&folder.name, &path, None, time) {
                        Ok(mut found) => {
                            found.uid = Some((sel.uidvalidity, msg.uid));
                            Item::Message(found)
                        }
                        Err(e) => Item::Failed {
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        },
                    }
                };
                high = high.max(msg.uid);
                // The importer's error ends the FETCH; it is returned as itself below.
                f(item).map_err(|e| {
                    failed = Some(e);
                    crate::imap::ImapError::Stopped
                })
            });
            if let Some(e) = failed {
                return Err(Error::Import(e));
            }
            fetched.map_err(Error::Imap)?;
        }
        marks.push(Mark {
            mailbox: folder.raw.clone(),
            uidvalidity: sel.uidvalidity,
            uid: high,
        });
    }
    client.logout();
    Ok(marks)
}

/// Whether a listed folder is the one asked for (INBOX in any case, RFC 3501 section 5.1).
fn same_folder(listed: &str, want: &str) -> bool {
    let want = want.trim_matches('/');
    listed == want || (listed.eq_ignore_ascii_case("INBOX") && want.eq_ignore_ascii_case("INBOX"))
}
