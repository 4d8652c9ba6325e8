//! What survives a restart (`tls_letsencrypt_cache_dir`, 0700): the ACME account per
//! directory URL (`account-<hash>.json`) and the certificate chain and key per hostname
//! (`<hostname>.cert.pem`, `<hostname>.key.pem`), all 0600 and each written whole (a
//! temporary file renamed over the old one). Also the rules for a certificate's dates: when
//! to renew and how soon to retry.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::AcmeError;

/// A certificate from the ACME server (or the cache), ready to serve.
#[derive(Debug, Clone)]
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
    pub certified: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The leaf's serial number, hex (as pebble's and openssl's tools show it).
    pub serial: String,
}

impl Issued {
    /// Parses and checks a chain and its key: they belong together and the leaf covers
    /// `hostname`. The error says what is wrong.
    pub fn parse(
        chain_pem: String,
        key_pem: String,
        hostname: &str,
        provider: &CryptoProvider,
    ) -> Result<Issued, String> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate chain is not valid PEM: {e}"))?;
        let leaf = chain.first().ok_or("no certificate in the chain")?;
        let name = ServerName::try_from(hostname.to_owned())
            .map_err(|_| format!("{hostname:?} is not a DNS name"))?;
        webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| format!("the certificate cannot be parsed: {e:?}"))?
            .verify_is_valid_for_subject_name(&name)
            .map_err(|e| format!("the certificate is not valid for {hostname}: {e:?}"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
        let validity = parsed.validity();
        let at = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
        let not_before = at(validity.not_before.timestamp());
        let not_after = at(validity.not_after.timestamp());
        let serial = hex::encode(parsed.raw_serial());
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("the private key is not valid PEM: {e}"))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("the private key cannot be used: {e}"))?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            // Unknown: the provider cannot tell for this key type; the handshake will.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => {
                return Err(format!(
                    "the private key does not belong to the certificate: {e}"
                ));
            }
        }
        Ok(Issued {
            chain_pem,
            key_pem,
            certified: Arc::new(certified),
            not_before,
            not_after,
            serial,
        })
    }

    /// When to order the next one: with a third of the lifetime left (30 days of Let's
    /// Encrypt's 90, 20 s of a 60 s test certificate).
    pub fn renew_at(&self) -> SystemTime {
        renew_at(self.not_before, self.not_after)
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_after - lifetime / 3
}

/// After a failed renewal: an eighth of the time left, between 5 s and an hour, so a
/// certificate always gets several more tries before it expires.
pub fn retry_delay(now: SystemTime, not_after: SystemTime) -> Duration {
    let left = not_after.duration_since(now).unwrap_or_default();
    (left / 8).clamp(Duration::from_secs(5), Duration::from_secs(3600))
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Creates the directory (0700) if needed and tightens it if it is looser.
    pub fn open(dir: &Path) -> Result<Cache, AcmeError> {
        let io = |error| AcmeError::Cache {
            path: dir.to_owned(),
            error,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Ok(Cache {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One account per ACME directory: credentials of another server mean nothing here.
    pub fn account_path(&self, directory_url: &str) -> PathBuf {
        let hash = hex::encode(&Sha256::digest(directory_url.as_bytes())[..8]);
        self.dir.join(format!("account-{hash}.json"))
    }

    pub fn cert_paths(&self, hostname: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{hostname}.cert.pem")),
            self.dir.join(format!("{hostname}.key.pem")),
        )
    }

    /// The account's credentials (JSON), if cached.
    pub fn read_account(&self, directory_url: &str) -> Result<Option<Vec<u8>>, AcmeError> {
        read_if_there(&self.account_path(directory_url))
    }

    pub fn write_account(&self, directory_url: &str, json: &[u8]) -> Result<(), AcmeError> {
        write_private(&self.account_path(directory_url), json)
    }

    pub fn forget_account(&self, directory_url: &str) -> Result<(), AcmeError> {
        let path = self.account_path(directory_url);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(AcmeError::Cache { path, error: e })
            }
            _ => Ok(()),
        }
    }

    /// The cached certificate for `hostname`: `Ok(None)` if there is none, `Err` with the
    /// reason if what is there cannot be used.
    pub fn read_cert(
        &self,
        hostname: &str,
        provider: &CryptoProvider,
    ) -> Result<Option<Issued>, AcmeError> {
        let (cert, key) = self.cert_paths(hostname);
        let (Some(chain), Some(key_pem)) = (read_if_there(&cert)?, read_if_there(&key)?) else {
            return Ok(None);
        };
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        Issued::parse(text(chain), text(key_pem), hostname, provider)
            .map(Some)
            .map_err(|message| AcmeError::CachedCert {
                path: cert,
                message,
            })
    }

    /// Key first, then chain: a crash in between leaves a pair that does not match, which
    /// the next start refuses to use (and orders a new one).
    pub fn write_cert(&self, hostname: &str, issued: &Issued) -> Result<(), AcmeError> {
        let (cert, key) = self.cert_paths(hostname);
        write_private(&key, issued.key_pem.as_bytes())?;
        write_private(&cert, issued.chain_pem.as_bytes())
    }
}

fn read_if_there(path: &Path) -> Result<Option<Vec<u8>>, AcmeError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(AcmeError::Cache {
            path: path.to_owned(),
            error,
        }),
    }
}

/// Writes `bytes` to a 0600 temporary file beside `path`, then renames it over `path`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    let io = |error| AcmeError::Cache {
        path: path.to_owned(),
        error,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}
