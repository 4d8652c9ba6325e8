//! Reading headscale's rows into oxiscale's model: users, pre-auth keys, nodes and API keys,
//! each value read in the format headscale wrote it.

use super::*;

pub(super) fn text(r: &SqliteRow, col: &str) -> Option<String> {
    r.try_get::<Option<String>, _>(col).ok().flatten()
}

pub(super) fn int(r: &SqliteRow, col: &str) -> Option<i64> {
    r.try_get::<Option<i64>, _>(col).ok().flatten()
}

pub(super) fn flag(r: &SqliteRow, col: &str) -> bool {
    matches!(
        text(r, col).as_deref().map(str::trim),
        Some("1" | "true" | "TRUE" | "t" | "1.0")
    )
}

/// headscale's datetimes: `2023-04-09 22:34:28.624250346+00:00` (the driver's text form),
/// RFC 3339, or unix seconds.
pub(crate) fn parse_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return OffsetDateTime::from_unix_timestamp(secs).ok();
    }
    let mut t = s.replacen(' ', "T", 1).replace(' ', "");
    let has_offset = t.ends_with('Z')
        || t.rfind(['+', '-'])
            .is_some_and(|i| i > 10 && t[i..].contains(':'));
    if !has_offset {
        t.push('Z');
    }
    OffsetDateTime::parse(&t, &Rfc3339).ok()
}

/// A time that means something: NULL, empty and the zero time (`0001-01-01`) are none.
pub(super) fn time_of(r: &SqliteRow, col: &str) -> Option<OffsetDateTime> {
    text(r, col)
        .and_then(|s| parse_time(&s))
        .filter(|t| t.year() >= 1900)
}

