//! Upgrades that cannot lose data: before a migration changes a database, a consistent copy
//! of it is kept beside it; a database written by a newer oxiscale (a migration this binary
//! does not know) is refused, untouched, instead of being half-understood.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use tracing::info;

use super::StoreError;

/// What [`prepare`] found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// A new database: nothing to keep.
    Fresh,
    /// Every migration is applied already.
    UpToDate,
    /// Migrations are pending; the database as it was is kept at this path.
    BackedUp(PathBuf),
}

/// Checks the database at `path` against `migrator` before it runs: refuses one written by
/// a newer oxiscale, and copies one that is about to be migrated.
pub async fn prepare(
    pool: &SqlitePool,
    migrator: &Migrator,
    path: &Path,
) -> Result<Prepared, StoreError> {
    let has_table: bool = sqlx::query_scalar(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await?;
    if !has_table {
        return Ok(Prepared::Fresh);
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
            .fetch_all(pool)
            .await?;
    if applied.is_empty() {
        return Ok(Prepared::Fresh);
    }
    let known: HashSet<i64> = migrator.iter().map(|m| m.version).collect();
    if let Some(unknown) = applied.iter().filter(|v| !known.contains(v)).max() {
        return Err(StoreError::Newer {
            path: path.display().to_string(),
            migration: *unknown,
        });
    }
    if applied.len() >= known.len() {
        return Ok(Prepared::UpToDate);
    }
    let backup = crate::files::kept_name(path, "before-migration");
    copy_consistent(pool, &backup).await?;
    info!(
        backup = %backup.display(),
        applied = applied.len(),
        known = known.len(),
        "database kept as it was before its migration"
    );
    Ok(Prepared::BackedUp(backup))
}

/// A transactionally consistent copy of the whole database (`VACUUM INTO`: safe while it
/// is in use, write-ahead log included), private like the original.
pub async fn copy_consistent(pool: &SqlitePool, to: &Path) -> Result<(), StoreError> {
    if to.exists() {
        return Err(StoreError::Backup {
            path: to.display().to_string(),
            message: "exists already; a backup never overwrites a file".into(),
        });
    }
    let target = to.to_str().ok_or_else(|| StoreError::Backup {
        path: to.display().to_string(),
        message: "the path is not UTF-8".into(),
    })?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(pool)
        .await?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        StoreError::Backup {
            path: to.display().to_string(),
            message: e.to_string(),
        }
    })?;
    Ok(())
}

/// Whether the database file at `path` can be put in place of this server's: SQLite, intact,
/// and not written by a newer oxiscale. Only reads.
pub async fn check_restorable(migrator: &Migrator, path: &Path) -> Result<usize, StoreError> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
    let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await?;
    if check != ["ok"] {
        return Err(StoreError::Backup {
            path: path.display().to_string(),
            message: format!(
                "damaged: PRAGMA integrity_check reports {}",
                check.join("; ")
            ),
        });
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
            .fetch_all(&mut conn)
            .await
            .map_err(|_| StoreError::Backup {
                path: path.display().to_string(),
                message: "not an oxiscale database (it has no migration history)".into(),
            })?;
    let known: HashSet<i64> = migrator.iter().map(|m| m.version).collect();
    if let Some(unknown) = applied.iter().filter(|v| !known.contains(v)).max() {
        return Err(StoreError::Newer {
            path: path.display().to_string(),
            migration: *unknown,
        });
    }
    Ok(applied.len())
}
