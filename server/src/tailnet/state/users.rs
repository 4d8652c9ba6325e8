//! Local users: created, renamed and deleted by an administrator. A name is valid and
//! unique; a user who still owns nodes cannot be deleted, and their pre-auth keys go with them.

use time::OffsetDateTime;

use super::super::effects::{Change, DbOp, Effects};
use super::super::model::{KeyId, User, UserId};
use super::validate::{validate_picture_url, validate_user_name};
use super::{State, TailnetError, not_found};

impl State {
    pub fn create_user(
        &mut self,
        fx: &mut Effects,
        name: &str,
        display_name: &str,
        email: &str,
        picture_url: &str,
        now: OffsetDateTime,
    ) -> Result<User, TailnetError> {
        validate_user_name(name)?;
        validate_picture_url(picture_url)?;
        if self.user_by_name(name).is_some() {
            return Err(TailnetError::Conflict(format!(
                "user {name:?} already exists"
            )));
        }
        self.seq.user += 1;
        let user = User {
            id: self.seq.user,
            name: name.to_owned(),
            display_name: display_name.to_owned(),
            email: email.to_owned(),
            created: now,
            provider: None,
            picture_url: picture_url.to_owned(),
            provider_groups: Vec::new(),
        };
        fx.write(DbOp::PutSequence("user", self.seq.user + 1));
        fx.write(DbOp::PutUser(user.clone()));
        self.users.insert(user.id, user.clone());
        self.policy_dirty = true;
        Ok(user)
    }

    pub fn rename_user(
        &mut self,
        fx: &mut Effects,
        id: UserId,
        new_name: &str,
    ) -> Result<User, TailnetError> {
        validate_user_name(new_name)?;
        if self
            .users
            .values()
            .any(|u| u.name == new_name && u.id != id)
        {
            return Err(TailnetError::Conflict(format!(
                "user {new_name:?} already exists"
            )));
        }
        let user = self
            .users
            .get_mut(&id)
            .ok_or_else(|| not_found("user", id))?;
        user.name = new_name.to_owned();
        let user = user.clone();
        fx.write(DbOp::PutUser(user.clone()));
        self.policy_dirty = true;
        // Peers show the owner's login name.
        for n in self.nodes.values().filter(|n| n.user == Some(id)) {
            fx.announce(Change::NodeUpserted(n.id));
        }
        Ok(user)
    }

    /// Deletes a user who owns no nodes; their unused pre-auth keys go with them.
    pub fn delete_user(&mut self, fx: &mut Effects, id: UserId) -> Result<(), TailnetError> {
        if !self.users.contains_key(&id) {
            return Err(not_found("user", id));
        }
        let owned = self.nodes.values().filter(|n| n.user == Some(id)).count();
        if owned > 0 {
            return Err(TailnetError::Conflict(format!(
                "user {id} still owns {owned} node(s); delete or re-tag them first"
            )));
        }
        let keys: Vec<KeyId> = self
            .preauth
            .values()
            .filter(|k| k.user == Some(id))
            .map(|k| k.id)
            .collect();
        for k in keys {
            self.remove_preauth(fx, k);
        }
        self.users.remove(&id);
        self.policy_dirty = true;
        fx.write(DbOp::DeleteUser(id));
        Ok(())
    }
}

/// Rules: user names are valid and unique (on creation and rename); a user who owns nodes
/// is not deleted; a deleted user's pre-auth keys are deleted with them.
#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn user_names_are_unique_on_creation_and_rename() {
        let mut s = State::for_tests(false);
        let mut fx = Effects::default();
        let now = OffsetDateTime::now_utc();
        let alice = user(&mut s, "alice");
        let bob = user(&mut s, "bob");
        assert!(matches!(
            s.create_user(&mut fx, "alice", "", "", "", now),
            Err(TailnetError::Conflict(_))
        ));
        assert!(matches!(
            s.rename_user(&mut fx, bob, "alice"),
            Err(TailnetError::Conflict(_))
        ));
        assert!(matches!(
            s.rename_user(&mut fx, bob, "-bob"),
            Err(TailnetError::Invalid(_))
        ));
        assert!(matches!(
            s.rename_user(&mut fx, 99, "carol"),
            Err(TailnetError::NotFound { .. })
        ));
        assert_eq!(s.user(bob).unwrap().name, "bob", "refusals change nothing");
        // Keeping one's own name is no conflict.
        assert_eq!(s.rename_user(&mut fx, alice, "alice").unwrap().id, alice);
        assert_eq!(
            s.rename_user(&mut fx, bob, "robert").unwrap().name,
            "robert"
        );
        assert!(s.user_by_name("bob").is_none());
    }

    #[test]
    fn a_user_who_owns_nodes_is_kept_and_a_deleted_users_keys_go_with_them() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let bob = user(&mut s, "bob");
        let alices_key = key(&mut s, Some(alice), true, &[]);
        key(&mut s, Some(bob), true, &[]);
        join(&mut s, 1, 1, &alices_key);

        let mut fx = Effects::default();
        assert!(matches!(
            s.delete_user(&mut fx, alice),
            Err(TailnetError::Conflict(_))
        ));
        assert!(s.user(alice).is_some());

        s.delete_user(&mut fx, bob).unwrap();
        assert!(s.user(bob).is_none());
        assert!(s.preauth_keys().all(|k| k.user == Some(alice)));
        assert!(
            fx.ops
                .iter()
                .any(|op| matches!(op, DbOp::DeletePreAuthKey(_))),
            "{:?}",
            fx.ops
        );
    }
}
