//! Nodes: headscale's `/api/v1/node…` routes, oxiscale's node approval and route listing,
//! and the registration of interactive logins by auth id (`auth/…`, `node/register`).

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::errors::{ApiError, Code, WireJson, WireQuery, parse_id};
use super::wire::{self, NodeResponse, NodesResponse};
use crate::admin::dto::{NodeView, PreAuthKeyView};
use crate::admin::{Admin, CompleteRegistration, ExpireNode};

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The wire form of a node, with the pre-auth key it registered with (masked).
pub fn node_wire(a: &Admin, n: &NodeView) -> wire::Node {
    nodes_wire(a, std::slice::from_ref(n))
        .pop()
        .expect("one node in, one out")
}

/// [`node_wire`] for a list, under one read of the tailnet.
fn nodes_wire(a: &Admin, nodes: &[NodeView]) -> Vec<wire::Node> {
    let now = OffsetDateTime::now_utc();
    a.tailnet().read(|s| {
        nodes
            .iter()
            .map(|n| {
                let key = s
                    .node(n.id)
                    .and_then(|node| node.auth_key_id)
                    .and_then(|k| s.preauth_key(k))
                    .map(|k| PreAuthKeyView::from(s, k, None, now));
                wire::Node::from_view(n, key.as_ref())
            })
            .collect()
    })
}

