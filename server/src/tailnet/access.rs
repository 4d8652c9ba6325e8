//! Who may see and reach whom. This is where the policy engine plugs in: today the only
//! mode is "no policy", which, as in headscale and Tailscale, lets every node reach every
//! other node. A compiled policy will add a second variant answering the same questions.

use ipnet::IpNet;
use oxiscale_tailcfg::{FilterRule, SshPolicy};

use super::model::Node;

/// What a node may know about one of its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoutes {
    /// Addresses and routed prefixes the viewer sends to this peer.
    pub allowed_ips: Vec<IpNet>,
    /// Subnet routes (not exit routes) this peer is the primary router for.
    pub primary_routes: Vec<IpNet>,
}

#[derive(Debug, Clone, Default)]
pub enum Access {
    /// No policy: everyone sees and reaches everyone (documented in the README).
    #[default]
    AllowAll,
}

const EXIT_V4: &str = "0.0.0.0/0";
const EXIT_V6: &str = "::/0";

pub fn is_exit_route(route: &IpNet) -> bool {
    route.prefix_len() == 0
}

impl Access {
    pub fn can_see(&self, _viewer: &Node, _peer: &Node) -> bool {
        match self {
            Access::AllowAll => true,
        }
    }

    pub fn packet_filter(&self, _node: &Node) -> Vec<FilterRule> {
        match self {
            Access::AllowAll => FilterRule::allow_all(),
        }
    }

    pub fn ssh_policy(&self, _node: &Node) -> Option<SshPolicy> {
        match self {
            Access::AllowAll => None,
        }
    }

    /// The routes of `peer` as `viewer` is told about them. `primary` are the subnet routes
    /// `peer` is primary for (decided by the tailnet, which knows who is online).
    pub fn peer_routes(&self, _viewer: &Node, peer: &Node, primary: &[IpNet]) -> PeerRoutes {
        let mut allowed_ips = peer.addresses();
        allowed_ips.extend(primary.iter().copied());
        let served = peer.served_routes();
        let exit4: IpNet = EXIT_V4.parse().expect("valid literal");
        let exit6: IpNet = EXIT_V6.parse().expect("valid literal");
        if served.contains(&exit4) || served.contains(&exit6) {
            allowed_ips.push(exit4);
            allowed_ips.push(exit6);
        }
        PeerRoutes {
            allowed_ips,
            primary_routes: primary.to_vec(),
        }
    }
}
