//! How fast a large policy loads, and how many recipients per second the engine decides.
//!
//! The policy is generated: 100,000 accounts (about 70% departed, with successors, forwards,
//! copies, auto-replies and some `until`/`then` switches; the rest active, disabled, frozen or
//! deleted) and 10,000 aliases whose members are accounts, other aliases up to three levels down
//! and outside addresses. The generator keeps every chain within the loader's bounds, so the
//! policy is valid and the bench measures the successful path.
//!
//! The resolution benches measure what the milter does per `RCPT TO`: normalise the envelope
//! string with [`Address::from_envelope`], then resolve it through the policy snapshot
//! ([`handoff::transaction::Snapshot::resolve`]).
//!
//! Run with `cargo bench --bench policy`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use handoff::address::Address;
use handoff::policy::{self, MAX_DEPTH, MAX_WIDTH, Policy};
use handoff::runtime::store::PolicyStore;
use jiff::civil::Date;

const ACCOUNTS: usize = 100_000;
const ALIASES: usize = 10_000;
/// Recipients in one measured batch of the resolution benches.
const BATCH: usize = 10_000;
/// The day the engine decides for: some `until` dates lie before it, some after.
const TODAY: Date = jiff::civil::date(2026, 6, 1);

/// splitmix64: a fixed seed gives the same policy on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Active,
    Departed,
    Disabled,
    Frozen,
    Deleted,
}

/// The generated policy text and the names in it, by kind, for picking recipients.
struct Generated {
    text: String,
    accounts: Vec<(String, Kind)>,
    aliases: Vec<String>,
}

/// A node's expansion as the loader bounds it: `depth` levels (1 for a node that expands to
/// nothing further), an upper bound of `width` addresses.
#[derive(Clone, Copy, Default)]
struct Reach {
    depth: usize,
    width: usize,
}

fn account_name(i: usize) -> String {
    // One account in ten lives in a second local domain.
    match i % 10 {
        0 => format!("user{i}@lab.corp.example"),
        _ => format!("user{i}@corp.example"),
    }
}

