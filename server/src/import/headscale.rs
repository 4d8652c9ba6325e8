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

/// Migration ids in the order headscale's releases added them, with the release.
const MIGRATIONS: &[(&str, &str)] = &[
    ("202312101416", "0.23"),
    ("202312101430", "0.23"),
    ("202402151347", "0.23"),
    ("2024041121742", "0.23"),
    ("202406021630", "0.23"),
    ("202409271400", "0.24"),
    ("202407191627", "0.24"),
    ("202408181235", "0.24"),
    ("202501221827", "0.24.1-0.24.2"),
    ("202501311657", "0.24.3-0.25.1"),
    ("202502070949", "0.24.3-0.25.1"),
    ("202502131714", "0.26"),
    ("202502171819", "0.26"),
    ("202505091439", "0.26"),
    ("202505141324", "0.26"),
    ("202507021200", "0.27"),
    ("202510311551", "0.27.1"),
    ("202511101554-drop-old-idx", "0.27.1"),
    ("202511011637-preauthkey-bcrypt", "0.28"),
    ("202511122344-remove-newline-index", "0.28"),
    ("202511131445-node-forced-tags-to-tags", "0.28"),
    ("202601121700-migrate-hostinfo-request-tags", "0.28"),
    ("202602201200-clear-tagged-node-user-id", "0.29"),
    ("202605221435-clear-zero-time-node-expiry", "0.29"),
    ("202606181200-recover-null-tags-node-user-id", "0.29.1+"),
    ("202606191500-api-key-user-id", "main"),
    ("202606191501-pre-auth-key-description", "main"),
    ("202606201200-pre-auth-key-revoked", "main"),
    ("202606211200-oauth-clients-and-tokens", "main"),
];

const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// The tables and columns of the headscale database, as found.
struct Schema {
    tables: HashMap<String, HashSet<String>>,
    migrations: HashSet<String>,
}

impl Schema {
    fn has_table(&self, t: &str) -> bool {
        self.tables.contains_key(t)
    }

    fn has(&self, t: &str, c: &str) -> bool {
        self.tables.get(t).is_some_and(|cols| cols.contains(c))
    }

    /// Whether headscale applied `id` (a fresh 0.28+ database records `SCHEMA_INIT` and
    /// only the ids from 202501221827 on, so earlier ones count as applied then).
    fn applied(&self, id: &str) -> bool {
        self.migrations.contains(id)
            || (self.migrations.contains("SCHEMA_INIT") && id < "202501221827")
    }

    /// `CAST(col AS kind) AS col`, or `NULL AS col` where the column does not exist.
    fn select(&self, table: &str, cols: &[(&str, &str)]) -> String {
        let list: Vec<String> = cols
            .iter()
            .map(|(c, kind)| {
                if self.has(table, c) {
                    format!("CAST(\"{c}\" AS {kind}) AS \"{c}\"")
                } else {
                    format!("NULL AS \"{c}\"")
                }
            })
            .collect();
        let mut q = format!("SELECT {} FROM \"{table}\"", list.join(", "));
        if self.has(table, "deleted_at") {
            q.push_str(" WHERE deleted_at IS NULL");
        }
        q.push_str(" ORDER BY id");
        q
    }
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
    let stamp = timestamp();
    let mut backup = with_suffix(from, &format!(".backup-{stamp}"));
    for n in 2.. {
        if !backup.exists() {
            break;
        }
        backup = with_suffix(from, &format!(".backup-{stamp}-{n}"));
    }
    copy_with_journal(from, &backup)?;

    let work_dir =
        std::env::temp_dir().join(format!("oxiscale-import-{}-{stamp}", rand::random::<u32>()));
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
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(refused(format!(
            "oxiscale is running (its socket {} answers); stop it before importing",
            socket.display()
        )));
    }
    Ok(())
}

