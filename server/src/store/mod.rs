//! Durable storage: a SQLite database in WAL mode with `synchronous=FULL`, so that a commit
//! that returned is on disk. The in-memory tailnet is authoritative while the server runs;
//! this is its log, read once at start and written in batches (one transaction per batch of
//! mutations: group commit).

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, SqlitePool};
use time::OffsetDateTime;

use crate::tailnet::effects::DbOp;
use crate::tailnet::model::{
    ApiKey, KeyHash, Node, PreAuthKey, ProviderIdentity, RegisterMethod, User,
};
use crate::tailnet::state::Loaded;

pub mod upgrade;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(
        "database {path} was written by a newer oxiscale (its migration {migration} is unknown to \
         oxiscale {version}); it was left as it is: run the newer oxiscale, or restore a backup \
         made for this one",
        version = env!("CARGO_PKG_VERSION")
    )]
    Newer { path: String, migration: i64 },
    #[error("backup {path}: {message}")]
    Backup { path: String, message: String },
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_ts(table: &'static str, v: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(v).map_err(|e| StoreError::Corrupt {
        table,
        message: e.to_string(),
    })
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

fn parse_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        table,
        message: e.to_string(),
    })
}

fn parse_key<T: FromStr>(table: &'static str, text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e: T::Err| StoreError::Corrupt {
        table,
        message: e.to_string(),
    })
}

