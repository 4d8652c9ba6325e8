//! Parsing and validation rules of the policy document, one test each.

use super::*;

#[test]
fn ports() {
    assert_eq!(parse_ports("*").unwrap(), vec![PortRange::ANY]);
    assert_eq!(
        parse_ports("22,80-90").unwrap(),
        vec![
            PortRange {
                first: 22,
                last: 22
            },
            PortRange {
                first: 80,
                last: 90
            }
        ]
    );
    assert_eq!(
        parse_ports("ssh").unwrap_err(),
        "port range \"ssh\": invalid first integer"
    );
    assert!(parse_ports("99999").is_err());
    assert!(parse_ports("-1").is_err());
    assert!(parse_ports("90-80").is_err());
    assert!(parse_ports("").is_err());
}

#[test]
fn alias_ports_split_at_last_colon() {
    assert_eq!(
        split_alias_ports("tag:server:22").unwrap(),
        ("tag:server", "22")
    );
    assert_eq!(
        split_alias_ports("fd7a:115c:a1e0::1:80").unwrap(),
        ("fd7a:115c:a1e0::1", "80")
    );
    assert_eq!(
        split_alias_ports("[fd7a:115c:a1e0::10]:22").unwrap(),
        ("fd7a:115c:a1e0::10", "22")
    );
    assert!(split_alias_ports("nohost").is_err());
}

#[test]
fn aliases() {
    let hosts: BTreeMap<String, IpNet> =
        [("db".to_string(), "100.64.0.10/32".parse().unwrap())].into();
    assert_eq!(parse_alias("*", &hosts).unwrap(), Alias::Wildcard);
    assert_eq!(parse_alias("db", &hosts).unwrap(), Alias::Host("db".into()));
    assert_eq!(
        parse_alias("alice@", &hosts).unwrap(),
        Alias::User("alice@".into())
    );
    assert_eq!(
        parse_alias("10.1.2.3/8", &hosts).unwrap(),
        Alias::Prefix("10.0.0.0/8".parse().unwrap())
    );
    assert!(parse_alias("autogroup:bogus", &hosts).is_err());
    assert!(parse_alias("tag:1x", &hosts).is_err());
    assert!(
        parse_alias("nohost", &hosts)
            .unwrap_err()
            .contains("not found")
    );
}

#[test]
fn durations() {
    assert_eq!(parse_go_duration("1h").unwrap(), 3_600_000_000_000);
    assert_eq!(
        parse_go_duration("168h0m1s").unwrap(),
        MAX_CHECK_PERIOD + 1_000_000_000
    );
    assert_eq!(go_duration_string(-60_000_000_000), "-1m0s");
    assert_eq!(go_duration_string(200 * 3600 * 1_000_000_000), "200h0m0s");
    assert!(parse_go_duration("abc").is_err());
}

fn err(text: &str) -> PolicyError {
    PolicyDoc::parse(text).unwrap_err()
}

#[test]
fn validation_errors() {
    let e =
        err("{\n \"acls\": [{\"action\": \"accept\", \"src\": [\"tag:x\"], \"dst\": [\"*:*\"]}]}");
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("tag not found"), "{e}");
    assert!(
        err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"group:x\"], \"dst\": [\"*:*\"]}]}")
            .message
            .contains("group not found")
    );
    assert!(
        err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"nohost\"], \"dst\": [\"*:*\"]}]}")
            .message
            .contains("not found")
    );
    assert!(err("{\"bogus\": 1}").message.contains("unknown field"));
    assert!(
        err("{\"acls\": [{\"action\": \"deny\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}")
            .message
            .contains("not supported")
    );
    assert!(
        err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:http\"]}]}")
            .message
            .contains("invalid first integer")
    );
    assert!(
        err("{\"hosts\": {\"h\": \"10.0.0.0/33\"}}")
            .message
            .contains("not an IP")
    );
    let e = err("{\"groups\": {\"group:a\": [\"group:b\"], \"group:b\": [\"x@\"]}}");
    assert!(e.message.contains("cannot be recursive"), "{e}");
    assert!(
        err("{\"tagOwners\": {\"tag:9\": []}}")
            .message
            .contains("must start with a letter")
    );
    assert!(err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"tag:a\"], \"dst\": [\"autogroup:self:*\"]}], \"tagOwners\": {\"tag:a\": []}}")
        .message
        .contains("autogroup:self can only"));
    assert!(err("{\"ssh\": [{\"action\": \"accept\", \"src\": [\"a@\"], \"dst\": [\"tag:a\"]}], \"tagOwners\": {\"tag:a\": []}}")
        .message
        .contains("users must be specified"));
    assert!(err("{\"acls\": [{\"action\": \"accept\", \"proto\": \"icmp\", \"src\": [\"*\"], \"dst\": [\"*:22\"]}]}")
        .message
        .contains("only valid"));
}

