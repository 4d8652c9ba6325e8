//! DERP relay and STUN: see the crate description.

pub mod frame;
pub mod handshake;
pub mod http;
pub mod server;
pub mod stun;
pub mod ws_stream;
