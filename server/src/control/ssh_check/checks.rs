//! The checks waiting for their owner and the passes given: bounded in number and time,
//! kept in this process's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::policy::PolicyManager;
use crate::tailnet::model::{NodeId, UserId};

/// Pending checks at most, tailnet-wide; a new one beyond is refused (the oldest stay).
pub const MAX_PENDING: usize = 256;
/// Pending checks at most for one destination node, so that one node cannot take them all.
pub const MAX_PENDING_PER_DESTINATION: usize = 32;
/// A pending check not answered within this is rejected and forgotten.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(600);
/// Longest one wait request is held before a "still waiting" answer.
pub const WAIT_PER_POLL: Duration = Duration::from_secs(55);
/// How long a passed check counts when the policy's check rules name no `checkPeriod`
/// (Tailscale's default).
pub const DEFAULT_CHECK_PERIOD: Duration = Duration::from_secs(12 * 3600);
/// The longest `checkPeriod` the policy language allows; passes older are forgotten.
pub const MAX_CHECK_PERIOD: Duration = Duration::from_secs(168 * 3600);
/// Passes remembered at most; beyond it the oldest is forgotten (its owner is asked again).
pub const MAX_PASSES: usize = 10_000;
/// Longest local user name accepted (Linux allows 32 bytes).
pub const MAX_LOCAL_USER_BYTES: usize = 64;
/// Console path of the page where a check is answered.
pub const PAGE_PREFIX: &str = "/ssh-check/";
pub(super) const PATH_PREFIX: &str = "/machine/ssh/action/";
/// Length of a wait id (hex of 16 random bytes).
pub(super) const ID_CHARS: usize = 32;

/// What one check is about: who asks to log in where as whom, and the person who answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckKey {
    pub src: NodeId,
    pub dst: NodeId,
    pub local_user: String,
    /// The source node's owner at the time of the request.
    pub owner: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Waiting,
    Approved { by: String },
    Rejected(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("too many SSH checks are waiting ({0} at most); try again in a few minutes")]
    Full(usize),
    #[error(
        "too many SSH checks are waiting for this machine ({0} at most); try again in a few minutes"
    )]
    FullForDestination(usize),
    #[error("this SSH check is unknown or has expired")]
    Unknown,
    #[error("this SSH check was already answered")]
    Decided,
}

/// A check as the console page shows it.
#[derive(Debug, Clone)]
pub struct CheckView {
    pub key: CheckKey,
    pub outcome: Outcome,
}

/// A newly opened (or reused) pending check.
#[derive(Debug, Clone)]
pub struct Opened {
    pub id: String,
    pub token: String,
}

struct Pending {
    token: String,
    key: CheckKey,
    created: Instant,
    outcome: watch::Sender<Outcome>,
}

#[derive(Default)]
struct Inner {
    /// Wait id → check.
    pending: HashMap<String, Pending>,
    /// Page token → wait id.
    by_token: HashMap<String, String>,
    /// Passed checks and when.
    passes: HashMap<CheckKey, Instant>,
}

/// The pending checks and recent passes of this process.
pub struct SshChecks {
    inner: Mutex<Inner>,
    lifetime: Duration,
    /// Where the policy text in force is read, for its `checkPeriod`s (set at start).
    policy: OnceLock<Arc<PolicyManager>>,
    /// The check period of the last policy text seen: (its hash, the period).
    period: Mutex<Option<([u8; 32], Duration)>>,
}

impl Default for SshChecks {
    fn default() -> Self {
        SshChecks {
            inner: Mutex::default(),
            lifetime: PENDING_LIFETIME,
            policy: OnceLock::new(),
            period: Mutex::new(None),
        }
    }
}

