//! headscale's messages as grpc-gateway writes them (protojson with every field emitted):
//! lowerCamelCase names, uint64 ids as strings, RFC 3339 timestamps (`null` when unset),
//! enum names, `[]` for empty lists, `""` for unset strings. Built from the administration's
//! views; the CLI reads them back into those views (`into_view`), so both directions live
//! here. Fields past headscale's are oxiscale's extensions (clients ignore unknown fields).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::admin::dto::{ApiKeyView, NodeView, PreAuthKeyView, RoutesView, UserView};
use crate::tailnet::secret::SecretKind;

/// A uint64 as protojson writes it (a string); read from a string or a number.
pub mod id {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        opt::deserialize(d).map(Option::unwrap_or_default)
    }

    /// An optional id: absent, `null`, `""` and `"0"` are unset (protojson's zero value).
    pub mod opt {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Either {
                Number(u64),
                Text(String),
            }
            match Option::<Either>::deserialize(d)? {
                None => Ok(None),
                Some(Either::Number(n)) => Ok(Some(n).filter(|n| *n != 0)),
                Some(Either::Text(t)) if t.trim().is_empty() => Ok(None),
                Some(Either::Text(t)) => t
                    .trim()
                    .parse::<u64>()
                    .map(|n| Some(n).filter(|n| *n != 0))
                    .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a uint64"))),
            }
        }
    }
}

/// A boolean query parameter as grpc-gateway reads it (Go's `strconv.ParseBool`): `1`, `t`,
/// `T`, `TRUE`, `true`, `True` and their `0`/`f`/`false` counterparts (Python's `requests`
/// sends `True`).
pub fn query_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let text = String::deserialize(d)?;
    match text.as_str() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(serde::de::Error::custom(format!(
            "{text:?} is not a boolean"
        ))),
    }
}

/// headscale's `RegisterMethod` enum names, each at its number in the proto.
pub const REGISTER_METHODS: [&str; 4] = [
    "REGISTER_METHOD_UNSPECIFIED",
    "REGISTER_METHOD_AUTH_KEY",
    "REGISTER_METHOD_CLI",
    "REGISTER_METHOD_OIDC",
];

/// headscale's `RegisterMethod` enum from oxiscale's method.
pub fn register_method(method: &str) -> &'static str {
    match method {
        "authkey" => "REGISTER_METHOD_AUTH_KEY",
        // A pending login an administrator registered by auth id.
        "cli" => "REGISTER_METHOD_CLI",
        // A login the identity provider vouched for.
        "interactive" => "REGISTER_METHOD_OIDC",
        _ => "REGISTER_METHOD_UNSPECIFIED",
    }
}

fn method_from_enum(name: &str) -> String {
    match name {
        "REGISTER_METHOD_AUTH_KEY" => "authkey",
        "REGISTER_METHOD_CLI" => "cli",
        "REGISTER_METHOD_OIDC" => "interactive",
        _ => "",
    }
    .to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(with = "id")]
    pub id: u64,
    pub name: String,
    pub created_at: Option<String>,
    pub display_name: String,
    pub email: String,
    pub provider_id: String,
    pub provider: String,
    pub profile_pic_url: String,
}

impl User {
    pub fn from_view(u: &UserView) -> Self {
        User {
            id: u.id,
            name: u.name.clone(),
            created_at: Some(u.created_at.clone()),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            provider_id: u.provider_id.clone(),
            provider: u.provider.clone(),
            profile_pic_url: u.profile_pic_url.clone(),
        }
    }

