//! The pages a person sees while signing a machine in: plain server-rendered HTML, no script,
//! every value escaped.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The machine a pending login is for, as the confirmation page names it.
#[derive(Debug, Clone)]
pub struct MachineSummary {
    pub hostname: String,
    pub os: String,
    /// The node key's short form (`nodekey:` and 8 hex digits), as `tailscale status` shows.
    pub node_key: String,
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A small server-rendered page (sign-in confirmations, SSH checks): no scripts, nothing
/// loaded, never framed or cached.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{} · oxiscale</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}}\
         dt{{font-weight:600}}dd{{margin:0 0 .5rem}}button{{font:inherit;padding:.5rem 1rem;margin-right:.5rem}}</style>\
         </head><body><main>{body}</main></body></html>",
        escape(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            // These pages carry one-time tokens: nobody may frame them or load anything.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            ),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        html,
    )
        .into_response()
}

/// Asks the signed-in person to confirm that this machine is theirs to connect.
pub fn confirm(machine: &MachineSummary, person: &str, auth_id: &str, token: &str) -> Response {
    let body = format!(
        "<h1>Connect this machine?</h1>\
         <p>Signed in as <strong>{person}</strong>. Connect this machine to the tailnet as yours \
         only if you started the login on it.</p>\
         <dl><dt>Machine</dt><dd>{host}</dd><dt>Operating system</dt><dd>{os}</dd>\
         <dt>Node key</dt><dd><code>{key}</code></dd></dl>\
         <form method=\"post\" action=\"/register/confirm/{auth_id}\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <button type=\"submit\">Connect machine</button></form>",
        person = escape(person),
        host = escape(&machine.hostname),
        os = escape(if machine.os.is_empty() {
            "unknown"
        } else {
            &machine.os
        }),
        key = escape(&machine.node_key),
        auth_id = escape(auth_id),
        token = escape(token),
    );
    page(StatusCode::OK, "Connect this machine?", &body)
}

pub fn connected(hostname: &str) -> Response {
    let body = format!(
        "<h1>Machine connected</h1><p><strong>{}</strong> is now part of the tailnet. \
         You can close this page.</p>",
        escape(hostname)
    );
    page(StatusCode::OK, "Machine connected", &body)
}

/// Where a machine's login link leads while no identity provider is in force (OpenID Connect
/// off, or its provider not discovered yet): how an administrator approves the machine.
pub fn needs_approval(hostname: &str, machine: &str, server_url: &str, auth_id: &str) -> Response {
    let body = format!(
        "<h1>Approve this machine</h1><p>The machine <strong>{}</strong> ({}) asks to join the \
         tailnet at {}.</p><p>An administrator approves it with:</p>\
         <pre><code>oxiscale auth register --auth-id {} --user &lt;USER&gt;</code></pre>",
        escape(hostname),
        escape(machine),
        escape(server_url),
        escape(auth_id)
    );
    page(StatusCode::OK, "Approve this machine", &body)
}

/// The person is not allowed in; nothing was registered.
pub fn refused(reason: &str) -> Response {
    let body = format!(
        "<h1>Sign-in refused</h1><p id=\"reason\">{}.</p>\
         <p>Nothing was registered. Ask the tailnet's administrator if you think this is wrong.</p>",
        escape(reason.trim_end_matches('.'))
    );
    page(StatusCode::FORBIDDEN, "Sign-in refused", &body)
}

/// The sign-in could not be completed; nothing was registered.
pub fn failed(status: StatusCode, reason: &str) -> Response {
    let body = format!(
        "<h1>Sign-in failed</h1><p id=\"reason\">{}.</p><p>Nothing was registered.</p>",
        escape(reason.trim_end_matches('.'))
    );
    page(status, "Sign-in failed", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_shown_is_escaped() {
        assert_eq!(
            escape(r#"<script>"x" & 'y'</script>"#),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
