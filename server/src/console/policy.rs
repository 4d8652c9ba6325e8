//! The console's policy area over the admin service.

use super::Backend;

impl app::backend::PolicyBackend for Backend {}
