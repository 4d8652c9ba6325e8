//! Local console administrators and the one-time setup link, in the server's SQLite
//! database. Passwords are kept only as argon2id PHC strings; setup tokens only as SHA-256.

use std::time::Duration;

use app::api::Role;
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};
use time::OffsetDateTime;

/// How long a setup link printed at start stays usable.
pub const SETUP_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Shortest password accepted for a console administrator.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted: hashing is deliberately slow, so unbounded input is a DoS.
pub const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid administrator name {0:?}: use 1 to 64 letters, digits, '.', '-', '_' or '@'")]
    InvalidName(String),
    #[error(
        "the password is too short: at least {MIN_PASSWORD_CHARS} characters (and at most {MAX_PASSWORD_BYTES} bytes)"
    )]
    WeakPassword,
    #[error("an administrator named {0:?} already exists")]
    Exists(String),
    #[error("no administrator named {0:?}")]
    NotFound(String),
    #[error("the setup link is invalid, already used or expired")]
    BadSetupToken,
    #[error("an administrator already exists; the setup link is no longer accepted")]
    SetupDone,
    #[error("unknown role {0:?}: owner, admin, network_admin, it_admin or auditor")]
    UnknownRole(String),
    #[error(
        "a local account cannot be a member: members are people who sign in through the identity provider and own machines"
    )]
    MemberAccount,
    #[error("hashing the password failed: {0}")]
    Hash(String),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// An administrator as listed (never with the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAccount {
    pub id: u64,
    pub name: String,
    /// What the account may do in the console (owner unless created otherwise).
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login: Option<OffsetDateTime>,
}

/// Administrator accounts over the server's pool.
#[derive(Clone)]
pub struct Accounts {
    pool: SqlitePool,
}

/// Verified against when the name is unknown, so that both cases cost one argon2 run and
/// the timing does not tell which names exist.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password("not a password: the hash compared for unknown names")
            .expect("argon2 hashes a constant")
    })
}

pub fn validate_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AccountError::InvalidName(name.chars().take(80).collect()))
    }
}

pub fn validate_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::WeakPassword);
    }
    Ok(())
}

/// An argon2id hash (the crate's defaults: 19 MiB, 2 passes) with a random salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Compares in constant time (argon2's verifier does); a malformed stored hash is a
/// mismatch, never a panic.
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Setup tokens are 256 random bits: the SHA-256 the tailnet's own keys are stored with.
fn token_hash(token: &str) -> Vec<u8> {
    crate::tailnet::secret::digest(token).to_vec()
}

pub use crate::tailnet::secret::random_token;

fn account_from_row(r: &sqlx::sqlite::SqliteRow) -> AdminAccount {
    let ts = |v: i64| OffsetDateTime::from_unix_timestamp(v).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    AdminAccount {
        id: r.get::<i64, _>("id") as u64,
        name: r.get("name"),
        // A role this build does not know (written by a newer one) grants the least.
        role: Role::parse(r.get::<&str, _>("role")).unwrap_or(Role::Auditor),
        created_at: ts(r.get("created_at")),
        last_login: r.get::<Option<i64>, _>("last_login").map(ts),
    }
}

impl Accounts {
    pub fn new(pool: SqlitePool) -> Accounts {
        Accounts { pool }
    }

    pub async fn any_exists(&self) -> Result<bool, AccountError> {
        Ok(sqlx::query("SELECT 1 FROM console_admins LIMIT 1")
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    pub async fn list(&self) -> Result<Vec<AdminAccount>, AccountError> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at, last_login FROM console_admins ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(account_from_row).collect())
    }

    /// The account with this id, if it still exists (sessions are checked against it).
    pub async fn by_id(&self, id: u64) -> Result<Option<AdminAccount>, AccountError> {
        let row = sqlx::query(
            "SELECT id, name, role, created_at, last_login FROM console_admins WHERE id = ?",
        )
        .bind(id as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(account_from_row))
    }

    pub async fn create(
        &self,
        name: &str,
        password: &str,
        role: Role,
    ) -> Result<AdminAccount, AccountError> {
        validate_name(name)?;
        validate_password(password)?;
        if role == Role::Member {
            return Err(AccountError::MemberAccount);
        }
        let hash = hash_blocking(password.to_owned()).await?;
        let mut tx = self.pool.begin().await?;
        let account = insert_admin(&mut tx, name, &hash, role).await?;
        tx.commit().await?;
        Ok(account)
    }

