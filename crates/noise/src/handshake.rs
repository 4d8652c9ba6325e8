//! The controlbase Noise IK handshake, sans-IO.
//!
//! snow runs the IK token sequence; this module owns Tailscale's framing around it (5-byte
//! initiation header with the client's version, 3-byte response/error headers), the version
//! gate, and the split into a [`Transport`] whose nonces follow controlbase (big-endian),
//! not snow's transport mode (little-endian).

use std::fmt;

use oxiscale_tailcfg::MachinePublic;
use rand::rngs::OsRng;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::record::Transport;

const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// Type byte of the client's initiation message.
pub const MSG_INITIATION: u8 = 0x01;
/// Type byte of the server's response message.
pub const MSG_RESPONSE: u8 = 0x02;
/// Type byte of an (unauthenticated) error message, sent instead of a response.
pub const MSG_ERROR: u8 = 0x03;

/// Initiation: version (2) + type (1) + length (2) + e (32) + encrypted s (48) + tag (16).
pub const INITIATION_LEN: usize = 101;
const INITIATION_HEADER_LEN: usize = 5;
const INITIATION_PAYLOAD_LEN: usize = INITIATION_LEN - INITIATION_HEADER_LEN;
/// Response: type (1) + length (2) + e (32) + tag (16).
pub const RESPONSE_LEN: usize = 51;
/// Header of response, error and transport records: type (1) + u16 BE length (2).
pub const HEADER_LEN: usize = 3;
const RESPONSE_PAYLOAD_LEN: usize = RESPONSE_LEN - HEADER_LEN;

/// Why a handshake message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("wrong handshake initiation size: {got} bytes, want {INITIATION_LEN}")]
    InitiationSize { got: usize },
    #[error("unexpected handshake message type {got:#04x}, want {want:#04x}")]
    MessageType { got: u8, want: u8 },
    #[error("wrong handshake payload length field {got}, want {want}")]
    LengthField { got: u16, want: u16 },
    /// The client is older than the server accepts. `error_frame` is the 0x03 message to
    /// send instead of a response before closing.
    #[error("unsupported client version {version}; minimum is {min_version}")]
    UnsupportedVersion {
        version: u16,
        min_version: u16,
        error_frame: Vec<u8>,
    },
    #[error("wrong handshake response size: {got} bytes, want {RESPONSE_LEN}")]
    ResponseSize { got: usize },
    /// The server sent an error message instead of a response.
    #[error("server error: {0:?}")]
    ServerError(String),
    /// Decryption or a Diffie-Hellman step failed: wrong keys or tampered bytes.
    #[error("handshake cryptography failed: {0}")]
    Crypto(String),
}

/// Why a key's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTextError {
    #[error("private key text does not start with \"privkey:\"")]
    MissingPrefix,
    #[error("private key text is not 64 hex digits after its prefix")]
    BadHex,
}

/// A Curve25519 private key: the server's Noise key or a client's machine key.
#[derive(Clone)]
pub struct StaticKey(StaticSecret);

impl StaticKey {
    /// Text prefix of the persisted form.
    pub const PREFIX: &'static str = "privkey:";

    pub fn generate() -> Self {
        Self(StaticSecret::random_from_rng(OsRng))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> MachinePublic {
        MachinePublic(PublicKey::from(&self.0).to_bytes())
    }

    /// `privkey:<64 lowercase hex>`, the form kept in the server's key file.
    pub fn to_text(&self) -> String {
        format!("{}{}", Self::PREFIX, hex::encode(self.0.to_bytes()))
    }

    /// Parses [`to_text`](Self::to_text)'s form; surrounding whitespace (a trailing newline
    /// in a key file) is ignored.
    pub fn from_text(text: &str) -> Result<Self, KeyTextError> {
        let hex_part = text
            .trim()
            .strip_prefix(Self::PREFIX)
            .ok_or(KeyTextError::MissingPrefix)?;
        let mut bytes = [0u8; 32];
        if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut bytes).is_err() {
            return Err(KeyTextError::BadHex);
        }
        Ok(Self::from_bytes(bytes))
    }
}

impl fmt::Debug for StaticKey {
    // Never print the secret; the public half identifies the key well enough.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StaticKey").field(&self.public()).finish()
    }
}

/// The protocol's prologue: the client's version in decimal ASCII, no terminator.
fn prologue(version: u16) -> Vec<u8> {
    format!("Tailscale Control Protocol v{version}").into_bytes()
}

