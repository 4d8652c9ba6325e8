//! The audit log: every administrative change, who made it (a local console account, a
//! person signed in through the identity provider, an API key, the CLI on the admin socket),
//! what it was, when, and the thing before and after. Kept in the server's database
//! (`audit_log`), shown in the console, exported as JSON lines by the CLI and the API.
//!
//! Who acts is request context: each edge (console guard, API-key check, admin socket)
//! runs its handler inside [`acting_as`], and the admin service records with [`current`].
//! Secrets never enter the log: callers record views with secrets masked.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Row, SqlitePool};
use time::OffsetDateTime;

/// How the person or program that made a change proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A local console account (name).
    LocalAdmin,
    /// A person signed in through the identity provider (email or user name).
    Sso,
    /// A REST API key (its prefix).
    ApiKey,
    /// The CLI over the admin socket (whoever may open the socket).
    Cli,
    /// The server itself, or a change with no actor attached (a bug to fix where seen).
    Server,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::LocalAdmin => "local_admin",
            ActorKind::Sso => "sso",
            ActorKind::ApiKey => "api_key",
            ActorKind::Cli => "cli",
            ActorKind::Server => "server",
        }
    }

    fn parse(s: &str) -> ActorKind {
        match s {
            "local_admin" => ActorKind::LocalAdmin,
            "sso" => ActorKind::Sso,
            "api_key" => ActorKind::ApiKey,
            "cli" => ActorKind::Cli,
            _ => ActorKind::Server,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    pub name: String,
}

impl Actor {
    pub fn new(kind: ActorKind, name: impl Into<String>) -> Actor {
        Actor {
            kind,
            name: name.into(),
        }
    }

    fn server() -> Actor {
        Actor::new(ActorKind::Server, "oxiscale")
    }
}

tokio::task_local! {
    static ACTOR: Actor;
}

/// Runs `f` with `actor` as the one who acts, for every change it records.
pub async fn acting_as<F: std::future::Future>(actor: Actor, f: F) -> F::Output {
    ACTOR.scope(actor, f).await
}

/// Who acts in the current request.
pub fn current() -> Actor {
    ACTOR
        .try_with(Clone::clone)
        .unwrap_or_else(|_| Actor::server())
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: Actor,
    /// What was done, as `noun.verb` (`node.rename`, `policy.set`).
    pub action: String,
    /// What it was done to (`node 7`, `user alice`).
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Which entries to list (every field optional; newest first).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Substring of the actor's name.
    pub actor: Option<String>,
    /// Prefix of the action (`node.` for every node change).
    pub action: Option<String>,
    /// Substring of the target.
    pub target: Option<String>,
    /// Only entries at or after this RFC 3339 time.
    pub since: Option<String>,
    /// At most this many (default and maximum [`MAX_LIST`]).
    pub limit: Option<u32>,
}

/// The most entries one listing returns.
pub const MAX_LIST: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("since {0:?} is not an RFC 3339 time")]
    BadSince(String),
}

#[derive(Clone)]
pub struct AuditLog {
    pool: SqlitePool,
}

impl AuditLog {
    pub fn new(pool: SqlitePool) -> AuditLog {
        AuditLog { pool }
    }

    /// Records a change by whoever acts in the current request.
    pub async fn record(
        &self,
        action: &str,
        target: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Result<(), AuditError> {
        let actor = current();
        sqlx::query(
            "INSERT INTO audit_log (at, actor_kind, actor, action, target, before, after)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(OffsetDateTime::now_utc().unix_timestamp())
        .bind(actor.kind.as_str())
        .bind(&actor.name)
        .bind(action)
        .bind(target)
        .bind(before.map(|v| v.to_string()))
        .bind(after.map(|v| v.to_string()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, AuditError> {
        let since = match filter.since.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| AuditError::BadSince(s.to_owned()))?
                .unix_timestamp(),
            None => i64::MIN,
        };
        let limit = filter.limit.unwrap_or(MAX_LIST).clamp(1, MAX_LIST);
        let like = |s: &Option<String>, prefix_only: bool| {
            let escaped = s
                .as_deref()
                .unwrap_or_default()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            if prefix_only {
                format!("{escaped}%")
            } else {
                format!("%{escaped}%")
            }
        };
        let rows = sqlx::query(
            "SELECT id, at, actor_kind, actor, action, target, before, after FROM audit_log
             WHERE at >= $1 AND actor LIKE $2 ESCAPE '\\' AND action LIKE $3 ESCAPE '\\'
               AND target LIKE $4 ESCAPE '\\'
             ORDER BY id DESC LIMIT $5",
        )
        .bind(since)
        .bind(like(&filter.actor, false))
        .bind(like(&filter.action, true))
        .bind(like(&filter.target, false))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let json = |col: &str| {
                    r.get::<Option<String>, _>(col)
                        .and_then(|t| serde_json::from_str(&t).ok())
                };
                AuditEntry {
                    id: r.get::<i64, _>("id") as u64,
                    at: OffsetDateTime::from_unix_timestamp(r.get("at"))
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    actor: Actor::new(
                        ActorKind::parse(r.get("actor_kind")),
                        r.get::<String, _>("actor"),
                    ),
                    action: r.get("action"),
                    target: r.get("target"),
                    before: json("before"),
                    after: json("after"),
                }
            })
            .collect())
    }
}

/// The entries as JSON lines, oldest first (the export format).
pub fn json_lines(entries: &[AuditEntry]) -> String {
    let mut out = String::new();
    for e in entries.iter().rev() {
        out.push_str(&serde_json::to_string(e).expect("entries serialise"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn log() -> AuditLog {
        let dir = std::env::temp_dir().join(format!("oxiscale-audit-{}", rand::random::<u64>()));
        let store = crate::store::Store::open_sqlite(&dir.join("db.sqlite"), true)
            .await
            .unwrap();
        AuditLog::new(store.pool().clone())
    }

    #[tokio::test]
    async fn changes_are_recorded_with_the_actor_of_the_request() {
        let log = log().await;
        acting_as(Actor::new(ActorKind::ApiKey, "oxsapi-abcd"), async {
            log.record(
                "node.rename",
                "node 7",
                Some(serde_json::json!({"name": "a"})),
                Some(serde_json::json!({"name": "b"})),
            )
            .await
            .unwrap();
        })
        .await;
        // Outside any request: the server itself.
        log.record("node.expire", "node 8", None, None)
            .await
            .unwrap();
        acting_as(Actor::new(ActorKind::Sso, "alice@example.com"), async {
            log.record("policy.set", "policy", None, None)
                .await
                .unwrap();
        })
        .await;

        let all = log.list(&AuditFilter::default()).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].action, "policy.set", "newest first");
        assert_eq!(all[2].actor, Actor::new(ActorKind::ApiKey, "oxsapi-abcd"));
        assert_eq!(all[2].before, Some(serde_json::json!({"name": "a"})));
        assert_eq!(all[1].actor.kind, ActorKind::Server);

        let nodes = log
            .list(&AuditFilter {
                action: Some("node.".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(nodes.len(), 2);
        let alice = log
            .list(&AuditFilter {
                actor: Some("alice".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(alice.len(), 1);
        // Wildcards in a filter are literal.
        let none = log
            .list(&AuditFilter {
                action: Some("%".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty());
        assert!(
            log.list(&AuditFilter {
                since: Some("yesterday".into()),
                ..Default::default()
            })
            .await
            .is_err()
        );

        let lines = json_lines(&all);
        assert_eq!(lines.lines().count(), 3);
        assert!(
            lines.lines().next().unwrap().contains("node.rename"),
            "oldest first"
        );
    }
}
