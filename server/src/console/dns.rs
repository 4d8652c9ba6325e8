//! The console's dns area over the admin service.

use super::Backend;

impl app::backend::DnsBackend for Backend {}
