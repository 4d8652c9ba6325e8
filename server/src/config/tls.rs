//! What the TLS keys ask for: headscale's `tls_cert_path` / `tls_key_path` (certificate
//! files) or `tls_letsencrypt_hostname` (ACME). Checked with the rest of the config, so a
//! TLS configuration that cannot be served stops the server before anything listens: it
//! never serves plain HTTP instead.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// Where the main listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Plain HTTP (no TLS key set; a reverse proxy in front may terminate TLS).
    Off,
    /// A PEM certificate chain and its private key, reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
}

/// A path key left empty (headscale's example files have `tls_cert_path: ""`) asks for
/// nothing.
fn given(path: &Option<PathBuf>) -> Option<&Path> {
    path.as_deref().filter(|p| !p.as_os_str().is_empty())
}

impl Config {
    /// The certificate source the TLS keys ask for, or why they cannot be served.
    pub fn tls_source(&self) -> Result<TlsSource, ConfigError> {
        let acme = self
            .tls_letsencrypt_hostname
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty());
        let source = match (given(&self.tls_cert_path), given(&self.tls_key_path), acme) {
            (None, None, None) => return Ok(TlsSource::Off),
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "tls_letsencrypt_hostname",
                    message: "set either tls_cert_path and tls_key_path (certificate files) or \
                              tls_letsencrypt_hostname (ACME), not both"
                        .into(),
                });
            }
            (None, None, Some(hostname)) => {
                // Another listener type will plug in here; until then, refuse rather than
                // serve plain HTTP to clients that were told https.
                return Err(ConfigError::Invalid {
                    key: "tls_letsencrypt_hostname",
                    message: format!(
                        "{hostname:?}: ACME is not supported yet; set tls_cert_path and \
                         tls_key_path to a certificate and its key instead"
                    ),
                });
            }
            (Some(_), None, None) => {
                return Err(ConfigError::Invalid {
                    key: "tls_key_path",
                    message: "tls_cert_path is set but tls_key_path is not; both are needed \
                              to serve HTTPS"
                        .into(),
                });
            }
            (None, Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: "tls_cert_path",
                    message: "tls_key_path is set but tls_cert_path is not; both are needed \
                              to serve HTTPS"
                        .into(),
                });
            }
            (Some(cert), Some(key), None) => TlsSource::Files {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
        };
        if !self.server_url.starts_with("https://") {
            return Err(ConfigError::Invalid {
                key: "server_url",
                message: format!(
                    "{:?} is not https://, but the listener serves only HTTPS when \
                     tls_cert_path is set: clients would fail to connect",
                    self.server_url
                ),
            });
        }
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cert: &str, key: &str, acme: &str) -> Config {
        Config {
            server_url: "https://vpn.example.org".into(),
            tls_cert_path: Some(cert.into()),
            tls_key_path: Some(key.into()),
            tls_letsencrypt_hostname: Some(acme.into()),
            ..Config::default()
        }
    }

    fn refusal(c: &Config) -> String {
        c.tls_source().unwrap_err().to_string()
    }

    #[test]
    fn headscale_example_values_ask_for_nothing() {
        assert_eq!(config("", "", "").tls_source().unwrap(), TlsSource::Off);
        assert_eq!(Config::default().tls_source().unwrap(), TlsSource::Off);
    }

    #[test]
    fn both_files_are_served() {
        assert_eq!(
            config("/c.pem", "/k.pem", "").tls_source().unwrap(),
            TlsSource::Files {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            }
        );
    }

    #[test]
    fn one_file_alone_is_refused_naming_the_missing_key() {
        let err = refusal(&config("/c.pem", "", ""));
        assert!(
            err.contains("tls_key_path") && err.contains("both"),
            "{err}"
        );
        let err = refusal(&config("", "/k.pem", ""));
        assert!(
            err.contains("tls_cert_path") && err.contains("both"),
            "{err}"
        );
    }

    #[test]
    fn acme_is_refused_until_it_is_supported() {
        let err = refusal(&config("", "", "vpn.example.org"));
        assert!(err.contains("ACME is not supported yet"), "{err}");
        let err = refusal(&config("/c.pem", "/k.pem", "vpn.example.org"));
        assert!(err.contains("not both"), "{err}");
    }

    /// As headscale does: relative paths are read from the config file's directory.
    #[test]
    fn relative_paths_are_read_from_the_config_files_directory() {
        let dir = std::env::temp_dir().join(format!("oxiscale-tls-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(
            &path,
            "server_url: https://vpn.example.org\ntls_cert_path: certs/fullchain.pem\ntls_key_path: /etc/k.pem\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), std::iter::empty()).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(
            c.tls_source().unwrap(),
            TlsSource::Files {
                cert: dir.join("certs/fullchain.pem"),
                key: "/etc/k.pem".into()
            }
        );
        assert!(c.ignored_keys().is_empty(), "{:?}", c.ignored_keys());
    }

    #[test]
    fn files_with_a_plain_http_server_url_are_refused() {
        let mut c = config("/c.pem", "/k.pem", "");
        c.server_url = "http://vpn.example.org".into();
        let err = refusal(&c);
        assert!(err.contains("server_url") && err.contains("https"), "{err}");
    }
}
