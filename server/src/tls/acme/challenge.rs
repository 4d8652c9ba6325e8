//! Answering the ACME server's challenges while an order is open.
//!
//! HTTP-01: a small plain-HTTP listener on `tls_letsencrypt_listen` answers
//! `GET /.well-known/acme-challenge/<token>` with the key authorization and redirects every
//! other request to server_url (as headscale does): it never serves the API or the console.
//!
//! TLS-ALPN-01 (RFC 8737): a ClientHello on the main listener that offers only ALPN
//! "acme-tls/1" gets a self-signed certificate for the name carrying the key
//! authorization's digest; the connection is closed right after the handshake.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tracing::{debug, info, warn};

/// The ALPN protocol of TLS-ALPN-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Responses for the challenges of the order in progress.
#[derive(Debug, Default)]
pub struct Pending {
    /// HTTP-01: token → key authorization.
    http01: Mutex<HashMap<String, String>>,
    /// TLS-ALPN-01: DNS name → challenge certificate.
    tls_alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Pending {
    pub fn set_http01(&self, token: String, key_authorization: String) {
        lock(&self.http01).insert(token, key_authorization);
    }

    pub fn set_tls_alpn01(&self, name: &str, cert: Arc<CertifiedKey>) {
        lock(&self.tls_alpn01).insert(name.to_ascii_lowercase(), cert);
    }

    pub fn http01(&self, token: &str) -> Option<String> {
        lock(&self.http01).get(token).cloned()
    }

    pub fn tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.tls_alpn01)
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// Forgets every response (the order is over, however it ended).
    pub fn clear(&self) {
        lock(&self.http01).clear();
        lock(&self.tls_alpn01).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The main listener's certificates with ACME: the certificate in force (none until the
/// first one is obtained) and, for "acme-tls/1" handshakes, the challenge certificate.
#[derive(Debug, Default)]
pub struct AcmeResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    pub pending: Arc<Pending>,
}

impl AcmeResolver {
    pub fn set_current(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(key);
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validation = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if validation {
            // RFC 8737 §3: the validation names the identifier in SNI.
            let name = hello.server_name()?;
            let answer = self.pending.tls_alpn01(name);
            if answer.is_some() {
                info!(name, "answering an ACME TLS-ALPN-01 validation");
            }
            return answer;
        }
        self.current()
    }
}

/// The TLS-ALPN-01 certificate: self-signed for `name`, with the critical acmeIdentifier
/// extension holding SHA-256 of the key authorization.
pub fn tls_alpn01_certificate(
    name: &str,
    digest: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])
        .map_err(|e| format!("challenge certificate for {name}: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| format!("challenge key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("challenge certificate for {name}: {e}"))?;
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .map_err(|e| format!("challenge key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// A request to the HTTP-01 listener gets this long to arrive and be answered.
const HTTP01_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Http01 {
    pending: Arc<Pending>,
    /// server_url without a trailing slash: where other requests are sent.
    redirect_to: String,
}

/// Serves the HTTP-01 responder on `listener` until `stop` flips (or its sender is gone).
pub fn spawn_http01(
    listener: TcpListener,
    pending: Arc<Pending>,
    server_url: &str,
    mut stop: watch::Receiver<bool>,
) {
    let addr = listener.local_addr().ok();
    let state = Http01 {
        pending,
        redirect_to: server_url.trim_end_matches('/').to_owned(),
    };
    let router = Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer))
        .fallback(redirect)
        .with_state(state)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            HTTP01_REQUEST_TIMEOUT,
        ));
    info!(addr = ?addr, "ACME HTTP-01 responder listening (tls_letsencrypt_listen)");
    tokio::spawn(async move {
        let stopped = async move {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await
        {
            warn!(error = %e, "the ACME HTTP-01 responder stopped");
        }
        debug!(addr = ?addr, "ACME HTTP-01 responder closed");
    });
}

async fn answer(State(state): State<Http01>, Path(token): Path<String>) -> Response {
    match state.pending.http01(&token) {
        Some(key_authorization) => {
            info!("answered an ACME HTTP-01 challenge");
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                key_authorization,
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn redirect(State(state): State<Http01>, uri: Uri) -> Redirect {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Redirect::permanent(&format!("{}{path}", state.redirect_to))
}

/// Binds the HTTP-01 listener (SO_REUSEADDR, as the main listener: a restart rebinds at once).
pub fn bind_http01(addr: SocketAddr) -> std::io::Result<TcpListener> {
    crate::net::bind_reusable(addr, 128)
}
