//! Policy engine: see the crate description.
