//! `oxiscale export headscale`: the way back. Writes oxiscale's tailnet into a new SQLite
//! database in headscale 0.29.2's schema, which headscale 0.29 (or oxiscale, taking it
//! over again) opens as its own.
//!
//! Runs offline, like the import. The target must not exist; the database is written to
//! `<target>.partial` and renamed into place only when it is whole.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection, Executor, SqliteConnection};
use time::OffsetDateTime;

use crate::config::{Config, PolicyMode};
use crate::files::{server_answers, with_suffix};
use crate::store::Store;
use crate::tailnet::model::{KeyHash, Node, RegisterMethod, User};

/// headscale 0.29.2's schema, as headscale checks it at start (`fixtures/headscale/db`).
const SCHEMA: &str = include_str!("../../../fixtures/headscale/db/schema-0.29.2.sql");

/// The migration ids a database created by headscale 0.29.2 records: the schema above
/// stands for every migration before 202501221827, which then counts as applied.
const MIGRATIONS: &[&str] = &[
    "SCHEMA_INIT",
    "202501221827",
    "202501311657",
    "202502070949",
    "202502131714",
    "202502171819",
    "202505091439",
    "202505141324",
    "202507021200",
    "202510311551",
    "202511101554-drop-old-idx",
    "202511011637-preauthkey-bcrypt",
    "202511122344-remove-newline-index",
    "202511131445-node-forced-tags-to-tags",
    "202601121700-migrate-hostinfo-request-tags",
    "202602201200-clear-tagged-node-user-id",
    "202605221435-clear-zero-time-node-expiry",
    "202606181200-recover-null-tags-node-user-id",
];

const HEADSCALE_VERSION: &str = "v0.29.2";

/// What was written, and what could not be and why.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub database: PathBuf,
    pub headscale_version: &'static str,
    pub users: usize,
    pub nodes: usize,
    pub preauth_keys: usize,
    pub api_keys: usize,
    pub policy_exported: bool,
    pub skipped: Vec<String>,
    pub notes: Vec<String>,
}

