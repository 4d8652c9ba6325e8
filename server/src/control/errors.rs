//! What the control protocol answers when a request fails, apart from the tailnet's own
//! errors: a client must tell "you may not" (it stops and asks its user) from "not now" (it
//! retries with backoff), and an anonymous client is never shown what failed inside.

use http::StatusCode;

use crate::tailnet::TailnetError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The node key names no node.
    #[error("node not found")]
    UnknownNode,
    /// The tailnet's rules refuse the request; the reason is for the client's user.
    #[error("{0}")]
    Refused(String),
    /// The server cannot take the request now (its database failed, or it is stopping);
    /// the client should try again. The cause goes to the server's log only.
    #[error("the server cannot take this request now; try again")]
    Unavailable,
}

impl From<&TailnetError> for ControlError {
    fn from(e: &TailnetError) -> ControlError {
        match e {
            TailnetError::NotFound { .. } => ControlError::UnknownNode,
            TailnetError::Storage(_) | TailnetError::Internal(_) => ControlError::Unavailable,
            TailnetError::Conflict(_) | TailnetError::Invalid(_) | TailnetError::Addresses(_) => {
                ControlError::Refused(e.to_string())
            }
        }
    }
}

impl ControlError {
    /// The status of a plain-text answer (map requests): 404, 401 or 503.
    pub fn status(&self) -> StatusCode {
        match self {
            ControlError::UnknownNode => StatusCode::NOT_FOUND,
            ControlError::Refused(_) => StatusCode::UNAUTHORIZED,
            ControlError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_are_try_again_and_say_nothing_of_the_cause() {
        let e = ControlError::from(&TailnetError::Storage(
            "disk I/O error at /var/lib/x".into(),
        ));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.to_string().contains("/var/lib"), "{e}");
    }

    #[test]
    fn refusals_and_unknown_nodes_keep_their_meaning() {
        let refused = ControlError::from(&TailnetError::Invalid("node key expired".into()));
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(refused.to_string(), "node key expired");
        let unknown = ControlError::from(&TailnetError::NotFound {
            what: "node",
            id: "nodekey:ab".into(),
        });
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    }
}
