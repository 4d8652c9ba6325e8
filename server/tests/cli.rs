//! The CLI as scripts use it, over the server's socket: a reader that goes away early is
//! not a panic, and errors never land on standard output.

mod common;

use std::process::{Command, Stdio};

use common::TestServer;

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

/// `oxiscale <args> -o json`, parsed.
async fn json_of(server: &TestServer, args: &[&str]) -> serde_json::Value {
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
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn view(v: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

/// The REST API speaks headscale's wire form; the CLI still prints the administration's
/// views (snake_case, numeric ids) that scripts and the end-to-end harnesses read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_prints_the_json_scripts_read() {
    let server = TestServer::start_with(|c| {
        c.policy.mode = oxiscale::config::PolicyMode::Database;
    })
    .await;
    let admin = server.running().admin.clone();

    let alice = json_of(
        &server,
        &["users", "create", "alice", "-e", "a@example.com"],
    )
    .await;
    assert_eq!(alice, view(&admin.list_users()[0]));
    let id = alice["id"].as_u64().expect("a numeric id");
    json_of(&server, &["users", "create", "bob"]).await;
    let renamed = json_of(&server, &["users", "rename", "-n", "bob", "-r", "robert"]).await;
    assert_eq!(renamed["name"], "robert");
    let users = json_of(&server, &["users", "list"]).await;
    assert_eq!(users, view(admin.list_users()));
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
    assert_eq!(key["user"]["id"], id);
    let spare = json_of(&server, &["preauthkeys", "create", "-u", &id.to_string()]).await;
    let spare_id = spare["id"].as_u64().unwrap();
    let keys = json_of(&server, &["preauthkeys", "list"]).await;
    assert_eq!(keys, view(admin.list_preauth_keys()));
    let expired = json_of(
        &server,
        &["preauthkeys", "expire", "-i", &spare_id.to_string()],
    )
    .await;
    assert_eq!(
        (expired["id"].as_u64(), &expired["expired"]),
        (Some(spare_id), &true.into())
    );
    json_of(
        &server,
        &["preauthkeys", "delete", "-i", &spare_id.to_string()],
    )
    .await;

    let mut a = common::TestNode::connect(&server.url, "a").await;
    a.register(Some(key["key"].as_str().unwrap())).await;
    let node_id = server.node_id("a").to_string();
    let nodes = json_of(&server, &["nodes", "list"]).await;
    assert_eq!(nodes, view(admin.list_nodes(None)));
    assert!(nodes[0]["id"].is_u64() && nodes[0]["ip_addresses"].is_array());
    assert_eq!(
        json_of(&server, &["nodes", "list", "-u", "alice"]).await,
        nodes
    );
    let node = json_of(&server, &["nodes", "rename", "-i", &node_id, "laptop"]).await;
    assert_eq!(node["given_name"], "laptop");
    assert_eq!(
        node,
        view(admin.node(node["id"].as_u64().unwrap()).unwrap())
    );
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
    assert_eq!(node["expiry"], "2098-12-31T22:00:00Z");
    let node = json_of(&server, &["nodes", "expire", "-i", &node_id, "--disable"]).await;
    assert_eq!(node["expiry"], serde_json::Value::Null);
    let node = json_of(&server, &["nodes", "approve", "-i", &node_id]).await;
    assert_eq!(node["approved"], true);
    let node = json_of(&server, &["nodes", "tag", "-i", &node_id, "-t", ""]).await;
    assert_eq!(node["tags"], serde_json::json!([]));
    let node = json_of(&server, &["nodes", "approve-routes", "-i", &node_id]).await;
    assert_eq!(node["approved_routes"], serde_json::json!([]));
    let routes = json_of(&server, &["nodes", "list-routes", "-i", &node_id]).await;
    assert_eq!(
        routes,
        view(admin.list_routes(Some(node_id.parse().unwrap())).unwrap())
    );
    let backfill = json_of(&server, &["nodes", "backfillips", "--force"]).await;
    assert_eq!(backfill, serde_json::json!({ "changed": [] }));

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
    assert_eq!(b_node["name"], "b");
    let b_id = b_node["id"].as_u64().unwrap();
    let gone = json_of(
        &server,
        &["nodes", "delete", "-i", &b_id.to_string(), "--force"],
    )
    .await;
    assert_eq!(gone, b_node);
    assert!(admin.node(b_id).is_err());

    let api = json_of(&server, &["apikeys", "create", "-e", "1d"]).await;
    assert!(
        api["key"].as_str().unwrap().starts_with("oxskey-api-"),
        "{api}"
    );
    assert!(api["id"].is_u64(), "{api}");
    let listed = json_of(&server, &["apikeys", "list"]).await;
    assert_eq!(listed, view(admin.list_api_keys()));
    let prefix = api["prefix"].as_str().unwrap();
    let expired = json_of(&server, &["apikeys", "expire", "-p", prefix]).await;
    assert_eq!(
        (&expired["prefix"], &expired["expired"]),
        (&api["prefix"], &true.into())
    );
    json_of(
        &server,
        &["apikeys", "delete", "-i", &api["id"].to_string()],
    )
    .await;
    assert!(admin.list_api_keys().is_empty());

    let none = json_of(&server, &["policy", "get"]).await;
    assert_eq!(none, view(admin.get_policy().await));
    assert_eq!(none["policy"], serde_json::Value::Null);
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

    json_of(&server, &["users", "destroy", "-n", "robert", "--force"]).await;
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
