//! Custom posture attributes in a running server (in-process, protocol-level clients): a
//! grant with `srcPosture` reaches the destination's packet filter only while the source
//! holds the attribute the posture asks for; the attribute is set and removed through
//! Tailscale's API v2 (`/api/v2/device/{id}/attributes…`) with the admin API keys, or by the
//! node itself (`PATCH /machine/set-device-attr`); bad keys, values and counts are refused
//! with nothing stored; attributes outlive a restart.

mod common;

use bytes::Bytes;
use common::{MapStream, SECOND, TestNode, TestServer, config_for};
use http::{Method, Request};
use http_body_util::Full;
use oxiscale::admin::CreateApiKey;
use oxiscale::config::PolicyMode;
use oxiscale::serve::start;
use serde_json::{Value, json};

/// bob's devices may reach alice's on port 22, if they are managed.
const POLICY: &str = r#"{
  "postures": { "posture:managed": ["custom:managed == true"] },
  "grants": [
    { "src": ["bob@"], "dst": ["alice@"], "ip": ["tcp:22"], "srcPosture": ["posture:managed"] },
  ],
}"#;

fn database_policy(c: &mut oxiscale::config::Config) {
    c.policy.mode = PolicyMode::Database;
}

async fn api_key(srv: &TestServer) -> String {
    srv.running()
        .admin
        .create_api_key(CreateApiKey::default())
        .await
        .unwrap()
        .key
        .unwrap()
}

/// Calls the API; (status, JSON body or null).
async fn call(
    srv: &TestServer,
    key: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", srv.url));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn register(srv: &TestServer, hostname: &str, user: u64) -> TestNode {
    let key = srv.key(user, true, false, "1h").await;
    let mut node = TestNode::connect(&srv.url, hostname).await;
    let resp = node.register(Some(&key)).await;
    assert_eq!(resp["MachineAuthorized"], true, "{resp}");
    node
}

