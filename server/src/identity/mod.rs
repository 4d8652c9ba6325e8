//! Sign-in through the organisation's OpenID Connect provider (authorization code flow with
//! state, nonce and PKCE S256). This module is the relying party; `routes` puts it on the
//! web, `restrictions` decides who may come in, `pending` keeps sign-ins in flight.
//!
//! A person is (issuer, subject): the tailnet finds them again by that pair whatever their
//! email or name becomes (`State::sign_in_user`).
//!
//! The provider in force sits in an [`OidcHandle`] that the settings (`admin::identity`) swap
//! at run time.

pub mod handle;
pub mod pages;
pub mod pending;
pub mod restrictions;
pub mod routes;

use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::config::OidcConfig;
use crate::config::oidc::PkceMethod;
use crate::tailnet::state::ProviderProfile;
pub use handle::{OidcHandle, Provider};
use pending::{Full, ShortLived};
use restrictions::{Refusal, Restrictions};

/// How long a person may take at the provider before the sign-in is void.
const SIGN_IN_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Sign-ins in flight at once; anyone can start one.
const SIGN_INS_IN_FLIGHT: usize = 10_000;
/// A verified console sign-in must be picked up by the console this soon.
const HANDOVER_LIFETIME: Duration = Duration::from_secs(60);
/// The provider's token and user-info endpoints must answer within this.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What a sign-in was started for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A machine's pending login (`/register/{auth_id}`).
    Device { auth_id: String },
    /// Console sign-in; `next` is where to go afterwards (checked before use).
    Console { next: String },
}

/// A sign-in sent to the provider, waiting for the browser to come back.
struct InFlight {
    purpose: Purpose,
    nonce: String,
    pkce_verifier: Option<String>,
}

/// The provider's verdict on a person, after every check.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub purpose: Purpose,
    pub profile: ProviderProfile,
    /// When the ID token expires (for `use_expiry_from_token`).
    pub token_expiry: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(
        "this sign-in link is unknown, was already used or has expired; start again from your device"
    )]
    UnknownState,
    #[error("this sign-in was started in another browser; start again from your device")]
    ForeignBrowser,
    #[error("the identity provider refused: {0}")]
    ProviderSaid(String),
    #[error("the identity provider could not be reached: {0}")]
    ProviderUnreachable(String),
    #[error("the identity provider's answer failed verification: {0}")]
    Verification(String),
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Busy(#[from] Full),
}

/// Groups as most providers send them: a list of names (Keycloak, Authentik, Entra with
/// group names configured, Okta with a groups claim, Zitadel via an action, Dex).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct GroupsClaim {
    #[serde(default, deserialize_with = "groups_list")]
    groups: Vec<String>,
}

impl AdditionalClaims for GroupsClaim {}

/// A list of strings, a single string, or anything else (ignored rather than failing a
/// sign-in over a claim the policy may not even use).
fn groups_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(match value {
        serde_json::Value::String(s) => vec![s],
        serde_json::Value::Array(items) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .take(256)
            .collect(),
        _ => Vec::new(),
    })
}

pub struct Oidc {
    client: Client,
    http: reqwest::Client,
    issuer: String,
    config: OidcConfig,
    restrictions: Restrictions,
    in_flight: ShortLived<InFlight>,
    /// Verified console sign-ins on their way from the callback to the console's session.
    handovers: ShortLived<SignedIn>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("oidc.issuer {issuer:?}: {message}")]
    Issuer { issuer: String, message: String },
    #[error("oidc.client_secret_path: {0}")]
    Secret(String),
}

