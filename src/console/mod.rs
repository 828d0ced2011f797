//! The archive console: a web page and JSON API for archive administrators and auditors.
//!
//! - [`users`]: the users file (names, roles, argon2id hashes, department scopes).
//!
//! The console is the only door to the archive for people who are not the postmaster: every
//! request is authenticated, checked against the user's role and scope, and audited in the
//! journal before it is answered.

pub mod users;
