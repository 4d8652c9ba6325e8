//! Interactive logins waiting for an administrator or an identity provider: the client
//! waits on one while someone vouches for it, rejects it, or it times out. One per machine,
//! a bounded number in all, each for at most `PENDING_LOGIN_TTL`.

use std::time::Duration;

use oxiscale_tailcfg::{Hostinfo, MachinePublic, NodePublic};
use time::OffsetDateTime;
use tokio::sync::watch;

use super::super::effects::Effects;
use super::super::model::{NodeId, RegisterMethod, UserId};
use super::registration::{KeyExpiry, Owner, Registration};
use super::{State, TailnetError, not_found};

/// How long an interactive login may stay pending.
pub const PENDING_LOGIN_TTL: Duration = Duration::from_secs(15 * 60);
/// Interactive logins waiting at once. Anyone can start one (a machine key costs nothing)
/// and each holds its machine's Hostinfo until it completes or times out.
pub const MAX_PENDING_LOGINS: usize = 1_000;

/// A registration waiting for an administrator (or, later, an identity provider).
#[derive(Debug)]
pub struct PendingLogin {
    pub machine: MachinePublic,
    pub node_key: NodePublic,
    pub hostinfo: Hostinfo,
    pub ephemeral: bool,
    pub requested_expiry: Option<OffsetDateTime>,
    pub created: OffsetDateTime,
    pub done: watch::Sender<Option<Result<NodeId, String>>>,
}

impl State {
    /// A receiver that resolves when the pending login `auth_id` of `machine` completes.
    pub fn watch_login(
        &self,
        auth_id: &str,
        machine: MachinePublic,
    ) -> Option<watch::Receiver<Option<Result<NodeId, String>>>> {
        self.pending
            .get(auth_id)
            .filter(|p| p.machine == machine)
            .map(|p| p.done.subscribe())
    }

    pub fn pending_login(&self, auth_id: &str) -> Option<&PendingLogin> {
        self.pending.get(auth_id)
    }

    /// The identity provider vouches for a pending login: the machine joins as `user`'s node
    /// (or re-authenticates the node it already has).
    pub fn complete_login(
        &mut self,
        fx: &mut Effects,
        auth_id: &str,
        user: UserId,
        key_expiry: KeyExpiry,
        now: OffsetDateTime,
    ) -> Result<NodeId, TailnetError> {
        let method = RegisterMethod::Interactive;
        self.complete_login_by(fx, auth_id, user, key_expiry, method, now)
    }

    /// [`State::complete_login`], saying who vouched: `RegisterMethod::Cli` for an
    /// administrator (CLI or REST API, by auth id), as headscale records it.
    pub fn complete_login_by(
        &mut self,
        fx: &mut Effects,
        auth_id: &str,
        user: UserId,
        key_expiry: KeyExpiry,
        method: RegisterMethod,
        now: OffsetDateTime,
    ) -> Result<NodeId, TailnetError> {
        if !self.users.contains_key(&user) {
            return Err(not_found("user", user));
        }
        let pending = self
            .pending
            .get(auth_id)
            .ok_or_else(|| not_found("pending registration", auth_id))?;
        let owner = if pending.hostinfo.request_tags.is_empty() {
            Owner {
                user: Some(user),
                tags: vec![],
            }
        } else {
            match self.authorize_requested_tags(Some(user), &pending.hostinfo.request_tags) {
                Ok(tags) => Owner { user: None, tags },
                Err(reason) => {
                    // The client is told why; the login is over either way.
                    if let Some(p) = self.pending.remove(auth_id) {
                        p.done.send_replace(Some(Err(reason.clone())));
                    }
                    return Err(TailnetError::Invalid(reason));
                }
            }
        };
        let registration = Registration {
            machine: pending.machine,
            node_key: pending.node_key,
            hostinfo: pending.hostinfo.clone(),
            ephemeral: pending.ephemeral,
            requested_expiry: pending.requested_expiry,
            key_expiry,
            method,
            auth_key_id: None,
        };
        let id = self.register_node(fx, registration, owner, now)?;
        if let Some(p) = self.pending.remove(auth_id) {
            p.done.send_replace(Some(Ok(id)));
        }
        Ok(id)
    }

    /// An administrator refuses the pending login `auth_id`: it ends, and the waiting client
    /// is told why.
    pub fn reject_login(&mut self, auth_id: &str, reason: &str) -> Result<(), TailnetError> {
        let pending = self
            .pending
            .remove(auth_id)
            .ok_or_else(|| not_found("pending registration", auth_id))?;
        pending.done.send_replace(Some(Err(reason.to_owned())));
        Ok(())
    }

