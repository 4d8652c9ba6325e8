//! Pending interactive logins (a client that registered with nothing vouching for it waits
//! on its auth id): approve one as the re-login of a known node, or reject it.
//! `complete_registration` (in mod.rs) registers one as a user's node.

use time::OffsetDateTime;

use super::{Admin, AdminError, to_json};
use crate::tailnet::TailnetError;
use crate::tailnet::model::RegisterMethod;
use crate::tailnet::state::KeyExpiry;

impl Admin {
    /// Lets the pending login `auth_id` of a machine that already has a node re-authenticate
    /// that node for its owner. A new machine has no owner yet: it needs a user
    /// (`complete_registration`), and so does a tagged node.
    pub async fn approve_login(&self, auth_id: &str) -> Result<(), AdminError> {
        let now = OffsetDateTime::now_utc();
        let owner = self.tailnet.read(|s| {
            let pending = s.pending_login(auth_id).ok_or_else(|| {
                AdminError::Tailnet(TailnetError::NotFound {
                    what: "pending registration",
                    id: auth_id.to_owned(),
                })
            })?;
            let node = s
                .nodes()
                .find(|n| n.machine_key == pending.machine)
                .ok_or_else(|| {
                    AdminError::Precondition(format!(
                        "{auth_id} is a new machine: register it as a user's node (auth register --user)"
                    ))
                })?;
            node.user.ok_or_else(|| {
                AdminError::Precondition(format!(
                    "{auth_id} is the login of tagged node {}: register it with a user (auth register --user)",
                    node.given_name
                ))
            })
        })?;
        let auth_id = auth_id.to_owned();
        let id = self
            .tailnet
            .mutate(move |s, fx| {
                let by = RegisterMethod::Cli;
                s.complete_login_by(fx, &auth_id, owner, KeyExpiry::Default, by, now)
            })
            .await?;
        let view = self.node(id)?;
        self.record(
            "node.reauthenticate",
            format!("node {id} ({})", view.given_name),
            None,
            to_json(&view),
        )
        .await;
        Ok(())
    }

    /// Ends the pending login `auth_id`; the waiting client is told it was refused.
    pub async fn reject_login(&self, auth_id: &str) -> Result<(), AdminError> {
        let id = auth_id.to_owned();
        self.tailnet
            .mutate(move |s, _| s.reject_login(&id, "the login was rejected by an administrator"))
            .await?;
        self.record(
            "login.reject",
            format!("pending login {auth_id}"),
            None,
            None,
        )
        .await;
        Ok(())
    }
}
