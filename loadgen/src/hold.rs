//! `--scenarios hold`: ONE node with a chosen hostname that advertises routes
//! (`Hostinfo.RoutableIPs`), keeps its map stream open until it is killed, and prints what its
//! own node in the map says about those routes. The console's browser tests use it to approve a
//! route end to end: real tsnet clients cannot advertise routes (tsnet exposes no prefs), this
//! client speaks the same protocol (/key, ts2021 Noise, HTTP/2, register, zstd map stream).
//!
//! Output, one line each, flushed at once (tests wait for them):
//!   `hold: registered <hostname>; map stream open`
//!   `hold: self node allows [..]; primary routes [..]` (whenever either changes)
//!   `hold: route approved in map: <route>` / `hold: route withdrawn from map: <route>`

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::node::{Ctx, Identity, SimNode};

/// Checks that `route` is an IP prefix (`10.77.0.0/24`, `::/0`) with no host bits set.
pub fn validate_route(route: &str) -> anyhow::Result<String> {
    let (addr, bits) = route
        .split_once('/')
        .with_context(|| format!("route {route:?} is not a prefix like 10.77.0.0/24"))?;
    let addr: IpAddr = addr
        .parse()
        .with_context(|| format!("route {route:?}: {addr:?} is not an IP address"))?;
    let bits: u8 = bits
        .parse()
        .with_context(|| format!("route {route:?}: {bits:?} is not a prefix length"))?;
    let (max, value): (u8, u128) = match addr {
        IpAddr::V4(a) => (32, u32::from(a) as u128),
        IpAddr::V6(a) => (128, u128::from(a)),
    };
    if bits > max {
        bail!("route {route:?}: prefix length {bits} is longer than {max}");
    }
    let host_bits = u32::from(max - bits);
    let host_mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    if value & host_mask != 0 {
        bail!("route {route:?} has host bits set");
    }
    Ok(format!("{addr}/{bits}"))
}

/// What the node has printed so far about itself.
#[derive(Default)]
struct SelfView {
    allowed: Vec<String>,
    primary: Vec<String>,
    approved: BTreeSet<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the node's own `Node` (if the message has one) and prints what changed.
fn observe(view: &Mutex<SelfView>, routes: &[String], json: &[u8]) {
    let Ok(msg) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    let Some(node) = msg.get("Node").filter(|n| n.is_object()) else {
        return;
    };
    let allowed = strings(&node["AllowedIPs"]);
    let primary = strings(&node["PrimaryRoutes"]);
    let mut view = view.lock().unwrap_or_else(|p| p.into_inner());
    if allowed != view.allowed || primary != view.primary {
        println!("hold: self node allows {allowed:?}; primary routes {primary:?}");
    }
    for route in routes {
        let now = allowed.contains(route);
        if now && view.approved.insert(route.clone()) {
            println!("hold: route approved in map: {route}");
        } else if !now && view.approved.remove(route) {
            println!("hold: route withdrawn from map: {route}");
        }
    }
    view.allowed = allowed;
    view.primary = primary;
}

/// Registers the node, opens its map stream and holds it until the process is killed.
/// Returns an error when any step fails or the server ends the stream.
pub async fn run(ctx: Arc<Ctx>, hostname: String, routes: Vec<String>) -> anyhow::Result<()> {
    if hostname.trim().is_empty() {
        bail!("--hostname is required with --scenarios hold");
    }
    let routes = routes
        .iter()
        .map(|r| validate_route(r.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let view = Arc::new(Mutex::new(SelfView::default()));
    let (v, r) = (view.clone(), routes.clone());
    let node = Arc::new(SimNode::with_identity(
        Identity {
            hostname: hostname.clone(),
            routes: routes.clone(),
        },
        Box::new(move |json| observe(&v, &r, json)),
    ));
    node.connect(&ctx).await.context("connecting")?;
    node.register(&ctx).await.context("registering")?;
    node.open_stream(&ctx)
        .await
        .context("opening the map stream")?;
    // Wait for the first full map before saying the stream is open.
    let mut waited = Duration::ZERO;
    while node.full_map_at.load(Ordering::Acquire) == 0 {
        if waited >= Duration::from_secs(60) {
            bail!("no map within 60s of opening the stream");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    println!(
        "hold: registered {hostname} (node {}) advertising {routes:?}; map stream open",
        node.id.load(Ordering::Relaxed)
    );
    while node.full_map_at.load(Ordering::Acquire) != 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.disconnect();
    bail!("the server ended the map stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_prefixes_without_host_bits() {
        assert_eq!(validate_route("10.77.0.0/24").unwrap(), "10.77.0.0/24");
        assert_eq!(validate_route("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert_eq!(validate_route("::/0").unwrap(), "::/0");
        assert_eq!(validate_route("fd00:7::/64").unwrap(), "fd00:7::/64");
        for bad in [
            "10.77.0.1/24",
            "10.77.0.0",
            "10.77.0.0/33",
            "x/8",
            "10.0.0.0/y",
        ] {
            assert!(validate_route(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn approval_and_withdrawal_are_printed_once_each() {
        let view = Mutex::new(SelfView::default());
        let routes = vec!["10.77.0.0/24".to_owned()];
        let msg = |allowed: &str| format!(r#"{{"Node":{{"ID":1,"AllowedIPs":{allowed}}}}}"#);
        observe(&view, &routes, msg(r#"["100.64.0.1/32"]"#).as_bytes());
        assert!(view.lock().unwrap().approved.is_empty());
        observe(
            &view,
            &routes,
            msg(r#"["100.64.0.1/32","10.77.0.0/24"]"#).as_bytes(),
        );
        assert!(view.lock().unwrap().approved.contains("10.77.0.0/24"));
        // A message without the node (a peer patch) changes nothing.
        observe(&view, &routes, br#"{"PeersChangedPatch":[]}"#);
        assert!(view.lock().unwrap().approved.contains("10.77.0.0/24"));
        observe(&view, &routes, msg(r#"["100.64.0.1/32"]"#).as_bytes());
        assert!(view.lock().unwrap().approved.is_empty());
    }
}
