//! Keeps the embedded DERP relay in step with the tailnet: only known, approved, unexpired
//! node keys are admitted, and a node that is deleted, expires or changes its key is
//! disconnected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use oxiscale_derp::DerpServer;
use oxiscale_tailcfg::NodePublic;
use time::OffsetDateTime;

use crate::tailnet::model::NodeId;
use crate::tailnet::{Change, ChangeListener, Tailnet};

pub struct RelayGate {
    derp: Arc<DerpServer>,
    tailnet: Weak<Tailnet>,
    /// The key each node was last known by, to disconnect it after the node is gone.
    keys: Mutex<HashMap<NodeId, NodePublic>>,
}

impl RelayGate {
    pub fn install(derp: Arc<DerpServer>, tailnet: &Arc<Tailnet>) -> Arc<RelayGate> {
        let keys = tailnet.read(|s| s.nodes().map(|n| (n.id, n.node_key)).collect());
        let gate = Arc::new(RelayGate {
            derp,
            tailnet: Arc::downgrade(tailnet),
            keys: Mutex::new(keys),
        });
        tailnet.subscribe(gate.clone());
        gate
    }

    /// The admission check the relay runs for each new client.
    pub fn admit_fn(tailnet: &Arc<Tailnet>) -> oxiscale_derp::AdmitFn {
        let tailnet = Arc::downgrade(tailnet);
        Arc::new(move |key: &NodePublic| {
            tailnet
                .upgrade()
                .is_some_and(|t| t.read(|s| s.admits_to_relay(key, OffsetDateTime::now_utc())))
        })
    }
}

impl ChangeListener for RelayGate {
    fn on_changes(&self, changes: &[Change]) {
        let Some(tailnet) = self.tailnet.upgrade() else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for change in changes {
            match change {
                Change::NodeUpserted(id) => {
                    let current =
                        tailnet.read(|s| s.node(*id).map(|n| (n.node_key, n.is_admitted(now))));
                    match current {
                        Some((key, admitted)) => {
                            if let Some(old) = keys.insert(*id, key).filter(|old| *old != key) {
                                self.derp.disconnect(&old);
                            }
                            if !admitted {
                                self.derp.disconnect(&key);
                            }
                        }
                        None => {
                            if let Some(old) = keys.remove(id) {
                                self.derp.disconnect(&old);
                            }
                        }
                    }
                }
                Change::NodeRemoved(id) => {
                    if tailnet.read(|s| s.node(*id).is_none())
                        && let Some(old) = keys.remove(id)
                    {
                        self.derp.disconnect(&old);
                    }
                }
                _ => {}
            }
        }
    }
}