/// JSON tags: NULL, '', 'null' and '[]' are untagged.
pub(super) fn tags_of(raw: Option<String>) -> Result<Vec<String>, String> {
    let raw = raw.unwrap_or_default();
    let raw = raw.trim();
    if raw.is_empty() || raw == "null" {
        return Ok(Vec::new());
    }
    let mut tags: Vec<String> = serde_json::from_str::<Option<Vec<String>>>(raw)
        .map_err(|e| format!("tags {raw:?}: {e}"))?
        .unwrap_or_default();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// headscale's `provider_identifier` back into (issuer, subject). headscale joined them
/// with "/" (newer releases with URL path joining, which drops an issuer's trailing "/"):
/// with the configured issuer known, the issuer is that exact string (trailing "/" and
/// all, as the provider's `iss` claim will say) and the subject is the rest, "/" or not;
/// otherwise the split is at the last "/".
pub(super) fn split_identifier(
    id: &str,
    configured_issuer: Option<&str>,
) -> Option<ProviderIdentity> {
    if let Some(issuer) = configured_issuer.filter(|i| !i.is_empty()) {
        let base = issuer.trim_end_matches('/');
        if let Some(subject) = id.strip_prefix(base).and_then(|r| r.strip_prefix('/'))
            && !subject.is_empty()
        {
            return Some(ProviderIdentity {
                issuer: issuer.to_owned(),
                subject: subject.to_owned(),
            });
        }
    }
    let (issuer, subject) = id.rsplit_once('/')?;
    (!issuer.is_empty() && !subject.is_empty()).then(|| ProviderIdentity {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
    })
}

pub(super) async fn read_users(
    conn: &mut SqliteConnection,
    schema: &Schema,
    issuer: Option<&str>,
    summary: &mut ImportSummary,
    ops: &mut Vec<DbOp>,
) -> Result<HashSet<u64>, ImportError> {
    let q = schema.select(
        "users",
        &[
            ("id", "INTEGER"),
            ("name", "TEXT"),
            ("display_name", "TEXT"),
            ("email", "TEXT"),
            ("provider", "TEXT"),
            ("provider_identifier", "TEXT"),
            ("profile_pic_url", "TEXT"),
            ("created_at", "TEXT"),
        ],
    );
    let rows = sqlx::query(&q).fetch_all(&mut *conn).await?;
    let mut names = HashSet::new();
    let mut identities = HashSet::new();
    let mut ids = HashSet::new();
    let mut max_id = 0;
    for r in rows {
        let Some(id) = int(&r, "id").filter(|id| *id > 0) else {
            continue;
        };
        let id = id as u64;
        let mut name = text(&r, "name").unwrap_or_default().trim().to_owned();
        if name.is_empty() {
            name = format!("user-{id}");
        }
        if !names.insert(name.to_lowercase()) {
            let renamed = format!("{name}-{id}");
            summary.notes.push(format!(
                "user {id}: the name {name:?} is taken by another user (headscale allows one \
                 per identity provider); imported as {renamed:?}"
            ));
            names.insert(renamed.to_lowercase());
            name = renamed;
        }
        let provider = match (text(&r, "provider"), text(&r, "provider_identifier")) {
            (_, Some(pid)) if !pid.is_empty() => match split_identifier(&pid, issuer) {
                Some(identity) if identities.insert(identity.clone()) => Some(identity),
                _ => {
                    summary.notes.push(format!(
                        "user {name}: provider identifier {pid:?} is not issuer/subject or \
                         repeats another user's; imported as a local user, without a link to \
                         the identity provider"
                    ));
                    None
                }
            },
            _ => None,
        };
        let valid = name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.@+".contains(c))
            && !name.starts_with(['-', '.']);
        if !valid {
            summary.notes.push(format!(
                "user {id}: the name {name:?} is kept, but oxiscale would not accept it for a \
                 new user (1-63 letters, digits, '-', '_', '.', '@' or '+'); rename it with \
                 `oxiscale users rename`"
            ));
        }
        max_id = max_id.max(id);
        ids.insert(id);
        ops.push(DbOp::PutUser(User {
            id,
            name,
            display_name: text(&r, "display_name").unwrap_or_default(),
            email: text(&r, "email").unwrap_or_default(),
            created: time_of(&r, "created_at").unwrap_or(OffsetDateTime::UNIX_EPOCH),
            provider,
            picture_url: text(&r, "profile_pic_url").unwrap_or_default(),
            provider_groups: Vec::new(),
        }));
    }
    summary.users = ids.len();
    ops.push(DbOp::PutSequence("user", max_id + 1));
    Ok(ids)
}

/// headscale's pre-auth keys: id → (user, ephemeral, imported). A key that could not be
/// imported still tells whose its nodes are.
type Keys = HashMap<u64, (Option<u64>, bool, bool)>;

pub(super) async fn read_preauth_keys(
    conn: &mut SqliteConnection,
    schema: &Schema,
    users: &HashSet<u64>,
    summary: &mut ImportSummary,
    ops: &mut Vec<DbOp>,
) -> Result<Keys, ImportError> {
    let q = schema.select(
        "pre_auth_keys",
        &[
            ("id", "INTEGER"),
            ("key", "TEXT"),
            ("prefix", "TEXT"),
            ("hash", "BLOB"),
            ("user_id", "INTEGER"),
            ("reusable", "TEXT"),
            ("ephemeral", "TEXT"),
            ("used", "TEXT"),
            ("tags", "TEXT"),
            ("expiration", "TEXT"),
            ("created_at", "TEXT"),
        ],
    );
    let rows = sqlx::query(&q).fetch_all(&mut *conn).await?;
    // Before 0.24, tags lived in their own table.
    let mut acl_tags: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    if !schema.has("pre_auth_keys", "tags") && schema.has_table("pre_auth_key_acl_tags") {
        for r in sqlx::query(
            "SELECT CAST(pre_auth_key_id AS INTEGER) AS k, CAST(tag AS TEXT) AS tag \
             FROM pre_auth_key_acl_tags",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            if let (Some(k), Some(tag)) = (int(&r, "k"), text(&r, "tag")) {
                acl_tags.entry(k as u64).or_default().push(tag);
            }
        }
    }
    let mut keys = Keys::new();
    let mut prefixes = HashSet::new();
    let mut max_id = 0;
    for r in rows {
        let Some(id) = int(&r, "id").map(|v| v as u64) else {
            continue;
        };
        max_id = max_id.max(id);
        let ephemeral = flag(&r, "ephemeral");
        keys.insert(id, (int(&r, "user_id").map(|u| u as u64), ephemeral, false));
        let skip = |why: String| format!("pre-auth key {id}: {why}");
        let legacy = text(&r, "key").filter(|k| !k.is_empty());
        let bcrypt_hash = r
            .try_get::<Option<Vec<u8>>, _>("hash")
            .ok()
            .flatten()
            .and_then(|h| String::from_utf8(h).ok())
            .filter(|h| h.starts_with("$2"));
        let (prefix, hash) = match (legacy, text(&r, "prefix"), bcrypt_hash) {
            (_, Some(prefix), Some(hash)) if !prefix.is_empty() => (prefix, KeyHash::bcrypt(hash)),
            (Some(key), _, _) => match secret::legacy_preauth_prefix(&key) {
                Some(prefix) => (prefix.to_owned(), KeyHash::Sha256(secret::digest(&key))),
                None => {
                    summary
                        .skipped
                        .push(skip("its key is not in a form oxiscale can check".into()));
                    continue;
                }
            },
            _ => {
                summary
                    .skipped
                    .push(skip("it has neither a key nor a prefix and hash".into()));
                continue;
            }
        };
        let tags = match tags_of(text(&r, "tags")) {
            Ok(t) if t.is_empty() => {
                let mut t = acl_tags.remove(&id).unwrap_or_default();
                t.sort();
                t.dedup();
                t
            }
            Ok(t) => t,
            Err(e) => {
                summary.skipped.push(skip(e));
                continue;
            }
        };
        let user = int(&r, "user_id").map(|u| u as u64);
        let user = match user {
            Some(u) if users.contains(&u) => Some(u),
            Some(u) => {
                summary
                    .skipped
                    .push(skip(format!("its user {u} does not exist (deleted)")));
                continue;
            }
            None if tags.is_empty() => {
                summary
                    .skipped
                    .push(skip("it has neither a user nor tags".into()));
                continue;
            }
            None => None,
        };
        if !prefixes.insert(prefix.clone()) {
            summary
                .skipped
                .push(skip(format!("its prefix {prefix} repeats another key's")));
            continue;
        }
        keys.insert(id, (user, ephemeral, true));
        let created = time_of(&r, "created_at").unwrap_or(OffsetDateTime::UNIX_EPOCH);
        ops.push(DbOp::PutPreAuthKey(PreAuthKey {
            id,
            prefix,
            hash,
            // A tagged key's nodes are owned by the tags, as in headscale 0.28+.
            user: if tags.is_empty() { user } else { None },
            reusable: flag(&r, "reusable"),
            ephemeral,
            used: flag(&r, "used"),
            tags,
            // No expiration: never, in practice.
            expiration: time_of(&r, "expiration").unwrap_or(far_future()),
            created,
        }));
    }
    summary.preauth_keys = keys.values().filter(|k| k.2).count();
    ops.push(DbOp::PutSequence("preauth", max_id + 1));
    Ok(keys)
}

pub(super) fn far_future() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(253_402_300_799).expect("9999-12-31 is a valid time")
}

