//! DERP relay and STUN: see the crate description.

pub mod frame;
pub mod handshake;
