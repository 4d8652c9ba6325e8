//! Bearer secrets (pre-auth keys, API keys): `<kind>-<prefix>-<secret>`, shown once.
//!
//! The secret part carries 240 bits of randomness, so a plain SHA-256 is enough to store it
//! (a slow password hash protects low-entropy secrets, which these are not). Lookups go by
//! prefix; the comparison of hashes is constant-time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 48;

/// What a key is for; part of its text so a leaked key says what it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// `oxskey-auth-…`. Avoids `tskey-client-` and `--TL`, which clients treat specially.
    PreAuth,
    /// `oxskey-api-…`.
    Api,
}

impl SecretKind {
    fn tag(self) -> &'static str {
        match self {
            SecretKind::PreAuth => "oxskey-auth",
            SecretKind::Api => "oxskey-api",
        }
    }
}

/// A freshly minted secret: the full text (to show once) and what to store.
pub struct Minted {
    pub text: String,
    pub prefix: String,
    pub hash: [u8; 32],
}

fn random_chars(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // 36 symbols: modulo bias is 4/256 per symbol, irrelevant at this length.
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

pub fn mint(kind: SecretKind) -> Minted {
    let prefix = random_chars(PREFIX_LEN);
    let text = format!("{}-{prefix}-{}", kind.tag(), random_chars(SECRET_LEN));
    let hash = digest(&text);
    Minted { text, prefix, hash }
}

pub fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The lookup prefix of a presented key, if it has our shape.
pub fn prefix_of(kind: SecretKind, text: &str) -> Option<&str> {
    let rest = text.strip_prefix(kind.tag())?.strip_prefix('-')?;
    let (prefix, secret) = rest.split_once('-')?;
    (prefix.len() == PREFIX_LEN && secret.len() == SECRET_LEN).then_some(prefix)
}

pub fn matches(text: &str, stored: &[u8; 32]) -> bool {
    digest(text).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_verify_and_expose_their_prefix() {
        let m = mint(SecretKind::PreAuth);
        assert!(m.text.starts_with("oxskey-auth-"));
        assert_eq!(
            prefix_of(SecretKind::PreAuth, &m.text),
            Some(m.prefix.as_str())
        );
        assert!(matches(&m.text, &m.hash));
        assert!(!matches(&format!("{}x", m.text), &m.hash));
        assert_eq!(
            prefix_of(SecretKind::Api, &m.text),
            None,
            "kinds do not mix"
        );
        assert_ne!(mint(SecretKind::PreAuth).text, m.text);
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        assert_eq!(prefix_of(SecretKind::PreAuth, "tskey-test-b"), None);
        assert_eq!(prefix_of(SecretKind::PreAuth, "oxskey-auth-short-x"), None);
    }
}
