//! How much a client may say about itself. Whatever a node reports in Hostinfo and
//! Endpoints is stored and sent to every peer that may see it, so one node could otherwise
//! grow every other node's map (a 1 MB Hostinfo made a peer's map 100 times larger).
//! A request over a bound is refused whole, with the bound named; nothing of it is kept.

use crate::{Hostinfo, MapRequest, RegisterRequest};

/// Hostinfo as JSON. Tailscale's own clients send one to three KiB; a long list of
/// services stays well inside.
pub const MAX_HOSTINFO_BYTES: usize = 32 * 1024;
/// Endpoints (address:port candidates for direct connections) of one node.
pub const MAX_ENDPOINTS: usize = 64;
/// Characters of one endpoint (`[ipv6%zone]:port` fits).
pub const MAX_ENDPOINT_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    #[error("Hostinfo is {0} bytes of JSON; at most {MAX_HOSTINFO_BYTES} are accepted")]
    Hostinfo(usize),
    #[error("{0} endpoints; at most {MAX_ENDPOINTS} are accepted")]
    Endpoints(usize),
    #[error("an endpoint of {0} characters; at most {MAX_ENDPOINT_LEN} are accepted")]
    EndpointLength(usize),
}

fn hostinfo_within(hostinfo: Option<&Hostinfo>) -> Result<(), BoundsError> {
    let Some(hostinfo) = hostinfo else {
        return Ok(());
    };
    let size = serde_json::to_vec(hostinfo).map_or(usize::MAX, |j| j.len());
    if size > MAX_HOSTINFO_BYTES {
        return Err(BoundsError::Hostinfo(size));
    }
    Ok(())
}

impl MapRequest {
    /// Whether what the client says about itself is within the bounds above.
    pub fn check_bounds(&self) -> Result<(), BoundsError> {
        hostinfo_within(self.hostinfo.as_ref())?;
        if self.endpoints.len() > MAX_ENDPOINTS {
            return Err(BoundsError::Endpoints(self.endpoints.len()));
        }
        if let Some(long) = self.endpoints.iter().find(|e| e.len() > MAX_ENDPOINT_LEN) {
            return Err(BoundsError::EndpointLength(long.len()));
        }
        Ok(())
    }
}

impl RegisterRequest {
    /// Whether the Hostinfo the client registers with is within [`MAX_HOSTINFO_BYTES`].
    pub fn check_bounds(&self) -> Result<(), BoundsError> {
        hostinfo_within(self.hostinfo.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostinfo_of(bytes: usize) -> Hostinfo {
        let mut h = Hostinfo {
            hostname: "laptop".into(),
            ..Default::default()
        };
        h.rest.insert(
            "Padding".into(),
            serde_json::Value::String("x".repeat(bytes)),
        );
        h
    }

    #[test]
    fn an_ordinary_request_is_within_bounds() {
        let req = MapRequest {
            hostinfo: Some(hostinfo_of(2000)),
            endpoints: vec!["192.0.2.1:41641".into(), "[2001:db8::1]:41641".into()],
            ..Default::default()
        };
        assert_eq!(req.check_bounds(), Ok(()));
        let reg = RegisterRequest {
            hostinfo: Some(hostinfo_of(2000)),
            ..Default::default()
        };
        assert_eq!(reg.check_bounds(), Ok(()));
    }

    #[test]
    fn each_bound_is_named_when_passed() {
        let big = MapRequest {
            hostinfo: Some(hostinfo_of(1 << 20)),
            ..Default::default()
        };
        assert!(matches!(big.check_bounds(), Err(BoundsError::Hostinfo(n)) if n > 1 << 20));
        let reg = RegisterRequest {
            hostinfo: Some(hostinfo_of(MAX_HOSTINFO_BYTES)),
            ..Default::default()
        };
        assert!(
            reg.check_bounds()
                .unwrap_err()
                .to_string()
                .contains("32768")
        );
        let many = MapRequest {
            endpoints: vec!["192.0.2.1:1".into(); MAX_ENDPOINTS + 1],
            ..Default::default()
        };
        assert_eq!(many.check_bounds(), Err(BoundsError::Endpoints(65)));
        let long = MapRequest {
            endpoints: vec!["x".repeat(100)],
            ..Default::default()
        };
        assert_eq!(long.check_bounds(), Err(BoundsError::EndpointLength(100)));
    }
}
