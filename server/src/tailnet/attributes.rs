//! Custom posture attributes (`custom:<name>`): values an administrator (REST API, CLI) or,
//! where `node.attributes_from_device` allows it, the node itself (`PATCH
//! /machine/set-device-attr`) attaches to a node, for the policy's
//! `postures` to test. `node:*` attributes are not stored: they come from the node's
//! Hostinfo and cannot be set.
//!
//! Bounds (Tailscale's documented ones where it has them): at most [`MAX_ATTRIBUTES`] per
//! node, keys of at most [`MAX_KEY_LEN`] characters matching `custom:[A-Za-z0-9_]+`, string
//! values of at most [`MAX_STRING_LEN`] characters without control characters, finite
//! numbers. An attribute past its expiry counts as absent and is dropped by the lifecycle
//! task.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Most custom attributes one node holds.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest key, `custom:` included.
pub const MAX_KEY_LEN: usize = 50;
/// Longest string value, in characters.
pub const MAX_STRING_LEN: usize = 100;
/// The namespace keys that may be set.
pub const CUSTOM_PREFIX: &str = "custom:";

/// A custom attribute's value: a string, a number or a boolean (as in Tailscale).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttrValue {
    Bool(bool),
    Num(f64),
    Str(String),
}

impl AttrValue {
    /// The value as the policy engine compares it.
    pub fn to_policy(&self) -> oxiscale_policy::AttrValue {
        match self {
            AttrValue::Bool(b) => oxiscale_policy::AttrValue::Bool(*b),
            AttrValue::Num(n) => oxiscale_policy::AttrValue::Num(*n),
            AttrValue::Str(s) => oxiscale_policy::AttrValue::Str(s.clone()),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            AttrValue::Bool(b) => serde_json::Value::Bool(*b),
            AttrValue::Num(n) => serde_json::Number::from_f64(*n)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            AttrValue::Str(s) => serde_json::Value::String(s.clone()),
        }
    }

    /// A value from JSON, checked against the bounds.
    pub fn from_json(key: &str, v: &serde_json::Value) -> Result<AttrValue, AttrError> {
        let value = match v {
            serde_json::Value::Bool(b) => AttrValue::Bool(*b),
            serde_json::Value::Number(n) => {
                AttrValue::Num(n.as_f64().ok_or_else(|| AttrError::BadValue {
                    key: key.to_owned(),
                    why: "the number is out of range".into(),
                })?)
            }
            serde_json::Value::String(s) => AttrValue::Str(s.clone()),
            other => {
                return Err(AttrError::BadValue {
                    key: key.to_owned(),
                    why: format!(
                        "a value is a string, a number or a boolean, not {}",
                        json_kind(other)
                    ),
                });
            }
        };
        value.check(key)?;
        Ok(value)
    }

