//! Machines, users and keys: what the console asks of the server for this area.

use super::BackendFuture;
use crate::dto::ConsoleError;
use crate::dto::tailnet::{
    ApiKeyRow, CreatedSecret, MachineDetail, MachineSummary, NewPreAuthKey, PreAuthKeyRow, UserRow,
};

/// Machines, users and keys as the server provides them. Reads are synchronous (the server
/// answers them from memory); changes go through the server's single writer.
pub trait TailnetBackend: Send + Sync {
    /// Every machine in the tailnet.
    fn machines(&self) -> Result<Vec<MachineSummary>, ConsoleError>;
    fn machine(&self, id: u64) -> Result<MachineDetail, ConsoleError>;
    fn rename_machine(&self, id: u64, name: String) -> BackendFuture<'_, MachineSummary>;
    fn set_machine_tags(&self, id: u64, tags: Vec<String>) -> BackendFuture<'_, MachineSummary>;
    /// Replaces the approved routes (exit routes included).
    fn approve_routes(&self, id: u64, routes: Vec<String>) -> BackendFuture<'_, MachineSummary>;
    /// Expires the machine's key now.
    fn expire_machine(&self, id: u64) -> BackendFuture<'_, MachineSummary>;
    fn disable_machine_expiry(&self, id: u64) -> BackendFuture<'_, MachineSummary>;
    fn delete_machine(&self, id: u64) -> BackendFuture<'_, ()>;
    /// Lets a machine that waits for approval into the tailnet.
    fn approve_machine(&self, id: u64) -> BackendFuture<'_, MachineSummary>;
    /// Whether machines that register from now on wait for an administrator.
    fn approval_required(&self) -> bool;
    /// Turns device approval on or off (stored); answers what is now in force.
    fn set_approval_required(&self, on: bool) -> BackendFuture<'_, bool>;

    fn users(&self) -> Result<Vec<UserRow>, ConsoleError>;
    fn create_user(
        &self,
        name: String,
        display_name: String,
        email: String,
    ) -> BackendFuture<'_, UserRow>;
    fn rename_user(&self, id: u64, name: String) -> BackendFuture<'_, UserRow>;
    /// Refused while the user owns machines.
    fn delete_user(&self, id: u64) -> BackendFuture<'_, ()>;

    fn preauth_keys(&self) -> Result<Vec<PreAuthKeyRow>, ConsoleError>;
    /// Creates a key; its secret is in the answer and nowhere else.
    fn create_preauth_key(&self, key: NewPreAuthKey) -> BackendFuture<'_, CreatedSecret>;
    fn expire_preauth_key(&self, id: u64) -> BackendFuture<'_, ()>;
    fn api_keys(&self) -> Result<Vec<ApiKeyRow>, ConsoleError>;
    /// `expiration` as for pre-auth keys; empty = the server's default.
    fn create_api_key(&self, expiration: String) -> BackendFuture<'_, CreatedSecret>;
    fn expire_api_key(&self, id: u64) -> BackendFuture<'_, ()>;
}
