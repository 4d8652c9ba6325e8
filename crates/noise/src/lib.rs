//! ts2021 Noise transport: see the crate description.