fn timestamp() -> String {
    let now = OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
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

async fn read_schema(conn: &mut SqliteConnection) -> Result<Schema, sqlx::Error> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut *conn)
            .await?;
    let mut tables = HashMap::new();
    for name in names {
        let cols: Vec<String> = sqlx::query(&format!(
            "PRAGMA table_info(\"{}\")",
            name.replace('"', "\"\"")
        ))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.get::<String, _>("name"))
        .collect();
        tables.insert(name, cols.into_iter().collect());
    }
    let migrations = if tables.contains_key("migrations") {
        sqlx::query_scalar::<_, String>("SELECT CAST(id AS TEXT) FROM migrations")
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect()
    } else {
        HashSet::new()
    };
    Ok(Schema { tables, migrations })
}

/// The release the schema matches, or why it cannot be imported.
fn check_schema(schema: &Schema, from: &Path) -> Result<String, ImportError> {
    let file = from.display();
    if !schema.has_table("migrations") {
        return Err(refused(format!(
            "{file} is not a headscale database: it has no `migrations` table"
        )));
    }
    let damaged = |what: String| {
        refused(format!(
            "{file} is half-migrated or damaged ({what}); nothing was imported. Start the \
             headscale version that wrote it once so that it finishes its migrations, or \
             restore a backup"
        ))
    };
    if schema.migrations.is_empty() {
        return Err(damaged(
            "its `migrations` table is empty: headscale never recorded its schema".into(),
        ));
    }
    let fresh = schema.migrations.contains("SCHEMA_INIT");
    if !fresh && !schema.migrations.contains("202406021630") {
        let newest = schema.migrations.iter().max().cloned().unwrap_or_default();
        if newest.as_str() > "202406021630" {
            return Err(damaged(format!(
                "migration {newest} is recorded but 0.23's 202406021630 is not"
            )));
        }
        return Err(refused(format!(
            "{file} is from a headscale older than 0.23 (newest migration recorded: \
             {newest}); upgrade headscale to 0.23 or later, start it once, then import"
        )));
    }
    let version = MIGRATIONS
        .iter()
        .filter(|(id, _)| schema.applied(id))
        .map(|(_, v)| *v)
        .next_back()
        .unwrap_or("0.23");
    for table in ["users", "nodes", "pre_auth_keys", "api_keys"] {
        if !schema.has_table(table) {
            return Err(damaged(format!("required table `{table}` is missing")));
        }
    }
    let mut required: Vec<(&str, &str, Option<&str>)> = vec![
        ("users", "id", None),
        ("users", "name", None),
        ("nodes", "id", None),
        ("nodes", "machine_key", None),
        ("nodes", "node_key", None),
        ("nodes", "disco_key", None),
        ("nodes", "hostname", None),
        ("nodes", "given_name", None),
        ("nodes", "user_id", None),
        ("nodes", "ipv4", Some("202402151347")),
        ("nodes", "ipv6", Some("202402151347")),
        ("pre_auth_keys", "id", None),
        ("pre_auth_keys", "user_id", None),
        ("api_keys", "prefix", None),
        ("api_keys", "hash", None),
        ("users", "provider_identifier", Some("202407191627")),
        ("pre_auth_keys", "tags", Some("202409271400")),
        ("nodes", "approved_routes", Some("202502131714")),
        (
            "pre_auth_keys",
            "prefix",
            Some("202511011637-preauthkey-bcrypt"),
        ),
        (
            "pre_auth_keys",
            "hash",
            Some("202511011637-preauthkey-bcrypt"),
        ),
        (
            "nodes",
            "tags",
            Some("202511131445-node-forced-tags-to-tags"),
        ),
    ];
    if !schema.applied("202511131445-node-forced-tags-to-tags") {
        required.push(("nodes", "forced_tags", None));
    }
    for (table, col, migration) in required {
        if migration.is_some_and(|m| !schema.applied(m)) {
            continue;
        }
        if !schema.has(table, col) {
            return Err(damaged(match migration {
                Some(m) => format!("migration {m} is recorded but column {table}.{col} is missing"),
                None => format!("required column {table}.{col} is missing"),
            }));
        }
    }
    if !schema.applied("202502131714") && !schema.has_table("routes") {
        return Err(damaged(
            "the `routes` table is missing and nodes.approved_routes was never added".into(),
        ));
    }
    Ok(version.to_owned())
}

fn text(r: &SqliteRow, col: &str) -> Option<String> {
    r.try_get::<Option<String>, _>(col).ok().flatten()
}

