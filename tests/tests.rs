//! The one integration test binary: every module below shares a build and a harness.
//! `support` runs private Postfix instances (see tests/README.md); `daemon` runs handoff; `loss`
//! counts what a fault test sent, journaled and delivered.

mod daemon;
mod loss;
mod support;

mod admin;
mod alias_graphs;
mod architecture;
mod archive_audit;
mod archive_import;
mod archive_index;
mod archive_indexer;
mod big_alias;
mod console;
mod console_browser;
mod deploy;
mod dkim;
mod e2e_autoreply;
mod e2e_idn;
mod e2e_imap;
mod e2e_journal;
mod e2e_milter;
mod engine_cases;
mod faults;
mod hostile;
mod lab;
mod lmtp_wire;
mod metrics;
mod milter_wire;
mod miltertest;
mod operator;
mod policy_files;
mod progress;
mod reload;
mod root_archive;
mod scenarios;
mod srs;
