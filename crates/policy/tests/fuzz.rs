//! Bad input never panics: a deterministic mutation fuzzer over the golden policies' text
//! (fixed seed, fixed budget), feeding every mutant to `Policy::parse` and, when it parses,
//! to `compile` against the case's tailnet. Any panic fails the test.

use oxiscale_policy::{Policy, report, topology_from_json};
use serde_json::Value;
use std::path::PathBuf;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&str] = &[
    "\"",
    ",",
    ":",
    "{",
    "}",
    "[",
    "]",
    "//",
    "/*",
    "*/",
    "\n",
    "null",
    "true",
    "-1",
    "99999",
    "0",
    "*",
    "\"*\"",
    "\"*:*\"",
    "\"tag:x\"",
    "\"group:x\"",
    "\"autogroup:self:*\"",
    "\"autogroup:internet:*\"",
    "\"autogroup:danger-all\"",
    "\"user:*@example.com\"",
    "\"localpart:*@example.com\"",
    "\"10.0.0.0/33:1-2\"",
    "\"::/0:*\"",
    "\"[::1]:22\"",
    "\"fd7a:115c:a1e0::1:80\"",
    "\"check\"",
    "\"via\"",
    "\"app\"",
    "\"ip\"",
    "\"srcPosture\"",
    "\"example.com/cap/x\"",
    "\"tailscale.com/cap/drive\"",
    "\"disable-ipv4\"",
    "\"168h\"",
    "\"always\"",
    "\\u00e9",
    "\u{441}",
    "\"proto\": \"icmp\"",
    ",\"tests\":[{\"src\":\"*\",\"accept\":[\"*:1\"]}]",
    ",\"sshTests\":[{\"src\":\"*\",\"dst\":[\"tag:x\"],\"accept\":[\"root\"]}]",
];

fn mutate(rng: &mut XorShift, text: &str) -> String {
    let mut b: Vec<u8> = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(2) {
        let len = b.len();
        match rng.below(10) {
            0 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below(8.min(len - at));
                b.drain(at..at + n);
            }
            1 => {
                let at = rng.below(len + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                b.splice(at..at, t.bytes());
            }
            2 if len > 1 => {
                let a = rng.below(len);
                let n = 1 + rng.below(40.min(len - a));
                let chunk: Vec<u8> = b[a..a + n].to_vec();
                let at = rng.below(len + 1);
                b.splice(at..at, chunk);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                b[at] = (rng.next() & 0xFF) as u8;
            }
            _ if len > 0 => {
                // Replace a quoted string's contents with a token.
                let at = rng.below(len);
                if let Some(q) = b[at..].iter().position(|&c| c == b'"') {
                    let start = at + q + 1;
                    if let Some(e) = b[start..].iter().position(|&c| c == b'"') {
                        let t = TOKENS[rng.below(TOKENS.len())].trim_matches('"');
                        b.splice(start..start + e, t.bytes());
                    }
                }
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Structure-preserving mutation: replace a string leaf, drop or duplicate an array element.
fn mutate_value(rng: &mut XorShift, v: &mut Value) {
    // Count candidate spots, then pick one by index.
    fn walk(v: &mut Value, target: &mut isize, rng: &mut XorShift) {
        match v {
            Value::String(s) => {
                *target -= 1;
                if *target == 0 {
                    *s = TOKENS[rng.below(TOKENS.len())]
                        .trim_matches('"')
                        .to_string();
                }
            }
            Value::Array(a) => {
                *target -= 1;
                if *target == 0 && !a.is_empty() {
                    let i = rng.below(a.len());
                    if rng.below(2) == 0 {
                        a.remove(i);
                    } else {
                        let e = a[i].clone();
                        a.push(e);
                    }
                    return;
                }
                for e in a {
                    walk(e, target, rng);
                }
            }
            Value::Object(m) => {
                for (_, e) in m.iter_mut() {
                    walk(e, target, rng);
                }
            }
            _ => {}
        }
    }
    let mut target = 1 + rng.below(60) as isize;
    walk(v, &mut target, rng);
}

#[test]
fn mutated_policies_never_panic() {
    let dir = match std::env::var_os("OXISCALE_POLICY_GOLDEN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/policy-golden"),
    };
    let own = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden");
    let mut cases = Vec::new();
    let dirs = ["acl", "ssh", "routes", "policytest"]
        .map(|c| dir.join(c))
        .into_iter()
        .chain(["grant", "nodeattrs", "sshtest"].map(|c| own.join(c)));
    for cat_dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(cat_dir)
            .expect("golden dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for f in files {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(f).expect("read")).expect("json");
            let policy = v["policy"].as_str().expect("policy").to_string();
            let topo = topology_from_json(&v["topology"]).expect("topology");
            cases.push((policy, topo));
        }
    }
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let (mut parsed, mut compiled) = (0, 0);
    const ITERATIONS: usize = 10000;
    for i in 0..ITERATIONS {
        let (text, topo) = &cases[rng.below(cases.len())];
        let m = if rng.below(2) == 0 {
            mutate(&mut rng, text)
        } else {
            let mut v: Value = serde_json::from_str(text).expect("golden policies are JSON");
            for _ in 0..1 + rng.below(3) {
                mutate_value(&mut rng, &mut v);
            }
            v.to_string()
        };
        if let Ok(p) = Policy::parse(&m) {
            parsed += 1;
            if let Ok(c) = p.compile(topo) {
                compiled += 1;
                // Exercise the per-node queries too, on a sample.
                if i % 10 == 0 {
                    let _ = report(&c, topo);
                }
            }
            for n in &topo.nodes {
                let _ = p.auto_approved_routes(topo, n.id);
            }
        }
    }
    println!("fuzz: {ITERATIONS} mutants, {parsed} parsed, {compiled} compiled");
    // The fuzzer must exercise both the error paths and the compiler.
    assert!(
        parsed > ITERATIONS / 5 && compiled > ITERATIONS / 10 && parsed < ITERATIONS,
        "mutation mix degenerate: {parsed} parsed"
    );
}