fn int(r: &SqliteRow, col: &str) -> Option<i64> {
    r.try_get::<Option<i64>, _>(col).ok().flatten()
}

fn flag(r: &SqliteRow, col: &str) -> bool {
    matches!(
        text(r, col).as_deref().map(str::trim),
        Some("1" | "true" | "TRUE" | "t" | "1.0")
    )
}

/// headscale's datetimes: `2023-04-09 22:34:28.624250346+00:00` (the driver's text form),
/// RFC 3339, or unix seconds.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return OffsetDateTime::from_unix_timestamp(secs).ok();
    }
    let mut t = s.replacen(' ', "T", 1).replace(' ', "");
    let has_offset = t.ends_with('Z')
        || t.rfind(['+', '-'])
            .is_some_and(|i| i > 10 && t[i..].contains(':'));
    if !has_offset {
        t.push('Z');
    }
    OffsetDateTime::parse(&t, &Rfc3339).ok()
}

/// A time that means something: NULL, empty and the zero time (`0001-01-01`) are none.
fn time_of(r: &SqliteRow, col: &str) -> Option<OffsetDateTime> {
    text(r, col)
        .and_then(|s| parse_time(&s))
        .filter(|t| t.year() >= 1900)
}

/// JSON tags: NULL, '', 'null' and '[]' are untagged.
fn tags_of(raw: Option<String>) -> Result<Vec<String>, String> {
    let raw = raw.unwrap_or_default();
    let raw = raw.trim();
    if raw.is_empty() || raw == "null" {
        return Ok(Vec::new());
    }
    let mut tags: Vec<String> = serde_json::from_str::<Option<Vec<String>>>(raw)
        .map_err(|e| format!("tags {raw:?}: {e}"))?
        .unwrap_or_default();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// headscale's `provider_identifier` back into (issuer, subject). headscale joined them
/// with "/" (newer releases with URL path joining, which drops an issuer's trailing "/"):
/// with the configured issuer known, the issuer is that exact string (trailing "/" and
/// all, as the provider's `iss` claim will say) and the subject is the rest, "/" or not;
/// otherwise the split is at the last "/".
fn split_identifier(id: &str, configured_issuer: Option<&str>) -> Option<ProviderIdentity> {
    if let Some(issuer) = configured_issuer.filter(|i| !i.is_empty()) {
        let base = issuer.trim_end_matches('/');
        if let Some(subject) = id.strip_prefix(base).and_then(|r| r.strip_prefix('/'))
            && !subject.is_empty()
        {
            return Some(ProviderIdentity {
                issuer: issuer.to_owned(),
                subject: subject.to_owned(),
            });
        }
    }
    let (issuer, subject) = id.rsplit_once('/')?;
    (!issuer.is_empty() && !subject.is_empty()).then(|| ProviderIdentity {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
    })
}

async fn read_users(
    conn: &mut SqliteConnection,
    schema: &Schema,
    issuer: Option<&str>,
    summary: &mut ImportSummary,
    ops: &mut Vec<DbOp>,
) -> Result<HashSet<u64>, ImportError> {
    let q = schema.select(
        "users",
        &[
            ("id", "INTEGER"),
            ("name", "TEXT"),
            ("display_name", "TEXT"),
            ("email", "TEXT"),
            ("provider", "TEXT"),
            ("provider_identifier", "TEXT"),
            ("profile_pic_url", "TEXT"),
            ("created_at", "TEXT"),
        ],
    );
    let rows = sqlx::query(&q).fetch_all(&mut *conn).await?;
    let mut names = HashSet::new();
    let mut identities = HashSet::new();
    let mut ids = HashSet::new();
    let mut max_id = 0;
    for r in rows {
        let Some(id) = int(&r, "id").filter(|id| *id > 0) else {
            continue;
        };
        let id = id as u64;
        let mut name = text(&r, "name").unwrap_or_default().trim().to_owned();
        if name.is_empty() {
            name = format!("user-{id}");
        }
        if !names.insert(name.to_lowercase()) {
            let renamed = format!("{name}-{id}");
            summary.notes.push(format!(
                "user {id}: the name {name:?} is taken by another user (headscale allows one \
                 per identity provider); imported as {renamed:?}"
            ));
            names.insert(renamed.to_lowercase());
            name = renamed;
        }
        let provider = match (text(&r, "provider"), text(&r, "provider_identifier")) {
            (_, Some(pid)) if !pid.is_empty() => match split_identifier(&pid, issuer) {
                Some(identity) if identities.insert(identity.clone()) => Some(identity),
                _ => {
                    summary.notes.push(format!(
                        "user {name}: provider identifier {pid:?} is not issuer/subject or \
                         repeats another user's; imported as a local user, without a link to \
                         the identity provider"
                    ));
                    None
                }
            },
            _ => None,
        };
        let valid = name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.@+".contains(c))
            && !name.starts_with(['-', '.']);
        if !valid {
            summary.notes.push(format!(
                "user {id}: the name {name:?} is kept, but oxiscale would not accept it for a \
                 new user (1-63 letters, digits, '-', '_', '.', '@' or '+'); rename it with \
                 `oxiscale users rename`"
            ));
        }
        max_id = max_id.max(id);
        ids.insert(id);
        ops.push(DbOp::PutUser(User {
            id,
            name,
            display_name: text(&r, "display_name").unwrap_or_default(),
            email: text(&r, "email").unwrap_or_default(),
            created: time_of(&r, "created_at").unwrap_or(OffsetDateTime::UNIX_EPOCH),
            provider,
            picture_url: text(&r, "profile_pic_url").unwrap_or_default(),
            provider_groups: Vec::new(),
        }));
    }
    summary.users = ids.len();
    ops.push(DbOp::PutSequence("user", max_id + 1));
    Ok(ids)
}

/// headscale's pre-auth keys: id → (user, ephemeral, imported). A key that could not be
/// imported still tells whose its nodes are.
type Keys = HashMap<u64, (Option<u64>, bool, bool)>;

async fn read_preauth_keys(
    conn: &mut SqliteConnection,
    schema: &Schema,
    users: &HashSet<u64>,
    summary: &mut ImportSummary,
    ops: &mut Vec<DbOp>,
) -> Result<Keys, ImportError> {
    let q = schema.select(
        "pre_auth_keys",
        &[
            ("id", "INTEGER"),
            ("key", "TEXT"),
            ("prefix", "TEXT"),
            ("hash", "BLOB"),
            ("user_id", "INTEGER"),
            ("reusable", "TEXT"),
            ("ephemeral", "TEXT"),
            ("used", "TEXT"),
            ("tags", "TEXT"),
            ("expiration", "TEXT"),
            ("created_at", "TEXT"),
        ],
    );
    let rows = sqlx::query(&q).fetch_all(&mut *conn).await?;
    // Before 0.24, tags lived in their own table.
    let mut acl_tags: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    if !schema.has("pre_auth_keys", "tags") && schema.has_table("pre_auth_key_acl_tags") {
        for r in sqlx::query(
            "SELECT CAST(pre_auth_key_id AS INTEGER) AS k, CAST(tag AS TEXT) AS tag \
             FROM pre_auth_key_acl_tags",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            if let (Some(k), Some(tag)) = (int(&r, "k"), text(&r, "tag")) {
                acl_tags.entry(k as u64).or_default().push(tag);
            }
        }
    }
    let mut keys = Keys::new();
    let mut prefixes = HashSet::new();
    let mut max_id = 0;
    for r in rows {
        let Some(id) = int(&r, "id").map(|v| v as u64) else {
            continue;
        };
        max_id = max_id.max(id);
        let ephemeral = flag(&r, "ephemeral");
        keys.insert(id, (int(&r, "user_id").map(|u| u as u64), ephemeral, false));
        let skip = |why: String| format!("pre-auth key {id}: {why}");
        let legacy = text(&r, "key").filter(|k| !k.is_empty());
        let bcrypt_hash = r
            .try_get::<Option<Vec<u8>>, _>("hash")
            .ok()
            .flatten()
            .and_then(|h| String::from_utf8(h).ok())
            .filter(|h| h.starts_with("$2"));
        let (prefix, hash) = match (legacy, text(&r, "prefix"), bcrypt_hash) {
            (_, Some(prefix), Some(hash)) if !prefix.is_empty() => (prefix, KeyHash::bcrypt(hash)),
            (Some(key), _, _) => match secret::legacy_preauth_prefix(&key) {
                Some(prefix) => (prefix.to_owned(), KeyHash::Sha256(secret::digest(&key))),
                None => {
                    summary
                        .skipped
                        .push(skip("its key is not in a form oxiscale can check".into()));
                    continue;
                }
            },
            _ => {
                summary
                    .skipped
                    .push(skip("it has neither a key nor a prefix and hash".into()));
                continue;
            }
        };
        let tags = match tags_of(text(&r, "tags")) {
            Ok(t) if t.is_empty() => {
                let mut t = acl_tags.remove(&id).unwrap_or_default();
                t.sort();
                t.dedup();
                t
            }
            Ok(t) => t,
            Err(e) => {
                summary.skipped.push(skip(e));
                continue;
            }
        };
        let user = int(&r, "user_id").map(|u| u as u64);
        let user = match user {
            Some(u) if users.contains(&u) => Some(u),
            Some(u) => {
                summary
                    .skipped
                    .push(skip(format!("its user {u} does not exist (deleted)")));
                continue;
            }
            None if tags.is_empty() => {
                summary
                    .skipped
                    .push(skip("it has neither a user nor tags".into()));
                continue;
            }
            None => None,
        };
        if !prefixes.insert(prefix.clone()) {
            summary
                .skipped
                .push(skip(format!("its prefix {prefix} repeats another key's")));
            continue;
        }
        keys.insert(id, (user, ephemeral, true));
        let created = time_of(&r, "created_at").unwrap_or(OffsetDateTime::UNIX_EPOCH);
        ops.push(DbOp::PutPreAuthKey(PreAuthKey {
            id,
            prefix,
            hash,
            // A tagged key's nodes are owned by the tags, as in headscale 0.28+.
            user: if tags.is_empty() { user } else { None },
            reusable: flag(&r, "reusable"),
            ephemeral,
            used: flag(&r, "used"),
            tags,
            // No expiration: never, in practice.
            expiration: time_of(&r, "expiration").unwrap_or(far_future()),
            created,
        }));
    }
    summary.preauth_keys = keys.values().filter(|k| k.2).count();
    ops.push(DbOp::PutSequence("preauth", max_id + 1));
    Ok(keys)
}

fn far_future() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(253_402_300_799).expect("9999-12-31 is a valid time")
}

