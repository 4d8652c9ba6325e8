//! `oxiscale import headscale`: take over a headscale SQLite database (0.23 on).
//!
//! Runs offline, with both servers stopped. The headscale file is never written: it is
//! copied to `<file>.backup-<timestamp>` first, and read from a private working copy (a
//! database in WAL mode is written to even by a reader that replays its log). Everything is
//! checked before anything is written to oxiscale's database, and the write is one
//! transaction: the import lands whole or not at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use oxiscale_tailcfg::{DiscoPublic, Hostinfo, MachinePublic, NodePublic};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Config, PolicyMode};
use crate::files::{kept_name, timestamp, with_suffix};
use crate::store::Store;
use crate::tailnet::effects::DbOp;
use crate::tailnet::model::{
    ApiKey, KeyHash, Node, PreAuthKey, ProviderIdentity, RegisterMethod, User,
};
use crate::tailnet::secret;

/// What the command was asked to do.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// headscale's database file.
    pub from: PathBuf,
    /// headscale's Noise private key, to keep clients connected without a new login.
    pub noise_key: Option<PathBuf>,
    /// Replace a tailnet oxiscale's database already holds.
    pub force: bool,
}

/// What was carried over, and what was not and why.
#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    /// The headscale release the schema matches (the newest migration recorded).
    pub headscale_version: String,
    pub backup: PathBuf,
    pub database: PathBuf,
    pub users: usize,
    pub nodes: usize,
    pub preauth_keys: usize,
    pub api_keys: usize,
    /// Whether the newest policy went into oxiscale's database.
    pub policy_imported: bool,
    pub noise_key: String,
    pub skipped: Vec<String>,
    pub notes: Vec<String>,
}

impl ImportSummary {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "imported headscale {} database into {}",
            self.headscale_version,
            self.database.display()
        );
        let _ = writeln!(
            out,
            "  backup of the headscale file: {}",
            self.backup.display()
        );
        let _ = writeln!(
            out,
            "  users: {}, nodes: {}, pre-auth keys: {}, API keys: {}, policy: {}",
            self.users,
            self.nodes,
            self.preauth_keys,
            self.api_keys,
            if self.policy_imported {
                "imported"
            } else {
                "not imported"
            }
        );
        let _ = writeln!(out, "  noise key: {}", self.noise_key);
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
pub enum ImportError {
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("reading the headscale database: {0}")]
    Read(#[from] sqlx::Error),
    #[error("oxiscale's database: {0}")]
    Store(#[from] crate::store::StoreError),
}

fn refused(msg: impl Into<String>) -> ImportError {
    ImportError::Refused(msg.into())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImportError {
    let what = what.into();
    move |source| ImportError::Io { what, source }
}

mod rows;
mod schema;
mod takeover;

#[cfg(test)]
pub(crate) use rows::parse_time;
use rows::*;
use schema::*;
pub use takeover::take_over_at_start;

/// The headscale release a migration id belongs to, if the import knows it.
#[cfg(test)]
pub(crate) fn release_of(id: &str) -> Option<&'static str> {
    MIGRATIONS
        .iter()
        .find(|(known, _)| *known == id)
        .map(|(_, release)| *release)
}

/// Runs the whole import; see the module documentation.
pub async fn import(config: &Config, opts: &ImportOptions) -> Result<ImportSummary, ImportError> {
    let from = &opts.from;
    let meta = std::fs::metadata(from).map_err(io(format!("{}", from.display())))?;
    if !meta.is_file() {
        return Err(refused(format!("{} is not a file", from.display())));
    }
    refuse_if_running(config)?;

    // The backup comes first, before the file is even opened.
    let backup = kept_name(from, "backup");
    copy_with_journal(from, &backup)?;

    let work_dir = std::env::temp_dir().join(format!(
        "oxiscale-import-{}-{}",
        rand::random::<u32>(),
        timestamp()
    ));
    std::fs::create_dir_all(&work_dir).map_err(io("creating a working directory"))?;
    let result = import_from_copy(config, opts, from, &backup, &work_dir).await;
    std::fs::remove_dir_all(&work_dir).ok();
    result
}

async fn import_from_copy(
    config: &Config,
    opts: &ImportOptions,
    from: &Path,
    backup: &Path,
    work_dir: &Path,
) -> Result<ImportSummary, ImportError> {
    let header = {
        use std::io::Read;
        let mut f = std::fs::File::open(from).map_err(io(format!("{}", from.display())))?;
        let mut buf = [0u8; 16];
        let n = f
            .read(&mut buf)
            .map_err(io(format!("{}", from.display())))?;
        buf[..n].to_vec()
    };
    if header != SQLITE_HEADER {
        return Err(refused(format!(
            "{} is not a SQLite database (its first bytes are not \"SQLite format 3\"); \
             nothing was imported",
            from.display()
        )));
    }
    let work = work_dir.join("headscale.sqlite");
    copy_with_journal(from, &work)?;

    let mut conn = SqliteConnectOptions::new()
        .filename(&work)
        .journal_mode(SqliteJournalMode::Delete)
        .foreign_keys(false)
        .busy_timeout(Duration::from_secs(5))
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|e| {
            refused(format!(
                "{} cannot be opened as a SQLite database: {e}",
                from.display()
            ))
        })?;
    let result = read_and_write(config, opts, from, backup, &mut conn).await;
    conn.close().await.ok();
    result
}

