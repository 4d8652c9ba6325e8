//! The console's tailnet area (machines, users, keys) over the admin service.

use app::backend::BackendFuture;
use app::dto::ConsoleError;
use app::dto::tailnet::{
    ApiKeyRow, CreatedSecret, MachineDetail, MachineSummary, NewPreAuthKey, PreAuthKeyRow, UserRow,
};

use super::{Backend, console_error};
use crate::admin::dto::{ApiKeyView, NodeView, PreAuthKeyView, UserView};
use crate::admin::{CreateApiKey, CreatePreAuthKey, CreateUser, ExpireNode, KeySelector};

fn summary(n: NodeView) -> MachineSummary {
    MachineSummary {
        id: n.id,
        name: n.given_name,
        hostname: n.name,
        fqdn: n.fqdn,
        owner_id: n.user.as_ref().map(|u| u.id),
        user: n.user.map(|u| u.name),
        tags: n.tags,
        addresses: n.ip_addresses,
        os: n.os,
        client_version: n.client_version,
        online: n.online,
        last_seen: n.last_seen,
        key_expiry: n.expiry,
        expired: n.expired,
        created: n.created_at,
        advertised_routes: n.available_routes,
        approved_routes: n.approved_routes,
        approved: n.approved,
    }
}

fn user_row(u: UserView, nodes: &[NodeView]) -> UserRow {
    let theirs = nodes
        .iter()
        .filter(|n| n.user.as_ref().is_some_and(|o| o.id == u.id));
    let mut machines = 0;
    let mut online = false;
    let mut last_seen: Option<String> = None;
    for n in theirs {
        machines += 1;
        online |= n.online;
        // RFC 3339 UTC strings of one format sort as time.
        if n.last_seen > last_seen {
            last_seen = n.last_seen.clone();
        }
    }
    UserRow {
        id: u.id,
        name: u.name,
        display_name: u.display_name,
        email: u.email,
        created: u.created_at,
        machines,
        last_seen,
        online,
    }
}

fn preauth_row(k: PreAuthKeyView) -> PreAuthKeyRow {
    PreAuthKeyRow {
        id: k.id,
        masked: k.key,
        user_id: k.user.as_ref().map(|u| u.id),
        user: k.user.map(|u| u.name),
        tags: k.acl_tags,
        reusable: k.reusable,
        ephemeral: k.ephemeral,
        used: k.used,
        expired: k.expired,
        expiration: k.expiration,
        created: k.created_at,
    }
}

fn api_row(k: ApiKeyView) -> ApiKeyRow {
    ApiKeyRow {
        id: k.id,
        prefix: k.prefix,
        expired: k.expired,
        expiration: k.expiration,
        created: k.created_at,
        last_seen: k.last_seen,
    }
}

impl Backend {
    fn user_row_by_id(&self, id: u64) -> Result<UserRow, ConsoleError> {
        let user = self
            .admin
            .list_users()
            .into_iter()
            .find(|u| u.id == id)
            .ok_or_else(|| ConsoleError::NotFound(format!("user {id}")))?;
        Ok(user_row(user, &self.admin.list_nodes(Some(id))))
    }
}

impl app::backend::TailnetBackend for Backend {
    fn machines(&self) -> Result<Vec<MachineSummary>, ConsoleError> {
        Ok(self
            .admin
            .list_nodes(None)
            .into_iter()
            .map(summary)
            .collect())
    }

    fn machine(&self, id: u64) -> Result<MachineDetail, ConsoleError> {
        let n = self.admin.node(id).map_err(console_error)?;
        let net_info = self.admin.node_net_info(id).map_err(console_error)?;
        Ok(MachineDetail {
            node_key: n.node_key.clone(),
            machine_key: n.machine_key.clone(),
            disco_key: n.disco_key.clone(),
            endpoints: n.endpoints.clone(),
            home_derp: n.home_derp,
            net_info,
            register_method: n.register_method.clone(),
            ephemeral: n.ephemeral,
            primary_routes: n.subnet_routes.clone(),
            summary: summary(n),
        })
    }

