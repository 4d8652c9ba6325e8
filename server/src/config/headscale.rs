//! headscale's config files as they are: where headscale looks for them, its `HEADSCALE_*`
//! variables, the keys it removed (refused with its own words), the keys renamed between
//! 0.26 and 0.29, and keys oxiscale does not know, which are named in a warning and never
//! stop the server (a config written for a newer headscale still starts).

use std::fmt;
use std::path::{Path, PathBuf};

use serde_norway::Value;

use super::{ConfigError, get_path, remove_path};

/// The file names tried in each directory of the search path, in order (headscale's viper
/// takes `config.<any extension>`; these are the ones people use).
const FILE_NAMES: &[&str] = &["config.yaml", "config.yml", "config.json"];

/// Where the config is looked for when neither `-c` nor `OXISCALE_CONFIG`/`HEADSCALE_CONFIG`
/// names one: oxiscale's own places first, then headscale's (`/etc/headscale/`,
/// `$HOME/.headscale`, the working directory).
pub fn search_path(home: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/etc/oxiscale")];
    if let Some(home) = home {
        dirs.push(home.join(".oxiscale"));
    }
    dirs.push(PathBuf::from("/etc/headscale"));
    if let Some(home) = home {
        dirs.push(home.join(".headscale"));
    }
    dirs.push(PathBuf::from("."));
    dirs.iter()
        .flat_map(|d| FILE_NAMES.iter().map(move |f| d.join(f)))
        .collect()
}

/// The first file of the search path that `exists`.
pub fn find_config_file(home: Option<&Path>, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    search_path(home).into_iter().find(|p| exists(p))
}

/// Something about the config a person should know, logged at start and printed by
/// `configtest`; none of them stops the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigNotice {
    /// A headscale key for something oxiscale does not do (yet).
    NotActedOn { key: String },
    /// A key oxiscale does not know at all: a newer headscale's, or a typo.
    Unknown {
        key: String,
        suggestion: Option<String>,
    },
    /// A key headscale renamed; the old one still works.
    Renamed {
        old: &'static str,
        new: &'static str,
    },
    /// A key headscale removed whose value changes nothing here.
    Removed {
        key: &'static str,
        hint: &'static str,
    },
}

impl fmt::Display for ConfigNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigNotice::NotActedOn { key } => write!(
                f,
                "{key:?} is a headscale key that oxiscale accepts but does not act on"
            ),
            ConfigNotice::Unknown { key, suggestion } => {
                write!(
                    f,
                    "{key:?} is not a configuration key oxiscale knows; ignored"
                )?;
                match suggestion {
                    Some(s) => write!(f, " (did you mean {s:?}?)"),
                    None => Ok(()),
                }
            }
            ConfigNotice::Renamed { old, new } => write!(
                f,
                "the {old:?} configuration key is deprecated; please use {new:?} instead"
            ),
            ConfigNotice::Removed { key, hint } => {
                write!(f, "the {key:?} configuration key has been removed; {hint}")
            }
        }
    }
}

/// Keys headscale (0.26 on) refuses to start with, each with headscale's message; the
/// `Some(new)` ones are refused only when the new key is not set too (else warned about).
const REFUSED: &[(&str, Option<&str>)] = &[
    ("acl_policy_path", Some("policy.path")),
    ("dns_config.magic_dns", Some("dns.magic_dns")),
    ("dns_config.base_domain", Some("dns.base_domain")),
    (
        "dns_config.override_local_dns",
        Some("dns.override_local_dns"),
    ),
    ("dns_config.nameservers", Some("dns.nameservers.global")),
    (
        "dns_config.restricted_nameservers",
        Some("dns.nameservers.split"),
    ),
    ("dns_config.domains", Some("dns.search_domains")),
    ("dns_config.extra_records", Some("dns.extra_records")),
    ("dns.use_username_in_magic_dns", None),
    ("dns_config.use_username_in_magic_dns", None),
    ("oidc.strip_email_domain", None),
    ("oidc.map_legacy_users", None),
];

