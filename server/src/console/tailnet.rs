//! The console's tailnet area over the admin service.

use super::Backend;

impl app::backend::TailnetBackend for Backend {}
