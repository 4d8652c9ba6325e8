//! Custom posture attributes (`custom:*`, see [`super::super::attributes`]): set and removed
//! by an administrator or by the node itself, dropped when they expire. A change that the
//! policy can see marks it for recompile (the attributes are among its inputs), which then
//! sends the nodes whose filters changed their new ones.

use std::sync::Arc;

use time::OffsetDateTime;

use super::super::attributes::{AttrUpdate, apply_updates};
use super::super::effects::Effects;
use super::super::model::{Node, NodeId};
use super::{State, TailnetError, not_found};

impl State {
    /// Applies `updates` to node `id`'s custom attributes, all or none: a bad key or value,
    /// an expiry in the past or more attributes than allowed refuse the whole change.
    /// Expired attributes are dropped on the way.
    pub fn update_custom_attributes(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
        updates: &[AttrUpdate],
        now: OffsetDateTime,
    ) -> Result<Arc<Node>, TailnetError> {
        let node = self.nodes.get(&id).ok_or_else(|| not_found("node", id))?;
        let next = apply_updates(&node.custom_attributes, updates, now)
            .map_err(|e| TailnetError::Invalid(e.to_string()))?;
        if next != node.custom_attributes {
            self.update_node(fx, id, |n| n.custom_attributes = next);
        }
        Ok(self.nodes[&id].clone())
    }

    /// The nodes that hold an attribute expired at `now`.
    pub fn nodes_with_expired_attributes(&self, now: OffsetDateTime) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.custom_attributes.values().any(|a| a.is_expired(now)))
            .map(|n| n.id)
            .collect()
    }

    /// Drops the attributes of `ids` that expired at `now` (checked again here); the policy
    /// is recompiled without them. Returns the nodes that changed.
    pub fn drop_expired_attributes(
        &mut self,
        fx: &mut Effects,
        ids: &[NodeId],
        now: OffsetDateTime,
    ) -> Vec<NodeId> {
        let mut changed = Vec::new();
        for &id in ids {
            let Some(node) = self.nodes.get(&id) else {
                continue;
            };
            if !node.custom_attributes.values().any(|a| a.is_expired(now)) {
                continue;
            }
            self.update_node(fx, id, |n| {
                n.custom_attributes.retain(|_, a| !a.is_expired(now));
            });
            changed.push(id);
        }
        changed
    }
}

/// Rules: a refused change leaves the node as it was; an accepted one that changes what the
/// policy sees (under a policy with postures) marks it for recompile and is written; expired
/// attributes are dropped.
#[cfg(test)]
mod tests {
    use super::super::super::attributes::{AttrValue, CustomAttr, MAX_ATTRIBUTES};
    use super::super::test_support::*;
    use super::*;
    use crate::tailnet::DbOp;

    fn set(key: &str, value: AttrValue, expiry: Option<OffsetDateTime>) -> AttrUpdate {
        AttrUpdate {
            key: key.into(),
            set: Some(CustomAttr { value, expiry }),
        }
    }

    /// A tailnet under a policy with postures: only then do attributes matter to the policy.
    fn with_postures() -> State {
        let mut s = State::for_tests(false);
        set_policy(
            &mut s,
            r#"{"postures": {"posture:managed": ["custom:managed == true"]}}"#,
        );
        s
    }

    #[test]
    fn a_change_is_written_and_marks_the_policy_and_a_refusal_changes_nothing() {
        let mut s = with_postures();
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let id = join(&mut s, 1, 1, &k);
        s.policy_dirty = false;
        let now = OffsetDateTime::now_utc();
        let mut fx = Effects::default();
        let node = s
            .update_custom_attributes(
                &mut fx,
                id,
                &[set("custom:managed", AttrValue::Bool(true), None)],
                now,
            )
            .unwrap();
        assert_eq!(
            node.custom_attributes["custom:managed"].value,
            AttrValue::Bool(true)
        );
        assert!(s.policy_dirty);
        assert!(matches!(fx.ops.last(), Some(DbOp::PutNode(n)) if n.id == id));

        let before = s.node(id).unwrap().clone();
        let mut fx = Effects::default();
        s.policy_dirty = false;
        let too_many: Vec<AttrUpdate> = (0..MAX_ATTRIBUTES)
            .map(|i| set(&format!("custom:k{i}"), AttrValue::Num(1.0), None))
            .collect();
        for bad in [
            vec![set("node:os", AttrValue::Str("linux".into()), None)],
            vec![set("custom:x", AttrValue::Str("y".repeat(101)), None)],
            vec![set(
                "custom:x",
                AttrValue::Bool(true),
                Some(now - time::Duration::seconds(5)),
            )],
            too_many,
        ] {
            assert!(matches!(
                s.update_custom_attributes(&mut fx, id, &bad, now),
                Err(TailnetError::Invalid(_))
            ));
        }
        assert_eq!(s.node(id).unwrap(), &before);
        assert!(fx.ops.is_empty() && !s.policy_dirty);
        assert!(matches!(
            s.update_custom_attributes(&mut fx, 99, &[], now),
            Err(TailnetError::NotFound { .. })
        ));
    }

    #[test]
    fn expired_attributes_are_dropped() {
        let mut s = with_postures();
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let id = join(&mut s, 1, 1, &k);
        let now = OffsetDateTime::now_utc();
        let soon = now + time::Duration::seconds(10);
        let mut fx = Effects::default();
        s.update_custom_attributes(
            &mut fx,
            id,
            &[
                set("custom:brief", AttrValue::Bool(true), Some(soon)),
                set("custom:lasting", AttrValue::Bool(true), None),
            ],
            now,
        )
        .unwrap();
        assert!(s.nodes_with_expired_attributes(now).is_empty());
        let later = soon + time::Duration::seconds(1);
        assert_eq!(s.nodes_with_expired_attributes(later), vec![id]);
        s.policy_dirty = false;
        assert_eq!(s.drop_expired_attributes(&mut fx, &[id], later), vec![id]);
        assert!(s.policy_dirty);
        let attrs = &s.node(id).unwrap().custom_attributes;
        assert_eq!(attrs.keys().collect::<Vec<_>>(), vec!["custom:lasting"]);
        assert!(s.drop_expired_attributes(&mut fx, &[id], later).is_empty());
    }
}