    fn rename_machine(&self, id: u64, name: String) -> BackendFuture<'_, MachineSummary> {
        Box::pin(async move {
            let n = self
                .admin
                .rename_node(id, name)
                .await
                .map_err(console_error)?;
            Ok(summary(n))
        })
    }

    fn set_machine_tags(&self, id: u64, tags: Vec<String>) -> BackendFuture<'_, MachineSummary> {
        Box::pin(async move {
            let n = self.admin.set_tags(id, tags).await.map_err(console_error)?;
            Ok(summary(n))
        })
    }

    fn approve_routes(&self, id: u64, routes: Vec<String>) -> BackendFuture<'_, MachineSummary> {
        Box::pin(async move {
            let n = self
                .admin
                .approve_routes(id, routes)
                .await
                .map_err(console_error)?;
            Ok(summary(n))
        })
    }

    fn expire_machine(&self, id: u64) -> BackendFuture<'_, MachineSummary> {
        Box::pin(async move {
            let n = self
                .admin
                .expire_node(id, ExpireNode::default())
                .await
                .map_err(console_error)?;
            Ok(summary(n))
        })
    }

    fn approve_machine(&self, id: u64) -> BackendFuture<'_, MachineSummary> {
        Box::pin(async move {
            let n = self.admin.approve_node(id).await.map_err(console_error)?;
            Ok(summary(n))
        })
    }

    fn approval_required(&self) -> bool {
        self.admin.approval_required()
    }

    fn set_approval_required(&self, on: bool) -> BackendFuture<'_, bool> {
        Box::pin(async move {
            self.admin
                .set_approval_required(on)
                .await
                .map_err(console_error)
        })
    }

    fn disable_machine_expiry(&self, id: u64) -> BackendFuture<'_, MachineSummary> {
        Box::pin(async move {
            let req = ExpireNode {
                at: None,
                disable: true,
            };
            let n = self
                .admin
                .expire_node(id, req)
                .await
                .map_err(console_error)?;
            Ok(summary(n))
        })
    }

    fn delete_machine(&self, id: u64) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            self.admin.delete_node(id).await.map_err(console_error)?;
            Ok(())
        })
    }

    fn users(&self) -> Result<Vec<UserRow>, ConsoleError> {
        let nodes = self.admin.list_nodes(None);
        Ok(self
            .admin
            .list_users()
            .into_iter()
            .map(|u| user_row(u, &nodes))
            .collect())
    }

    fn create_user(
        &self,
        name: String,
        display_name: String,
        email: String,
    ) -> BackendFuture<'_, UserRow> {
        Box::pin(async move {
            let req = CreateUser {
                name,
                display_name,
                email,
                ..Default::default()
            };
            let u = self.admin.create_user(req).await.map_err(console_error)?;
            Ok(user_row(u, &[]))
        })
    }

    fn rename_user(&self, id: u64, name: String) -> BackendFuture<'_, UserRow> {
        Box::pin(async move {
            self.admin
                .rename_user(id, name)
                .await
                .map_err(console_error)?;
            self.user_row_by_id(id)
        })
    }

    fn delete_user(&self, id: u64) -> BackendFuture<'_, ()> {
        Box::pin(async move { self.admin.delete_user(id).await.map_err(console_error) })
    }

    fn preauth_keys(&self) -> Result<Vec<PreAuthKeyRow>, ConsoleError> {
        Ok(self
            .admin
            .list_preauth_keys()
            .into_iter()
            .map(preauth_row)
            .collect())
    }

    fn create_preauth_key(&self, key: NewPreAuthKey) -> BackendFuture<'_, CreatedSecret> {
        Box::pin(async move {
            let req = CreatePreAuthKey {
                user: key.user,
                reusable: key.reusable,
                ephemeral: key.ephemeral,
                expiration: Some(key.expiration.trim().to_owned()).filter(|e| !e.is_empty()),
                tags: app::dto::tailnet::split_list(&key.tags),
            };
            let created = self
                .admin
                .create_preauth_key(req)
                .await
                .map_err(console_error)?;
            Ok(CreatedSecret {
                id: created.id,
                secret: created.key,
            })
        })
    }

    fn expire_preauth_key(&self, id: u64) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            self.admin
                .expire_preauth_key(id)
                .await
                .map_err(console_error)?;
            Ok(())
        })
    }

    fn api_keys(&self) -> Result<Vec<ApiKeyRow>, ConsoleError> {
        Ok(self
            .admin
            .list_api_keys()
            .into_iter()
            .map(api_row)
            .collect())
    }

    fn create_api_key(&self, expiration: String) -> BackendFuture<'_, CreatedSecret> {
        Box::pin(async move {
            let req = CreateApiKey {
                expiration: Some(expiration).filter(|e| !e.is_empty()),
            };
            let created = self
                .admin
                .create_api_key(req)
                .await
                .map_err(console_error)?;
            let secret = created.key.ok_or_else(|| {
                ConsoleError::Internal("the new API key came back without its secret".into())
            })?;
            Ok(CreatedSecret {
                id: created.id,
                secret,
            })
        })
    }

    fn expire_api_key(&self, id: u64) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let sel = KeySelector {
                id: Some(id),
                prefix: None,
            };
            self.admin
                .expire_api_key(sel)
                .await
                .map_err(console_error)?;
            Ok(())
        })
    }
}
