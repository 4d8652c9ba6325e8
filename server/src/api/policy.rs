//! The access policy (headscale's `/api/v1/policy…`) and the DNS settings (oxiscale).

use axum::Json;
use axum::extract::State;

use super::errors::{ApiError, WireJson};
use super::wire::{self, CheckPolicyResponse, PolicyResponse};
use crate::admin::Admin;
use crate::policy::PolicyView;
use crate::tailnet::dns::DnsSettings;

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn policy_response(a: &Admin, v: PolicyView) -> PolicyResponse {
    let updated_at = match v.policy {
        Some(_) => a.policy_updated_at().await,
        None => None,
    };
    PolicyResponse {
        policy: v.policy.unwrap_or_default(),
        updated_at,
        mode: serde_json::to_value(v.mode).unwrap_or_default(),
        path: v.path,
        problem: v.problem,
    }
}

pub async fn get_policy(State(a): State<Admin>) -> ApiResult<PolicyResponse> {
    let view = a.get_policy().await;
    Ok(Json(policy_response(&a, view).await))
}

pub async fn set_policy(
    State(a): State<Admin>,
    WireJson(b): WireJson<wire::PolicyRequest>,
) -> ApiResult<PolicyResponse> {
    let view = a.set_policy(b.policy).await?;
    Ok(Json(policy_response(&a, view).await))
}

/// headscale answers `{}` to a valid policy; oxiscale adds the per-node report of the policy
/// compiled against the live tailnet (the golden cases' `expect` shape) as `report`.
pub async fn check_policy(
    State(a): State<Admin>,
    WireJson(b): WireJson<wire::PolicyRequest>,
) -> ApiResult<CheckPolicyResponse> {
    Ok(Json(CheckPolicyResponse {
        report: a.check_policy(&b.policy)?,
    }))
}

pub async fn get_dns(State(a): State<Admin>) -> ApiResult<DnsSettings> {
    Ok(Json(a.get_dns().await))
}

/// Validates, stores and puts the settings in force; answers with their canonical form.
pub async fn set_dns(
    State(a): State<Admin>,
    WireJson(b): WireJson<DnsSettings>,
) -> ApiResult<DnsSettings> {
    Ok(Json(a.set_dns(b).await?))
}
