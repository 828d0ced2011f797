//! The policy loader on arbitrary text: never panics; a policy it accepts resolves every
//! address it names without panicking.
#![no_main]

use handoff::engine;
use handoff::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Policy::from_text("fuzz.toml", text) {
        let today = jiff::civil::date(2026, 6, 1);
        for a in p
            .accounts
            .iter()
            .map(|a| &a.address)
            .chain(p.aliases.iter().map(|a| &a.address))
        {
            let r = engine::resolve(&p, a, today);
            assert!(r.deliver.len() <= handoff::policy::MAX_WIDTH);
        }
    }
});
