//! `/machine/register` (protocol/02 §1).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::hostinfo::Hostinfo;
use crate::key::NodePublic;
use crate::time_fmt;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RegisterRequest {
    pub version: u32,
    pub node_key: NodePublic,
    pub old_node_key: NodePublic,
    #[serde(rename = "NLKey")]
    pub nl_key: Option<String>,
    pub auth: Option<RegisterAuth>,
    /// Zero: default expiry. In the past: the client is logging out.
    #[serde(with = "time_fmt::zero_is_none")]
    pub expiry: Option<OffsetDateTime>,
    /// The AuthURL the client got earlier; the server answers once that login completes.
    pub followup: String,
    pub hostinfo: Option<Hostinfo>,
    pub ephemeral: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RegisterAuth {
    pub auth_key: String,
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResponse {
    pub user: RegisterUser,
    pub login: Login,
    pub node_key_expired: bool,
    pub machine_authorized: bool,
    #[serde(rename = "AuthURL")]
    pub auth_url: String,
    /// Shown to the user as the reason registration failed.
    pub error: String,
}

impl RegisterResponse {
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            error: message.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterUser {
    #[serde(rename = "ID")]
    pub id: u64,
    pub display_name: String,
    #[serde(rename = "ProfilePicURL")]
    pub profile_pic_url: String,
    #[serde(with = "time_fmt::zero_is_none")]
    pub created: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Login {
    #[serde(rename = "ID")]
    pub id: u64,
    pub provider: String,
    pub login_name: String,
    pub display_name: String,
    #[serde(rename = "ProfilePicURL")]
    pub profile_pic_url: String,
}