pub(super) async fn read_nodes(
    conn: &mut SqliteConnection,
    schema: &Schema,
    users: &HashSet<u64>,
    keys: &Keys,
    summary: &mut ImportSummary,
    ops: &mut Vec<DbOp>,
) -> Result<(), ImportError> {
    let tags_col = if schema.has("nodes", "tags") {
        "tags"
    } else {
        "forced_tags"
    };
    let q = schema.select(
        "nodes",
        &[
            ("id", "INTEGER"),
            ("machine_key", "TEXT"),
            ("node_key", "TEXT"),
            ("disco_key", "TEXT"),
            ("endpoints", "TEXT"),
            ("host_info", "TEXT"),
            ("ipv4", "TEXT"),
            ("ipv6", "TEXT"),
            ("hostname", "TEXT"),
            ("given_name", "TEXT"),
            ("user_id", "INTEGER"),
            ("register_method", "TEXT"),
            (tags_col, "TEXT"),
            ("auth_key_id", "INTEGER"),
            ("last_seen", "TEXT"),
            ("expiry", "TEXT"),
            ("approved_routes", "TEXT"),
            ("created_at", "TEXT"),
        ],
    );
    let rows = sqlx::query(&q).fetch_all(&mut *conn).await?;
    // Before 0.26, approved routes were the enabled rows of the routes table.
    let mut enabled_routes: HashMap<u64, Vec<IpNet>> = HashMap::new();
    if !schema.has("nodes", "approved_routes") && schema.has_table("routes") {
        let deleted = if schema.has("routes", "deleted_at") {
            " AND deleted_at IS NULL"
        } else {
            ""
        };
        let q = format!(
            "SELECT CAST(node_id AS INTEGER) AS node_id, CAST(prefix AS TEXT) AS prefix, \
             CAST(enabled AS TEXT) AS enabled FROM routes WHERE 1=1{deleted} ORDER BY id"
        );
        for r in sqlx::query(&q).fetch_all(&mut *conn).await? {
            if !flag(&r, "enabled") {
                continue;
            }
            if let (Some(node), Some(prefix)) = (int(&r, "node_id"), text(&r, "prefix")) {
                match prefix.parse::<IpNet>() {
                    Ok(p) => enabled_routes.entry(node as u64).or_default().push(p),
                    Err(_) => summary
                        .skipped
                        .push(format!("route {prefix:?} of node {node}: not a prefix")),
                }
            }
        }
    }
    let mut given_names = HashSet::new();
    let mut node_keys = HashSet::new();
    let mut addresses = HashSet::new();
    let mut max_id = 0;
    let mut request_tags = 0;
    for r in rows {
        let Some(id) = int(&r, "id").map(|v| v as u64) else {
            continue;
        };
        max_id = max_id.max(id);
        let label = text(&r, "given_name")
            .or_else(|| text(&r, "hostname"))
            .unwrap_or_default();
        let skip = |why: String| format!("node {id} ({label}): {why}");
        let machine_key = match key_of::<MachinePublic>(text(&r, "machine_key"), "mkey:") {
            Some(k) => k,
            None => {
                summary
                    .skipped
                    .push(skip("its machine key is missing or malformed".into()));
                continue;
            }
        };
        let node_key = match key_of::<NodePublic>(text(&r, "node_key"), "nodekey:") {
            Some(k) if node_keys.insert(k.to_string()) => k,
            Some(_) => {
                summary
                    .skipped
                    .push(skip("its node key repeats another node's".into()));
                continue;
            }
            None => {
                summary
                    .skipped
                    .push(skip("its node key is missing or malformed".into()));
                continue;
            }
        };
        let disco_key = key_of::<DiscoPublic>(text(&r, "disco_key"), "discokey:")
            .unwrap_or(DiscoPublic::from_bytes([0; 32]));
        let tags = match tags_of(text(&r, tags_col)) {
            Ok(t) => t,
            Err(e) => {
                summary.skipped.push(skip(e));
                continue;
            }
        };
        let auth_key_id = int(&r, "auth_key_id")
            .map(|k| k as u64)
            .filter(|k| keys.get(k).is_some_and(|k| k.2));
        let key_owner = int(&r, "auth_key_id")
            .and_then(|k| keys.get(&(k as u64)))
            .and_then(|k| k.0);
        let user = int(&r, "user_id").map(|u| u as u64);
        let user = if !tags.is_empty() {
            None
        } else {
            // headscale 0.29.1 recovers the owner of an untagged node from its key.
            match user.or(key_owner) {
                Some(u) if users.contains(&u) => Some(u),
                Some(u) => {
                    summary
                        .skipped
                        .push(skip(format!("its user {u} does not exist (deleted)")));
                    continue;
                }
                None => {
                    summary
                        .skipped
                        .push(skip("it has neither a user nor tags".into()));
                    continue;
                }
            }
        };
        let (ipv4, ipv6) = match (
            unique_address::<Ipv4Addr>(&r, "ipv4", &mut addresses),
            unique_address::<Ipv6Addr>(&r, "ipv6", &mut addresses),
        ) {
            (Ok(v4), Ok(v6)) => (v4, v6),
            (Err(why), _) | (_, Err(why)) => {
                summary.skipped.push(skip(why));
                continue;
            }
        };
        let hostinfo = match text(&r, "host_info").filter(|s| !s.trim().is_empty()) {
            Some(s) => match serde_json::from_str::<Option<Hostinfo>>(&s) {
                Ok(h) => h.unwrap_or_default(),
                Err(e) => {
                    summary.notes.push(format!(
                        "node {id} ({label}): its Hostinfo is not readable ({e}); it starts \
                         empty and the client sends it again when it connects"
                    ));
                    Hostinfo::default()
                }
            },
            None => Hostinfo::default(),
        };
        if !hostinfo.request_tags.is_empty()
            && !schema.applied("202601121700-migrate-hostinfo-request-tags")
        {
            request_tags += 1;
        }
        let endpoints: Vec<String> = text(&r, "endpoints")
            .and_then(|s| serde_json::from_str::<Option<Vec<String>>>(&s).ok())
            .flatten()
            .unwrap_or_default();
        let approved_routes = match text(&r, "approved_routes") {
            Some(s) if schema.has("nodes", "approved_routes") => {
                match serde_json::from_str::<Option<Vec<IpNet>>>(&s) {
                    Ok(r) => r.unwrap_or_default(),
                    Err(e) => {
                        summary
                            .skipped
                            .push(skip(format!("approved routes {s:?}: {e}")));
                        continue;
                    }
                }
            }
            _ => enabled_routes.remove(&id).unwrap_or_default(),
        };
        let hostname = text(&r, "hostname")
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| hostinfo.hostname.clone());
        let mut given_name = text(&r, "given_name")
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| {
                crate::tailnet::names::sanitize_hostname(if hostname.is_empty() {
                    "node"
                } else {
                    &hostname
                })
            });
        if !given_names.insert(given_name.to_lowercase()) {
            let renamed = format!("{given_name}-{id}");
            summary.notes.push(format!(
                "node {id}: the name {given_name:?} repeats another node's; imported as \
                 {renamed:?}"
            ));
            given_names.insert(renamed.to_lowercase());
            given_name = renamed;
        }
        let register_method = match text(&r, "register_method").as_deref() {
            Some("cli") => RegisterMethod::Cli,
            Some("oidc") => RegisterMethod::Interactive,
            _ => RegisterMethod::AuthKey,
        };
        let node = Node {
            id,
            machine_key,
            node_key,
            disco_key,
            hostname,
            given_name,
            user,
            tags,
            ipv4,
            ipv6,
            hostinfo,
            endpoints,
            approved_routes,
            ephemeral: auth_key_id.is_some_and(|k| keys[&k].1),
            register_method,
            auth_key_id,
            expiry: time_of(&r, "expiry"),
            approved: true,
            created: time_of(&r, "created_at").unwrap_or(OffsetDateTime::UNIX_EPOCH),
            last_seen: time_of(&r, "last_seen"),
            cap_version: 0,
            custom_attributes: Default::default(),
            ipv4_withheld: false,
            online: false,
            peer_json: Default::default(),
        };
        summary.nodes += 1;
        ops.push(DbOp::PutNode(Arc::new(node)));
    }
    if request_tags > 0 {
        summary.notes.push(format!(
            "{request_tags} nodes ask for tags in their Hostinfo (RequestTags) that headscale \
             before 0.28 applied through the policy; only their forced tags were carried \
             over: set the others with `oxiscale nodes tag`"
        ));
    }
    ops.push(DbOp::PutSequence("node", max_id + 1));
    Ok(())
}

