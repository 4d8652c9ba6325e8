//! Pre-auth keys and API keys: headscale's `/api/v1/preauthkey…` and `/api/v1/apikey…`.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::errors::{ApiError, WireJson, WireQuery};
use super::wire::{self, ApiKeysResponse, PreAuthKeyResponse, PreAuthKeysResponse};
use crate::admin::{Admin, CreateApiKey, CreatePreAuthKey, KeySelector};
use crate::tailnet::secret::SecretKind;

type ApiResult<T> = Result<Json<T>, ApiError>;

pub async fn list_preauth_keys(State(a): State<Admin>) -> ApiResult<PreAuthKeysResponse> {
    Ok(Json(PreAuthKeysResponse {
        pre_auth_keys: a
            .list_preauth_keys()
            .iter()
            .map(wire::PreAuthKey::from_view)
            .collect(),
    }))
}

pub async fn create_preauth_key(
    State(a): State<Admin>,
    WireJson(req): WireJson<wire::CreatePreAuthKeyRequest>,
) -> ApiResult<PreAuthKeyResponse> {
    let view = a
        .create_preauth_key(CreatePreAuthKey {
            user: req.user,
            reusable: req.reusable,
            ephemeral: req.ephemeral,
            expiration: req.expiration,
            tags: req.acl_tags,
        })
        .await?;
    Ok(Json(PreAuthKeyResponse {
        pre_auth_key: wire::PreAuthKey::from_view(&view),
    }))
}

fn required_id(req: wire::IdRequest) -> Result<u64, ApiError> {
    req.id.ok_or_else(|| ApiError::invalid("an id is required"))
}

pub async fn expire_preauth_key(
    State(a): State<Admin>,
    WireJson(req): WireJson<wire::IdRequest>,
) -> ApiResult<Value> {
    a.expire_preauth_key(required_id(req)?).await?;
    Ok(Json(json!({})))
}

pub async fn delete_preauth_key(
    State(a): State<Admin>,
    WireQuery(req): WireQuery<wire::IdRequest>,
) -> ApiResult<Value> {
    a.delete_preauth_key(required_id(req)?).await?;
    Ok(Json(json!({})))
}

pub async fn list_api_keys(State(a): State<Admin>) -> ApiResult<ApiKeysResponse> {
    Ok(Json(ApiKeysResponse {
        api_keys: a
            .list_api_keys()
            .iter()
            .map(wire::ApiKey::from_view)
            .collect(),
    }))
}

pub async fn create_api_key(
    State(a): State<Admin>,
    WireJson(req): WireJson<wire::CreateApiKeyRequest>,
) -> ApiResult<wire::CreateApiKeyResponse> {
    let view = a
        .create_api_key(CreateApiKey {
            expiration: req.expiration,
        })
        .await?;
    Ok(Json(wire::CreateApiKeyResponse {
        api_key: view.key.unwrap_or_default(),
    }))
}

fn selector(prefix: Option<String>, id: Option<u64>) -> Result<KeySelector, ApiError> {
    let prefix = prefix
        .map(|p| SecretKind::Api.bare_prefix(&p))
        .filter(|p| !p.is_empty());
    if prefix.is_none() && id.is_none() {
        return Err(ApiError::invalid("give the key's prefix or id"));
    }
    Ok(KeySelector { id, prefix })
}

pub async fn expire_api_key(
    State(a): State<Admin>,
    WireJson(req): WireJson<wire::ExpireApiKeyRequest>,
) -> ApiResult<Value> {
    a.expire_api_key(selector(req.prefix, req.id)?).await?;
    Ok(Json(json!({})))
}

/// `DELETE /api/v1/apikey/{prefix}?id=`: the id, when given, names the key.
pub async fn delete_api_key(
    State(a): State<Admin>,
    Path(prefix): Path<String>,
    WireQuery(q): WireQuery<wire::IdRequest>,
) -> ApiResult<Value> {
    let sel = match q.id {
        Some(id) => selector(None, Some(id))?,
        None => {
            // Before `?id=` existed, oxiscale's CLI put a numeric id in the path.
            let known = a
                .list_api_keys()
                .iter()
                .any(|k| k.prefix == SecretKind::Api.bare_prefix(&prefix));
            match prefix.parse::<u64>() {
                Ok(id) if !known => selector(None, Some(id))?,
                _ => selector(Some(prefix), None)?,
            }
        }
    };
    a.delete_api_key(sel).await?;
    Ok(Json(json!({})))
}
