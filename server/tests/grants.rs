//! `grants` in a running server (in-process, protocol-level clients, no real Tailscale): an
//! `app` grant reaches the destination's packet filter as a `CapGrant` rule naming the
//! destination's own addresses and the sources' addresses, and leaves the source's filter
//! alone; a policy edit that drops the grant sends the destination a filter without it; a
//! Taildrive grant gives the source the `drive-sharer` companion toward the destination.
//! What a real client does with such a rule (WhoIs) is in end2end/clients/test_grants.py.

mod common;

use common::{MapStream, SECOND, TestNode, TestServer};
use serde_json::{Value, json};

/// bob's devices get `example.com/cap/test` on the tag:server nodes; nothing else is granted.
const APP_GRANT: &str = r#"{
  "tagOwners": { "tag:server": ["alice@"] },
  "grants": [
    { "src": ["bob@"], "dst": ["tag:server"], "app": { "example.com/cap/test": [ { "k": "v" } ] } },
  ],
}"#;

/// The same pair, with network access on port 22 instead of the capability.
const IP_GRANT_ONLY: &str = r#"{
  "tagOwners": { "tag:server": ["alice@"] },
  "grants": [
    { "src": ["bob@"], "dst": ["tag:server"], "ip": ["tcp:22"] },
  ],
}"#;

/// bob's devices may use the tag:server nodes' Taildrive shares, read-only.
const DRIVE_GRANT: &str = r#"{
  "tagOwners": { "tag:server": ["alice@"] },
  "grants": [
    { "src": ["bob@"], "dst": ["tag:server"],
      "app": { "tailscale.com/cap/drive": [ { "shares": ["*"], "access": "ro" } ] } },
  ],
}"#;

async fn register(srv: &TestServer, hostname: &str, user: Option<u64>, tags: &[&str]) -> TestNode {
    let key = srv.preauth_key(user, tags).await;
    let mut node = TestNode::connect(&srv.url, hostname).await;
    let body = node.register_body(Some(&key));
    let (status, resp) = node.post_json("/machine/register", body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["MachineAuthorized"], true, "{resp}");
    node
}

