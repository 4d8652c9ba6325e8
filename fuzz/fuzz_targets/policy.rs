//! HuJSON policies: `Policy::parse`, then (when it parses) `compile` against a fixed tailnet
//! (`src/topology.json`), which also runs the policy's `tests`, and the per-node questions
//! the server asks of a policy: packet filters, peers, SSH policy, auto-approved routes,
//! who may apply a tag. Nothing may panic or hang, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxiscale_policy::{Policy, TagRequester, hujson_to_json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = hujson_to_json(text);
    let Ok(policy) = Policy::parse(text) else {
        return;
    };
    let topo = oxiscale_fuzz::topology();
    for node in &topo.nodes {
        let _ = policy.auto_approved_routes(topo, node.id);
    }
    for tag in ["tag:server", "tag:prod", "tag:unknown"] {
        let _ = policy.may_apply_tag(topo, &TagRequester::User(1), tag);
        let _ = policy.may_apply_tag(topo, &TagRequester::Tags(vec!["tag:router".into()]), tag);
    }
    let Ok(compiled) = policy.compile(topo) else {
        return;
    };
    for node in &topo.nodes {
        let _ = compiled.packet_filter(node.id);
        let _ = compiled.peers(node.id);
        let _ = compiled.ssh_policy(node.id);
        let _ = compiled.node_attrs(node.id);
        for other in &topo.nodes {
            let _ = compiled.can_see(node.id, other.id);
        }
    }
});
