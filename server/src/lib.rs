//! oxiscale: a Tailscale coordination server.