fn crypto(err: snow::Error) -> HandshakeError {
    HandshakeError::Crypto(err.to_string())
}

/// An error message frame: `0x03`, u16 BE length, UTF-8 text (truncated to 65535 bytes).
pub fn error_frame(message: &str) -> Vec<u8> {
    let mut text = message.as_bytes();
    if text.len() > usize::from(u16::MAX) {
        let mut end = usize::from(u16::MAX);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + text.len());
    frame.push(MSG_ERROR);
    frame.extend_from_slice(&(text.len() as u16).to_be_bytes());
    frame.extend_from_slice(text);
    frame
}

/// A handshake the server accepted.
pub struct Accepted {
    /// The 51-byte response to send before anything else.
    pub response: [u8; RESPONSE_LEN],
    /// The client's authenticated machine key.
    pub machine: MachinePublic,
    /// The client's protocol (capability) version from the initiation header.
    pub version: u16,
    /// Session keys: sends with k2, receives with k1.
    pub transport: Transport,
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted")
            .field("machine", &self.machine)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Server side: checks and answers a client's 101-byte initiation.
pub fn accept_initiation(
    server_key: &StaticKey,
    msg: &[u8],
    min_version: u16,
) -> Result<Accepted, HandshakeError> {
    accept_with_ephemeral(server_key, msg, min_version, None)
}

/// [`accept_initiation`] with an optional fixed ephemeral key, for known-answer tests.
fn accept_with_ephemeral(
    server_key: &StaticKey,
    msg: &[u8],
    min_version: u16,
    fixed_ephemeral: Option<&[u8; 32]>,
) -> Result<Accepted, HandshakeError> {
    if msg.len() != INITIATION_LEN {
        return Err(HandshakeError::InitiationSize { got: msg.len() });
    }
    let version = u16::from_be_bytes([msg[0], msg[1]]);
    if msg[2] != MSG_INITIATION {
        return Err(HandshakeError::MessageType {
            got: msg[2],
            want: MSG_INITIATION,
        });
    }
    let length = u16::from_be_bytes([msg[3], msg[4]]);
    if usize::from(length) != INITIATION_PAYLOAD_LEN {
        return Err(HandshakeError::LengthField {
            got: length,
            want: INITIATION_PAYLOAD_LEN as u16,
        });
    }
    if version < min_version {
        let error_frame = error_frame(&format!(
            "unsupported client version {version}; oxiscale requires version {min_version} or newer"
        ));
        return Err(HandshakeError::UnsupportedVersion {
            version,
            min_version,
            error_frame,
        });
    }

    let private = server_key.to_bytes();
    let prologue = prologue(version);
    let mut builder = snow::Builder::new(NOISE_PARAMS.parse().map_err(crypto)?)
        .local_private_key(&private)
        .map_err(crypto)?
        .prologue(&prologue)
        .map_err(crypto)?;
    if let Some(ephemeral) = fixed_ephemeral {
        builder = builder.fixed_ephemeral_key_for_testing_only(ephemeral);
    }
    let mut state = builder.build_responder().map_err(crypto)?;
    let mut empty = [0u8; 0];
    state
        .read_message(&msg[INITIATION_HEADER_LEN..], &mut empty)
        .map_err(crypto)?;
    let machine = state
        .get_remote_static()
        .and_then(|key| <[u8; 32]>::try_from(key).ok())
        .map(MachinePublic)
        .ok_or_else(|| HandshakeError::Crypto("initiation carried no static key".into()))?;

    let mut response = [0u8; RESPONSE_LEN];
    response[0] = MSG_RESPONSE;
    response[1..HEADER_LEN].copy_from_slice(&(RESPONSE_PAYLOAD_LEN as u16).to_be_bytes());
    let written = state
        .write_message(&[], &mut response[HEADER_LEN..])
        .map_err(crypto)?;
    debug_assert_eq!(written, RESPONSE_PAYLOAD_LEN);

    let (k1, k2) = state.dangerously_get_raw_split();
    Ok(Accepted {
        response,
        machine,
        version,
        transport: Transport::new(k2, k1),
    })
}

/// Client side of the handshake, waiting for the server's response.
pub struct Initiator {
    state: snow::HandshakeState,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator").finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a handshake as `machine_key` towards `server_pub`; returns the 101-byte
    /// initiation to send (base64 in `X-Tailscale-Handshake`).
    pub fn new(
        machine_key: &StaticKey,
        server_pub: &MachinePublic,
        version: u16,
    ) -> Result<(Self, [u8; INITIATION_LEN]), HandshakeError> {
        Self::with_ephemeral(machine_key, server_pub, version, None)
    }

