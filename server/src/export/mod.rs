//! Handing oxiscale's state to another coordination server (offline, from the command line).

pub mod headscale;
