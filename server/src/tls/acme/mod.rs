//! Certificates from an ACME server (`tls_letsencrypt_hostname`, headscale's keys): obtained
//! at start, cached in `tls_letsencrypt_cache_dir`, renewed in the background with a third of
//! their lifetime left.
//!
//! - At start a cached certificate that is not due for renewal is served as it is (no order).
//!   Otherwise an order is placed before the server serves anything; if it fails, a cached
//!   certificate that has not expired stays in force (with a warning), and with none the
//!   server stops with the ACME server's reason. It never falls back to plain HTTP.
//! - A failed renewal keeps the certificate in force, says why, and is retried.
//!
//! `cache` holds the files and the date rules, `challenge` the responders, `order` the
//! conversation with the ACME server; this module decides when to order and swaps the
//! certificate the main listener serves ([`challenge::AcmeResolver`]).

pub mod cache;
pub mod challenge;
pub mod order;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tracing::{info, warn};

use crate::config::{AcmeSettings, ChallengeType};
use cache::{Cache, Issued};
use challenge::AcmeResolver;

/// An order (account, challenge, issuance) must be done within this long.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME cache {path} (tls_letsencrypt_cache_dir): {error}")]
    Cache {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the cached certificate {path} cannot be used: {message}")]
    CachedCert { path: PathBuf, message: String },
    #[error("cannot read the ACME server's CA file {path} (acme_ca_file): {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("ACME HTTP client: {message}")]
    Client { message: String },
    #[error("cannot use the ACME server at {url} (acme_url): {message}")]
    Directory { url: String, message: String },
    #[error("the ACME server no longer knows the cached account: {message}")]
    AccountGone { message: String },
    #[error("ACME {step}: {message}")]
    Protocol { step: &'static str, message: String },
    #[error(
        "the ACME server does not offer the {challenge} challenge (tls_letsencrypt_challenge_type)"
    )]
    ChallengeNotOffered { challenge: &'static str },
    #[error("the ACME server could not validate {hostname} by {challenge}: {message}")]
    Validation {
        hostname: String,
        challenge: &'static str,
        message: String,
    },
    #[error("the ACME server issued a certificate that cannot be served: {message}")]
    Unusable { message: String },
    #[error(
        "cannot listen on {addr} (tls_letsencrypt_listen) for the ACME HTTP-01 challenge: {error}"
    )]
    Http01Listen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("the ACME order did not complete within {} s", .0.as_secs())]
    Timeout(Duration),
}

/// An error and its causes on one line (reqwest and hyper keep the useful part in the
/// sources).
pub fn cause(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let more = source.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = source.source();
    }
    text
}

/// The ACME certificate source of the main listener.
pub struct Acme {
    settings: AcmeSettings,
    server_url: String,
    provider: Arc<CryptoProvider>,
    cache: Cache,
    resolver: Arc<AcmeResolver>,
    /// The certificate in force (its dates drive renewals).
    issued: Mutex<Option<Issued>>,
    /// Stops the HTTP-01 responder when this source goes away.
    stop: watch::Sender<bool>,
}

