//! The REST API against headscale 0.29.2's own OpenAPI document
//! (fixtures/headscale/api/headscale-0.29.2.swagger.json): every path and method of it is
//! called on a live server, and every 200 answer is checked against the response schema the
//! way protojson (grpc-gateway) writes it: every property present, lowerCamelCase, uint64
//! and timestamps as strings, enums among the schema's values, `null` only for an unset
//! message. Errors must be grpc-gateway's `{code, message, details}` with its HTTP status.

mod common;

use std::collections::BTreeSet;

use common::{TestNode, TestServer};
use oxiscale::admin::CreateApiKey;
use oxiscale_tailcfg::NodePublic;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const SWAGGER: &str = include_str!("../../fixtures/headscale/api/headscale-0.29.2.swagger.json");

struct Contract {
    doc: Value,
    url: String,
    key: String,
    http: reqwest::Client,
    /// (method, swagger path) of every operation called with a checked answer.
    covered: BTreeSet<(String, String)>,
}

/// What a call expects.
enum Expect {
    /// 200 and the swagger's response schema.
    Ok,
    /// grpc-gateway's error body with this gRPC code and HTTP status.
    Error(i64, u16),
}

impl Contract {
    fn definition(&self, reference: &str) -> &Value {
        let name = reference
            .strip_prefix("#/definitions/")
            .expect("local $ref");
        &self.doc["definitions"][name]
    }

    /// Checks `value` against `schema`; problems are pushed to `errors` with their JSON path.
    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(r) = schema["$ref"].as_str() {
            return self.check(self.definition(r), value, at, errors);
        }
        if let Some(values) = schema["enum"].as_array() {
            if !values.contains(value) {
                errors.push(format!("{at}: {value} is not one of {values:?}"));
            }
            return;
        }
        let is_object = schema["type"] == "object" || schema.get("properties").is_some();
        match schema["type"].as_str() {
            _ if is_object => {
                let Some(obj) = value.as_object() else {
                    errors.push(format!("{at}: expected an object, got {value}"));
                    return;
                };
                for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
                    let Some(v) = obj.get(name) else {
                        errors.push(format!("{at}.{name}: missing (keys: {:?})", obj.keys()));
                        continue;
                    };
                    if v.is_null() && self.nullable(prop) {
                        continue;
                    }
                    self.check(prop, v, &format!("{at}.{name}"), errors);
                }
            }
            Some("array") => match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check(&schema["items"], item, &format!("{at}[{i}]"), errors);
                    }
                }
                None => errors.push(format!("{at}: expected an array, got {value}")),
            },
            Some("string") => {
                let Some(text) = value.as_str() else {
                    errors.push(format!("{at}: expected a string, got {value}"));
                    return;
                };
                match schema["format"].as_str() {
                    Some("uint64") | Some("int64") if text.parse::<i128>().is_err() => {
                        errors.push(format!("{at}: {text:?} is not a 64-bit integer"))
                    }
                    Some("date-time") if OffsetDateTime::parse(text, &Rfc3339).is_err() => {
                        errors.push(format!("{at}: {text:?} is not an RFC 3339 time"))
                    }
                    _ => {}
                }
            }
            Some("boolean") if !value.is_boolean() => {
                errors.push(format!("{at}: expected a boolean, got {value}"))
            }
            Some("integer") if !value.is_i64() && !value.is_u64() => {
                errors.push(format!("{at}: expected an integer, got {value}"))
            }
            _ => {}
        }
    }

    /// protojson writes an unset message field (a Timestamp too) as `null`; scalars, enums
    /// and lists are never null.
    fn nullable(&self, prop: &Value) -> bool {
        if prop["format"] == "date-time" {
            return true;
        }
        match prop["$ref"].as_str() {
            Some(r) => self.definition(r).get("enum").is_none(),
            None => false,
        }
    }

    /// Calls `method path` (the swagger's path template `op`) and checks the answer.
    async fn call(
        &mut self,
        method: &str,
        op: &str,
        path: &str,
        body: Option<Value>,
        expect: Expect,
    ) -> Value {
        let url = format!("{}{path}", self.url);
        let mut req = self
            .http
            .request(method.parse().unwrap(), &url)
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        let operation = &self.doc["paths"][op][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {op} is not in headscale's swagger"
        );
        let mut errors = Vec::new();
        match expect {
            Expect::Ok => {
                assert_eq!(status, 200, "{method} {path}: {text}");
                let schema = &operation["responses"]["200"]["schema"];
                self.check(schema, &value, "$", &mut errors);
                self.covered.insert((method.to_lowercase(), op.to_owned()));
            }
            Expect::Error(code, http) => {
                assert_eq!(status, http, "{method} {path}: {text}");
                let schema = &operation["responses"]["default"]["schema"];
                self.check(schema, &value, "$", &mut errors);
                assert_eq!(value["code"], code, "{method} {path}: {text}");
                assert_eq!(value["details"], json!([]), "{method} {path}: {text}");
                assert!(
                    value["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{text}"
                );
            }
        }
        assert!(
            errors.is_empty(),
            "{method} {path} does not match headscale's schema:\n  {}\nanswer: {text}",
            errors.join("\n  ")
        );
        value
    }
}

