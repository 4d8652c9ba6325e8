//! Bearer secrets (pre-auth keys, API keys): `<kind>-<prefix>-<secret>`, shown once.
//!
//! The secret part carries 240 bits of randomness, so a plain SHA-256 is enough to store it
//! (a slow password hash protects low-entropy secrets, which these are not). Lookups go by
//! prefix; the comparison of hashes is constant-time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

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

impl SecretKind {
    /// How a key is shown once its secret is gone: `oxskey-api-<prefix>-***`, as headscale
    /// shows `hskey-api-<prefix>-***`.
    pub fn display(self, prefix: &str) -> String {
        format!("{}-{prefix}-***", self.tag())
    }

    /// The lookup prefix in what a client sends: the bare prefix or the display form.
    pub fn bare_prefix(self, text: &str) -> String {
        let text = text.trim();
        let tagged = text
            .strip_prefix(self.tag())
            .and_then(|t| t.strip_prefix('-'));
        let text = tagged.unwrap_or(text);
        // An imported headscale prefix may itself end in `-`: only the mask's own goes.
        let text = text
            .strip_suffix("-***")
            .or_else(|| text.strip_suffix("***"))
            .unwrap_or(text);
        text.to_owned()
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

/// 32 random bytes from the OS as URL-safe base64 (no padding): session, CSRF, sign-in
/// state and setup tokens.
pub fn random_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether two tokens are equal, in time that does not depend on where they differ.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

pub fn matches(text: &str, stored: &[u8; 32]) -> bool {
    digest(text).ct_eq(stored).into()
}

/// How a key's secret is kept. Keys oxiscale mints keep a SHA-256 of the whole text; keys
/// taken over from headscale keep what headscale kept: the SHA-256 of a legacy plaintext
/// pre-auth key (headscale stored the key itself), or headscale's bcrypt of the secret part
/// (`hskey-auth-…`, `hskey-api-…`, legacy API keys `prefix.secret`).
#[derive(Debug, Clone)]
pub enum KeyHash {
    Sha256([u8; 32]),
    Bcrypt {
        /// `$2a$10$…`, as headscale stored it.
        hash: String,
        /// The SHA-256 of the whole key text once bcrypt accepted it: bcrypt is slow on
        /// purpose, and a key's text never changes, so it runs once per key and process.
        verified: Arc<OnceLock<[u8; 32]>>,
        /// When bcrypt last refused a guess (ms since the process's first check, 0 = never):
        /// guesses at a known prefix run bcrypt at most once a second per key, so they
        /// cannot keep the CPU (or the tailnet's lock) busy.
        refused_at: Arc<AtomicU64>,
    },
}

/// Least time between two bcrypt runs that refuse a guess at the same key.
const BCRYPT_RETRY_MS: u64 = 1000;

fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    // Starts at 1 so that 0 can mean "never".
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (KeyHash::Sha256(a), KeyHash::Sha256(b)) => a == b,
            (KeyHash::Bcrypt { hash: a, .. }, KeyHash::Bcrypt { hash: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for KeyHash {}

impl KeyHash {
    pub fn bcrypt(hash: String) -> KeyHash {
        KeyHash::Bcrypt {
            hash,
            verified: Arc::default(),
            refused_at: Arc::default(),
        }
    }

    /// The stored form: 32 bytes of SHA-256, or the bcrypt string (60 bytes, never 32).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            KeyHash::Sha256(h) => h.to_vec(),
            KeyHash::Bcrypt { hash, .. } => hash.as_bytes().to_vec(),
        }
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Option<KeyHash> {
        if bytes.len() == 32 {
            return Some(KeyHash::Sha256(bytes.try_into().ok()?));
        }
        let text = String::from_utf8(bytes).ok()?;
        text.starts_with("$2").then(|| KeyHash::bcrypt(text))
    }

    /// Whether `text` (the whole key as presented) opens this key; `secret` is its part
    /// that headscale hashed (see [`parse_presented`]).
    pub fn verify(&self, text: &str, secret: &str) -> bool {
        match self {
            KeyHash::Sha256(h) => matches(text, h),
            KeyHash::Bcrypt {
                hash,
                verified,
                refused_at,
            } => {
                if let Some(known) = verified.get() {
                    return matches(text, known);
                }
                let last = refused_at.load(Ordering::Relaxed);
                if last != 0 && clock_ms().saturating_sub(last) < BCRYPT_RETRY_MS {
                    return false;
                }
                let ok = bcrypt::verify(secret, hash).unwrap_or(false);
                if ok {
                    let _ = verified.set(digest(text));
                } else {
                    refused_at.store(clock_ms(), Ordering::Relaxed);
                }
                ok
            }
        }
    }
}

const HS_PREFIX_LEN: usize = 12;
const HS_SECRET_LEN: usize = 64;

/// The lookup prefix and the hashed part of a presented key, for every form that may be
/// stored: oxiscale's own (`oxskey-…`), headscale 0.28+'s (`hskey-auth-<12>-<64>`,
/// `hskey-api-<12>-<64>`; fixed lengths, the secret may hold `-`), headscale's legacy API
/// keys (`<prefix>.<secret>`) and legacy pre-auth keys (the plaintext itself, found by
/// its first 12 characters, which the import stored as its prefix).
pub fn parse_presented(kind: SecretKind, text: &str) -> Option<(&str, &str)> {
    if let Some(prefix) = prefix_of(kind, text) {
        return Some((prefix, text));
    }
    let hs_tag = match kind {
        SecretKind::PreAuth => "hskey-auth-",
        SecretKind::Api => "hskey-api-",
    };
    if let Some(rest) = text.strip_prefix(hs_tag) {
        let valid = rest.len() == HS_PREFIX_LEN + 1 + HS_SECRET_LEN
            && rest.is_char_boundary(HS_PREFIX_LEN)
            && rest.as_bytes()[HS_PREFIX_LEN] == b'-';
        return valid.then(|| (&rest[..HS_PREFIX_LEN], &rest[HS_PREFIX_LEN + 1..]));
    }
    if text.starts_with("oxskey-") || !text.is_ascii() || text.len() > 256 {
        return None;
    }
    match kind {
        SecretKind::Api => {
            let (prefix, secret) = text.split_once('.')?;
            (!prefix.is_empty() && prefix.len() <= 32 && !secret.is_empty())
                .then_some((prefix, secret))
        }
        SecretKind::PreAuth => (text.len() >= 24
            && text.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| (&text[..HS_PREFIX_LEN], text)),
    }
}

/// The lookup prefix a legacy headscale pre-auth key (its plaintext) is stored under.
pub fn legacy_preauth_prefix(key: &str) -> Option<&str> {
    parse_presented(SecretKind::PreAuth, key)
        .filter(|(_, secret)| *secret == key)
        .map(|(prefix, _)| prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_by_its_prefix_or_its_display_form() {
        let shown = SecretKind::Api.display("ab3k9");
        assert_eq!(shown, "oxskey-api-ab3k9-***");
        assert_eq!(SecretKind::Api.bare_prefix(&shown), "ab3k9");
        assert_eq!(SecretKind::Api.bare_prefix(" ab3k9 "), "ab3k9");
        assert_eq!(SecretKind::Api.bare_prefix("oxskey-api-a-b--***"), "a-b-");
    }

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
    fn headscale_key_forms_are_recognised() {
        let secret = "a-".repeat(32);
        let hs = format!("hskey-auth-abcdefghijkl-{secret}");
        assert_eq!(
            parse_presented(SecretKind::PreAuth, &hs),
            Some(("abcdefghijkl", secret.as_str()))
        );
        assert_eq!(parse_presented(SecretKind::Api, &hs), None);
        let legacy = "0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(legacy_preauth_prefix(legacy), Some("0123456789ab"));
        assert_eq!(
            parse_presented(SecretKind::Api, "abcdefg.secretpart"),
            Some(("abcdefg", "secretpart"))
        );
        let hash = KeyHash::bcrypt(bcrypt::hash("secretpart", 4).unwrap());
        assert!(!hash.verify("abcdefg.other", "other"));
        assert!(
            !hash.verify("abcdefg.secretpart", "secretpart"),
            "within a second of a wrong guess, bcrypt does not run"
        );
        std::thread::sleep(std::time::Duration::from_millis(BCRYPT_RETRY_MS + 50));
        assert!(hash.verify("abcdefg.secretpart", "secretpart"));
        assert!(hash.verify("abcdefg.secretpart", "secretpart"), "cached");
        assert!(!hash.verify("abcdefg.other", "other"));
        assert!(
            hash.verify("abcdefg.secretpart", "secretpart"),
            "a verified key is not slowed by guesses"
        );
        assert_eq!(KeyHash::from_bytes(hash.to_bytes()), Some(hash));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        assert_eq!(prefix_of(SecretKind::PreAuth, "tskey-test-b"), None);
        assert_eq!(prefix_of(SecretKind::PreAuth, "oxskey-auth-short-x"), None);
    }
}