fn envelope(a: &Admin, n: NodeView) -> Json<NodeResponse> {
    Json(NodeResponse {
        node: node_wire(a, &n),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NodeFilter {
    user: String,
}

pub async fn list_nodes(
    State(a): State<Admin>,
    WireQuery(f): WireQuery<NodeFilter>,
) -> ApiResult<NodesResponse> {
    let user = match f.user.trim() {
        "" => None,
        u => Some(a.resolve_user(u)?),
    };
    let nodes = a.list_nodes(user);
    Ok(Json(NodesResponse {
        nodes: nodes_wire(&a, &nodes),
    }))
}

pub async fn get_node(State(a): State<Admin>, Path(id): Path<String>) -> ApiResult<NodeResponse> {
    let id = parse_id(&id, "node id")?;
    Ok(envelope(&a, a.node(id)?))
}

pub async fn delete_node(State(a): State<Admin>, Path(id): Path<String>) -> ApiResult<Value> {
    let id = parse_id(&id, "node id")?;
    a.delete_node(id).await?;
    Ok(Json(json!({})))
}

/// headscale's query form of a node expiry: `?expiry=<RFC 3339>` or `?disableExpiry=true`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ExpireQuery {
    expiry: Option<String>,
    #[serde(deserialize_with = "wire::query_bool")]
    disable_expiry: bool,
}

pub async fn expire_node(
    State(a): State<Admin>,
    Path(id): Path<String>,
    WireQuery(q): WireQuery<ExpireQuery>,
) -> ApiResult<NodeResponse> {
    let id = parse_id(&id, "node id")?;
    let req = ExpireNode {
        at: q.expiry,
        disable: q.disable_expiry,
    };
    Ok(envelope(&a, a.expire_node(id, req).await?))
}

/// oxiscale: lets a node held by `node.approval_required` into the tailnet.
pub async fn approve_node(
    State(a): State<Admin>,
    Path(id): Path<String>,
) -> ApiResult<NodeResponse> {
    let id = parse_id(&id, "node id")?;
    Ok(envelope(&a, a.approve_node(id).await?))
}

pub async fn rename_node(
    State(a): State<Admin>,
    Path((id, new_name)): Path<(String, String)>,
) -> ApiResult<NodeResponse> {
    let id = parse_id(&id, "node id")?;
    Ok(envelope(&a, a.rename_node(id, new_name).await?))
}

pub async fn set_tags(
    State(a): State<Admin>,
    Path(id): Path<String>,
    WireJson(b): WireJson<wire::TagsRequest>,
) -> ApiResult<NodeResponse> {
    let id = parse_id(&id, "node id")?;
    Ok(envelope(&a, a.set_tags(id, b.tags).await?))
}

pub async fn approve_routes(
    State(a): State<Admin>,
    Path(id): Path<String>,
    WireJson(b): WireJson<wire::RoutesRequest>,
) -> ApiResult<NodeResponse> {
    let id = parse_id(&id, "node id")?;
    Ok(envelope(&a, a.approve_routes(id, b.routes).await?))
}

/// oxiscale: the routes of one node.
pub async fn list_routes(
    State(a): State<Admin>,
    Path(id): Path<String>,
) -> ApiResult<wire::RoutesResponse> {
    let id = parse_id(&id, "node id")?;
    routes(a.list_routes(Some(id))?)
}

/// oxiscale: the nodes that advertise or have approved routes.
pub async fn list_all_routes(State(a): State<Admin>) -> ApiResult<wire::RoutesResponse> {
    routes(a.list_routes(None)?)
}

fn routes(views: Vec<crate::admin::dto::RoutesView>) -> ApiResult<wire::RoutesResponse> {
    Ok(Json(wire::RoutesResponse {
        routes: views.iter().map(wire::Routes::from_view).collect(),
    }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct BackfillQuery {
    #[serde(deserialize_with = "wire::query_bool")]
    confirmed: bool,
}

pub async fn backfill_ips(
    State(a): State<Admin>,
    WireQuery(q): WireQuery<BackfillQuery>,
) -> ApiResult<wire::BackfillResponse> {
    // As headscale: nothing happens unless the caller confirms.
    if !q.confirmed {
        return Err(ApiError::new(
            Code::FailedPrecondition,
            "not confirmed, aborting: call with ?confirmed=true",
        ));
    }
    let changed = a.backfill_ips().await?;
    let changes = changed
        .iter()
        .map(|id| match a.node(*id) {
            Ok(n) => format!(
                "node {id} ({}): addresses {}",
                n.given_name,
                n.ip_addresses.join(", ")
            ),
            Err(_) => format!("node {id}"),
        })
        .collect();
    Ok(Json(wire::BackfillResponse {
        changes,
        node_ids: changed.iter().map(ToString::to_string).collect(),
    }))
}

async fn register(a: &Admin, user: &str, auth_id: &str) -> Result<Json<NodeResponse>, ApiError> {
    if auth_id.trim().is_empty() {
        return Err(ApiError::invalid("an auth id is required"));
    }
    if user.trim().is_empty() {
        return Err(ApiError::invalid("a user is required"));
    }
    let user = a.resolve_user(user.trim())?;
    let view = a
        .complete_registration(CompleteRegistration {
            auth_id: auth_id.trim().to_owned(),
            user,
        })
        .await?;
    Ok(envelope(a, view))
}

/// headscale 0.29's `AuthRegister`: a pending interactive login joins as `user`'s node.
pub async fn auth_register(
    State(a): State<Admin>,
    WireJson(b): WireJson<wire::AuthRegisterRequest>,
) -> ApiResult<NodeResponse> {
    register(&a, &b.user, &b.auth_id).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RegisterQuery {
    user: String,
    key: String,
}

/// headscale's `RegisterNode` (`nodes register --user --key`): `key` is the auth id of the
/// pending login, as in the URL the client printed.
pub async fn register_node(
    State(a): State<Admin>,
    WireQuery(q): WireQuery<RegisterQuery>,
) -> ApiResult<NodeResponse> {
    let key = q.key.rsplit('/').next().unwrap_or_default().to_owned();
    register(&a, &q.user, &key).await
}

/// headscale 0.29's `AuthApprove`: a pending login of a machine that already has a node
/// re-authenticates that node for its owner. A new machine needs a user: `auth/register`.
pub async fn auth_approve(
    State(a): State<Admin>,
    WireJson(b): WireJson<wire::AuthIdRequest>,
) -> ApiResult<Value> {
    a.approve_login(b.auth_id.trim()).await?;
    Ok(Json(json!({})))
}

/// headscale 0.29's `AuthReject`: the pending login ends; the client is told it was refused.
pub async fn auth_reject(
    State(a): State<Admin>,
    WireJson(b): WireJson<wire::AuthIdRequest>,
) -> ApiResult<Value> {
    a.reject_login(b.auth_id.trim()).await?;
    Ok(Json(json!({})))
}

/// headscale's `DebugCreateNode` makes a node no client holds the keys of; oxiscale's nodes
/// all belong to a real machine key, so this is refused rather than faked.
pub async fn debug_create_node() -> ApiError {
    ApiError::new(
        Code::Unimplemented,
        "debug/node is not supported: oxiscale creates nodes only for machines that register (use a pre-auth key, or auth/register for a pending login)",
    )
}
