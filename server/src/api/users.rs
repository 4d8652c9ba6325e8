//! Users: headscale's `/api/v1/user…` routes.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::errors::{ApiError, WireJson, WireQuery, parse_id};
use super::wire::{self, UserResponse, UsersResponse};
use crate::admin::{Admin, CreateUser};

type ApiResult<T> = Result<Json<T>, ApiError>;

/// headscale's `ListUsers` filters; each one given must match.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct UserFilter {
    id: String,
    name: String,
    email: String,
}

pub async fn list_users(
    State(a): State<Admin>,
    WireQuery(f): WireQuery<UserFilter>,
) -> ApiResult<UsersResponse> {
    let id = match f.id.trim() {
        "" | "0" => None,
        id => Some(parse_id(id, "user id")?),
    };
    let users = a
        .list_users()
        .iter()
        .filter(|u| id.is_none_or(|id| u.id == id))
        .filter(|u| f.name.is_empty() || u.name == f.name)
        .filter(|u| f.email.is_empty() || u.email == f.email)
        .map(wire::User::from_view)
        .collect();
    Ok(Json(UsersResponse { users }))
}

pub async fn create_user(
    State(a): State<Admin>,
    WireJson(req): WireJson<wire::CreateUserRequest>,
) -> ApiResult<UserResponse> {
    let view = a
        .create_user(CreateUser {
            name: req.name,
            display_name: req.display_name,
            email: req.email,
            picture_url: req.picture_url,
        })
        .await?;
    Ok(Json(UserResponse {
        user: wire::User::from_view(&view),
    }))
}

pub async fn delete_user(State(a): State<Admin>, Path(id): Path<String>) -> ApiResult<Value> {
    let id = a.resolve_user(&id)?;
    a.delete_user(id).await?;
    Ok(Json(json!({})))
}

pub async fn rename_user(
    State(a): State<Admin>,
    Path((id, new_name)): Path<(String, String)>,
) -> ApiResult<UserResponse> {
    let id = a.resolve_user(&id)?;
    let view = a.rename_user(id, new_name).await?;
    Ok(Json(UserResponse {
        user: wire::User::from_view(&view),
    }))
}
