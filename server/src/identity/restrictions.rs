//! Who may sign in: `oidc.allowed_domains`, `allowed_users`, `allowed_groups` and
//! `email_verified_required`, with headscale's meanings (every configured filter must pass).

use crate::config::OidcConfig;
use crate::tailnet::state::ProviderProfile;

#[derive(Debug, Clone, Default)]
pub struct Restrictions {
    domains: Vec<String>,
    users: Vec<String>,
    groups: Vec<String>,
    email_verified_required: bool,
}

/// Why a person was refused; shown to them and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("your identity provider has not verified your email address {0}")]
    EmailNotVerified(String),
    #[error(
        "this tailnet admits only people with an email address at {allowed}; you signed in as {email}"
    )]
    DomainNotAllowed { email: String, allowed: String },
    #[error("your account ({0}) is not among the people allowed to join this tailnet")]
    UserNotAllowed(String),
    #[error("you are not in a group allowed to join this tailnet (allowed: {allowed})")]
    NotInAllowedGroup { allowed: String },
}

impl Restrictions {
    pub fn from_config(c: &OidcConfig) -> Restrictions {
        let lower = |v: &[String]| v.iter().map(|s| s.trim().to_lowercase()).collect();
        Restrictions {
            domains: lower(&c.allowed_domains),
            users: lower(&c.allowed_users),
            groups: c.allowed_groups.clone(),
            email_verified_required: c.email_verified_required,
        }
    }

    /// Checks a person; `email_verified` is what the provider said (absent: not said).
    pub fn check(&self, p: &ProviderProfile, email_verified: Option<bool>) -> Result<(), Refusal> {
        let email = p.email.trim().to_lowercase();
        let shown = if email.is_empty() {
            "an account without an email address".to_owned()
        } else {
            email.clone()
        };
        // Without an email there is nothing to verify; filters that need one refuse below.
        if self.email_verified_required && !email.is_empty() && email_verified != Some(true) {
            return Err(Refusal::EmailNotVerified(email));
        }
        if !self.domains.is_empty() {
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
            if email.is_empty() || !self.domains.iter().any(|d| d == domain) {
                return Err(Refusal::DomainNotAllowed {
                    email: shown,
                    allowed: self.domains.join(", "),
                });
            }
        }
        if !self.users.is_empty() && (email.is_empty() || !self.users.contains(&email)) {
            return Err(Refusal::UserNotAllowed(shown));
        }
        if !self.groups.is_empty() && !p.groups.iter().any(|g| self.groups.contains(g)) {
            return Err(Refusal::NotInAllowedGroup {
                allowed: self.groups.join(", "),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(email: &str, groups: &[&str]) -> ProviderProfile {
        ProviderProfile {
            issuer: "https://id.example.com".into(),
            subject: "1".into(),
            email: email.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    fn restrictions(f: impl FnOnce(&mut OidcConfig)) -> Restrictions {
        let mut c = OidcConfig::default();
        f(&mut c);
        Restrictions::from_config(&c)
    }

    #[test]
    fn no_filters_admit_anyone_with_a_verified_email() {
        let r = restrictions(|_| {});
        assert_eq!(r.check(&person("a@x.org", &[]), Some(true)), Ok(()));
        assert!(matches!(
            r.check(&person("a@x.org", &[]), Some(false)),
            Err(Refusal::EmailNotVerified(_))
        ));
        assert!(matches!(
            r.check(&person("a@x.org", &[]), None),
            Err(Refusal::EmailNotVerified(_))
        ));
        // Nothing to verify without an email.
        assert_eq!(r.check(&person("", &[]), None), Ok(()));
        let lax = restrictions(|c| c.email_verified_required = false);
        assert_eq!(lax.check(&person("a@x.org", &[]), Some(false)), Ok(()));
    }

    #[test]
    fn domains_and_users_are_compared_without_case() {
        let r = restrictions(|c| c.allowed_domains = vec!["Example.com".into()]);
        assert_eq!(
            r.check(&person("Alice@EXAMPLE.com", &[]), Some(true)),
            Ok(())
        );
        assert!(matches!(
            r.check(&person("mallory@evil.test", &[]), Some(true)),
            Err(Refusal::DomainNotAllowed { .. })
        ));
        // A look-alike domain is not the domain.
        assert!(
            r.check(&person("a@notexample.com", &[]), Some(true))
                .is_err()
        );
        assert!(r.check(&person("", &[]), None).is_err());
        let r = restrictions(|c| c.allowed_users = vec!["alice@example.com".into()]);
        assert_eq!(
            r.check(&person("ALICE@example.com", &[]), Some(true)),
            Ok(())
        );
        assert_eq!(
            r.check(&person("bob@example.com", &[]), Some(true)),
            Err(Refusal::UserNotAllowed("bob@example.com".into()))
        );
    }

    #[test]
    fn one_allowed_group_is_enough_and_every_filter_must_pass() {
        let r = restrictions(|c| {
            c.allowed_groups = vec!["engineering".into(), "ops".into()];
            c.allowed_domains = vec!["example.com".into()];
        });
        assert_eq!(
            r.check(&person("a@example.com", &["sales", "ops"]), Some(true)),
            Ok(())
        );
        assert!(matches!(
            r.check(&person("a@example.com", &["sales"]), Some(true)),
            Err(Refusal::NotInAllowedGroup { .. })
        ));
        assert!(matches!(
            r.check(&person("a@evil.test", &["ops"]), Some(true)),
            Err(Refusal::DomainNotAllowed { .. })
        ));
    }
}
