//! The certificate-file rules: what loads, what is refused and why, what a reload keeps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::ServerName;

use super::TlsError;
use super::files::{CertFiles, FileResolver, Reloaded, load, validity_problem};

struct Pair {
    cert: String,
    key: String,
}

fn self_signed(names: &[&str]) -> Pair {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    Pair {
        cert: made.cert.pem(),
        key: made.signing_key.serialize_pem(),
    }
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("oxiscale-tls-unit-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, cert: &str, key: &str) -> CertFiles {
    let files = CertFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    files
}

fn host(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}

fn loaded(files: &CertFiles, name: &str) -> Result<(), TlsError> {
    load(files, &host(name), &default_provider()).map(|_| ())
}

#[test]
fn a_matching_pair_for_the_host_loads() {
    let d = dir();
    let p = self_signed(&["127.0.0.1", "vpn.example.org"]);
    let files = write(&d, &p.cert, &p.key);
    loaded(&files, "127.0.0.1").unwrap();
    loaded(&files, "vpn.example.org").unwrap();
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_certificate_for_another_name_is_refused_naming_both() {
    let d = dir();
    let p = self_signed(&["other.example"]);
    let files = write(&d, &p.cert, &p.key);
    let err = loaded(&files, "vpn.example.org").unwrap_err().to_string();
    assert!(
        err.contains("not valid for vpn.example.org") && err.contains("other.example"),
        "{err}"
    );
    let err = loaded(&files, "127.0.0.1").unwrap_err().to_string();
    assert!(err.contains("not valid for 127.0.0.1"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let d = dir();
    let (a, b) = (self_signed(&["127.0.0.1"]), self_signed(&["127.0.0.1"]));
    let files = write(&d, &a.cert, &b.key);
    let err = loaded(&files, "127.0.0.1").unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("does not belong"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn missing_empty_and_swapped_files_are_named() {
    let d = dir();
    let p = self_signed(&["127.0.0.1"]);
    let files = write(&d, &p.cert, &p.cert);
    let err = loaded(&files, "127.0.0.1").unwrap_err();
    assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    let files = write(&d, "not a certificate\n", &p.key);
    let err = loaded(&files, "127.0.0.1").unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    std::fs::remove_file(&files.key).unwrap();
    std::fs::write(&files.cert, &p.cert).unwrap();
    let err = loaded(&files, "127.0.0.1").unwrap_err().to_string();
    assert!(
        err.contains("cannot read the TLS key file") && err.contains("key.pem"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_reload_swaps_a_good_pair_and_keeps_the_old_one_otherwise() {
    let d = dir();
    let first = self_signed(&["127.0.0.1"]);
    let files = write(&d, &first.cert, &first.key);
    let resolver = FileResolver::open(
        files.clone(),
        host("127.0.0.1"),
        Arc::new(default_provider()),
    )
    .unwrap();
    let before = resolver.current();
    assert_eq!(resolver.reload().unwrap(), Reloaded::Unchanged);

    let second = self_signed(&["127.0.0.1"]);
    write(&d, &second.cert, &first.key);
    assert!(
        resolver.reload().is_err(),
        "a half-replaced pair is refused"
    );
    assert_eq!(resolver.current().cert, before.cert, "the old one stays");

    write(&d, &second.cert, &second.key);
    assert_eq!(resolver.reload().unwrap(), Reloaded::Changed);
    assert_ne!(resolver.current().cert, before.cert);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn dates_outside_the_validity_period_are_named() {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let at = |secs| {
        validity_problem(
            cert.der(),
            &default_provider(),
            tokio_rustls::rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(secs),
            ),
        )
    };
    assert_eq!(
        at(1_500_000_000).unwrap(),
        "is not valid before 2020-01-01T00:00:00Z"
    );
    assert_eq!(at(1_600_000_000), None);
    assert_eq!(
        at(1_700_000_000).unwrap(),
        "expired at 2021-01-01T00:00:00Z"
    );
}