    fn check(&self, key: &str) -> Result<(), AttrError> {
        match self {
            AttrValue::Bool(_) => Ok(()),
            AttrValue::Num(n) if n.is_finite() => Ok(()),
            AttrValue::Num(_) => Err(AttrError::BadValue {
                key: key.to_owned(),
                why: "a number must be finite".into(),
            }),
            AttrValue::Str(s) => {
                let chars = s.chars().count();
                if chars > MAX_STRING_LEN {
                    Err(AttrError::BadValue {
                        key: key.to_owned(),
                        why: format!(
                            "a string value is at most {MAX_STRING_LEN} characters (this one has {chars})"
                        ),
                    })
                } else if s.chars().any(char::is_control) {
                    Err(AttrError::BadValue {
                        key: key.to_owned(),
                        why: "a string value may not contain control characters".into(),
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    fn hash_into<H: Hasher>(&self, h: &mut H) {
        match self {
            AttrValue::Bool(b) => (0u8, *b).hash(h),
            AttrValue::Num(n) => (1u8, n.to_bits()).hash(h),
            AttrValue::Str(s) => (2u8, s).hash(h),
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
        _ => "this",
    }
}

/// One stored custom attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomAttr {
    pub value: AttrValue,
    /// When it stops counting; `None` = never.
    pub expiry: Option<OffsetDateTime>,
}

impl CustomAttr {
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expiry.is_some_and(|e| e <= now)
    }
}

/// A node's custom attributes by key.
pub type CustomAttrs = BTreeMap<String, CustomAttr>;

/// Feeds what the policy sees of `attrs` (expiries included: the lifecycle task removes an
/// attribute when it expires, which is a change) into `h`.
pub fn hash_attrs<H: Hasher>(attrs: &CustomAttrs, h: &mut H) {
    attrs.len().hash(h);
    for (k, a) in attrs {
        k.hash(h);
        a.value.hash_into(h);
        a.expiry.map(|e| e.unix_timestamp_nanos()).hash(h);
    }
}

/// Why a change of attributes is refused; nothing of it is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    #[error(
        "attribute key {key:?} is not valid: keys are \"custom:\" followed by letters, digits \
         and underscores, at most {MAX_KEY_LEN} characters in all (node:* attributes come from \
         the device and cannot be set)"
    )]
    BadKey { key: String },
    #[error("attribute {key}: {why}")]
    BadValue { key: String, why: String },
    #[error("attribute {key}: the expiry must be in the future")]
    ExpiryPast { key: String },
    #[error(
        "a node holds at most {MAX_ATTRIBUTES} custom attributes; this change would leave {count}"
    )]
    TooMany { count: usize },
}

/// Checks that `key` is a settable attribute key.
pub fn check_key(key: &str) -> Result<(), AttrError> {
    let name = key.strip_prefix(CUSTOM_PREFIX).unwrap_or("");
    if key.len() > MAX_KEY_LEN
        || name.is_empty()
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(AttrError::BadKey {
            key: key.chars().take(MAX_KEY_LEN + 10).collect(),
        });
    }
    Ok(())
}

/// One change: set `key` (with an optional expiry) or, with `None`, remove it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrUpdate {
    pub key: String,
    pub set: Option<CustomAttr>,
}

/// `current` with `updates` applied and expired attributes dropped, or why not. Checks
/// every key, value, expiry and the count before anything changes.
pub fn apply_updates(
    current: &CustomAttrs,
    updates: &[AttrUpdate],
    now: OffsetDateTime,
) -> Result<CustomAttrs, AttrError> {
    if updates.len() > MAX_ATTRIBUTES * 2 {
        return Err(AttrError::TooMany {
            count: updates.len(),
        });
    }
    let mut next: CustomAttrs = current
        .iter()
        .filter(|(_, a)| !a.is_expired(now))
        .map(|(k, a)| (k.clone(), a.clone()))
        .collect();
    for u in updates {
        check_key(&u.key)?;
        match &u.set {
            Some(attr) => {
                attr.value.check(&u.key)?;
                if attr.is_expired(now) {
                    return Err(AttrError::ExpiryPast { key: u.key.clone() });
                }
                next.insert(u.key.clone(), attr.clone());
            }
            None => {
                next.remove(&u.key);
            }
        }
    }
    if next.len() > MAX_ATTRIBUTES {
        return Err(AttrError::TooMany { count: next.len() });
    }
    Ok(next)
}

/// How custom attributes are kept in the database (`nodes.attributes`, JSON): expiries as
/// unix seconds, like every other time there.
#[derive(Serialize, Deserialize)]
struct Stored {
    value: AttrValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expiry: Option<i64>,
}

pub fn to_stored_json(attrs: &CustomAttrs) -> String {
    let stored: BTreeMap<&str, Stored> = attrs
        .iter()
        .map(|(k, a)| {
            (
                k.as_str(),
                Stored {
                    value: a.value.clone(),
                    expiry: a.expiry.map(|e| e.unix_timestamp()),
                },
            )
        })
        .collect();
    serde_json::to_string(&stored).expect("plain data serialises")
}

