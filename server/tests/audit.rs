//! The audit log over every way in: the REST API (an API key), the CLI (the real binary over
//! the admin socket) and the console (a signed-in local account), exported as JSON lines.

mod common;

use std::process::Command;

use common::TestServer;
use oxiscale::admin::CreateApiKey;
use oxiscale::console::auth::Accounts;
use serde_json::Value;

fn cli(server: &TestServer, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_oxiscale"))
        .args(args)
        .env("OXISCALE_DATA_DIR", &server.dir)
        .output()
        .expect("the CLI runs");
    assert!(
        out.status.success(),
        "oxiscale {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_logged_with_who_made_it_and_exported_as_json_lines() {
    let server = TestServer::start().await;
    let admin = server.running().admin.clone();
    let api_key = admin
        .create_api_key(CreateApiKey::default())
        .await
        .unwrap()
        .key
        .unwrap();
    let http = reqwest::Client::new();

    // REST with an API key.
    let resp = http
        .post(format!("{}/api/v1/user", server.url))
        .bearer_auth(&api_key)
        .json(&serde_json::json!({ "name": "from-api" }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());

    // The CLI over the admin socket.
    cli(&server, &["users", "create", "from-cli"]);
    let from_cli = admin.resolve_user("from-cli").unwrap();
    cli(
        &server,
        &[
            "users",
            "rename",
            "-i",
            &from_cli.to_string(),
            "-r",
            "renamed-by-cli",
        ],
    );

    // The console, signed in with a local account (its server functions go through the
    // same service).
    Accounts::new(server.running().tailnet.store().pool().clone())
        .create(
            "audit-admin",
            "correct horse battery staple 42",
            app::api::Role::Admin,
        )
        .await
        .unwrap();
    let console = common::console::Console::new(&server.url);
    let session = console
        .sign_in_as("audit-admin", "correct horse battery staple 42")
        .await;
    let created = console
        .http
        .post(format!("{}/console/fn/user/create", server.url))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .json(&serde_json::json!({ "name": "from-console", "display_name": "", "email": "" }))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "{}",
        created.text().await.unwrap()
    );

    // Exported: oldest first, one JSON object per line.
    let lines = cli(&server, &["audit", "export", "--action", "user."]);
    let entries: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    let summary: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"]["kind"].as_str().unwrap().to_owned(),
                e["actor"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let prefix = admin.list_api_keys()[0].prefix.clone();
    assert_eq!(
        summary,
        vec![
            (
                "user.create".into(),
                "api_key".into(),
                format!("API key {prefix}")
            ),
            ("user.create".into(), "cli".into(), "admin socket".into()),
            ("user.rename".into(), "cli".into(), "admin socket".into()),
            (
                "user.create".into(),
                "local_admin".into(),
                "audit-admin".into()
            ),
        ]
    );
    let rename = &entries[2];
    assert_eq!(rename["before"]["name"], "from-cli");
    assert_eq!(rename["after"]["name"], "renamed-by-cli");

    // Secrets never enter the log: the API key made above is logged masked.
    let all = cli(&server, &["audit", "export"]);
    assert!(all.contains("apikey.create"), "{all}");
    assert!(
        !all.contains(&api_key),
        "the API key's secret is in the log"
    );

    // The same over REST, filtered by actor.
    let resp = http
        .get(format!("{}/api/v1/audit?actor=audit-admin", server.url))
        .bearer_auth(&api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/jsonl");
    let text = resp.text().await.unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("from-console"));
    server.stop().await;
}
