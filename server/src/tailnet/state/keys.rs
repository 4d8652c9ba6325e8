//! Pre-auth keys (what a machine presents to join without a login) and API keys (what the
//! REST API accepts): minted with their secret shown once, expired, deleted, verified. A
//! pre-auth key names a user or tags defined by the policy, and expires in the future.

use time::OffsetDateTime;

use super::super::effects::{DbOp, Effects};
use super::super::model::{ApiKey, KeyId, PreAuthKey, UserId};
use super::super::secret::{self, KeyHash, SecretKind};
use super::validate::normalize_tags;
use super::{State, TailnetError, not_found};

/// What a new pre-auth key allows, as the administrator asked for it.
#[derive(Debug, Clone)]
pub struct PreAuthKeySpec {
    pub user: Option<UserId>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub expiration: OffsetDateTime,
    pub tags: Vec<String>,
}

impl State {
    pub fn create_preauth_key(
        &mut self,
        fx: &mut Effects,
        spec: PreAuthKeySpec,
        now: OffsetDateTime,
    ) -> Result<(PreAuthKey, String), TailnetError> {
        let PreAuthKeySpec {
            user,
            reusable,
            ephemeral,
            expiration,
            tags,
        } = spec;
        if let Some(u) = user
            && !self.users.contains_key(&u)
        {
            return Err(not_found("user", u));
        }
        let tags = normalize_tags(tags)?;
        self.check_tags_defined(&tags)?;
        if user.is_none() && tags.is_empty() {
            return Err(TailnetError::Invalid(
                "a pre-auth key needs a user or at least one tag".into(),
            ));
        }
        if expiration <= now {
            return Err(TailnetError::Invalid(
                "the expiration must be in the future".into(),
            ));
        }
        let minted = secret::mint(SecretKind::PreAuth);
        self.seq.preauth += 1;
        let key = PreAuthKey {
            id: self.seq.preauth,
            prefix: minted.prefix,
            hash: KeyHash::Sha256(minted.hash),
            user,
            reusable,
            ephemeral,
            used: false,
            tags,
            expiration,
            created: now,
        };
        fx.write(DbOp::PutSequence("preauth", self.seq.preauth + 1));
        fx.write(DbOp::PutPreAuthKey(key.clone()));
        self.preauth_by_prefix.insert(key.prefix.clone(), key.id);
        self.preauth.insert(key.id, key.clone());
        Ok((key, minted.text))
    }

    pub fn expire_preauth_key(
        &mut self,
        fx: &mut Effects,
        id: KeyId,
        now: OffsetDateTime,
    ) -> Result<PreAuthKey, TailnetError> {
        let key = self
            .preauth
            .get_mut(&id)
            .ok_or_else(|| not_found("pre-auth key", id))?;
        if key.expiration > now {
            key.expiration = now;
        }
        let key = key.clone();
        fx.write(DbOp::PutPreAuthKey(key.clone()));
        Ok(key)
    }

    pub fn delete_preauth_key(&mut self, fx: &mut Effects, id: KeyId) -> Result<(), TailnetError> {
        if !self.preauth.contains_key(&id) {
            return Err(not_found("pre-auth key", id));
        }
        self.remove_preauth(fx, id);
        Ok(())
    }

    pub(super) fn remove_preauth(&mut self, fx: &mut Effects, id: KeyId) {
        if let Some(k) = self.preauth.remove(&id) {
            self.preauth_by_prefix.remove(&k.prefix);
            fx.write(DbOp::DeletePreAuthKey(id));
        }
    }

    pub fn create_api_key(
        &mut self,
        fx: &mut Effects,
        expiration: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(ApiKey, String), TailnetError> {
        if expiration <= now {
            return Err(TailnetError::Invalid(
                "the expiration must be in the future".into(),
            ));
        }
        let minted = secret::mint(SecretKind::Api);
        self.seq.api += 1;
        let key = ApiKey {
            id: self.seq.api,
            prefix: minted.prefix,
            hash: KeyHash::Sha256(minted.hash),
            expiration,
            created: now,
            last_seen: None,
        };
        fx.write(DbOp::PutSequence("api", self.seq.api + 1));
        fx.write(DbOp::PutApiKey(key.clone()));
        self.api_by_prefix.insert(key.prefix.clone(), key.id);
        self.api_keys.insert(key.id, key.clone());
        Ok((key, minted.text))
    }

    /// Finds an API key by id or by its prefix.
    pub fn find_api_key(
        &self,
        id: Option<KeyId>,
        prefix: Option<&str>,
    ) -> Result<KeyId, TailnetError> {
        match (id, prefix) {
            (Some(id), _) if self.api_keys.contains_key(&id) => Ok(id),
            (None, Some(p)) => self
                .api_by_prefix
                .get(p)
                .copied()
                .ok_or_else(|| not_found("API key", p)),
            (Some(id), _) => Err(not_found("API key", id)),
            (None, None) => Err(TailnetError::Invalid("give an API key id or prefix".into())),
        }
    }

    pub fn expire_api_key(
        &mut self,
        fx: &mut Effects,
        id: KeyId,
        now: OffsetDateTime,
    ) -> Result<ApiKey, TailnetError> {
        let key = self
            .api_keys
            .get_mut(&id)
            .ok_or_else(|| not_found("API key", id))?;
        if key.expiration > now {
            key.expiration = now;
        }
        let key = key.clone();
        fx.write(DbOp::PutApiKey(key.clone()));
        Ok(key)
    }

    pub fn delete_api_key(&mut self, fx: &mut Effects, id: KeyId) -> Result<(), TailnetError> {
        let key = self
            .api_keys
            .remove(&id)
            .ok_or_else(|| not_found("API key", id))?;
        self.api_by_prefix.remove(&key.prefix);
        fx.write(DbOp::DeleteApiKey(id));
        Ok(())
    }

    pub fn verify_api_key(&self, text: &str, now: OffsetDateTime) -> bool {
        let Some((prefix, hashed)) = secret::parse_presented(SecretKind::Api, text) else {
            return false;
        };
        self.api_by_prefix
            .get(prefix)
            .and_then(|id| self.api_keys.get(id))
            .is_some_and(|k| k.expiration > now && k.hash.verify(text, hashed))
    }
}

/// Rules: a pre-auth key belongs to an existing user or carries tags (well-formed, and
/// defined by the policy when there is one) and expires in the future; expiring a key ends
/// it now and never moves its end later; an API key verifies only with its whole secret,
/// until it expires or is deleted.
#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use time::Duration;