pub fn from_stored_json(text: &str) -> Result<CustomAttrs, String> {
    let stored: BTreeMap<String, Stored> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    stored
        .into_iter()
        .map(|(k, s)| {
            let expiry = s
                .expiry
                .map(OffsetDateTime::from_unix_timestamp)
                .transpose()
                .map_err(|e| format!("attribute {k}: {e}"))?;
            Ok((
                k,
                CustomAttr {
                    value: s.value,
                    expiry,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(key: &str, value: AttrValue) -> AttrUpdate {
        AttrUpdate {
            key: key.into(),
            set: Some(CustomAttr {
                value,
                expiry: None,
            }),
        }
    }

    #[test]
    fn keys_are_custom_names_within_the_length() {
        for good in [
            "custom:a",
            "custom:managed",
            "custom:A_9",
            &format!("custom:{}", "x".repeat(43)),
        ] {
            assert_eq!(check_key(good), Ok(()), "{good}");
        }
        for bad in [
            "custom:",
            "managed",
            "node:os",
            "custom:a-b",
            "custom:a b",
            "Custom:a",
            "custom:é",
            &format!("custom:{}", "x".repeat(44)),
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_bounded_strings_numbers_and_booleans() {
        assert_eq!(
            AttrValue::from_json("custom:a", &json!(true)),
            Ok(AttrValue::Bool(true))
        );
        assert_eq!(
            AttrValue::from_json("custom:a", &json!(1.5)),
            Ok(AttrValue::Num(1.5))
        );
        let longest = "é".repeat(MAX_STRING_LEN);
        assert!(AttrValue::from_json("custom:a", &json!(longest)).is_ok());
        let longer = "a".repeat(MAX_STRING_LEN + 1);
        for bad in [
            json!(null),
            json!([1]),
            json!({"a": 1}),
            json!(longer),
            json!("a\nb"),
        ] {
            assert!(AttrValue::from_json("custom:a", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn updates_are_all_or_nothing_and_counted_without_the_expired() {
        let now = OffsetDateTime::now_utc();
        let mut current = CustomAttrs::new();
        current.insert(
            "custom:old".into(),
            CustomAttr {
                value: AttrValue::Bool(true),
                expiry: Some(now - time::Duration::seconds(1)),
            },
        );
        let many: Vec<AttrUpdate> = (0..MAX_ATTRIBUTES)
            .map(|i| set(&format!("custom:k{i}"), AttrValue::Num(i as f64)))
            .collect();
        let full = apply_updates(&current, &many, now).unwrap();
        assert_eq!(full.len(), MAX_ATTRIBUTES, "the expired one is gone");
        assert_eq!(
            apply_updates(&full, &[set("custom:one_more", AttrValue::Bool(true))], now),
            Err(AttrError::TooMany {
                count: MAX_ATTRIBUTES + 1
            })
        );
        // Replacing one stays within the bound; removing one makes room.
        assert!(apply_updates(&full, &[set("custom:k0", AttrValue::Bool(false))], now).is_ok());
        let removed = AttrUpdate {
            key: "custom:k0".into(),
            set: None,
        };
        assert_eq!(
            apply_updates(
                &full,
                &[removed, set("custom:new", AttrValue::Bool(true))],
                now
            )
            .unwrap()
            .len(),
            MAX_ATTRIBUTES
        );
        // One bad key refuses the whole change.
        assert!(
            apply_updates(
                &CustomAttrs::new(),
                &[
                    set("custom:ok", AttrValue::Bool(true)),
                    set("node:os", AttrValue::Bool(true))
                ],
                now
            )
            .is_err()
        );
    }

    #[test]
    fn stored_json_reads_back() {
        let mut attrs = CustomAttrs::new();
        attrs.insert(
            "custom:a".into(),
            CustomAttr {
                value: AttrValue::Str("x".into()),
                expiry: Some(OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap()),
            },
        );
        attrs.insert(
            "custom:b".into(),
            CustomAttr {
                value: AttrValue::Num(3.0),
                expiry: None,
            },
        );
        attrs.insert(
            "custom:c".into(),
            CustomAttr {
                value: AttrValue::Bool(false),
                expiry: None,
            },
        );
        assert_eq!(from_stored_json(&to_stored_json(&attrs)), Ok(attrs));
        assert_eq!(from_stored_json("{}"), Ok(CustomAttrs::new()));
        assert!(from_stored_json("[").is_err());
    }
}
