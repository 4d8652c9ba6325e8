//! The tailnet's entities as the server keeps them (in memory and in the database).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use oxiscale_tailcfg::{DiscoPublic, Hostinfo, MachinePublic, NodePublic};
use time::OffsetDateTime;

pub use super::secret::KeyHash;

pub type UserId = u64;
pub type NodeId = u64;
pub type KeyId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    /// Unique; what the CLI and policies call the user.
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub created: OffsetDateTime,
    /// Who the person is at their identity provider, when they sign in through one: the
    /// key that finds them again (emails change, names collide).
    pub provider: Option<ProviderIdentity>,
    pub picture_url: String,
    /// The groups the provider asserted at the person's last sign-in.
    pub provider_groups: Vec<String>,
}

/// A person at an OpenID Connect provider: (issuer, subject) is unique and never reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderIdentity {
    pub issuer: String,
    pub subject: String,
}

impl User {
    /// The login name peers see (`UserProfile.LoginName`).
    pub fn login_name(&self) -> String {
        if self.email.is_empty() {
            self.name.clone()
        } else {
            self.email.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterMethod {
    AuthKey,
    Interactive,
    Cli,
}

impl RegisterMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterMethod::AuthKey => "authkey",
            RegisterMethod::Interactive => "interactive",
            RegisterMethod::Cli => "cli",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "interactive" => RegisterMethod::Interactive,
            "cli" => RegisterMethod::Cli,
            _ => RegisterMethod::AuthKey,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: NodeId,
    pub machine_key: MachinePublic,
    pub node_key: NodePublic,
    pub disco_key: DiscoPublic,
    /// What the client calls itself (Hostinfo.Hostname).
    pub hostname: String,
    /// The unique MagicDNS label.
    pub given_name: String,
    /// The owner; `None` for a tagged node, which its tags own.
    pub user: Option<UserId>,
    pub tags: Vec<String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub hostinfo: Hostinfo,
    pub endpoints: Vec<String>,
    pub approved_routes: Vec<IpNet>,
    pub ephemeral: bool,
    pub register_method: RegisterMethod,
    pub auth_key_id: Option<KeyId>,
    /// When the node key expires; `None` = never.
    pub expiry: Option<OffsetDateTime>,
    /// An administrator let it into the tailnet (`node.approval_required`). Until then it
    /// is nobody's peer and sees no peer, as if expired, but keeps its map stream.
    pub approved: bool,
    pub created: OffsetDateTime,
    pub last_seen: Option<OffsetDateTime>,
    /// Capability version of the client's last request.
    pub cap_version: u32,
    /// Posture attributes set through the API or by the node (`custom:*`), for the
    /// policy's `postures`; an expired one counts as absent.
    pub custom_attributes: super::attributes::CustomAttrs,
    /// Runtime only: the policy's `disable-ipv4` applies, so the tailnet is not told the
    /// node's IPv4 address (it stays assigned to it).
    pub ipv4_withheld: bool,
    /// Runtime only: a map stream is open.
    pub online: bool,
    /// Runtime only: this version's JSON as its peers see it.
    pub peer_json: PeerJsonCache,
}

/// A node's JSON as a peer sees it (when the peer gets only its addresses, the common
/// case), rendered at most once per version of the node and shared by every viewer. Node
/// versions are immutable once shared; a change makes a new version with an empty cache.
#[derive(Default)]
pub struct PeerJsonCache(std::sync::OnceLock<std::sync::Arc<serde_json::value::RawValue>>);

impl PeerJsonCache {
    pub fn get_or_render(
        &self,
        render: impl FnOnce() -> std::sync::Arc<serde_json::value::RawValue>,
    ) -> std::sync::Arc<serde_json::value::RawValue> {
        self.0.get_or_init(render).clone()
    }

    /// Forgets the rendering (the node changed in place).
    pub fn clear(&mut self) {
        self.0.take();
    }
}

impl Clone for PeerJsonCache {
    /// A copy is made to be changed: it starts without a rendering.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for PeerJsonCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for PeerJsonCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "PeerJsonCache(rendered)"
        } else {
            "PeerJsonCache(empty)"
        })
    }
}

