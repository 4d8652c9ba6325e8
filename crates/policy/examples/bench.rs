//! Compile-time and memory figures for a large tailnet: 5,000 nodes, 500 users, 200 rules
//! with groups and tags. Prints numbers, asserts nothing.
//!
//! `cargo run --release -p oxiscale-policy --example bench`

use oxiscale_policy::{Node, Policy, Topology, User};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

/// Counts live and peak heap bytes.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

const USERS: u64 = 500;
const NODES: u64 = 5000;
const TAGGED: u64 = 1000;
const TAGS: u64 = 50;
const GROUPS: u64 = 50;
const RULES: u64 = 200;

fn topology() -> Topology {
    let users = (1..=USERS)
        .map(|i| User {
            id: i,
            name: format!("user{i}"),
            email: format!("user{i}@example.com"),
            idp_groups: vec![],
        })
        .collect();
    let nodes = (1..=NODES)
        .map(|i| {
            let tagged = i > NODES - TAGGED;
            let router = tagged && i % 20 == 0;
            let routes: Vec<ipnet::IpNet> = if router {
                vec![format!("10.{}.0.0/16", i % 250).parse().unwrap()]
            } else {
                vec![]
            };
            Node {
                id: i,
                name: format!("node{i}"),
                user: if tagged {
                    None
                } else {
                    Some(1 + (i - 1) % USERS)
                },
                tags: if tagged {
                    vec![format!("tag:t{}", i % TAGS)]
                } else {
                    vec![]
                },
                ipv4: Some(std::net::Ipv4Addr::from(0x6440_0000u32 + (i as u32) * 3)),
                ipv6: Some(std::net::Ipv6Addr::from(
                    0xfd7a_115c_a1e0_0000_0000_0000_0000_0000u128 + i as u128 * 3,
                )),
                approved_routes: routes.clone(),
                routable_ips: routes,
                stable_id: format!("n{i}"),
                attributes: Default::default(),
            }
        })
        .collect();
    Topology { users, nodes }
}

fn policy_text() -> String {
    let mut groups = Vec::new();
    for g in 0..GROUPS {
        let members: Vec<String> = (0..10)
            .map(|k| format!("\"user{}@example.com\"", 1 + (g * 10 + k) % USERS))
            .collect();
        groups.push(format!("\"group:g{g}\": [{}]", members.join(", ")));
    }
    let tag_owners: Vec<String> = (0..TAGS)
        .map(|t| format!("\"tag:t{t}\": [\"group:g{}\"]", t % GROUPS))
        .collect();
    let mut acls = vec![
        r#"{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}"#
            .to_string(),
    ];
    for r in 1..RULES {
        acls.push(match r % 4 {
            0 => format!(
                r#"{{"action": "accept", "src": ["group:g{}"], "dst": ["tag:t{}:22,443", "tag:t{}:80"]}}"#,
                r % GROUPS,
                r % TAGS,
                (r + 7) % TAGS
            ),
            1 => format!(r#"{{"action": "accept", "src": ["tag:t{}"], "dst": ["tag:t{}:5432"]}}"#, r % TAGS, (r + 1) % TAGS),
            2 => format!(
                r#"{{"action": "accept", "src": ["user{}@example.com", "group:g{}"], "dst": ["group:g{}:*"]}}"#,
                r % USERS + 1,
                r % GROUPS,
                (r + 3) % GROUPS
            ),
            _ => format!(r#"{{"action": "accept", "src": ["group:g{}"], "dst": ["10.{}.0.0/16:*"], "proto": "tcp"}}"#, r % GROUPS, r % 250),
        });
    }
    format!(
        "{{\n\"groups\": {{{}}},\n\"tagOwners\": {{{}}},\n\"acls\": [\n{}\n]}}",
        groups.join(",\n"),
        tag_owners.join(",\n"),
        acls.join(",\n")
    )
}

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    let text = policy_text();
    let mut topo = topology();
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);

    let t = Instant::now();
    let policy = Policy::parse(&text).expect("bench policy parses");
    let parse = t.elapsed();

    let t = Instant::now();
    let compiled = policy.compile(&topo).expect("bench policy compiles");
    let compile = t.elapsed();
    let peak = PEAK.load(Relaxed) - base;
    let retained = LIVE.load(Relaxed) - base;

    // Per-node queries on a compiled policy.
    let probe = [1u64, 2500, 4020, 4999];
    let t = Instant::now();
    let mut rules = 0;
    for &n in &probe {
        rules += compiled.packet_filter(n).len();
    }
    let filter = t.elapsed() / probe.len() as u32;
    let t = Instant::now();
    let mut peers = 0;
    for &n in &probe {
        peers += compiled.peers(n).len();
    }
    let peer_time = t.elapsed() / probe.len() as u32;
    let t = Instant::now();
    let mut all_filters = 0;
    for n in compiled.node_ids() {
        all_filters += compiled.packet_filter(n).len();
    }
    let every_filter = t.elapsed();

    // One node changes (gets a different tag): recompile, then one node's filter and peers.
    topo.nodes[4500].tags = vec!["tag:t3".into()];
    let t = Instant::now();
    let again = policy.compile(&topo).expect("recompile");
    let recompile = t.elapsed();
    let t = Instant::now();
    let f = again.packet_filter(4501);
    let p = again.peers(4501);
    let after = t.elapsed();

    println!(
        "tailnet: {NODES} nodes ({TAGGED} tagged, {TAGS} tags), {USERS} users, {GROUPS} groups, {RULES} ACL rules"
    );
    println!("policy text: {} bytes; parse {:.2?}", text.len(), parse);
    println!(
        "compile: {compile:.2?}; peak heap during compile {:.1} MiB, retained {:.1} MiB",
        mib(peak),
        mib(retained)
    );
    println!(
        "packet_filter(one node): {filter:.2?} avg ({rules} rules over {} probes)",
        probe.len()
    );
    println!(
        "peers(one node): {peer_time:.2?} avg ({peers} peers over {} probes)",
        probe.len()
    );
    println!("packet_filter for all {NODES} nodes: {every_filter:.2?} ({all_filters} rules)");
    println!(
        "after one node changes: recompile {recompile:.2?}, then that node's filter + peers {after:.2?} ({} rules, {} peers)",
        f.len(),
        p.len()
    );
}
