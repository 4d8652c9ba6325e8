//! ts2021 Noise transport: see the crate description.
//!
//! - [`handshake`]: the IK handshake and its framing (sans-IO), keys.
//! - [`record`]: transport records with big-endian nonces (sans-IO).
//! - [`stream`]: a tokio byte stream over records, with the optional early payload.
//! - [`ws`]: a byte stream over WebSocket binary messages (browser form of ts2021).
//! - [`mod@upgrade`]: the server's `/ts2021` HTTP edge; [`key_endpoint`]: the `/key` body.
//! - [`client`]: dials a control server and returns an HTTP/2 client over Noise.

pub mod client;
pub mod handshake;
pub mod key_endpoint;
pub mod record;
pub mod stream;
pub mod upgrade;
pub mod ws;

pub use client::{ClientConnection, ClientError, connect};
pub use handshake::{Accepted, HandshakeError, Initiator, StaticKey, accept_initiation};
pub use key_endpoint::{KeyResponse, key_response};
pub use record::{RecordError, Transport};
pub use stream::{EarlyPayload, NoiseStream, find_record_error};
pub use upgrade::{NoiseConnection, ServerConfig, ServerIo, Upgrade, UpgradeError, upgrade};
