//! The ACME rules that need no ACME server: renewal dates, the cache's files and modes, and
//! which certificate a handshake gets. The conversation with a real ACME server (pebble) is
//! checked by end2end/clients/test_acme.py.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_rustls::rustls::crypto::ring::default_provider;

use super::cache::{Cache, Issued, renew_at, retry_delay};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn renewal_is_due_with_a_third_of_the_lifetime_left() {
    // Let's Encrypt: 90 days → renewed 60 days in.
    let day = 86_400;
    assert_eq!(renew_at(at(0), at(90 * day)), at(60 * day));
    // A 60 s pebble certificate: 40 s in.
    assert_eq!(renew_at(at(1000), at(1060)), at(1040));
    // Nonsense dates: due at once (at not_after).
    assert_eq!(renew_at(at(10), at(5)), at(5));
}

#[test]
fn a_failed_renewal_is_retried_well_before_expiry() {
    let day = 86_400;
    assert_eq!(retry_delay(at(0), at(30 * day)), Duration::from_secs(3600));
    assert_eq!(retry_delay(at(0), at(80)), Duration::from_secs(10));
    assert_eq!(retry_delay(at(0), at(8)), Duration::from_secs(5));
    assert_eq!(retry_delay(at(100), at(8)), Duration::from_secs(5));
}

fn self_signed(name: &str) -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

#[test]
fn the_cache_keeps_account_and_certificate_private_and_refuses_a_bad_pair() {
    let dir = std::env::temp_dir()
        .join(format!("oxiscale-acme-unit-{}", rand::random::<u64>()))
        .join("acme");
    let provider = default_provider();
    let cache = Cache::open(&dir).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);

    assert!(
        cache
            .read_cert("vpn.example.org", &provider)
            .unwrap()
            .is_none()
    );
    let (cert, key) = self_signed("vpn.example.org");
    let issued = Issued::parse(cert.clone(), key.clone(), "vpn.example.org", &provider).unwrap();
    assert!(issued.not_before < issued.not_after);
    assert!(!issued.serial.is_empty());
    cache.write_cert("vpn.example.org", &issued).unwrap();
    let back = cache
        .read_cert("vpn.example.org", &provider)
        .unwrap()
        .unwrap();
    assert_eq!(back.serial, issued.serial);
    assert_eq!(back.certified.cert, issued.certified.cert);
    let (cert_path, key_path) = cache.cert_paths("vpn.example.org");
    assert_eq!(mode(&cert_path), 0o600);
    assert_eq!(mode(&key_path), 0o600);

    cache
        .write_account("https://acme.example/dir", b"{}")
        .unwrap();
    assert_eq!(mode(&cache.account_path("https://acme.example/dir")), 0o600);
    assert_ne!(
        cache.account_path("https://acme.example/dir"),
        cache.account_path("https://other.example/dir"),
        "one account per ACME server"
    );

    // A certificate for another name, a key of another certificate: named, not used.
    let err = Issued::parse(cert.clone(), key.clone(), "other.example.org", &provider).unwrap_err();
    assert!(err.contains("not valid for other.example.org"), "{err}");
    let (_, other_key) = self_signed("vpn.example.org");
    let err = Issued::parse(cert, other_key.clone(), "vpn.example.org", &provider).unwrap_err();
    assert!(err.contains("does not belong"), "{err}");
    std::fs::write(&key_path, other_key).unwrap();
    let err = cache
        .read_cert("vpn.example.org", &provider)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot be used") && err.contains("does not belong"),
        "{err}"
    );

    // A loose existing directory is tightened.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    Cache::open(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    std::fs::remove_dir_all(dir.parent().unwrap()).ok();
}

/// A handshake offering "acme-tls/1" gets the challenge certificate (with the acmeIdentifier
/// extension), any other the certificate in force; with no challenge pending, no certificate.
#[tokio::test]
async fn validation_handshakes_get_the_challenge_certificate() {
    use tokio_rustls::rustls::{self, ClientConfig, ServerConfig};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    let provider = Arc::new(default_provider());
    let resolver = Arc::new(super::challenge::AcmeResolver::default());
    let (cert, key) = self_signed("vpn.example.org");
    let issued = Issued::parse(cert, key, "vpn.example.org", &provider).unwrap();
    resolver.set_current(issued.certified.clone());
    let digest = [7u8; 32];
    let challenge =
        super::challenge::tls_alpn01_certificate("vpn.example.org", &digest, &provider).unwrap();

    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    server.alpn_protocols = vec![b"http/1.1".to_vec(), b"acme-tls/1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(server));

    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    let served = |alpn: &'static [u8]| {
        let acceptor = acceptor.clone();
        let provider = provider.clone();
        async move {
            let (a, b) = tokio::io::duplex(64 * 1024);
            let server = tokio::spawn(async move { acceptor.accept(b).await.ok().map(|_| ()) });
            let mut client = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert))
                .with_no_client_auth();
            client.alpn_protocols = vec![alpn.to_vec()];
            let name = rustls::pki_types::ServerName::try_from("vpn.example.org").unwrap();
            let got = TlsConnector::from(Arc::new(client))
                .connect(name, a)
                .await
                .ok()
                .map(|tls| {
                    let (_, conn) = tls.get_ref();
                    (
                        conn.peer_certificates().unwrap()[0].clone(),
                        conn.alpn_protocol().map(<[u8]>::to_vec),
                    )
                });
            let _ = server.await;
            got
        }
    };

    let (leaf, alpn) = served(b"http/1.1").await.unwrap();
    assert_eq!(leaf, issued.certified.cert[0]);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(
        served(b"acme-tls/1").await.is_none(),
        "no challenge pending: no certificate"
    );
    resolver
        .pending
        .set_tls_alpn01("VPN.example.org", challenge.clone());
    let (leaf, alpn) = served(b"acme-tls/1").await.unwrap();
    assert_eq!(leaf, challenge.cert[0]);
    assert_eq!(alpn.as_deref(), Some(&b"acme-tls/1"[..]));
    // The acmeIdentifier extension (1.3.6.1.5.5.7.1.31) carries the digest.
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    let ext = parsed
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .expect("acmeIdentifier extension");
    assert!(ext.critical);
    assert!(ext.value.ends_with(&digest));
    resolver.pending.clear();
    assert!(served(b"acme-tls/1").await.is_none());
    let (leaf, _) = served(b"http/1.1").await.unwrap();
    assert_eq!(leaf, issued.certified.cert[0]);
}
