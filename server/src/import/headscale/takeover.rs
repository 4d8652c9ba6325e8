//! `serve` pointed at headscale's database (`oxiscale -c /etc/headscale/config.yaml serve`):
//! the file is backed up and taken over in place. The import writes a new oxiscale database
//! beside it, which then takes the file's name; headscale's own file lives on as the backup.
//! Anything the import refuses stops the server with the reason, the file untouched.

use super::*;

/// Takes over the configured database when it is headscale's; `None` when it is not
/// (oxiscale's own, or none yet).
pub async fn take_over_at_start(config: &Config) -> Result<Option<ImportSummary>, ImportError> {
    let path = config.sqlite_path();
    if !is_headscale_database(&path).await? {
        return Ok(None);
    }
    let staged = kept_name(&path, "oxiscale");
    let mut staged_config = config.clone();
    staged_config.database.sqlite.path = Some(staged.clone());
    let opts = ImportOptions {
        from: path.clone(),
        noise_key: None,
        force: false,
    };
    let mut summary = match import(&staged_config, &opts).await {
        Ok(summary) => summary,
        Err(e) => {
            remove_with_journal(&staged);
            return Err(e);
        }
    };
    // headscale's journal is in the backup; left here, SQLite would read it as the new
    // database's.
    for suffix in ["-wal", "-shm"] {
        let file = with_suffix(&path, suffix);
        if file.exists() {
            std::fs::remove_file(&file).map_err(io(format!("removing {}", file.display())))?;
        }
    }
    for suffix in ["", "-wal"] {
        let from = with_suffix(&staged, suffix);
        if from.exists() {
            let to = with_suffix(&path, suffix);
            std::fs::rename(&from, &to).map_err(io(format!(
                "renaming {} to {}",
                from.display(),
                to.display()
            )))?;
        }
    }
    remove_with_journal(&staged);
    summary.database = path;
    Ok(Some(summary))
}

/// Whether `path` is a SQLite database with headscale's tables (its `migrations` table)
/// and not oxiscale's. Only reads.
async fn is_headscale_database(path: &Path) -> Result<bool, ImportError> {
    let header = match std::fs::File::open(path) {
        Ok(mut f) => {
            use std::io::Read;
            let mut buf = [0u8; 16];
            let n = f
                .read(&mut buf)
                .map_err(io(format!("{}", path.display())))?;
            buf[..n].to_vec()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(format!("{}", path.display()))(e)),
    };
    // Not SQLite (or empty): opening it as oxiscale's database says what is wrong.
    if header != SQLITE_HEADER {
        return Ok(false);
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .foreign_keys(false)
        .busy_timeout(Duration::from_secs(5))
        .disable_statement_logging()
        .connect()
        .await?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut conn)
            .await?;
    conn.close().await.ok();
    let has = |t: &str| tables.iter().any(|name| name == t);
    Ok(has("migrations") && !has("_sqlx_migrations"))
}

fn remove_with_journal(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        std::fs::remove_file(with_suffix(path, suffix)).ok();
    }
}
