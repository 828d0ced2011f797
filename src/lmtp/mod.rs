//! The content-filter front end: Postfix hands each queued message to handoff over LMTP (or
//! SMTP) as an after-queue content filter (Postfix FILTER_README), handoff applies the same
//! decisions as in milter mode, and gives the message to the next hop: back to Postfix on its
//! reinjection port, or to a final delivery agent over LMTP.
//!
//! - [`codec`]: framing, sans-IO: command lines, message content with dot-unstuffing and the
//!   strict CRLF.CRLF end (SMTP smuggling), limits; reply encoding.
//! - [`session`]: one connection as a state machine, sans-IO, over [`crate::transaction`]:
//!   which reply each command gets, what the outgoing envelope is, and how the next hop's
//!   answers become per-recipient replies (LMTP, RFC 2033) or one reply (SMTP).
//! - [`next_hop`]: the client side (mail-send): delivering to the next hop.
//! - [`server`]: sockets, timeouts, connection cap, spooling, the journal, shutdown.
//!
//! handoff keeps no queue of its own: a recipient hears 250 only once the journal holds the
//! message and the next hop accepted every address that recipient became; anything else is a
//! 4xx (Postfix keeps the message and retries that recipient) or a 5xx (Postfix bounces it).

pub mod codec;
pub mod next_hop;
pub mod server;
pub mod session;
