//! The milter protocol (version 6, as Postfix 3.x speaks it).
//!
//! This module owns what the milter protocol *is*: how its bytes are framed and what each frame
//! means. It does no I/O, imports no async runtime and keeps no session state; sockets, timeouts
//! and the order in which commands may arrive belong to the adapter that drives it. Everything
//! here is a pure function of its input, so it can be tested byte by byte and fuzzed.
//!
//! - [`codec`]: bytes in, typed [`codec::Command`]s out (and back, for a fake MTA in tests);
//!   typed [`codec::Reply`]s in, bytes out (and back).
//!
//! The protocol facts this module relies on, with their sources (libmilter `mfdef.h` and
//! `engine.c`, Postfix `milter8.c`), are collected in the project's milter protocol notes.

pub mod codec;
