//! The server's side of the ts2021 Noise IK handshake (`accept_initiation`) fed initiation
//! messages off the wire. The first byte picks the server's minimum client version; the
//! rest is the message. It is accepted with a well-formed response, or refused with the
//! right error (and, for an old client, a well-formed error frame).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oxiscale_noise::handshake::{
    HEADER_LEN, INITIATION_LEN, MSG_ERROR, MSG_RESPONSE, RESPONSE_LEN,
};
use oxiscale_noise::{HandshakeError, StaticKey, accept_initiation};

fn server() -> &'static StaticKey {
    static SERVER: OnceLock<StaticKey> = OnceLock::new();
    SERVER.get_or_init(oxiscale_fuzz::server_key)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, msg)) = data.split_first() else {
        return;
    };
    wire(msg, if mode & 2 == 0 { 0 } else { 100 });
});

fn wire(msg: &[u8], min_version: u16) {
    match accept_initiation(server(), msg, min_version) {
        Ok(accepted) => {
            assert_eq!(msg.len(), INITIATION_LEN);
            assert_eq!(accepted.response.len(), RESPONSE_LEN);
            assert_eq!(accepted.response[0], MSG_RESPONSE);
            assert_eq!(accepted.version, u16::from_be_bytes([msg[0], msg[1]]));
            assert!(accepted.version >= min_version);
        }
        Err(HandshakeError::InitiationSize { got }) => {
            assert_eq!(got, msg.len());
            assert_ne!(got, INITIATION_LEN);
        }
        Err(HandshakeError::UnsupportedVersion {
            version,
            min_version: min,
            error_frame,
        }) => {
            assert!(version < min);
            assert_eq!(error_frame[0], MSG_ERROR);
            let len = u16::from_be_bytes([error_frame[1], error_frame[2]]);
            assert_eq!(usize::from(len) + HEADER_LEN, error_frame.len());
        }
        Err(_) => {}
    }
}
