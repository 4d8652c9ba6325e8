//! The DERP map every node gets: regions from remote maps (`derp.urls`, JSON as Tailscale
//! serves it, refreshed every `derp.update_frequency`), then from the files in `derp.paths`
//! (headscale's YAML format, keys in any case; a region set to `null` removes it), then the
//! embedded relay's region, which wins an id collision.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use oxiscale_tailcfg::{DerpMap, DerpNode, DerpRegion};
use serde_json::Value;

use crate::config::{Config, DerpServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum DerpMapError {
    #[error("DERP map file {path}: {message}")]
    File { path: String, message: String },
    #[error("DERP map {url}: {message}")]
    Remote { url: String, message: String },
    #[error(
        "{key}: {value:?} is not an {family} address (or \"none\"); clients dial it as written"
    )]
    Address {
        key: &'static str,
        value: String,
        family: &'static str,
    },
}

/// The embedded relay's region, reachable at the server_url's host and port.
pub fn embedded_region(config: &Config) -> DerpRegion {
    let s = &config.derp.server;
    let host = config.server_host();
    let ipv4 = s.ipv4.clone().or_else(|| match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Some(ip.to_string()),
        _ => None,
    });
    let ipv6 = s.ipv6.clone().or_else(|| match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => Some(ip.to_string()),
        // An IPv4 literal host: no IPv6 path to try.
        Ok(IpAddr::V4(_)) => Some("none".into()),
        Err(_) => None,
    });
    DerpRegion {
        region_id: s.region_id,
        region_code: s.region_code.clone(),
        region_name: s.region_name.clone(),
        nodes: vec![DerpNode {
            name: format!("{}a", s.region_id),
            region_id: s.region_id,
            host_name: host,
            ipv4: ipv4.unwrap_or_default(),
            ipv6: ipv6.unwrap_or_default(),
            stun_port: i64::from(s.stun_listen_addr.port()),
            derp_port: i64::from(config.server_port()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Builds the map from fetched remote maps and the configuration.
pub fn build(config: &Config, remote: &[DerpMap]) -> Result<DerpMap, DerpMapError> {
    let mut map = DerpMap {
        omit_default_regions: true,
        ..Default::default()
    };
    for r in remote {
        map.regions
            .extend(r.regions.iter().map(|(id, region)| (*id, region.clone())));
    }
    for path in &config.derp.paths {
        merge_file(&mut map, path)?;
    }
    if config.derp.server.enabled && config.derp.server.automatically_add_embedded_derp_region {
        check_addresses(&config.derp.server)?;
        let region = embedded_region(config);
        map.regions.insert(region.region_id, region);
    }
    Ok(map)
}

/// Clients parse `IPv4`/`IPv6` as addresses and dial them (over TLS, checking the
/// certificate against `HostName`): a name or a typo there would leave the relay unreachable,
/// so it stops the server instead. `none` (no path of that family) is Tailscale's own value.
fn check_addresses(s: &DerpServerConfig) -> Result<(), DerpMapError> {
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "none")
            .map(str::to_owned)
    };
    if let Some(v) = given(&s.ipv4)
        && v.parse::<Ipv4Addr>().is_err()
    {
        return Err(DerpMapError::Address {
            key: "derp.server.ipv4",
            value: v,
            family: "IPv4",
        });
    }
    if let Some(v) = given(&s.ipv6)
        && v.parse::<Ipv6Addr>().is_err()
    {
        return Err(DerpMapError::Address {
            key: "derp.server.ipv6",
            value: v,
            family: "IPv6",
        });
    }
    Ok(())
}

/// Fetches the remote maps of `derp.urls`. A map that cannot be fetched keeps its previous
/// version (`previous[i]`), so a flaky source never empties the map.
pub async fn fetch_remote(
    client: &reqwest::Client,
    urls: &[String],
    previous: &[DerpMap],
) -> Vec<DerpMap> {
    let mut out = Vec::with_capacity(urls.len());
    for (i, url) in urls.iter().enumerate() {
        match fetch_one(client, url).await {
            Ok(map) => out.push(map),
            Err(e) => {
                tracing::warn!(error = %e, "keeping the previous DERP map of this source");
                out.push(previous.get(i).cloned().unwrap_or_default());
            }
        }
    }
    out
}

async fn fetch_one(client: &reqwest::Client, url: &str) -> Result<DerpMap, DerpMapError> {
    let err = |message: String| DerpMapError::Remote {
        url: url.to_owned(),
        message,
    };
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("answered {}", resp.status())));
    }
    let body: Value = resp.json().await.map_err(|e| err(e.to_string()))?;
    let map: DerpMap =
        serde_json::from_value(canonical_keys(body)).map_err(|e| err(e.to_string()))?;
    if map.regions.is_empty() {
        return Err(err("has no regions".into()));
    }
    Ok(map)
}

