//! The sealed ClientInfo/ServerInfo messages of the DERP handshake, sans-IO.
//!
//! Both are JSON in a NaCl box (X25519 + XSalsa20-Poly1305) between the client's node key
//! and the server key. On the wire: `nonce(24) || tag(16) || ciphertext`, which is what Go's
//! `nacl/box.Seal` produces; `crypto_box::SalsaBox::encrypt` returns `tag || ciphertext`
//! (checked against the RFC 7748 / NaCl `box.c` vector below), so only the nonce is prepended.

use crypto_box::aead::{Aead, AeadCore, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use oxiscale_tailcfg::NodePublic;
use serde::{Deserialize, Serialize};

use crate::frame::{NONCE_LEN, PROTOCOL_VERSION};

/// What the client tells the server about itself (JSON field names as Go writes them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    #[serde(default)]
    pub version: u32,
    /// Hex mesh key; only DERP mesh peers send it. This server has no mesh and ignores it.
    #[serde(rename = "meshKey", default, skip_serializing_if = "String::is_empty")]
    pub mesh_key: String,
    #[serde(rename = "CanAckPings", default)]
    pub can_ack_pings: bool,
    #[serde(
        rename = "IsProber",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub is_prober: bool,
}

/// What the server tells an admitted client; rate-limit fields are left out (no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    #[serde(default)]
    pub version: u32,
}

/// A sealed message could not be opened or understood.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("sealed message has {len} bytes, fewer than nonce and tag")]
    TooShort { len: usize },
    #[error("NaCl box did not open (wrong key or tampered)")]
    BoxOpen,
    #[error("sealed JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
}

/// A long-term Curve25519 key pair (server key or a client's node key).
#[derive(Clone)]
pub struct KeyPair {
    secret: SecretKey,
    public: NodePublic,
}

impl KeyPair {
    pub fn from_private(private_key: [u8; 32]) -> Self {
        let secret = SecretKey::from(private_key);
        let public = NodePublic(*secret.public_key().as_bytes());
        Self { secret, public }
    }

    /// A fresh random key pair.
    pub fn generate() -> Self {
        Self::from_private(SecretKey::generate(&mut OsRng).to_bytes())
    }

    pub fn public(&self) -> NodePublic {
        self.public
    }

    pub fn private_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// `nonce || box(plaintext)` for `peer`, with a random nonce.
    pub fn seal_to(&self, peer: &NodePublic, plaintext: &[u8]) -> Vec<u8> {
        let salsa = SalsaBox::new(&PublicKey::from(peer.0), &self.secret);
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        let sealed = salsa
            .encrypt(&nonce, plaintext)
            .expect("XSalsa20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens `nonce || box` that `peer` sealed to this key.
    pub fn open_from(&self, peer: &NodePublic, sealed: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        const TAG_LEN: usize = 16;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(HandshakeError::TooShort { len: sealed.len() });
        }
        let (nonce, boxed) = sealed.split_at(NONCE_LEN);
        let salsa = SalsaBox::new(&PublicKey::from(peer.0), &self.secret);
        salsa
            .decrypt(nonce.into(), boxed)
            .map_err(|_| HandshakeError::BoxOpen)
    }

    /// Seals a ClientInfo for the server.
    pub fn seal_client_info(&self, server: &NodePublic, info: &ClientInfo) -> Vec<u8> {
        self.seal_to(
            server,
            &serde_json::to_vec(info).expect("ClientInfo always serialises"),
        )
    }

    /// Opens a client's ClientInfo with the server key.
    pub fn open_client_info(
        &self,
        client: &NodePublic,
        sealed: &[u8],
    ) -> Result<ClientInfo, HandshakeError> {
        Ok(serde_json::from_slice(&self.open_from(client, sealed)?)?)
    }

    /// Seals a ServerInfo for an admitted client.
    pub fn seal_server_info(&self, client: &NodePublic, info: &ServerInfo) -> Vec<u8> {
        self.seal_to(
            client,
            &serde_json::to_vec(info).expect("ServerInfo always serialises"),
        )
    }

    /// Opens the server's ServerInfo with the client key.
    pub fn open_server_info(
        &self,
        server: &NodePublic,
        sealed: &[u8],
    ) -> Result<ServerInfo, HandshakeError> {
        Ok(serde_json::from_slice(&self.open_from(server, sealed)?)?)
    }
}

impl ClientInfo {
    /// What this crate's client sends, like a current tailscaled.
    pub fn current() -> Self {
        Self {
            version: PROTOCOL_VERSION,
            can_ack_pings: true,
            ..Self::default()
        }
    }
}

impl ServerInfo {
    pub fn current() -> Self {
        Self {
            version: PROTOCOL_VERSION,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0u8; N];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    /// NaCl's `tests/box.c`: Alice's secret and Bob's public key are the RFC 7748 §6.1
    /// pair; the expected output starts with the 16-byte Poly1305 tag f3ffc770...,
    /// followed by the ciphertext 8e993b9f..., i.e. the layout Go's box.Seal writes.
    #[test]
    fn salsa_box_output_is_nacl_layout() {
        let alice_secret: [u8; 32] =
            unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob_public: [u8; 32] =
            unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let nonce: [u8; 24] = unhex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37");
        let plaintext = hex::decode(concat!(
            "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffc",
            "e5ecbaaf33bd751a1ac728d45e6c61296cdc3c01233561f41db66cce314adb31",
            "0e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde",
            "048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f93776384864",
            "5e0705"
        ))
        .unwrap();
        let salsa = SalsaBox::new(&PublicKey::from(bob_public), &SecretKey::from(alice_secret));
        let out = salsa
            .encrypt((&nonce).into(), plaintext.as_slice())
            .unwrap();
        assert_eq!(out.len(), 16 + plaintext.len());
        assert_eq!(hex::encode(&out[..16]), "f3ffc7703f9400e52a7dfb4b3d3305d9");
        assert_eq!(
            hex::encode(&out[16..48]),
            "8e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186a"
        );
    }

    #[test]
    fn client_info_round_trips_and_wrong_key_fails() {
        let server = KeyPair::generate();
        let client = KeyPair::generate();
        let sealed = client.seal_client_info(&server.public(), &ClientInfo::current());
        assert_eq!(
            sealed.len(),
            NONCE_LEN + 16 + serde_json::to_vec(&ClientInfo::current()).unwrap().len()
        );
        let info = server.open_client_info(&client.public(), &sealed).unwrap();
        assert_eq!(info, ClientInfo::current());

        let impostor = KeyPair::generate();
        assert!(matches!(
            server.open_client_info(&impostor.public(), &sealed),
            Err(HandshakeError::BoxOpen)
        ));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            server.open_client_info(&client.public(), &tampered),
            Err(HandshakeError::BoxOpen)
        ));
        assert!(matches!(
            server.open_client_info(&client.public(), &sealed[..30]),
            Err(HandshakeError::TooShort { len: 30 })
        ));
    }

    #[test]
    fn parses_the_json_a_real_client_sends() {
        let info: ClientInfo =
            serde_json::from_str(r#"{"version":2,"CanAckPings":true,"AppName":"tsnet"}"#).unwrap();
        assert_eq!(
            info,
            ClientInfo {
                version: 2,
                can_ack_pings: true,
                ..Default::default()
            }
        );
        assert_eq!(
            serde_json::to_string(&ServerInfo::current()).unwrap(),
            r#"{"version":2}"#
        );
        assert_eq!(
            serde_json::to_string(&ClientInfo::current()).unwrap(),
            r#"{"version":2,"CanAckPings":true}"#
        );
    }
}
