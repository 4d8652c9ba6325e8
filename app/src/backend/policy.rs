//! Access controls: what the console asks of the server for this area.

use super::BackendFuture;
use crate::dto::policy::{PolicyDoc, Preview, SaveOutcome, Subject};

/// Access controls as the server provides them.
pub trait PolicyBackend: Send + Sync {
    /// The policy in force and whether it may be edited here.
    fn policy(&self) -> BackendFuture<'_, PolicyDoc>;
    /// Puts `text` in force if it parses, compiles against the tailnet and passes its tests.
    fn save_policy(&self, text: String) -> BackendFuture<'_, SaveOutcome>;
    /// Users and machines whose access can be previewed.
    fn preview_subjects(&self) -> BackendFuture<'_, Vec<Subject>>;
    /// What `subject` could reach under `text` (not saved) in the live tailnet, and which
    /// rules allow it.
    fn preview_policy(&self, text: String, subject: String) -> BackendFuture<'_, Preview>;
}