async fn read_and_write(
    config: &Config,
    opts: &ImportOptions,
    from: &Path,
    backup: &Path,
    conn: &mut SqliteConnection,
) -> Result<ImportSummary, ImportError> {
    let damaged = |e: sqlx::Error| {
        refused(format!(
            "{} is damaged: SQLite cannot read it ({e}); nothing was imported",
            from.display()
        ))
    };
    let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut *conn)
        .await
        .map_err(damaged)?;
    if check != ["ok"] {
        return Err(refused(format!(
            "{} is damaged: PRAGMA integrity_check reports: {}; nothing was imported",
            from.display(),
            check.join("; ")
        )));
    }
    let schema = read_schema(conn).await.map_err(damaged)?;
    let version = check_schema(&schema, from)?;

    let mut summary = ImportSummary {
        headscale_version: version,
        backup: backup.to_owned(),
        database: config.sqlite_path(),
        users: 0,
        nodes: 0,
        preauth_keys: 0,
        api_keys: 0,
        policy_imported: false,
        noise_key: String::new(),
        skipped: Vec::new(),
        notes: Vec::new(),
    };
    if let Ok(v) = sqlx::query_scalar::<_, String>(
        "SELECT CAST(version AS TEXT) FROM database_versions WHERE id = 1",
    )
    .fetch_one(&mut *conn)
    .await
    {
        summary.headscale_version = format!("{} ({v})", summary.headscale_version);
    }
    let fk: Vec<SqliteRow> = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await?;
    if !fk.is_empty() {
        summary.notes.push(format!(
            "the headscale database has {} rows whose references point nowhere (PRAGMA \
             foreign_key_check); such rows are skipped below",
            fk.len()
        ));
    }

    let mut ops = Vec::new();
    let users = read_users(
        conn,
        &schema,
        config.oidc.issuer.as_deref(),
        &mut summary,
        &mut ops,
    )
    .await?;
    let keys = read_preauth_keys(conn, &schema, &users, &mut summary, &mut ops).await?;
    read_nodes(conn, &schema, &users, &keys, &mut summary, &mut ops).await?;
    read_api_keys(conn, &schema, &mut summary, &mut ops).await?;
    let policy = if schema.has_table("policies") {
        let q = schema.select("policies", &[("id", "INTEGER"), ("data", "TEXT")]);
        sqlx::query(&q)
            .fetch_all(&mut *conn)
            .await?
            .last()
            .and_then(|r| r.get::<Option<String>, _>("data"))
            .filter(|d| !d.trim().is_empty())
    } else {
        None
    };

    // Everything is read and checked: now oxiscale's side.
    let store = Store::open_sqlite(
        &config.sqlite_path(),
        config.database.sqlite.write_ahead_log,
    )
    .await?;
    let (has_users, has_nodes) = store.tailnet_counts().await?;
    if (has_users > 0 || has_nodes > 0) && !opts.force {
        store.close().await;
        return Err(refused(format!(
            "oxiscale's database {} already has {has_users} users and {has_nodes} nodes; \
             importing would replace them: run again with --force to do that",
            config.sqlite_path().display()
        )));
    }
    if let Some(policy) = policy {
        match config.policy.mode {
            PolicyMode::Database => {
                ops.push(DbOp::PutPolicy(policy));
                summary.policy_imported = true;
            }
            PolicyMode::File => {
                let target = config
                    .sqlite_path()
                    .with_file_name("policy-from-headscale.hujson");
                std::fs::write(&target, &policy).map_err(io(format!("{}", target.display())))?;
                let place = config.policy.path.as_ref().map_or_else(
                    || "the file policy.path names (it is unset now)".to_owned(),
                    |p| p.display().to_string(),
                );
                summary.notes.push(format!(
                    "policy.mode is file, so headscale's newest policy was not put in the \
                     database: it is saved as {}; move it to {place}, or set policy.mode: \
                     database and run `oxiscale policy set --file {}` with the server running",
                    target.display(),
                    target.display()
                ));
            }
        }
    }
    let result = store.replace_tailnet(&ops).await;
    store.close().await;
    result?;
    // It holds node keys and key hashes: private, as `serve` would make it.
    for suffix in ["", "-wal", "-shm"] {
        let file = with_suffix(&config.sqlite_path(), suffix);
        if file.is_file() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).ok();
        }
    }

    summary.noise_key = carry_noise_key(config, opts)?;
    Ok(summary)
}

