//! People who sign in through an identity provider: found again by (issuer, subject), created
//! on first sign-in with a name that never collides, refreshed from the claims each time.

use time::OffsetDateTime;

use super::super::effects::{DbOp, Effects};
use super::super::model::{ProviderIdentity, User};
use super::validate::validate_user_name;
use super::{State, TailnetError};

/// What the provider asserted about a person at sign-in (already verified and allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderProfile {
    pub issuer: String,
    pub subject: String,
    pub email: String,
    pub display_name: String,
    pub preferred_username: String,
    pub picture_url: String,
    pub groups: Vec<String>,
}

impl ProviderProfile {
    fn identity(&self) -> ProviderIdentity {
        ProviderIdentity {
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
        }
    }

    /// The user name to start from: the provider's username, else the email's local part.
    fn wanted_name(&self) -> String {
        let source = if !self.preferred_username.trim().is_empty() {
            self.preferred_username.trim()
        } else {
            self.email.split('@').next().unwrap_or_default().trim()
        };
        let name: String = source
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.@+".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let name = name.trim_start_matches(['-', '.']);
        let name: String = name.chars().take(50).collect();
        if name.is_empty() {
            "user".to_owned()
        } else {
            name
        }
    }
}

impl State {
    pub fn user_by_provider(&self, issuer: &str, subject: &str) -> Option<&User> {
        self.users.values().find(|u| {
            u.provider
                .as_ref()
                .is_some_and(|p| p.issuer == issuer && p.subject == subject)
        })
    }

    /// The user a provider sign-in belongs to: the one with this (issuer, subject), its
    /// email, display name, picture and groups refreshed; or a new user whose name is made
    /// unique. A name is never taken over: a local user called "alice" stays separate from
    /// the provider's "alice", who becomes "alice-2".
    pub fn sign_in_user(
        &mut self,
        fx: &mut Effects,
        profile: &ProviderProfile,
        now: OffsetDateTime,
    ) -> Result<User, TailnetError> {
        if profile.subject.is_empty() || profile.issuer.is_empty() {
            return Err(TailnetError::Invalid(
                "the identity provider named no subject".into(),
            ));
        }
        if let Some(id) = self
            .user_by_provider(&profile.issuer, &profile.subject)
            .map(|u| u.id)
        {
            let user = self.users.get_mut(&id).expect("found above");
            let refreshed = User {
                email: profile.email.clone(),
                display_name: profile.display_name.clone(),
                picture_url: profile.picture_url.clone(),
                provider_groups: profile.groups.clone(),
                ..user.clone()
            };
            if *user != refreshed {
                *user = refreshed.clone();
                fx.write(DbOp::PutUser(refreshed.clone()));
                // Policies name people by email and by provider group.
                self.policy_dirty = true;
            }
            return Ok(refreshed);
        }
        let wanted = profile.wanted_name();
        let name = self.unused_user_name(&wanted);
        validate_user_name(&name)?;
        self.seq.user += 1;
        let user = User {
            id: self.seq.user,
            name,
            display_name: profile.display_name.clone(),
            email: profile.email.clone(),
            created: now,
            provider: Some(profile.identity()),
            picture_url: profile.picture_url.clone(),
            provider_groups: profile.groups.clone(),
        };
        fx.write(DbOp::PutSequence("user", self.seq.user + 1));
        fx.write(DbOp::PutUser(user.clone()));
        self.users.insert(user.id, user.clone());
        self.policy_dirty = true;
        Ok(user)
    }

    /// `wanted`, or `wanted-2`, `wanted-3`, … whichever no user has.
    fn unused_user_name(&self, wanted: &str) -> String {
        let taken = |name: &str| self.users.values().any(|u| u.name == name);
        if !taken(wanted) {
            return wanted.to_owned();
        }
        (2u64..)
            .map(|n| format!("{wanted}-{n}"))
            .find(|name| !taken(name))
            .expect("an unused suffix exists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::for_tests(false)
    }

    fn alice() -> ProviderProfile {
        ProviderProfile {
            issuer: "https://id.example.com".into(),
            subject: "248289761001".into(),
            email: "alice@example.com".into(),
            display_name: "Alice Liddell".into(),
            preferred_username: "Alice".into(),
            picture_url: "https://id.example.com/alice.png".into(),
            groups: vec!["engineering".into()],
        }
    }

    #[test]
    fn a_person_is_found_again_by_issuer_and_subject_and_refreshed() {
        let mut s = state();
        let now = OffsetDateTime::now_utc();
        let mut fx = Effects::default();
        let first = s.sign_in_user(&mut fx, &alice(), now).unwrap();
        assert_eq!(first.name, "alice");
        assert_eq!(first.provider_groups, vec!["engineering"]);

        let moved = ProviderProfile {
            email: "alice@new.example.com".into(),
            groups: vec!["sales".into()],
            ..alice()
        };
        let again = s.sign_in_user(&mut fx, &moved, now).unwrap();
        assert_eq!(again.id, first.id, "the same person, not a second user");
        assert_eq!(again.name, "alice", "the name stays");
        assert_eq!(again.email, "alice@new.example.com");
        assert_eq!(again.provider_groups, vec!["sales"]);
        assert_eq!(s.users().count(), 1);
    }

    #[test]
    fn names_never_collide_and_are_never_taken_over() {
        let mut s = state();
        let now = OffsetDateTime::now_utc();
        let mut fx = Effects::default();
        let local = s.create_user(&mut fx, "alice", "", "", "", now).unwrap();
        let from_provider = s.sign_in_user(&mut fx, &alice(), now).unwrap();
        assert_ne!(from_provider.id, local.id);
        assert_eq!(from_provider.name, "alice-2");
        // Same username at another provider (a switch of provider): a third user.
        let other_issuer = ProviderProfile {
            issuer: "https://login.example.org".into(),
            ..alice()
        };
        assert_eq!(
            s.sign_in_user(&mut fx, &other_issuer, now).unwrap().name,
            "alice-3"
        );
    }

    #[test]
    fn names_come_from_the_username_or_the_email_and_are_made_valid() {
        let p = |username: &str, email: &str| ProviderProfile {
            preferred_username: username.into(),
            email: email.into(),
            ..alice()
        };
        assert_eq!(p("", "Bob.Smith@example.com").wanted_name(), "bob.smith");
        assert_eq!(p("Jane Doe (IT)", "").wanted_name(), "jane-doe--it-");
        assert_eq!(p("", "").wanted_name(), "user");
        assert_eq!(p("..hidden", "").wanted_name(), "hidden");
        // Authentik users without email: the username is enough.
        let mut s = state();
        let mut fx = Effects::default();
        let user = s
            .sign_in_user(&mut fx, &p("akadmin", ""), OffsetDateTime::now_utc())
            .unwrap();
        assert_eq!((user.name.as_str(), user.email.as_str()), ("akadmin", ""));
    }

    #[test]
    fn a_sign_in_without_a_subject_is_refused() {
        let mut s = state();
        let mut fx = Effects::default();
        let nobody = ProviderProfile {
            subject: String::new(),
            ..alice()
        };
        assert!(
            s.sign_in_user(&mut fx, &nobody, OffsetDateTime::now_utc())
                .is_err()
        );
        assert_eq!(s.users().count(), 0);
    }
}
