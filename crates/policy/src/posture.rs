//! Device posture: `postures` (named lists of conditions on a node's attributes) and the
//! `srcPosture` / `defaultSrcPosture` that restrict a rule's sources to the nodes meeting one.
//!
//! A condition is `<attribute> <operator> [value]`: `node:os == 'linux'`,
//! `node:tsVersion >= '1.60'`, `custom:tier IN ['gold', 'silver']`, `custom:edr IS SET`.
//! A posture holds when all its conditions hold; a rule's sources are the nodes that meet at
//! least one of the postures it names. An attribute a node lacks fails every comparison
//! (only `NOT SET` holds), so a missing attribute never lets a node in.

use crate::PolicyError;
use crate::hujson::JVal;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A node attribute's value, as the API and the client report them.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Num(f64),
    Bool(bool),
}

/// The attributes a posture may test: `node:*` from the client, `custom:*` set through the API.
pub type Attributes = BTreeMap<String, AttrValue>;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    IsSet,
    NotSet,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    attr: String,
    op: Op,
    values: Vec<AttrValue>,
}

/// Attribute namespaces a condition may name.
const NAMESPACES: &[&str] = &["node:", "custom:", "ip:", "falcon:", "intune:", "jamf:"];

/// Parses `"posture:name": ["cond", ...]` entries.
pub(crate) fn parse_postures(
    entries: &[(String, JVal)],
) -> Result<BTreeMap<String, Vec<Condition>>, PolicyError> {
    let mut out = BTreeMap::new();
    for (name, v) in entries {
        if !name.starts_with("posture:") || name.len() == "posture:".len() {
            return Err(v.err(format!(
                "postures: {name:?}: a posture's name starts with \"posture:\""
            )));
        }
        let conds = crate::policy::strings(v, &format!("postures[{name:?}]"))?
            .into_iter()
            .map(|(s, l, c)| {
                parse_condition(&s)
                    .map_err(|m| PolicyError::at(l, c, format!("postures[{name:?}]: {m}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(name.clone(), conds);
    }
    Ok(out)
}

fn parse_condition(s: &str) -> Result<Condition, String> {
    let s = s.trim();
    let (attr, rest) = s
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("{s:?}: expected <attribute> <operator> <value>"))?;
    if !NAMESPACES
        .iter()
        .any(|ns| attr.starts_with(ns) && attr.len() > ns.len())
    {
        return Err(format!(
            "{s:?}: unknown attribute {attr:?} (node:…, custom:… or an integration's)"
        ));
    }
    let rest = rest.trim();
    let upper = rest.to_ascii_uppercase();
    let (op, value) = if upper == "IS SET" {
        (Op::IsSet, "")
    } else if upper == "NOT SET" {
        (Op::NotSet, "")
    } else if upper.starts_with("NOT IN ") {
        (Op::NotIn, &rest[7..])
    } else if upper.starts_with("IN ") {
        (Op::In, &rest[3..])
    } else {
        let ops = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let (sym, op) = ops
            .into_iter()
            .find(|(sym, _)| rest.starts_with(sym))
            .ok_or_else(|| format!("{s:?}: unknown operator"))?;
        (op, &rest[sym.len()..])
    };
    let value = value.trim();
    let values = match op {
        Op::IsSet | Op::NotSet => vec![],
        Op::In | Op::NotIn => parse_list(value)
            .ok_or_else(|| format!("{s:?}: IN and NOT IN take a list, like ['a', 'b']"))?,
        _ => vec![parse_value(value).ok_or_else(|| format!("{s:?}: bad value {value:?}"))?],
    };
    Ok(Condition {
        attr: attr.to_string(),
        op,
        values,
    })
}

fn parse_value(v: &str) -> Option<AttrValue> {
    let v = v.trim();
    for q in ['\'', '"'] {
        if let Some(inner) = v.strip_prefix(q).and_then(|x| x.strip_suffix(q)) {
            return (!inner.contains(q)).then(|| AttrValue::Str(inner.to_string()));
        }
    }
    match v {
        "true" => Some(AttrValue::Bool(true)),
        "false" => Some(AttrValue::Bool(false)),
        _ => v
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(AttrValue::Num),
    }
}

fn parse_list(v: &str) -> Option<Vec<AttrValue>> {
    let inner = v.trim().strip_prefix('[')?.strip_suffix(']')?;
    if inner.trim().is_empty() {
        return Some(vec![]);
    }
    inner.split(',').map(parse_value).collect()
}

impl Condition {
    pub fn holds(&self, attrs: &Attributes) -> bool {
        let have = attrs.get(&self.attr);
        match (&self.op, have) {
            (Op::IsSet, h) => h.is_some(),
            (Op::NotSet, h) => h.is_none(),
            (_, None) => false,
            (Op::In, Some(h)) => self
                .values
                .iter()
                .any(|v| compare(&self.attr, h, v) == Some(Ordering::Equal)),
            (Op::NotIn, Some(h)) => self
                .values
                .iter()
                .all(|v| compare(&self.attr, h, v) != Some(Ordering::Equal)),
            (op, Some(h)) => {
                let Some(want) = self.values.first() else {
                    return false;
                };
                match compare(&self.attr, h, want) {
                    None => matches!(op, Op::Ne),
                    Some(o) => match op {
                        Op::Eq => o == Ordering::Equal,
                        Op::Ne => o != Ordering::Equal,
                        Op::Lt => o == Ordering::Less,
                        Op::Le => o != Ordering::Greater,
                        Op::Gt => o == Ordering::Greater,
                        Op::Ge => o != Ordering::Less,
                        _ => false,
                    },
                }
            }
        }
    }
}

/// Versions (`node:osVersion`, `node:tsVersion`, or any two strings that both look like
/// versions) compare part by part as numbers: `1.60.1 > 1.9`. Strings compare as text,
/// numbers as numbers; values of different kinds do not compare.
fn compare(attr: &str, have: &AttrValue, want: &AttrValue) -> Option<Ordering> {
    match (have, want) {
        (AttrValue::Str(a), AttrValue::Str(b)) => {
            let versions = attr.ends_with("Version") || (is_version(a) && is_version(b));
            if versions && is_version(a) && is_version(b) {
                Some(compare_versions(a, b))
            } else {
                Some(a.cmp(b))
            }
        }
        (AttrValue::Num(a), AttrValue::Num(b)) => a.partial_cmp(b),
        (AttrValue::Bool(a), AttrValue::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn is_version(s: &str) -> bool {
    let core = version_core(s);
    !core.is_empty()
        && core
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `1.60.1-t1234abc` → `1.60.1`: a client's version carries its build after a dash.
fn version_core(s: &str) -> &str {
    s.trim().split(['-', '+', ' ']).next().unwrap_or_default()
}

fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<u64> {
        version_core(s)
            .split('.')
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    };
    let (a, b) = (parts(a), parts(b));
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        match x.cmp(&y) {
            Ordering::Equal => continue,
            o => return o,
        }
    }
    Ordering::Equal
}

/// The `node:*` attributes the server knows from a client's Hostinfo: its OS and OS version,
/// and its Tailscale version with the release track (an odd minor version is unstable).
pub fn node_attributes(os: &str, os_version: &str, ts_version: &str) -> Attributes {
    let mut a = Attributes::new();
    let os = match os.to_ascii_lowercase().as_str() {
        "" => None,
        "darwin" | "macos" => Some("macos".to_string()),
        other => Some(other.to_string()),
    };
    if let Some(os) = os {
        a.insert("node:os".into(), AttrValue::Str(os));
    }
    if !os_version.trim().is_empty() {
        a.insert(
            "node:osVersion".into(),
            AttrValue::Str(os_version.trim().into()),
        );
    }
    let core = version_core(ts_version);
    if is_version(core) {
        a.insert("node:tsVersion".into(), AttrValue::Str(core.into()));
        let minor: Option<u64> = core.split('.').nth(1).and_then(|m| m.parse().ok());
        if let Some(minor) = minor {
            let track = if minor % 2 == 0 { "stable" } else { "unstable" };
            a.insert("node:tsReleaseTrack".into(), AttrValue::Str(track.into()));
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, AttrValue)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn s(v: &str) -> AttrValue {
        AttrValue::Str(v.into())
    }

    #[test]
    fn conditions_compare_versions_strings_lists_and_presence() {
        let a = attrs(&[
            ("node:os", s("linux")),
            ("node:tsVersion", s("1.60.1")),
            ("custom:tier", s("gold")),
            ("custom:score", AttrValue::Num(72.0)),
            ("custom:managed", AttrValue::Bool(true)),
        ]);
        let holds = |c: &str| parse_condition(c).unwrap().holds(&a);
        assert!(holds("node:os == 'linux'"));
        assert!(!holds("node:os != 'linux'"));
        assert!(holds("node:tsVersion >= '1.60'"));
        assert!(
            holds("node:tsVersion > '1.9'"),
            "versions compare as numbers"
        );
        assert!(!holds("node:tsVersion < '1.60.1'"));
        assert!(holds("custom:tier IN ['gold', 'silver']"));
        assert!(holds("custom:tier not in ['bronze']"));
        assert!(holds("custom:score > 50"));
        assert!(!holds("custom:score > '50'"), "a number is not a string");
        assert!(holds("custom:managed == true"));
        assert!(holds("custom:tier IS SET"));
        assert!(holds("custom:edr NOT SET"));
        assert!(!holds("custom:edr == 'ok'"), "a missing attribute fails");
        assert!(!holds("custom:edr != 'ok'"), "even an inequality");
    }

    #[test]
    fn malformed_conditions_are_refused() {
        for bad in [
            "node:os",
            "os == 'linux'",
            "node:os ~= 'linux'",
            "node:os == linux",
            "node:os IN 'linux'",
            "node: == 'x'",
        ] {
            assert!(parse_condition(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostinfo_gives_the_node_attributes() {
        let a = node_attributes("darwin", "14.2.1", "1.61.0-t5e5e5e5e5");
        assert_eq!(a["node:os"], s("macos"));
        assert_eq!(a["node:osVersion"], s("14.2.1"));
        assert_eq!(a["node:tsVersion"], s("1.61.0"));
        assert_eq!(a["node:tsReleaseTrack"], s("unstable"));
        assert_eq!(
            node_attributes("linux", "", "1.90.9")["node:tsReleaseTrack"],
            s("stable")
        );
        assert!(node_attributes("", "", "").is_empty());
    }
}
