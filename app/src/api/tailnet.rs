//! Server functions of the tailnet area: machines, users, keys. Each takes JSON (the
//! arguments are structured) and goes through the backend, like every console server fn.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;

use crate::api::ConsoleClient;
#[cfg(feature = "ssr")]
use crate::api::{Permission, Scope};
#[cfg(feature = "ssr")]
use crate::backend::{use_backend, use_backend_for_all};
use crate::dto::ConsoleError;
use crate::dto::tailnet::{
    CreatedSecret, KeysOverview, MachineDetail, MachineList, MachineSummary, NewPreAuthKey, UserRow,
};

/// One page of the machine list; `query` is the page's URL query string.
#[server(prefix = "/console/fn", endpoint = "machines", input = Json, client = ConsoleClient)]
pub async fn list_machines(query: String) -> Result<MachineList, ConsoleError> {
    let (backend, scope) = use_backend(Permission::ReadTailnet)?;
    let mut machines = backend.machines()?;
    machines.retain(|m| scope.covers(m.owner_id));
    let mut list = crate::dto::tailnet::MachineQuery::parse(&query).apply(machines);
    list.approval_required = backend.approval_required();
    Ok(list)
}

#[server(prefix = "/console/fn", endpoint = "machine", input = Json, client = ConsoleClient)]
pub async fn get_machine(id: u64) -> Result<MachineDetail, ConsoleError> {
    let (backend, scope) = use_backend(Permission::ReadTailnet)?;
    own_machine(&*backend, scope, id)
}

/// The machine, if it is in `scope`; someone else's machine is "not found" to a member, so
/// ids reveal nothing.
#[cfg(feature = "ssr")]
fn own_machine(
    backend: &dyn crate::backend::ConsoleBackend,
    scope: Scope,
    id: u64,
) -> Result<MachineDetail, ConsoleError> {
    let machine = backend.machine(id)?;
    if scope.covers(machine.summary.owner_id) {
        Ok(machine)
    } else {
        Err(ConsoleError::NotFound(format!("machine {id}")))
    }
}

#[server(prefix = "/console/fn", endpoint = "machine/rename", input = Json, client = ConsoleClient)]
pub async fn rename_machine(id: u64, name: String) -> Result<MachineSummary, ConsoleError> {
    let (backend, scope) = use_backend(Permission::WriteMachines)?;
    own_machine(&*backend, scope, id)?;
    backend.rename_machine(id, name.trim().to_owned()).await
}

/// `tags`: comma- or space-separated; empty removes every tag.
#[server(prefix = "/console/fn", endpoint = "machine/tags", input = Json, client = ConsoleClient)]
pub async fn set_machine_tags(id: u64, tags: String) -> Result<MachineSummary, ConsoleError> {
    let backend = use_backend_for_all(Permission::WriteMachines)?;
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
    let backend = use_backend_for_all(Permission::WriteMachines)?;
    backend.approve_routes(id, routes).await
}

#[server(prefix = "/console/fn", endpoint = "machine/expire", input = Json, client = ConsoleClient)]
pub async fn expire_machine(id: u64) -> Result<MachineSummary, ConsoleError> {
    let (backend, scope) = use_backend(Permission::WriteMachines)?;
    own_machine(&*backend, scope, id)?;
    backend.expire_machine(id).await
}

#[server(prefix = "/console/fn", endpoint = "machine/no-expiry", input = Json, client = ConsoleClient)]
pub async fn disable_machine_expiry(id: u64) -> Result<MachineSummary, ConsoleError> {
    use_backend_for_all(Permission::WriteMachines)?
        .disable_machine_expiry(id)
        .await
}

/// Lets a machine that waits for approval into the tailnet. Never a member's to do, not even
/// for their own machine: approval is the administrators' check on new devices.
#[server(prefix = "/console/fn", endpoint = "machine/approve", input = Json, client = ConsoleClient)]
pub async fn approve_machine(id: u64) -> Result<MachineSummary, ConsoleError> {
    use_backend_for_all(Permission::WriteMachines)?
        .approve_machine(id)
        .await
}

