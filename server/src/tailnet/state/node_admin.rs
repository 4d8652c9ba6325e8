//! What an administrator (or the server's timers) does to nodes: expire or un-expire their
//! keys, approve held nodes, rename, delete, tag, re-address after a prefix change, and
//! reap ephemeral nodes that stayed offline past their timeout.

use std::sync::Arc;

use time::OffsetDateTime;

use super::super::effects::{Change, DbOp, Effects};
use super::super::model::{Node, NodeId};
use super::super::names::{is_valid_label, sanitize_hostname};
use super::validate::normalize_tags;
use super::{State, TailnetError, not_found};

impl State {
    /// Expires the node key at `at` (now if `None`); an expired node loses its peers.
    pub fn expire_node(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
        at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<Arc<Node>, TailnetError> {
        let node = self.nodes.get(&id).ok_or_else(|| not_found("node", id))?;
        if node.is_tagged() && at.is_some_and(|t| t > now) {
            return Err(TailnetError::Invalid("tagged nodes do not expire".into()));
        }
        let when = at.unwrap_or(now);
        self.update_node(fx, id, |n| n.expiry = Some(when));
        // Sessions re-check visibility: an expired node drops out of every peer's map.
        fx.announce(Change::NodeUpserted(id));
        Ok(self.nodes[&id].clone())
    }

    pub fn disable_node_expiry(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
    ) -> Result<Arc<Node>, TailnetError> {
        let node = self.nodes.get(&id).ok_or_else(|| not_found("node", id))?;
        let was_expired = node.expiry.is_some_and(|e| e <= OffsetDateTime::now_utc());
        self.update_node(fx, id, |n| n.expiry = None);
        fx.announce(Change::NodeUpserted(id));
        if was_expired {
            fx.announce(Change::Visibility);
        }
        Ok(self.nodes[&id].clone())
    }

    /// An administrator lets a node held by `node.approval_required` into the tailnet: it
    /// becomes the peer of the nodes that may see it and sees its own. Approving an
    /// approved node changes nothing.
    ///
    /// `NodeUpserted` is all the streams need: the node's own stream takes it as a change
    /// of itself and rechecks every peer (it had none); every other stream checks whether
    /// it may see the node, which it may now. No one else's peers, filters or routes depend
    /// on the node's approval (the policy always compiled it in), so, unlike a change of
    /// tags, no stream has to diff its whole peer set, and the others can share one
    /// encoding of the delta. A node that serves routes may take some over: the election
    /// is rerun, as for any change of who serves routes.
    pub fn approve_node(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
    ) -> Result<Arc<Node>, TailnetError> {
        let node = self.nodes.get(&id).ok_or_else(|| not_found("node", id))?;
        if node.approved {
            return Ok(node.clone());
        }
        let serves_routes = node.serves_routes();
        self.update_node(fx, id, |n| n.approved = true);
        fx.announce(Change::NodeUpserted(id));
        if serves_routes {
            self.routes_changed(fx);
        }
        Ok(self.nodes[&id].clone())
    }

    pub fn rename_node(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
        new_name: &str,
    ) -> Result<Arc<Node>, TailnetError> {
        if !self.nodes.contains_key(&id) {
            return Err(not_found("node", id));
        }
        if !is_valid_label(new_name) {
            return Err(TailnetError::Invalid(format!(
                "{new_name:?} is not a valid name: use 1-63 lowercase letters, digits and inner hyphens (try {:?})",
                sanitize_hostname(new_name)
            )));
        }
        if self.names.get(new_name).is_some_and(|owner| *owner != id) {
            return Err(TailnetError::Conflict(format!(
                "another node is already named {new_name:?}"
            )));
        }
        let old = self.nodes[&id].given_name.clone();
        self.names.remove(&old);
        self.names.insert(new_name.to_owned(), id);
        self.update_node(fx, id, |n| n.given_name = new_name.to_owned());
        fx.announce(Change::NodeUpserted(id));
        Ok(self.nodes[&id].clone())
    }

    pub fn delete_node(&mut self, fx: &mut Effects, id: NodeId) -> Result<Arc<Node>, TailnetError> {
        let node = self
            .nodes
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found("node", id))?;
        self.remove_node(fx, id);
        Ok(node)
    }

