//! Where the policy comes from, and how a new one gets into force.
//!
//! `policy.mode: file` reads `policy.path` (HuJSON) at start and again whenever the file
//! changes (its modification time and size are looked at every second, its SHA-256 decides)
//! or the process gets SIGHUP. Without `policy.path` there is no policy: everyone reaches
//! everyone. `policy.mode: database` keeps every version in the `policies` table; the newest
//! is in force and `oxiscale policy set` adds one.
//!
//! Every new policy is parsed, compiled against the live tailnet and its `tests` evaluated
//! before it replaces the one in force; a refused policy changes nothing (the error names
//! the line and column). At start an invalid policy stops the server: it never falls back to
//! allow-all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oxiscale_policy::{Policy, PolicyError, report, topology_from_json};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

use crate::config::{PolicyConfig, PolicyMode};
use crate::store::StoreError;
use crate::tailnet::{DbOp, Tailnet, TailnetError};

/// How often the policy file is looked at.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum PolicyStoreError {
    /// The policy was refused; the one in force stays.
    #[error("invalid policy: {0}")]
    Invalid(#[from] PolicyError),
    /// The policy file is refused (at start, or on reload).
    #[error("policy file {path}: {source}")]
    InvalidFile { path: PathBuf, source: PolicyError },
    #[error("reading the policy file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the policy is kept in a file ({0}), not in the database: edit that file (it is reloaded when it changes and on SIGHUP), or set policy.mode: database"
    )]
    FileMode(String),
    #[error(transparent)]
    Tailnet(#[from] TailnetError),
    #[error("reading the policy from the database: {0}")]
    Store(#[from] StoreError),
}

/// What `policy get` shows.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    /// The policy text in force; `None`: no policy (everyone reaches everyone).
    pub policy: Option<String>,
    pub mode: PolicyMode,
    /// The file, in file mode.
    pub path: Option<PathBuf>,
    /// Set while the policy in force no longer compiles against the tailnet.
    pub problem: Option<String>,
}

/// Identifies a version of the policy file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

struct Inner {
    /// The text in force.
    text: Option<String>,
    /// The file version last looked at, and the hash of the content last tried (applied or
    /// refused), so a refused file is reported once, not every second.
    stamp: Option<FileStamp>,
    tried: Option<[u8; 32]>,
}

