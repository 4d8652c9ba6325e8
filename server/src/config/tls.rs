//! What the TLS keys ask for: headscale's `tls_cert_path` / `tls_key_path` (certificate
//! files) or `tls_letsencrypt_hostname` (ACME). Checked with the rest of the config, so a
//! TLS configuration that cannot be served stops the server before anything listens: it
//! never serves plain HTTP instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// headscale's default ACME directory: Let's Encrypt's production one.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How the ACME server is shown that this server answers for the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeType {
    /// A plain-HTTP GET of /.well-known/acme-challenge/<token> on `tls_letsencrypt_listen`
    /// (port 80 for a public CA).
    Http01,
    /// A TLS handshake with ALPN "acme-tls/1" on the main listener (port 443 for a public CA).
    TlsAlpn01,
}

/// What `tls_letsencrypt_*` and `acme_*` ask for, with oxiscale's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The DNS name the certificate is for (server_url's host).
    pub hostname: String,
    /// Account key, certificate and key (default `<data_dir>/acme`).
    pub cache_dir: PathBuf,
    pub challenge: ChallengeType,
    /// Where the HTTP-01 responder listens (headscale's default `:http`).
    pub http01_listen: SocketAddr,
    /// The ACME directory URL (`acme_url`).
    pub directory_url: String,
    pub email: Option<String>,
    /// An extra CA trusted for the ACME server's own certificate (tests: pebble).
    pub ca_file: Option<PathBuf>,
}

/// headscale's `tls_letsencrypt_listen` forms: `:http`, `:80`, `0.0.0.0:80`, `[::]:80`.
pub fn parse_listen(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    let (host, port) = text.rsplit_once(':')?;
    let port = match port {
        "http" => 80,
        "https" => 443,
        other => other.parse().ok()?,
    };
    let host = host.trim_matches(['[', ']']);
    let ip = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        host.parse().ok()?
    };
    Some(SocketAddr::new(ip, port))
}

fn invalid(key: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { key, message }
}

/// Where the main listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Plain HTTP (no TLS key set; a reverse proxy in front may terminate TLS).
    Off,
    /// A PEM certificate chain and its private key, reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate from an ACME server, cached and renewed.
    Acme(AcmeSettings),
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
            (None, None, Some(hostname)) => TlsSource::Acme(self.acme_settings(hostname)?),
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
                     tls_cert_path or tls_letsencrypt_hostname is set: clients would fail \
                     to connect",
                    self.server_url
                ),
            });
        }
        Ok(source)
    }

    fn acme_settings(&self, hostname: &str) -> Result<AcmeSettings, ConfigError> {
        let hostname = hostname.to_ascii_lowercase();
        if hostname.parse::<IpAddr>().is_ok()
            || !hostname.contains('.')
            || !hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid(
                "tls_letsencrypt_hostname",
                format!("{hostname:?} is not a DNS name an ACME server can issue for"),
            ));
        }
        let host = self.server_host().to_ascii_lowercase();
        if host != hostname {
            return Err(invalid(
                "tls_letsencrypt_hostname",
                format!(
                    "the certificate would be for {hostname}, but clients dial {host} \
                     (server_url {:?}) and would refuse it",
                    self.server_url
                ),
            ));
        }
        let challenge = match self
            .tls_letsencrypt_challenge_type
            .as_deref()
            .map(str::trim)
            .unwrap_or("")
            .to_ascii_uppercase()
            .as_str()
        {
            "" | "HTTP-01" => ChallengeType::Http01,
            "TLS-ALPN-01" => ChallengeType::TlsAlpn01,
            other => {
                return Err(invalid(
                    "tls_letsencrypt_challenge_type",
                    format!("{other:?} is not HTTP-01 or TLS-ALPN-01"),
                ));
            }
        };
        let listen = self
            .tls_letsencrypt_listen
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .unwrap_or(":http");
        let http01_listen = parse_listen(listen).ok_or_else(|| {
            invalid(
                "tls_letsencrypt_listen",
                format!("{listen:?} is not an address such as :http, :80 or 0.0.0.0:80"),
            )
        })?;
        let directory_url = self
            .acme_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .unwrap_or(LETS_ENCRYPT)
            .to_owned();
        if !directory_url.starts_with("https://") {
            return Err(invalid(
                "acme_url",
                format!("{directory_url:?} is not an https:// ACME directory URL"),
            ));
        }
        let cache_dir = match self
            .tls_letsencrypt_cache_dir
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            Some(dir) => PathBuf::from(dir),
            None => self.data_dir.join("acme"),
        };
        Ok(AcmeSettings {
            hostname,
            cache_dir,
            challenge,
            http01_listen,
            directory_url,
            email: self
                .acme_email
                .as_deref()
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
            ca_file: self.acme_ca_file.clone(),
        })
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
    fn acme_takes_headscales_keys_and_defaults() {
        let c = config("", "", "VPN.example.org");
        let TlsSource::Acme(a) = c.tls_source().unwrap() else {
            panic!("not ACME")
        };
        assert_eq!(a.hostname, "vpn.example.org");
        assert_eq!(a.challenge, ChallengeType::Http01);
        assert_eq!(a.http01_listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(a.directory_url, LETS_ENCRYPT);
        assert_eq!(a.cache_dir, c.data_dir.join("acme"));
        assert_eq!(a.email, None);

        let mut c = config("", "", "vpn.example.org");
        c.tls_letsencrypt_challenge_type = Some("TLS-ALPN-01".into());
        c.tls_letsencrypt_listen = Some("127.0.0.1:5002".into());
        c.tls_letsencrypt_cache_dir = Some("/var/lib/headscale/cache".into());
        c.acme_url = Some("https://127.0.0.1:14000/dir".into());
        c.acme_email = Some("admin@example.org".into());
        let TlsSource::Acme(a) = c.tls_source().unwrap() else {
            panic!("not ACME")
        };
        assert_eq!(a.challenge, ChallengeType::TlsAlpn01);
        assert_eq!(a.http01_listen, "127.0.0.1:5002".parse().unwrap());
        assert_eq!(a.cache_dir, PathBuf::from("/var/lib/headscale/cache"));
        assert_eq!(a.directory_url, "https://127.0.0.1:14000/dir");
        assert_eq!(a.email.as_deref(), Some("admin@example.org"));
    }

    #[test]
    fn acme_input_that_cannot_be_served_is_refused_naming_the_key() {
        let err = refusal(&config("/c.pem", "/k.pem", "vpn.example.org"));
        assert!(err.contains("not both"), "{err}");
        let err = refusal(&config("", "", "other.example.org"));
        assert!(
            err.contains("tls_letsencrypt_hostname")
                && err.contains("clients dial vpn.example.org"),
            "{err}"
        );
        let mut c = config("", "", "vpn.example.org");
        c.tls_letsencrypt_challenge_type = Some("DNS-01".into());
        assert!(refusal(&c).contains("tls_letsencrypt_challenge_type"));
        let mut c = config("", "", "vpn.example.org");
        c.tls_letsencrypt_listen = Some("port eighty".into());
        assert!(refusal(&c).contains("tls_letsencrypt_listen"));
        let mut c = config("", "", "vpn.example.org");
        c.acme_url = Some("http://acme.example/dir".into());
        assert!(refusal(&c).contains("acme_url"));
        let mut c = config("", "", "vpn.example.org");
        c.server_url = "http://vpn.example.org".into();
        assert!(refusal(&c).contains("server_url"));
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen(":http"), Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(parse_listen(":8080"), Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(parse_listen("[::]:80"), Some("[::]:80".parse().unwrap()));
        assert_eq!(parse_listen("80"), None);
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
