//! The CLI as scripts use it, over the server's socket: a reader that goes away early is
//! not a panic, and errors never land on standard output.

mod common;

use std::process::{Command, Stdio};

use common::TestServer;
use serde_json::Value;

fn cli(server: &TestServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oxiscale"));
    command.args(args).env("OXISCALE_DATA_DIR", &server.dir);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_cli_quietly() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let dir = server.dir.clone();
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oxiscale"))
            .args(["users", "list"])
            .env("OXISCALE_DATA_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the CLI has its answer (`oxiscale users list | true`).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status:?}: {stderr}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_go_to_standard_error_in_every_format() {
    let server = TestServer::start().await;
    for format in [&["-o", "json"][..], &["-o", "yaml"][..], &[][..]] {
        let mut args = format.to_vec();
        args.extend(["nodes", "delete", "-i", "424242", "--force"]);
        let mut command = cli(&server, &args);
        let out = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{format:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{format:?}: nothing on stdout");
        assert!(
            stderr.contains("424242") || stderr.contains("not found"),
            "{format:?}: {stderr}"
        );
        if format == ["-o", "json"] {
            let v: serde_json::Value = serde_json::from_str(&stderr).unwrap();
            assert!(v["error"].is_string(), "{v}");
        }
    }
    server.stop().await;
}

/// What `oxiscale <args> -o json` prints, byte for byte.
async fn stdout_of(server: &TestServer, args: &[&str]) -> String {
    let mut command = cli(server, args);
    command.args(["-o", "json"]);
    let what = format!("{args:?}");
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `oxiscale <args> -o json`, parsed.
async fn json_of(server: &TestServer, args: &[&str]) -> Value {
    let text = stdout_of(server, args).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// The unix seconds of an RFC 3339 time, as headscale's `{"seconds": …}` carries them.
fn seconds(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

/// `-o json` is what headscale 0.29 prints (Go's encoding/json of its protobuf messages):
/// tab-indented, fields in the proto's order, zero values left out, times as seconds and
/// nanos, enums as numbers, `null` for an empty list, `{}` where headscale answers with an
/// empty message. Scripts written for headscale read it unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_prints_what_headscale_prints() {
    let server = TestServer::start_with(|c| {
        c.policy.mode = oxiscale::config::PolicyMode::Database;
    })
    .await;
    let admin = server.running().admin.clone();

    assert_eq!(stdout_of(&server, &["users", "list"]).await, "null\n");
    let alice = stdout_of(
        &server,
        &["users", "create", "alice", "-e", "a@example.com"],
    )
    .await;
    let created = seconds(&admin.list_users()[0].created_at);
    assert_eq!(
        alice,
        format!(
            "{{\n\t\"id\": 1,\n\t\"name\": \"alice\",\n\t\"created_at\": {{\n\t\t\"seconds\": \
             {created}\n\t}},\n\t\"email\": \"a@example.com\"\n}}\n"
        )
    );
    let mut line = cli(&server, &["users", "list", "-o", "json-line"]);
    let line = tokio::task::spawn_blocking(move || line.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(line.stdout).unwrap(),
        format!(
            "[{{\"id\":1,\"name\":\"alice\",\"created_at\":{{\"seconds\":{created}}},\
             \"email\":\"a@example.com\"}}]\n"
        )
    );
    json_of(&server, &["users", "create", "bob"]).await;
    let renamed = json_of(&server, &["users", "rename", "-n", "bob", "-r", "robert"]).await;
    assert_eq!(
        (&renamed["id"], &renamed["name"]),
        (&2.into(), &"robert".into())
    );
    assert!(
        renamed.get("email").is_none(),
        "empty fields are left out: {renamed}"
    );
    let users = json_of(&server, &["users", "list"]).await;
    assert_eq!(users.as_array().unwrap().len(), 2);
    let only = json_of(&server, &["users", "list", "-n", "alice"]).await;
    assert_eq!(only.as_array().unwrap().len(), 1);

    let key = json_of(
        &server,
        &[
            "preauthkeys",
            "create",
            "-u",
            "alice",
            "--reusable",
            "-e",
            "1h",
        ],
    )
    .await;
    assert!(
        key["key"].as_str().unwrap().starts_with("oxskey-auth-"),
        "{key}"
    );
    assert_eq!(
        (&key["user"]["id"], &key["reusable"]),
        (&1.into(), &true.into())
    );
    assert!(
        key.get("used").is_none() && key.get("ephemeral").is_none(),
        "{key}"
    );
    let in_an_hour = key["expiration"]["seconds"].as_i64().unwrap()
        - key["created_at"]["seconds"].as_i64().unwrap();
    assert!((3599..=3601).contains(&in_an_hour), "{key}");
    let spare = json_of(&server, &["preauthkeys", "create", "-u", "1"]).await;
    let spare_id = spare["id"].as_u64().unwrap();
    let keys = json_of(&server, &["preauthkeys", "list"]).await;
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(keys[0]["key"].as_str().unwrap().ends_with("-***"), "{keys}");
    let spare_id_text = spare_id.to_string();
    let expire = ["preauthkeys", "expire", "-i", spare_id_text.as_str()];
    assert_eq!(stdout_of(&server, &expire).await, "{}\n");
    assert!(
        admin
            .list_preauth_keys()
            .iter()
            .any(|k| k.id == spare_id && k.expired)
    );
    let delete = ["preauthkeys", "delete", "-i", spare_id_text.as_str()];
    assert_eq!(stdout_of(&server, &delete).await, "{}\n");

    let mut a = common::TestNode::connect(&server.url, "a").await;
    a.register(Some(key["key"].as_str().unwrap())).await;
    let node_id = server.node_id("a").to_string();
    let nodes = json_of(&server, &["nodes", "list"]).await;
    let node = &nodes[0];
    assert!(
        node["id"].is_u64() && node["ip_addresses"].is_array(),
        "{node}"
    );
    assert_eq!(
        node["register_method"], 1,
        "REGISTER_METHOD_AUTH_KEY, as a number"
    );
    assert_eq!(node["pre_auth_key"]["reusable"], true);
    assert!(
        node.get("online").is_none() && node.get("approved").is_none(),
        "{node}"
    );
    assert_eq!(
        json_of(&server, &["nodes", "list", "-u", "alice"]).await,
        nodes
    );
    let node = json_of(&server, &["nodes", "rename", "-i", &node_id, "laptop"]).await;
    assert_eq!(node["given_name"], "laptop");
    let node = json_of(
        &server,
        &[
            "nodes",
            "expire",
            "-i",
            &node_id,
            "-e",
            "2099-01-01T00:00:00+02:00",
        ],
    )
    .await;
    assert_eq!(
        node["expiry"],
        serde_json::json!({ "seconds": 4070901600_i64 })
    );
    let node = json_of(&server, &["nodes", "expire", "-i", &node_id, "--disable"]).await;
    assert!(node.get("expiry").is_none(), "{node}");
    let node = json_of(&server, &["nodes", "approve", "-i", &node_id]).await;
    assert!(
        node.get("approved").is_none(),
        "an approved node prints as in headscale"
    );
    let node = json_of(&server, &["nodes", "tag", "-i", &node_id, "-t", ""]).await;
    assert!(node.get("tags").is_none(), "{node}");
    let node = json_of(&server, &["nodes", "approve-routes", "-i", &node_id]).await;
    assert!(node.get("approved_routes").is_none(), "{node}");
    let routes = stdout_of(&server, &["nodes", "list-routes", "-i", &node_id]).await;
    assert_eq!(routes, "null\n", "no node has routes");
    let backfill = stdout_of(&server, &["nodes", "backfillips", "--force"]).await;
    assert_eq!(backfill, "{}\n");

    // An interactive login, registered by auth id.
    let mut b = common::TestNode::connect(&server.url, "b").await;
    let url = b.register(None).await["AuthURL"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth_id = url.rsplit('/').next().unwrap();
    let b_node = json_of(
        &server,
        &["auth", "register", "--auth-id", auth_id, "-u", "alice"],
    )
    .await;
    assert_eq!(
        (&b_node["name"], &b_node["register_method"]),
        (&"b".into(), &2.into()),
        "registered from the command line: REGISTER_METHOD_CLI"
    );
    let b_id = b_node["id"].as_u64().unwrap().to_string();
    let gone = stdout_of(&server, &["nodes", "delete", "-i", &b_id, "--force"]).await;
    assert_eq!(gone, "{\n\t\"Result\": \"Node deleted\"\n}\n");
    assert!(admin.node(b_id.parse().unwrap()).is_err());

    let api = json_of(&server, &["apikeys", "create", "-e", "1d"]).await;
    let api = api
        .as_str()
        .expect("headscale prints the key alone, as a string");
    assert!(api.starts_with("oxskey-api-"), "{api}");
    let listed = json_of(&server, &["apikeys", "list"]).await;
    let prefix = listed[0]["prefix"].as_str().unwrap().to_owned();
    assert!(api.starts_with(prefix.trim_end_matches("-***")), "{listed}");
    let expire = ["apikeys", "expire", "-p", prefix.as_str()];
    assert_eq!(stdout_of(&server, &expire).await, "{}\n");
    assert!(admin.list_api_keys()[0].expired);
    let id = listed[0]["id"].to_string();
    assert_eq!(
        stdout_of(&server, &["apikeys", "delete", "-i", &id]).await,
        "{}\n"
    );
    assert!(admin.list_api_keys().is_empty());

    assert_eq!(
        stdout_of(&server, &["health"]).await,
        "{\n\t\"database_connectivity\": true\n}\n"
    );
    let generated = json_of(&server, &["generate", "private-key"]).await;
    let text = generated["private_key"].as_str().unwrap();
    assert!(
        text.len() == 72 && text.starts_with("privkey:"),
        "{generated}"
    );

    // The policy is printed as oxiscale's view (headscale prints the raw HuJSON).
    let none = json_of(&server, &["policy", "get"]).await;
    assert_eq!(
        none,
        serde_json::to_value(admin.get_policy().await).unwrap()
    );
    assert_eq!(none["policy"], Value::Null);
    let file = server.dir.join("policy.hujson");
    let text = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    let report = json_of(&server, &["policy", "check", "-f", file]).await;
    assert!(
        report.is_object() && report.get("report").is_none(),
        "{report}"
    );
    let set = json_of(&server, &["policy", "set", "-f", file]).await;
    assert_eq!(set["policy"], text);
    assert_eq!(json_of(&server, &["policy", "get"]).await, set);

    let destroyed = stdout_of(&server, &["users", "destroy", "-n", "robert", "--force"]).await;
    assert_eq!(destroyed, "{}\n");
    assert_eq!(admin.list_users().len(), 1);
    server.stop().await;
}

/// Remote mode: with `cli.address` and an API key (oxiscale's or headscale's variable
/// names) the CLI works against a server it has no socket of, over the REST API; a wrong
/// key is refused on stderr, and remote mode without a key says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_remotely_with_an_api_key() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let key = server
        .running()
        .admin
        .create_api_key(oxiscale::admin::CreateApiKey::default())
        .await
        .unwrap()
        .key
        .unwrap();
    let elsewhere =
        std::env::temp_dir().join(format!("oxiscale-cli-remote-{}", rand::random::<u64>()));
    let run = |vars: Vec<(&'static str, String)>| {
        let elsewhere = elsewhere.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_oxiscale"));
            command
                .args(["users", "list", "-o", "json"])
                .env("OXISCALE_DATA_DIR", &elsewhere);
            for (k, v) in vars {
                command.env(k, v);
            }
            command.output().unwrap()
        })
    };

    for (address, api_key) in [
        ("OXISCALE_CLI_ADDRESS", "OXISCALE_CLI_API_KEY"),
        ("HEADSCALE_CLI_ADDRESS", "HEADSCALE_CLI_API_KEY"),
    ] {
        let out = run(vec![(address, server.url.clone()), (api_key, key.clone())])
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{address}: {stderr}");
        let users: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(users[0]["name"], "alice", "{users}");
    }

    let out = run(vec![
        ("OXISCALE_CLI_ADDRESS", server.url.clone()),
        ("OXISCALE_CLI_API_KEY", "oxskey-api-wrong".into()),
    ])
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let out = run(vec![("OXISCALE_CLI_ADDRESS", server.url.clone())])
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("API key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}
