//! DERP relay and STUN: see the crate description.
