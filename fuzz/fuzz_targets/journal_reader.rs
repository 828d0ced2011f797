//! The journal reader and start-up recovery on an arbitrary segment file: never panic, and
//! recovery either refuses (damage before valid records, a broken chain) or leaves a journal that
//! verifies. Seeds: fuzz/corpus/journal_reader (among them a record followed by its copy).
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
        // Recovery refuses what it cannot repair (damage before valid records, a broken link,
        // a segment start out of place, a file that is not a journal): what it accepts verifies.
        if let Err(e) = reader::verify(dir.path()) {
            panic!("recovery accepted a journal that does not verify: {e}");
        }
    }
});