mod message_tests {
    use super::*;

    #[test]
    fn port_errors_quote_the_whole_destination() {
        let e = PolicyDoc::parse(
            r#"{"tagOwners": {"tag:server": []},
                "acls": [{"action": "accept", "src": ["*"], "dst": ["tag:server:ssh"]}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            r#"dst="tag:server:ssh": port range "ssh": invalid first integer"#
        );
        assert_eq!((e.line, e.column), (Some(2), Some(69)));
    }

    #[test]
    fn port_zero_is_not_a_port() {
        assert_eq!(
            parse_ports("0").unwrap_err(),
            "port range \"0\": first port must be >0, or use '*' for wildcard"
        );
        assert!(parse_ports("0-10").is_err());
        assert!(parse_ports("22,0").is_err());
        assert!(parse_ports("1-65535").is_ok());
        let e =
            PolicyDoc::parse(r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:0"]}]}"#)
                .unwrap_err();
        assert_eq!(
            e.message,
            r#"dst="*:0": port range "0": first port must be >0, or use '*' for wildcard"#
        );
    }

    const SSH_BASE: &str = r#""tagOwners": {"tag:server": []},
        "ssh": [{"action": "accept", "src": ["thor@example.org"], "dst": ["tag:server"], "users": ["root"]}]"#;

    fn with_ssh_test(test: &str) -> Result<PolicyDoc, PolicyError> {
        PolicyDoc::parse(&format!("{{{SSH_BASE}, \"sshTests\": [{test}]}}"))
    }

    #[test]
    fn ssh_tests_must_assert_something() {
        let e = with_ssh_test(r#"{"src": "thor@example.org", "dst": ["tag:server"]}"#).unwrap_err();
        assert!(e.message.starts_with("test(s) failed"), "{e}");
        assert!(e.line.is_some());
        let e = with_ssh_test(
            r#"{"src": "thor@example.org", "dst": ["tag:server"], "accept": [], "deny": []}"#,
        )
        .unwrap_err();
        assert!(e.message.starts_with("test(s) failed"), "{e}");
        for field in ["accept", "check", "deny"] {
            with_ssh_test(&format!(
                r#"{{"src": "thor@example.org", "dst": ["tag:server"], "{field}": ["root"]}}"#
            ))
            .unwrap();
        }
    }

    #[test]
    fn ssh_test_destinations_are_not_bare_ipv6_addresses() {
        let e = with_ssh_test(
            r#"{"src": "thor@example.org", "dst": ["fd7a:115c:a1e0::10"], "accept": ["root"]}"#,
        )
        .unwrap_err();
        assert!(e.message.starts_with("test(s) failed"), "{e}");
        assert!(e.message.contains("fd7a:115c:a1e0::10"), "{e}");
        // The IPv4 twin is accepted.
        with_ssh_test(r#"{"src": "thor@example.org", "dst": ["100.64.0.16"], "accept": ["root"]}"#)
            .unwrap();
    }
}
