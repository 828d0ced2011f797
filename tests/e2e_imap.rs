//! `handoff archive import` from IMAP and `handoff archive restore` to IMAP, against a private
//! Dovecot (tests/support/dovecot.rs) over TLS with a test CA.

use crate::support::Dovecot;

#[test]
fn the_private_dovecot_stores_and_returns_messages_byte_for_byte() {
    let d = Dovecot::start(&[("alice", "pw-alice")]);
    let msg: &[u8] = b"From: a@x.example\r\nSubject: hi\r\n\r\nbody\r\n";
    d.append(
        "alice",
        "Projects/Alpha",
        &[(msg, Some("2024-03-01T08:09:10Z"))],
    );
    let got = d.messages("alice", "Projects/Alpha");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, msg);
}
