//! Server functions of the policy area.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;

use crate::dto::ConsoleError;
use crate::dto::policy::{PolicyDoc, Preview, SaveOutcome, Subject};

#[server(prefix = "/console/fn", endpoint = "policy/get", client = crate::api::ConsoleClient)]
pub async fn get_policy() -> Result<PolicyDoc, ConsoleError> {
    crate::backend::use_backend_for_all(crate::api::Permission::ReadPolicy)?
        .policy()
        .await
}

#[server(prefix = "/console/fn", endpoint = "policy/set", client = crate::api::ConsoleClient, input = Json)]
pub async fn save_policy(text: String) -> Result<SaveOutcome, ConsoleError> {
    crate::backend::use_backend_for_all(crate::api::Permission::WritePolicy)?
        .save_policy(text)
        .await
}

#[server(prefix = "/console/fn", endpoint = "policy/subjects", client = crate::api::ConsoleClient)]
pub async fn preview_subjects() -> Result<Vec<Subject>, ConsoleError> {
    crate::backend::use_backend_for_all(crate::api::Permission::ReadPolicy)?
        .preview_subjects()
        .await
}

#[server(prefix = "/console/fn", endpoint = "policy/preview", client = crate::api::ConsoleClient, input = Json)]
pub async fn preview_policy(text: String, subject: String) -> Result<Preview, ConsoleError> {
    crate::backend::use_backend_for_all(crate::api::Permission::ReadPolicy)?
        .preview_policy(text, subject)
        .await
}
