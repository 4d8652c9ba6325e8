//! Console roles (Tailscale's) and what each may do. Every server function names the
//! permission it needs; a member acts only on their own machines and keys.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything; local administrator accounts (break-glass) are owners unless made otherwise.
    Owner,
    /// Everything.
    Admin,
    /// The access policy and DNS; reads the rest.
    NetworkAdmin,
    /// Machines, users and pre-auth keys; reads the policy and DNS.
    ItAdmin,
    /// Reads everything but secrets; changes nothing.
    Auditor,
    /// Their own machines and pre-auth keys, nothing of anyone else's.
    Member,
}

/// What a console action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// See every machine, user and key (never a secret).
    ReadTailnet,
    /// Rename, tag, route, expire and delete any machine.
    WriteMachines,
    /// Create, rename and delete users.
    WriteUsers,
    /// Pre-auth keys for any user or tag.
    WriteKeys,
    /// API keys: each is full administrative access over the REST API.
    ManageApiKeys,
    ReadPolicy,
    WritePolicy,
    ReadDns,
    WriteDns,
    /// The identity provider's settings (OpenID Connect): who may sign in at all.
    ManageIdentity,
    /// Anything a signed-in person may see of the console itself.
    SignedIn,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Owner,
        Role::Admin,
        Role::NetworkAdmin,
        Role::ItAdmin,
        Role::Auditor,
        Role::Member,
    ];

    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Owner | Role::Admin => true,
            Role::NetworkAdmin => matches!(
                p,
                ReadTailnet | ReadPolicy | WritePolicy | ReadDns | WriteDns | SignedIn
            ),
            Role::ItAdmin => matches!(
                p,
                ReadTailnet
                    | WriteMachines
                    | WriteUsers
                    | WriteKeys
                    | ReadPolicy
                    | ReadDns
                    | SignedIn
            ),
            Role::Auditor => matches!(p, ReadTailnet | ReadPolicy | ReadDns | SignedIn),
            Role::Member => matches!(p, SignedIn),
        }
    }

    /// The name used in configuration, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::NetworkAdmin => "network_admin",
            Role::ItAdmin => "it_admin",
            Role::Auditor => "auditor",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim().to_ascii_lowercase().replace('-', "_"))
    }

    /// As shown to people.
    pub fn label(self) -> &'static str {
        match self {
            Role::Owner => "Owner",
            Role::Admin => "Admin",
            Role::NetworkAdmin => "Network admin",
            Role::ItAdmin => "IT admin",
            Role::Auditor => "Auditor",
            Role::Member => "Member",
        }
    }
}

/// Whose things an action may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Only what belongs to this tailnet user.
    OwnOf(u64),
}

impl Scope {
    /// Whether something owned by `owner` (`None`: tagged, owned by no person) is in scope.
    pub fn covers(self, owner: Option<u64>) -> bool {
        match self {
            Scope::All => true,
            Scope::OwnOf(me) => owner == Some(me),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_parse_loosely() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("Network-Admin"), Some(Role::NetworkAdmin));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn only_owners_and_admins_manage_api_keys_and_auditors_change_nothing() {
        for r in Role::ALL {
            assert_eq!(
                r.allows(Permission::ManageApiKeys),
                matches!(r, Role::Owner | Role::Admin),
                "{r:?}"
            );
            assert_eq!(
                r.allows(Permission::ManageIdentity),
                matches!(r, Role::Owner | Role::Admin),
                "{r:?}"
            );
            assert!(r.allows(Permission::SignedIn));
        }
        for p in [
            Permission::WriteMachines,
            Permission::WriteUsers,
            Permission::WriteKeys,
            Permission::WritePolicy,
            Permission::WriteDns,
        ] {
            assert!(!Role::Auditor.allows(p), "{p:?}");
            assert!(!Role::Member.allows(p), "{p:?}");
        }
        assert!(Role::NetworkAdmin.allows(Permission::WritePolicy));
        assert!(!Role::NetworkAdmin.allows(Permission::WriteMachines));
        assert!(Role::ItAdmin.allows(Permission::WriteMachines));
        assert!(!Role::ItAdmin.allows(Permission::WriteDns));
        assert!(!Role::Member.allows(Permission::ReadTailnet));
    }

    #[test]
    fn a_members_scope_covers_only_their_own() {
        assert!(Scope::OwnOf(3).covers(Some(3)));
        assert!(!Scope::OwnOf(3).covers(Some(4)));
        assert!(
            !Scope::OwnOf(3).covers(None),
            "tagged machines are nobody's own"
        );
        assert!(Scope::All.covers(None));
    }
}