fn rfc3339_in(seconds: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&Rfc3339)
        .unwrap()
}

/// A client that registers with nothing vouching for it: its pending login's auth id.
async fn pending_login(node: &mut TestNode) -> String {
    let answer = node.register(None).await;
    let url = answer["AuthURL"].as_str().expect("an AuthURL").to_owned();
    url.rsplit('/').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_headscales_swagger_answers_in_its_schema() {
    let server = TestServer::start_with(|c| {
        c.policy.mode = oxiscale::config::PolicyMode::Database;
    })
    .await;
    let key = server
        .running()
        .admin
        .create_api_key(CreateApiKey::default())
        .await
        .unwrap()
        .key
        .unwrap();
    let mut c = Contract {
        doc: serde_json::from_str(SWAGGER).unwrap(),
        url: server.url.clone(),
        key,
        http: reqwest::Client::new(),
        covered: BTreeSet::new(),
    };
    use Expect::{Error, Ok};

    c.call("GET", "/api/v1/health", "/api/v1/health", None, Ok)
        .await;

    // Users.
    let alice = c
        .call(
            "POST",
            "/api/v1/user",
            "/api/v1/user",
            Some(json!({ "name": "alice", "displayName": "Alice", "email": "alice@example.com", "pictureUrl": "" })),
            Ok,
        )
        .await;
    let alice_id = alice["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(alice["user"]["displayName"], "Alice");
    let bob = c
        .call(
            "POST",
            "/api/v1/user",
            "/api/v1/user",
            Some(json!({ "name": "bob" })),
            Ok,
        )
        .await;
    let bob_id = bob["user"]["id"].as_str().unwrap().to_owned();
    let listed = c
        .call("GET", "/api/v1/user", "/api/v1/user?name=alice", None, Ok)
        .await;
    assert_eq!(listed["users"].as_array().unwrap().len(), 1, "{listed}");
    let listed = c
        .call(
            "GET",
            "/api/v1/user",
            &format!("/api/v1/user?id={bob_id}&name=&email="),
            None,
            Ok,
        )
        .await;
    assert_eq!(listed["users"][0]["name"], "bob", "{listed}");
    let all = c
        .call("GET", "/api/v1/user", "/api/v1/user", None, Ok)
        .await;
    assert_eq!(all["users"].as_array().unwrap().len(), 2, "{all}");
    let renamed = c
        .call(
            "POST",
            "/api/v1/user/{oldId}/rename/{newName}",
            &format!("/api/v1/user/{bob_id}/rename/robert"),
            None,
            Ok,
        )
        .await;
    assert_eq!(renamed["user"]["name"], "robert");

    // Pre-auth keys: the user as a string id, an RFC 3339 expiration, aclTags.
    let created = c
        .call(
            "POST",
            "/api/v1/preauthkey",
            "/api/v1/preauthkey",
            Some(
                json!({ "user": alice_id, "reusable": true, "ephemeral": false,
                         "expiration": rfc3339_in(3600), "aclTags": [] }),
            ),
            Ok,
        )
        .await;
    let auth_key = created["preAuthKey"]["key"].as_str().unwrap().to_owned();
    assert_eq!(created["preAuthKey"]["user"]["id"], alice_id.as_str());
    let spare = c
        .call(
            "POST",
            "/api/v1/preauthkey",
            "/api/v1/preauthkey",
            // protojson reads `null` as unset (clients that dump their models send it).
            Some(
                json!({ "user": alice_id.parse::<u64>().unwrap(), "expiration": rfc3339_in(600),
                         "reusable": null, "ephemeral": null, "aclTags": null }),
            ),
            Ok,
        )
        .await;
    let spare_id = spare["preAuthKey"]["id"].as_str().unwrap().to_owned();
    c.call("GET", "/api/v1/preauthkey", "/api/v1/preauthkey", None, Ok)
        .await;

    // A node registered with the key, by a client speaking the real protocol.
    let mut a = TestNode::connect(&server.url, "a").await;
    a.register(Some(&auth_key)).await;
    let node_id = server.node_id("a").to_string();
    let nodes = c
        .call("GET", "/api/v1/node", "/api/v1/node", None, Ok)
        .await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1, "{nodes}");
    let mine = c
        .call("GET", "/api/v1/node", "/api/v1/node?user=alice", None, Ok)
        .await;
    assert_eq!(mine["nodes"][0]["id"], node_id.as_str(), "{mine}");
    let node = c
        .call(
            "GET",
            "/api/v1/node/{nodeId}",
            &format!("/api/v1/node/{node_id}"),
            None,
            Ok,
        )
        .await;
    let n = &node["node"];
    assert_eq!(n["registerMethod"], "REGISTER_METHOD_AUTH_KEY", "{n}");
    assert!(
        n["machineKey"].as_str().unwrap().starts_with("mkey:"),
        "{n}"
    );
    assert!(
        n["nodeKey"].as_str().unwrap().starts_with("nodekey:"),
        "{n}"
    );
    assert!(
        n["discoKey"].as_str().unwrap().starts_with("discokey:"),
        "{n}"
    );
    assert_eq!(n["preAuthKey"]["reusable"], true, "{n}");
    assert_eq!(n["user"]["name"], "alice", "{n}");
    assert_eq!(n["approved"], true, "oxiscale's extra field: {n}");
    c.call(
        "POST",
        "/api/v1/node/{nodeId}/rename/{newName}",
        &format!("/api/v1/node/{node_id}/rename/laptop"),
        None,
        Ok,
    )
    .await;
    c.call(
        "POST",
        "/api/v1/node/{nodeId}/tags",
        &format!("/api/v1/node/{node_id}/tags"),
        Some(json!({ "tags": [] })),
        Ok,
    )
    .await;
    c.call(
        "POST",
        "/api/v1/node/{nodeId}/approve_routes",
        &format!("/api/v1/node/{node_id}/approve_routes"),
        Some(json!({ "routes": [] })),
        Ok,
    )
    .await;
    let expiring = c
        .call(
            "POST",
            "/api/v1/node/{nodeId}/expire",
            &format!("/api/v1/node/{node_id}/expire?expiry=2099-01-01T00:00:00Z"),
            None,
            Ok,
        )
        .await;
    assert_eq!(expiring["node"]["expiry"], "2099-01-01T00:00:00Z");
    c.call(
        "POST",
        "/api/v1/node/backfillips",
        // grpc-gateway parses bools with Go's strconv.ParseBool (Python's requests sends True).
        "/api/v1/node/backfillips?confirmed=True",
        None,
        Ok,
    )
    .await;

    // Pending interactive logins: registered by auth id (two ways), rejected, approved.
    let mut b = TestNode::connect(&server.url, "b").await;
    let b_auth = pending_login(&mut b).await;
    let registered = c
        .call(
            "POST",
            "/api/v1/auth/register",
            "/api/v1/auth/register",
            Some(json!({ "user": "alice", "authId": b_auth })),
            Ok,
        )
        .await;
    assert_eq!(registered["node"]["name"], "b");
    assert_eq!(registered["node"]["registerMethod"], "REGISTER_METHOD_CLI");
    let mut cn = TestNode::connect(&server.url, "c").await;
    let c_auth = pending_login(&mut cn).await;
    let registered = c
        .call(
            "POST",
            "/api/v1/node/register",
            &format!("/api/v1/node/register?user=alice&key={c_auth}"),
            None,
            Ok,
        )
        .await;
    let c_id = registered["node"]["id"].as_str().unwrap().to_owned();
    let mut d = TestNode::connect(&server.url, "d").await;
    let d_auth = pending_login(&mut d).await;
    c.call(
        "POST",
        "/api/v1/auth/reject",
        "/api/v1/auth/reject",
        Some(json!({ "authId": d_auth })),
        Ok,
    )
    .await;
    // Rejected: it is gone.
    c.call(
        "POST",
        "/api/v1/auth/register",
        "/api/v1/auth/register",
        Some(json!({ "user": "alice", "authId": d_auth })),
        Error(5, 404),
    )
    .await;
    // A new machine cannot be approved without a user.
    let mut e = TestNode::connect(&server.url, "e").await;
    let e_auth = pending_login(&mut e).await;
    c.call(
        "POST",
        "/api/v1/auth/approve",
        "/api/v1/auth/approve",
        Some(json!({ "authId": e_auth })),
        Error(9, 400),
    )
    .await;
    // A known machine logging in again with a new node key is approved for its owner.
    a.node_key = NodePublic(rand::random());
    let a_auth = pending_login(&mut a).await;
    c.call(
        "POST",
        "/api/v1/auth/approve",
        "/api/v1/auth/approve",
        Some(json!({ "authId": a_auth })),
        Ok,
    )
    .await;
    let node = c
        .call(
            "GET",
            "/api/v1/node/{nodeId}",
            &format!("/api/v1/node/{node_id}"),
            None,
            Ok,
        )
        .await;
    assert_eq!(node["node"]["nodeKey"], a.node_key.to_string(), "{node}");

    // headscale's debug node has no machine behind it: refused, not faked.
    c.call(
        "POST",
        "/api/v1/debug/node",
        "/api/v1/debug/node",
        Some(json!({ "user": "alice", "key": "x", "name": "debug", "routes": [] })),
        Error(12, 501),
    )
    .await;

    // Policy (database mode).
    let policy = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    c.call("GET", "/api/v1/policy", "/api/v1/policy", None, Ok)
        .await;
    c.call(
        "POST",
        "/api/v1/policy/check",
        "/api/v1/policy/check",
        Some(json!({ "policy": policy })),
        Ok,
    )
    .await;
    let set = c
        .call(
            "PUT",
            "/api/v1/policy",
            "/api/v1/policy",
            Some(json!({ "policy": policy })),
            Ok,
        )
        .await;
    assert_eq!(set["policy"], policy);
    // Database mode: headscale answers when the policy was stored.
    let updated = set["updatedAt"]
        .as_str()
        .expect("updatedAt set in database mode");
    OffsetDateTime::parse(updated, &Rfc3339).unwrap();
    let got = c
        .call("GET", "/api/v1/policy", "/api/v1/policy", None, Ok)
        .await;
    assert_eq!(got["policy"], policy);
    assert_eq!(got["updatedAt"], set["updatedAt"]);
    c.call(
        "POST",
        "/api/v1/policy/check",
        "/api/v1/policy/check",
        Some(json!({ "policy": "{\"acls\": [{\"action\": \"allow\"}]}" })),
        Error(3, 400),
    )
    .await;

    // Deleting and expiring.
    c.call(
        "POST",
        "/api/v1/preauthkey/expire",
        "/api/v1/preauthkey/expire",
        Some(json!({ "id": spare_id })),
        Ok,
    )
    .await;
    c.call(
        "DELETE",
        "/api/v1/preauthkey",
        &format!("/api/v1/preauthkey?id={spare_id}"),
        None,
        Ok,
    )
    .await;
    let api_key = c
        .call(
            "POST",
            "/api/v1/apikey",
            "/api/v1/apikey",
            Some(json!({ "expiration": rfc3339_in(86_400) })),
            Ok,
        )
        .await;
    let secret = api_key["apiKey"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("oxskey-api-"), "{api_key}");
    let keys = c
        .call("GET", "/api/v1/apikey", "/api/v1/apikey", None, Ok)
        .await;
    let listed = keys["apiKeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| {
            // headscale's display form: `<kind>-<prefix>-***`.
            let shown = k["prefix"].as_str().unwrap();
            secret.starts_with(shown.strip_suffix("***").unwrap())
        })
        .expect("the new key is listed")
        .clone();
    // Expired by the prefix as listed, deleted by the bare prefix (both are accepted).
    let shown = listed["prefix"].as_str().unwrap().to_owned();
    let prefix = shown
        .strip_prefix("oxskey-api-")
        .and_then(|p| p.strip_suffix("-***"))
        .unwrap()
        .to_owned();
    c.call(
        "POST",
        "/api/v1/apikey/expire",
        "/api/v1/apikey/expire",
        Some(json!({ "prefix": shown })),
        Ok,
    )
    .await;
    c.call(
        "DELETE",
        "/api/v1/apikey/{prefix}",
        &format!("/api/v1/apikey/{prefix}"),
        None,
        Ok,
    )
    .await;
    c.call(
        "DELETE",
        "/api/v1/node/{nodeId}",
        &format!("/api/v1/node/{c_id}"),
        None,
        Ok,
    )
    .await;
    c.call(
        "DELETE",
        "/api/v1/user/{id}",
        &format!("/api/v1/user/{bob_id}"),
        None,
        Ok,
    )
    .await;

    // Every operation of the swagger was called and answered in its schema.
    let all: BTreeSet<(String, String)> = c.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    // debug/node is refused by design (see above).
    let missing: Vec<_> = all
        .difference(&c.covered)
        .filter(|(_, p)| p != "/api/v1/debug/node")
        .collect();
    assert!(missing.is_empty(), "not exercised: {missing:?}");

    // Errors: grpc-gateway's body and statuses.
    c.call(
        "GET",
        "/api/v1/node/{nodeId}",
        "/api/v1/node/999",
        None,
        Error(5, 404),
    )
    .await;
    c.call(
        "GET",
        "/api/v1/node/{nodeId}",
        "/api/v1/node/not-a-number",
        None,
        Error(3, 400),
    )
    .await;
    c.call(
        "DELETE",
        "/api/v1/user/{id}",
        "/api/v1/user/4242",
        None,
        Error(5, 404),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/user",
        "/api/v1/user",
        Some(json!({ "name": "alice" })),
        Error(6, 409),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/preauthkey",
        "/api/v1/preauthkey",
        Some(json!({ "user": "not-an-id" })),
        Error(3, 400),
    )
    .await;
    let resp = c
        .http
        .get(format!("{}/api/v1/no/such/route", c.url))
        .bearer_auth(&c.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!((&body["code"], &body["details"]), (&json!(5), &json!([])));
    // A known path with another method: grpc-gateway's 405 as Unimplemented (501).
    let resp = c
        .http
        .get(format!("{}/api/v1/user/1", c.url))
        .bearer_auth(&c.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 501);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (&body["code"], &body["message"], &body["details"]),
        (&json!(12), &json!("Method Not Allowed"), &json!([]))
    );
    c.key = "oxskey-api-not-a-key".into();
    c.call("GET", "/api/v1/node", "/api/v1/node", None, Error(16, 401))
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_the_openapi_document_need_no_key() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let version: Value = http
        .get(format!("{}/version", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["version"], "v0.29.2", "{version}");
    assert_eq!(version["dirty"], false);
    for field in ["commit", "buildTime"] {
        assert!(version[field].is_string(), "{version}");
    }
    assert!(version["go"]["os"].is_string(), "{version}");
    assert_eq!(
        version["oxiscale"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{version}"
    );
    let doc = http
        .get(format!("{}/swagger/v1/openapiv2.json", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(doc.status().as_u16(), 200);
    assert_eq!(doc.text().await.unwrap(), SWAGGER);
    server.stop().await;
}

/// The checker itself: the shapes oxiscale answered with before (snake_case, numeric ids,
/// bare lists) and near misses fail it.
#[test]
fn the_schema_check_refuses_what_headscales_clients_could_not_read() {
    let c = Contract {
        doc: serde_json::from_str(SWAGGER).unwrap(),
        url: String::new(),
        key: String::new(),
        http: reqwest::Client::new(),
        covered: BTreeSet::new(),
    };
    let user = json!({ "id": "1", "name": "a", "createdAt": "2026-01-01T00:00:00Z",
        "displayName": "", "email": "", "providerId": "", "provider": "", "profilePicUrl": "" });
    let errors_of = |schema: &str, v: &Value| {
        let mut errors = Vec::new();
        c.check(&json!({ "$ref": schema }), v, "$", &mut errors);
        errors
    };
    let good = json!({ "user": user });
    assert_eq!(
        errors_of("#/definitions/v1CreateUserResponse", &good),
        Vec::<String>::new()
    );
    let mut numeric = good.clone();
    numeric["user"]["id"] = json!(1);
    let mut snake = good.clone();
    snake["user"].as_object_mut().unwrap().remove("displayName");
    snake["user"]["display_name"] = json!("");
    let mut bad_time = good.clone();
    bad_time["user"]["createdAt"] = json!("yesterday");
    for bad in [numeric, snake, bad_time, user.clone(), json!([user])] {
        assert!(
            !errors_of("#/definitions/v1CreateUserResponse", &bad).is_empty(),
            "{bad}"
        );
    }
    let node_errors = errors_of(
        "#/definitions/v1GetNodeResponse",
        &json!({ "node": { "id": "1", "registerMethod": "authkey" } }),
    );
    assert!(
        node_errors.iter().any(|e| e.contains("registerMethod")),
        "{node_errors:?}"
    );
    assert!(
        node_errors
            .iter()
            .any(|e| e.contains("machineKey: missing"))
    );
}