/// Turns device approval on or off for machines that register from now on.
#[server(prefix = "/console/fn", endpoint = "machines/approval", input = Json, client = ConsoleClient)]
pub async fn set_device_approval(required: bool) -> Result<bool, ConsoleError> {
    use_backend_for_all(Permission::WriteMachines)?
        .set_approval_required(required)
        .await
}

#[server(prefix = "/console/fn", endpoint = "machine/delete", input = Json, client = ConsoleClient)]
pub async fn delete_machine(id: u64) -> Result<(), ConsoleError> {
    let (backend, scope) = use_backend(Permission::WriteMachines)?;
    own_machine(&*backend, scope, id)?;
    backend.delete_machine(id).await
}

#[server(prefix = "/console/fn", endpoint = "users", input = Json, client = ConsoleClient)]
pub async fn list_users() -> Result<Vec<UserRow>, ConsoleError> {
    let (backend, scope) = use_backend(Permission::ReadTailnet)?;
    let mut users = backend.users()?;
    users.retain(|u| scope.covers(Some(u.id)));
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(users)
}

#[server(prefix = "/console/fn", endpoint = "user/create", input = Json, client = ConsoleClient)]
pub async fn create_user(
    name: String,
    display_name: String,
    email: String,
) -> Result<UserRow, ConsoleError> {
    let backend = use_backend_for_all(Permission::WriteUsers)?;
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
    let backend = use_backend_for_all(Permission::WriteUsers)?;
    backend.rename_user(id, name.trim().to_owned()).await
}

#[server(prefix = "/console/fn", endpoint = "user/delete", input = Json, client = ConsoleClient)]
pub async fn delete_user(id: u64) -> Result<(), ConsoleError> {
    use_backend_for_all(Permission::WriteUsers)?
        .delete_user(id)
        .await
}

#[server(prefix = "/console/fn", endpoint = "keys", input = Json, client = ConsoleClient)]
pub async fn list_keys() -> Result<KeysOverview, ConsoleError> {
    let (backend, scope) = use_backend(Permission::ReadTailnet)?;
    let mut preauth = backend.preauth_keys()?;
    preauth.retain(|k| scope.covers(k.user_id));
    preauth.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    let mut api = if scope == Scope::All {
        backend.api_keys()?
    } else {
        Vec::new()
    };
    api.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    let mut users: Vec<(u64, String)> = backend
        .users()?
        .into_iter()
        .filter(|u| scope.covers(Some(u.id)))
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
    let (backend, scope) = use_backend(Permission::WriteKeys)?;
    // A member makes keys for themselves only, without tags (tags are an admin's to give).
    if let Scope::OwnOf(me) = scope
        && (key.user != Some(me) || !crate::dto::split_list(&key.tags).is_empty())
    {
        return Err(ConsoleError::NotAllowed(
            "members create pre-auth keys for themselves, without tags".into(),
        ));
    }
    backend.create_preauth_key(key).await
}

#[server(prefix = "/console/fn", endpoint = "preauth-key/expire", input = Json, client = ConsoleClient)]
pub async fn expire_preauth_key(id: u64) -> Result<(), ConsoleError> {
    let (backend, scope) = use_backend(Permission::WriteKeys)?;
    let theirs = backend
        .preauth_keys()?
        .iter()
        .any(|k| k.id == id && scope.covers(k.user_id));
    if !theirs {
        return Err(ConsoleError::NotFound(format!("pre-auth key {id}")));
    }
    backend.expire_preauth_key(id).await
}

#[server(prefix = "/console/fn", endpoint = "api-key/create", input = Json, client = ConsoleClient)]
pub async fn create_api_key(expiration: String) -> Result<CreatedSecret, ConsoleError> {
    let backend = use_backend_for_all(Permission::ManageApiKeys)?;
    backend.create_api_key(expiration.trim().to_owned()).await
}

#[server(prefix = "/console/fn", endpoint = "api-key/expire", input = Json, client = ConsoleClient)]
pub async fn expire_api_key(id: u64) -> Result<(), ConsoleError> {
    use_backend_for_all(Permission::ManageApiKeys)?
        .expire_api_key(id)
        .await
}
