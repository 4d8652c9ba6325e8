//! Curve25519 public keys in their text form: `<prefix><64 lowercase hex>`.
//!
//! The prefix is mandatory and case-sensitive; hex digits are accepted in either case and
//! written lowercase, as `types/key` does in Go.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a key's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("key {text:?} does not start with {prefix:?}")]
    MissingPrefix { prefix: &'static str, text: String },
    #[error("key {text:?} is not 64 hex digits after its prefix")]
    BadHex { text: String },
}

macro_rules! public_key {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The text prefix, including the colon.
            pub const PREFIX: &'static str = $prefix;

            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The all-zero key, which the wire uses for "none".
            pub fn is_zero(&self) -> bool {
                self.0 == [0u8; 32]
            }

            /// Parses the `prefix:hex` text form.
            pub fn parse(text: &str) -> Result<Self, KeyParseError> {
                let hex_part = text.strip_prefix($prefix).ok_or_else(|| {
                    KeyParseError::MissingPrefix { prefix: $prefix, text: text.to_owned() }
                })?;
                let mut bytes = [0u8; 32];
                if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut bytes).is_err() {
                    return Err(KeyParseError::BadHex { text: text.to_owned() });
                }
                Ok(Self(bytes))
            }

            /// A short, log-friendly form: the prefix and the first 8 hex digits.
            pub fn short(&self) -> String {
                format!("{}{}", $prefix, &hex::encode(&self.0[..4]))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($prefix)?;
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.short())
            }
        }

        impl std::str::FromStr for $name {
            type Err = KeyParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

public_key!(
    /// A machine's long-lived key: the Noise static key of its control connection.
    MachinePublic, "mkey:"
);
public_key!(
    /// A node's WireGuard key; also its address on DERP.
    NodePublic, "nodekey:"
);
public_key!(
    /// A node's key for disco (path discovery) messages.
    DiscoPublic, "discokey:"
);
public_key!(
    /// The per-connection challenge key of the early Noise payload.
    ChallengePublic, "chalpub:"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_form() {
        let k = NodePublic([0xab; 32]);
        let text = k.to_string();
        assert_eq!(text, format!("nodekey:{}", "ab".repeat(32)));
        assert_eq!(NodePublic::parse(&text).unwrap(), k);
        assert_eq!(
            NodePublic::parse(&text.to_uppercase().replace("NODEKEY:", "nodekey:")).unwrap(),
            k
        );
    }

    #[test]
    fn refuses_wrong_prefix_and_length() {
        let hex64 = "00".repeat(32);
        assert!(matches!(
            NodePublic::parse(&format!("mkey:{hex64}")),
            Err(KeyParseError::MissingPrefix { .. })
        ));
        assert!(matches!(
            NodePublic::parse("nodekey:abcd"),
            Err(KeyParseError::BadHex { .. })
        ));
        assert!(matches!(
            NodePublic::parse(&format!("nodekey:{}zz", "00".repeat(31))),
            Err(KeyParseError::BadHex { .. })
        ));
    }

    #[test]
    fn json_is_a_string() {
        let k = MachinePublic([1; 32]);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"mkey:{}\"", "01".repeat(32)));
        let back: MachinePublic = serde_json::from_str(&json).unwrap();
        assert_eq!(back, k);
        assert!(MachinePublic::default().is_zero());
    }
}