    /// [`Initiator::new`] with an optional fixed ephemeral key, for known-answer tests.
    fn with_ephemeral(
        machine_key: &StaticKey,
        server_pub: &MachinePublic,
        version: u16,
        fixed_ephemeral: Option<&[u8; 32]>,
    ) -> Result<(Self, [u8; INITIATION_LEN]), HandshakeError> {
        let private = machine_key.to_bytes();
        let prologue = prologue(version);
        let mut builder = snow::Builder::new(NOISE_PARAMS.parse().map_err(crypto)?)
            .local_private_key(&private)
            .map_err(crypto)?
            .remote_public_key(server_pub.as_bytes())
            .map_err(crypto)?
            .prologue(&prologue)
            .map_err(crypto)?;
        if let Some(ephemeral) = fixed_ephemeral {
            builder = builder.fixed_ephemeral_key_for_testing_only(ephemeral);
        }
        let mut state = builder.build_initiator().map_err(crypto)?;
        let mut msg = [0u8; INITIATION_LEN];
        msg[0..2].copy_from_slice(&version.to_be_bytes());
        msg[2] = MSG_INITIATION;
        msg[3..INITIATION_HEADER_LEN]
            .copy_from_slice(&(INITIATION_PAYLOAD_LEN as u16).to_be_bytes());
        let written = state
            .write_message(&[], &mut msg[INITIATION_HEADER_LEN..])
            .map_err(crypto)?;
        debug_assert_eq!(written, INITIATION_PAYLOAD_LEN);
        Ok((Self { state }, msg))
    }