    pub(super) fn remove_node(&mut self, fx: &mut Effects, id: NodeId) {
        let Some(node) = self.nodes.remove(id) else {
            return;
        };
        self.by_node_key.remove(&node.node_key);
        if let Some(ids) = self.by_machine_key.get_mut(&node.machine_key) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_machine_key.remove(&node.machine_key);
            }
        }
        if self.names.get(&node.given_name) == Some(&id) {
            self.names.remove(&node.given_name);
        }
        self.pool.release(node.ipv4, node.ipv6);
        self.policy_dirty = true;
        fx.write(DbOp::DeleteNode(id));
        fx.announce(Change::NodeRemoved(id));
        if !node.served_routes().is_empty() {
            self.routes_changed(fx);
        }
    }

    /// Sets a node's tags; a tagged node is owned by its tags (no user) and never expires.
    pub fn set_tags(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
        tags: Vec<String>,
    ) -> Result<Arc<Node>, TailnetError> {
        let tags = normalize_tags(tags)?;
        let node = self.nodes.get(&id).ok_or_else(|| not_found("node", id))?;
        self.check_tags_defined(&tags)?;
        if tags.is_empty() && node.is_tagged() && node.user.is_none() {
            return Err(TailnetError::Invalid(
                "a tagged node has no user to fall back to; it needs at least one tag".into(),
            ));
        }
        self.update_node(fx, id, |n| {
            if !tags.is_empty() {
                n.user = None;
                n.expiry = None;
            }
            n.tags = tags;
        });
        fx.announce(Change::NodeUpserted(id));
        fx.announce(Change::Visibility);
        Ok(self.nodes[&id].clone())
    }

    /// Gives every node an address in each configured family it lacks (after a prefix
    /// change). Returns the ids that changed.
    pub fn backfill_ips(&mut self, fx: &mut Effects) -> Result<Vec<NodeId>, TailnetError> {
        let mut changed = Vec::new();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes[&id].clone();
            let v4 = match node.ipv4 {
                Some(ip) if self.pool.contains_v4(ip) => Some(ip),
                _ if self.pool.has_v4() => self.pool.allocate_v4()?,
                _ => None,
            };
            let v6 = match node.ipv6 {
                Some(ip) if self.pool.contains_v6(ip) => Some(ip),
                _ if self.pool.has_v6() => self.pool.allocate_v6()?,
                _ => None,
            };
            if v4 != node.ipv4 || v6 != node.ipv6 {
                self.pool.release(
                    node.ipv4.filter(|ip| Some(*ip) != v4),
                    node.ipv6.filter(|ip| Some(*ip) != v6),
                );
                self.update_node(fx, id, |n| {
                    n.ipv4 = v4;
                    n.ipv6 = v6;
                });
                fx.announce(Change::NodeUpserted(id));
                changed.push(id);
            }
        }
        if !changed.is_empty() {
            fx.announce(Change::Visibility);
        }
        Ok(changed)
    }

    /// Ephemeral nodes offline since before `cutoff`.
    pub fn stale_ephemeral_nodes(&self, cutoff: OffsetDateTime) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.ephemeral && !n.online && n.last_seen.is_none_or(|t| t < cutoff))
            .map(|n| n.id)
            .collect()
    }

    /// Deletes ephemeral nodes that are still offline and stale (checked again here: they
    /// may have reconnected since they were picked).
    pub fn reap_ephemeral(
        &mut self,
        fx: &mut Effects,
        ids: &[NodeId],
        cutoff: OffsetDateTime,
    ) -> Vec<NodeId> {
        let stale: Vec<NodeId> = self
            .stale_ephemeral_nodes(cutoff)
            .into_iter()
            .filter(|id| ids.contains(id))
            .collect();
        for id in &stale {
            self.remove_node(fx, *id);
        }
        stale
    }

    /// Nodes whose key expired since `since` (they must vanish from their peers' maps).
    pub fn newly_expired(&self, since: OffsetDateTime, now: OffsetDateTime) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.expiry.is_some_and(|e| e > since && e <= now))
            .map(|n| n.id)
            .collect()
    }
}

