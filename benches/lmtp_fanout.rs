//! CPU time of one content-filter message whose recipients fan out wide: 1,000 RCPTs
//! (`big+N@corp.example`, each reaching the same alias through its `+detail`) to an alias of
//! 1,000 members, the shape a remote sender can produce within Postfix's default
//! smtpd_recipient_limit. Measures the session alone (sans-IO, no sockets, no journal): the
//! RCPT phase (the engine's decisions) and the end of data (the outgoing envelope and which
//! addresses each original recipient became). The LMTP front end runs sessions on one worker,
//! so this time is how long every other connection (and /healthz) waits.
//!
//! Run: `cargo bench --bench lmtp_fanout`. Prints thread CPU time per phase; the target is
//! well under a second for the whole message.

use std::sync::Arc;
use std::time::Duration;

use handoff::lmtp::codec::DataEnd;
use handoff::lmtp::session::{Action, Context, Limits, Session};
use handoff::policy::Policy;
use handoff::runtime::store::{PolicyStore, Snapshot};
use handoff::transaction::Client;
use jiff::civil::Date;

const MEMBERS: usize = 1000;
const RCPTS: usize = 1000;
const RUNS: usize = 5;

struct Fixed(Arc<PolicyStore>);

impl Context for Fixed {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.0.snapshot()
    }
    fn today(&self) -> Date {
        jiff::civil::date(2026, 6, 1)
    }
}

/// CPU time of the calling thread (not wall time: the machine may be shared).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn policy() -> String {
    let members: Vec<String> = (0..MEMBERS)
        .map(|i| format!("\"m{i}@corp.example\""))
        .collect();
    format!(
        "[domains]\nlocal = [\"corp.example\"]\n[aliases]\n\"big@corp.example\" = [{}]\n",
        members.join(", ")
    )
}

fn main() {
    let cx = Fixed(Arc::new(PolicyStore::new(
        Policy::from_text("bench.toml", &policy()).expect("the generated policy loads"),
    )));
    println!("{RCPTS} RCPTs x {MEMBERS}-member alias, thread CPU time per message");
    println!(
        "{:>4} {:>12} {:>12} {:>12}",
        "run", "rcpt", "end-of-data", "total"
    );
    let mut best = Duration::MAX;
    for run in 0..RUNS {
        let mut s = Session::new("bench.example", Client::default(), Limits::default());
        let t0 = thread_cpu();
        for line in ["LHLO mx.example\r\n", "MAIL FROM:<s@example.net>\r\n"] {
            s.handle(line.as_bytes(), &cx);
        }
        for i in 0..RCPTS {
            s.handle(
                format!("RCPT TO:<big+{i}@corp.example>\r\n").as_bytes(),
                &cx,
            );
        }
        assert!(matches!(s.handle(b"DATA\r\n", &cx), Action::StartData(_)));
        s.data(b"Subject: fan-out\r\nMessage-ID: <fan@example.net>\r\n\r\nbody\r\n");
        let t1 = thread_cpu();
        let action = s.data_end(DataEnd {
            size: 70,
            flaw: None,
        });
        let t2 = thread_cpu();
        let Action::Deliver(d) = action else {
            panic!("expected a delivery, got {action:?}");
        };
        assert_eq!(d.owners.len(), RCPTS);
        assert!(d.owners.iter().all(|(_, t)| t.len() == MEMBERS));
        drop(d);
        let total = t2 - t0;
        best = best.min(total);
        println!(
            "{run:>4} {:>10.1}ms {:>10.1}ms {:>10.1}ms",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
        if total > Duration::from_secs(10) {
            // One run of a quadratic session says enough.
            break;
        }
    }
    println!("best total: {:.1} ms", best.as_secs_f64() * 1e3);
}