    /// Whether any pending login has outlived its lifetime.
    pub fn has_stale_pending_logins(&self, now: OffsetDateTime) -> bool {
        self.pending
            .values()
            .any(|p| now - p.created >= PENDING_LOGIN_TTL)
    }

    /// Drops pending logins older than their lifetime; their waiters get an error.
    pub fn expire_pending_logins(&mut self, now: OffsetDateTime) {
        self.pending.retain(|_, p| {
            let alive = now - p.created < PENDING_LOGIN_TTL;
            if !alive {
                p.done.send_replace(Some(Err("login timed out".into())));
            }
            alive
        });
    }
}

/// Rules: only the machine that started a login may wait on it; whoever vouches names an
/// existing user, and the waiter learns the node, or why not (rejected, tags refused, timed
/// out after `PENDING_LOGIN_TTL`); a login ends once decided.
#[cfg(test)]
mod tests {
    use super::super::RegisterOutcome;
    use super::super::test_support::*;
    use super::*;

    /// Machine `m` starts an interactive login (asking for `tags`); its auth id.
    fn start(s: &mut State, m: u8, tags: &[&str], now: OffsetDateTime) -> String {
        let mut req = request(m, &format!("m{m}"), None);
        req.hostinfo.as_mut().unwrap().request_tags = tags.iter().map(|t| t.to_string()).collect();
        match register(s, m, &req, now) {
            RegisterOutcome::NeedsLogin { auth_id, .. } => auth_id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_completed_login_makes_the_users_node_and_tells_only_its_machine() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let now = OffsetDateTime::now_utc();
        let auth_id = start(&mut s, 1, &[], now);
        assert!(
            s.watch_login(&auth_id, machine(2)).is_none(),
            "not another machine's"
        );
        let waiter = s.watch_login(&auth_id, machine(1)).unwrap();

        let mut fx = Effects::default();
        assert!(matches!(
            s.complete_login(&mut fx, &auth_id, 99, KeyExpiry::Default, now),
            Err(TailnetError::NotFound { .. })
        ));
        assert!(s.pending_login(&auth_id).is_some(), "still waiting");

        let id = s
            .complete_login(&mut fx, &auth_id, alice, KeyExpiry::Never, now)
            .unwrap();
        assert_eq!(*waiter.borrow(), Some(Ok(id)));
        assert_eq!(s.node(id).unwrap().user, Some(alice));
        assert_eq!(s.node(id).unwrap().expiry, None);
        assert!(
            s.pending_login(&auth_id).is_none(),
            "a login ends once decided"
        );
        assert!(
            s.complete_login(&mut fx, &auth_id, alice, KeyExpiry::Default, now)
                .is_err()
        );
    }

    #[test]
    fn a_rejected_or_refused_login_ends_and_tells_its_waiter_why() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let now = OffsetDateTime::now_utc();
        let auth_id = start(&mut s, 1, &[], now);
        let waiter = s.watch_login(&auth_id, machine(1)).unwrap();
        s.reject_login(&auth_id, "not today").unwrap();
        assert_eq!(*waiter.borrow(), Some(Err("not today".into())));
        assert!(matches!(
            s.reject_login(&auth_id, "again"),
            Err(TailnetError::NotFound { .. })
        ));

        // Tags alice may not apply (no policy, so no tagOwners): no node, and it is over.
        let auth_id = start(&mut s, 2, &["tag:server"], now);
        let waiter = s.watch_login(&auth_id, machine(2)).unwrap();
        let mut fx = Effects::default();
        let err = s
            .complete_login(&mut fx, &auth_id, alice, KeyExpiry::Default, now)
            .unwrap_err();
        assert!(err.to_string().contains("tag:server"), "{err}");
        assert!(matches!(&*waiter.borrow(), Some(Err(r)) if r.contains("tag:server")));
        assert!(s.pending_login(&auth_id).is_none());
        assert_eq!(s.node_count(), 0);
    }

    #[test]
    fn a_login_times_out_after_its_lifetime() {
        let mut s = State::for_tests(false);
        let now = OffsetDateTime::now_utc();
        let auth_id = start(&mut s, 1, &[], now);
        let waiter = s.watch_login(&auth_id, machine(1)).unwrap();
        let almost = now + PENDING_LOGIN_TTL - Duration::from_secs(1);
        assert!(!s.has_stale_pending_logins(almost));
        s.expire_pending_logins(almost);
        assert!(s.pending_login(&auth_id).is_some());

        let then = now + PENDING_LOGIN_TTL;
        assert!(s.has_stale_pending_logins(then));
        s.expire_pending_logins(then);
        assert!(s.pending_login(&auth_id).is_none());
        assert_eq!(*waiter.borrow(), Some(Err("login timed out".into())));
    }
}
