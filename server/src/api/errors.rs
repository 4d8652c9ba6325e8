//! Errors as grpc-gateway sends them: `{"code": <gRPC code>, "message": …, "details": []}`
//! with the HTTP status grpc-gateway maps that code to, so headscale's clients read them.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::warn;

use crate::admin::AdminError;
use crate::console::auth::AccountError;
use crate::policy::PolicyStoreError;
use crate::tailnet::TailnetError;

/// The gRPC status codes the API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument = 3,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    /// grpc-gateway's `HTTPStatusFromCode`.
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A refused or failed API request.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Extra members of the body (a refused policy's `line` and `column`).
    pub extra: Vec<(&'static str, Value)>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            extra: Vec::new(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.http_status();
        if status.is_server_error() && self.code != Code::Unimplemented {
            warn!(error = %self.message, "admin request failed");
        }
        let mut body = json!({
            "code": self.code as i32,
            "message": self.message,
            "details": [],
        });
        for (k, v) in self.extra {
            body[k] = v;
        }
        (status, axum::Json(body)).into_response()
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let code = match &e {
            AdminError::BadRequest(_) | AdminError::Tailnet(TailnetError::Invalid(_)) => {
                Code::InvalidArgument
            }
            AdminError::Tailnet(TailnetError::NotFound { .. }) => Code::NotFound,
            AdminError::Tailnet(TailnetError::Conflict(_)) => Code::AlreadyExists,
            AdminError::Tailnet(TailnetError::Addresses(_)) => Code::ResourceExhausted,
            AdminError::Tailnet(TailnetError::Storage(_) | TailnetError::Internal(_)) => {
                Code::Internal
            }
            AdminError::PolicyInvalid(_)
            | AdminError::Policy(PolicyStoreError::Invalid(_))
            | AdminError::Policy(PolicyStoreError::InvalidFile { .. }) => Code::InvalidArgument,
            AdminError::Policy(PolicyStoreError::FileMode(_)) | AdminError::Precondition(_) => {
                Code::FailedPrecondition
            }
            AdminError::Policy(PolicyStoreError::Tailnet(_))
            | AdminError::Policy(PolicyStoreError::Read { .. })
            | AdminError::Policy(PolicyStoreError::Store(_)) => Code::Internal,
        };
        // A refused policy also says where, for editors that can jump there.
        let position = match &e {
            AdminError::PolicyInvalid(p)
            | AdminError::Policy(PolicyStoreError::Invalid(p))
            | AdminError::Policy(PolicyStoreError::InvalidFile { source: p, .. }) => {
                Some((p.line, p.column))
            }
            _ => None,
        };
        let mut err = ApiError::new(code, e.to_string());
        if let Some((line, column)) = position {
            err.extra = vec![("line", json!(line)), ("column", json!(column))];
        }
        err
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        let code = match &e {
            AccountError::InvalidName(_)
            | AccountError::WeakPassword
            | AccountError::BadSetupToken
            | AccountError::UnknownRole(_)
            | AccountError::MemberAccount => Code::InvalidArgument,
            AccountError::Exists(_) => Code::AlreadyExists,
            AccountError::SetupDone => Code::FailedPrecondition,
            AccountError::NotFound(_) => Code::NotFound,
            AccountError::Hash(_) | AccountError::Sql(_) => Code::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}

/// A JSON body; a body that does not parse is an InvalidArgument error, as with grpc-gateway.
pub struct WireJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for WireJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        // As grpc-gateway: no Content-Type needed, and an empty body is an empty message.
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let invalid =
            |e: serde_json::Error| ApiError::invalid(format!("the request body is not valid: {e}"));
        let mut value: Value = serde_json::from_slice(text).map_err(invalid)?;
        drop_nulls(&mut value);
        T::deserialize(value).map(WireJson).map_err(invalid)
    }
}

/// protojson reads a field given as `null` as not given, at any depth (clients that dump
/// their request models whole send `"ephemeral": null` for what they leave unset).
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(members) => {
            members.retain(|_, v| !v.is_null());
            members.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Query parameters; ones that do not parse are an InvalidArgument error.
pub struct WireQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for WireQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| WireQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::invalid(e.body_text()))
    }
}

/// A uint64 id from the path or the query.
pub fn parse_id(text: &str, what: &str) -> Result<u64, ApiError> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::invalid(format!("{what} {text:?} is not a number")))
}