/// The check period that applies: the shortest `checkPeriod` of the policy's check rules
/// (`"always"` is zero: every connection is checked), [`DEFAULT_CHECK_PERIOD`] for a rule
/// that names none, at most [`MAX_CHECK_PERIOD`]. Shortest, because which rule a connection
/// matched is not known here: a pass never counts longer than any check rule allows.
pub fn check_period_of(policy: &oxiscale_policy::Policy) -> Duration {
    policy
        .ssh_check_periods()
        .into_iter()
        .map(|p| match p {
            None => DEFAULT_CHECK_PERIOD,
            Some(ns) => Duration::from_nanos(ns.max(0) as u64).min(MAX_CHECK_PERIOD),
        })
        .min()
        .unwrap_or(DEFAULT_CHECK_PERIOD)
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl SshChecks {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `checkPeriod`s from the policy in force from now on.
    pub fn use_policy(&self, policy: Arc<PolicyManager>) {
        let _ = self.policy.set(policy);
    }

    /// The check period of the policy in force (see [`check_period_of`]); the default
    /// without a policy manager.
    pub async fn check_period(&self) -> Duration {
        let Some(policy) = self.policy.get() else {
            return DEFAULT_CHECK_PERIOD;
        };
        let Some(text) = policy.view().await.policy else {
            return DEFAULT_CHECK_PERIOD;
        };
        let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let mut cached = self.period.lock().unwrap_or_else(|p| p.into_inner());
        match *cached {
            Some((h, period)) if h == hash => period,
            _ => {
                // The policy in force parsed when it was put in force; were it ever not to,
                // every connection is checked.
                let period = oxiscale_policy::Policy::parse(&text)
                    .map(|p| check_period_of(&p))
                    .unwrap_or(Duration::ZERO);
                *cached = Some((hash, period));
                period
            }
        }
    }

    /// Forgets expired checks (waking their waiters with a rejection) and old passes.
    fn prune(&self, inner: &mut Inner, now: Instant) {
        let lifetime = self.lifetime;
        let by_token = &mut inner.by_token;
        inner.pending.retain(|_, p| {
            let live = now.saturating_duration_since(p.created) < lifetime;
            if !live {
                p.outcome.send_if_modified(|o| {
                    if *o == Outcome::Waiting {
                        *o = Outcome::Rejected("the SSH check expired".into());
                        true
                    } else {
                        false
                    }
                });
                by_token.remove(&p.token);
            }
            live
        });
        inner
            .passes
            .retain(|_, at| now.saturating_duration_since(*at) < MAX_CHECK_PERIOD);
    }

    /// Whether the owner passed this check within `period`.
    pub fn passed(&self, key: &CheckKey, now: Instant, period: Duration) -> bool {
        let mut inner = self.lock();
        self.prune(&mut inner, now);
        inner
            .passes
            .get(key)
            .is_some_and(|at| now.saturating_duration_since(*at) < period)
    }

    /// Opens a pending check for `key`, or reuses the one still waiting for it. New ones
    /// beyond the bounds are refused.
    pub fn open(&self, key: CheckKey, now: Instant) -> Result<Opened, CheckError> {
        let mut inner = self.lock();
        self.prune(&mut inner, now);
        if let Some((id, p)) = inner
            .pending
            .iter()
            .find(|(_, p)| p.key == key && *p.outcome.borrow() == Outcome::Waiting)
        {
            return Ok(Opened {
                id: id.clone(),
                token: p.token.clone(),
            });
        }
        if inner.pending.len() >= MAX_PENDING {
            return Err(CheckError::Full(MAX_PENDING));
        }
        let for_dst = inner
            .pending
            .values()
            .filter(|p| p.key.dst == key.dst)
            .count();
        if for_dst >= MAX_PENDING_PER_DESTINATION {
            return Err(CheckError::FullForDestination(MAX_PENDING_PER_DESTINATION));
        }
        let id = random_hex();
        let token = crate::tailnet::secret::random_token();
        inner.by_token.insert(token.clone(), id.clone());
        inner.pending.insert(
            id.clone(),
            Pending {
                token: token.clone(),
                key,
                created: now,
                outcome: watch::channel(Outcome::Waiting).0,
            },
        );
        Ok(Opened { id, token })
    }

    /// The check behind wait id `id`, if it is for `src` → `dst`: what it is about, its
    /// outcome as it changes, and when it expires.
    pub fn watch(
        &self,
        id: &str,
        src: NodeId,
        dst: NodeId,
        now: Instant,
    ) -> Result<(CheckKey, watch::Receiver<Outcome>, Instant), CheckError> {
        let mut inner = self.lock();
        self.prune(&mut inner, now);
        match inner.pending.get(id) {
            Some(p) if p.key.src == src && p.key.dst == dst => Ok((
                p.key.clone(),
                p.outcome.subscribe(),
                p.created + self.lifetime,
            )),
            _ => Err(CheckError::Unknown),
        }
    }

    /// The check behind a page token.
    pub fn by_token(&self, token: &str, now: Instant) -> Option<CheckView> {
        let mut inner = self.lock();
        self.prune(&mut inner, now);
        let id = inner.by_token.get(token)?;
        let p = inner.pending.get(id)?;
        Some(CheckView {
            key: p.key.clone(),
            outcome: p.outcome.borrow().clone(),
        })
    }

    /// Answers the check behind a page token, once. An approval counts as a pass for the
    /// check period.
    pub fn decide(
        &self,
        token: &str,
        outcome: Outcome,
        now: Instant,
    ) -> Result<CheckKey, CheckError> {
        let mut inner = self.lock();
        self.prune(&mut inner, now);
        let id = inner.by_token.get(token).ok_or(CheckError::Unknown)?;
        let p = inner.pending.get(id).ok_or(CheckError::Unknown)?;
        if *p.outcome.borrow() != Outcome::Waiting {
            return Err(CheckError::Decided);
        }
        let key = p.key.clone();
        let approved = matches!(outcome, Outcome::Approved { .. });
        p.outcome.send_replace(outcome);
        if approved {
            if inner.passes.len() >= MAX_PASSES
                && let Some(oldest) = inner
                    .passes
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
            {
                inner.passes.remove(&oldest);
            }
            inner.passes.insert(key.clone(), now);
        }
        Ok(key)
    }

    /// Pending checks (answered ones included, until they expire).
    pub fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }
}
