//! Compares the compiler with captures of Tailscale's hosted control plane
//! (`shared/policy-golden` and `crates/policy/golden`, see their READMEs): per case, whether
//! the policy is accepted, and per node the packet filter, the visible peers with
//! AllowedIPs/PrimaryRoutes, and the SSH policy; for the cases of `crates/policy/golden` also
//! the node's own addresses and the capabilities the policy gives it.
//!
//! Comparison rules: filter rules are compared as a multiset, and inside a rule `SrcIPs`,
//! `DstPorts` and `IPProto` as sets — the order the service sent them in carries no meaning
//! for the client, which evaluates every rule. Peers and their AllowedIPs/PrimaryRoutes are
//! compared as sets. SSH rules are compared in order (the first matching rule wins), with
//! each rule's principals as a set.
//!
//! Node ids: the captured tailnet registered its nodes in Pokédex order (bulbasaur first);
//! the id decides which router is primary for a shared subnet (the earliest one keeps it).

use oxiscale_policy::{Policy, report, topology_from_json};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Cases where we knowingly differ from the capture, with the reason.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "acl-k03",
        "capture inconsistent: all nodes receive the identical filter, yet charmander, kakuna and weedle \
         miss squirtle's auto-approved 10.33.0.0/16 that beedrill, bulbasaur, ivysaur and venusaur get; \
         approved_routes is empty, so the approval landed while the netmaps were being captured",
    ),
    (
        "policytest-allpass-grants-only-tag-src-ipv6-literal-dst",
        "capture inconsistent: the service accepted the policy and its test (tag:client may reach \
         [fd7a:115c:a1e0::10]:22), but the captured netmaps hold no rules and no peers at all; the \
         IPv4 twin (…-ip-literal-dst) shows the rule on beedrill, which we reproduce here too",
    ),
];

const POKEDEX: &[&str] = &[
    "bulbasaur",
    "ivysaur",
    "venusaur",
    "charmander",
    "charmeleon",
    "charizard",
    "squirtle",
    "wartortle",
    "blastoise",
    "caterpie",
    "metapod",
    "butterfree",
    "weedle",
    "kakuna",
    "beedrill",
    "pidgey",
    "pidgeotto",
    "pidgeot",
    "rattata",
    "raticate",
    "spearow",
    "fearow",
];

/// Categories not yet at parity must not fall below the number of cases they pass today
/// (raise the figure as cases start to pass); every other category must pass every case
/// outside `KNOWN_DIFFERENCES`. nodeattrs: the service's autogroup:admin and autogroup:owner
/// (roles of its admin console) are not targets here yet.
const AT_LEAST_PASSING: &[(&str, usize)] = &[("nodeattrs", 51)];

fn golden_dir() -> PathBuf {
    match std::env::var_os("OXISCALE_POLICY_GOLDEN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/policy-golden"),
    }
}

/// Captures of grants, nodeAttrs and sshTests, reduced by `golden/reduce.py`.
fn own_golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// The capabilities a node gets from its policy, as the server sends them: the policy's
/// attributes and Taildrop's file sharing, which the server gives every node.
fn policy_caps(attrs: &[String]) -> Vec<String> {
    let mut caps: Vec<String> = attrs.to_vec();
    caps.push("https://tailscale.com/cap/file-sharing".into());
    caps.retain(|c| !SERVICE_CAPS.contains(&c.as_str()));
    caps.sort();
    caps.dedup();
    caps
}

/// What `reduce.py` leaves out of `cap_map`: capabilities of the hosted service's own account
/// features, sent whatever the policy says.
const SERVICE_CAPS: &[&str] = &[
    "https://tailscale.com/cap/is-owner",
    "https://tailscale.com/cap/is-admin",
    "https://tailscale.com/cap/tailnet-lock",
    "https://tailscale.com/cap/ssh",
    "default-auto-update",
    "probe-udp-lifetime",
    "ssh-behavior-v1",
    "ssh-env-vars",
    "store-appc-routes",
    "tailnet-display-name",
];

fn sorted_strs(v: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = match v {
        Some(Value::Array(a)) => a.iter().map(|x| x.to_string()).collect(),
        _ => vec![],
    };
    out.sort();
    out
}

fn norm_rules(v: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = match v {
        Some(Value::Array(rules)) => rules
            .iter()
            .map(|r| {
                format!(
                    "src={:?} dst={:?} proto={:?} cap={:?}",
                    sorted_strs(r.get("SrcIPs")),
                    sorted_strs(r.get("DstPorts")),
                    sorted_strs(r.get("IPProto")),
                    sorted_strs(r.get("CapGrant"))
                )
            })
            .collect(),
        _ => vec![],
    };
    out.sort();
    out
}

fn norm_peers(v: Option<&Value>) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(m)) = v {
        for (k, p) in m {
            out.insert(
                k.clone(),
                (
                    sorted_strs(p.get("AllowedIPs")),
                    sorted_strs(p.get("PrimaryRoutes")),
                ),
            );
        }
    }
    out
}

fn norm_ssh(v: Option<&Value>) -> Vec<String> {
    let rules = v
        .and_then(|s| s.get("rules"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    rules
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let p = sorted_strs(r.get("principals"));
            if let Some(o) = r.as_object_mut() {
                o.remove("principals");
                if o.get("acceptEnv")
                    .is_some_and(|a| a.as_array().is_some_and(|a| a.is_empty()))
                {
                    o.remove("acceptEnv");
                }
            }
            format!("{} principals={p:?}", r)
        })
        .collect()
}

