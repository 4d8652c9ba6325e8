//! The `acls` and `ssh` sections: each rule parsed and checked on its own.

use super::*;

impl PolicyDoc {
    pub(super) fn parse_acl(&self, i: usize, rule: &JVal) -> Result<Acl, PolicyError> {
        let what = format!("acls[{i}]");
        let mut action = None;
        let (mut src, mut dst, mut proto) = (None, None, None);
        let mut src_posture = Vec::new();
        for (k, v) in obj(rule, &what)? {
            match k.as_str() {
                "action" => action = Some(v),
                "src" | "users" => src = Some(v),
                "dst" | "ports" => dst = Some(v),
                "proto" => proto = Some(v),
                "srcPosture" => src_posture = self.posture_names(v, &what)?,
                _ if k.starts_with('#') => {}
                _ => return Err(unknown_field(k, v, &what)),
            }
        }
        match action {
            Some(a) => {
                let s = string(a, &what)?;
                if s != "accept" {
                    return Err(a.err(format!("action={s:?} is not supported")));
                }
            }
            None => return Err(rule.err(format!("{what}: action must be specified"))),
        }
        let protos = match proto {
            Some(p) => parse_proto(p)?,
            None => vec![],
        };
        let mut acl = Acl {
            src: vec![],
            dst: vec![],
            protos,
            src_posture,
        };
        if let Some(v) = src {
            for (s, l, c) in strings(v, &what)? {
                let a = self.alias_checked(&s, l, c, "src")?;
                if a == Alias::AutoGroup(AutoGroup::SelfDevices) {
                    return Err(PolicyError::at(
                        l,
                        c,
                        "\"autogroup:self\" not valid on the src side of a rule",
                    ));
                }
                if matches!(
                    a,
                    Alias::AutoGroup(AutoGroup::Internet | AutoGroup::NonRoot)
                ) {
                    return Err(PolicyError::at(
                        l,
                        c,
                        format!("{:?} not valid on the src side of a rule", s.trim()),
                    ));
                }
                acl.src.push(a);
            }
        }
        if let Some(v) = dst {
            for (s, l, c) in strings(v, &what)? {
                let (alias, ports) = split_alias_ports(s.trim())
                    .map_err(|m| PolicyError::at(l, c, format!("dst={m}")))?;
                let ports = parse_ports(ports)
                    .map_err(|m| PolicyError::at(l, c, format!("dst={:?}: {m}", s.trim())))?;
                let a = self
                    .alias_checked(alias, l, c, "dst")
                    .map_err(|e| PolicyError {
                        message: format!("dst={alias:?}: {}", strip_what(&e.message)),
                        ..e
                    })?;
                if matches!(
                    a,
                    Alias::AutoGroup(AutoGroup::DangerAll | AutoGroup::NonRoot)
                ) {
                    return Err(PolicyError::at(
                        l,
                        c,
                        format!("{alias:?} not valid on the dst side of a rule"),
                    ));
                }
                if !proto_allows_ports(&acl.protos) && ports != [PortRange::ANY] {
                    return Err(PolicyError::at(
                        l,
                        c,
                        format!("dst={alias:?}: ports are only valid with tcp, udp or sctp"),
                    ));
                }
                acl.dst.push(AliasPorts { alias: a, ports });
            }
        }
        check_self_sources(&acl.src, acl.dst.iter().map(|d| &d.alias), rule, true)?;
        Ok(acl)
    }