fn merge_file(map: &mut DerpMap, path: &Path) -> Result<(), DerpMapError> {
    let err = |message: String| DerpMapError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let yaml: serde_norway::Value =
        serde_norway::from_str(&text).map_err(|e| err(e.to_string()))?;
    let json = serde_json::to_value(yaml).map_err(|e| err(e.to_string()))?;
    let Value::Object(top) = canonical_keys(json) else {
        return Err(err("expected a mapping with a `regions` key".into()));
    };
    let Some(Value::Object(regions)) = top.get("Regions") else {
        return Err(err("expected a mapping with a `regions` key".into()));
    };
    for (id, region) in regions {
        let id: i64 = id
            .parse()
            .map_err(|_| err(format!("region id {id:?} is not a number")))?;
        if region.is_null() {
            map.regions.remove(&id);
            continue;
        }
        let mut region: DerpRegion =
            serde_json::from_value(region.clone()).map_err(|e| err(format!("region {id}: {e}")))?;
        if region.region_id == 0 {
            region.region_id = id;
        }
        if region.nodes.is_empty() {
            return Err(err(format!("region {id} has no nodes")));
        }
        map.regions.insert(id, region);
    }
    Ok(())
}

/// Maps keys written in any case to the tailcfg field names.
fn canonical_keys(v: Value) -> Value {
    const NAMES: &[&str] = &[
        "Regions",
        "RegionID",
        "RegionCode",
        "RegionName",
        "Avoid",
        "NoMeasureNoHome",
        "Nodes",
        "Name",
        "HostName",
        "CertName",
        "IPv4",
        "IPv6",
        "STUNPort",
        "STUNOnly",
        "DERPPort",
        "InsecureForTests",
        "CanPort80",
        "omitDefaultRegions",
    ];
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let canonical = NAMES
                        .iter()
                        .find(|n| n.eq_ignore_ascii_case(&k))
                        .map_or(k, |n| (*n).to_owned());
                    (canonical, canonical_keys(v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(canonical_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_region_points_at_the_server() {
        let mut c = Config {
            server_url: "http://127.0.0.1:8081".into(),
            ..Config::default()
        };
        c.derp.server.stun_listen_addr = "127.0.0.1:3479".parse().unwrap();
        let map = build(&c, &[]).unwrap();
        let node = &map.regions[&999].nodes[0];
        assert_eq!(
            (
                node.host_name.as_str(),
                node.ipv4.as_str(),
                node.ipv6.as_str()
            ),
            ("127.0.0.1", "127.0.0.1", "none")
        );
        assert_eq!((node.derp_port, node.stun_port), (8081, 3479));
    }

    /// With an https server_url the node is what an unmodified client dials over TLS: the
    /// certificate's name as HostName, the public addresses from derp.server.ipv4/ipv6,
    /// the listener's port, and certificate checks left on.
    #[test]
    fn embedded_region_for_tls_clients() {
        let mut c = Config {
            server_url: "https://vpn.example.org".into(),
            ..Config::default()
        };
        c.derp.server.ipv4 = Some("198.51.100.7".into());
        c.derp.server.ipv6 = Some("2001:db8::7".into());
        c.derp.server.stun_listen_addr = "0.0.0.0:3478".parse().unwrap();
        let node = embedded_region(&c).nodes.remove(0);
        assert_eq!(
            (
                node.host_name.as_str(),
                node.ipv4.as_str(),
                node.ipv6.as_str()
            ),
            ("vpn.example.org", "198.51.100.7", "2001:db8::7")
        );
        assert_eq!((node.derp_port, node.stun_port), (443, 3478));
        assert!(!node.insecure_for_tests && node.cert_name.is_empty());

        c.derp.server.ipv4 = Some("vpn.example.org".into());
        let err = build(&c, &[]).unwrap_err().to_string();
        assert!(
            err.contains("derp.server.ipv4") && err.contains("not an IPv4 address"),
            "{err}"
        );
        c.derp.server.ipv4 = Some("198.51.100.7".into());
        c.derp.server.ipv6 = Some("198.51.100.7".into());
        let err = build(&c, &[]).unwrap_err().to_string();
        assert!(err.contains("derp.server.ipv6"), "{err}");

        c.server_url = "https://127.0.0.1:8443".into();
        c.derp.server.ipv4 = None;
        c.derp.server.ipv6 = None;
        let node = embedded_region(&c).nodes.remove(0);
        assert_eq!(
            (node.host_name.as_str(), node.ipv4.as_str(), node.derp_port),
            ("127.0.0.1", "127.0.0.1", 8443)
        );
    }

    #[test]
    fn merges_headscale_yaml_files() {
        let dir = std::env::temp_dir().join(format!("oxiscale-derp-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("derp.yaml");
        std::fs::write(
            &path,
            "regions:\n  900:\n    regionid: 900\n    regioncode: custom\n    regionname: My Region\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: derp.example.org\n        stunport: 0\n        derpport: 0\n",
        )
        .unwrap();
        let mut c = Config::default();
        c.derp.paths = vec![path];
        let map = build(&c, &[]).unwrap();
        assert_eq!(map.regions[&900].nodes[0].host_name, "derp.example.org");
        assert!(map.regions.contains_key(&999));
        std::fs::remove_dir_all(&dir).ok();
    }
}
