//! Property: for random alias/forward graphs, loading either refuses the policy for a reason a
//! reference model confirms (cycle, too deep), or accepts it, and then every expansion
//! terminates, never hits the runtime depth guard, stays within MAX_WIDTH and has no duplicates.

use std::collections::HashSet;

use handoff::address::Address;
use handoff::engine::{self, Verdict};
use handoff::policy::{MAX_DEPTH, MAX_WIDTH, Policy};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Kind {
    Alias(Vec<Target>),
    Departed {
        forward: Vec<Target>,
        keep_copy: bool,
    },
    Active,
    Disabled,
    Frozen,
}

#[derive(Debug, Clone)]
enum Target {
    Node(usize),
    Outside(u8),
}

fn node_name(i: usize) -> String {
    format!("n{i}@corp.example")
}

fn target_name(t: &Target) -> String {
    match t {
        Target::Node(i) => node_name(*i),
        Target::Outside(j) => format!("x{j}@other.example"),
    }
}

fn graph(max_nodes: usize) -> impl Strategy<Value = Vec<Kind>> {
    (2..max_nodes).prop_flat_map(|n| {
        let target = prop_oneof![3 => (0..n).prop_map(Target::Node), 1 => any::<u8>().prop_map(Target::Outside)];
        let kind = prop_oneof![
            4 => prop::collection::vec(target.clone(), 1..4).prop_map(Kind::Alias),
            3 => (prop::collection::vec(target, 1..3), any::<bool>())
                .prop_map(|(forward, keep_copy)| Kind::Departed { forward, keep_copy }),
            1 => Just(Kind::Active),
            1 => Just(Kind::Disabled),
            1 => Just(Kind::Frozen),
        ];
        prop::collection::vec(kind, n)
    })
}

fn to_toml(nodes: &[Kind]) -> String {
    let mut s = String::from("[domains]\nlocal = [\"corp.example\"]\n[aliases]\n");
    for (i, k) in nodes.iter().enumerate() {
        if let Kind::Alias(members) = k {
            let m: Vec<String> = members
                .iter()
                .map(|t| format!("\"{}\"", target_name(t)))
                .collect();
            s.push_str(&format!("\"{}\" = [{}]\n", node_name(i), m.join(", ")));
        }
    }
    for (i, k) in nodes.iter().enumerate() {
        let body = match k {
            Kind::Alias(_) => continue,
            Kind::Departed { forward, keep_copy } => {
                let f: Vec<String> = forward
                    .iter()
                    .map(|t| format!("\"{}\"", target_name(t)))
                    .collect();
                format!(
                    "state = \"departed\"\nforward = [{}]\nkeep_copy = {keep_copy}\n",
                    f.join(", ")
                )
            }
            Kind::Active => "state = \"active\"\n".into(),
            Kind::Disabled => "state = \"disabled\"\n".into(),
            Kind::Frozen => "state = \"frozen\"\n".into(),
        };
        s.push_str(&format!("[accounts.\"{}\"]\n{body}", node_name(i)));
    }
    s
}

/// Children that are policy nodes (self-forwards excluded: those are their own load error).
fn children(nodes: &[Kind], i: usize) -> Vec<usize> {
    let targets = match &nodes[i] {
        Kind::Alias(m) => m.clone(),
        Kind::Departed { forward, .. } => forward.clone(),
        _ => Vec::new(),
    };
    let mut out: Vec<usize> = targets
        .iter()
        .filter_map(|t| match t {
            Target::Node(j) if !(matches!(nodes[i], Kind::Departed { .. }) && *j == i) => Some(*j),
            _ => None,
        })
        .collect();
    out.dedup();
    out
}

/// Reference model: longest chain of policy nodes from i, or None on a cycle.
fn depth(nodes: &[Kind], i: usize, on_path: &mut Vec<bool>) -> Option<usize> {
    if on_path[i] {
        return None;
    }
    on_path[i] = true;
    let mut best = 0;
    for c in children(nodes, i) {
        best = best.max(depth(nodes, c, on_path)?);
    }
    on_path[i] = false;
    Some(best + 1)
}

fn self_forward(nodes: &[Kind]) -> bool {
    nodes.iter().enumerate().any(|(i, k)| {
        matches!(k, Kind::Departed { forward, .. } if forward.iter().any(|t| matches!(t, Target::Node(j) if *j == i)))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn expansion_terminates_and_stays_bounded(nodes in graph(14)) {
        let text = to_toml(&nodes);
        let n = nodes.len();
        let depths: Vec<Option<usize>> = (0..n).map(|i| depth(&nodes, i, &mut vec![false; n])).collect();
        let cyclic = depths.iter().any(Option::is_none);
        let too_deep = depths.iter().any(|d| d.is_some_and(|d| d > MAX_DEPTH));
        match Policy::from_text("random.toml", &text) {
            Err(diags) => {
                let all = diags.to_string();
                prop_assert!(
                    cyclic || too_deep || self_forward(&nodes) || all.contains("mail would go nowhere"),
                    "refused a policy the model accepts:\n{all}\n{text}"
                );
                if cyclic {
                    prop_assert!(all.contains("cycle"), "cycle not named:\n{all}");
                }
            }
            Ok(policy) => {
                prop_assert!(!cyclic, "accepted a cyclic graph:\n{text}");
                prop_assert!(!too_deep, "accepted a graph deeper than {MAX_DEPTH}:\n{text}");
                let today = jiff::civil::date(2026, 6, 1);
                for i in 0..n {
                    let addr = Address::parse_strict(&node_name(i)).unwrap();
                    let r = engine::resolve(&policy, &addr, today);
                    prop_assert!(r.deliver.len() <= MAX_WIDTH);
                    let unique: HashSet<&Address> = r.deliver.iter().collect();
                    prop_assert_eq!(unique.len(), r.deliver.len(), "duplicates in {:?}", r.deliver);
                    if let Verdict::Defer(reply) = &r.verdict {
                        prop_assert!(!reply.to_string().contains("too deep"), "runtime depth guard hit:\n{text}");
                    }
                    if r.verdict == Verdict::Deliver {
                        prop_assert!(!r.deliver.is_empty());
                    }
                }
            }
        }
    }
}

#[test]
fn a_chain_of_exactly_max_depth_loads_and_one_more_does_not() {
    let chain = |len: usize| {
        let nodes: Vec<Kind> = (0..len)
            .map(|i| {
                if i + 1 < len {
                    Kind::Alias(vec![Target::Node(i + 1)])
                } else {
                    Kind::Active
                }
            })
            .collect();
        to_toml(&nodes)
    };
    assert!(Policy::from_text("c.toml", &chain(MAX_DEPTH)).is_ok());
    let err = Policy::from_text("c.toml", &chain(MAX_DEPTH + 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("levels"), "{err}");
}