    pub(super) fn parse_ssh(&self, i: usize, rule: &JVal) -> Result<SshRule, PolicyError> {
        let what = format!("ssh[{i}]");
        let mut r = SshRule {
            action: SshActionKind::Accept,
            src: vec![],
            dst: vec![],
            users: vec![],
            accept_env: vec![],
            check_period: None,
            src_posture: vec![],
        };
        let mut action_seen = false;
        let mut users_seen = false;
        let mut check_period = None;
        for (k, v) in obj(rule, &what)? {
            match k.as_str() {
                "action" => {
                    let s = string(v, &what)?;
                    r.action = match s.trim() {
                        "accept" => SshActionKind::Accept,
                        "check" => SshActionKind::Check,
                        "" => return Err(v.err("action must be specified")),
                        _ => return Err(v.err(format!("{s:?} is not a valid action"))),
                    };
                    action_seen = true;
                }
                "src" => {
                    for (s, l, c) in strings(v, &what)? {
                        let a = self.alias_checked(&s, l, c, "src")?;
                        match a {
                            Alias::AutoGroup(AutoGroup::Member | AutoGroup::Tagged) => {}
                            Alias::AutoGroup(_)
                            | Alias::Wildcard
                            | Alias::Host(_)
                            | Alias::Prefix(_) => {
                                return Err(PolicyError::at(
                                    l,
                                    c,
                                    format!("invalid src {:?}", s.trim()),
                                ));
                            }
                            _ => {}
                        }
                        r.src.push(a);
                    }
                }
                "dst" => {
                    for (s, l, c) in strings(v, &what)? {
                        let a = self.alias_checked(&s, l, c, "dst")?;
                        match a {
                            Alias::AutoGroup(
                                AutoGroup::Member | AutoGroup::Tagged | AutoGroup::SelfDevices,
                            ) => {}
                            Alias::AutoGroup(_)
                            | Alias::Wildcard
                            | Alias::Host(_)
                            | Alias::Prefix(_) => {
                                return Err(PolicyError::at(
                                    l,
                                    c,
                                    format!("invalid dst {:?}", s.trim()),
                                ));
                            }
                            _ => {}
                        }
                        r.dst.push(a);
                    }
                }
                "users" => {
                    users_seen = !matches!(v.kind, JKind::Null);
                    for (s, l, c) in strings(v, &what)? {
                        let t = s.trim();
                        let u = if t == "root" {
                            SshUser::Root
                        } else if t == "autogroup:nonroot" {
                            SshUser::NonRoot
                        } else if let Some(lp) = t.strip_prefix("localpart:") {
                            match lp.strip_prefix("*@") {
                                Some(domain) if !domain.is_empty() => {
                                    SshUser::Localpart(domain.to_string())
                                }
                                // Not the `*@domain` shape: the service treats it as a plain name.
                                _ => SshUser::Named(t.to_string()),
                            }
                        } else if t.is_empty() || t == "*" {
                            return Err(PolicyError::at(l, c, format!("user {s:?} is not valid")));
                        } else {
                            SshUser::Named(t.to_string())
                        };
                        r.users.push(u);
                    }
                }
                "checkPeriod" => match &v.kind {
                    JKind::Null => {}
                    JKind::Str(s) if s == "always" => check_period = Some(0),
                    JKind::Str(s) => {
                        let d = parse_go_duration(s).map_err(|m| v.err(m))?;
                        if d < 0 {
                            return Err(v.err(format!(
                                "checkPeriod {} must be a positive duration",
                                go_duration_string(d)
                            )));
                        }
                        if d > MAX_CHECK_PERIOD {
                            return Err(v.err(format!(
                                "checkPeriod {} is above the max (168h)",
                                go_duration_string(d)
                            )));
                        }
                        check_period = Some(d);
                    }
                    _ => return Err(v.err("checkPeriod: expected a duration string")),
                },
                "srcPosture" => r.src_posture = self.posture_names(v, &what)?,
                "acceptEnv" => {
                    for (s, l, c) in strings(v, &what)? {
                        if s.is_empty() {
                            return Err(PolicyError::at(l, c, "acceptEnv values cannot be empty"));
                        }
                        r.accept_env.push(s);
                    }
                }
                _ if k.starts_with('#') => {}
                _ => return Err(unknown_field(k, v, &what)),
            }
        }
        if !action_seen {
            return Err(rule.err("action must be specified"));
        }
        if !users_seen || r.users.is_empty() {
            return Err(rule.err("users must be specified"));
        }
        r.check_period = check_period;
        Ok(r)
    }
}
