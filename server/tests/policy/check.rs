//! `oxiscale policy check`: offline against a topology file (a golden case), and against the
//! live tailnet.

use crate::common::TestServer;
use crate::helpers::*;
use serde_json::{Value, json};
use std::path::PathBuf;

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

fn golden_case(name: &str) -> Value {
    let dir = match std::env::var_os("OXISCALE_POLICY_GOLDEN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/policy-golden"),
    };
    let text = std::fs::read_to_string(dir.join(name)).expect("golden case readable");
    let mut case: Value = serde_json::from_str(&text).unwrap();
    // The captured tailnet registered its nodes in Pokédex order (it decides primaries).
    for (n, node) in case["topology"]["nodes"].as_object_mut().unwrap() {
        let id = POKEDEX.iter().position(|p| p == n).unwrap() as u64 + 1;
        node["id"] = json!(id);
    }
    case
}

/// Order carries no meaning in rules, sources, destinations and peers: compare as sets.
fn normalize(report: &Value) -> Value {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Array(a) => {
                let mut items: Vec<Value> = a.iter().map(sorted).collect();
                items.sort_by_key(|x| x.to_string());
                Value::Array(items)
            }
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, v)| {
                        !(k.as_str() == "acceptEnv" && v.as_array().is_some_and(|a| a.is_empty()))
                    })
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    sorted(report)
}

#[test]
fn policy_check_with_a_topology_reproduces_a_golden_case() {
    let case = golden_case("acl/acl-a01.json");
    let dir = temp_dir();
    let policy_path = dir.join("policy.hujson");
    let topo_path = dir.join("topology.json");
    std::fs::write(&policy_path, case["policy"].as_str().unwrap()).unwrap();
    std::fs::write(&topo_path, case["topology"].to_string()).unwrap();

    // The binary, as an operator runs it: no server, no configuration.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oxiscale"))
        .args(["policy", "check", "--file"])
        .arg(&policy_path)
        .arg("--topology")
        .arg(&topo_path)
        .args(["-o", "json"])
        .env("OXISCALE_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expect = &case["expect"];
    for (node, want) in expect.as_object().unwrap() {
        // The report also says each node's addresses and attributes, which the shared
        // golden cases do not capture: compare what they capture.
        let mut have = report[node].clone();
        if let Some(have) = have.as_object_mut() {
            have.retain(|k, _| {
                ["packet_filter_rules", "peers", "ssh_policy"].contains(&k.as_str())
            });
        }
        assert_eq!(normalize(&have), normalize(want), "node {node} differs");
    }
    assert_eq!(
        report.as_object().unwrap().len(),
        expect.as_object().unwrap().len()
    );

    // An invalid policy: the position and the reason, and a failing exit code.
    std::fs::write(&policy_path, "{\n  \"acls\": [\n    {\"action\": \"allow\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}\n  ]\n}").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oxiscale"))
        .args(["policy", "check", "--file"])
        .arg(&policy_path)
        .arg("--topology")
        .arg(&topo_path)
        .env("OXISCALE_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3, column"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn policy_check_against_the_live_tailnet() {
    let srv = TestServer::start().await;
    let (_a, _b) = alice_and_bob(&srv).await;
    let report = srv
        .running()
        .admin
        .check_policy(ALICE_TO_BOB_80)
        .expect("valid against the live tailnet");
    assert!(
        report["server-b"]["packet_filter_rules"].is_array(),
        "{report}"
    );
    assert!(report["laptop-a"].get("packet_filter_rules").is_none());
    assert!(
        report["laptop-a"]["peers"]["server-b"].is_object(),
        "{report}"
    );
    // Nothing changed: still allow-all.
    assert!(srv.running().tailnet.read(|s| s.policy().is_none()));
    let err = srv
        .running()
        .admin
        .check_policy(r#"{"acls": [], "tests": [{"src": "alice@", "accept": ["bob@:80"]}]}"#)
        .unwrap_err();
    assert!(err.to_string().contains("test"), "{err}");
    srv.stop().await;
}