fn key_hash(table: &'static str, bytes: Vec<u8>) -> Result<KeyHash, StoreError> {
    KeyHash::from_bytes(bytes).ok_or_else(|| StoreError::Corrupt {
        table,
        message: "hash is neither 32 bytes of SHA-256 nor a bcrypt string".into(),
    })
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub async fn open_sqlite(path: &Path, write_ahead_log: bool) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(if write_ahead_log {
                SqliteJournalMode::Wal
            } else {
                SqliteJournalMode::Delete
            })
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            // A COMMIT that fails on a full disk is rolled back by SQLite itself; sqlx's own
            // ROLLBACK then fails and it goes on counting the transaction as open, so that
            // connection's next `begin` is a SAVEPOINT, and after one more failure its
            // "commit" a RELEASE inside a transaction that never ends: writes answered as
            // stored that are not, and the write lock held against the other connection.
            // Such a connection is closed (SQLite rolls back whatever it had) instead of
            // going back to the pool.
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        upgrade::prepare(&pool, &MIGRATOR, path).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    /// Whether the database file at `path` could replace this server's (see
    /// [`upgrade::check_restorable`]); the number of its applied migrations.
    pub async fn check_restorable(path: &Path) -> Result<usize, StoreError> {
        upgrade::check_restorable(&MIGRATOR, path).await
    }

    /// A consistent copy of the whole database at `to` (a new file), taken while it is in use.
    pub async fn backup_to(&self, to: &Path) -> Result<(), StoreError> {
        upgrade::copy_consistent(&self.pool, to).await
    }

    /// A setting saved at run time (`settings` table), if any.
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Saves a setting outside the tailnet's own state (the identity provider's), at once and
    /// not through the tailnet writer: nothing in memory depends on the row being in a batch.
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a saved setting (the config file's value is in force again).
    pub async fn delete_setting(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The connection pool, for components that keep their own tables in this database
    /// (console accounts and sessions).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Reads the whole tailnet.
    pub async fn load(&self) -> Result<Loaded, StoreError> {
        let users = sqlx::query(
            "SELECT id, name, display_name, email, created_at, provider_issuer, provider_subject,
                    picture_url, provider_groups FROM users ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            let issuer: Option<String> = r.get("provider_issuer");
            let subject: Option<String> = r.get("provider_subject");
            Ok(User {
                id: r.get::<i64, _>("id") as u64,
                name: r.get("name"),
                display_name: r.get("display_name"),
                email: r.get("email"),
                created: from_ts("users", r.get("created_at"))?,
                provider: issuer
                    .zip(subject)
                    .map(|(issuer, subject)| ProviderIdentity { issuer, subject }),
                picture_url: r.get("picture_url"),
                provider_groups: parse_json("users", r.get::<&str, _>("provider_groups"))?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let nodes = sqlx::query("SELECT * FROM nodes ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| node_from_row(&r))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let preauth_keys = sqlx::query("SELECT * FROM pre_auth_keys ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| {
                Ok(PreAuthKey {
                    id: r.get::<i64, _>("id") as u64,
                    prefix: r.get("prefix"),
                    hash: key_hash("pre_auth_keys", r.get("hash"))?,
                    user: r.get::<Option<i64>, _>("user_id").map(|v| v as u64),
                    reusable: r.get("reusable"),
                    ephemeral: r.get("ephemeral"),
                    used: r.get("used"),
                    tags: parse_json("pre_auth_keys", r.get("tags"))?,
                    expiration: from_ts("pre_auth_keys", r.get("expiration"))?,
                    created: from_ts("pre_auth_keys", r.get("created_at"))?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let api_keys = sqlx::query("SELECT * FROM api_keys ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| {
                Ok(ApiKey {
                    id: r.get::<i64, _>("id") as u64,
                    prefix: r.get("prefix"),
                    hash: key_hash("api_keys", r.get("hash"))?,
                    expiration: from_ts("api_keys", r.get("expiration"))?,
                    created: from_ts("api_keys", r.get("created_at"))?,
                    last_seen: r
                        .get::<Option<i64>, _>("last_seen")
                        .map(|v| from_ts("api_keys", v))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let sequences = sqlx::query("SELECT name, next FROM sequences")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.get::<String, _>("name"), r.get::<i64, _>("next") as u64))
            .collect();
        Ok(Loaded {
            users,
            nodes,
            preauth_keys,
            api_keys,
            sequences,
        })
    }

    /// Writes a batch of operations in one transaction: all or nothing.
    pub async fn commit(&self, ops: &[DbOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin().await?;
        apply(&mut tx, ops).await?;
        tx.commit().await?;
        metrics::histogram!(crate::telemetry::COMMIT_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Whether the tailnet holds anything yet: (users, nodes).
    pub async fn tailnet_counts(&self) -> Result<(u64, u64), StoreError> {
        let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        let nodes: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes")
            .fetch_one(&self.pool)
            .await?;
        Ok((users as u64, nodes as u64))
    }

    /// Replaces the whole tailnet (users, nodes, keys, sequences, policy history) with what
    /// `ops` write, in one transaction: an import either lands whole or not at all. Settings,
    /// console accounts and the audit log stay.
    pub async fn replace_tailnet(&self, ops: &[DbOp]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for table in [
            "nodes",
            "pre_auth_keys",
            "api_keys",
            "users",
            "sequences",
            "policies",
        ] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await?;
        }
        apply(&mut tx, ops).await?;
        tx.commit().await?;
        Ok(())
    }

    /// When the newest policy row was stored (headscale's `updatedAt` in database mode).
    pub async fn latest_policy_time(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let row = sqlx::query("SELECT created_at FROM policies ORDER BY id DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| from_ts("policies", r.get("created_at")))
            .transpose()
    }

    /// The policy in force in database mode, if one was ever set.
    pub async fn latest_policy(&self) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query("SELECT data FROM policies ORDER BY id DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.get("data")),
        )
    }
}

async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ops: &[DbOp],
) -> Result<(), StoreError> {
    for op in coalesce(ops) {
        match op {
            DbOp::PutUser(u) => {
                sqlx::query(
                    "INSERT INTO users (id, name, display_name, email, created_at, provider_issuer,
                                        provider_subject, picture_url, provider_groups)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT(id) DO UPDATE SET name = excluded.name, display_name = excluded.display_name,
                     email = excluded.email, provider_issuer = excluded.provider_issuer,
                     provider_subject = excluded.provider_subject, picture_url = excluded.picture_url,
                     provider_groups = excluded.provider_groups",
                )
                .bind(u.id as i64)
                .bind(&u.name)
                .bind(&u.display_name)
                .bind(&u.email)
                .bind(ts(u.created))
                .bind(u.provider.as_ref().map(|p| p.issuer.as_str()))
                .bind(u.provider.as_ref().map(|p| p.subject.as_str()))
                .bind(&u.picture_url)
                .bind(json(&u.provider_groups))
                .execute(&mut **tx)
                .await?;
            }
            DbOp::DeleteUser(id) => {
                sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(*id as i64)
                    .execute(&mut **tx)
                    .await?;
            }
            DbOp::PutNode(n) => put_node(tx, n).await?,
            DbOp::DeleteNode(id) => {
                sqlx::query("DELETE FROM nodes WHERE id = $1")
                    .bind(*id as i64)
                    .execute(&mut **tx)
                    .await?;
            }
            DbOp::PutPreAuthKey(k) => {
                sqlx::query(
                    "INSERT INTO pre_auth_keys (id, prefix, hash, user_id, reusable, ephemeral, used, tags, expiration, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT(id) DO UPDATE SET used = excluded.used, expiration = excluded.expiration",
                )
                .bind(k.id as i64)
                .bind(&k.prefix)
                .bind(k.hash.to_bytes())
                .bind(k.user.map(|u| u as i64))
                .bind(k.reusable)
                .bind(k.ephemeral)
                .bind(k.used)
                .bind(json(&k.tags))
                .bind(ts(k.expiration))
                .bind(ts(k.created))
                .execute(&mut **tx)
                .await?;
            }
            DbOp::DeletePreAuthKey(id) => {
                sqlx::query("DELETE FROM pre_auth_keys WHERE id = $1")
                    .bind(*id as i64)
                    .execute(&mut **tx)
                    .await?;
            }
            DbOp::PutApiKey(k) => {
                sqlx::query(
                    "INSERT INTO api_keys (id, prefix, hash, expiration, created_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT(id) DO UPDATE SET expiration = excluded.expiration, last_seen = excluded.last_seen",
                )
                .bind(k.id as i64)
                .bind(&k.prefix)
                .bind(k.hash.to_bytes())
                .bind(ts(k.expiration))
                .bind(ts(k.created))
                .bind(k.last_seen.map(ts))
                .execute(&mut **tx)
                .await?;
            }
            DbOp::DeleteApiKey(id) => {
                sqlx::query("DELETE FROM api_keys WHERE id = $1")
                    .bind(*id as i64)
                    .execute(&mut **tx)
                    .await?;
            }
            DbOp::PutSequence(name, next) => {
                sqlx::query(
                    "INSERT INTO sequences (name, next) VALUES ($1, $2) ON CONFLICT(name) DO UPDATE SET next = excluded.next",
                )
                .bind(*name)
                .bind(*next as i64)
                .execute(&mut **tx)
                .await?;
            }
            DbOp::PutPolicy(text) => {
                sqlx::query("INSERT INTO policies (data, created_at) VALUES ($1, $2)")
                    .bind(text)
                    .bind(ts(OffsetDateTime::now_utc()))
                    .execute(&mut **tx)
                    .await?;
            }
            DbOp::PutSetting(key, value) => {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(value)
                .execute(&mut **tx)
                .await?;
            }
        }
    }
    Ok(())
}

/// Keeps only the last write of each row in a batch (a node that changed ten times in one
/// batch is written once), preserving the order of what remains.
fn coalesce(ops: &[DbOp]) -> Vec<&DbOp> {
    #[derive(Hash, PartialEq, Eq)]
    enum Row<'a> {
        Node(u64),
        Sequence(&'a str),
        Setting(&'a str),
    }
    let mut seen = HashSet::new();
    let mut kept: Vec<&DbOp> = ops
        .iter()
        .rev()
        .filter(|op| {
            let row = match op {
                DbOp::PutNode(n) => Row::Node(n.id),
                DbOp::DeleteNode(id) => Row::Node(*id),
                DbOp::PutSequence(name, _) => Row::Sequence(name),
                DbOp::PutSetting(k, _) => Row::Setting(k),
                _ => return true,
            };
            seen.insert(row)
        })
        .collect();
    kept.reverse();
    kept
}

async fn put_node(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    n: &Arc<Node>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO nodes (id, machine_key, node_key, disco_key, hostname, given_name, user_id, tags, ipv4, ipv6,
            hostinfo, endpoints, approved_routes, ephemeral, register_method, auth_key_id, expiry, created_at,
            last_seen, cap_version, approved, attributes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
         ON CONFLICT(id) DO UPDATE SET machine_key = excluded.machine_key, node_key = excluded.node_key,
            disco_key = excluded.disco_key, hostname = excluded.hostname, given_name = excluded.given_name,
            user_id = excluded.user_id, tags = excluded.tags, ipv4 = excluded.ipv4, ipv6 = excluded.ipv6,
            hostinfo = excluded.hostinfo, endpoints = excluded.endpoints, approved_routes = excluded.approved_routes,
            ephemeral = excluded.ephemeral, register_method = excluded.register_method,
            auth_key_id = excluded.auth_key_id, expiry = excluded.expiry, last_seen = excluded.last_seen,
            cap_version = excluded.cap_version, approved = excluded.approved,
            attributes = excluded.attributes",
    )
    .bind(n.id as i64)
    .bind(n.machine_key.to_string())
    .bind(n.node_key.to_string())
    .bind(n.disco_key.to_string())
    .bind(&n.hostname)
    .bind(&n.given_name)
    .bind(n.user.map(|u| u as i64))
    .bind(json(&n.tags))
    .bind(n.ipv4.map(|ip| ip.to_string()))
    .bind(n.ipv6.map(|ip| ip.to_string()))
    .bind(json(&n.hostinfo))
    .bind(json(&n.endpoints))
    .bind(json(&n.approved_routes))
    .bind(n.ephemeral)
    .bind(n.register_method.as_str())
    .bind(n.auth_key_id.map(|k| k as i64))
    .bind(n.expiry.map(ts))
    .bind(ts(n.created))
    .bind(n.last_seen.map(ts))
    .bind(n.cap_version as i64)
    .bind(n.approved)
    .bind(crate::tailnet::attributes::to_stored_json(&n.custom_attributes))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn node_from_row(r: &SqliteRow) -> Result<Node, StoreError> {
    const T: &str = "nodes";
    Ok(Node {
        id: r.get::<i64, _>("id") as u64,
        machine_key: parse_key(T, r.get("machine_key"))?,
        node_key: parse_key(T, r.get("node_key"))?,
        disco_key: parse_key(T, r.get("disco_key"))?,
        hostname: r.get("hostname"),
        given_name: r.get("given_name"),
        user: r.get::<Option<i64>, _>("user_id").map(|v| v as u64),
        tags: parse_json(T, r.get("tags"))?,
        ipv4: r
            .get::<Option<String>, _>("ipv4")
            .map(|s| parse_key(T, &s))
            .transpose()?,
        ipv6: r
            .get::<Option<String>, _>("ipv6")
            .map(|s| parse_key(T, &s))
            .transpose()?,
        hostinfo: parse_json(T, r.get("hostinfo"))?,
        endpoints: parse_json(T, r.get("endpoints"))?,
        approved_routes: parse_json(T, r.get("approved_routes"))?,
        ephemeral: r.get("ephemeral"),
        register_method: RegisterMethod::parse(r.get("register_method")),
        auth_key_id: r.get::<Option<i64>, _>("auth_key_id").map(|v| v as u64),
        expiry: r
            .get::<Option<i64>, _>("expiry")
            .map(|v| from_ts(T, v))
            .transpose()?,
        approved: r.get("approved"),
        created: from_ts(T, r.get("created_at"))?,
        last_seen: r
            .get::<Option<i64>, _>("last_seen")
            .map(|v| from_ts(T, v))
            .transpose()?,
        cap_version: r.get::<i64, _>("cap_version") as u32,
        custom_attributes: crate::tailnet::attributes::from_stored_json(
            r.get::<&str, _>("attributes"),
        )
        .map_err(|message| StoreError::Corrupt { table: T, message })?,
        ipv4_withheld: false,
        online: false,
        peer_json: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> (std::path::PathBuf, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("oxiscale-store-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("db.sqlite");
        (dir, db)
    }

    fn user() -> User {
        User {
            id: 1,
            name: "alice".into(),
            display_name: String::new(),
            email: String::new(),
            created: OffsetDateTime::UNIX_EPOCH,
            provider: None,
            picture_url: String::new(),
            provider_groups: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_nodes_approval_is_stored_and_read_back() {
        let (dir, db) = temp_db();
        let store = Store::open_sqlite(&db, true).await.unwrap();
        let held = Node {
            approved: false,
            ..Node::sample(1)
        };
        store
            .commit(&[
                DbOp::PutUser(user()),
                DbOp::PutNode(Arc::new(held.clone())),
                DbOp::PutNode(Arc::new(Node::sample(2))),
            ])
            .await
            .unwrap();
        let approved = |loaded: &Loaded| -> Vec<(u64, bool)> {
            loaded.nodes.iter().map(|n| (n.id, n.approved)).collect()
        };
        assert_eq!(
            approved(&store.load().await.unwrap()),
            vec![(1, false), (2, true)]
        );

        // Approval is an update of the row.
        let now_approved = Node {
            approved: true,
            ..held
        };
        store
            .commit(&[DbOp::PutNode(Arc::new(now_approved))])
            .await
            .unwrap();
        assert_eq!(
            approved(&store.load().await.unwrap()),
            vec![(1, true), (2, true)]
        );
        store.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A database written before device approval existed: its nodes are in the tailnet
    /// already, so the migration leaves them approved.
    #[tokio::test]
    async fn nodes_from_before_the_approval_migration_stay_approved() {
        let (dir, db) = temp_db();
        // The schema as it was before 0004, from copies of the earlier migrations.
        let earlier = dir.join("earlier-migrations");
        std::fs::create_dir_all(&earlier).unwrap();
        let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
        for entry in std::fs::read_dir(&all).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.as_str() < "0004" {
                std::fs::copy(&path, earlier.join(name)).unwrap();
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(earlier.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO users (id, name, created_at) VALUES (1, 'alice', 0)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO nodes (id, machine_key, node_key, disco_key, hostname, given_name, user_id,
                                register_method, created_at)
             VALUES (1, $1, $2, $3, 'old', 'old', 1, 'authkey', 0)",
        )
        .bind(Node::sample(1).machine_key.to_string())
        .bind(Node::sample(1).node_key.to_string())
        .bind(Node::sample(1).disco_key.to_string())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = Store::open_sqlite(&db, true).await.unwrap();
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.nodes.len(), 1);
        assert!(
            loaded.nodes[0].approved,
            "an existing node stays in the tailnet"
        );
        store.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }
}
