//! The milter front end (protocol version 6, as Postfix 2.6+ and Sendmail 8.14 speak it).
//!
//! - [`codec`]: how the bytes are framed and what each frame means. Sans-IO: bytes in, typed
//!   [`codec::Command`]s out, typed [`codec::Reply`]s in, bytes out (and back, for a fake MTA in
//!   tests).
//! - [`session`]: one connection as a state machine, also sans-IO: the order commands may come
//!   in, and which policy decision is applied at which stage.
//! - [`server`]: the only part that does I/O: sockets, timeouts, connection limits, shutdown.
//!
//! The protocol facts relied on here, with their sources (libmilter `mfdef.h` and `engine.c`,
//! Postfix `milter8.c` and MILTER_README), are cited where they are used.

pub mod codec;
pub mod server;
pub mod session;
