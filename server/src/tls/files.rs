//! Certificates from files (`tls_cert_path`, `tls_key_path`): a PEM chain and its private
//! key, checked (the key belongs to the certificate, the certificate covers server_url's
//! host) at start and at every reload. The files are re-read when they change (polled) and
//! on SIGHUP; a reload that fails keeps the certificate in force and says why, so a
//! half-written or wrong file never takes the server down.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tracing::{info, warn};

use super::TlsError;

/// How often the files are looked at (their metadata only).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The certificate and key files, as configured.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads and checks the pair: the chain parses, the key loads and belongs to the first
/// certificate, and that certificate is valid for `host`.
pub fn load(
    files: &CertFiles,
    host: &ServerName<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(&files.cert, "certificate", "tls_cert_path")?;
    let key_pem = read(&files.key, "key", "tls_key_path")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            key: "tls_cert_path",
            path: files.cert.clone(),
            message: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    };
    check_name(leaf, host, &files.cert)?;
    if let Some(problem) = validity_problem(leaf, provider, UnixTime::now()) {
        // Served all the same (the clock may be wrong, a renewal may be on its way), but
        // clients will refuse it: say so at start and at every reload.
        warn!(cert = %files.cert.display(), "the TLS certificate {problem}; clients refuse it until it is replaced");
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: files.key.clone(),
        },
        other => TlsError::Pem {
            what: "key",
            key: "tls_key_path",
            path: files.key.clone(),
            message: other.to_string(),
        },
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::BadKey {
            path: files.key.clone(),
            error,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // Unknown: the provider cannot tell for this key type; the handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        }),
        Err(other) => Err(TlsError::BadCertificate {
            path: files.cert.clone(),
            message: other.to_string(),
        }),
    }
}

fn read(path: &Path, what: &'static str, key: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        what,
        key,
        path: path.to_owned(),
        error,
    })
}

/// Clients check the certificate against the host they dial (server_url's, also the DERP
/// node's HostName): one that does not cover it would be refused by every client.
fn check_name(
    leaf: &CertificateDer<'_>,
    host: &ServerName<'static>,
    path: &Path,
) -> Result<(), TlsError> {
    let parsed = webpki::EndEntityCert::try_from(leaf).map_err(|e| TlsError::BadCertificate {
        path: path.to_owned(),
        message: format!("{e:?}"),
    })?;
    parsed
        .verify_is_valid_for_subject_name(host)
        .map_err(|e| TlsError::WrongName {
            path: path.to_owned(),
            host: host.to_str().into_owned(),
            reason: match e {
                webpki::Error::CertNotValidForName(context) if context.presented.is_empty() => {
                    "it names no DNS name or IP address".into()
                }
                webpki::Error::CertNotValidForName(context) => {
                    format!("it is for {}", context.presented.join(", "))
                }
                other => format!("{other:?}"),
            },
        })
}

/// Why the certificate is outside its validity period at `now`, if it is. webpki checks the
/// dates before it looks for an issuer, so verifying against no trust anchor at all answers
/// exactly this: a date error, or `UnknownIssuer` when the dates are fine.
pub fn validity_problem(
    leaf: &CertificateDer<'_>,
    provider: &CryptoProvider,
    now: UnixTime,
) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(leaf).ok()?;
    let checked = parsed.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &[],
        &[],
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    match checked {
        Err(webpki::Error::CertExpired { not_after, .. }) => {
            Some(format!("expired at {}", rfc3339(not_after)))
        }
        Err(webpki::Error::CertNotValidYet { not_before, .. }) => {
            Some(format!("is not valid before {}", rfc3339(not_before)))
        }
        _ => None,
    }
}

fn rfc3339(t: UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{} s after 1970", t.as_secs()))
}

/// A short fingerprint for logs: which certificate is in force.
pub fn fingerprint(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .map(|c| hex::encode(&Sha256::digest(c.as_ref())[..8]))
        .unwrap_or_default()
}

/// Identifies a version of a file without reading it (a replaced file has a new inode).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// A different certificate is in force for new connections.
    Changed,
    /// The files hold the certificate already in force.
    Unchanged,
}

/// The certificate in force, swapped by reloads; rustls asks it at every handshake.
#[derive(Debug)]
pub struct FileResolver {
    files: CertFiles,
    host: ServerName<'static>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps when last read, so an unchanged failure is reported once.
    seen: Mutex<(Option<Stamp>, Option<Stamp>)>,
}

impl FileResolver {
    /// Loads the files; any problem is an error (the server does not start).
    pub fn open(
        files: CertFiles,
        host: ServerName<'static>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<FileResolver>, TlsError> {
        let seen = (stamp(&files.cert), stamp(&files.key));
        let key = load(&files, &host, &provider)?;
        info!(
            cert = %files.cert.display(),
            fingerprint = fingerprint(&key),
            "TLS certificate loaded"
        );
        Ok(Arc::new(FileResolver {
            files,
            host,
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
        }))
    }

    /// The certificate new connections get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the files; on any error the certificate in force stays.
    pub fn reload(&self) -> Result<Reloaded, TlsError> {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) =
            (stamp(&self.files.cert), stamp(&self.files.key));
        let key = load(&self.files, &self.host, &self.provider)?;
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.cert == key.cert {
            return Ok(Reloaded::Unchanged);
        }
        *current = Arc::new(key);
        Ok(Reloaded::Changed)
    }

    /// Whether either file changed since it was last read.
    fn files_touched(&self) -> bool {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) != now
    }

    /// Polls the files and listens for SIGHUP until `shutdown` flips.
    pub fn spawn_watchers(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        let resolver = self.clone();
        tokio::spawn(async move {
            let mut triggers =
                crate::reload::Triggers::new(POLL_INTERVAL, "the TLS certificate", shutdown);
            while let Some(forced) = triggers.next().await {
                if !forced && !resolver.files_touched() {
                    continue;
                }
                let reason = if forced { "SIGHUP" } else { "files changed" };
                match resolver.reload() {
                    Ok(Reloaded::Changed) => info!(
                        reason,
                        fingerprint = fingerprint(&resolver.current()),
                        "new TLS certificate in force"
                    ),
                    Ok(Reloaded::Unchanged) => info!(reason, "the TLS certificate is unchanged"),
                    Err(e) => warn!(
                        reason,
                        error = %e,
                        fingerprint = fingerprint(&resolver.current()),
                        "TLS certificate not reloaded; the one in force stays"
                    ),
                }
            }
        });
    }
}

impl ResolvesServerCert for FileResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
