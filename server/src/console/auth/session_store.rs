//! Console sessions are stored under a hash of their id. The cookie carries the id; the
//! database only its SHA-256, so a copy of the database (a backup, a file read by the wrong
//! local user) signs nobody in.

use sha2::{Digest, Sha256};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{Error, Result, SessionStore};

/// Tries for an unused id when creating a session: 128 random bits do not collide, but a
/// store must not loop forever if its lookups go wrong.
const CREATE_TRIES: usize = 3;

/// A [`SessionStore`] that keeps `S`'s rows under hashed ids.
#[derive(Debug, Clone)]
pub struct HashedIds<S>(pub S);

/// What the store keeps for a session id.
pub fn stored_id(id: &Id) -> Id {
    let digest = Sha256::digest(id.0.to_le_bytes());
    let mut half = [0u8; 16];
    half.copy_from_slice(&digest[..16]);
    Id(i128::from_le_bytes(half))
}

#[async_trait::async_trait]
impl<S: SessionStore + Clone> SessionStore for HashedIds<S> {
    async fn create(&self, record: &mut Record) -> Result<()> {
        for _ in 0..CREATE_TRIES {
            if self.0.load(&stored_id(&record.id)).await?.is_none() {
                return self.save(record).await;
            }
            record.id = Id::default();
        }
        Err(Error::Backend("no unused session id".into()))
    }

    async fn save(&self, record: &Record) -> Result<()> {
        let mut stored = record.clone();
        stored.id = stored_id(&record.id);
        self.0.save(&stored).await
    }

    async fn load(&self, id: &Id) -> Result<Option<Record>> {
        Ok(self.0.load(&stored_id(id)).await?.map(|mut record| {
            record.id = *id;
            record
        }))
    }

    async fn delete(&self, id: &Id) -> Result<()> {
        self.0.delete(&stored_id(id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_id_is_not_the_cookie_s_and_is_stable() {
        let id = Id(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_ne!(stored_id(&id), id);
        assert_eq!(stored_id(&id), stored_id(&id));
        assert_ne!(stored_id(&id), stored_id(&Id(id.0 + 1)));
    }
}
