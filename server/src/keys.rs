//! The server's long-lived private keys (Noise, DERP): generated once, kept in files of
//! mode 0600 as `privkey:<hex>`, as headscale keeps them.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} does not hold a key (expected privkey:<64 hex digits>)")]
    Malformed { path: String },
}

/// A fresh X25519 private key, clamped as Tailscale's `key.NewMachine` makes one.
pub fn new_private_key() -> [u8; 32] {
    let mut key: [u8; 32] = rand::random();
    key[0] &= 248;
    key[31] = (key[31] & 127) | 64;
    key
}

/// A key as its file holds it: `privkey:<hex>`.
pub fn key_text(key: &[u8; 32]) -> String {
    format!("privkey:{}", hex::encode(key))
}

/// Reads the key at `path`, or creates it with fresh randomness.
pub fn load_or_create(path: &Path) -> Result<[u8; 32], KeyFileError> {
    match read_key(path) {
        Ok(key) => {
            // Tighten a key file someone made readable.
            let io = io_at(path);
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_at(path))?;
            }
            Ok(key)
        }
        Err(KeyFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let key = new_private_key();
            write_new_key(path, &key)?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// The key in the file at `path` (`privkey:<hex>`, or the bare hex).
pub fn read_key(path: &Path) -> Result<[u8; 32], KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(io_at(path))?;
    let hex_part = text.trim().strip_prefix("privkey:").unwrap_or(text.trim());
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut key).map_err(|_| KeyFileError::Malformed {
        path: path.display().to_string(),
    })?;
    Ok(key)
}

/// Writes `key` to a new file at `path` as headscale does (`privkey:<hex>`, no newline),
/// mode 0600, its directory made if missing; an existing file is never overwritten.
pub fn write_new_key(path: &Path, key: &[u8; 32]) -> Result<(), KeyFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))?;
    write!(f, "{}", key_text(key)).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_mode_0600_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("oxiscale-keys-{}", rand::random::<u64>()));
        let path = dir.join("sub/noise.key");
        let first = load_or_create(&path).unwrap();
        let second = load_or_create(&path).unwrap();
        assert_eq!(first, second);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyFileError::Malformed { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
