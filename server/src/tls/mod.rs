//! HTTPS on the main listener. One listener serves the control protocol, DERP, the API and
//! the console; with TLS configured it serves HTTPS only (HTTP/1.1 and HTTP/2 by ALPN) and
//! never falls back to plain HTTP.
//!
//! Where certificates come from is behind rustls's `ResolvesServerCert` ([`Tls::resolver`]):
//! `files` (PEM files, reloaded) or `acme` (ordered, cached and renewed).

pub mod acme;
pub mod files;
pub mod listener;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::server::ResolvesServerCert;

use crate::config::{ChallengeType, Config, TlsSource};
use acme::Acme;
use files::{CertFiles, FileResolver};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // The causes are in the messages, not `source`s: the server prints the chain.
    #[error("cannot read the TLS {what} file {path} ({key}): {error}")]
    Read {
        what: &'static str,
        key: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the TLS {what} file {path} ({key}) is not valid PEM: {message}")]
    Pem {
        what: &'static str,
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error(
        "the TLS certificate file {path} (tls_cert_path) holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)"
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "the TLS key file {path} (tls_key_path) holds no private key (expected a PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\" block)"
    )]
    NoKey { path: PathBuf },
    #[error("the TLS key file {path} (tls_key_path) holds a key rustls cannot use: {error}")]
    BadKey { path: PathBuf, error: rustls::Error },
    #[error("the TLS key in {key} (tls_key_path) does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the TLS certificate in {path} (tls_cert_path) cannot be parsed: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error(
        "the TLS certificate in {path} (tls_cert_path) is not valid for {host}, the host of server_url ({reason}): clients would refuse it"
    )]
    WrongName {
        path: PathBuf,
        host: String,
        reason: String,
    },
    #[error("server_url host {host:?} cannot be checked against a certificate")]
    BadHost { host: String },
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Acme(#[from] acme::AcmeError),
}

/// The TLS side of the main listener: the certificate source and the acceptor using it.
pub struct Tls {
    resolver: Arc<dyn ResolvesServerCert>,
    files: Option<Arc<FileResolver>>,
    acme: Option<Arc<Acme>>,
    acceptor: TlsAcceptor,
}

impl Tls {
    /// The TLS the config asks for (`None`: plain HTTP), with its certificate loaded and
    /// checked. Any problem is an error: the server must not start.
    pub fn load(config: &Config) -> Result<Option<Tls>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let source = config.tls_source()?;
        let files = match source {
            TlsSource::Off => return Ok(None),
            TlsSource::Files { cert, key } => CertFiles { cert, key },
            TlsSource::Acme(settings) => {
                let acme = Acme::new(settings, &config.server_url, provider.clone())?;
                let validations = acme.challenge() == ChallengeType::TlsAlpn01;
                let acceptor = acceptor(provider, acme.resolver(), validations)?;
                return Ok(Some(Tls {
                    resolver: acme.resolver(),
                    files: None,
                    acme: Some(acme),
                    acceptor,
                }));
            }
        };
        let host = config.server_host();
        let host = ServerName::try_from(host.clone()).map_err(|_| TlsError::BadHost { host })?;
        let resolver = FileResolver::open(files, host, provider.clone())?;
        let acceptor = acceptor(provider, resolver.clone(), false)?;
        Ok(Some(Tls {
            resolver: resolver.clone(),
            files: Some(resolver),
            acme: None,
            acceptor,
        }))
    }

    /// Before `main` serves: with ACME, a certificate in force (cached, or ordered now).
    /// An error stops the server.
    pub async fn obtain(&self, main: &TcpListener) -> Result<(), TlsError> {
        if let Some(acme) = &self.acme {
            acme.obtain(main, &self.acceptor).await?;
        }
        Ok(())
    }

    /// Starts reloading (file changes, SIGHUP) or renewing (ACME) until `shutdown` flips.
    pub fn spawn_watchers(&self, shutdown: watch::Receiver<bool>) {
        if let Some(files) = &self.files {
            files.spawn_watchers(shutdown.clone());
        }
        if let Some(acme) = &self.acme {
            acme.spawn_renewals(shutdown);
        }
    }

    /// Where handshakes get their certificate.
    pub fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.resolver.clone()
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

/// TLS 1.2 and 1.3 with `provider`'s safe defaults; HTTP/2 and HTTP/1.1 by ALPN (Tailscale's
/// control and DERP upgrades offer no ALPN and get HTTP/1.1); with `acme_validations`, also
/// "acme-tls/1" (TLS-ALPN-01), whose connections the listener closes after the handshake.
fn acceptor(
    provider: Arc<CryptoProvider>,
    resolver: Arc<dyn ResolvesServerCert>,
    acme_validations: bool,
) -> Result<TlsAcceptor, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme_validations {
        config
            .alpn_protocols
            .push(acme::challenge::ACME_TLS_ALPN.to_vec());
    }
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests;