fn generate() -> Generated {
    let mut rng = Rng(0x68616e646f6666);
    let mut text = String::with_capacity(24 * 1024 * 1024);
    text.push_str(
        "[domains]\nlocal = [\"corp.example\", \"lab.corp.example\"]\n\n\
         [templates.departed]\nsubject = \"{name} has left\"\nbody = \"{name} has left the company. Please write to {successor}.\"\n\n\
         [templates.parental]\nsubject = \"{name} is on leave\"\nbody = \"{name} is on parental leave; {successor} handles their mail.\"\n\n\
         [templates.retired]\nsubject = \"{name} has retired\"\nbody = \"{name} has retired.\"\n\n",
    );
    let templates = ["departed", "parental", "retired"];
    let departments = ["sales", "support", "engineering", "finance", "legal", "hr"];

    let mut accounts = Vec::with_capacity(ACCOUNTS);
    let mut reach = vec![Reach::default(); ACCOUNTS];
    // Accounts a departed one may hand off to: people who still read mail (active, or departed
    // with their own hand-off), shallow enough that chains stay short.
    let mut shallow: Vec<usize> = Vec::new();
    for i in 0..ACCOUNTS {
        let name = account_name(i);
        // The first hundred are active so that early departures have somewhere to go.
        let roll = if i < 100 { 99 } else { rng.below(100) };
        let kind = match roll {
            0..70 => Kind::Departed,
            70..76 => Kind::Disabled,
            76..80 => Kind::Frozen,
            80..85 => Kind::Deleted,
            _ => Kind::Active,
        };
        text.push_str(&format!(
            "[accounts.\"{name}\"]\nname = \"User {i}\"\ndepartment = \"{}\"\n",
            departments[i % departments.len()]
        ));
        let mut r = Reach { depth: 1, width: 0 };
        // An active account that will leave, or a departed one: where its mail goes.
        let hand_off = |text: &mut String, rng: &mut Rng, r: &mut Reach, keep_copy: bool| {
            let succ = shallow[rng.below(shallow.len())];
            let mut targets = vec![(account_name(succ), Some(succ))];
            if rng.chance(25) {
                targets.push((format!("ext{}@partner.example", rng.below(5000)), None));
            }
            if rng.chance(10) {
                let other = shallow[rng.below(shallow.len())];
                if other != succ {
                    // A forward to another account's `+detail` address resolves to that account.
                    let to = account_name(other).replacen('@', &format!("+from-{i}@"), 1);
                    targets.push((to, Some(other)));
                }
            }
            text.push_str(&format!("successor = \"{}\"\n", targets[0].0));
            if targets.len() > 1 {
                let list: Vec<String> = targets.iter().map(|(t, _)| format!("\"{t}\"")).collect();
                text.push_str(&format!("forward = [{}]\n", list.join(", ")));
            }
            if !keep_copy {
                text.push_str("keep_copy = false\n");
            }
            r.width = usize::from(keep_copy);
            for (_, node) in &targets {
                match node {
                    Some(n) => {
                        r.depth = r.depth.max(reach[*n].depth + 1);
                        r.width += reach[*n].width;
                    }
                    None => r.width += 1,
                }
            }
        };
        match kind {
            Kind::Departed => {
                text.push_str("state = \"departed\"\n");
                let keep_copy = rng.chance(40);
                hand_off(&mut text, &mut rng, &mut r, keep_copy);
                if rng.chance(60) {
                    text.push_str(&format!(
                        "autoreply = \"{}\"\n",
                        templates[rng.below(templates.len())]
                    ));
                }
                if rng.chance(15) {
                    // Half of these switches have already happened on TODAY.
                    let year = if rng.chance(50) { 2026 } else { 2027 };
                    text.push_str(&format!("until = {year}-05-01\nthen = \"deleted\"\n"));
                }
            }
            Kind::Active if i >= 100 && rng.chance(10) => {
                text.push_str("state = \"active\"\n");
                hand_off(&mut text, &mut rng, &mut r, false);
                let year = if rng.chance(50) { 2026 } else { 2027 };
                text.push_str(&format!(
                    "until = {year}-03-01\nthen = \"departed\"\nautoreply = \"retired\"\n"
                ));
            }
            Kind::Active => text.push_str("state = \"active\"\n"),
            Kind::Disabled => {
                text.push_str("state = \"disabled\"\n");
                if rng.chance(20) {
                    text.push_str("reply = \"550 5.2.1 This mailbox is closed; please write to support@corp.example\"\n");
                }
            }
            Kind::Frozen => {
                text.push_str("state = \"frozen\"\n");
                if rng.chance(20) {
                    text.push_str(
                        "reply = \"451 4.2.1 Mailbox is being moved, try again later\"\n",
                    );
                }
            }
            Kind::Deleted => text.push_str("state = \"deleted\"\n"),
        }
        text.push('\n');
        reach[i] = r;
        if matches!(kind, Kind::Active | Kind::Departed) && r.depth <= 3 && r.width <= 4 {
            shallow.push(i);
        }
        accounts.push((name, kind));
    }

    text.push_str("[aliases]\n");
    let mut aliases: Vec<String> = Vec::with_capacity(ALIASES);
    let mut alias_reach: Vec<Reach> = Vec::with_capacity(ALIASES);
    for j in 0..ALIASES {
        let name = format!("team{j}@corp.example");
        let mut members = Vec::new();
        let mut r = Reach::default();
        for _ in 0..3 + rng.below(10) {
            // Mostly people who read mail; one member in ten is whoever, stale entries included.
            let a = match rng.chance(90) {
                true => shallow[rng.below(shallow.len())],
                false => rng.below(ACCOUNTS),
            };
            members.push(account_name(a));
            r.depth = r.depth.max(reach[a].depth);
            r.width += reach[a].width;
        }
        // Nest other aliases, up to a few levels, while the bounds leave room.
        let nested = if j == 0 { 0 } else { rng.below(3) };
        for _ in 0..nested {
            let k = rng.below(j);
            let sub = alias_reach[k];
            if sub.depth < 4 && r.width + sub.width < MAX_WIDTH / 2 {
                members.push(aliases[k].clone());
                r.depth = r.depth.max(sub.depth);
                r.width += sub.width;
            }
        }
        if rng.chance(30) {
            members.push(format!("partner{}@partner.example", rng.below(500)));
            r.width += 1;
        }
        r.depth += 1;
        assert!(r.depth <= MAX_DEPTH && r.width <= MAX_WIDTH);
        let list: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
        text.push_str(&format!("\"{name}\" = [{}]\n", list.join(", ")));
        aliases.push(name);
        alias_reach.push(r);
    }
    Generated {
        text,
        accounts,
        aliases,
    }
}

