//! `oxiscale backup` and `oxiscale restore`: the whole server state in one directory.
//!
//! A backup is the database (a consistent copy, taken while the server runs) and the
//! server's private keys (without the Noise key, clients would have to log in again after a
//! restore), with a manifest. A restore runs with the server stopped, checks the backup
//! first (intact, not from a newer oxiscale), and keeps what it replaces.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;
use crate::files::{kept_name, server_answers, with_suffix};
use crate::store::{Store, StoreError};

const DATABASE: &str = "db.sqlite";
const NOISE_KEY: &str = "noise_private.key";
const DERP_KEY: &str = "derp_server_private.key";
const MANIFEST: &str = "oxiscale-backup.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub oxiscale_version: String,
    pub created_at: String,
    pub files: Vec<String>,
}

/// What a restore put in place, and where what it replaced went.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub from: PathBuf,
    pub backup_of: Manifest,
    pub replaced: Vec<(PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// Writes a backup of the configured server into the directory `to` (new or empty).
pub async fn backup(config: &Config, to: &Path) -> Result<Manifest, BackupError> {
    if to.exists()
        && std::fs::read_dir(to)
            .map_err(io(format!("{}", to.display())))?
            .next()
            .is_some()
    {
        return Err(BackupError::Refused(format!(
            "{} is not empty; a backup goes into a new or empty directory",
            to.display()
        )));
    }
    let source = config.sqlite_path();
    if !source.is_file() {
        return Err(BackupError::Refused(format!(
            "there is no database at {} to back up",
            source.display()
        )));
    }
    create_private_dir(to)?;
    let store = Store::open_sqlite(&source, config.database.sqlite.write_ahead_log).await?;
    let copied = store.backup_to(&to.join(DATABASE)).await;
    store.close().await;
    copied?;
    let mut files = vec![DATABASE.to_owned()];
    for (key, name) in [
        (config.noise_key_path(), NOISE_KEY),
        (config.derp_key_path(), DERP_KEY),
    ] {
        if key.is_file() {
            let key_bytes =
                crate::keys::read_key(&key).map_err(|e| BackupError::Refused(e.to_string()))?;
            crate::keys::write_new_key(&to.join(name), &key_bytes)
                .map_err(|e| BackupError::Refused(e.to_string()))?;
            files.push(name.to_owned());
        }
    }
    let manifest = Manifest {
        oxiscale_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .expect("a current time formats"),
        files,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("plain data serialises");
    std::fs::write(to.join(MANIFEST), text).map_err(io(format!("{}", to.display())))?;
    Ok(manifest)
}

/// Puts the backup in `from` in place of the configured server's database and keys; the
/// server must be stopped. What is replaced is renamed `<file>.before-restore-<time>`.
pub async fn restore(config: &Config, from: &Path) -> Result<Restored, BackupError> {
    if server_answers(&config.socket_path()) {
        return Err(BackupError::Refused(format!(
            "oxiscale is running (its socket {} answers); stop it before restoring",
            config.socket_path().display()
        )));
    }
    let manifest_path = from.join(MANIFEST);
    let manifest: Manifest = std::fs::read_to_string(&manifest_path)
        .map_err(io(format!(
            "{} (is {} an oxiscale backup?)",
            manifest_path.display(),
            from.display()
        )))
        .and_then(|text| {
            serde_json::from_str(&text)
                .map_err(|e| BackupError::Refused(format!("{}: {e}", manifest_path.display())))
        })?;
    let database = from.join(DATABASE);
    Store::check_restorable(&database).await?;
    let mut keys = Vec::new();
    for (name, target) in [
        (NOISE_KEY, config.noise_key_path()),
        (DERP_KEY, config.derp_key_path()),
    ] {
        let file = from.join(name);
        if file.is_file() {
            let key = crate::keys::read_key(&file)
                .map_err(|e| BackupError::Refused(format!("the backup's key: {e}")))?;
            keys.push((key, target));
        }
    }

    // Everything is checked: now the server's side.
    let aside = |p: &Path| kept_name(p, "before-restore");
    let mut replaced = Vec::new();
    let target = config.sqlite_path();
    if let Some(dir) = target.parent() {
        create_private_dir(dir)?;
    }
    if target.exists() {
        let kept = aside(&target);
        std::fs::rename(&target, &kept).map_err(io(format!("{}", target.display())))?;
        let wal = with_suffix(&target, "-wal");
        if wal.exists() {
            let kept_wal = with_suffix(&kept, "-wal");
            std::fs::rename(&wal, &kept_wal).map_err(io(format!("{}", wal.display())))?;
        }
        replaced.push((target.clone(), kept));
    }
    std::fs::remove_file(with_suffix(&target, "-shm")).ok();
    std::fs::copy(&database, &target).map_err(io(format!(
        "copying {} to {}",
        database.display(),
        target.display()
    )))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("{}", target.display())))?;
    }
    for (key, path) in keys {
        if path.exists() {
            if crate::keys::read_key(&path).is_ok_and(|k| k == key) {
                continue;
            }
            let kept = aside(&path);
            std::fs::rename(&path, &kept).map_err(io(format!("{}", path.display())))?;
            replaced.push((path.clone(), kept));
        }
        crate::keys::write_new_key(&path, &key).map_err(|e| BackupError::Refused(e.to_string()))?;
    }
    Ok(Restored {
        from: from.to_owned(),
        backup_of: manifest,
        replaced,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), BackupError> {
    crate::files::create_private_dir(dir).map_err(io(format!("{}", dir.display())))
}
