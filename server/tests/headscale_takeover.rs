//! `serve` on headscale's database takes it over in place (backed up first, refused whole
//! when broken), and `oxiscale export headscale` writes the way back: headscale 0.29.2's
//! exact schema, which a fresh oxiscale takes over again with names, addresses, keys and
//! policy intact.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::headscale::*;
use common::{TestNode, TestServer};
use oxiscale::config::{Config, PolicyMode};
use oxiscale::export::headscale::export;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};

/// A config whose database is `db` (as headscale's config names its own file).
fn serving(dir: &Path, db: &Path) -> Config {
    let mut config = oxiscale_config(dir);
    config.database.sqlite.path = Some(db.to_owned());
    config.policy.mode = PolicyMode::Database;
    config
}

async fn start(config: &Config, dir: &Path) -> TestServer {
    let running = oxiscale::serve::start(config.clone()).await.unwrap();
    TestServer {
        url: running.server_url.clone(),
        running: Some(running),
        dir: dir.join("oxiscale"),
    }
}

/// Every table and index with its SQL, as SQLite keeps them.
async fn schema_of(path: &Path) -> BTreeSet<(String, String)> {
    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'sqlite_sequence'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    rows.iter()
        .map(|r| (r.get::<String, _>("name"), r.get::<String, _>("sql")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_over_a_headscale_database_in_place() {
    let dir = temp_dir();
    let db = dir.join("db.sqlite");
    headscale_0_29(&db).await;
    let original = std::fs::read(&db).unwrap();
    let config = serving(&dir, &db);

    let server = start(&config, &dir).await;
    let nodes = server.running().admin.list_nodes(None);
    let mut names: Vec<_> = nodes.iter().map(|n| n.given_name.clone()).collect();
    names.sort();
    assert_eq!(names, ["laptop", "router", "web"]);
    let router = nodes.iter().find(|n| n.given_name == "router").unwrap();
    assert!(
        router.ip_addresses.iter().any(|a| a == "100.64.0.2"),
        "{:?}",
        router.ip_addresses
    );
    let policy = server.running().admin.get_policy().await.policy.unwrap();
    assert!(policy.contains("// newest"), "{policy}");
    // A key headscale issued registers a new node on the server that took over.
    let mut newbie = TestNode::connect(&server.url, "newbie").await;
    let reg = newbie.register(Some(LEGACY_PREAUTH)).await;
    assert_eq!(reg["MachineAuthorized"], true, "{reg}");
    let running = server.running.unwrap();
    running.stop().await.unwrap();

    let backups = backups_of(&db);
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(std::fs::read(&backups[0]).unwrap(), original);
    assert!(
        std::fs::read_dir(&dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".oxiscale-")),
        "the staged database is renamed into place, nothing left beside it"
    );

    // The second start finds oxiscale's database: no second takeover, nothing lost.
    let server = start(&config, &dir).await;
    assert_eq!(server.running().admin.list_nodes(None).len(), 4);
    assert_eq!(backups_of(&db).len(), 1);
    server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn serve_refuses_a_broken_headscale_database_and_leaves_it_as_it_was() {
    let dir = temp_dir();
    let db = dir.join("db.sqlite");
    // Recorded as 0.29 but without the nodes.tags column that migration added.
    database_from_sql(
        &db,
        "CREATE TABLE migrations(id text, PRIMARY KEY(id));
         INSERT INTO migrations VALUES ('SCHEMA_INIT'), ('202511131445-node-forced-tags-to-tags');
         CREATE TABLE users(id integer PRIMARY KEY, name text, provider_identifier text);
         CREATE TABLE nodes(id integer PRIMARY KEY, machine_key text, node_key text,
           disco_key text, hostname text, given_name text, user_id integer, ipv4 text,
           ipv6 text, approved_routes text);
         CREATE TABLE pre_auth_keys(id integer PRIMARY KEY, user_id integer, tags text,
           prefix text, hash blob);
         CREATE TABLE api_keys(id integer PRIMARY KEY, prefix text, hash blob);",
    )
    .await;
    let original = std::fs::read(&db).unwrap();

    let err = oxiscale::serve::start(serving(&dir, &db))
        .await
        .err()
        .expect("a broken headscale database stops the server");
    let message = format!("{err:#}");
    assert!(
        message.contains("headscale's database and could not be taken over")
            && message.contains("half-migrated")
            && message.contains("nodes.tags"),
        "{message}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), original, "left as it was");
    assert_eq!(
        backups_of(&db).len(),
        1,
        "and backed up before anything else"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_headscale_s_schema_and_is_taken_over_again() {
    // An oxiscale tailnet: headscale's 0.29 database taken over, then a key of oxiscale's own.
    let dir = temp_dir();
    let db = dir.join("db.sqlite");
    headscale_0_29(&db).await;
    let config = serving(&dir, &db);
    let server = start(&config, &dir).await;
    let own_key = server
        .running()
        .admin
        .create_preauth_key(oxiscale::admin::CreatePreAuthKey {
            user: Some(1),
            reusable: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let before = server.running().admin.list_nodes(None);
    server.running.unwrap().stop().await.unwrap();

    let exported = dir.join("export").join("headscale.sqlite");
    std::fs::create_dir_all(exported.parent().unwrap()).unwrap();
    let summary = export(&config, &exported).await.unwrap();
    println!("{}", summary.to_text());
    assert_eq!(
        (summary.users, summary.nodes, summary.api_keys),
        (2, 3, 2),
        "{summary:?}"
    );
    assert_eq!(summary.preauth_keys, 1, "the bcrypt key; {summary:?}");
    assert_eq!(
        summary.skipped.len(),
        2,
        "the legacy key and oxiscale's own: {:?}",
        summary.skipped
    );
    let own = format!("pre-auth key {} (", own_key.id);
    assert!(
        summary.skipped.iter().any(|s| s.starts_with(&own)),
        "{:?}",
        summary.skipped
    );
    assert!(summary.policy_exported);

    let reference = dir.join("reference.sqlite");
    let schema = std::fs::read_to_string(Path::new(FIXTURES).join("schema-0.29.2.sql")).unwrap();
    database_from_sql(&reference, &schema).await;
    assert_eq!(schema_of(&exported).await, schema_of(&reference).await);
    assert!(
        export(&config, &exported).await.is_err(),
        "an existing file is never overwritten"
    );

    // A fresh oxiscale on the export takes it over: the same tailnet.
    let dir2 = temp_dir();
    let config2 = serving(&dir2, &exported);
    let server = start(&config2, &dir2).await;
    let after = server.running().admin.list_nodes(None);
    let view = |nodes: &[oxiscale::admin::dto::NodeView]| {
        let mut v: Vec<_> = nodes
            .iter()
            .map(|n| {
                (
                    n.id,
                    n.given_name.clone(),
                    n.ip_addresses.clone(),
                    n.node_key.clone(),
                    n.machine_key.clone(),
                    n.tags.clone(),
                    n.user.as_ref().map(|u| u.name.clone()),
                    n.approved_routes.clone(),
                    n.expiry.clone(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(view(&after), view(&before));
    let policy = server.running().admin.get_policy().await.policy.unwrap();
    assert!(policy.contains("// newest"), "{policy}");
    let hs_key = format!("hskey-auth-{HS_AUTH_PREFIX}-{}", secret64('a'));
    let mut tagged = TestNode::connect(&server.url, "tagged").await;
    let reg = tagged.register(Some(&hs_key)).await;
    assert_eq!(reg["MachineAuthorized"], true, "{reg}");
    server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&dir2).ok();
}