/// Brings a headscale config tree to the keys oxiscale reads: refuses what headscale
/// refuses, moves renamed keys, drops keys that only headscale 0.28 and older had, and drops
/// (with a notice each) keys oxiscale does not know. `known` holds every key path oxiscale
/// reads; a known path whose value is a whole section (`oidc.extra_params`) covers what is
/// under it.
pub fn upgrade(tree: &mut Value, known: &[String]) -> Result<Vec<ConfigNotice>, ConfigError> {
    let mut notices = Vec::new();
    let mut refused = Vec::new();
    for (old, new) in REFUSED {
        if get_path(tree, old).is_none_or(Value::is_null) {
            continue;
        }
        match new {
            Some(new) if get_path(tree, new).is_some_and(|v| !v.is_null()) => {
                remove_path(tree, old);
                notices.push(ConfigNotice::Renamed { old, new });
            }
            Some(new) => refused.push(format!(
                "The {old:?} configuration key is deprecated. Please use {new:?} instead. {old:?} has been removed."
            )),
            None => refused.push(format!(
                "The {old:?} configuration key has been removed. Please see the changelog for more details."
            )),
        }
    }
    if !refused.is_empty() {
        return Err(ConfigError::Removed(refused.join("\n")));
    }

    // Renamed in headscale 0.29; the new key wins when both are set, as in headscale.
    if let Some(old) = remove_path(tree, "ephemeral_node_inactivity_timeout") {
        if get_path(tree, "node.ephemeral.inactivity_timeout").is_none_or(Value::is_null) {
            super::set_path(tree, "node.ephemeral.inactivity_timeout", old);
        }
        notices.push(ConfigNotice::Renamed {
            old: "ephemeral_node_inactivity_timeout",
            new: "node.ephemeral.inactivity_timeout",
        });
    }
    // In every 0.26-0.28 example file as `false`; headscale 0.29 moved it to the policy.
    if let Some(value) = remove_path(tree, "randomize_client_port")
        && value.as_bool() == Some(true)
    {
        notices.push(ConfigNotice::Removed {
            key: "randomize_client_port",
            hint: "clients keep their usual port (headscale 0.29 moved this to the policy's \"randomizeClientPort\")",
        });
    }

    let mut unknown = Vec::new();
    collect_unknown(tree, "", known, &mut unknown);
    for key in unknown {
        remove_path(tree, &key);
        let suggestion = closest(&key, known);
        notices.push(ConfigNotice::Unknown { key, suggestion });
    }
    Ok(notices)
}

/// Key paths in `tree` that are neither known nor under a known key.
fn collect_unknown(tree: &Value, prefix: &str, known: &[String], out: &mut Vec<String>) {
    let Value::Mapping(map) = tree else { return };
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            out.push(format!("{prefix}{key:?}"));
            continue;
        };
        let path = if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        if known.contains(&path) {
            continue;
        }
        let section = format!("{path}.");
        if known.iter().any(|k| k.starts_with(&section)) {
            collect_unknown(value, &path, known, out);
        } else {
            out.push(path);
        }
    }
}

/// The known key a misspelt one most likely meant: same section, small edit distance.
fn closest(key: &str, known: &[String]) -> Option<String> {
    let (section, _) = key.rsplit_once('.').unwrap_or(("", key));
    known
        .iter()
        .filter(|k| k.rsplit_once('.').map_or("", |(s, _)| s) == section)
        .map(|k| (edit_distance(k, key), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 5))
        .min()
        .map(|(_, k)| k.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev + usize::from(ca != *cb);
            prev = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(prev + 1);
        }
    }
    row[b.len()]
}