/// `Err(reason)` when the case does not match.
fn run_case(case: &Value) -> Result<(), String> {
    let policy = case["policy"].as_str().ok_or("no policy")?;
    let mut topo_json = case["topology"].clone();
    if let Some(nodes) = topo_json.get_mut("nodes").and_then(Value::as_object_mut) {
        for (name, n) in nodes.iter_mut() {
            if n.get("id").is_some() {
                continue; // the reduction numbered the nodes in the order they registered
            }
            let id = POKEDEX
                .iter()
                .position(|p| p == name)
                .map(|i| i as u64 + 1)
                .ok_or(format!("unknown node {name}"))?;
            n["id"] = Value::from(id);
        }
    }
    let topo = topology_from_json(&topo_json).map_err(|e| format!("topology: {e}"))?;
    let compiled = Policy::parse(policy).and_then(|p| p.compile(&topo));
    let accepted = case["accepted"].as_bool().unwrap_or(true);
    let compiled = match (compiled, accepted) {
        (Ok(c), true) => c,
        (Err(e), false) => {
            if std::env::var_os("GOLDEN_VERBOSE").is_some() {
                println!(
                    "  rejected {}: ours {:?} / service {}",
                    case["id"],
                    e.to_string(),
                    case["rejection"]
                );
            }
            return Ok(());
        }
        (Ok(_), false) => {
            return Err(format!(
                "accepted, but the service rejected: {}",
                case["rejection"]
            ));
        }
        (Err(e), true) => return Err(format!("rejected ({e}), but the service accepted")),
    };
    let got = report(&compiled, &topo);
    let expect = case["expect"].as_object().ok_or("no expect")?;
    for (node, want) in expect {
        let have = &got[node];
        let (w, h) = (
            norm_rules(want.get("packet_filter_rules")),
            norm_rules(have.get("packet_filter_rules")),
        );
        if w != h {
            return Err(format!(
                "{node}: filter differs:\n    want {w:?}\n    have {h:?}"
            ));
        }
        let (w, h) = (norm_peers(want.get("peers")), norm_peers(have.get("peers")));
        if w != h {
            let diff: Vec<String> = w
                .iter()
                .filter(|(k, v)| h.get(*k) != Some(v))
                .map(|(k, v)| format!("want {k}={v:?} have {:?}", h.get(k)))
                .chain(
                    h.keys()
                        .filter(|k| !w.contains_key(*k))
                        .map(|k| format!("extra {k}")),
                )
                .collect();
            return Err(format!("{node}: peers differ: {}", diff.join("; ")));
        }
        let (w, h) = (
            norm_ssh(want.get("ssh_policy")),
            norm_ssh(have.get("ssh_policy")),
        );
        if w != h {
            return Err(format!(
                "{node}: ssh differs:\n    want {w:?}\n    have {h:?}"
            ));
        }
        if let Some(addresses) = want.get("addresses") {
            let (w, h) = (
                sorted_strs(Some(addresses)),
                sorted_strs(have.get("addresses")),
            );
            if w != h {
                return Err(format!("{node}: addresses differ: want {w:?} have {h:?}"));
            }
        }
        if let Some(Value::Object(caps)) = want.get("cap_map") {
            let mut w: Vec<String> = caps.keys().cloned().collect();
            w.sort();
            let attrs: Vec<String> = have
                .get("node_attrs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let h = policy_caps(&attrs);
            if w != h {
                return Err(format!(
                    "{node}: capabilities differ: want {w:?} have {h:?}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn golden_cases() {
    let dir = golden_dir();
    assert!(
        dir.is_dir(),
        "golden data not found at {} (set OXISCALE_POLICY_GOLDEN)",
        dir.display()
    );
    let verbose = std::env::var_os("GOLDEN_VERBOSE").is_some();
    let (mut total_pass, mut total_fail) = (0, 0);
    let mut unexpected = Vec::new();
    let mut below_floor = Vec::new();
    let own = own_golden_dir();
    let categories = ["acl", "ssh", "routes", "policytest"]
        .map(|c| (c, dir.join(c)))
        .into_iter()
        .chain(["grant", "nodeattrs", "sshtest"].map(|c| (c, own.join(c))));
    for (cat, cat_dir) in categories {
        let floor = AT_LEAST_PASSING
            .iter()
            .find(|(c, _)| *c == cat)
            .map(|f| f.1);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&cat_dir)
            .expect("category dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        let (mut pass, mut fail) = (0, 0);
        let mut lines = Vec::new();
        for f in files {
            let case: Value =
                serde_json::from_str(&std::fs::read_to_string(&f).expect("read")).expect("json");
            let id = case["id"].as_str().unwrap_or("?").to_string();
            match run_case(&case) {
                Ok(()) => pass += 1,
                Err(reason) => {
                    fail += 1;
                    let known = KNOWN_DIFFERENCES.iter().find(|(k, _)| *k == id);
                    let first = if verbose {
                        reason.clone()
                    } else {
                        reason.lines().next().unwrap_or("").to_string()
                    };
                    match (known, floor) {
                        (Some((_, why)), _) => {
                            lines.push(format!("  {id} (known difference: {why}): {first}"))
                        }
                        (None, Some(_)) => lines.push(format!("  {id}: {first}")),
                        (None, None) => {
                            lines.push(format!("  {id}: {first}"));
                            unexpected.push(id);
                        }
                    }
                }
            }
        }
        println!("{cat}: {pass} passed, {fail} failed");
        for l in lines {
            println!("{l}");
        }
        if let Some(floor) = floor.filter(|f| pass < *f) {
            below_floor.push(format!("{cat}: {pass} passed, fewer than {floor}"));
        }
        total_pass += pass;
        total_fail += fail;
    }
    println!("golden: {total_pass} passed, {total_fail} failed");
    assert!(
        unexpected.is_empty(),
        "{} cases fail outside KNOWN_DIFFERENCES: {unexpected:?}",
        unexpected.len()
    );
    assert!(below_floor.is_empty(), "{below_floor:?}");
}
