//! The one integration test binary: every module below shares a build and a harness.

mod engine_cases;
mod policy_files;