/// Rules: a tagged node cannot be given a future expiry; tags replace the owning user and
/// the expiry, and a node owned by tags keeps at least one; a name is a valid label no other
/// node has, freed when its node is deleted; an ephemeral node is reaped only while offline
/// and unseen since the cutoff, checked again when reaped.
#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use time::Duration;

    #[test]
    fn a_tagged_node_cannot_be_given_a_future_expiry() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let kt = key(&mut s, None, true, &["tag:server"]);
        let ku = key(&mut s, Some(alice), true, &[]);
        let tagged = join(&mut s, 1, 1, &kt);
        let owned = join(&mut s, 2, 2, &ku);
        let mut fx = Effects::default();
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::hours(1);
        assert!(matches!(
            s.expire_node(&mut fx, tagged, Some(later), now),
            Err(TailnetError::Invalid(_))
        ));
        assert_eq!(s.node(tagged).unwrap().expiry, None);
        assert_eq!(
            s.expire_node(&mut fx, owned, Some(later), now)
                .unwrap()
                .expiry,
            Some(later)
        );
        // Expiring it now is always allowed.
        assert!(
            s.expire_node(&mut fx, tagged, None, now)
                .unwrap()
                .is_expired(now)
        );
        assert_eq!(
            s.newly_expired(now - Duration::seconds(1), now),
            vec![tagged]
        );
        assert!(s.newly_expired(now, later).contains(&owned));
        assert!(!s.newly_expired(now, later).contains(&tagged));
    }

    #[test]
    fn tags_replace_the_user_and_the_expiry_and_a_tagged_node_keeps_one() {
        let mut s = State::for_tests(false);
        s.settings.node_expiry = Some(std::time::Duration::from_secs(3600));
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let id = join(&mut s, 1, 1, &k);
        assert!(s.node(id).unwrap().expiry.is_some());
        let mut fx = Effects::default();
        // Removing no tags from a user's node changes nothing of its owner.
        assert_eq!(s.set_tags(&mut fx, id, vec![]).unwrap().user, Some(alice));
        assert!(s.set_tags(&mut fx, id, vec!["server".into()]).is_err());

        let node = s.set_tags(&mut fx, id, vec!["tag:server".into()]).unwrap();
        assert_eq!((node.user, node.expiry), (None, None));
        assert!(matches!(
            s.set_tags(&mut fx, id, vec![]),
            Err(TailnetError::Invalid(_))
        ));
        assert_eq!(s.node(id).unwrap().tags, vec!["tag:server"]);
    }

    #[test]
    fn a_name_is_a_valid_label_no_other_node_has() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let a = join(&mut s, 1, 1, &k);
        let b = join(&mut s, 2, 2, &k);
        let mut fx = Effects::default();
        for bad in ["Web Server", "-web", "", &"a".repeat(64)] {
            assert!(
                matches!(
                    s.rename_node(&mut fx, a, bad),
                    Err(TailnetError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            s.rename_node(&mut fx, a, "m2"),
            Err(TailnetError::Conflict(_))
        ));
        assert_eq!(s.rename_node(&mut fx, a, "m1").unwrap().given_name, "m1");
        assert_eq!(s.rename_node(&mut fx, a, "web").unwrap().given_name, "web");
        // The old name is free again, and so is a deleted node's.
        assert_eq!(s.rename_node(&mut fx, b, "m1").unwrap().given_name, "m1");
        s.delete_node(&mut fx, b).unwrap();
        let c = join(&mut s, 3, 3, &k);
        assert_eq!(s.rename_node(&mut fx, c, "m1").unwrap().given_name, "m1");
    }

    #[test]
    fn ephemeral_nodes_are_reaped_only_offline_and_past_the_cutoff() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let ek = ephemeral_key(&mut s, alice);
        let k = key(&mut s, Some(alice), true, &[]);
        let eph = join(&mut s, 1, 1, &ek);
        let lasting = join(&mut s, 2, 2, &k);
        let mut fx = Effects::default();
        let seen = s.node(eph).unwrap().last_seen.unwrap();

        // Seen since the cutoff: kept.
        assert!(
            s.stale_ephemeral_nodes(seen - Duration::seconds(1))
                .is_empty()
        );
        let cutoff = seen + Duration::seconds(1);
        assert_eq!(
            s.stale_ephemeral_nodes(cutoff),
            vec![eph],
            "never a lasting node"
        );

        // Picked while stale, back online before the reaper ran: kept.
        s.set_online(&mut fx, eph, true, seen);
        assert!(s.reap_ephemeral(&mut fx, &[eph], cutoff).is_empty());
        assert!(s.node(eph).is_some());

        s.set_online(&mut fx, eph, false, seen);
        assert_eq!(
            s.reap_ephemeral(&mut fx, &[eph, lasting], cutoff),
            vec![eph]
        );
        assert!(s.node(eph).is_none());
        assert!(s.node(lasting).is_some());
    }
}
