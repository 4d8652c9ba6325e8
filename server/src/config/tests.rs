use super::*;

fn load_yaml(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = std::env::temp_dir().join(format!("oxiscale-config-test-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let result = Config::load(Some(&path), env);
    std::fs::remove_dir_all(&dir).ok();
    result
}

#[test]
fn no_file_means_usable_defaults() {
    let c = Config::load(None, Vec::new()).unwrap();
    assert_eq!(c.server_url, "http://127.0.0.1:8080");
    assert_eq!(c.sqlite_path(), PathBuf::from("./data/db.sqlite"));
    assert_eq!(c.node.ephemeral.inactivity_timeout.0.as_secs(), 120);
    assert!(c.derp.server.enabled);
    assert!(
        !c.node.approval_required,
        "device approval is off by default"
    );
}

#[test]
fn device_approval_is_a_file_key_and_an_environment_variable() {
    let c = load_yaml("node:\n  approval_required: true\n", &[]).unwrap();
    assert!(c.node.approval_required);
    let c = load_yaml("", &[("OXISCALE_NODE_APPROVAL_REQUIRED", "true")]).unwrap();
    assert!(c.node.approval_required);
    let c = load_yaml(
        "node:\n  approval_required: true\n",
        &[("OXISCALE_NODE_APPROVAL_REQUIRED", "false")],
    )
    .unwrap();
    assert!(!c.node.approval_required, "the environment wins");
    let err = load_yaml("node:\n  approval_required: maybe\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("maybe"), "{err}");
}

#[test]
fn reads_headscale_keys() {
    let c = load_yaml(
        "server_url: https://hs.example.org:443\nlisten_addr: 0.0.0.0:8080\n\
         prefixes:\n  v4: 100.64.0.0/16\n  allocation: random\n\
         dns:\n  base_domain: ts.example.net\n  nameservers:\n    global: [1.1.1.1]\n    split:\n      corp.example: [10.0.0.53]\n\
         node:\n  expiry: 180d\n  ephemeral:\n    inactivity_timeout: 30m\n\
         tls_cert_path: ''\nmetrics_listen_addr: 127.0.0.1:9090\ntaildrop:\n  enabled: true\n\
         logtail:\n  enabled: true\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.prefixes.v4.unwrap().to_string(), "100.64.0.0/16");
    assert_eq!(c.prefixes.allocation, Allocation::Random);
    assert_eq!(
        c.dns.nameservers.split["corp.example"],
        vec!["10.0.0.53".to_string()]
    );
    assert_eq!(c.node.expiry.0.as_secs(), 180 * 86_400);
    assert_eq!(
        c.ignored_keys(),
        vec!["logtail.enabled"],
        "metrics are served; an empty TLS path and taildrop on ask for nothing"
    );
    assert_eq!(c.server_host(), "hs.example.org");
    assert_eq!(c.server_port(), 443);
}

#[test]
fn unknown_file_key_is_named_and_does_not_stop_the_server() {
    let c = load_yaml("dns:\n  base_domian: x.example\n", &[]).unwrap();
    let said: Vec<String> = c.notices.iter().map(ToString::to_string).collect();
    assert_eq!(
        said,
        vec![
            "\"dns.base_domian\" is not a configuration key oxiscale knows; ignored (did you mean \"dns.base_domain\"?)"
        ]
    );
}

/// headscale's stock `config-example.yaml` of 0.26.1, 0.27.1, 0.28.0 and 0.29.2
/// (fixtures/headscale/config) load; what oxiscale does not act on is named.
#[test]
fn headscale_stock_config_files_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/headscale/config");
    for version in ["0.26.1", "0.27.1", "0.28.0", "0.29.2"] {
        let path = dir.join(format!("config-example-{version}.yaml"));
        let c = Config::load(Some(&path), Vec::new())
            .unwrap_or_else(|e| panic!("headscale {version}'s example: {e}"));
        assert_eq!(c.server_url, "http://127.0.0.1:8080", "{version}");
        assert_eq!(
            c.noise_key_path(),
            PathBuf::from("/var/lib/headscale/noise_private.key")
        );
        assert_eq!(
            c.sqlite_path(),
            PathBuf::from("/var/lib/headscale/db.sqlite")
        );
        assert_eq!(c.node.ephemeral.inactivity_timeout.0.as_secs(), 30 * 60);
        assert!(
            !c.derp.server.enabled,
            "{version}: the example turns it off"
        );
        assert!(
            !c.notices
                .iter()
                .any(|n| matches!(n, ConfigNotice::Unknown { .. })),
            "{version}: every key of the example is known: {:?}",
            c.notices
        );
        let renamed = c
            .notices
            .iter()
            .any(|n| matches!(n, ConfigNotice::Renamed { .. }));
        assert_eq!(renamed, version != "0.29.2", "{version}: {:?}", c.notices);
    }
}

#[test]
fn headscale_variables_are_read_and_oxiscale_ones_win() {
    let c = load_yaml(
        "",
        &[
            ("HEADSCALE_DNS_BASE_DOMAIN", "hs.example"),
            ("HEADSCALE_SERVER_URL", "https://hs.example.org"),
            ("OXISCALE_SERVER_URL", "https://ox.example.org"),
            ("HEADSCALE_CONFIG", "/etc/headscale/config.yaml"),
            ("HEADSCALE_DEBUG_DUMP_CONFIG", "1"),
            ("HEADSCALE_SOMETHING_NEW", "1"),
        ],
    )
    .unwrap();
    assert_eq!(c.dns.base_domain, "hs.example");
    assert_eq!(c.server_url, "https://ox.example.org");
    assert_eq!(
        c.notices,
        vec![ConfigNotice::Unknown {
            key: "HEADSCALE_SOMETHING_NEW".into(),
            suggestion: None
        }]
    );
}

#[test]
fn the_cli_address_is_a_url_or_headscales_host_and_port() {
    let c = load_yaml("cli:\n  address: vpn.example.com:443\n  api_key: k\n", &[]).unwrap();
    assert_eq!(
        c.cli.base_url().as_deref(),
        Some("https://vpn.example.com:443")
    );
    assert!(
        !c.to_yaml().contains("api_key: k"),
        "the key is never printed"
    );
    let c = load_yaml("", &[("OXISCALE_CLI_ADDRESS", "http://127.0.0.1:8080/")]).unwrap();
    assert_eq!(c.cli.base_url().as_deref(), Some("http://127.0.0.1:8080"));
    assert_eq!(load_yaml("", &[]).unwrap().cli.base_url(), None);
}

#[test]
fn relative_paths_are_read_from_the_config_files_directory() {
    let dir = std::env::temp_dir().join(format!("oxiscale-config-rel-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        "noise:\n  private_key_path: keys/noise.key\ndatabase:\n  type: sqlite3\n  sqlite:\n    path: /abs/db.sqlite\n",
    )
    .unwrap();
    let c = Config::load(Some(&path), Vec::new()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(c.noise_key_path(), dir.join("keys/noise.key"));
    assert_eq!(c.sqlite_path(), PathBuf::from("/abs/db.sqlite"));
}

#[test]
fn environment_overrides_file_and_unknown_variables_are_named() {
    let c = load_yaml(
        "dns:\n  base_domain: file.example\n",
        &[
            ("OXISCALE_DNS_BASE_DOMAIN", "env.example"),
            ("OXISCALE_NODE_EPHEMERAL_INACTIVITY_TIMEOUT", "5s"),
            ("OXISCALE_DERP_SERVER_STUN_LISTEN_ADDR", "127.0.0.1:3479"),
            ("OXISCALE_DNS_NAMESERVERS_GLOBAL", "[9.9.9.9]"),
            ("OXISCALE_CONFIG", "ignored"),
        ],
    )
    .unwrap();
    assert_eq!(c.dns.base_domain, "env.example");
    assert_eq!(c.node.ephemeral.inactivity_timeout.0.as_secs(), 5);
    assert_eq!(c.derp.server.stun_listen_addr.port(), 3479);
    assert_eq!(c.dns.nameservers.global, vec!["9.9.9.9".to_string()]);

    let err = load_yaml("", &[("OXISCALE_DNS_BASEDOMAIN", "x")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("OXISCALE_DNS_BASEDOMAIN"), "{err}");
}

#[test]
fn invalid_values_are_refused_with_their_key() {
    let err = load_yaml("server_url: ftp://x\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("server_url"), "{err}");
    let err = load_yaml("prefixes:\n  v4: 10.0.0.0/8\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("prefixes.v4"), "{err}");
    let err = load_yaml("node:\n  expiry: soon\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("soon"), "{err}");
    let err = load_yaml(
        "server_url: http://a.example.com\ndns:\n  base_domain: example.com\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("dns.base_domain"));
}

#[test]
fn trusted_proxies_are_networks_or_addresses_and_anything_else_is_refused() {
    let c = load_yaml("trusted_proxies: [10.0.0.0/8, \"::1\"]\n", &[]).unwrap();
    let nets: Vec<String> = c
        .trusted_proxy_nets()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "::1/128"]);
    assert!(c.ignored_keys().is_empty(), "trusted_proxies is acted on");
    let err = load_yaml("trusted_proxies: [10.0.0.0/33]\n", &[])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("10.0.0.0/33"), "{err}");
}

#[test]
fn from_yaml_reads_text_as_load_reads_the_file() {
    let yaml = "server_url: https://vpn.example.org\nnoise:\n  private_key_path: keys/noise.key\n";
    let from_file = load_yaml(yaml, &[]).unwrap();
    let path = Path::new("/etc/oxiscale/config.yaml");
    let from_text = Config::from_yaml(yaml, Some(path), std::iter::empty()).unwrap();
    assert_eq!(from_text.server_url, from_file.server_url);
    assert_eq!(
        from_text.noise_key_path(),
        Path::new("/etc/oxiscale/keys/noise.key")
    );
    // Without a path the text still counts; relative paths stay as written.
    let unanchored = Config::from_yaml(yaml, None, std::iter::empty()).unwrap();
    assert_eq!(unanchored.server_url, "https://vpn.example.org");
    assert!(matches!(
        Config::from_yaml("server_url: [", None, std::iter::empty()),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn connection_limits_are_read_from_the_file_and_the_environment_and_zero_timeouts_refused() {
    let c = load_yaml("", &[]).unwrap();
    assert_eq!(c.limits.connections_per_address, 1024);
    assert_eq!(
        c.limits.header_timeout.0,
        std::time::Duration::from_secs(10)
    );
    let c = load_yaml(
        "limits:\n  connections_per_address: 0\n  idle_timeout: 5m\n",
        &[("OXISCALE_LIMITS_HEADER_TIMEOUT", "3s")],
    )
    .unwrap();
    assert_eq!(c.limits.connections_per_address, 0, "0: no bound");
    assert_eq!(c.limits.idle_timeout.0, std::time::Duration::from_secs(300));
    assert_eq!(c.limits.header_timeout.0, std::time::Duration::from_secs(3));
    let err = load_yaml("limits:\n  body_timeout: 0\n", &[]).unwrap_err();
    assert!(err.to_string().contains("limits.body_timeout"), "{err}");
}