    fn spec(user: Option<UserId>, tags: &[&str], expiration: OffsetDateTime) -> PreAuthKeySpec {
        PreAuthKeySpec {
            user,
            reusable: false,
            ephemeral: false,
            expiration,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn a_pre_auth_key_needs_an_owner_and_a_future_expiry() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let mut fx = Effects::default();
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::hours(1);
        let refused = [
            spec(None, &[], later),
            spec(Some(alice), &[], now),
            spec(Some(alice), &["server"], later),
        ];
        for sp in refused {
            let err = s.create_preauth_key(&mut fx, sp.clone(), now).unwrap_err();
            assert!(matches!(err, TailnetError::Invalid(_)), "{sp:?}: {err}");
        }
        assert!(matches!(
            s.create_preauth_key(&mut fx, spec(Some(99), &[], later), now),
            Err(TailnetError::NotFound { .. })
        ));
        assert_eq!(s.preauth_keys().count(), 0);
        assert!(fx.ops.is_empty(), "refusals write nothing: {:?}", fx.ops);

        let (k, text) = s
            .create_preauth_key(&mut fx, spec(None, &["tag:b", "tag:a"], later), now)
            .unwrap();
        assert_eq!(k.tags, vec!["tag:a", "tag:b"]);
        assert!(text.contains(&k.prefix), "the secret names its key");
    }

    #[test]
    fn under_a_policy_a_key_carries_only_tags_it_defines() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let mut fx = Effects::default();
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::hours(1);
        // Without a policy any well-formed tag will do.
        s.create_preauth_key(&mut fx, spec(None, &["tag:anything"], later), now)
            .unwrap();
        set_policy(
            &mut s,
            r#"{"tagOwners": {"tag:server": ["alice@"]},
                "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
        );
        let err = s
            .create_preauth_key(&mut fx, spec(Some(alice), &["tag:nobody"], later), now)
            .unwrap_err();
        assert!(err.to_string().contains("tag:nobody"), "{err}");
        s.create_preauth_key(&mut fx, spec(None, &["tag:server"], later), now)
            .unwrap();
    }

    #[test]
    fn expiring_a_key_ends_it_now_and_never_later() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let mut fx = Effects::default();
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::hours(1);
        let (pre, _) = s
            .create_preauth_key(&mut fx, spec(Some(alice), &[], later), now)
            .unwrap();
        let (api, _) = s.create_api_key(&mut fx, later, now).unwrap();

        assert_eq!(
            s.expire_preauth_key(&mut fx, pre.id, now)
                .unwrap()
                .expiration,
            now
        );
        assert_eq!(
            s.expire_api_key(&mut fx, api.id, now).unwrap().expiration,
            now
        );
        // Expiring it again, later, leaves the earlier end.
        let after = now + Duration::minutes(5);
        assert_eq!(
            s.expire_preauth_key(&mut fx, pre.id, after)
                .unwrap()
                .expiration,
            now
        );
        assert_eq!(
            s.expire_api_key(&mut fx, api.id, after).unwrap().expiration,
            now
        );
        assert!(s.preauth_key(pre.id).unwrap().refusal(after).is_some());
        assert!(matches!(
            s.expire_preauth_key(&mut fx, 99, now),
            Err(TailnetError::NotFound { .. })
        ));
    }

    #[test]
    fn an_api_key_verifies_only_with_its_secret_until_it_expires_or_is_deleted() {
        let mut s = State::for_tests(false);
        let mut fx = Effects::default();
        let now = OffsetDateTime::now_utc();
        let (key, text) = s
            .create_api_key(&mut fx, now + Duration::hours(1), now)
            .unwrap();
        assert!(s.verify_api_key(&text, now));
        let mut tampered = text.clone();
        let last = if tampered.ends_with('a') { "b" } else { "a" };
        tampered.replace_range(tampered.len() - 1.., last);
        assert!(!s.verify_api_key(&tampered, now));
        assert!(!s.verify_api_key("garbage", now));
        assert!(
            !s.verify_api_key(&text, now + Duration::hours(1)),
            "expired"
        );

        assert_eq!(s.find_api_key(Some(key.id), None).unwrap(), key.id);
        assert_eq!(s.find_api_key(None, Some(&key.prefix)).unwrap(), key.id);
        assert!(s.find_api_key(None, Some("nope")).is_err());
        assert!(s.find_api_key(None, None).is_err());

        s.delete_api_key(&mut fx, key.id).unwrap();
        assert!(!s.verify_api_key(&text, now), "deleted");
        assert!(s.find_api_key(None, Some(&key.prefix)).is_err());
    }
}