#[cfg(test)]
impl Node {
    /// An online node of user 1 for unit tests: keys, name, IPv4 address and endpoint all
    /// derived from `id`, so distinct for distinct ids.
    pub fn sample(id: NodeId) -> Node {
        let key = |kind: u8| {
            let mut key = [kind; 32];
            key[..8].copy_from_slice(&id.to_le_bytes());
            key
        };
        Node {
            id,
            machine_key: MachinePublic::from_bytes(key(0)),
            node_key: NodePublic::from_bytes(key(64)),
            disco_key: DiscoPublic::from_bytes(key(128)),
            hostname: format!("n{id}"),
            given_name: format!("n{id}"),
            user: Some(1),
            tags: vec![],
            // Within 100.64.0.0/10.
            ipv4: Some(Ipv4Addr::from(0x6440_0000 | (id as u32 & 0x003f_ffff))),
            ipv6: None,
            hostinfo: Hostinfo::default(),
            endpoints: vec![format!("192.0.2.{id}:41641")],
            approved_routes: vec![],
            ephemeral: false,
            register_method: RegisterMethod::AuthKey,
            auth_key_id: None,
            expiry: None,
            approved: true,
            created: OffsetDateTime::UNIX_EPOCH,
            last_seen: None,
            cap_version: 130,
            custom_attributes: Default::default(),
            ipv4_withheld: false,
            online: true,
            peer_json: Default::default(),
        }
    }
}

impl Node {
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expiry.is_some_and(|e| e <= now)
    }

    /// Whether the node may take part in the tailnet now: approved and not expired. A node
    /// that may not is nobody's peer and has none.
    pub fn is_admitted(&self, now: OffsetDateTime) -> bool {
        self.approved && !self.is_expired(now)
    }

    pub fn stable_id(&self) -> String {
        format!("n{}", self.id)
    }

    /// Whether any advertised route is approved (without allocating).
    pub fn serves_routes(&self) -> bool {
        self.hostinfo
            .routable_ips
            .iter()
            .any(|r| self.approved_routes.contains(r))
    }

    /// Advertised routes that are also approved.
    pub fn served_routes(&self) -> Vec<IpNet> {
        self.hostinfo
            .routable_ips
            .iter()
            .filter(|r| self.approved_routes.contains(r))
            .copied()
            .collect()
    }

    /// The addresses the tailnet is told: [`Node::addresses`] without a withheld IPv4.
    pub fn tailnet_addresses(&self) -> Vec<IpNet> {
        let mut out = self.addresses();
        if self.ipv4_withheld {
            out.retain(|a| a.addr().is_ipv6());
        }
        out
    }

    /// The addresses assigned to the node.
    pub fn addresses(&self) -> Vec<IpNet> {
        let mut out = Vec::with_capacity(2);
        if let Some(v4) = self.ipv4 {
            out.push(IpNet::V4(v4.into()));
        }
        if let Some(v6) = self.ipv6 {
            out.push(IpNet::V6(v6.into()));
        }
        out
    }
}

/// A pre-authentication key. The secret itself is never stored: only a prefix to find it
/// and a SHA-256 of the whole key to check it (or headscale's bcrypt, for keys imported
/// from it: [`KeyHash`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreAuthKey {
    pub id: KeyId,
    pub prefix: String,
    pub hash: KeyHash,
    /// Owner of nodes registered with it; `None` when the key carries tags instead.
    pub user: Option<UserId>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub tags: Vec<String>,
    pub expiration: OffsetDateTime,
    pub created: OffsetDateTime,
}

impl PreAuthKey {
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expiration <= now
    }

    /// Why this key cannot register a node now, if it cannot.
    pub fn refusal(&self, now: OffsetDateTime) -> Option<&'static str> {
        if self.is_expired(now) {
            Some("authkey expired")
        } else if self.used && !self.reusable {
            Some("authkey already used")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: KeyId,
    pub prefix: String,
    pub hash: KeyHash,
    pub expiration: OffsetDateTime,
    pub created: OffsetDateTime,
    pub last_seen: Option<OffsetDateTime>,
}
