//! Upgrades and restores that cannot lose data: `oxiscale backup` / `restore` with the
//! binary, a database kept before its migration, and one from a newer oxiscale refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{TestNode, TestServer};
use oxiscale::store::Store;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oxiscale-backup-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `oxiscale <args>` against the server whose data directory is `data`.
async fn oxiscale(data: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oxiscale"));
    command.args(args).env("OXISCALE_DATA_DIR", data);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Records a migration this oxiscale does not know, as a newer one would have.
async fn mark_newer(db: &Path) {
    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(db))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

/// The copies of the database kept before a migration (its journal files come and go).
fn migration_copies(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".before-migration-"))
        .collect()
}

async fn users_and_nodes(db: &Path) -> (Vec<String>, usize) {
    let store = Store::open_sqlite(db, true).await.unwrap();
    let loaded = store.load().await.unwrap();
    store.close().await;
    (
        loaded.users.into_iter().map(|u| u.name).collect(),
        loaded.nodes.len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_brings_back_the_tailnet_and_its_keys() {
    let server = TestServer::start().await;
    let data = server.dir.clone();
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    TestNode::connect(&server.url, "laptop")
        .await
        .register(Some(&key))
        .await;
    let noise = std::fs::read(data.join("noise_private.key")).unwrap();

    // Taken while the server runs.
    let backup = temp_dir().join("b");
    let out = oxiscale(
        &data,
        &["backup", "--to", backup.to_str().unwrap(), "-o", "json"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["files"][0], "db.sqlite", "{manifest}");
    assert!(manifest["files"].to_string().contains("noise_private.key"));
    let again = oxiscale(&data, &["backup", "--to", backup.to_str().unwrap()]).await;
    assert!(
        !again.status.success(),
        "a backup never writes into a full directory"
    );

    // A restore waits until the server is stopped.
    let refused = oxiscale(&data, &["restore", "--from", backup.to_str().unwrap()]).await;
    assert!(
        !refused.status.success() && stderr(&refused).contains("running"),
        "{}",
        stderr(&refused)
    );
    server.running.unwrap().stop().await.unwrap();

    // The data is lost; the backup brings it back, and keeps what it replaced.
    std::fs::remove_file(data.join("db.sqlite")).unwrap();
    std::fs::remove_file(data.join("noise_private.key")).unwrap();
    std::fs::write(data.join("db.sqlite"), b"whatever was there").unwrap();
    let out = oxiscale(&data, &["restore", "--from", backup.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        users_and_nodes(&data.join("db.sqlite")).await,
        (vec!["alice".to_owned()], 1)
    );
    assert_eq!(
        std::fs::read(data.join("noise_private.key")).unwrap(),
        noise
    );
    let kept: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("db.sqlite.before-restore-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read(data.join(&kept[0])).unwrap(),
        b"whatever was there"
    );
    std::fs::remove_dir_all(&data).ok();
    std::fs::remove_dir_all(backup.parent().unwrap()).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_newer_backup_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let data = server.dir.clone();
    server.user("alice").await;
    let backup = temp_dir().join("b");
    let out = oxiscale(&data, &["backup", "--to", backup.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    server.running.unwrap().stop().await.unwrap();
    let before = std::fs::read(data.join("db.sqlite")).unwrap();

    let good = std::fs::read(backup.join("db.sqlite")).unwrap();
    mark_newer(&backup.join("db.sqlite")).await;
    let out = oxiscale(&data, &["restore", "--from", backup.to_str().unwrap()]).await;
    assert!(
        !out.status.success() && stderr(&out).contains("newer oxiscale"),
        "{}",
        stderr(&out)
    );
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[100..middle].fill(0xA5);
    std::fs::write(backup.join("db.sqlite"), damaged).unwrap();
    let out = oxiscale(&data, &["restore", "--from", backup.to_str().unwrap()]).await;
    assert!(!out.status.success(), "a damaged backup is refused");
    assert_eq!(std::fs::read(data.join("db.sqlite")).unwrap(), before);
    std::fs::remove_dir_all(&data).ok();
    std::fs::remove_dir_all(backup.parent().unwrap()).ok();
}

#[tokio::test]
async fn a_database_is_kept_before_its_migration_and_one_from_a_newer_oxiscale_is_refused() {
    let dir = temp_dir();
    let db = dir.join("db.sqlite");
    // A database of an older oxiscale: only the first three migrations.
    let old = dir.join("old-migrations");
    std::fs::create_dir_all(&old).unwrap();
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    let mut files: Vec<_> = std::fs::read_dir(&all)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files[..3] {
        std::fs::copy(f, old.join(f.file_name().unwrap())).unwrap();
    }
    let mut conn = SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO users (id, name, created_at) VALUES (1, 'alice', 0)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let store = Store::open_sqlite(&db, true).await.unwrap();
    store.close().await;
    let kept = migration_copies(&dir);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        Store::check_restorable(&kept[0]).await.unwrap(),
        3,
        "the copy is the database as it was"
    );
    assert_eq!(users_and_nodes(&db).await, (vec!["alice".to_owned()], 0));
    Store::open_sqlite(&db, true).await.unwrap().close().await;
    assert_eq!(
        migration_copies(&dir).len(),
        1,
        "an up-to-date database is not copied"
    );

    mark_newer(&db).await;
    let before = std::fs::read(&db).unwrap();
    let err = Store::open_sqlite(&db, true)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("written by a newer oxiscale") && err.contains("99990101000000"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "left as it is");
    std::fs::remove_dir_all(&dir).ok();
}
