//! `-o json` and `-o json-line` as headscale 0.29 prints them, byte for byte, so that
//! scripts written against `headscale … -o json | jq` read oxiscale the same way.
//!
//! headscale prints its protobuf messages with Go's `encoding/json` (tab-indented for
//! `json`): fields in the `.proto`'s order under their proto names, zero values left out
//! (`omitempty`: `false`, `0`, `""`, empty lists, unset messages), uint64 ids as numbers,
//! enums as their numbers, times as `{"seconds": …, "nanos": …}`, `<`, `>` and `&` escaped,
//! and an empty list as `null`. The structs below mirror those messages; they are filled
//! from the REST API's answers (`api::wire`).
//!
//! One field is oxiscale's own: a node waiting for approval says `"approved": false` after
//! headscale's fields. headscale has no such state, so nothing it could print changes.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::api::wire;

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn is_true(v: &bool) -> bool {
    *v
}

/// `google.protobuf.Timestamp`.
#[derive(Debug, Serialize, PartialEq)]
pub struct Timestamp {
    #[serde(skip_serializing_if = "is_zero")]
    seconds: i64,
    #[serde(skip_serializing_if = "is_zero")]
    nanos: i32,
}

impl Timestamp {
    /// An RFC 3339 time from the REST API; what does not parse is left unset.
    fn parse(text: Option<&str>) -> Option<Timestamp> {
        let t = OffsetDateTime::parse(text?, &Rfc3339).ok()?;
        Some(Timestamp {
            seconds: t.unix_timestamp(),
            nanos: t.nanosecond() as i32,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct User {
    #[serde(skip_serializing_if = "is_zero")]
    id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "is_zero")]
    display_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    email: String,
    #[serde(skip_serializing_if = "is_zero")]
    provider_id: String,
    #[serde(skip_serializing_if = "is_zero")]
    provider: String,
    #[serde(skip_serializing_if = "is_zero")]
    profile_pic_url: String,
}

impl From<&wire::User> for User {
    fn from(u: &wire::User) -> Self {
        User {
            id: u.id,
            name: u.name.clone(),
            created_at: Timestamp::parse(u.created_at.as_deref()),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            provider_id: u.provider_id.clone(),
            provider: u.provider.clone(),
            profile_pic_url: u.profile_pic_url.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PreAuthKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User>,
    #[serde(skip_serializing_if = "is_zero")]
    id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    key: String,
    #[serde(skip_serializing_if = "is_zero")]
    reusable: bool,
    #[serde(skip_serializing_if = "is_zero")]
    ephemeral: bool,
    #[serde(skip_serializing_if = "is_zero")]
    used: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    acl_tags: Vec<String>,
}

impl From<&wire::PreAuthKey> for PreAuthKey {
    fn from(k: &wire::PreAuthKey) -> Self {
        PreAuthKey {
            user: k.user.as_ref().map(User::from),
            id: k.id,
            key: k.key.clone(),
            reusable: k.reusable,
            ephemeral: k.ephemeral,
            used: k.used,
            expiration: Timestamp::parse(k.expiration.as_deref()),
            created_at: Timestamp::parse(k.created_at.as_deref()),
            acl_tags: k.acl_tags.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ApiKey {
    #[serde(skip_serializing_if = "is_zero")]
    id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<Timestamp>,
}

impl From<&wire::ApiKey> for ApiKey {
    fn from(k: &wire::ApiKey) -> Self {
        ApiKey {
            id: k.id,
            prefix: k.prefix.clone(),
            expiration: Timestamp::parse(k.expiration.as_deref()),
            created_at: Timestamp::parse(k.created_at.as_deref()),
            last_seen: Timestamp::parse(k.last_seen.as_deref()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Node {
    #[serde(skip_serializing_if = "is_zero")]
    id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    machine_key: String,
    #[serde(skip_serializing_if = "is_zero")]
    node_key: String,
    #[serde(skip_serializing_if = "is_zero")]
    disco_key: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ip_addresses: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_auth_key: Option<PreAuthKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<Timestamp>,
    /// `RegisterMethod`: 1 auth key, 2 CLI, 3 OIDC.
    #[serde(skip_serializing_if = "is_zero")]
    register_method: i32,
    #[serde(skip_serializing_if = "is_zero")]
    given_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    online: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    approved_routes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    available_routes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subnet_routes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    /// oxiscale: printed only while the node waits for approval.
    #[serde(skip_serializing_if = "is_true")]
    approved: bool,
}

impl From<&wire::Node> for Node {
    fn from(n: &wire::Node) -> Self {
        Node {
            id: n.id,
            machine_key: n.machine_key.clone(),
            node_key: n.node_key.clone(),
            disco_key: n.disco_key.clone(),
            ip_addresses: n.ip_addresses.clone(),
            name: n.name.clone(),
            user: n.user.as_ref().map(User::from),
            last_seen: Timestamp::parse(n.last_seen.as_deref()),
            expiry: Timestamp::parse(n.expiry.as_deref()),
            pre_auth_key: n.pre_auth_key.as_ref().map(PreAuthKey::from),
            created_at: Timestamp::parse(n.created_at.as_deref()),
            register_method: wire::REGISTER_METHODS
                .iter()
                .position(|name| *name == n.register_method)
                .unwrap_or(0) as i32,
            given_name: n.given_name.clone(),
            online: n.online,
            approved_routes: n.approved_routes.clone(),
            available_routes: n.available_routes.clone(),
            subnet_routes: n.subnet_routes.clone(),
            tags: n.tags.clone(),
            approved: n.approved,
        }
    }
}

/// `BackfillNodeIPsResponse`.
#[derive(Debug, Serialize)]
pub struct Backfill {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    changes: Vec<String>,
}

impl From<&wire::BackfillResponse> for Backfill {
    fn from(r: &wire::BackfillResponse) -> Self {
        Backfill {
            changes: r.changes.clone(),
        }
    }
}

/// `HealthResponse`.
#[derive(Debug, Serialize)]
pub struct Health {
    #[serde(skip_serializing_if = "is_zero")]
    pub database_connectivity: bool,
}

/// What headscale prints for a list: its elements, or `null` when there are none (Go's
/// nil slice, as protobuf decodes an empty repeated field).
pub fn list<T: Serialize>(items: &[T]) -> Option<&[T]> {
    (!items.is_empty()).then_some(items)
}

/// Go's `json.MarshalIndent(v, "", "\t")` (`indent`) or `json.Marshal(v)`.
pub fn render<T: Serialize + ?Sized>(v: &T, indent: bool) -> String {
    let mut bytes = Vec::new();
    let written = if indent {
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut bytes, formatter);
        v.serialize(&mut ser)
    } else {
        v.serialize(&mut serde_json::Serializer::new(&mut bytes))
    };
    written.expect("plain data serialises");
    let text = String::from_utf8(bytes).expect("serde_json writes UTF-8");
    go_escape(&text)
}

/// Go escapes these inside strings (HTML safety; line and paragraph separators for
/// JavaScript); outside strings JSON never has them.
fn go_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_user() -> wire::User {
        wire::User {
            id: 1,
            name: "alice".into(),
            created_at: Some("2026-12-05T02:28:20.123456789Z".into()),
            display_name: String::new(),
            email: "a<b>&c@example.com".into(),
            provider_id: String::new(),
            provider: String::new(),
            profile_pic_url: String::new(),
        }
    }

    #[test]
    fn a_user_prints_as_go_prints_headscale_s_message() {
        let user = User::from(&wire_user());
        assert_eq!(
            render(&user, true),
            "{\n\t\"id\": 1,\n\t\"name\": \"alice\",\n\t\"created_at\": {\n\t\t\"seconds\": \
             1796437700,\n\t\t\"nanos\": 123456789\n\t},\n\t\"email\": \
             \"a\\u003cb\\u003e\\u0026c@example.com\"\n}"
        );
        assert_eq!(
            render(&user, false),
            "{\"id\":1,\"name\":\"alice\",\"created_at\":{\"seconds\":1796437700,\"nanos\":\
             123456789},\"email\":\"a\\u003cb\\u003e\\u0026c@example.com\"}"
        );
    }

    #[test]
    fn zero_values_are_left_out_and_an_empty_list_is_null() {
        let whole_second = Timestamp::parse(Some("1970-01-01T00:00:00Z")).unwrap();
        assert_eq!(render(&whole_second, false), "{}");
        assert_eq!(Timestamp::parse(Some("not a time")), None);
        assert_eq!(render(&list::<User>(&[]), true), "null");
        let users = [User::from(&wire_user())];
        assert!(render(&list(&users), true).starts_with("[\n\t{\n\t\t\"id\": 1,"));
        assert_eq!(
            render(
                &Health {
                    database_connectivity: false
                },
                true
            ),
            "{}"
        );
    }

    #[test]
    fn a_node_s_enum_is_its_number_and_approval_shows_only_while_it_waits() {
        let mut n: wire::Node = serde_json::from_value(serde_json::json!({
            "id": "7", "machineKey": "mkey:00", "nodeKey": "nodekey:00", "discoKey": "",
            "ipAddresses": ["100.64.0.1"], "name": "laptop", "user": null, "lastSeen": null,
            "expiry": null, "preAuthKey": null, "createdAt": "2026-01-01T00:00:00Z",
            "registerMethod": "REGISTER_METHOD_CLI", "givenName": "laptop", "online": false,
            "approvedRoutes": [], "availableRoutes": [], "subnetRoutes": [], "tags": [],
            "approved": true
        }))
        .unwrap();
        let text = render(&Node::from(&n), false);
        assert_eq!(
            text,
            "{\"id\":7,\"machine_key\":\"mkey:00\",\"node_key\":\"nodekey:00\",\
             \"ip_addresses\":[\"100.64.0.1\"],\"name\":\"laptop\",\"created_at\":\
             {\"seconds\":1767225600},\"register_method\":2,\"given_name\":\"laptop\"}"
        );
        n.approved = false;
        assert!(render(&Node::from(&n), false).ends_with(",\"approved\":false}"));
    }
}
