//! The tailnet: users, nodes, keys and the rules that govern them.
//!
//! [`State`] holds the rules (pure, synchronous); [`Tailnet`] runs them. Reads take a short
//! read lock. Writes go to a single actor that applies whatever mutations are queued, commits
//! their rows in one transaction (group commit: a burst of registrations costs one fsync),
//! and only then replies to the callers and announces the changes to listeners (map
//! streams, the console). No lock is held while the database is written, a map is built or
//! the policy is compiled. The writer is supervised (`writer`): a panicking rule changes
//! nothing.

pub mod access;
pub mod addresses;
pub mod attributes;
pub mod dns;
pub mod effects;
pub mod feed;
pub mod model;
pub mod names;
pub mod nodes;
pub mod secret;
pub mod state;
mod writer;

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::{mpsc, oneshot};

pub use effects::{Change, DbOp, Effects};
pub use state::{RegisterOutcome, Settings, State, TailnetError};

use crate::store::{Store, StoreError};
use addresses::AddressPool;
use writer::{Job, Listeners, Writer};

/// Something that wants to hear about committed changes. Called on the actor task: it must
/// only record the changes and wake whoever does the work.
pub trait ChangeListener: Send + Sync {
    fn on_changes(&self, changes: &[Change]);
}

pub struct Tailnet {
    state: Arc<RwLock<State>>,
    jobs: mpsc::Sender<Job>,
    listeners: Listeners,
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
        let listeners: Listeners = Arc::default();
        let (jobs, rx) = mpsc::channel(4096);
        let writer = Writer {
            state: state.clone(),
            store: store.clone(),
            listeners: listeners.clone(),
            settings,
            pool,
        };
        tokio::spawn(writer.supervise(rx));
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
        // The reply is dropped unanswered only when the rule panicked (the writer logged it).
        rx.await.map_err(|_| {
            TailnetError::Internal("the change failed inside the server (see its log)".into())
        })?
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