/// A node's address in `col` (none when empty), which no node before it has.
fn unique_address<A: std::str::FromStr + ToString>(
    r: &SqliteRow,
    col: &str,
    taken: &mut HashSet<String>,
) -> Result<Option<A>, String> {
    let Some(s) = text(r, col).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    match s.parse::<A>() {
        Ok(a) if taken.insert(a.to_string()) => Ok(Some(a)),
        _ => Err(format!(
            "its {} address {s:?} is malformed or taken",
            col.replace("ip", "IP")
        )),
    }
}

pub(super) fn key_of<K: std::str::FromStr>(raw: Option<String>, prefix: &str) -> Option<K> {
    let raw = raw?;
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    raw.parse()
        .ok()
        .or_else(|| format!("{prefix}{raw}").parse().ok())
}

pub(super) async fn read_api_keys(
    conn: &mut SqliteConnection,
    schema: &Schema,
    summary: &mut ImportSummary,
    ops: &mut Vec<DbOp>,
) -> Result<(), ImportError> {
    let q = schema.select(
        "api_keys",
        &[
            ("id", "INTEGER"),
            ("prefix", "TEXT"),
            ("hash", "BLOB"),
            ("expiration", "TEXT"),
            ("last_seen", "TEXT"),
            ("created_at", "TEXT"),
        ],
    );
    let mut max_id = 0;
    let mut prefixes = HashSet::new();
    for r in sqlx::query(&q).fetch_all(&mut *conn).await? {
        let Some(id) = int(&r, "id").map(|v| v as u64) else {
            continue;
        };
        max_id = max_id.max(id);
        let prefix = text(&r, "prefix").unwrap_or_default();
        let hash = r
            .try_get::<Option<Vec<u8>>, _>("hash")
            .ok()
            .flatten()
            .and_then(|h| String::from_utf8(h).ok())
            .filter(|h| h.starts_with("$2"));
        let Some(hash) = hash.filter(|_| !prefix.is_empty()) else {
            summary
                .skipped
                .push(format!("API key {id}: it has no prefix or no bcrypt hash"));
            continue;
        };
        if !prefixes.insert(prefix.clone()) {
            summary
                .skipped
                .push(format!("API key {id}: its prefix {prefix} repeats"));
            continue;
        }
        ops.push(DbOp::PutApiKey(ApiKey {
            id,
            prefix,
            hash: KeyHash::bcrypt(hash),
            expiration: time_of(&r, "expiration").unwrap_or(far_future()),
            created: time_of(&r, "created_at").unwrap_or(OffsetDateTime::UNIX_EPOCH),
            last_seen: time_of(&r, "last_seen"),
        }));
        summary.api_keys += 1;
    }
    ops.push(DbOp::PutSequence("api", max_id + 1));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headscale_times_parse() {
        let t = parse_time("2023-04-09 22:34:28.624250346+00:00").unwrap();
        assert_eq!(t.unix_timestamp(), 1681079668);
        let t = parse_time("2022-02-26 18:11:15.388354971+01:00").unwrap();
        assert_eq!(t.hour(), 18);
        assert_eq!(parse_time("0001-01-01 00:00:00+00:00").unwrap().year(), 1);
        assert!(parse_time("2024-05-04T08:13:55Z").is_some());
        assert!(parse_time("2024-05-04 08:13:55").is_some());
        assert_eq!(
            parse_time("1700000000").unwrap().unix_timestamp(),
            1700000000
        );
    }

    #[test]
    fn tags_and_identities() {
        assert!(tags_of(None).unwrap().is_empty());
        for empty in ["", "null", "[]"] {
            assert!(tags_of(Some(empty.into())).unwrap().is_empty());
        }
        assert_eq!(
            tags_of(Some(r#"["tag:b","tag:a","tag:b"]"#.into())).unwrap(),
            vec!["tag:a", "tag:b"]
        );
        let id = split_identifier("https://idp.example.com/realms/x/abc-123", None).unwrap();
        assert_eq!(id.issuer, "https://idp.example.com/realms/x");
        assert_eq!(id.subject, "abc-123");
        let id = split_identifier(
            "https://tenant.example.com/google-oauth2|1/2",
            Some("https://tenant.example.com/"),
        )
        .unwrap();
        assert_eq!(id.issuer, "https://tenant.example.com/");
        assert_eq!(id.subject, "google-oauth2|1/2");
    }
}
