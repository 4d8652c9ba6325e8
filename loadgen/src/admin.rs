//! The admin REST API as the fan-out scenario uses it: replacing the policy (the server runs
//! with `policy.mode: database`) with an API key, over plain HTTP/1.1 on the listener.

use std::net::Ipv4Addr;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ipnet::Ipv4Net;
use serde_json::json;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("bad control URL {0:?} (expected http://HOST:PORT)")]
    Url(String),
    #[error("connecting to the admin API: {0}")]
    Connect(#[from] std::io::Error),
    #[error("admin API: {0}")]
    Http(#[from] hyper::Error),
    #[error("admin API answered {status}: {body}")]
    Status { status: StatusCode, body: String },
}

/// A policy in force whose packet filter has a rule for `port` and otherwise lets every
/// node reach every other: each round of the fan-out scenario uses another port, so that
/// streams can tell the new filter from the old.
pub fn policy_with_port(port: u16) -> String {
    json!({
        "acls": [
            {"action": "accept", "src": ["*"], "dst": ["*:*"]},
            {"action": "accept", "src": ["*"], "dst": [format!("*:{port}")]},
        ]
    })
    .to_string()
}

/// The hub of the hub policy: the server hands out IPv4 addresses in order from 100.64.0.1,
/// so these are the first 255 nodes to register.
pub const HUB: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 24);

/// A hub-and-spoke policy: every node reaches the hub, so hub nodes see everyone and the
/// others see only the hub. With `port`, also a rule from the hub to every node on that
/// port: every node's packet filter changes, whom it sees does not.
pub fn hub_policy(port: Option<u16>) -> String {
    let mut acls = vec![json!({"action": "accept", "src": ["*"], "dst": ["hub:*"]})];
    if let Some(port) = port {
        acls.push(json!({"action": "accept", "src": ["hub"], "dst": [format!("*:{port}")]}));
    }
    json!({"hosts": {"hub": HUB.to_string()}, "acls": acls}).to_string()
}

/// `PUT /api/v1/policy`; returns once the server has stored the policy and put it in force.
pub async fn set_policy(url: &str, api_key: &str, policy: &str) -> Result<(), AdminError> {
    let authority = url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| AdminError::Url(url.to_owned()))?;
    let tcp = TcpStream::connect(authority).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let conn = tokio::spawn(conn);
    let body = json!({ "policy": policy }).to_string();
    let req = Request::put("/api/v1/policy")
        .header(header::HOST, authority)
        .header(header::AUTHORIZATION, format!("Bearer {api_key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a request built from checked parts is valid");
    let res = sender.send_request(req).await;
    let outcome = match res {
        Ok(res) if res.status() == StatusCode::OK => Ok(()),
        Ok(res) => {
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            Err(AdminError::Status {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }
        Err(e) => Err(e.into()),
    };
    conn.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_has_its_own_port_and_everyone_still_reaches_everyone() {
        let policy: serde_json::Value = serde_json::from_str(&policy_with_port(40_001)).unwrap();
        let dst: Vec<&str> = policy["acls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rule| rule["dst"][0].as_str().unwrap())
            .collect();
        assert_eq!(dst, ["*:*", "*:40001"]);
    }

    #[test]
    fn the_hub_policy_lets_everyone_reach_the_hub_only() {
        let policy: serde_json::Value = serde_json::from_str(&hub_policy(None)).unwrap();
        assert_eq!(
            policy,
            json!({"hosts": {"hub": "100.64.0.0/24"},
                   "acls": [{"action": "accept", "src": ["*"], "dst": ["hub:*"]}]})
        );
    }

    #[test]
    fn a_hub_policy_round_adds_its_port_for_every_destination() {
        let policy: serde_json::Value = serde_json::from_str(&hub_policy(Some(40_001))).unwrap();
        assert_eq!(
            policy["acls"],
            json!([{"action": "accept", "src": ["*"], "dst": ["hub:*"]},
                   {"action": "accept", "src": ["hub"], "dst": ["*:40001"]}])
        );
        assert_eq!(policy["hosts"]["hub"], "100.64.0.0/24");
    }

    #[test]
    fn the_hub_is_its_slash_24() {
        assert!(HUB.contains(&Ipv4Addr::new(100, 64, 0, 1)));
        assert!(HUB.contains(&Ipv4Addr::new(100, 64, 0, 255)));
        assert!(!HUB.contains(&Ipv4Addr::new(100, 64, 1, 0)));
    }

    #[tokio::test]
    async fn a_url_with_a_path_is_refused_before_connecting() {
        let err = set_policy("http://127.0.0.1:1/x", "k", "{}")
            .await
            .unwrap_err();
        assert!(matches!(err, AdminError::Url(_)), "{err}");
    }
}