impl Oidc {
    /// Discovers the provider (`<issuer>/.well-known/openid-configuration` and its keys).
    pub async fn discover(config: &OidcConfig, server_url: &str) -> Result<Oidc, DiscoveryError> {
        let issuer = config.issuer.clone().unwrap_or_default();
        let bad_issuer = |message: String| DiscoveryError::Issuer {
            issuer: issuer.clone(),
            message,
        };
        // No redirects: a provider's endpoints are named by its metadata, and following
        // redirects from a token endpoint is a server-side request forgery waiting to happen.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .map_err(|e| bad_issuer(format!("cannot build an HTTP client: {e}")))?;
        let issuer_url =
            IssuerUrl::new(issuer.clone()).map_err(|e| bad_issuer(format!("not a URL: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer_url, &http)
            .await
            .map_err(|e| bad_issuer(format!("discovery failed: {}", error_chain(&e))))?;
        let secret = config
            .secret()
            .map_err(|e| DiscoveryError::Secret(e.to_string()))?;
        let redirect = RedirectUrl::new(format!(
            "{}/oidc/callback",
            server_url.trim_end_matches('/')
        ))
        .map_err(|e| bad_issuer(format!("server_url does not make a redirect URL: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone().unwrap_or_default()),
            secret.map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        if config.pkce.enabled && config.pkce.method == PkceMethod::Plain {
            warn!(
                "oidc.pkce.method plain is not offered; S256 is used (every provider that knows PKCE supports it)"
            );
        }
        info!(issuer, "OpenID Connect provider discovered");
        Ok(Oidc {
            client,
            http,
            issuer,
            config: config.clone(),
            restrictions: Restrictions::from_config(config),
            in_flight: ShortLived::new(SIGN_IN_LIFETIME, SIGN_INS_IN_FLIGHT),
            handovers: ShortLived::new(HANDOVER_LIFETIME, SIGN_INS_IN_FLIGHT),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Keeps a verified console sign-in for the console to pick up with the returned token
    /// (which travels in a cookie, never in a URL).
    pub fn hand_over(&self, signed: SignedIn) -> Result<String, Full> {
        let token = crate::tailnet::secret::random_token();
        self.handovers
            .insert(token.clone(), signed, Instant::now())?;
        Ok(token)
    }

    /// The sign-in handed over under `token`, once.
    pub fn take_handover(&self, token: &str) -> Option<SignedIn> {
        self.handovers.take(token, Instant::now())
    }

    /// Starts a sign-in: the provider URL to send the browser to, and the state that the
    /// browser must bring back (also set as a cookie, binding the sign-in to this browser).
    pub fn start(&self, purpose: Purpose) -> Result<(openidconnect::url::Url, String), Full> {
        let mut request = self.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in self.config.scope.iter().filter(|s| s.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        for (name, value) in &self.config.extra_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let pkce_verifier = if self.config.pkce.enabled {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            request = request.set_pkce_challenge(challenge);
            Some(verifier.secret().clone())
        } else {
            None
        };
        let (url, state, nonce) = request.url();
        self.in_flight.insert(
            state.secret().clone(),
            InFlight {
                purpose,
                nonce: nonce.secret().clone(),
                pkce_verifier,
            },
            Instant::now(),
        )?;
        Ok((url, state.secret().clone()))
    }

    /// Finishes a sign-in the provider sent back: the state must be one this server issued
    /// to this browser (`cookie`), unused and fresh; the code is exchanged and the ID token
    /// verified (signature, issuer, audience, nonce, expiry); the person must pass the
    /// restrictions.
    pub async fn finish(
        &self,
        state: &str,
        cookie: Option<&str>,
        code: &str,
    ) -> Result<SignedIn, SignInError> {
        if !cookie.is_some_and(|c| crate::tailnet::secret::tokens_equal(c, state)) {
            // Not taken: the browser that started it may still come back with it.
            return Err(SignInError::ForeignBrowser);
        }
        let flight = self
            .in_flight
            .take(state, Instant::now())
            .ok_or(SignInError::UnknownState)?;
        let mut exchange = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SignInError::Verification(format!("no token endpoint: {e}")))?;
        if let Some(verifier) = flight.pkce_verifier {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(verifier));
        }
        let token = exchange.request_async(&self.http).await.map_err(|e| {
            use openidconnect::RequestTokenError;
            match e {
                RequestTokenError::ServerResponse(r) => SignInError::ProviderSaid(r.to_string()),
                RequestTokenError::Request(e) => SignInError::ProviderUnreachable(error_chain(&e)),
                other => SignInError::Verification(error_chain(&other)),
            }
        })?;
        let id_token = token
            .id_token()
            .ok_or_else(|| SignInError::Verification("the provider sent no ID token".into()))?;
        let verifier = self.client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(flight.nonce))
            .map_err(|e| SignInError::Verification(error_chain(&e)))?;
        let groups = verified_groups(&id_token.to_string());

        let mut profile = ProviderProfile {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()).unwrap_or_default(),
            display_name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string())
                .unwrap_or_default(),
            preferred_username: claims
                .preferred_username()
                .map(|u| u.to_string())
                .unwrap_or_default(),
            picture_url: claims
                .picture()
                .and_then(|p| p.get(None))
                .map(|p| p.to_string())
                .unwrap_or_default(),
            groups,
        };
        let mut email_verified = claims.email_verified();
        let token_expiry = OffsetDateTime::from_unix_timestamp(claims.expiration().timestamp())
            .map_err(|e| SignInError::Verification(format!("token expiry: {e}")))?;

        // Providers that keep claims out of the ID token (groups above all) give them at
        // the user-info endpoint; what the ID token said wins.
        if let Ok(request) = self
            .client
            .user_info(token.access_token().clone(), Some(claims.subject().clone()))
        {
            match request.request_async(&self.http).await {
                Ok(info) => {
                    let info: UserInfoClaims<GroupsClaim, CoreGenderClaim> = info;
                    merge_user_info(&mut profile, &mut email_verified, &info);
                }
                Err(e) => {
                    warn!(issuer = %self.issuer, error = %error_chain(&e), "user info not available; using the ID token's claims")
                }
            }
        }
        self.restrictions.check(&profile, email_verified)?;
        Ok(SignedIn {
            purpose: flight.purpose,
            profile,
            token_expiry,
        })
    }
}

/// Fills what the ID token left out from the user-info answer.
fn merge_user_info(
    profile: &mut ProviderProfile,
    email_verified: &mut Option<bool>,
    info: &UserInfoClaims<GroupsClaim, CoreGenderClaim>,
) {
    if profile.email.is_empty()
        && let Some(email) = info.email()
    {
        profile.email = email.to_string();
        *email_verified = info.email_verified();
    }
    if profile.display_name.is_empty()
        && let Some(name) = info.name().and_then(|n| n.get(None))
    {
        profile.display_name = name.to_string();
    }
    if profile.preferred_username.is_empty()
        && let Some(username) = info.preferred_username()
    {
        profile.preferred_username = username.to_string();
    }
    if profile.picture_url.is_empty()
        && let Some(picture) = info.picture().and_then(|p| p.get(None))
    {
        profile.picture_url = picture.to_string();
    }
    if profile.groups.is_empty() {
        profile.groups = info.additional_claims().groups.clone();
    }
}

/// The `groups` claim of an ID token whose signature `claims()` has just verified: its
/// payload is the signed bytes, so reading the claim from it is reading verified data.
/// (The core client type has no slot for extra ID-token claims.)
fn verified_groups(jwt: &str) -> Vec<String> {
    use base64::Engine;
    let Some(payload) = jwt.split('.').nth(1) else {
        return Vec::new();
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<GroupsClaim>(&bytes).ok())
        .map(|c| c.groups)
        .unwrap_or_default()
}

/// An error with its causes, for logs and pages ("discovery failed: request failed: …").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_come_as_lists_or_single_strings() {
        use base64::Engine;
        let jwt = |payload: &str| {
            format!(
                "h.{}.s",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload)
            )
        };
        assert_eq!(
            verified_groups(&jwt(r#"{"groups":["eng","ops",7]}"#)),
            vec!["eng", "ops"]
        );
        assert_eq!(verified_groups(&jwt(r#"{"groups":"eng"}"#)), vec!["eng"]);
        assert!(verified_groups(&jwt(r#"{"groups":{"a":1}}"#)).is_empty());
        assert!(verified_groups(&jwt(r#"{}"#)).is_empty());
        assert!(verified_groups("not a jwt").is_empty());
    }

    #[test]
    fn a_state_from_another_browser_is_refused() {
        assert!(crate::tailnet::secret::tokens_equal("abc", "abc"));
        assert!(!crate::tailnet::secret::tokens_equal("abc", "abd"));
        assert!(!crate::tailnet::secret::tokens_equal("abc", "abcd"));
    }
}
