//! A whole milter session driven by arbitrary frames against a small policy: never panics, and
//! every modification action it emits was negotiated.
#![no_main]

use std::sync::{Arc, OnceLock};

use handoff::milter::codec::{Actions, Decoded, FrameDecoder, Reply};
use handoff::milter::session::{Context, Session, Step};
use handoff::policy::Policy;
use handoff::runtime::store::{PolicyStore, Snapshot};
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
[domains]
local = ["corp.example"]
[aliases]
"sales@corp.example" = ["a@corp.example", "b@corp.example"]
[accounts."gone@corp.example"]
state = "departed"
successor = "cs@corp.example"
keep_copy = false
[accounts."dis@corp.example"]
state = "disabled"
[accounts."frz@corp.example"]
state = "frozen"
"#;

struct Fixed(Arc<PolicyStore>);

impl Context for Fixed {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.0.snapshot()
    }
    fn today(&self) -> jiff::civil::Date {
        jiff::civil::date(2026, 6, 1)
    }
}

fn cx() -> &'static Fixed {
    static CX: OnceLock<Fixed> = OnceLock::new();
    CX.get_or_init(|| {
        Fixed(Arc::new(PolicyStore::new(
            Policy::from_text("fuzz.toml", POLICY).unwrap(),
        )))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut d = FrameDecoder::new();
    d.feed(data);
    let mut s = Session::new();
    while let Ok(Decoded::Frame(cmd)) = d.decode_command() {
        let replies = match s.handle(cmd, cx()) {
            Err(_) | Ok(Step::Close) => return,
            Ok(Step::Reply(r)) => r,
            Ok(Step::EndOfMessage(m)) => s.finish(&m, data.len() % 2 == 0),
        };
        for r in &replies {
            let needed = match r {
                Reply::AddRcpt(_) => Actions::ADDRCPT,
                Reply::DelRcpt(_) => Actions::DELRCPT,
                Reply::AddHeader { .. } => Actions::ADDHDRS,
                _ => Actions::empty(),
            };
            assert!(s.actions().contains(needed), "{r:?} was not negotiated");
        }
    }
});