    pub async fn delete(&self, name: &str) -> Result<(), AccountError> {
        let done = sqlx::query("DELETE FROM console_admins WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(AccountError::NotFound(name.to_owned()));
        }
        Ok(())
    }

    /// The account if `password` is its password. Unknown names cost the same argon2 run.
    pub async fn verify(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<AdminAccount>, AccountError> {
        let row = sqlx::query(
            "SELECT id, name, role, created_at, last_login, password_hash FROM console_admins WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let (account, hash) = match &row {
            Some(r) => (
                Some(account_from_row(r)),
                r.get::<String, _>("password_hash"),
            ),
            None => (None, dummy_hash().to_owned()),
        };
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        match account {
            Some(account) if matches => {
                sqlx::query("UPDATE console_admins SET last_login = ? WHERE id = ?")
                    .bind(OffsetDateTime::now_utc().unix_timestamp())
                    .bind(account.id as i64)
                    .execute(&self.pool)
                    .await?;
                Ok(Some(account))
            }
            _ => Ok(None),
        }
    }

    /// A new setup token, replacing any earlier one, stored hashed; `None` once an
    /// administrator exists.
    pub async fn issue_setup_token(&self) -> Result<Option<String>, AccountError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM console_setup_tokens")
            .execute(&mut *tx)
            .await?;
        if sqlx::query("SELECT 1 FROM console_admins LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
        {
            tx.commit().await?;
            return Ok(None);
        }
        let token = random_token();
        let expires = OffsetDateTime::now_utc() + SETUP_TOKEN_LIFETIME;
        sqlx::query("INSERT INTO console_setup_tokens (hash, expires_at) VALUES (?, ?)")
            .bind(token_hash(&token))
            .bind(expires.unix_timestamp())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(token))
    }

    /// Creates the first administrator with a setup token. The token is consumed and the
    /// "no administrator yet" condition checked in one transaction, so two racing requests
    /// cannot both succeed.
    pub async fn complete_setup(
        &self,
        token: &str,
        name: &str,
        password: &str,
    ) -> Result<AdminAccount, AccountError> {
        validate_name(name)?;
        validate_password(password)?;
        let hash = hash_blocking(password.to_owned()).await?;
        let mut tx = self.pool.begin().await?;
        // A write first, so this transaction holds the write lock from here on.
        let consumed =
            sqlx::query("DELETE FROM console_setup_tokens WHERE hash = ? AND expires_at > ?")
                .bind(token_hash(token))
                .bind(OffsetDateTime::now_utc().unix_timestamp())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let exists = sqlx::query("SELECT 1 FROM console_admins LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if exists {
            sqlx::query("DELETE FROM console_setup_tokens")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Err(AccountError::SetupDone);
        }
        if consumed == 0 {
            return Err(AccountError::BadSetupToken);
        }
        // The first administrator, from the setup link, owns the server.
        let account = insert_admin(&mut tx, name, &hash, Role::Owner).await?;
        sqlx::query("DELETE FROM console_setup_tokens")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(account)
    }
}

async fn hash_blocking(password: String) -> Result<String, AccountError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| AccountError::Hash(e.to_string()))?
}

async fn insert_admin(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    name: &str,
    hash: &str,
    role: Role,
) -> Result<AdminAccount, AccountError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let inserted = sqlx::query(
        "INSERT INTO console_admins (name, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(name)
    .bind(hash)
    .bind(role.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(done) => Ok(AdminAccount {
            id: done.last_insert_rowid() as u64,
            name: name.to_owned(),
            role,
            created_at: OffsetDateTime::from_unix_timestamp(now)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            last_login: None,
        }),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(AccountError::Exists(name.to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_restricted_to_a_safe_alphabet() {
        assert!(validate_name("alice").is_ok());
        assert!(validate_name("ops.admin-1@example.com").is_ok());
        for bad in ["", "a b", "a/b", "<script>", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_hash_is_argon2id_and_verifies_only_the_password() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterY", &hash));
        assert!(!verify_password("anything", "not a phc string"));
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert!(validate_password("short").is_err());
        assert!(validate_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(validate_password("twelve chars").is_ok());
    }
}
