//! The journal reader and start-up recovery on an arbitrary segment file: never panic, and
//! recovery either refuses (damage before valid records) or leaves a journal that verifies.
#![no_main]

use handoff::journal::reader;
use handoff::journal::segment::segment_path;
use handoff::journal::writer::Writer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(segment_path(dir.path(), 1), data).unwrap();
    let _ = reader::verify(dir.path());
    if Writer::open(dir.path(), 1 << 20).is_ok() {
        // What recovery left is a valid chain, or it was not a journal to begin with (a first
        // record that is not a segment start).
        if let Err(e) = reader::verify(dir.path()) {
            assert!(
                e.reason.contains("segment start") || e.reason.contains("empty"),
                "{e}"
            );
        }
    }
});