impl Drop for Acme {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Acme {
    /// Opens the cache and reads the cached certificate, if any (nothing is ordered yet).
    pub fn new(
        settings: AcmeSettings,
        server_url: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Acme>, AcmeError> {
        let cache = Cache::open(&settings.cache_dir)?;
        // A bad CA file is a configuration error: say so before anything else.
        order::http_client(&settings)?;
        let issued = match cache.read_cert(&settings.hostname, &provider) {
            Ok(issued) => issued,
            Err(e) => {
                warn!(error = %e, "ignoring the cached ACME certificate; a new one will be ordered");
                None
            }
        };
        let resolver = Arc::new(AcmeResolver::default());
        if let Some(issued) = &issued {
            resolver.set_current(issued.certified.clone());
        }
        Ok(Arc::new(Acme {
            settings,
            server_url: server_url.to_owned(),
            provider,
            cache,
            resolver,
            issued: Mutex::new(issued),
            stop: watch::channel(false).0,
        }))
    }

    pub fn resolver(&self) -> Arc<AcmeResolver> {
        self.resolver.clone()
    }

    pub fn challenge(&self) -> ChallengeType {
        self.settings.challenge
    }

    fn in_force(&self) -> Option<Issued> {
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Before the server serves: starts the HTTP-01 responder (HTTP-01), then makes sure a
    /// certificate is in force, ordering one unless the cached one is good for a while yet.
    /// While the first order runs with TLS-ALPN-01, `main` (the main listener, not yet
    /// serving) completes the validation handshakes and nothing else.
    pub async fn obtain(
        &self,
        main: &TcpListener,
        acceptor: &TlsAcceptor,
    ) -> Result<(), AcmeError> {
        if self.settings.challenge == ChallengeType::Http01 {
            let addr = self.settings.http01_listen;
            let listener = challenge::bind_http01(addr)
                .map_err(|error| AcmeError::Http01Listen { addr, error })?;
            challenge::spawn_http01(
                listener,
                self.resolver.pending.clone(),
                &self.server_url,
                self.stop.subscribe(),
            );
        }
        let cached = self.in_force();
        let now = SystemTime::now();
        if let Some(issued) = &cached
            && now < issued.renew_at()
        {
            info!(
                hostname = %self.settings.hostname,
                serial = %issued.serial,
                expires = %rfc3339(issued.not_after),
                "using the cached ACME certificate"
            );
            return Ok(());
        }
        let ordered = if self.settings.challenge == ChallengeType::TlsAlpn01 {
            tokio::select! {
                result = self.order_and_install() => result,
                never = answer_validations(main, acceptor) => match never {},
            }
        } else {
            self.order_and_install().await
        };
        match (ordered, cached) {
            (Ok(()), _) => Ok(()),
            (Err(e), Some(issued)) if !issued.expired(now) => {
                warn!(
                    error = %e,
                    serial = %issued.serial,
                    expires = %rfc3339(issued.not_after),
                    "renewing the ACME certificate failed; the cached one stays in force"
                );
                Ok(())
            }
            (Err(e), _) => Err(e),
        }
    }

    /// One order, bounded in time; the new certificate is cached, then served.
    async fn order_and_install(&self) -> Result<(), AcmeError> {
        let settings = &self.settings;
        info!(
            hostname = %settings.hostname,
            directory = %settings.directory_url,
            challenge = ?settings.challenge,
            "ordering a certificate from the ACME server"
        );
        let pending = &self.resolver.pending;
        let ordering = async {
            let account = order::account(settings, &self.cache).await?;
            match order::order(&account, settings, pending, &self.provider).await {
                Err(AcmeError::AccountGone { message }) => {
                    warn!(%message, "the cached ACME account is gone; creating a new one");
                    self.cache.forget_account(&settings.directory_url)?;
                    let account = order::account(settings, &self.cache).await?;
                    order::order(&account, settings, pending, &self.provider).await
                }
                other => other,
            }
        };
        let (chain, key) = tokio::time::timeout(ORDER_TIMEOUT, ordering)
            .await
            .map_err(|_| AcmeError::Timeout(ORDER_TIMEOUT))??;
        let issued = Issued::parse(chain, key, &settings.hostname, &self.provider)
            .map_err(|message| AcmeError::Unusable { message })?;
        self.cache.write_cert(&settings.hostname, &issued)?;
        self.resolver.set_current(issued.certified.clone());
        info!(
            hostname = %settings.hostname,
            serial = %issued.serial,
            expires = %rfc3339(issued.not_after),
            cache = %self.cache.dir().display(),
            "new ACME certificate in force"
        );
        *self.issued.lock().unwrap_or_else(PoisonError::into_inner) = Some(issued);
        Ok(())
    }

    /// Renews in the background until `shutdown` flips.
    pub fn spawn_renewals(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let acme = self.clone();
        tokio::spawn(async move {
            // Already due (the order at start failed and the cached certificate stayed):
            // the first retry waits as later ones do.
            let now = SystemTime::now();
            let mut retry: Option<Duration> = acme
                .in_force()
                .filter(|issued| now >= issued.renew_at())
                .map(|issued| cache::retry_delay(now, issued.not_after));
            loop {
                let Some(issued) = acme.in_force() else {
                    return;
                };
                let wait = retry.take().unwrap_or_else(|| {
                    issued
                        .renew_at()
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                });
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                let result = tokio::select! {
                    result = acme.order_and_install() => result,
                    _ = shutdown.changed() => return,
                };
                if let Err(e) = result {
                    let now = SystemTime::now();
                    let delay = cache::retry_delay(now, issued.not_after);
                    warn!(
                        error = %e,
                        serial = %issued.serial,
                        expires = %rfc3339(issued.not_after),
                        retry_in_s = delay.as_secs(),
                        "renewing the ACME certificate failed; the one in force stays"
                    );
                    retry = Some(delay);
                }
            }
        });
    }
}

/// Completes TLS handshakes on `main` (the ACME server's TLS-ALPN-01 validations) until
/// dropped; every connection is closed after its handshake.
async fn answer_validations(
    main: &TcpListener,
    acceptor: &TlsAcceptor,
) -> std::convert::Infallible {
    const MAX: usize = 64;
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = main.accept(), if handshakes.len() < MAX => match accepted {
                Ok((stream, _)) => {
                    let acceptor = acceptor.clone();
                    handshakes.spawn(async move {
                        let _ = tokio::time::timeout(
                            super::listener::HANDSHAKE_TIMEOUT,
                            acceptor.accept(stream),
                        )
                        .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

#[cfg(test)]
mod tests;
