//! An embedded DERP relay and STUN responder for oxiscale.
//!
//! - [`frame`]: DERP framing, sans-IO (decoder fed byte chunks, encoder, limits).
//! - [`handshake`]: the NaCl-sealed ClientInfo/ServerInfo and key pairs, sans-IO.
//! - [`server`]: [`DerpServer`], relaying between admitted node keys over any byte stream.
//! - [`http`]: the `/derp` upgrade (plain and WebSocket) and probe endpoints, for hyper/axum.
//! - [`ws_stream`]: a WebSocket as a byte stream.
//! - [`stun`]: STUN binding responses and the UDP loop.
//! - [`client`]: a small DERP client for tests and load generation.

pub mod client;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod server;
pub mod stun;
pub mod ws_stream;

pub use client::{ClientError, DerpClient};
pub use frame::{Frame, PeerGoneReason};
pub use handshake::KeyPair;
pub use http::{generate_204, handle_derp, probe_response};
pub use server::{AdmitFn, ConnError, DerpConfig, DerpServer, DerpStats};
pub use stun::serve_stun;
