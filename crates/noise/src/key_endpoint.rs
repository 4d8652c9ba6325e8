//! `GET /key?v=N`: the plain-HTTP answer that tells clients the server's Noise key.

use oxiscale_tailcfg::MachinePublic;
use serde::{Deserialize, Serialize};

/// Body of `/key` (`tailcfg.OverTLSPublicKeyResponse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyResponse {
    /// The retired NaCl transport's key; always zero here.
    #[serde(rename = "legacyPublicKey", default)]
    pub legacy_public_key: MachinePublic,
    /// The Noise static public key; clients refuse a zero one.
    #[serde(rename = "publicKey", default)]
    pub public_key: MachinePublic,
}

/// The `/key` body for a server whose Noise public key is `server_pub`; serialize it with
/// serde_json (e.g. `axum::Json`).
pub fn key_response(server_pub: MachinePublic) -> KeyResponse {
    KeyResponse {
        legacy_public_key: MachinePublic::default(),
        public_key: server_pub,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_go() {
        let json = serde_json::to_string(&key_response(MachinePublic([0x5a; 32]))).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"legacyPublicKey\":\"mkey:{}\",\"publicKey\":\"mkey:{}\"}}",
                "0".repeat(64),
                "5a".repeat(32)
            )
        );
        let back: KeyResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back.public_key, MachinePublic([0x5a; 32]));
        // Legacy key may be omitted.
        let only: KeyResponse =
            serde_json::from_str(&format!("{{\"publicKey\":\"mkey:{}\"}}", "5a".repeat(32)))
                .unwrap();
        assert!(only.legacy_public_key.is_zero());
    }
}
