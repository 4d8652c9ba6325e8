//! headscale databases for the takeover tests: made from headscale's own dumps and
//! schema (fixtures/headscale/db), or written here in headscale 0.29's formats.

use std::path::{Path, PathBuf};

use oxiscale::config::Config;
use oxiscale::import::headscale::{ImportError, ImportOptions, ImportSummary, import};
use oxiscale::store::Store;
use oxiscale::tailnet::state::Loaded;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::config_for;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/headscale/db");

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oxiscale-hs-import-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A headscale database made from SQL text (a dump or a schema), as sqlite3 would.
pub async fn database_from_sql(path: &Path, sql: &str) {
    let mut conn = SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

pub async fn fixture_database(dir: &Path, fixture: &str) -> PathBuf {
    let sql = std::fs::read_to_string(Path::new(FIXTURES).join(fixture)).unwrap();
    let path = dir.join("headscale.sqlite");
    database_from_sql(&path, &sql).await;
    path
}

/// oxiscale's configuration: its data directory is `dir/oxiscale`.
pub fn oxiscale_config(dir: &Path) -> Config {
    config_for(&dir.join("oxiscale"))
}

pub async fn run(config: &Config, from: &Path, force: bool) -> Result<ImportSummary, ImportError> {
    import(
        config,
        &ImportOptions {
            from: from.to_owned(),
            noise_key: None,
            force,
        },
    )
    .await
}

pub async fn loaded(config: &Config) -> Loaded {
    let store = Store::open_sqlite(&config.sqlite_path(), true)
        .await
        .unwrap();
    let loaded = store.load().await.unwrap();
    store.close().await;
    loaded
}

pub fn backups_of(file: &Path) -> Vec<PathBuf> {
    let name = format!("{}.backup-", file.file_name().unwrap().to_str().unwrap());
    std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&name))
        .collect()
}

pub const LEGACY_PREAUTH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";
pub const HS_AUTH_PREFIX: &str = "Abcdef012345";
pub const HS_API_PREFIX: &str = "Zyxwvu987654";

pub fn secret64(c: char) -> String {
    let mut s: String = std::iter::repeat_n(c, 60).collect();
    s.push_str("-_9Z");
    s
}

/// A headscale 0.29 database, rows written as headscale writes them.
pub async fn headscale_0_29(path: &Path) {
    let schema = std::fs::read_to_string(Path::new(FIXTURES).join("schema-0.29.2.sql")).unwrap();
    let auth_hash = bcrypt::hash(secret64('a'), 4).unwrap();
    let api_hash = bcrypt::hash(secret64('b'), 4).unwrap();
    let legacy_api_hash = bcrypt::hash("legacysecretlegacysecretlegacyse", 4).unwrap();
    let t = "2025-11-02 10:00:00.123456789+00:00";
    let rows = format!(
        r#"
INSERT INTO migrations VALUES('SCHEMA_INIT'),('202501221827'),('202501311657'),('202502070949'),
  ('202502131714'),('202502171819'),('202505091439'),('202505141324'),('202507021200'),
  ('202510311551'),('202511101554-drop-old-idx'),('202511011637-preauthkey-bcrypt'),
  ('202511122344-remove-newline-index'),('202511131445-node-forced-tags-to-tags'),
  ('202601121700-migrate-hostinfo-request-tags'),('202602201200-clear-tagged-node-user-id'),
  ('202605221435-clear-zero-time-node-expiry'),('202606181200-recover-null-tags-node-user-id');
INSERT INTO database_versions (id, version, updated_at) VALUES (1, 'v0.29.2', '{t}');
INSERT INTO users (id, name, display_name, email, provider_identifier, provider, profile_pic_url, created_at, updated_at)
  VALUES (1, 'alice', 'Alice A', 'alice@example.com', NULL, '', '', '{t}', '{t}'),
         (2, 'bob', 'Bob B', 'bob@example.com', 'https://idp.example.com/realms/home/bob-sub-1', 'oidc',
          'https://idp.example.com/bob.png', '{t}', '{t}');
INSERT INTO users (id, name, created_at, deleted_at) VALUES (3, 'carol', '{t}', '{t}');
INSERT INTO pre_auth_keys (id, key, prefix, hash, user_id, reusable, ephemeral, used, tags, expiration, created_at)
  VALUES (1, '{LEGACY_PREAUTH}', NULL, NULL, 1, true, false, false, NULL, '2099-01-01 00:00:00+00:00', '{t}'),
         (2, '', '{HS_AUTH_PREFIX}', CAST('{auth_hash}' AS BLOB), NULL, true, false, false, '["tag:server"]',
          '2099-01-01 00:00:00+00:00', '{t}');
INSERT INTO api_keys (id, prefix, hash, expiration, last_seen, created_at)
  VALUES (1, '{HS_API_PREFIX}', CAST('{api_hash}' AS BLOB), '2099-01-01 00:00:00+00:00', NULL, '{t}'),
         (2, 'abcdefg', CAST('{legacy_api_hash}' AS BLOB), '2099-01-01 00:00:00+00:00', NULL, '{t}');
INSERT INTO nodes (id, machine_key, node_key, disco_key, endpoints, host_info, ipv4, ipv6, hostname, given_name,
                   user_id, register_method, tags, auth_key_id, last_seen, expiry, approved_routes, created_at, updated_at, deleted_at)
  VALUES
  (1, 'mkey:{k1}', 'nodekey:{k1}', 'discokey:{k1}', '["192.0.2.1:41641"]', '{{"OS":"linux","Hostname":"web-host"}}',
   '100.64.0.1', 'fd7a:115c:a1e0::1', 'web-host', 'web', NULL, 'authkey', '["tag:server"]', 2, '{t}', NULL, '[]', '{t}', '{t}', NULL),
  (2, 'mkey:{k2}', 'nodekey:{k2}', 'discokey:{k2}', '["[2001:db8::2]:41641"]',
   '{{"OS":"linux","Hostname":"router","RoutableIPs":["10.0.0.0/24","0.0.0.0/0","::/0"]}}',
   '100.64.0.2', 'fd7a:115c:a1e0::2', 'router', 'router', 2, 'oidc', 'null', NULL, '{t}',
   '2099-06-01 12:00:00+00:00', '["10.0.0.0/24","0.0.0.0/0","::/0"]', '{t}', '{t}', NULL),
  (3, 'mkey:{k3}', 'nodekey:{k3}', 'discokey:{k3}', NULL, NULL,
   '100.64.0.3', NULL, 'gone', 'gone', 1, 'cli', '', NULL, NULL, NULL, NULL, '{t}', '{t}', '{t}'),
  (4, 'mkey:{k4}', 'nodekey:{k4}', '', '[]', '{{}}',
   '100.64.0.4', 'fd7a:115c:a1e0::4', 'laptop', 'laptop', 1, 'cli', '[]', NULL, NULL, '0001-01-01 00:00:00+00:00', NULL, '{t}', '{t}', NULL);
INSERT INTO policies (id, data, created_at, updated_at) VALUES
  (1, '{{"acls": []}}', '{t}', '{t}'),
  (2, '// newest
{{"tagOwners": {{"tag:server": ["alice@"]}},
  "acls": [{{"action": "accept", "src": ["*"], "dst": ["*:*"]}}]}}', '{t}', '{t}');
"#,
        k1 = "11".repeat(32),
        k2 = "22".repeat(32),
        k3 = "33".repeat(32),
        k4 = "44".repeat(32),
    );
    database_from_sql(path, &format!("{schema}\n{rows}")).await;
}