async fn read_nodes(
    conn: &mut SqliteConnection,
    schema: &Schema,
    users: &HashSet<u64>,
    keys: &Keys,
    summary: &mut ImportSummary,
    ops: &mut Vec<DbOp>,
) -> Result<(), ImportError> {
    let tags_col = if schema.has("nodes", "tags") {
        "tags"
    } else {
        "forced_tags"
    };
    let q = schema.select(
        "nodes",
        &[
            ("id", "INTEGER"),
            ("machine_key", "TEXT"),
            ("node_key", "TEXT"),
            ("disco_key", "TEXT"),
            ("endpoints", "TEXT"),
            ("host_info", "TEXT"),
            ("ipv4", "TEXT"),
            ("ipv6", "TEXT"),
            ("hostname", "TEXT"),
            ("given_name", "TEXT"),
            ("user_id", "INTEGER"),
            ("register_method", "TEXT"),
            (tags_col, "TEXT"),
            ("auth_key_id", "INTEGER"),
            ("last_seen", "TEXT"),
            ("expiry", "TEXT"),
            ("approved_routes", "TEXT"),
            ("created_at", "TEXT"),
        ],
    );
    let rows = sqlx::query(&q).fetch_all(&mut *conn).await?;
    // Before 0.26, approved routes were the enabled rows of the routes table.
    let mut enabled_routes: HashMap<u64, Vec<IpNet>> = HashMap::new();
    if !schema.has("nodes", "approved_routes") && schema.has_table("routes") {
        let deleted = if schema.has("routes", "deleted_at") {
            " AND deleted_at IS NULL"
        } else {
            ""
        };
        let q = format!(
            "SELECT CAST(node_id AS INTEGER) AS node_id, CAST(prefix AS TEXT) AS prefix, \
             CAST(enabled AS TEXT) AS enabled FROM routes WHERE 1=1{deleted} ORDER BY id"
        );
        for r in sqlx::query(&q).fetch_all(&mut *conn).await? {
            if !flag(&r, "enabled") {
                continue;
            }
            if let (Some(node), Some(prefix)) = (int(&r, "node_id"), text(&r, "prefix")) {
                match prefix.parse::<IpNet>() {
                    Ok(p) => enabled_routes.entry(node as u64).or_default().push(p),
                    Err(_) => summary
                        .skipped
                        .push(format!("route {prefix:?} of node {node}: not a prefix")),
                }
            }
        }
    }
    let mut given_names = HashSet::new();
    let mut node_keys = HashSet::new();
    let mut addresses = HashSet::new();
    let mut max_id = 0;
    let mut request_tags = 0;
    for r in rows {
        let Some(id) = int(&r, "id").map(|v| v as u64) else {
            continue;
        };
        max_id = max_id.max(id);
        let label = text(&r, "given_name")
            .or_else(|| text(&r, "hostname"))
            .unwrap_or_default();
        let skip = |why: String| format!("node {id} ({label}): {why}");
        let machine_key = match key_of::<MachinePublic>(text(&r, "machine_key"), "mkey:") {
            Some(k) => k,
            None => {
                summary
                    .skipped
                    .push(skip("its machine key is missing or malformed".into()));
                continue;
            }
        };
        let node_key = match key_of::<NodePublic>(text(&r, "node_key"), "nodekey:") {
            Some(k) if node_keys.insert(k.to_string()) => k,
            Some(_) => {
                summary
                    .skipped
                    .push(skip("its node key repeats another node's".into()));
                continue;
            }
            None => {
                summary
                    .skipped
                    .push(skip("its node key is missing or malformed".into()));
                continue;
            }
        };
        let disco_key = key_of::<DiscoPublic>(text(&r, "disco_key"), "discokey:")
            .unwrap_or(DiscoPublic::from_bytes([0; 32]));
        let tags = match tags_of(text(&r, tags_col)) {
            Ok(t) => t,
            Err(e) => {
                summary.skipped.push(skip(e));
                continue;
            }
        };
        let auth_key_id = int(&r, "auth_key_id")
            .map(|k| k as u64)
            .filter(|k| keys.get(k).is_some_and(|k| k.2));
        let key_owner = int(&r, "auth_key_id")
            .and_then(|k| keys.get(&(k as u64)))
            .and_then(|k| k.0);
        let user = int(&r, "user_id").map(|u| u as u64);
        let user = if !tags.is_empty() {
            None
        } else {
            // headscale 0.29.1 recovers the owner of an untagged node from its key.
            match user.or(key_owner) {
                Some(u) if users.contains(&u) => Some(u),
                Some(u) => {
                    summary
                        .skipped
                        .push(skip(format!("its user {u} does not exist (deleted)")));
                    continue;
                }
                None => {
                    summary
                        .skipped
                        .push(skip("it has neither a user nor tags".into()));
                    continue;
                }
            }
        };
        let ipv4 = match text(&r, "ipv4").filter(|s| !s.is_empty()) {
            Some(s) => match s.parse::<Ipv4Addr>() {
                Ok(a) if addresses.insert(a.to_string()) => Some(a),
                _ => {
                    summary.skipped.push(skip(format!(
                        "its IPv4 address {s:?} is malformed or taken"
                    )));
                    continue;
                }
            },
            None => None,
        };
        let ipv6 = match text(&r, "ipv6").filter(|s| !s.is_empty()) {
            Some(s) => match s.parse::<Ipv6Addr>() {
                Ok(a) if addresses.insert(a.to_string()) => Some(a),
                _ => {
                    summary.skipped.push(skip(format!(
                        "its IPv6 address {s:?} is malformed or taken"
                    )));
                    continue;
                }
            },
            None => None,
        };
        let hostinfo = match text(&r, "host_info").filter(|s| !s.trim().is_empty()) {
            Some(s) => match serde_json::from_str::<Option<Hostinfo>>(&s) {
                Ok(h) => h.unwrap_or_default(),
                Err(e) => {
                    summary.notes.push(format!(
                        "node {id} ({label}): its Hostinfo is not readable ({e}); it starts \
                         empty and the client sends it again when it connects"
                    ));
                    Hostinfo::default()
                }
            },
            None => Hostinfo::default(),
        };
        if !hostinfo.request_tags.is_empty()
            && !schema.applied("202601121700-migrate-hostinfo-request-tags")
        {
            request_tags += 1;
        }
        let endpoints: Vec<String> = text(&r, "endpoints")
            .and_then(|s| serde_json::from_str::<Option<Vec<String>>>(&s).ok())
            .flatten()
            .unwrap_or_default();
        let approved_routes = match text(&r, "approved_routes") {
            Some(s) if schema.has("nodes", "approved_routes") => {
                match serde_json::from_str::<Option<Vec<IpNet>>>(&s) {
                    Ok(r) => r.unwrap_or_default(),
                    Err(e) => {
                        summary
                            .skipped
                            .push(skip(format!("approved routes {s:?}: {e}")));
                        continue;
                    }
                }
            }
            _ => enabled_routes.remove(&id).unwrap_or_default(),
        };
        let hostname = text(&r, "hostname")
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| hostinfo.hostname.clone());
        let mut given_name = text(&r, "given_name")
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| {
                crate::tailnet::names::sanitize_hostname(if hostname.is_empty() {
                    "node"
                } else {
                    &hostname
                })
            });
        if !given_names.insert(given_name.to_lowercase()) {
            let renamed = format!("{given_name}-{id}");
            summary.notes.push(format!(
                "node {id}: the name {given_name:?} repeats another node's; imported as \
                 {renamed:?}"
            ));
            given_names.insert(renamed.to_lowercase());
            given_name = renamed;
        }
        let register_method = match text(&r, "register_method").as_deref() {
            Some("cli") => RegisterMethod::Cli,
            Some("oidc") => RegisterMethod::Interactive,
            _ => RegisterMethod::AuthKey,
        };
        let node = Node {
            id,
            machine_key,
            node_key,
            disco_key,
            hostname,
            given_name,
            user,
            tags,
            ipv4,
            ipv6,
            hostinfo,
            endpoints,
            approved_routes,
            ephemeral: auth_key_id.is_some_and(|k| keys[&k].1),
            register_method,
            auth_key_id,
            expiry: time_of(&r, "expiry"),
            approved: true,
            created: time_of(&r, "created_at").unwrap_or(OffsetDateTime::UNIX_EPOCH),
            last_seen: time_of(&r, "last_seen"),
            cap_version: 0,
            online: false,
            peer_json: Default::default(),
        };
        summary.nodes += 1;
        ops.push(DbOp::PutNode(Arc::new(node)));
    }
    if request_tags > 0 {
        summary.notes.push(format!(
            "{request_tags} nodes ask for tags in their Hostinfo (RequestTags) that headscale \
             before 0.28 applied through the policy; only their forced tags were carried \
             over: set the others with `oxiscale nodes tag`"
        ));
    }
    ops.push(DbOp::PutSequence("node", max_id + 1));
    Ok(())
}