    /// Completes the handshake with the server's 51-byte response (or surfaces its error
    /// message). The client sends with k1 and receives with k2.
    pub fn finish(mut self, response: &[u8]) -> Result<Transport, HandshakeError> {
        if let Some(message) = parse_error_frame(response) {
            return Err(HandshakeError::ServerError(message));
        }
        if response.len() != RESPONSE_LEN {
            return Err(HandshakeError::ResponseSize {
                got: response.len(),
            });
        }
        if response[0] != MSG_RESPONSE {
            return Err(HandshakeError::MessageType {
                got: response[0],
                want: MSG_RESPONSE,
            });
        }
        let length = u16::from_be_bytes([response[1], response[2]]);
        if usize::from(length) != RESPONSE_PAYLOAD_LEN {
            return Err(HandshakeError::LengthField {
                got: length,
                want: RESPONSE_PAYLOAD_LEN as u16,
            });
        }
        let mut empty = [0u8; 0];
        self.state
            .read_message(&response[HEADER_LEN..], &mut empty)
            .map_err(crypto)?;
        let (k1, k2) = self.state.dangerously_get_raw_split();
        Ok(Transport::new(k1, k2))
    }
}

/// The text of a complete error frame, or `None` if `frame` is not one.
pub fn parse_error_frame(frame: &[u8]) -> Option<String> {
    let (&kind, rest) = frame.split_first()?;
    if kind != MSG_ERROR || rest.len() < 2 {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let text = rest.get(2..2 + length)?;
    Some(String::from_utf8_lossy(text).into_owned())
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn pair(version: u16) -> (StaticKey, StaticKey, Initiator, [u8; INITIATION_LEN]) {
        let server = StaticKey::generate();
        let machine = StaticKey::generate();
        let (initiator, init) = Initiator::new(&machine, &server.public(), version).unwrap();
        (server, machine, initiator, init)
    }

    #[test]
    fn round_trip_agrees_on_keys_and_identity() {
        let (server, machine, initiator, init) = pair(130);
        assert_eq!(&init[..5], &[0x00, 0x82, 0x01, 0x00, 0x60]);

        let accepted = accept_initiation(&server, &init, 100).unwrap();
        assert_eq!(accepted.machine, machine.public());
        assert_eq!(accepted.version, 130);
        assert_eq!(&accepted.response[..3], &[0x02, 0x00, 0x30]);

        let mut client = initiator.finish(&accepted.response).unwrap();
        let mut server_side = accepted.transport;

        let mut wire = BytesMut::new();
        client.encrypt(b"client hello", &mut wire).unwrap();
        server_side.decoder_mut().feed(&wire);
        assert_eq!(
            &server_side.decoder_mut().next_record().unwrap().unwrap()[..],
            b"client hello"
        );

        let mut wire = BytesMut::new();
        server_side.encrypt(b"server hello", &mut wire).unwrap();
        client.decoder_mut().feed(&wire);
        assert_eq!(
            &client.decoder_mut().next_record().unwrap().unwrap()[..],
            b"server hello"
        );
    }

    #[test]
    fn version_below_minimum_yields_error_frame() {
        let (server, _, initiator, init) = pair(90);
        let err = accept_initiation(&server, &init, 106).unwrap_err();
        let HandshakeError::UnsupportedVersion {
            version,
            min_version,
            error_frame,
        } = err
        else {
            panic!("wrong error: {err:?}");
        };
        assert_eq!((version, min_version), (90, 106));
        assert_eq!(error_frame[0], MSG_ERROR);
        let length = usize::from(u16::from_be_bytes([error_frame[1], error_frame[2]]));
        assert_eq!(length, error_frame.len() - 3);
        let text = std::str::from_utf8(&error_frame[3..]).unwrap();
        assert!(text.contains("unsupported client version 90"), "{text}");
        assert!(text.contains("106"), "{text}");
        // The client surfaces it as a server error.
        assert_eq!(
            initiator.finish(&error_frame).unwrap_err(),
            HandshakeError::ServerError(text.to_owned())
        );
    }

    #[test]
    fn truncated_initiation_is_refused() {
        let (server, _, _, init) = pair(130);
        assert_eq!(
            accept_initiation(&server, &init[..100], 0).unwrap_err(),
            HandshakeError::InitiationSize { got: 100 }
        );
        assert_eq!(
            accept_initiation(&server, &[], 0).unwrap_err(),
            HandshakeError::InitiationSize { got: 0 }
        );
    }

    #[test]
    fn wrong_type_is_refused() {
        let (server, _, _, mut init) = pair(130);
        init[2] = 0x04;
        assert_eq!(
            accept_initiation(&server, &init, 0).unwrap_err(),
            HandshakeError::MessageType {
                got: 0x04,
                want: MSG_INITIATION
            }
        );
    }

    #[test]
    fn wrong_length_field_is_refused() {
        let (server, _, _, mut init) = pair(130);
        init[3..5].copy_from_slice(&97u16.to_be_bytes());
        assert_eq!(
            accept_initiation(&server, &init, 0).unwrap_err(),
            HandshakeError::LengthField { got: 97, want: 96 }
        );
    }

    #[test]
    fn garbage_body_fails_cryptography() {
        let (server, _, _, mut init) = pair(130);
        for (i, b) in init[5..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        assert!(matches!(
            accept_initiation(&server, &init, 0),
            Err(HandshakeError::Crypto(_))
        ));
    }

    #[test]
    fn version_is_bound_by_the_prologue() {
        // A rewritten version header changes the server's prologue, so decryption fails.
        let (server, _, _, mut init) = pair(130);
        init[0..2].copy_from_slice(&131u16.to_be_bytes());
        assert!(matches!(
            accept_initiation(&server, &init, 0),
            Err(HandshakeError::Crypto(_))
        ));
    }

    #[test]
    fn initiation_for_another_server_fails() {
        let (_, _, _, init) = pair(130);
        let other = StaticKey::generate();
        assert!(matches!(
            accept_initiation(&other, &init, 0),
            Err(HandshakeError::Crypto(_))
        ));
    }

    #[test]
    fn client_refuses_bad_responses() {
        let (server, _, _, init) = pair(130);
        let accepted = accept_initiation(&server, &init, 0).unwrap();

        let (_, _, initiator, _) = pair(130);
        assert_eq!(
            initiator.finish(&accepted.response[..50]).unwrap_err(),
            HandshakeError::ResponseSize { got: 50 }
        );
        let (_, _, initiator, _) = pair(130);
        let mut wrong_type = accepted.response;
        wrong_type[0] = 0x04;
        assert_eq!(
            initiator.finish(&wrong_type).unwrap_err(),
            HandshakeError::MessageType {
                got: 0x04,
                want: MSG_RESPONSE
            }
        );
        // A response for a different initiation does not authenticate.
        let (_, _, initiator, _) = pair(130);
        assert!(matches!(
            initiator.finish(&accepted.response),
            Err(HandshakeError::Crypto(_))
        ));
    }

    /// Every wire byte against testdata/ts2021_vector.py, an independent implementation of
    /// the protocol doc (hashlib + `cryptography`, no Noise library), with fixed keys.
    #[test]
    fn matches_independent_reference_vector() {
        let unhex = |s: &str| hex::decode(s).unwrap();
        let machine = StaticKey::from_bytes(std::array::from_fn(|i| i as u8 + 1));
        let server = StaticKey::from_bytes(std::array::from_fn(|i| i as u8 + 101));
        let client_eph: [u8; 32] = std::array::from_fn(|i| i as u8 + 201);
        let server_eph: [u8; 32] = std::array::from_fn(|i| ((i * 7 + 3) % 256) as u8);
        assert_eq!(
            server.public().0.to_vec(),
            unhex("5714769d116bf76436ae74bc793d2c30ad1903c59ac5273805c7e2698b410c36")
        );
        assert_eq!(
            machine.public().0.to_vec(),
            unhex("07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c")
        );

        let (initiator, init) =
            Initiator::with_ephemeral(&machine, &server.public(), 130, Some(&client_eph)).unwrap();
        assert_eq!(
            init.to_vec(),
            unhex(concat!(
                "00820100604c29f4996985e80d247e80b70303824592ff9fbad74904ea7c3d2bda24e51c12ea66188539",
                "1b3d1a72c70bf0a96a9e89244d63e8bd3bc1d08841bf1b3124e99257e6fc62b4c1612dada818603ba09c",
                "17e8c23e9c2a45e29e5385f354a88f9354"
            ))
        );
        let accepted = accept_with_ephemeral(&server, &init, 0, Some(&server_eph)).unwrap();
        assert_eq!(accepted.machine, machine.public());
        assert_eq!(
            accepted.response.to_vec(),
            unhex(concat!(
                "020030bb50ff9e82a574cfbf820e97f60fb9c143ec7415cf514f8cfd98eff59e059614a48b7f00003c",
                "1de77d1600e8c0b40279"
            ))
        );

        let mut client = initiator.finish(&accepted.response).unwrap();
        let mut server_side = accepted.transport;
        let mut c2s = BytesMut::new();
        client.encrypt(b"client record zero", &mut c2s).unwrap();
        client.encrypt(b"client record one", &mut c2s).unwrap();
        assert_eq!(
            c2s.to_vec(),
            unhex(concat!(
                "0400220e2632e9d0412e9aa88041b78c97871c4382984ae78812e1d3df81b3700ea9f699e004002126",
                "38e99564eee460e9db2d756720c7b28454db2195f1945c86c9ad25bdc4c48169"
            ))
        );
        let mut s2c = BytesMut::new();
        server_side
            .encrypt(b"server record zero", &mut s2c)
            .unwrap();
        server_side.encrypt(b"server record one", &mut s2c).unwrap();
        assert_eq!(
            s2c.to_vec(),
            unhex(concat!(
                "0400225628d1908d18289d418da8a84491a71d14dc76049bc2cb38e183eed2100a102cc376040021178",
                "495b9799284af907c44eeca7f83bb1fcb0b789ea26991dd824318637588118b"
            ))
        );
    }

    #[test]
    fn static_key_text_round_trips() {
        let key = StaticKey::generate();
        let text = key.to_text();
        assert!(text.starts_with("privkey:") && text.len() == 8 + 64);
        let back = StaticKey::from_text(&format!("{text}\n")).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        assert_eq!(back.public(), key.public());
        assert_eq!(
            StaticKey::from_text("mkey:00").unwrap_err(),
            KeyTextError::MissingPrefix
        );
        assert_eq!(
            StaticKey::from_text("privkey:abcd").unwrap_err(),
            KeyTextError::BadHex
        );
        assert!(!format!("{key:?}").contains(&hex::encode(key.to_bytes())));
    }

    #[test]
    fn oversized_error_text_is_truncated_to_fit() {
        let frame = error_frame(&"é".repeat(40_000));
        assert_eq!(
            frame.len() - 3,
            usize::from(u16::from_be_bytes([frame[1], frame[2]]))
        );
        assert!(frame.len() - 3 <= 65535);
        assert!(parse_error_frame(&frame).is_some());
    }
}
