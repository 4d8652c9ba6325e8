//! A small tailnet for the mapper's unit tests.

use time::OffsetDateTime;

use crate::tailnet::State;
use crate::tailnet::model::NodeId;

/// A tailnet of `n` nodes of one user, without a policy (everyone sees everyone).
pub fn tailnet_of(n: NodeId, now: OffsetDateTime) -> State {
    tailnet_with(
        (1..=n).map(crate::tailnet::model::Node::sample).collect(),
        now,
    )
}

pub fn tailnet_with(nodes: Vec<crate::tailnet::model::Node>, now: OffsetDateTime) -> State {
    use crate::tailnet::model::User;
    use crate::tailnet::state::Loaded;
    let loaded = Loaded {
        users: vec![User {
            id: 1,
            name: "alice".into(),
            display_name: "Alice".into(),
            email: "alice@example.com".into(),
            created: now,
            provider: None,
            picture_url: String::new(),
            provider_groups: Vec::new(),
        }],
        nodes,
        preauth_keys: vec![],
        api_keys: vec![],
        sequences: vec![],
    };
    let settings = crate::tailnet::Settings {
        server_url: "http://127.0.0.1:8080".into(),
        base_domain: "tail.test".into(),
        magic_dns: true,
        node_expiry: None,
        approval_required: false,
    };
    let pool = crate::tailnet::addresses::AddressPool::new(
        Some("100.64.0.0/10".parse().unwrap()),
        None,
        crate::config::Allocation::Sequential,
    );
    State::new(settings, pool, loaded)
}
