//! Tailscale's API v2 for device posture attributes, beside headscale's `/api/v1` and behind
//! the same API keys: `GET /api/v2/device/{id}/attributes`, `POST` and `DELETE
//! /api/v2/device/{id}/attributes/{key}`. `{id}` is the node id or its stable id (`n<id>`).

use axum::Json;
use axum::extract::{Path, State};

use super::errors::{ApiError, WireJson};
use crate::admin::Admin;
use crate::admin::attributes::{AttributesView, SetAttribute, parse_device_id};

type ApiResult<T> = Result<Json<T>, ApiError>;

pub async fn list(State(a): State<Admin>, Path(id): Path<String>) -> ApiResult<AttributesView> {
    let id = parse_device_id(&id)?;
    Ok(Json(a.node_attributes(id)?))
}

pub async fn set(
    State(a): State<Admin>,
    Path((id, key)): Path<(String, String)>,
    WireJson(body): WireJson<SetAttribute>,
) -> ApiResult<AttributesView> {
    let id = parse_device_id(&id)?;
    Ok(Json(a.set_node_attribute(id, key, body).await?))
}

pub async fn delete(
    State(a): State<Admin>,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<AttributesView> {
    let id = parse_device_id(&id)?;
    Ok(Json(a.delete_node_attribute(id, key).await?))
}