fn refuse_if_running(config: &Config) -> Result<(), ImportError> {
    let socket = config.socket_path();
    if crate::files::server_answers(&socket) {
        return Err(refused(format!(
            "oxiscale is running (its socket {} answers); stop it before importing",
            socket.display()
        )));
    }
    Ok(())
}

/// Copies a database file and, when there is one, its write-ahead log beside it.
fn copy_with_journal(from: &Path, to: &Path) -> Result<(), ImportError> {
    if to.exists() {
        return Err(refused(format!("{} exists already", to.display())));
    }
    std::fs::copy(from, to).map_err(io(format!(
        "copying {} to {}",
        from.display(),
        to.display()
    )))?;
    let wal = with_suffix(from, "-wal");
    if wal.is_file() {
        std::fs::copy(&wal, with_suffix(to, "-wal"))
            .map_err(io(format!("copying {}", wal.display())))?;
    }
    Ok(())
}

/// Puts headscale's Noise key where oxiscale reads it, so clients keep their sessions.
fn carry_noise_key(config: &Config, opts: &ImportOptions) -> Result<String, ImportError> {
    let target = config.noise_key_path();
    let Some(source) = &opts.noise_key else {
        return Ok(
            if let Some(configured) = &config.noise.private_key_path
                && configured.is_file()
            {
                format!(
                    "noise.private_key_path is {}: used as it is, nothing to copy (if it is \
                     not headscale's key, clients must log in again)",
                    configured.display()
                )
            } else if target.is_file() {
                format!(
                    "{} is used as it is (no --noise-key given); if it is not headscale's key, \
                 clients must log in again",
                    target.display()
                )
            } else {
                format!(
                    "none given: oxiscale makes a new one at {} and clients must log in again; \
                 pass --noise-key /var/lib/headscale/noise_private.key to avoid that",
                    target.display()
                )
            },
        );
    };
    let key = crate::keys::read_key(source).map_err(|e| {
        refused(format!(
            "{e}; the database was imported, the Noise key was not"
        ))
    })?;
    let same_file = match (source.canonicalize(), target.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_file {
        return Ok(format!(
            "{} is headscale's key already (noise.private_key_path points at it): nothing to copy",
            target.display()
        ));
    }
    if target.is_file() {
        if let Ok(existing) = crate::keys::read_key(&target)
            && existing == key
        {
            return Ok(format!(
                "{} holds headscale's key already",
                target.display()
            ));
        }
        let kept = kept_name(&target, "backup");
        std::fs::rename(&target, &kept).map_err(io(format!("{}", target.display())))?;
    }
    crate::keys::write_new_key(&target, &key).map_err(|e| refused(e.to_string()))?;
    Ok(format!(
        "copied from {} to {}",
        source.display(),
        target.display()
    ))
}