impl ExportSummary {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "exported the tailnet to {} (headscale {} schema)",
            self.database.display(),
            self.headscale_version
        );
        let _ = writeln!(
            out,
            "  users: {}, nodes: {}, pre-auth keys: {}, API keys: {}, policy: {}",
            self.users,
            self.nodes,
            self.preauth_keys,
            self.api_keys,
            if self.policy_exported {
                "exported"
            } else {
                "not exported"
            }
        );
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "skipped ({}):", self.skipped.len());
            for s in &self.skipped {
                let _ = writeln!(out, "  - {s}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("writing the headscale database: {0}")]
    Write(#[from] sqlx::Error),
    #[error("oxiscale's database: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Writes the tailnet in oxiscale's configured database to `to`.
pub async fn export(config: &Config, to: &Path) -> Result<ExportSummary, ExportError> {
    if server_answers(&config.socket_path()) {
        return Err(ExportError::Refused(format!(
            "oxiscale is running (its socket {} answers); stop it before exporting",
            config.socket_path().display()
        )));
    }
    if to.exists() {
        return Err(ExportError::Refused(format!(
            "{} exists already; the export writes a new file and never overwrites one",
            to.display()
        )));
    }
    let source = config.sqlite_path();
    if !source.is_file() {
        return Err(ExportError::Refused(format!(
            "oxiscale's database {} does not exist: there is nothing to export",
            source.display()
        )));
    }
    let store = Store::open_sqlite(&source, config.database.sqlite.write_ahead_log).await?;
    let loaded = store.load().await;
    let policy = match config.policy.mode {
        PolicyMode::Database => store.latest_policy().await,
        PolicyMode::File => Ok(None),
    };
    store.close().await;
    let (loaded, policy) = (loaded?, policy?);

    let partial = with_suffix(to, ".partial");
    if partial.exists() {
        std::fs::remove_file(&partial).map_err(|source| ExportError::Io {
            what: format!(
                "removing an earlier unfinished export {}",
                partial.display()
            ),
            source,
        })?;
    }
    let mut summary = ExportSummary {
        database: to.to_owned(),
        headscale_version: HEADSCALE_VERSION,
        users: 0,
        nodes: 0,
        preauth_keys: 0,
        api_keys: 0,
        policy_exported: false,
        skipped: Vec::new(),
        notes: Vec::new(),
    };
    if config.policy.mode == PolicyMode::File {
        summary.notes.push(match &config.policy.path {
            Some(p) => format!(
                "policy.mode is file: the policy stays in {}; point headscale's policy.path at it",
                p.display()
            ),
            None => "policy.mode is file and no policy file is set: there is no policy".into(),
        });
    }
    let result = write(&partial, &loaded, policy.as_deref(), &mut summary).await;
    if let Err(e) = result {
        std::fs::remove_file(&partial).ok();
        return Err(e);
    }
    std::fs::rename(&partial, to).map_err(|source| ExportError::Io {
        what: format!("renaming {} to {}", partial.display(), to.display()),
        source,
    })?;
    Ok(summary)
}

async fn write(
    path: &Path,
    loaded: &crate::tailnet::state::Loaded,
    policy: Option<&str>,
    summary: &mut ExportSummary,
) -> Result<(), ExportError> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Delete)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        .disable_statement_logging()
        .connect()
        .await?;
    // Node keys and key hashes: as private as oxiscale's own database.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| ExportError::Io {
                what: format!("making {} private", path.display()),
                source,
            },
        )?;
    }
    let mut tx = conn.begin().await?;
    tx.execute(SCHEMA).await?;
    for id in MIGRATIONS {
        sqlx::query("INSERT INTO migrations (id) VALUES (?)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let now = headscale_time(OffsetDateTime::now_utc());
    sqlx::query("INSERT INTO database_versions (id, version, updated_at) VALUES (1, ?, ?)")
        .bind(HEADSCALE_VERSION)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    for user in &loaded.users {
        write_user(&mut tx, user).await?;
        summary.users += 1;
    }
    let mut exported_keys = std::collections::HashSet::new();
    for key in &loaded.preauth_keys {
        let KeyHash::Bcrypt { hash, .. } = &key.hash else {
            summary.skipped.push(format!(
                "pre-auth key {} ({}): headscale checks keys with bcrypt and oxiscale keeps \
                 only a SHA-256 of this one; create a new key in headscale",
                key.id, key.prefix
            ));
            continue;
        };
        sqlx::query(
            "INSERT INTO pre_auth_keys (id, key, prefix, hash, user_id, reusable, ephemeral,
                                        used, tags, expiration, created_at)
             VALUES (?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(key.id as i64)
        .bind(&key.prefix)
        .bind(hash.as_bytes())
        .bind(key.user.map(|u| u as i64))
        .bind(key.reusable)
        .bind(key.ephemeral)
        .bind(key.used)
        .bind(json_tags(&key.tags))
        .bind(headscale_time(key.expiration))
        .bind(headscale_time(key.created))
        .execute(&mut *tx)
        .await?;
        exported_keys.insert(key.id);
        summary.preauth_keys += 1;
    }
    let mut unlinked = 0;
    for node in &loaded.nodes {
        let auth_key = node.auth_key_id.filter(|k| exported_keys.contains(k));
        if node.auth_key_id.is_some() && auth_key.is_none() {
            unlinked += 1;
        }
        write_node(&mut tx, node, auth_key).await?;
        summary.nodes += 1;
    }
    if unlinked > 0 {
        summary.notes.push(format!(
            "{unlinked} nodes registered with a key that was not exported lose the link to it \
             (headscale uses it only to show which key a node used)"
        ));
    }
    if loaded.nodes.iter().any(|n| !n.approved) {
        summary.notes.push(
            "nodes waiting for approval are exported as members: headscale has no device \
             approval"
                .into(),
        );
    }
    for key in &loaded.api_keys {
        let KeyHash::Bcrypt { hash, .. } = &key.hash else {
            summary.skipped.push(format!(
                "API key {} ({}): oxiscale keeps only a SHA-256 of it and headscale checks \
                 bcrypt; create a new one with `headscale apikeys create`",
                key.id, key.prefix
            ));
            continue;
        };
        sqlx::query(
            "INSERT INTO api_keys (id, prefix, hash, expiration, last_seen, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(key.id as i64)
        .bind(&key.prefix)
        .bind(hash.as_bytes())
        .bind(headscale_time(key.expiration))
        .bind(key.last_seen.map(headscale_time))
        .bind(headscale_time(key.created))
        .execute(&mut *tx)
        .await?;
        summary.api_keys += 1;
    }
    if let Some(policy) = policy {
        sqlx::query("INSERT INTO policies (data, created_at, updated_at) VALUES (?, ?, ?)")
            .bind(policy)
            .bind(&now)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        summary.policy_exported = true;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

async fn write_user(conn: &mut SqliteConnection, user: &User) -> Result<(), sqlx::Error> {
    // headscale keys a provider's user by "<issuer>/<subject>", the issuer without its
    // trailing "/" (the import splits it the same way).
    let identifier = user
        .provider
        .as_ref()
        .map(|p| format!("{}/{}", p.issuer.trim_end_matches('/'), p.subject));
    let created = headscale_time(user.created);
    sqlx::query(
        "INSERT INTO users (id, name, display_name, email, provider_identifier, provider,
                            profile_pic_url, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(user.id as i64)
    .bind(&user.name)
    .bind(&user.display_name)
    .bind(&user.email)
    .bind(&identifier)
    .bind(if identifier.is_some() { "oidc" } else { "" })
    .bind(&user.picture_url)
    .bind(&created)
    .bind(&created)
    .execute(conn)
    .await?;
    Ok(())
}

async fn write_node(
    conn: &mut SqliteConnection,
    node: &Node,
    auth_key: Option<u64>,
) -> Result<(), sqlx::Error> {
    let hostinfo = serde_json::to_string(&node.hostinfo).expect("plain data serialises");
    let endpoints = serde_json::to_string(&node.endpoints).expect("plain data serialises");
    let routes = serde_json::to_string(&node.approved_routes).expect("plain data serialises");
    let disco = if node.disco_key.is_zero() {
        String::new()
    } else {
        node.disco_key.to_string()
    };
    let created = headscale_time(node.created);
    sqlx::query(
        "INSERT INTO nodes (id, machine_key, node_key, disco_key, endpoints, host_info, ipv4,
                            ipv6, hostname, given_name, user_id, register_method, tags,
                            auth_key_id, last_seen, expiry, approved_routes, created_at,
                            updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(node.id as i64)
    .bind(node.machine_key.to_string())
    .bind(node.node_key.to_string())
    .bind(disco)
    .bind(endpoints)
    .bind(hostinfo)
    .bind(node.ipv4.map(|a| a.to_string()))
    .bind(node.ipv6.map(|a| a.to_string()))
    .bind(&node.hostname)
    .bind(&node.given_name)
    // A tagged node belongs to its tags; headscale 0.29 keeps its user_id NULL.
    .bind(node.user.map(|u| u as i64))
    .bind(register_method(node.register_method))
    .bind(json_tags(&node.tags))
    .bind(auth_key.map(|k| k as i64))
    .bind(node.last_seen.map(headscale_time))
    .bind(node.expiry.map(headscale_time))
    .bind(routes)
    .bind(&created)
    .bind(&created)
    .execute(conn)
    .await?;
    Ok(())
}

fn register_method(m: RegisterMethod) -> &'static str {
    match m {
        RegisterMethod::AuthKey => "authkey",
        RegisterMethod::Interactive => "oidc",
        RegisterMethod::Cli => "cli",
    }
}

fn json_tags(tags: &[String]) -> String {
    serde_json::to_string(tags).expect("plain data serialises")
}

/// A time as headscale's SQLite driver writes it: `2006-01-02 15:04:05.999999999-07:00`.
fn headscale_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_headscale_writes_them_and_read_back() {
        let t = time::macros::datetime!(2026-12-05 03:04:05.000000123 UTC);
        let text = headscale_time(t);
        assert_eq!(text, "2026-12-05 03:04:05.000000123+00:00");
        assert_eq!(crate::import::headscale::parse_time(&text), Some(t));
    }

    #[test]
    fn the_recorded_migrations_are_the_import_s_0_29_ones() {
        // The import must recognise an export as a whole 0.29 database.
        for id in &MIGRATIONS[1..] {
            assert!(
                crate::import::headscale::release_of(id).is_some(),
                "{id} is not a migration the import knows"
            );
        }
    }
}
