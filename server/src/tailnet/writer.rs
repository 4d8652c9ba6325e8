//! The writer: the one task that changes the tailnet. It applies whatever mutations are
//! queued under the write lock, commits their rows in one transaction, and only then
//! answers the callers and tells the listeners.
//!
//! It is supervised: a rule that panics is caught where it runs, its own changes are
//! dropped, the jobs queued after it run in the next batch, and the state is rebuilt from
//! the database (the panic may have left it half-changed). A failed commit rebuilds it the
//! same way. Whatever else panics restarts the loop from the database. The tailnet never
//! stops taking changes, and readers never see a half-applied rule.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, RwLock};

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::addresses::AddressPool;
use super::state::PolicyCompile;
use super::{Change, ChangeListener, Effects, Settings, State, read_lock, write_lock};
use crate::store::Store;

/// Most mutations applied in one batch (one transaction).
const MAX_BATCH: usize = 512;

pub(super) type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
pub(super) type Job = Box<dyn FnOnce(&mut State, &mut Effects) -> Completion + Send>;
pub(super) type Listeners = Arc<RwLock<Vec<Arc<dyn ChangeListener>>>>;

pub(super) struct Writer {
    pub state: Arc<RwLock<State>>,
    pub store: Store,
    pub listeners: Listeners,
    pub settings: Settings,
    pub pool: AddressPool,
}

/// What one batch did to the state.
struct Applied {
    fx: Effects,
    completions: Vec<Completion>,
    /// A rule panicked: the state may be half-changed and must be rebuilt.
    panicked: bool,
    /// The policy recompile the batch calls for, to run outside the lock.
    recompile: Option<PolicyCompile>,
}

impl Writer {
    /// Runs batches until every sender is gone.
    pub async fn supervise(self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            match AssertUnwindSafe(self.run(&mut jobs, &mut batch))
                .catch_unwind()
                .await
            {
                Ok(()) => return,
                Err(panic) => {
                    error!(
                        panic = describe(&*panic),
                        "the tailnet writer panicked; rebuilding the tailnet from the database"
                    );
                    // The applied jobs of the batch in flight went with the panic (their
                    // callers are told); those not applied yet stay in `batch` and run next.
                    self.rebuild().await;
                }
            }
        }
    }

    async fn run(&self, jobs: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
        loop {
            // Jobs left over from a batch a panic cut short go first.
            if batch.is_empty() && jobs.recv_many(batch, MAX_BATCH).await == 0 {
                return;
            }
            let Applied {
                mut fx,
                completions,
                mut panicked,
                recompile,
            } = self.apply(batch);
            if let Some(recompile) = recompile {
                // Compiling takes long on a large tailnet: not on the async workers, and
                // with no lock held, so readers go on meanwhile.
                match tokio::task::spawn_blocking(move || recompile.run()).await {
                    Ok(done) => write_lock(&self.state).finish_recompile(&mut fx, done),
                    Err(e) => {
                        error!(error = %e, "recompiling the policy failed inside the server");
                        panicked = true;
                    }
                }
            }
            match self.store.commit(&fx.ops).await {
                Ok(()) => {
                    if panicked {
                        self.rebuild().await;
                        fx.announce(Change::Visibility);
                    }
                    self.announce(&fx.changes);
                    for done in completions {
                        done(Ok(()));
                    }
                }
                Err(e) => {
                    // Memory ran ahead of the database: go back to what is on disk.
                    error!(error = %e, ops = fx.ops.len(), "commit failed; rebuilding the tailnet from the database");
                    self.rebuild().await;
                    self.announce(&[Change::Visibility]);
                    for done in completions {
                        done(Err(e.to_string()));
                    }
                }
            }
        }
    }

    /// Applies the jobs of `batch` in order under the write lock and, once, what the batch
    /// changed about the policy (auto-approvals; the recompile is returned). A job that
    /// panics ends the batch there: its own effects are dropped (its caller hears of it when
    /// its reply is dropped), and the jobs after it stay in `batch` for the next one.
    fn apply(&self, batch: &mut Vec<Job>) -> Applied {
        let mut fx = Effects::default();
        let mut completions = Vec::with_capacity(batch.len());
        let mut panicked = false;
        let mut state = write_lock(&self.state);
        let mut queued = std::mem::take(batch).into_iter();
        for job in queued.by_ref() {
            let mark = fx.mark();
            match catch_unwind(AssertUnwindSafe(|| job(&mut state, &mut fx))) {
                Ok(done) => completions.push(done),
                Err(panic) => {
                    error!(
                        panic = describe(&*panic),
                        "a tailnet rule panicked; its change is dropped"
                    );
                    fx.rollback(mark);
                    panicked = true;
                    break;
                }
            }
        }
        batch.extend(queued);
        let recompile = match catch_unwind(AssertUnwindSafe(|| state.finish_batch(&mut fx))) {
            Ok(recompile) => recompile,
            Err(panic) => {
                error!(panic = describe(&*panic), "finishing a batch panicked");
                panicked = true;
                None
            }
        };
        Applied {
            fx,
            completions,
            panicked,
            recompile,
        }
    }

    /// Replaces the state with what the database holds, keeping who is online and the
    /// policy in force. Should the policy panic on the rebuilt tailnet, every node is cut
    /// off: a broken rule never widens access.
    async fn rebuild(&self) {
        let loaded = match self.store.load().await {
            Ok(loaded) => loaded,
            Err(e) => {
                warn!(error = %e, "rebuilding the tailnet from the database failed");
                return;
            }
        };
        let mut state = write_lock(&self.state);
        let online: Vec<_> = state.nodes().filter(|n| n.online).map(|n| n.id).collect();
        let policy = state.policy().cloned();
        *state = State::new(self.settings.clone(), self.pool.clone(), loaded);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| state.restore_policy(policy))) {
            error!(
                panic = describe(&*panic),
                "the policy panicked on the rebuilt tailnet"
            );
            state.cut_off_everyone(
                "compiling the policy failed inside the server; every node is cut off until the policy is set again",
            );
        }
        let mut ignored = Effects::default();
        let now = time::OffsetDateTime::now_utc();
        for id in online {
            state.set_online(&mut ignored, id, true, now);
        }
    }

    fn announce(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        for listener in read_lock(&self.listeners).iter() {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| listener.on_changes(changes))) {
                error!(panic = describe(&*panic), "a change listener panicked");
            }
        }
    }
}

fn describe(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