/// The node's addresses as the admin API lists them: IPv4 first, then IPv6.
fn addresses(srv: &TestServer, name: &str) -> (String, String) {
    let nodes = srv.running().admin.list_nodes(None);
    let n = nodes
        .iter()
        .find(|n| n.given_name == name)
        .unwrap_or_else(|| panic!("node {name} exists"));
    let ips: Vec<String> = serde_json::to_value(n).unwrap()["ip_addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let v4 = ips.iter().find(|a| a.contains('.')).unwrap().clone();
    let v6 = ips.iter().find(|a| a.contains(':')).unwrap().clone();
    (v4, v6)
}

/// bob's laptop (untagged) and a tag:server node with their open streams and first full maps.
async fn laptop_and_server(srv: &TestServer) -> [(TestNode, MapStream, Value); 2] {
    srv.user("alice").await;
    let bob = srv.user("bob").await;
    let mut laptop = register(srv, "laptop-b", Some(bob), &[]).await;
    let mut server = register(srv, "server-t", None, &["tag:server"]).await;
    let sl = laptop.stream().await;
    let ss = server.stream().await;
    let mut out = [(laptop, sl, Value::Null), (server, ss, Value::Null)];
    for (_, stream, full) in out.iter_mut() {
        *full = stream.next_within(5 * SECOND).await.expect("full map");
    }
    out
}

fn filter(msg: &Value) -> &Vec<Value> {
    msg["PacketFilter"]
        .as_array()
        .unwrap_or_else(|| panic!("a PacketFilter: {msg}"))
}

/// The rules of a filter that carry a CapGrant.
fn cap_rules(msg: &Value) -> Vec<&Value> {
    filter(msg)
        .iter()
        .filter(|r| r.get("CapGrant").is_some_and(|g| !g.is_null()))
        .collect()
}

/// A rule's `DstPorts`, an absent or null field read as none.
fn dst_ports(rule: &Value) -> Vec<Value> {
    rule["DstPorts"].as_array().cloned().unwrap_or_default()
}

fn peer_names(msg: &Value) -> Vec<String> {
    msg["Peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["Name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn an_app_grant_reaches_the_destinations_filter_and_a_policy_edit_takes_it_away() {
    let (srv, path) = TestServer::with_policy_file(APP_GRANT).await;
    let [(_l, _sl, laptop), (_s, mut ss, server)] = laptop_and_server(&srv).await;
    let (l4, l6) = addresses(&srv, "laptop-b");
    let (s4, s6) = addresses(&srv, "server-t");

    // The destination: one rule, the capability for bob's laptop on its own addresses.
    let rules = filter(&server);
    assert_eq!(rules.len(), 1, "{server}");
    assert_eq!(rules[0]["SrcIPs"], json!([l4, l6]), "{server}");
    assert_eq!(
        rules[0]["CapGrant"],
        json!([{
            "Dsts": [format!("{s4}/32"), format!("{s6}/128")],
            "CapMap": { "example.com/cap/test": [ { "k": "v" } ] },
        }]),
        "{server}"
    );
    assert_eq!(
        dst_ports(&rules[0]),
        Vec::<Value>::new(),
        "no network access: {server}"
    );
    // The source learns no capability; the two see each other.
    assert_eq!(filter(&laptop), &Vec::<Value>::new(), "{laptop}");
    assert!(
        peer_names(&laptop)
            .iter()
            .any(|n| n.starts_with("server-t.")),
        "{laptop}"
    );
    assert!(
        peer_names(&server)
            .iter()
            .any(|n| n.starts_with("laptop-b.")),
        "{server}"
    );

    // The grant becomes port 22: the destination is sent a filter without the capability.
    std::fs::write(&path, IP_GRANT_ONLY).unwrap();
    let delta = ss
        .until(5 * SECOND, |m| {
            m.get("PacketFilter").is_some_and(|f| {
                f.as_array()
                    .is_some_and(|rules| rules.iter().any(|r| !dst_ports(r).is_empty()))
            })
        })
        .await;
    assert_eq!(cap_rules(&delta), Vec::<&Value>::new(), "{delta}");
    let rules = filter(&delta);
    assert_eq!(rules.len(), 1, "{delta}");
    assert_eq!(rules[0]["SrcIPs"], json!([l4, l6]), "{delta}");
    let dsts: Vec<String> = dst_ports(&rules[0])
        .iter()
        .map(|d| {
            format!(
                "{}:{}-{}",
                d["IP"].as_str().unwrap(),
                d["Ports"]["First"],
                d["Ports"]["Last"]
            )
        })
        .collect();
    assert_eq!(
        dsts,
        [format!("{s4}:22-22"), format!("{s6}:22-22")],
        "{delta}"
    );

    // And back: the capability returns to the destination's filter.
    std::fs::write(&path, APP_GRANT).unwrap();
    let back = ss
        .until(5 * SECOND, |m| {
            m.get("PacketFilter").is_some() && !cap_rules(m).is_empty()
        })
        .await;
    assert_eq!(filter(&back).len(), 1, "{back}");
    assert_eq!(
        cap_rules(&back)[0]["CapGrant"][0]["CapMap"],
        json!({ "example.com/cap/test": [ { "k": "v" } ] }),
        "{back}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_taildrive_grant_makes_the_destination_a_sharer_in_the_sources_filter() {
    let (srv, _path) = TestServer::with_policy_file(DRIVE_GRANT).await;
    let [(_l, _sl, laptop), (_s, _ss, server)] = laptop_and_server(&srv).await;
    let (l4, l6) = addresses(&srv, "laptop-b");
    let (s4, s6) = addresses(&srv, "server-t");

    // The source (bob's laptop): the server may share drives with it.
    let rules = filter(&laptop);
    assert_eq!(rules.len(), 1, "{laptop}");
    assert_eq!(rules[0]["SrcIPs"], json!([s4, s6]), "{laptop}");
    assert_eq!(
        rules[0]["CapGrant"],
        json!([{
            "Dsts": [format!("{l4}/32"), format!("{l6}/128")],
            "CapMap": { "tailscale.com/cap/drive-sharer": null },
        }]),
        "{laptop}"
    );
    assert_eq!(dst_ports(&rules[0]), Vec::<Value>::new(), "{laptop}");

    // The destination: the drive capability itself, for bob's laptop.
    let rules = filter(&server);
    assert_eq!(rules.len(), 1, "{server}");
    assert_eq!(rules[0]["SrcIPs"], json!([l4, l6]), "{server}");
    assert_eq!(
        rules[0]["CapGrant"],
        json!([{
            "Dsts": [format!("{s4}/32"), format!("{s6}/128")],
            "CapMap": { "tailscale.com/cap/drive": [ { "shares": ["*"], "access": "ro" } ] },
        }]),
        "{server}"
    );
    srv.stop().await;
}

/// bob's devices reach tag:server on port 22 only from a current Tailscale client.
const POSTURE_GRANT: &str = r#"{
  "tagOwners": { "tag:server": ["alice@"] },
  "postures": { "posture:current": ["node:tsVersion >= '1.80'", "node:os IN ['linux', 'macos']"] },
  "grants": [
    { "src": ["bob@"], "dst": ["tag:server"], "ip": ["tcp:22"], "srcPosture": ["posture:current"] },
  ],
}"#;

#[tokio::test]
async fn a_source_meets_its_posture_by_what_its_client_reports() {
    let (srv, _path) = TestServer::with_policy_file(POSTURE_GRANT).await;
    let [(mut laptop, _sl, _), (_s, mut ss, server)] = laptop_and_server(&srv).await;
    let (l4, l6) = addresses(&srv, "laptop-b");
    // The test client's map stream reports no Tailscale version: no posture is met.
    assert_eq!(filter(&server), &Vec::<Value>::new(), "{server}");

    let report = |node: &TestNode, version: &str| {
        let mut body = node.map_body(false, true, &[]);
        body["Hostinfo"]["IPNVersion"] = json!(version);
        body
    };
    // Tailscale 1.90.9 on linux meets it: the server is sent the rule.
    let body = report(&laptop, "1.90.9-tdeadbeef");
    assert_eq!(laptop.post("/machine/map", body).await.status(), 200);
    let delta = ss
        .until(5 * SECOND, |m| {
            m.get("PacketFilter")
                .is_some_and(|f| f.as_array().is_some_and(|r| !r.is_empty()))
        })
        .await;
    let rules = filter(&delta);
    assert_eq!(rules.len(), 1, "{delta}");
    assert_eq!(rules[0]["SrcIPs"], json!([l4, l6]), "{delta}");

    // An older client no longer meets it: the rule goes.
    let body = report(&laptop, "1.70.0-tdeadbeef");
    assert_eq!(laptop.post("/machine/map", body).await.status(), 200);
    let delta = ss
        .until(5 * SECOND, |m| {
            m.get("PacketFilter")
                .is_some_and(|f| f.as_array().is_some_and(|r| r.is_empty()))
        })
        .await;
    assert_eq!(filter(&delta), &Vec::<Value>::new(), "{delta}");
    srv.stop().await;
}
