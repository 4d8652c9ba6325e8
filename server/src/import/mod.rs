//! Taking over another coordination server's state (offline, from the command line).

pub mod headscale;