    pub fn into_view(self) -> UserView {
        UserView {
            id: self.id,
            name: self.name,
            display_name: self.display_name,
            email: self.email,
            created_at: self.created_at.unwrap_or_default(),
            provider: self.provider,
            provider_id: self.provider_id,
            profile_pic_url: self.profile_pic_url,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKey {
    pub user: Option<User>,
    #[serde(with = "id")]
    pub id: u64,
    pub key: String,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub expiration: Option<String>,
    pub created_at: Option<String>,
    pub acl_tags: Vec<String>,
    /// oxiscale: whether it is past its expiration.
    #[serde(default)]
    pub expired: bool,
}

impl PreAuthKey {
    pub fn from_view(k: &PreAuthKeyView) -> Self {
        PreAuthKey {
            user: k.user.as_ref().map(User::from_view),
            id: k.id,
            key: k.key.clone(),
            reusable: k.reusable,
            ephemeral: k.ephemeral,
            used: k.used,
            expiration: Some(k.expiration.clone()),
            created_at: Some(k.created_at.clone()),
            acl_tags: k.acl_tags.clone(),
            expired: k.expired,
        }
    }

    pub fn into_view(self) -> PreAuthKeyView {
        PreAuthKeyView {
            id: self.id,
            key: self.key,
            user: self.user.map(User::into_view),
            reusable: self.reusable,
            ephemeral: self.ephemeral,
            used: self.used,
            expired: self.expired,
            expiration: self.expiration.unwrap_or_default(),
            created_at: self.created_at.unwrap_or_default(),
            acl_tags: self.acl_tags,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    #[serde(with = "id")]
    pub id: u64,
    /// The display form, as headscale's `hskey-api-<prefix>-***`: `oxskey-api-<prefix>-***`.
    pub prefix: String,
    pub expiration: Option<String>,
    pub created_at: Option<String>,
    pub last_seen: Option<String>,
    /// oxiscale: whether it is past its expiration.
    #[serde(default)]
    pub expired: bool,
}

impl ApiKey {
    pub fn from_view(k: &ApiKeyView) -> Self {
        ApiKey {
            id: k.id,
            prefix: SecretKind::Api.display(&k.prefix),
            expiration: Some(k.expiration.clone()),
            created_at: Some(k.created_at.clone()),
            last_seen: k.last_seen.clone(),
            expired: k.expired,
        }
    }

    pub fn into_view(self) -> ApiKeyView {
        let prefix = SecretKind::Api.bare_prefix(&self.prefix);
        ApiKeyView {
            id: self.id,
            prefix,
            key: None,
            expiration: self.expiration.unwrap_or_default(),
            created_at: self.created_at.unwrap_or_default(),
            last_seen: self.last_seen,
            expired: self.expired,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(with = "id")]
    pub id: u64,
    pub machine_key: String,
    pub node_key: String,
    pub disco_key: String,
    pub ip_addresses: Vec<String>,
    pub name: String,
    pub user: Option<User>,
    pub last_seen: Option<String>,
    pub expiry: Option<String>,
    pub pre_auth_key: Option<PreAuthKey>,
    pub created_at: Option<String>,
    pub register_method: String,
    pub given_name: String,
    pub online: bool,
    pub approved_routes: Vec<String>,
    pub available_routes: Vec<String>,
    pub subnet_routes: Vec<String>,
    pub tags: Vec<String>,
    // oxiscale's extensions.
    /// `false` while the node waits for an administrator (`node.approval_required`).
    #[serde(default)]
    pub approved: bool,
    #[serde(default)]
    pub fqdn: String,
    #[serde(default)]
    pub expired: bool,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub client_version: String,
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub home_derp: i64,
}

impl Node {
    /// `key`: the pre-auth key the node registered with, if it still exists.
    pub fn from_view(n: &NodeView, key: Option<&PreAuthKeyView>) -> Self {
        Node {
            id: n.id,
            machine_key: n.machine_key.clone(),
            node_key: n.node_key.clone(),
            disco_key: n.disco_key.clone(),
            ip_addresses: n.ip_addresses.clone(),
            name: n.name.clone(),
            user: n.user.as_ref().map(User::from_view),
            last_seen: n.last_seen.clone(),
            expiry: n.expiry.clone(),
            pre_auth_key: key.map(PreAuthKey::from_view),
            created_at: Some(n.created_at.clone()),
            register_method: register_method(&n.register_method).to_owned(),
            given_name: n.given_name.clone(),
            online: n.online,
            approved_routes: n.approved_routes.clone(),
            available_routes: n.available_routes.clone(),
            subnet_routes: n.subnet_routes.clone(),
            tags: n.tags.clone(),
            approved: n.approved,
            fqdn: n.fqdn.clone(),
            expired: n.expired,
            ephemeral: n.ephemeral,
            os: n.os.clone(),
            client_version: n.client_version.clone(),
            endpoints: n.endpoints.clone(),
            home_derp: n.home_derp,
        }
    }

    pub fn into_view(self) -> NodeView {
        NodeView {
            id: self.id,
            machine_key: self.machine_key,
            node_key: self.node_key,
            disco_key: self.disco_key,
            ip_addresses: self.ip_addresses,
            name: self.name,
            given_name: self.given_name,
            fqdn: self.fqdn,
            user: self.user.map(User::into_view),
            tags: self.tags,
            online: self.online,
            last_seen: self.last_seen,
            expiry: self.expiry,
            expired: self.expired,
            approved: self.approved,
            created_at: self.created_at.unwrap_or_default(),
            register_method: method_from_enum(&self.register_method),
            ephemeral: self.ephemeral,
            approved_routes: self.approved_routes,
            available_routes: self.available_routes,
            subnet_routes: self.subnet_routes,
            os: self.os,
            client_version: self.client_version,
            endpoints: self.endpoints,
            home_derp: self.home_derp,
        }
    }
}

/// oxiscale's route listing (headscale 0.26 dropped its routes API; this is an extension).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Routes {
    #[serde(with = "id")]
    pub id: u64,
    pub name: String,
    pub approved_routes: Vec<String>,
    pub available_routes: Vec<String>,
    pub subnet_routes: Vec<String>,
}

impl Routes {
    pub fn from_view(r: &RoutesView) -> Self {
        Routes {
            id: r.id,
            name: r.name.clone(),
            approved_routes: r.approved_routes.clone(),
            available_routes: r.available_routes.clone(),
            subnet_routes: r.subnet_routes.clone(),
        }
    }

    pub fn into_view(self) -> RoutesView {
        RoutesView {
            id: self.id,
            name: self.name,
            approved_routes: self.approved_routes,
            available_routes: self.available_routes,
            subnet_routes: self.subnet_routes,
        }
    }
}

// Envelopes.

#[derive(Debug, Serialize, Deserialize)]
pub struct UserResponse {
    pub user: User,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UsersResponse {
    pub users: Vec<User>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NodeResponse {
    pub node: Node,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NodesResponse {
    pub nodes: Vec<Node>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKeyResponse {
    pub pre_auth_key: PreAuthKey,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKeysResponse {
    pub pre_auth_keys: Vec<PreAuthKey>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeysResponse {
    pub api_keys: Vec<ApiKey>,
}

/// The whole key, shown once.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateApiKeyResponse {
    pub api_key: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoutesResponse {
    pub routes: Vec<Routes>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackfillResponse {
    /// What changed, one line per node.
    pub changes: Vec<String>,
    /// oxiscale: the ids of the nodes that changed.
    #[serde(default)]
    pub node_ids: Vec<String>,
}

/// `GetPolicy`/`SetPolicy`: headscale's `{policy, updatedAt}` and oxiscale's view of where
/// the policy comes from.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResponse {
    /// The policy text; `""`: no policy (every node may reach every other).
    pub policy: String,
    /// When the policy was stored (database mode, as headscale); `null` for a policy file
    /// or no policy.
    pub updated_at: Option<String>,
    #[serde(default)]
    pub mode: serde_json::Value,
    #[serde(default)]
    pub path: Option<std::path::PathBuf>,
    #[serde(default)]
    pub problem: Option<String>,
}

/// `{}` with oxiscale's per-node report of the checked policy in `report`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckPolicyResponse {
    pub report: serde_json::Value,
}

// Requests.

/// headscale's `CreateUserRequest` (snake_case names are read too).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateUserRequest {
    pub name: String,
    #[serde(alias = "display_name")]
    pub display_name: String,
    pub email: String,
    #[serde(alias = "picture_url")]
    pub picture_url: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct CreatePreAuthKeyRequest {
    #[serde(deserialize_with = "id::opt::deserialize")]
    pub user: Option<u64>,
    pub reusable: bool,
    pub ephemeral: bool,
    /// RFC 3339 time (headscale), or a lifetime such as `1h` (oxiscale).
    pub expiration: Option<String>,
    #[serde(alias = "tags", alias = "acl_tags")]
    pub acl_tags: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct IdRequest {
    #[serde(deserialize_with = "id::opt::deserialize")]
    pub id: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct CreateApiKeyRequest {
    /// RFC 3339 time (headscale), or a lifetime such as `90d` (oxiscale).
    pub expiration: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ExpireApiKeyRequest {
    pub prefix: Option<String>,
    #[serde(deserialize_with = "id::opt::deserialize")]
    pub id: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthRegisterRequest {
    /// A user name or id.
    #[serde(deserialize_with = "text_or_number")]
    pub user: String,
    #[serde(alias = "auth_id")]
    pub auth_id: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthIdRequest {
    #[serde(alias = "auth_id")]
    pub auth_id: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct TagsRequest {
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct RoutesRequest {
    pub routes: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct PolicyRequest {
    pub policy: String,
}

/// A string field that some clients send as a number.
fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        None => String::new(),
        Some(Either::Number(n)) => n.to_string(),
        Some(Either::Text(t)) => t,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strings_out_and_strings_or_numbers_in() {
        let r: CreatePreAuthKeyRequest =
            serde_json::from_str(r#"{"user": "7", "aclTags": ["tag:a"]}"#).unwrap();
        assert_eq!((r.user, r.acl_tags), (Some(7), vec!["tag:a".to_owned()]));
        let r: CreatePreAuthKeyRequest = serde_json::from_str(r#"{"user": 7}"#).unwrap();
        assert_eq!(r.user, Some(7));
        for unset in [
            r#"{}"#,
            r#"{"user": ""}"#,
            r#"{"user": "0"}"#,
            r#"{"user": null}"#,
        ] {
            let r: CreatePreAuthKeyRequest = serde_json::from_str(unset).unwrap();
            assert_eq!(r.user, None, "{unset}");
        }
        assert!(serde_json::from_str::<CreatePreAuthKeyRequest>(r#"{"user": "x"}"#).is_err());
        #[derive(Deserialize)]
        struct Q {
            #[serde(deserialize_with = "query_bool")]
            b: bool,
        }
        for (text, want) in [("True", true), ("1", true), ("true", true), ("F", false)] {
            let q: Q = serde_json::from_value(serde_json::json!({ "b": text })).unwrap();
            assert_eq!(q.b, want, "{text}");
        }
        assert!(serde_json::from_value::<Q>(serde_json::json!({ "b": "yes" })).is_err());
        let out = serde_json::to_value(Routes {
            id: 3,
            name: "a".into(),
            approved_routes: vec![],
            available_routes: vec![],
            subnet_routes: vec![],
        })
        .unwrap();
        assert_eq!(out["id"], "3");
        assert_eq!(out["approvedRoutes"], serde_json::json!([]));
    }
}
