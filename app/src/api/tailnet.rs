//! Server functions of the tailnet area: machines, users, keys. Each takes JSON (the
//! arguments are structured) and goes through the backend, like every console server fn.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;

use crate::api::ConsoleClient;
use crate::dto::ConsoleError;
use crate::dto::tailnet::{
    CreatedSecret, KeysOverview, MachineDetail, MachineList, MachineSummary, NewPreAuthKey, UserRow,
};

/// One page of the machine list; `query` is the page's URL query string.
#[server(prefix = "/console/fn", endpoint = "machines", input = Json, client = ConsoleClient)]
pub async fn list_machines(query: String) -> Result<MachineList, ConsoleError> {
    let backend = crate::backend::use_backend()?;
    Ok(crate::dto::tailnet::MachineQuery::parse(&query).apply(backend.machines()?))
}

#[server(prefix = "/console/fn", endpoint = "machine", input = Json, client = ConsoleClient)]
pub async fn get_machine(id: u64) -> Result<MachineDetail, ConsoleError> {
    crate::backend::use_backend()?.machine(id)
}

#[server(prefix = "/console/fn", endpoint = "machine/rename", input = Json, client = ConsoleClient)]
pub async fn rename_machine(id: u64, name: String) -> Result<MachineSummary, ConsoleError> {
    let backend = crate::backend::use_backend()?;
    backend.rename_machine(id, name.trim().to_owned()).await
}

/// `tags`: comma- or space-separated; empty removes every tag.
#[server(prefix = "/console/fn", endpoint = "machine/tags", input = Json, client = ConsoleClient)]
pub async fn set_machine_tags(id: u64, tags: String) -> Result<MachineSummary, ConsoleError> {
    let backend = crate::backend::use_backend()?;
    backend
        .set_machine_tags(id, crate::dto::split_list(&tags))
        .await
}

/// Replaces the machine's approved routes with `routes`.
#[server(prefix = "/console/fn", endpoint = "machine/routes", input = Json, client = ConsoleClient)]
pub async fn approve_machine_routes(
    id: u64,
    routes: Vec<String>,
) -> Result<MachineSummary, ConsoleError> {
    let backend = crate::backend::use_backend()?;
    backend.approve_routes(id, routes).await
}

#[server(prefix = "/console/fn", endpoint = "machine/expire", input = Json, client = ConsoleClient)]
pub async fn expire_machine(id: u64) -> Result<MachineSummary, ConsoleError> {
    crate::backend::use_backend()?.expire_machine(id).await
}

#[server(prefix = "/console/fn", endpoint = "machine/no-expiry", input = Json, client = ConsoleClient)]
pub async fn disable_machine_expiry(id: u64) -> Result<MachineSummary, ConsoleError> {
    crate::backend::use_backend()?
        .disable_machine_expiry(id)
        .await
}

#[server(prefix = "/console/fn", endpoint = "machine/delete", input = Json, client = ConsoleClient)]
pub async fn delete_machine(id: u64) -> Result<(), ConsoleError> {
    crate::backend::use_backend()?.delete_machine(id).await
}

#[server(prefix = "/console/fn", endpoint = "users", input = Json, client = ConsoleClient)]
pub async fn list_users() -> Result<Vec<UserRow>, ConsoleError> {
    let mut users = crate::backend::use_backend()?.users()?;
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(users)
}

#[server(prefix = "/console/fn", endpoint = "user/create", input = Json, client = ConsoleClient)]
pub async fn create_user(
    name: String,
    display_name: String,
    email: String,
) -> Result<UserRow, ConsoleError> {
    let backend = crate::backend::use_backend()?;
    backend
        .create_user(
            name.trim().to_owned(),
            display_name.trim().to_owned(),
            email.trim().to_owned(),
        )
        .await
}

#[server(prefix = "/console/fn", endpoint = "user/rename", input = Json, client = ConsoleClient)]
pub async fn rename_user(id: u64, name: String) -> Result<UserRow, ConsoleError> {
    let backend = crate::backend::use_backend()?;
    backend.rename_user(id, name.trim().to_owned()).await
}

#[server(prefix = "/console/fn", endpoint = "user/delete", input = Json, client = ConsoleClient)]
pub async fn delete_user(id: u64) -> Result<(), ConsoleError> {
    crate::backend::use_backend()?.delete_user(id).await
}

#[server(prefix = "/console/fn", endpoint = "keys", input = Json, client = ConsoleClient)]
pub async fn list_keys() -> Result<KeysOverview, ConsoleError> {
    let backend = crate::backend::use_backend()?;
    let mut preauth = backend.preauth_keys()?;
    preauth.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    let mut api = backend.api_keys()?;
    api.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    let mut users: Vec<(u64, String)> = backend
        .users()?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect();
    users.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(KeysOverview {
        preauth,
        api,
        users,
    })
}

#[server(prefix = "/console/fn", endpoint = "preauth-key/create", input = Json, client = ConsoleClient)]
pub async fn create_preauth_key(key: NewPreAuthKey) -> Result<CreatedSecret, ConsoleError> {
    if key.user.is_none() && crate::dto::split_list(&key.tags).is_empty() {
        return Err(ConsoleError::Refused(
            "choose a user, or give the key at least one tag".into(),
        ));
    }
    crate::backend::use_backend()?.create_preauth_key(key).await
}

#[server(prefix = "/console/fn", endpoint = "preauth-key/expire", input = Json, client = ConsoleClient)]
pub async fn expire_preauth_key(id: u64) -> Result<(), ConsoleError> {
    crate::backend::use_backend()?.expire_preauth_key(id).await
}

#[server(prefix = "/console/fn", endpoint = "api-key/create", input = Json, client = ConsoleClient)]
pub async fn create_api_key(expiration: String) -> Result<CreatedSecret, ConsoleError> {
    let backend = crate::backend::use_backend()?;
    backend.create_api_key(expiration.trim().to_owned()).await
}

#[server(prefix = "/console/fn", endpoint = "api-key/expire", input = Json, client = ConsoleClient)]
pub async fn expire_api_key(id: u64) -> Result<(), ConsoleError> {
    crate::backend::use_backend()?.expire_api_key(id).await
}
