//! `limits`: bounds on the connections clients hold to the main listener (oxiscale's own
//! keys; README, "Limits on what clients send").

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections one address (an IPv6 /64) may hold open at once; `trusted_proxies` are
    /// exempt. `0`: no bound.
    pub connections_per_address: usize,
    /// A connection's first request header must arrive within this, and each next one on a
    /// connection kept alive.
    pub header_timeout: HumanDuration,
    /// An HTTP/2 or control connection with no request in progress is closed after this
    /// (an HTTP/1 connection waits for its next header `header_timeout` only).
    pub idle_timeout: HumanDuration,
    /// A request body that sends nothing for this long is cut off.
    pub body_timeout: HumanDuration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            // Room for a NAT with several hundred devices (a control and a relay
            // connection each) behind one address.
            connections_per_address: 1024,
            header_timeout: HumanDuration(Duration::from_secs(10)),
            idle_timeout: HumanDuration(Duration::from_secs(120)),
            body_timeout: HumanDuration(Duration::from_secs(30)),
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("limits.header_timeout", &self.header_timeout),
            ("limits.idle_timeout", &self.idle_timeout),
            ("limits.body_timeout", &self.body_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than zero".into(),
                });
            }
        }
        Ok(())
    }
}