fn ipv4_of(srv: &TestServer, name: &str) -> String {
    let nodes = srv.running().admin.list_nodes(None);
    let n = nodes.iter().find(|n| n.given_name == name).unwrap();
    serde_json::to_value(n).unwrap()["ip_addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.contains('.'))
        .unwrap()
        .to_owned()
}

/// Whether a map message's packet filter has a rule from `src`.
fn has_rule_from(msg: &Value, src: &str) -> bool {
    msg["PacketFilter"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| {
            r["SrcIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s.as_str().is_some_and(|s| s.split('/').next() == Some(src)))
        })
}

async fn rule_appears(stream: &mut MapStream, src: &str) -> Value {
    stream.until(5 * SECOND, |m| has_rule_from(m, src)).await
}

async fn rule_goes(stream: &mut MapStream, src: &str) -> Value {
    stream
        .until(5 * SECOND, |m| {
            m.get("PacketFilter").is_some_and(|f| !f.is_null()) && !has_rule_from(m, src)
        })
        .await
}

async fn attributes(srv: &TestServer, key: &str, id: u64) -> Value {
    let (status, v) = call(
        srv,
        Some(key),
        reqwest::Method::GET,
        &format!("/api/v2/device/{id}/attributes"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// The custom attributes of a listing (the `node:*` ones come from the device).
fn custom(v: &Value) -> Value {
    let attrs = v["attributes"].as_object().unwrap();
    Value::Object(
        attrs
            .iter()
            .filter(|(k, _)| k.starts_with("custom:"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// alice's server under POLICY with its map stream open, bob's laptop (no attributes yet),
/// and an API key.
struct Posture {
    srv: TestServer,
    key: String,
    /// alice's server node; its stream is `ss`.
    server: TestNode,
    laptop_id: u64,
    l4: String,
    ss: MapStream,
    full: Value,
}

async fn posture_setup() -> Posture {
    let srv = TestServer::start_with(database_policy).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    srv.running()
        .admin
        .set_policy(POLICY.into())
        .await
        .expect("the policy is accepted");
    let key = api_key(&srv).await;
    let mut server = register(&srv, "server-a", alice).await;
    let _laptop = register(&srv, "laptop-b", bob).await;
    let laptop_id = srv.node_id("laptop-b");
    let l4 = ipv4_of(&srv, "laptop-b");
    let mut ss = server.stream().await;
    let full = ss.next_within(5 * SECOND).await.expect("full map");
    Posture {
        srv,
        key,
        server,
        laptop_id,
        l4,
        ss,
        full,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posture_grant_follows_the_sources_custom_attribute() {
    let Posture {
        mut srv,
        key,
        server,
        laptop_id,
        l4,
        mut ss,
        full,
        ..
    } = posture_setup().await;
    assert!(
        !has_rule_from(&full, &l4),
        "no rule before the attribute: {full}"
    );

    // Without an API key: refused, nothing stored.
    let path = format!("/api/v2/device/{laptop_id}/attributes/custom:managed");
    let (status, _) = call(
        &srv,
        None,
        reqwest::Method::POST,
        &path,
        Some(json!({"value": true})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        &srv,
        Some("not-a-key"),
        reqwest::Method::POST,
        &path,
        Some(json!({"value": true})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        &srv,
        None,
        reqwest::Method::GET,
        &format!("/api/v2/device/{laptop_id}/attributes"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(custom(&attributes(&srv, &key, laptop_id).await), json!({}));

    // Set: the destination is sent a rule for the source.
    let (status, v) = call(
        &srv,
        Some(&key),
        reqwest::Method::POST,
        &path,
        Some(json!({"value": true, "comment": "enrolled"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let msg = rule_appears(&mut ss, &l4).await;
    let rule = msg["PacketFilter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["SrcIPs"].to_string().contains(&l4))
        .unwrap();
    assert!(rule["DstPorts"].to_string().contains("22"), "{msg}");
    let listed = attributes(&srv, &key, laptop_id).await;
    assert_eq!(custom(&listed), json!({"custom:managed": true}), "{listed}");
    assert_eq!(listed["attributes"]["node:os"], "linux", "{listed}");
    assert_eq!(listed["expiries"], json!({}), "{listed}");
    // The stable id names the same device.
    assert_eq!(
        attributes(&srv, &key, laptop_id).await,
        call(
            &srv,
            Some(&key),
            reqwest::Method::GET,
            &format!("/api/v2/device/n{laptop_id}/attributes"),
            None
        )
        .await
        .1
    );

    // Delete: the rule goes away.
    let (status, v) = call(&srv, Some(&key), reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{v}");
    rule_goes(&mut ss, &l4).await;
    assert_eq!(custom(&attributes(&srv, &key, laptop_id).await), json!({}));

    // A value the posture does not accept gives no rule; the right one again does.
    let (status, _) = call(
        &srv,
        Some(&key),
        reqwest::Method::POST,
        &path,
        Some(json!({"value": "true"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &srv,
        Some(&key),
        reqwest::Method::POST,
        &path,
        Some(json!({"value": true})),
    )
    .await;
    assert_eq!(status, 200);
    rule_appears(&mut ss, &l4).await;

    // It outlives a restart, and the policy still uses it.
    let port = srv.running().http_addr.port();
    srv.running
        .take()
        .unwrap()
        .stop()
        .await
        .expect("server stops");
    let mut config = config_for(&srv.dir);
    database_policy(&mut config);
    config.listen_addr = format!("127.0.0.1:{port}").parse().unwrap();
    srv.running = Some(start(config).await.expect("server starts again"));
    let listed = attributes(&srv, &key, laptop_id).await;
    assert_eq!(custom(&listed), json!({"custom:managed": true}), "{listed}");
    let mut server = TestNode::connect_as(
        &srv.url,
        "server-a",
        server.machine.clone(),
        server.node_key,
    )
    .await;
    let mut ss = server.stream().await;
    let full = ss.next_within(5 * SECOND).await.expect("full map");
    assert!(has_rule_from(&full, &l4), "{full}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_attributes_are_refused_and_nothing_is_stored() {
    let srv = TestServer::start_with(database_policy).await;
    let alice = srv.user("alice").await;
    let key = api_key(&srv).await;
    let _node = register(&srv, "laptop-a", alice).await;
    let id = srv.node_id("laptop-a");
    let set = |attr: &str, body: Value| {
        let path = format!("/api/v2/device/{id}/attributes/{attr}");
        let srv = &srv;
        let key = key.clone();
        async move { call(srv, Some(&key), reqwest::Method::POST, &path, Some(body)).await }
    };
    let (status, v) = set("custom:kept", json!({"value": "x"})).await;
    assert_eq!(status, 200, "{v}");
    let before = attributes(&srv, &key, id).await;

    let long_key = format!("custom:{}", "k".repeat(44));
    let cases: Vec<(String, Value)> = vec![
        ("node:os".into(), json!({"value": "plan9"})),
        ("managed".into(), json!({"value": true})),
        ("custom:".into(), json!({"value": true})),
        ("custom:bad-key".into(), json!({"value": true})),
        (long_key, json!({"value": true})),
        ("custom:long".into(), json!({"value": "v".repeat(101)})),
        ("custom:obj".into(), json!({"value": {"a": 1}})),
        ("custom:list".into(), json!({"value": [1]})),
        ("custom:none".into(), json!({"value": null})),
        ("custom:none".into(), json!({})),
        (
            "custom:past".into(),
            json!({"value": true, "expiry": "2001-01-01T00:00:00Z"}),
        ),
        (
            "custom:when".into(),
            json!({"value": true, "expiry": "tomorrow"}),
        ),
    ];
    for (attr, body) in cases {
        let (status, v) = set(&attr, body.clone()).await;
        assert_eq!(status, 400, "{attr} {body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    // A 50-character key and a 100-character string are within the bounds.
    let (status, v) = set(
        &format!("custom:{}", "k".repeat(43)),
        json!({"value": "v".repeat(100), "expiry": "2999-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["expiries"][format!("custom:{}", "k".repeat(43))],
        "2999-01-01T00:00:00Z",
        "{v}"
    );
    let (status, _) = call(
        &srv,
        Some(&key),
        reqwest::Method::DELETE,
        &format!("/api/v2/device/{id}/attributes/custom:{}", "k".repeat(43)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(attributes(&srv, &key, id).await, before);

    // Up to 32 per node; the 33rd is refused.
    for i in 1..32 {
        let (status, v) = set(&format!("custom:n{i}"), json!({"value": i})).await;
        assert_eq!(status, 200, "{i}: {v}");
    }
    let full = attributes(&srv, &key, id).await;
    assert_eq!(custom(&full).as_object().unwrap().len(), 32);
    let (status, v) = set("custom:one_too_many", json!({"value": 1})).await;
    assert_eq!(status, 400, "{v}");
    // Replacing one is not adding one.
    let (status, v) = set("custom:n1", json!({"value": 1.5})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["attributes"]["custom:n1"], 1.5);
    assert!(v["attributes"].get("custom:one_too_many").is_none());

    // Unknown nodes and ids that are not ids.
    let (status, _) = call(
        &srv,
        Some(&key),
        reqwest::Method::GET,
        "/api/v2/device/999/attributes",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &srv,
        Some(&key),
        reqwest::Method::GET,
        "/api/v2/device/xyz/attributes",
        None,
    )
    .await;
    assert_eq!(status, 400);
    srv.stop().await;
}

async fn patch(node: &mut TestNode, body: Value) -> u16 {
    let req = Request::builder()
        .method(Method::PATCH)
        .uri(format!("{}/machine/set-device-attr", node.url))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    node.conn.send_request.ready().await.unwrap();
    node.conn
        .send_request
        .send_request(req)
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_node_may_not_vouch_for_its_own_posture_unless_the_operator_allows_it() {
    let srv = TestServer::start_with(database_policy).await;
    let alice = srv.user("alice").await;
    let key = api_key(&srv).await;
    let mut mine = register(&srv, "mine", alice).await;
    let own = mine.node_key.to_string();
    let body = json!({"Version": 130, "NodeKey": own, "Update": {"custom:managed": true}});
    assert_eq!(patch(&mut mine, body).await, 403);
    assert_eq!(
        custom(&attributes(&srv, &key, srv.node_id("mine")).await),
        json!({}),
        "nothing stored"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sets_its_own_custom_attributes_over_noise() {
    let srv = TestServer::start_with(|c| {
        database_policy(c);
        c.node.attributes_from_device = true;
    })
    .await;
    let alice = srv.user("alice").await;
    let key = api_key(&srv).await;
    let mut mine = register(&srv, "mine", alice).await;
    let other = register(&srv, "other", alice).await;
    let (mine_id, other_id) = (srv.node_id("mine"), srv.node_id("other"));

    let body = |node_key: &str, update: Value| json!({"Version": 130, "NodeKey": node_key, "Update": update});
    let own = mine.node_key.to_string();
    assert_eq!(
        patch(
            &mut mine,
            body(&own, json!({"custom:a": true, "custom:b": "x"}))
        )
        .await,
        200
    );
    assert_eq!(
        custom(&attributes(&srv, &key, mine_id).await),
        json!({"custom:a": true, "custom:b": "x"})
    );
    // null removes.
    assert_eq!(
        patch(&mut mine, body(&own, json!({"custom:b": null}))).await,
        200
    );
    assert_eq!(
        custom(&attributes(&srv, &key, mine_id).await),
        json!({"custom:a": true})
    );
    // node:* cannot be set; one bad key refuses the whole update.
    assert_eq!(
        patch(
            &mut mine,
            body(&own, json!({"custom:c": 1, "node:os": "plan9"}))
        )
        .await,
        400
    );
    assert_eq!(
        custom(&attributes(&srv, &key, mine_id).await),
        json!({"custom:a": true})
    );
    // Another machine's node key: not found, nothing changed.
    assert_eq!(
        patch(
            &mut mine,
            body(&other.node_key.to_string(), json!({"custom:x": 1}))
        )
        .await,
        404
    );
    assert_eq!(custom(&attributes(&srv, &key, other_id).await), json!({}));
    // Too many at once.
    let many: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("custom:k{i}"), json!(i)))
        .collect();
    assert_eq!(patch(&mut mine, body(&own, Value::Object(many))).await, 400);
    assert_eq!(
        custom(&attributes(&srv, &key, mine_id).await),
        json!({"custom:a": true})
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_attribute_counts_as_absent() {
    let Posture {
        srv,
        key,
        server: _server,
        laptop_id,
        l4,
        mut ss,
        ..
    } = posture_setup().await;

    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, v) = call(
        &srv,
        Some(&key),
        reqwest::Method::POST,
        &format!("/api/v2/device/{laptop_id}/attributes/custom:managed"),
        Some(json!({"value": true, "expiry": soon})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["expiries"]["custom:managed"].is_string(), "{v}");
    rule_appears(&mut ss, &l4).await;
    // Past its expiry the rule goes, and the attribute is no longer listed.
    rule_goes(&mut ss, &l4).await;
    assert_eq!(custom(&attributes(&srv, &key, laptop_id).await), json!({}));
    srv.stop().await;
}

/// Runs the CLI against the server's socket: (success, stdout, stderr).
async fn cli(srv: &TestServer, args: &[&str]) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_oxiscale"));
    command.args(args).env("OXISCALE_DATA_DIR", &srv.dir);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_sets_and_deletes_attributes() {
    let srv = TestServer::start().await;
    let alice = srv.user("alice").await;
    let _node = register(&srv, "laptop-a", alice).await;
    let id = srv.node_id("laptop-a").to_string();

    let (ok, out, err) = cli(
        &srv,
        &[
            "nodes",
            "attributes",
            "set",
            "-i",
            &id,
            "-k",
            "custom:managed",
            "-v",
            "true",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("custom:managed = true"), "{out}");
    let (ok, out, err) = cli(
        &srv,
        &[
            "nodes",
            "attributes",
            "set",
            "-i",
            &id,
            "-k",
            "custom:team",
            "-v",
            "ops",
            "--expiry",
            "2999-01-01T00:00:00Z",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("2999-01-01T00:00:00Z"), "{out}");

    let (ok, out, err) = cli(&srv, &["-o", "json", "nodes", "attributes", "-i", &id]).await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        custom(&v),
        json!({"custom:managed": true, "custom:team": "ops"}),
        "{v}"
    );

    let (ok, _, err) = cli(
        &srv,
        &[
            "nodes",
            "attributes",
            "delete",
            "-i",
            &id,
            "-k",
            "custom:team",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = cli(
        &srv,
        &[
            "nodes",
            "attributes",
            "set",
            "-i",
            &id,
            "-k",
            "node:os",
            "-v",
            "plan9",
        ],
    )
    .await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("node:os"), "{err}");
    let (_, out, _) = cli(&srv, &["-o", "json", "nodes", "attributes", "-i", &id]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(custom(&v), json!({"custom:managed": true}), "{v}");
    srv.stop().await;
}
