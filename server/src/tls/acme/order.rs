//! One conversation with the ACME server (RFC 8555) through instant-acme: the account
//! (cached, else created), then an order for the hostname: the chosen challenge answered,
//! a CSR for a fresh key, the issued chain. Every request is bounded (the HTTP client's
//! timeouts) and so is the whole order (the caller's).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tracing::info;

use super::challenge::{Pending, tls_alpn01_certificate};
use super::{AcmeError, cache::Cache, cause};
use crate::config::{AcmeSettings, ChallengeType};

/// The ACME server no longer knows the cached account (deactivated, or a test server that
/// forgot it on restart).
const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// Per request to the ACME server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the ACME server may take to validate, and then to issue.
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

/// instant-acme's requests through reqwest (rustls with ring, the public roots, and the
/// `acme_ca_file` CA if set).
struct Reqwest(reqwest::Client);

pub fn http_client(settings: &AcmeSettings) -> Result<Box<dyn HttpClient>, AcmeError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|e| AcmeError::CaFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| AcmeError::CaFile {
            path: path.clone(),
            message: e.to_string(),
        })? {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|e| AcmeError::Client { message: cause(&e) })?;
    Ok(Box::new(Reqwest(client)))
}

impl HttpClient for Reqwest {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let rsp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(cause(&e).into()))?;
            let mut out = http::Response::builder().status(rsp.status());
            if let Some(headers) = out.headers_mut() {
                *headers = rsp.headers().clone();
            }
            let bytes = rsp
                .bytes()
                .await
                .map_err(|e| instant_acme::Error::Other(cause(&e).into()))?;
            let rsp = out.body(Full::new(bytes))?;
            Ok(BytesResponse::from(rsp))
        })
    }
}

/// The account for `settings.directory_url`: restored from the cache, else created (and
/// cached).
pub async fn account(settings: &AcmeSettings, cache: &Cache) -> Result<Account, AcmeError> {
    let url = &settings.directory_url;
    let unreachable = |e: instant_acme::Error| AcmeError::Directory {
        url: url.clone(),
        message: cause(&e),
    };
    if let Some(json) = cache.read_account(url)? {
        match serde_json::from_slice::<AccountCredentials>(&json) {
            Ok(credentials) => {
                return Account::builder_with_http(http_client(settings)?)
                    .from_credentials(credentials)
                    .await
                    .map_err(unreachable);
            }
            Err(e) => tracing::warn!(
                path = %cache.account_path(url).display(),
                error = %e,
                "the cached ACME account cannot be read; creating a new one"
            ),
        }
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http_client(settings)?)
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            url.clone(),
            None,
        )
        .await
        .map_err(unreachable)?;
    let json = serde_json::to_vec(&credentials).map_err(|e| AcmeError::Protocol {
        step: "saving the account",
        message: e.to_string(),
    })?;
    cache.write_account(url, &json)?;
    info!(directory = %url, account = account.id(), "ACME account created");
    Ok(account)
}

/// The chain (PEM) and its new key (PEM) for `settings.hostname`.
pub async fn order(
    account: &Account,
    settings: &AcmeSettings,
    pending: &Pending,
    provider: &Arc<CryptoProvider>,
) -> Result<(String, String), AcmeError> {
    let result = order_inner(account, settings, pending, provider).await;
    pending.clear();
    result
}

fn protocol(step: &'static str) -> impl Fn(instant_acme::Error) -> AcmeError {
    move |e| AcmeError::Protocol {
        step,
        message: cause(&e),
    }
}

fn challenge_name(kind: ChallengeType) -> &'static str {
    match kind {
        ChallengeType::Http01 => "HTTP-01",
        ChallengeType::TlsAlpn01 => "TLS-ALPN-01",
    }
}

async fn order_inner(
    account: &Account,
    settings: &AcmeSettings,
    pending: &Pending,
    provider: &Arc<CryptoProvider>,
) -> Result<(String, String), AcmeError> {
    let hostname = &settings.hostname;
    let identifiers = [Identifier::Dns(hostname.clone())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| match &e {
            instant_acme::Error::Api(problem)
                if problem.r#type.as_deref() == Some(ACCOUNT_DOES_NOT_EXIST) =>
            {
                AcmeError::AccountGone { message: cause(&e) }
            }
            _ => protocol("creating the order")(e),
        })?;
    let kind = match settings.challenge {
        ChallengeType::Http01 => instant_acme::ChallengeType::Http01,
        ChallengeType::TlsAlpn01 => instant_acme::ChallengeType::TlsAlpn01,
    };
    {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(protocol("fetching the authorization"))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Protocol {
                        step: "fetching the authorization",
                        message: format!("the authorization is {other:?}"),
                    });
                }
            }
            let mut challenge =
                authorization
                    .challenge(kind.clone())
                    .ok_or(AcmeError::ChallengeNotOffered {
                        challenge: challenge_name(settings.challenge),
                    })?;
            let key_authorization = challenge.key_authorization();
            match settings.challenge {
                ChallengeType::Http01 => pending.set_http01(
                    challenge.token.clone(),
                    key_authorization.as_str().to_owned(),
                ),
                ChallengeType::TlsAlpn01 => {
                    let cert = tls_alpn01_certificate(
                        hostname,
                        key_authorization.digest().as_ref(),
                        provider,
                    )
                    .map_err(|message| AcmeError::Protocol {
                        step: "making the TLS-ALPN-01 certificate",
                        message,
                    })?;
                    pending.set_tls_alpn01(hostname, cert);
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(protocol("answering the challenge"))?;
        }
    }
    let polling = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(POLL_TIMEOUT);
    let ready = order.poll_ready(&polling).await;
    if !matches!(ready, Ok(OrderStatus::Ready)) {
        // Say why: the ACME server's word on the challenge is the useful part.
        let mut reasons = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(authorization)) = authorizations.next().await {
            for c in &authorization.challenges {
                if let Some(problem) = &c.error {
                    reasons.push(problem.to_string());
                }
            }
        }
        if reasons.is_empty() {
            reasons.push(match ready {
                Ok(status) => format!("the order is {status:?}"),
                Err(e) => cause(&e),
            });
        }
        return Err(AcmeError::Validation {
            hostname: hostname.clone(),
            challenge: challenge_name(settings.challenge),
            message: reasons.join("; "),
        });
    }
    let mut params =
        rcgen::CertificateParams::new(vec![hostname.clone()]).map_err(|e| AcmeError::Protocol {
            step: "making the CSR",
            message: e.to_string(),
        })?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Protocol {
        step: "making the key",
        message: e.to_string(),
    })?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AcmeError::Protocol {
            step: "making the CSR",
            message: e.to_string(),
        })?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(protocol("finalizing the order"))?;
    let chain = order
        .poll_certificate(&polling)
        .await
        .map_err(protocol("fetching the certificate"))?;
    Ok((chain, key.serialize_pem()))
}
