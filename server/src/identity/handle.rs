//! The identity provider in force, swappable at run time. Every user (device sign-in, the
//! console's "Sign in with …") reads it per request, so a change of settings, or a provider
//! found by the background retry, takes effect at the next sign-in without a restart.
//! A sign-in started under the previous provider finds its state gone and is asked to start
//! again.

use std::sync::{Arc, RwLock};

use super::Oidc;

/// What the handle holds.
#[derive(Clone, Default)]
pub enum Provider {
    /// OpenID Connect is off: machines without a key wait for an administrator.
    #[default]
    Off,
    /// Configured, but the provider has not been discovered yet (the server retries in the
    /// background). Sign-in through it is not possible meanwhile.
    Waiting { issuer: String },
    /// Discovered: sign-in through it works.
    Ready(Arc<Oidc>),
}

/// A cheap-to-clone handle on the [`Provider`] in force.
#[derive(Clone, Default)]
pub struct OidcHandle {
    inner: Arc<RwLock<Provider>>,
}

impl OidcHandle {
    pub fn new(provider: Provider) -> OidcHandle {
        OidcHandle {
            inner: Arc::new(RwLock::new(provider)),
        }
    }

    /// The provider to use for this request, when sign-in through it is possible now.
    pub fn get(&self) -> Option<Arc<Oidc>> {
        match &*self.read() {
            Provider::Ready(oidc) => Some(oidc.clone()),
            _ => None,
        }
    }

    /// What the handle holds now.
    pub fn provider(&self) -> Provider {
        self.read().clone()
    }

    /// Whether OpenID Connect is configured (discovered or not yet).
    pub fn configured(&self) -> bool {
        !matches!(&*self.read(), Provider::Off)
    }

    /// Puts `provider` in force for every request from now on.
    pub fn set(&self, provider: Provider) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = provider;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Provider> {
        // Nothing runs while the lock is held that could leave the value half-written.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}
