//! The tailnet: users, nodes, keys and the rules that govern them.
//!
//! [`State`] holds the rules (pure, synchronous); [`Tailnet`] runs them. Reads take a short
//! read lock. Writes go to a single actor that applies whatever mutations are queued, commits
//! their rows in one transaction (group commit: a burst of registrations costs one fsync),
//! and only then replies to the callers and announces the changes to listeners (map
//! streams, the console). No lock is held while the database is written or a map is built.

pub mod access;
pub mod addresses;
pub mod dns;
pub mod effects;
pub mod feed;
pub mod model;
pub mod names;
pub mod nodes;
pub mod secret;
pub mod state;

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

pub use effects::{Change, DbOp, Effects};
pub use state::{RegisterOutcome, Settings, State, TailnetError};

use crate::store::{Store, StoreError};
use addresses::AddressPool;

/// Most mutations applied in one batch (one transaction).
const MAX_BATCH: usize = 512;

/// Something that wants to hear about committed changes. Called on the actor task: it must
/// only record the changes and wake whoever does the work.
pub trait ChangeListener: Send + Sync {
    fn on_changes(&self, changes: &[Change]);
}

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&mut State, &mut Effects) -> Completion + Send>;

pub struct Tailnet {
    state: Arc<RwLock<State>>,
    jobs: mpsc::Sender<Job>,
    listeners: Arc<RwLock<Vec<Arc<dyn ChangeListener>>>>,
    store: Store,
}

impl Tailnet {
    /// Loads the tailnet from `store` and starts the writer.
    pub async fn start(
        store: Store,
        settings: Settings,
        pool: AddressPool,
    ) -> Result<Arc<Tailnet>, StoreError> {
        let loaded = store.load().await?;
        let state = Arc::new(RwLock::new(State::new(
            settings.clone(),
            pool.clone(),
            loaded,
        )));
        let listeners: Arc<RwLock<Vec<Arc<dyn ChangeListener>>>> = Arc::default();
        let (jobs, rx) = mpsc::channel(4096);
        let writer = Writer {
            state: state.clone(),
            store: store.clone(),
            listeners: listeners.clone(),
            settings,
            pool,
        };
        tokio::spawn(writer.run(rx));
        Ok(Arc::new(Tailnet {
            state,
            jobs,
            listeners,
            store,
        }))
    }

    pub fn subscribe(&self, listener: Arc<dyn ChangeListener>) {
        write_lock(&self.listeners).push(listener);
    }

    /// Announces changes that are not tailnet state (DNS or DERP configuration), which
    /// need no commit.
    pub fn broadcast(&self, changes: &[Change]) {
        for l in read_lock(&self.listeners).iter() {
            l.on_changes(changes);
        }
    }

    /// Runs `f` with a consistent view. Keep it short: writers wait for it.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&read_lock(&self.state))
    }

    /// Applies `f` through the writer. Returns once its effects are on disk. If `f` fails,
    /// nothing it recorded is written or announced.
    pub async fn mutate<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State, &mut Effects) -> Result<T, TailnetError> + Send + 'static,
    ) -> Result<T, TailnetError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |state, fx| {
            let mark = fx.mark();
            let result = f(state, fx);
            if result.is_err() {
                fx.rollback(mark);
            }
            Box::new(move |committed| {
                let _ = tx.send(match committed {
                    Ok(()) => result,
                    Err(e) => Err(TailnetError::Storage(e)),
                });
            })
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| TailnetError::Storage("the server is shutting down".into()))?;
        rx.await
            .map_err(|_| TailnetError::Storage("the writer stopped".into()))?
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Writer {
    state: Arc<RwLock<State>>,
    store: Store,
    listeners: Arc<RwLock<Vec<Arc<dyn ChangeListener>>>>,
    settings: Settings,
    pool: AddressPool,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let mut fx = Effects::default();
            let completions: Vec<Completion> = {
                let mut state = write_lock(&self.state);
                let done = batch
                    .drain(..)
                    .map(|job| job(&mut state, &mut fx))
                    .collect();
                // Once per batch: recompile the policy if the batch changed its inputs.
                state.finish_batch(&mut fx);
                done
            };
            match self.store.commit(&fx.ops).await {
                Ok(()) => {
                    if !fx.changes.is_empty() {
                        for l in read_lock(&self.listeners).iter() {
                            l.on_changes(&fx.changes);
                        }
                    }
                    for done in completions {
                        done(Ok(()));
                    }
                }
                Err(e) => {
                    // Memory ran ahead of the database: go back to what is on disk.
                    error!(error = %e, ops = fx.ops.len(), "commit failed; reloading the tailnet from the database");
                    match self.store.load().await {
                        Ok(loaded) => {
                            let mut state = write_lock(&self.state);
                            let pending_online: Vec<_> =
                                state.nodes().filter(|n| n.online).map(|n| n.id).collect();
                            let policy = state.policy().cloned();
                            *state = State::new(self.settings.clone(), self.pool.clone(), loaded);
                            state.restore_policy(policy);
                            let mut ignored = Effects::default();
                            let now = time::OffsetDateTime::now_utc();
                            for id in pending_online {
                                state.set_online(&mut ignored, id, true, now);
                            }
                        }
                        Err(reload) => {
                            warn!(error = %reload, "reload after a failed commit failed too")
                        }
                    }
                    for l in read_lock(&self.listeners).iter() {
                        l.on_changes(&[Change::Visibility]);
                    }
                    for done in completions {
                        done(Err(e.to_string()));
                    }
                }
            }
        }
    }
}
