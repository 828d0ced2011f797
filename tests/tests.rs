//! The one integration test binary: every module below shares a build and a harness.

mod alias_graphs;
mod engine_cases;
mod policy_files;
mod reload;
