//! Which headscale schema a database has: its migration ids checked against its tables
//! and columns, so a half-migrated or foreign database is refused before anything is read.

use super::*;

pub(super) const MIGRATIONS: &[(&str, &str)] = &[
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

pub(super) const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// The tables and columns of the headscale database, as found.
pub(super) struct Schema {
    pub(super) tables: HashMap<String, HashSet<String>>,
    pub(super) migrations: HashSet<String>,
}

impl Schema {
    pub(super) fn has_table(&self, t: &str) -> bool {
        self.tables.contains_key(t)
    }

    pub(super) fn has(&self, t: &str, c: &str) -> bool {
        self.tables.get(t).is_some_and(|cols| cols.contains(c))
    }

    /// Whether headscale applied `id` (a fresh 0.28+ database records `SCHEMA_INIT` and
    /// only the ids from 202501221827 on, so earlier ones count as applied then).
    pub(super) fn applied(&self, id: &str) -> bool {
        self.migrations.contains(id)
            || (self.migrations.contains("SCHEMA_INIT") && id < "202501221827")
    }

    /// `CAST(col AS kind) AS col`, or `NULL AS col` where the column does not exist.
    pub(super) fn select(&self, table: &str, cols: &[(&str, &str)]) -> String {
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

pub(super) async fn read_schema(conn: &mut SqliteConnection) -> Result<Schema, sqlx::Error> {
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
pub(super) fn check_schema(schema: &Schema, from: &Path) -> Result<String, ImportError> {
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
