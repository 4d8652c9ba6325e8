//! MagicDNS names: a node's label is its hostname sanitised the way Tailscale does it
//! (RFC 1035 label, separators to hyphens, everything else outside `[a-z0-9-]` dropped),
//! made unique in the tailnet with numeric suffixes (`laptop`, `laptop-1`, …).

use std::collections::HashMap;

const MAX_LABEL: usize = 63;
/// What a hostname with no usable characters becomes.
pub const FALLBACK_LABEL: &str = "node";

/// Turns any hostname into a valid DNS label; never empty.
/// A node's MagicDNS name: `<given name>.<base domain>.`, fully qualified.
pub fn fqdn(given_name: &str, base_domain: &str) -> String {
    format!("{given_name}.{}.", base_domain.trim_matches('.'))
}

pub fn sanitize_hostname(hostname: &str) -> String {
    let trimmed = [".local", ".localdomain", ".lan"]
        .iter()
        .fold(hostname, |h, suffix| h.strip_suffix(suffix).unwrap_or(h));
    let label = sanitize_label(trimmed);
    if label.is_empty() {
        FALLBACK_LABEL.to_owned()
    } else {
        label
    }
}

/// The label rule: cut to 63 bytes, drop leading and trailing bytes that are not
/// alphanumeric, turn inner separators (space, dot, `@`, `_`) into hyphens, keep letters
/// (lowercased), digits and hyphens, drop the rest.
pub fn sanitize_label(label: &str) -> String {
    let bytes = &label.as_bytes()[..label.len().min(MAX_LABEL)];
    let Some(start) = bytes.iter().position(u8::is_ascii_alphanumeric) else {
        return String::new();
    };
    let end = bytes
        .iter()
        .rposition(u8::is_ascii_alphanumeric)
        .map_or(start, |e| e + 1);
    let inner = &bytes[start..end];
    let mut out = String::with_capacity(inner.len());
    for (i, &b) in inner.iter().enumerate() {
        let boundary = i == 0 || i == inner.len() - 1;
        if !boundary && matches!(b, b' ' | b'.' | b'@' | b'_') {
            out.push('-');
        } else if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b.to_ascii_lowercase() as char);
        }
    }
    out
}

/// Whether `label` is already a valid DNS label (what `rename` accepts verbatim).
pub fn is_valid_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Picks a free name for `wanted` given the names in use: `wanted`, else `wanted-1`, …
pub fn unique_label(wanted: &str, taken: &HashMap<String, u64>, owner: Option<u64>) -> String {
    let free = |name: &str| taken.get(name).is_none_or(|id| Some(*id) == owner);
    if free(wanted) {
        return wanted.to_owned();
    }
    (1u64..)
        .map(|n| {
            let suffix = format!("-{n}");
            let stem = &wanted[..wanted.len().min(MAX_LABEL - suffix.len())];
            format!("{}{suffix}", stem.trim_end_matches('-'))
        })
        .find(|candidate| free(candidate))
        .expect("an unbounded range finds a free name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitises_like_tailscale() {
        assert_eq!(sanitize_hostname("Joe's Mac mini"), "joes-mac-mini");
        assert_eq!(sanitize_hostname("node_b.local"), "node-b");
        assert_eq!(sanitize_hostname("--edge--"), "edge");
        assert_eq!(sanitize_hostname("a.b.c"), "a-b-c");
        assert_eq!(sanitize_hostname("user@host"), "user-host");
        assert_eq!(sanitize_hostname("日本語"), FALLBACK_LABEL);
        assert_eq!(sanitize_hostname(""), FALLBACK_LABEL);
        assert_eq!(sanitize_hostname(&"x".repeat(80)).len(), 63);
        // Separators are not collapsed: each becomes one hyphen.
        assert_eq!(sanitize_hostname("a  b"), "a--b");
    }

    #[test]
    fn validates_labels() {
        assert!(is_valid_label("web-1"));
        assert!(!is_valid_label("-web"));
        assert!(!is_valid_label("Web"));
        assert!(!is_valid_label("a/b"));
        assert!(!is_valid_label(""));
    }

    #[test]
    fn makes_names_unique_with_numeric_suffixes() {
        let mut taken = HashMap::new();
        assert_eq!(unique_label("laptop", &taken, None), "laptop");
        taken.insert("laptop".to_string(), 1);
        assert_eq!(unique_label("laptop", &taken, None), "laptop-1");
        assert_eq!(
            unique_label("laptop", &taken, Some(1)),
            "laptop",
            "a node keeps its own name"
        );
        taken.insert("laptop-1".to_string(), 2);
        assert_eq!(unique_label("laptop", &taken, None), "laptop-2");
        let long = "y".repeat(63);
        taken.insert(long.clone(), 3);
        let next = unique_label(&long, &taken, None);
        assert!(next.len() <= 63 && next.ends_with("-1"), "{next}");
    }
}