/// `HEADSCALE_<KEY>` variables headscale reads that are not configuration keys.
pub fn is_headscale_non_config_env(var: &str) -> bool {
    var == "HEADSCALE_CONFIG" || var.starts_with("HEADSCALE_DEBUG_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(yaml: &str) -> Value {
        serde_norway::from_str(yaml).unwrap()
    }

    fn known() -> Vec<String> {
        [
            "server_url",
            "dns.base_domain",
            "dns.magic_dns",
            "policy.path",
            "node.ephemeral.inactivity_timeout",
            "oidc.extra_params",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn keys_headscale_removed_are_refused_in_its_words() {
        let err = upgrade(&mut tree("dns_config:\n  magic_dns: true\n"), &known()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The \"dns_config.magic_dns\" configuration key is deprecated. Please use \"dns.magic_dns\" instead. \"dns_config.magic_dns\" has been removed."
        );
        let err = upgrade(&mut tree("oidc:\n  strip_email_domain: true\n"), &known()).unwrap_err();
        assert!(err.to_string().contains("has been removed"), "{err}");
    }

    #[test]
    fn an_old_key_beside_its_new_one_is_only_named() {
        let mut t = tree("acl_policy_path: /a.hujson\npolicy:\n  path: /b.hujson\n");
        let notices = upgrade(&mut t, &known()).unwrap();
        assert_eq!(get_path(&t, "acl_policy_path"), None);
        assert_eq!(
            get_path(&t, "policy.path").unwrap().as_str(),
            Some("/b.hujson")
        );
        assert_eq!(notices.len(), 1, "{notices:?}");
    }

    #[test]
    fn renamed_keys_move_unless_the_new_one_is_set() {
        let mut t = tree("ephemeral_node_inactivity_timeout: 30m\n");
        upgrade(&mut t, &known()).unwrap();
        assert_eq!(
            get_path(&t, "node.ephemeral.inactivity_timeout")
                .unwrap()
                .as_str(),
            Some("30m")
        );
        let mut t = tree(
            "ephemeral_node_inactivity_timeout: 30m\nnode:\n  ephemeral:\n    inactivity_timeout: 5m\n",
        );
        let notices = upgrade(&mut t, &known()).unwrap();
        assert_eq!(
            get_path(&t, "node.ephemeral.inactivity_timeout")
                .unwrap()
                .as_str(),
            Some("5m"),
            "the new key wins"
        );
        assert!(matches!(notices[0], ConfigNotice::Renamed { .. }));
    }

    #[test]
    fn unknown_keys_are_dropped_and_named_with_a_guess() {
        let mut t = tree(
            "dns:\n  base_domian: x.example\n  magic_dns: true\nfuture_feature:\n  on: true\n\
             oidc:\n  extra_params:\n    domain_hint: example.com\n",
        );
        let notices = upgrade(&mut t, &known()).unwrap();
        assert_eq!(
            notices,
            vec![
                ConfigNotice::Unknown {
                    key: "dns.base_domian".into(),
                    suggestion: Some("dns.base_domain".into()),
                },
                ConfigNotice::Unknown {
                    key: "future_feature".into(),
                    suggestion: None,
                },
            ]
        );
        assert_eq!(get_path(&t, "dns.base_domian"), None);
        assert!(get_path(&t, "dns.magic_dns").is_some());
        assert!(
            get_path(&t, "oidc.extra_params.domain_hint").is_some(),
            "a section's own entries are its values, not keys"
        );
    }

    #[test]
    fn randomize_client_port_false_is_dropped_silently() {
        let mut t = tree("randomize_client_port: false\n");
        assert!(upgrade(&mut t, &known()).unwrap().is_empty());
        let mut t = tree("randomize_client_port: true\n");
        assert_eq!(upgrade(&mut t, &known()).unwrap().len(), 1);
    }

    #[test]
    fn the_search_path_tries_oxiscale_then_headscale_then_here() {
        let home = Path::new("/home/ops");
        let path = search_path(Some(home));
        assert_eq!(path[0], Path::new("/etc/oxiscale/config.yaml"));
        let found = find_config_file(Some(home), |p| {
            p == Path::new("/etc/headscale/config.yaml") || p == Path::new("./config.yaml")
        });
        assert_eq!(
            found.as_deref(),
            Some(Path::new("/etc/headscale/config.yaml"))
        );
        let found = find_config_file(Some(home), |p| {
            p == Path::new("/home/ops/.headscale/config.yml")
        });
        assert_eq!(
            found.as_deref(),
            Some(Path::new("/home/ops/.headscale/config.yml"))
        );
        assert_eq!(find_config_file(None, |_| false), None);
    }
}
