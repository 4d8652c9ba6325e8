//! oxiscale: a self-hosted Tailscale coordination server with its admin console built in.
//!
//! Layers, with dependencies pointing down only:
//! - `cli`, `serve` (composition root), `http`, `tls` (HTTPS on the main listener), `api`
//!   (the edge), `import` (offline takeover of a headscale database), `export` (the way
//!   back to it);
//! - `control` (the Tailscale control protocol inside Noise: register, map streams),
//!   `relay` (keeps the embedded DERP in step), `lifecycle` (expiry, ephemeral nodes);
//! - `mapper` (what each node is told: full maps, deltas, sessions);
//! - `admin` (administration operations shared by CLI, API and console);
//! - `tailnet` (the domain: users, nodes, keys, access; pure rules plus the writer);
//! - `store` (durable rows), `config`, `keys`.
//!
//! The Noise transport, the DERP relay, the policy engine and the wire types are crates of
//! their own under `crates/`.

pub mod admin;
pub mod api;
pub mod audit;
pub mod backup;
pub mod cli;
pub mod config;
pub mod connections;
pub mod console;
pub mod control;
pub mod export;
pub mod files;
pub mod http;
pub mod identity;
pub mod import;
pub mod keys;
pub mod lifecycle;
pub mod mapper;
pub mod net;
pub mod policy;
pub mod relay;
pub mod reload;
pub mod serve;
pub mod store;
pub mod tailnet;
pub mod telemetry;
pub mod tls;
