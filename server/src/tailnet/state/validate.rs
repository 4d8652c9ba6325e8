//! The shape of what administrators and clients name: user names, profile picture URLs
//! and tags. Pure functions, checked before anything changes.

use super::TailnetError;

pub(super) fn validate_user_name(name: &str) -> Result<(), TailnetError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.@+".contains(c))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(TailnetError::Invalid(format!(
            "{name:?} is not a valid user name: 1-63 letters, digits, '-', '_', '.', '@' or '+'"
        )))
    }
}

/// A profile picture set by an administrator (headscale's `pictureUrl`): empty, or an
/// http(s) URL of at most 2,048 bytes without spaces. Nothing else reaches an `<img src>`.
pub(super) fn validate_picture_url(url: &str) -> Result<(), TailnetError> {
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if url.is_empty()
        || (scheme_ok
            && url.len() <= 2048
            && !url.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        Ok(())
    } else {
        Err(TailnetError::Invalid(
            "a picture URL is an http:// or https:// URL of at most 2,048 characters".into(),
        ))
    }
}

/// Tags are `tag:<name>` with a non-empty ASCII name; duplicates removed, sorted.
pub(super) fn normalize_tags(tags: Vec<String>) -> Result<Vec<String>, TailnetError> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        let t = t.trim().to_owned();
        let name = t.strip_prefix("tag:").unwrap_or("");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(TailnetError::Invalid(format!(
                "{t:?} is not a tag: tags look like tag:server"
            )));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out.sort();
    Ok(out)
}

/// Rules: a user name is 1-63 letters, digits or `-_.@+`, not starting with `-` or `.`; a
/// picture URL is empty or a short http(s) URL without spaces; a tag is `tag:` and a name
/// of ASCII letters, digits, `-` or `_`, and a list of tags is deduplicated and sorted.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_short_safe_and_do_not_start_with_a_dash_or_dot() {
        for ok in ["alice", "a.b@c+d_e-f", "Zoë", &"a".repeat(63)] {
            assert!(validate_user_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            &"a".repeat(64),
            "-alice",
            ".alice",
            "a b",
            "a/b",
            "<b>",
            "a\n",
        ] {
            assert!(
                matches!(validate_user_name(bad), Err(TailnetError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn picture_urls_are_empty_or_short_http_urls_without_spaces() {
        for ok in ["", "https://example.com/a.png", "http://example.com"] {
            assert!(validate_picture_url(ok).is_ok(), "{ok:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        for bad in [
            "javascript:alert(1)",
            "data:image/png;base64,AAAA",
            "https://example.com/a b.png",
            "https://example.com/\u{7}",
            "//example.com/a.png",
            &long,
        ] {
            assert!(validate_picture_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tags_are_well_formed_deduplicated_and_sorted() {
        let tags = normalize_tags(vec!["tag:web".into(), " tag:db ".into(), "tag:web".into()]);
        assert_eq!(tags.unwrap(), vec!["tag:db", "tag:web"]);
        for bad in ["server", "tag:", "tag:a b", "tag:é", "tag:a:b", "Tag:web"] {
            assert!(normalize_tags(vec![bad.into()]).is_err(), "{bad:?}");
        }
    }
}
