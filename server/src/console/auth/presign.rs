//! The CSRF token of a visitor who is not signed in (the sign-in and setup forms). It lives
//! in its own cookie, not in a session: a session row for every `GET /login` let anyone fill
//! the database (3,000 requests, 3,000 rows kept 12 hours). The form repeats the cookie's
//! token (double submit); the cookie is HttpOnly and SameSite=Strict, so another site can
//! neither read it nor send it.

use axum::http::{HeaderMap, HeaderValue, header};

/// Name of the cookie.
pub const PRESIGN_COOKIE: &str = "oxiscale_presign";
/// How long a sign-in form stays usable.
const MAX_AGE_SECS: u64 = 12 * 3600;

/// The token a request's cookie carries, when it has the shape of one.
pub fn from_request(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix(PRESIGN_COOKIE)?.strip_prefix('='))
        .find(|t| is_token(t))
        .map(str::to_owned)
}

/// `tailnet::secret::random_token`'s shape: 32 bytes as URL-safe base64 without padding.
fn is_token(text: &str) -> bool {
    text.len() == 43
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The `Set-Cookie` value that hands `token` to the browser.
pub fn set_cookie(token: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{PRESIGN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECS}{secure}"
    ))
    .expect("a token and fixed attributes are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_token_is_read_back() {
        let token = crate::tailnet::secret::random_token();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {PRESIGN_COOKIE}={token}; c=d")).unwrap(),
        );
        assert_eq!(from_request(&headers), Some(token.clone()));
        for bad in ["short", "x".repeat(43).replace('x', "!").as_str(), ""] {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("{PRESIGN_COOKIE}={bad}")).unwrap(),
            );
            assert_eq!(from_request(&headers), None, "{bad:?}");
        }
        let set = set_cookie(&token, true);
        let set = set.to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.ends_with("Secure")
        );
    }
}
