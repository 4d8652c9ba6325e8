//! Headers every console answer carries: no framing (clickjacking), no MIME sniffing, no
//! referrer to other sites, and nothing stored by the browser or a proxy unless the route
//! said otherwise (the static files say `no-cache`). Pages restrict script sources
//! themselves, with a nonce per response (`app::ssr::send_script_policy`); their policy is
//! kept, this one covers every other answer.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

const POLICY: &str =
    "frame-ancestors 'none'; object-src 'none'; base-uri 'self'; form-action 'self'";

pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}
