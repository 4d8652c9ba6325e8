//! Files the offline commands (import, export, backup, restore) and upgrades keep beside
//! the ones they replace: names stamped with the time, private directories, and whether the
//! server is running on the same data.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

/// The UTC time as `20261205T031500Z`, for names of files kept beside others.
pub fn timestamp() -> String {
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

/// `path` with `suffix` appended to its name (`db.sqlite` + `-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `<path>.<label>-<time>`, numbered `-2`, `-3`… when that exists already.
pub fn kept_name(path: &Path, label: &str) -> PathBuf {
    let base = with_suffix(path, &format!(".{label}-{}", timestamp()));
    let mut candidate = base.clone();
    for n in 2.. {
        if !candidate.exists() {
            break;
        }
        candidate = with_suffix(&base, &format!("-{n}"));
    }
    candidate
}

/// Creates `dir` (and its parents) if missing and makes it the owner's alone (0700).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Whether a server answers on the admin socket `socket`: offline commands refuse then.
pub fn server_answers(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_names_are_stamped_and_never_taken() {
        let dir = std::env::temp_dir().join(format!("oxiscale-files-{}", rand::random::<u64>()));
        create_private_dir(&dir).unwrap();
        let db = dir.join("db.sqlite");
        let first = kept_name(&db, "backup");
        assert!(
            first.to_string_lossy().contains("db.sqlite.backup-20"),
            "{first:?}"
        );
        std::fs::write(&first, b"x").unwrap();
        let second = kept_name(&db, "backup");
        assert_ne!(second, first);
        assert!(!second.exists(), "{second:?} is free");
        std::fs::remove_dir_all(&dir).ok();
    }
}