fn key_of<K: std::str::FromStr>(raw: Option<String>, prefix: &str) -> Option<K> {
    let raw = raw?;
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    raw.parse()
        .ok()
        .or_else(|| format!("{prefix}{raw}").parse().ok())
}

async fn read_api_keys(
    conn: &mut SqliteConnection,
    schema: &Schema,
    summary: &mut ImportSummary,
    ops: &mut Vec<DbOp>,
) -> Result<(), ImportError> {
    let q = schema.select(
        "api_keys",
        &[
            ("id", "INTEGER"),
            ("prefix", "TEXT"),
            ("hash", "BLOB"),
            ("expiration", "TEXT"),
            ("last_seen", "TEXT"),
            ("created_at", "TEXT"),
        ],
    );
    let mut max_id = 0;
    let mut prefixes = HashSet::new();
    for r in sqlx::query(&q).fetch_all(&mut *conn).await? {
        let Some(id) = int(&r, "id").map(|v| v as u64) else {
            continue;
        };
        max_id = max_id.max(id);
        let prefix = text(&r, "prefix").unwrap_or_default();
        let hash = r
            .try_get::<Option<Vec<u8>>, _>("hash")
            .ok()
            .flatten()
            .and_then(|h| String::from_utf8(h).ok())
            .filter(|h| h.starts_with("$2"));
        let Some(hash) = hash.filter(|_| !prefix.is_empty()) else {
            summary
                .skipped
                .push(format!("API key {id}: it has no prefix or no bcrypt hash"));
            continue;
        };
        if !prefixes.insert(prefix.clone()) {
            summary
                .skipped
                .push(format!("API key {id}: its prefix {prefix} repeats"));
            continue;
        }
        ops.push(DbOp::PutApiKey(ApiKey {
            id,
            prefix,
            hash: KeyHash::bcrypt(hash),
            expiration: time_of(&r, "expiration").unwrap_or(far_future()),
            created: time_of(&r, "created_at").unwrap_or(OffsetDateTime::UNIX_EPOCH),
            last_seen: time_of(&r, "last_seen"),
        }));
        summary.api_keys += 1;
    }
    ops.push(DbOp::PutSequence("api", max_id + 1));
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
    let text = std::fs::read_to_string(source).map_err(io(format!("{}", source.display())))?;
    let hex_part = text.trim().strip_prefix("privkey:").unwrap_or(text.trim());
    let mut key = [0u8; 32];
    if hex::decode_to_slice(hex_part, &mut key).is_err() {
        return Err(refused(format!(
            "{} does not hold a key (expected privkey:<64 hex digits>); the database was \
             imported, the Noise key was not",
            source.display()
        )));
    }
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
        if let Ok(existing) = crate::keys::load_or_create(&target)
            && existing == key
        {
            return Ok(format!(
                "{} holds headscale's key already",
                target.display()
            ));
        }
        let kept = with_suffix(&target, &format!(".backup-{}", timestamp()));
        std::fs::rename(&target, &kept).map_err(io(format!("{}", target.display())))?;
    }
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(format!("{}", dir.display())))?;
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
            .map_err(io(format!("{}", target.display())))?;
        write!(f, "privkey:{}", hex::encode(key)).map_err(io(format!("{}", target.display())))?;
        f.sync_all().map_err(io(format!("{}", target.display())))?;
    }
    Ok(format!(
        "copied from {} to {}",
        source.display(),
        target.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headscale_times_parse() {
        let t = parse_time("2023-04-09 22:34:28.624250346+00:00").unwrap();
        assert_eq!(t.unix_timestamp(), 1681079668);
        let t = parse_time("2022-02-26 18:11:15.388354971+01:00").unwrap();
        assert_eq!(t.hour(), 18);
        assert_eq!(parse_time("0001-01-01 00:00:00+00:00").unwrap().year(), 1);
        assert!(parse_time("2024-05-04T08:13:55Z").is_some());
        assert!(parse_time("2024-05-04 08:13:55").is_some());
        assert_eq!(
            parse_time("1700000000").unwrap().unix_timestamp(),
            1700000000
        );
    }

    #[test]
    fn tags_and_identities() {
        assert!(tags_of(None).unwrap().is_empty());
        for empty in ["", "null", "[]"] {
            assert!(tags_of(Some(empty.into())).unwrap().is_empty());
        }
        assert_eq!(
            tags_of(Some(r#"["tag:b","tag:a","tag:b"]"#.into())).unwrap(),
            vec!["tag:a", "tag:b"]
        );
        let id = split_identifier("https://idp.example.com/realms/x/abc-123", None).unwrap();
        assert_eq!(id.issuer, "https://idp.example.com/realms/x");
        assert_eq!(id.subject, "abc-123");
        let id = split_identifier(
            "https://tenant.example.com/google-oauth2|1/2",
            Some("https://tenant.example.com/"),
        )
        .unwrap();
        assert_eq!(id.issuer, "https://tenant.example.com/");
        assert_eq!(id.subject, "google-oauth2|1/2");
    }
}
