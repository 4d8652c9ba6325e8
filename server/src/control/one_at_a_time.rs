//! At most one request of a kind per node in progress: a node that asks for a one-shot full
//! map again before the first is out is told to wait, instead of queueing renders of its
//! whole tailnet (a connection may carry several requests at once).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::tailnet::model::NodeId;

#[derive(Default)]
pub struct OneAtATime {
    busy: Arc<Mutex<HashSet<NodeId>>>,
}

/// The node's turn; dropping it ends the turn.
pub struct Turn {
    busy: Arc<Mutex<HashSet<NodeId>>>,
    node: NodeId,
}

impl OneAtATime {
    /// The node's turn, or `None` while its previous request is still in progress.
    pub fn claim(&self, node: NodeId) -> Option<Turn> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.insert(node).then(|| Turn {
            busy: self.busy.clone(),
            node,
        })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_has_one_turn_at_a_time_and_others_are_not_held_up() {
        let maps = OneAtATime::default();
        let first = maps.claim(1).expect("the first request is taken");
        assert!(maps.claim(1).is_none(), "a second one waits for the first");
        assert!(maps.claim(2).is_some(), "another node is not held up");
        drop(first);
        assert!(
            maps.claim(1).is_some(),
            "the next turn after the first ended"
        );
    }
}