/// `User1@Corp.Example` style: every other character upper-cased.
fn mixed_case(addr: &str) -> String {
    addr.char_indices()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Envelope recipients as an MTA sends them: mostly `<…>`, some in mixed case.
fn envelope(rng: &mut Rng, addr: &str) -> String {
    let addr = if rng.chance(20) {
        mixed_case(addr)
    } else {
        addr.to_string()
    };
    if rng.chance(90) {
        format!("<{addr}>")
    } else {
        addr
    }
}

/// The recipients of one kind, or the realistic mix of all of them.
fn recipients(g: &Generated, kind: &str, n: usize) -> Vec<String> {
    let mut rng = Rng(0x7263707420746f);
    let of = |rng: &mut Rng, want: Kind| loop {
        let (name, k) = &g.accounts[rng.below(g.accounts.len())];
        if *k == want {
            return name.clone();
        }
    };
    let one = |rng: &mut Rng, kind: &str| -> String {
        match kind {
            "account" => g.accounts[rng.below(g.accounts.len())].0.clone(),
            "departed" => of(rng, Kind::Departed),
            "active" => of(rng, Kind::Active),
            "refused" => match rng.below(3) {
                0 => of(rng, Kind::Disabled),
                1 => of(rng, Kind::Frozen),
                _ => of(rng, Kind::Deleted),
            },
            "alias" => g.aliases[rng.below(g.aliases.len())].clone(),
            "detail" => {
                let (name, _) = &g.accounts[rng.below(g.accounts.len())];
                name.replacen('@', "+newsletter@", 1)
            }
            "unlisted" => format!("newhire{}@corp.example", rng.below(1_000_000)),
            "not_local" => format!("someone{}@partner.example", rng.below(1_000_000)),
            other => unreachable!("unknown recipient kind {other}"),
        }
    };
    (0..n)
        .map(|_| {
            let kind = match kind {
                // Listed accounts dominate what reaches a filter for a departed-heavy policy;
                // their states follow the policy's own mix.
                "mix" => match rng.below(100) {
                    0..55 => "account",
                    55..70 => "alias",
                    70..80 => "detail",
                    80..90 => "unlisted",
                    _ => "not_local",
                },
                k => k,
            };
            let addr = one(&mut rng, kind);
            envelope(&mut rng, &addr)
        })
        .collect()
}

fn load(c: &mut Criterion) {
    let g = generate();
    let policy = Policy::from_text("bench.toml", &g.text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.accounts.len(), ACCOUNTS);
    assert_eq!(policy.aliases.len(), ALIASES);
    eprintln!(
        "generated policy: {} bytes; {}",
        g.text.len(),
        policy.summary()
    );
    drop(policy);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("handoff.toml");
    std::fs::write(&path, &g.text).expect("the policy written to the temporary directory");

    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(g.text.len() as u64));
    group.bench_function("from_text/100k_accounts_10k_aliases", |b| {
        // The old policy's drop is left out: a reload frees it later, off the mail path.
        b.iter_with_large_drop(|| {
            Policy::from_text("bench.toml", black_box(&g.text)).expect("valid policy")
        })
    });
    group.bench_function("file/100k_accounts_10k_aliases", |b| {
        b.iter_with_large_drop(|| policy::load(black_box(&path)).expect("valid policy"))
    });
    group.finish();
}

fn resolve(c: &mut Criterion) {
    let g = generate();
    let policy = Policy::from_text("bench.toml", &g.text).unwrap_or_else(|e| panic!("{e}"));
    // As the mail path resolves: through the snapshot, which keeps the expansions.
    let snapshot = PolicyStore::new(policy).snapshot();
    let mut group = c.benchmark_group("resolve");
    group.throughput(Throughput::Elements(BATCH as u64));
    for kind in [
        "mix",
        "departed",
        "active",
        "refused",
        "alias",
        "detail",
        "unlisted",
        "not_local",
    ] {
        let rcpts = recipients(&g, kind, BATCH);
        group.bench_with_input(BenchmarkId::from_parameter(kind), &rcpts, |b, rcpts| {
            b.iter(|| {
                for r in rcpts {
                    // What the milter does per RCPT TO: normalise, then decide.
                    let Some(addr) = Address::from_envelope(black_box(r)) else {
                        continue;
                    };
                    black_box(snapshot.resolve(&addr, TODAY));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, load, resolve);
criterion_main!(benches);
