//! What a mutation of the tailnet does besides changing memory: rows to write (committed
//! before anyone is told) and changes to announce to connected nodes (sent after the commit).

use std::sync::Arc;

use oxiscale_tailcfg::PeerChange;
use time::OffsetDateTime;

use super::model::{ApiKey, KeyId, Node, NodeId, PreAuthKey, User, UserId};

#[derive(Debug, Clone)]
pub enum DbOp {
    PutUser(User),
    DeleteUser(UserId),
    PutNode(Arc<Node>),
    DeleteNode(NodeId),
    PutPreAuthKey(PreAuthKey),
    DeletePreAuthKey(KeyId),
    PutApiKey(ApiKey),
    DeleteApiKey(KeyId),
    /// The next id of a sequence, so ids are never reused even after deletes.
    PutSequence(&'static str, u64),
    PutPolicy(String),
    PutSetting(String, String),
}

/// A change connected nodes may need to hear about.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A node is new or changed in a way that needs its full `Node` resent.
    NodeUpserted(NodeId),
    /// A light change (endpoints, home DERP, disco key) sent as `PeersChangedPatch`.
    NodePatched(PeerChange),
    NodeOnline {
        id: NodeId,
        online: bool,
        last_seen: Option<OffsetDateTime>,
    },
    NodeRemoved(NodeId),
    /// Who may see whom, or the packet filters, may have changed for everyone.
    Visibility,
    /// Only the packet filters (and SSH policies) may have changed: among the nodes that
    /// were there before, every one still sees exactly the peers it saw, with the same
    /// routes; who sees a node that joined or left is said by the change about it. Saves
    /// every stream a diff of its whole peer set.
    Filters,
    DnsConfig,
    /// The DERP map changed (a remote map was refreshed).
    DerpMap,
}

#[derive(Debug, Default)]
pub struct Effects {
    pub ops: Vec<DbOp>,
    pub changes: Vec<Change>,
}

impl Effects {
    pub fn write(&mut self, op: DbOp) {
        self.ops.push(op);
    }

    pub fn announce(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// A mark to roll back to when a mutation fails half-way.
    pub fn mark(&self) -> (usize, usize) {
        (self.ops.len(), self.changes.len())
    }

    pub fn rollback(&mut self, mark: (usize, usize)) {
        self.ops.truncate(mark.0);
        self.changes.truncate(mark.1);
    }
}