/// The policy's source and the one way to change the policy in force.
pub struct PolicyManager {
    mode: PolicyMode,
    path: Option<PathBuf>,
    tailnet: Arc<Tailnet>,
    /// Serialises changes (file watcher, SIGHUP, API) and holds what is in force.
    inner: Mutex<Inner>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn stamp_of(path: &Path) -> std::io::Result<FileStamp> {
    let meta = std::fs::metadata(path)?;
    Ok(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

impl PolicyManager {
    /// Loads the configured policy and puts it in force. An invalid policy file is an error
    /// (the server must not start without the policy it was given).
    pub async fn start(
        config: &PolicyConfig,
        tailnet: Arc<Tailnet>,
    ) -> Result<Arc<PolicyManager>, PolicyStoreError> {
        let path = match config.mode {
            PolicyMode::File => config.path.clone().filter(|p| !p.as_os_str().is_empty()),
            PolicyMode::Database => None,
        };
        let manager = Arc::new(PolicyManager {
            mode: config.mode,
            path,
            tailnet,
            inner: Mutex::new(Inner {
                text: None,
                stamp: None,
                tried: None,
            }),
        });
        match manager.mode {
            PolicyMode::File => {
                if let Some(path) = &manager.path {
                    manager.reload_file(true).await?;
                    info!(path = %path.display(), "policy loaded from file");
                } else {
                    info!(
                        "no policy file configured (policy.path): every node may reach every other node"
                    );
                }
            }
            PolicyMode::Database => {
                manager.reload_database(false).await?;
            }
        }
        Ok(manager)
    }

    pub fn mode(&self) -> PolicyMode {
        self.mode
    }

    pub async fn view(&self) -> PolicyView {
        let text = self.inner.lock().await.text.clone();
        PolicyView {
            policy: text,
            mode: self.mode,
            path: self.path.clone(),
            problem: self.tailnet.read(|s| s.policy_problem().map(str::to_owned)),
        }
    }

    /// Validates `text` against the live tailnet and puts it in force; `store` also writes
    /// it as the newest row. `run_tests: false` only for a policy that was accepted before
    /// (database mode at start: tests judge a policy when it is set, as headscale does).
    async fn apply(&self, text: &str, run_tests: bool, store: bool) -> Result<(), PolicyError> {
        let policy = Arc::new(Policy::parse(text)?);
        let row = store.then(|| text.to_owned());
        // Compiled with no lock held and off the async workers; the writer only swaps it in.
        let compile = self.tailnet.read(|s| s.compile_later(policy, run_tests));
        let compiled = tokio::task::spawn_blocking(move || compile.run())
            .await
            .map_err(|e| PolicyError {
                line: None,
                column: None,
                message: format!("compiling the policy failed inside the server: {e}"),
            })?;
        self.tailnet
            .mutate(move |s, fx| {
                let result = s.put_compiled_policy(fx, compiled);
                if let (Ok(()), Some(text)) = (&result, row) {
                    fx.write(DbOp::PutPolicy(text));
                }
                Ok(result)
            })
            .await
            .map_err(|e| PolicyError {
                line: None,
                column: None,
                message: e.to_string(),
            })?
    }

    /// `policy set` (database mode): a new version, in force once it is valid.
    pub async fn set(&self, text: String) -> Result<PolicyView, PolicyStoreError> {
        if self.mode == PolicyMode::File {
            return Err(PolicyStoreError::FileMode(
                self.path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "policy.path, which is not set".into()),
            ));
        }
        let mut inner = self.inner.lock().await;
        self.apply(&text, true, true).await?;
        inner.text = Some(text);
        drop(inner);
        info!("new policy stored and in force");
        Ok(self.view().await)
    }

    /// Re-reads the policy's source (SIGHUP, or the file changed). `force` tries the file
    /// again even if that content was refused before. Returns whether a new policy is in
    /// force.
    pub async fn reload(&self, force: bool) -> Result<bool, PolicyStoreError> {
        match self.mode {
            PolicyMode::File => self.reload_file(force).await,
            PolicyMode::Database => self.reload_database(true).await,
        }
    }

    async fn reload_database(&self, run_tests: bool) -> Result<bool, PolicyStoreError> {
        let mut inner = self.inner.lock().await;
        let latest = self.tailnet.store().latest_policy().await?;
        if latest == inner.text {
            return Ok(false);
        }
        match &latest {
            Some(text) => self.apply(text, run_tests, false).await?,
            None => {
                self.tailnet
                    .mutate(|s, fx| Ok(s.set_policy(fx, None)))
                    .await?
                    .map_err(PolicyStoreError::Invalid)?;
            }
        }
        inner.text = latest;
        Ok(true)
    }

    async fn reload_file(&self, force: bool) -> Result<bool, PolicyStoreError> {
        let Some(path) = self.path.clone() else {
            return Ok(false);
        };
        let mut inner = self.inner.lock().await;
        let read_err = |source| PolicyStoreError::Read {
            path: path.clone(),
            source,
        };
        let stamp = stamp_of(&path).map_err(read_err)?;
        let bytes = std::fs::read(&path).map_err(read_err)?;
        inner.stamp = Some(stamp);
        let hash = sha256(&bytes);
        if !force && inner.tried == Some(hash) {
            return Ok(false);
        }
        inner.tried = Some(hash);
        let invalid = |source| PolicyStoreError::InvalidFile {
            path: path.clone(),
            source,
        };
        let text = String::from_utf8(bytes).map_err(|_| {
            invalid(PolicyError {
                line: None,
                column: None,
                message: "the file is not UTF-8 text".into(),
            })
        })?;
        if inner.text.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        self.apply(&text, true, false).await.map_err(invalid)?;
        inner.text = Some(text);
        Ok(true)
    }

    /// Whether the file looks different from the version last read (cheap: no read).
    async fn file_touched(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let now = stamp_of(path).ok();
        let inner = self.inner.lock().await;
        now.is_some() && now != inner.stamp
    }

    /// `policy check` against the live tailnet: the per-node report, or why it is refused.
    pub fn check(&self, text: &str) -> Result<Value, PolicyError> {
        check_live(&self.tailnet, text)
    }

    /// Watches the file (file mode) and SIGHUP until `shutdown` flips.
    pub fn spawn_watchers(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        let manager = self.clone();
        tokio::spawn(async move {
            let mut triggers =
                crate::reload::Triggers::new(FILE_POLL_INTERVAL, "the policy", shutdown);
            while let Some(forced) = triggers.next().await {
                if !forced && !manager.file_touched().await {
                    continue;
                }
                match manager.reload(forced).await {
                    Ok(true) => info!(
                        reason = if forced { "SIGHUP" } else { "file changed" },
                        "new policy in force"
                    ),
                    Ok(false) => {
                        if forced {
                            info!("SIGHUP: the policy is unchanged")
                        }
                    }
                    Err(e) => warn!(error = %e, "policy change refused; the policy in force stays"),
                }
            }
        });
    }
}

/// Compiles `text` against the live tailnet (tests included) and reports per node.
pub fn check_live(tailnet: &Tailnet, text: &str) -> Result<Value, PolicyError> {
    let policy = Policy::parse(text)?;
    // The tailnet is read under the lock, the compile runs without it.
    let compile = tailnet.read(|s| s.compile_later(Arc::new(policy), true));
    let topology = compile.topology().clone();
    let compiled = compile.run().into_result()?;
    Ok(report(&compiled, &topology))
}

/// `policy check --topology`: no server involved. `topology` is the golden cases'
/// `topology` object, or a whole case holding one.
pub fn check_offline(text: &str, topology: &Value) -> Result<Value, PolicyError> {
    let policy = Policy::parse(text)?;
    let topo_json = topology.get("topology").unwrap_or(topology);
    let topo = topology_from_json(topo_json).map_err(|e| PolicyError {
        message: format!("topology: {}", e.message),
        ..e
    })?;
    let compiled = policy.compile(&topo)?;
    Ok(report(&compiled, &topo))
}
