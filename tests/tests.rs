//! The one integration test binary: every module below shares a build and a harness.

mod lab;
mod support;
