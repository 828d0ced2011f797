//! The one integration test binary: every module below shares a build and a harness.

mod daemon;

mod alias_graphs;
mod engine_cases;
mod milter_wire;
mod miltertest;
mod policy_files;
