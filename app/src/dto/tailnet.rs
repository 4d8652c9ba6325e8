//! Data of the tailnet area, exchanged between its server functions and pages, and the
//! machine list's filters (pure, so both halves and the unit tests share them).

use serde::{Deserialize, Serialize};

/// The server-sent event stream that tells live pages the machines changed.
pub const EVENTS_PATH: &str = "/console/events";
/// The event's name on that stream.
pub const MACHINES_CHANGED_EVENT: &str = "machines";

/// The exit routes; a node advertising either offers itself as an exit node.
pub const EXIT_ROUTES: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// Rows of the machine list per page: bounds the DOM (and the SSR time) whatever the size
/// of the tailnet.
pub const MACHINES_PER_PAGE: usize = 50;

/// One machine as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSummary {
    pub id: u64,
    /// The MagicDNS label.
    pub name: String,
    /// What the device calls itself.
    pub hostname: String,
    pub fqdn: String,
    /// The owner's name; `None` for a tagged machine.
    pub user: Option<String>,
    /// The owner's id (what a member's "own machines" are checked against).
    pub owner_id: Option<u64>,
    pub tags: Vec<String>,
    pub addresses: Vec<String>,
    pub os: String,
    pub client_version: String,
    pub online: bool,
    /// RFC 3339.
    pub last_seen: Option<String>,
    /// RFC 3339; `None` = key expiry disabled.
    pub key_expiry: Option<String>,
    pub expired: bool,
    pub created: String,
    /// Advertised routes (Hostinfo.RoutableIPs), exit routes included.
    pub advertised_routes: Vec<String>,
    pub approved_routes: Vec<String>,
    /// `false` while the machine waits for an administrator (device approval).
    pub approved: bool,
}

impl MachineSummary {
    pub fn advertises_exit_node(&self) -> bool {
        self.advertised_routes
            .iter()
            .any(|r| EXIT_ROUTES.contains(&r.as_str()))
    }

    pub fn exit_node_approved(&self) -> bool {
        self.approved_routes
            .iter()
            .any(|r| EXIT_ROUTES.contains(&r.as_str()))
    }

    /// Advertised subnet routes (not the exit routes).
    pub fn subnet_routes(&self) -> impl Iterator<Item = &String> {
        self.advertised_routes
            .iter()
            .filter(|r| !EXIT_ROUTES.contains(&r.as_str()))
    }

    pub fn is_subnet_router(&self) -> bool {
        self.subnet_routes().next().is_some()
    }

    /// Advertised routes not approved yet, exit routes counted once.
    pub fn routes_awaiting_approval(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .subnet_routes()
            .filter(|r| !self.approved_routes.contains(r))
            .cloned()
            .collect();
        if self.advertises_exit_node() && !self.exit_node_approved() {
            out.push("exit node".into());
        }
        out
    }

    pub fn status(&self) -> MachineStatus {
        if !self.approved {
            MachineStatus::Waiting
        } else if self.expired {
            MachineStatus::Expired
        } else if self.online {
            MachineStatus::Online
        } else {
            MachineStatus::Offline
        }
    }
}

/// Everything known about one machine, for its detail page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineDetail {
    pub summary: MachineSummary,
    pub node_key: String,
    pub machine_key: String,
    pub disco_key: String,
    pub endpoints: Vec<String>,
    /// Region id of the home DERP server; 0 = none reported.
    pub home_derp: i64,
    /// NetInfo facts the client reported (UDP, NAT mapping, port mapping…), as label/value.
    pub net_info: Vec<(String, String)>,
    pub register_method: String,
    pub ephemeral: bool,
    /// Routes this machine currently serves as primary.
    pub primary_routes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineStatus {
    Online,
    Offline,
    Expired,
    /// Registered, waiting for an administrator's approval (device approval).
    Waiting,
}

impl MachineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineStatus::Online => "online",
            MachineStatus::Offline => "offline",
            MachineStatus::Expired => "expired",
            MachineStatus::Waiting => "waiting",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "online" => Some(MachineStatus::Online),
            "offline" => Some(MachineStatus::Offline),
            "expired" => Some(MachineStatus::Expired),
            "waiting" => Some(MachineStatus::Waiting),
            _ => None,
        }
    }
}

/// What a machine does for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineRole {
    SubnetRouter,
    ExitNode,
}

impl MachineRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineRole::SubnetRouter => "subnet-router",
            MachineRole::ExitNode => "exit-node",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "subnet-router" => Some(MachineRole::SubnetRouter),
            "exit-node" => Some(MachineRole::ExitNode),
            _ => None,
        }
    }
}

/// The machine list's search and filters, as kept in the page's URL query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineQuery {
    /// Free text: matched against name, hostname, owner, tags, addresses, OS.
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub status: Option<MachineStatus>,
    #[serde(default)]
    pub role: Option<MachineRole>,
    /// 1-based.
    #[serde(default = "first_page")]
    pub page: usize,
}

fn first_page() -> usize {
    1
}

impl MachineQuery {
    /// Reads the query from URL parameters; unknown or malformed values are ignored (a
    /// hand-edited URL shows everything rather than an error).
    pub fn from_params<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        let non_empty = |k: &str| {
            get(k)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        MachineQuery {
            q: non_empty("q").unwrap_or_default(),
            user: non_empty("user"),
            tag: non_empty("tag"),
            status: non_empty("status").and_then(|s| MachineStatus::parse(&s)),
            role: non_empty("role").and_then(|s| MachineRole::parse(&s)),
            page: non_empty("page")
                .and_then(|p| p.parse().ok())
                .filter(|p| *p >= 1)
                .unwrap_or(1),
        }
    }

    /// Parses a URL query string (without `?`), as [`MachineQuery::to_query_string`] writes.
    pub fn parse(query: &str) -> Self {
        let pairs: Vec<(String, String)> = query
            .split('&')
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                Some((decode_component(k)?, decode_component(v)?))
            })
            .collect();
        MachineQuery::from_params(|k| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        })
    }

    /// The URL query string (without `?`) that [`MachineQuery::from_params`] reads back;
    /// empty for the unfiltered first page.
    pub fn to_query_string(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if !self.q.trim().is_empty() {
            pairs.push(("q", self.q.trim().to_owned()));
        }
        if let Some(u) = &self.user {
            pairs.push(("user", u.clone()));
        }
        if let Some(t) = &self.tag {
            pairs.push(("tag", t.clone()));
        }
        if let Some(s) = self.status {
            pairs.push(("status", s.as_str().to_owned()));
        }
        if let Some(r) = self.role {
            pairs.push(("role", r.as_str().to_owned()));
        }
        if self.page > 1 {
            pairs.push(("page", self.page.to_string()));
        }
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", encode_component(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// `/machines` with this query.
    pub fn href(&self) -> String {
        let qs = self.to_query_string();
        if qs.is_empty() {
            "/machines".into()
        } else {
            format!("/machines?{qs}")
        }
    }

    pub fn is_filtered(&self) -> bool {
        !self.q.trim().is_empty()
            || self.user.is_some()
            || self.tag.is_some()
            || self.status.is_some()
            || self.role.is_some()
    }

    pub fn matches(&self, m: &MachineSummary) -> bool {
        if let Some(user) = &self.user
            && m.user.as_deref() != Some(user.as_str())
        {
            return false;
        }
        if let Some(tag) = &self.tag
            && !m.tags.iter().any(|t| t == tag)
        {
            return false;
        }
        if let Some(status) = self.status
            && m.status() != status
        {
            return false;
        }
        match self.role {
            Some(MachineRole::SubnetRouter) if !m.is_subnet_router() => return false,
            Some(MachineRole::ExitNode) if !m.advertises_exit_node() => return false,
            _ => {}
        }
        let q = self.q.trim().to_lowercase();
        if q.is_empty() {
            return true;
        }
        // Every word must appear somewhere.
        q.split_whitespace().all(|word| {
            m.name.to_lowercase().contains(word)
                || m.hostname.to_lowercase().contains(word)
                || m.user
                    .as_deref()
                    .is_some_and(|u| u.to_lowercase().contains(word))
                || m.tags.iter().any(|t| t.to_lowercase().contains(word))
                || m.addresses.iter().any(|a| a.contains(word))
                || m.os.to_lowercase().contains(word)
        })
    }

    /// Filters, sorts by name and cuts out the requested page.
    pub fn apply(&self, mut all: Vec<MachineSummary>) -> MachineList {
        let total = all.len();
        let mut users: Vec<String> = all.iter().filter_map(|m| m.user.clone()).collect();
        users.sort();
        users.dedup();
        let mut tags: Vec<String> = all.iter().flat_map(|m| m.tags.iter().cloned()).collect();
        tags.sort();
        tags.dedup();
        let waiting = all.iter().filter(|m| !m.approved).count();
        all.retain(|m| self.matches(m));
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let matching = all.len();
        let pages = matching.div_ceil(MACHINES_PER_PAGE).max(1);
        let page = self.page.clamp(1, pages);
        let rows = all
            .into_iter()
            .skip((page - 1) * MACHINES_PER_PAGE)
            .take(MACHINES_PER_PAGE)
            .collect();
        MachineList {
            total,
            matching,
            page,
            pages,
            rows,
            waiting,
            // The server function says; the list alone cannot know.
            approval_required: false,
            users,
            tags,
        }
    }
}

/// Percent-encodes a URL query value (RFC 3986 unreserved characters stay).
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes a percent-encoded URL query component (`+` is a space); `None` if malformed.
pub fn decode_component(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// One page of the filtered machine list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineList {
    /// Machines in the tailnet.
    pub total: usize,
    /// Machines that match the filters.
    pub matching: usize,
    /// The page shown (1-based, clamped to what exists).
    pub page: usize,
    pub pages: usize,
    pub rows: Vec<MachineSummary>,
    /// Machines waiting for approval (of those the viewer may see), whatever the filters.
    pub waiting: usize,
    /// Whether new machines wait for an administrator (device approval is on).
    pub approval_required: bool,
    /// Every owner and tag in the tailnet, for the filter menus.
    pub users: Vec<String>,
    pub tags: Vec<String>,
}

/// A user with what the users page shows about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    pub id: u64,
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub created: String,
    pub machines: usize,
    /// The latest last-seen of their machines (RFC 3339).
    pub last_seen: Option<String>,
    /// Whether any of their machines is online now.
    pub online: bool,
}

/// A pre-auth key as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreAuthKeyRow {
    pub id: u64,
    /// A masked form that identifies the key, e.g. `oxskey-auth-abcd-***`.
    pub masked: String,
    pub user: Option<String>,
    pub user_id: Option<u64>,
    pub tags: Vec<String>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub expired: bool,
    pub expiration: String,
    pub created: String,
}

impl PreAuthKeyRow {
    /// Whether the key can still register a machine.
    pub fn usable(&self) -> bool {
        !self.expired && (self.reusable || !self.used)
    }
}

/// An API key as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRow {
    pub id: u64,
    pub prefix: String,
    pub expired: bool,
    pub expiration: String,
    pub created: String,
    pub last_seen: Option<String>,
}

/// Everything the keys page lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysOverview {
    pub preauth: Vec<PreAuthKeyRow>,
    pub api: Vec<ApiKeyRow>,
    /// (id, name) of every user, for the "create key for" menu.
    pub users: Vec<(u64, String)>,
}

/// A secret the server shows exactly once, right after creating it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedSecret {
    pub id: u64,
    pub secret: String,
}

/// What to create a pre-auth key with, as the form gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPreAuthKey {
    /// A user id, or `None` for a tagged key.
    pub user: Option<u64>,
    /// Comma- or space-separated `tag:…` names.
    pub tags: String,
    pub reusable: bool,
    pub ephemeral: bool,
    /// A duration such as `1h` or `90d`; empty = the server's default.
    pub expiration: String,
}

// Tags are typed as a list like any other; the server names it by this path.
pub use super::split_list;

/// `2026-11-22T05:41:03Z` → `2026-11-22 05:41 UTC`; anything else is shown as is.
pub fn short_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(date), Some(hm)) if rfc3339.as_bytes().get(10) == Some(&b'T') => {
            format!("{date} {hm} UTC")
        }
        _ => rfc3339.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(id: u64, name: &str) -> MachineSummary {
        MachineSummary {
            id,
            name: name.into(),
            hostname: name.into(),
            fqdn: format!("{name}.ts.net"),
            user: Some("alice".into()),
            owner_id: Some(1),
            tags: vec![],
            addresses: vec![format!("100.64.0.{id}"), format!("fd7a:115c:a1e0::{id}")],
            os: "linux".into(),
            client_version: "1.80.0".into(),
            online: false,
            last_seen: None,
            key_expiry: None,
            expired: false,
            approved: true,
            created: "2026-11-22T05:41:03Z".into(),
            advertised_routes: vec![],
            approved_routes: vec![],
        }
    }

    fn parse(qs: &str) -> MachineQuery {
        MachineQuery::parse(qs)
    }

    #[test]
    fn query_round_trips_through_the_url() {
        let query = MachineQuery {
            q: "web 100.64 & ü".into(),
            user: Some("bob smith".into()),
            tag: Some("tag:server".into()),
            status: Some(MachineStatus::Offline),
            role: Some(MachineRole::ExitNode),
            page: 3,
        };
        let qs = query.to_query_string();
        assert!(!qs.contains(' ') && !qs.contains(':'), "{qs}");
        assert_eq!(parse(&qs), query);
        assert_eq!(MachineQuery::default().href(), "/machines");
        assert_eq!(
            parse(""),
            MachineQuery {
                page: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn malformed_parameters_are_ignored() {
        let q = parse("status=asleep&role=toaster&page=0&user=&q=%20");
        assert_eq!(
            q,
            MachineQuery {
                page: 1,
                ..Default::default()
            }
        );
        assert_eq!(parse("page=x").page, 1);
        assert_eq!(parse("q=%zz&user=a+b").user.as_deref(), Some("a b"));
        assert_eq!(parse("q=%zz").q, "");
    }

    /// A machine waiting for approval shows as waiting whatever else is true of it, is
    /// found by its own filter, and is counted whatever the filters.
    #[test]
    fn waiting_machines_have_their_own_status_and_count() {
        let mut held = machine(1, "held");
        held.approved = false;
        held.online = true;
        held.expired = true;
        let other = machine(2, "other");
        assert_eq!(held.status(), MachineStatus::Waiting);
        assert_eq!(other.status(), MachineStatus::Offline);
        assert_eq!(
            MachineStatus::parse("waiting"),
            Some(MachineStatus::Waiting)
        );
        let waiting = MachineQuery {
            status: Some(MachineStatus::Waiting),
            ..Default::default()
        };
        let list = waiting.apply(vec![held.clone(), other.clone()]);
        assert_eq!(list.rows, vec![held.clone()]);
        assert_eq!(list.waiting, 1);
        let online = MachineQuery {
            status: Some(MachineStatus::Online),
            ..Default::default()
        };
        let list = online.apply(vec![held, other]);
        assert!(list.rows.is_empty(), "a held machine is not 'online'");
        assert_eq!(list.waiting, 1, "counted whatever the filters");
    }

    #[test]
    fn filters_combine() {
        let mut router = machine(1, "router");
        router.advertised_routes = vec!["10.0.0.0/24".into()];
        router.online = true;
        let mut exit = machine(2, "exit");
        exit.advertised_routes = vec!["0.0.0.0/0".into(), "::/0".into()];
        exit.user = None;
        exit.tags = vec!["tag:exit".into()];
        let mut old = machine(3, "old-laptop");
        old.expired = true;
        old.online = true;
        let all = [router.clone(), exit.clone(), old.clone()];

        let only = |q: MachineQuery| -> Vec<u64> {
            let mut ids: Vec<u64> = all.iter().filter(|m| q.matches(m)).map(|m| m.id).collect();
            ids.sort();
            ids
        };
        let online = MachineQuery {
            status: Some(MachineStatus::Online),
            ..Default::default()
        };
        assert_eq!(only(online), vec![1]);
        let expired = MachineQuery {
            status: Some(MachineStatus::Expired),
            ..Default::default()
        };
        assert_eq!(only(expired), vec![3]);
        let routers = MachineQuery {
            role: Some(MachineRole::SubnetRouter),
            ..Default::default()
        };
        assert_eq!(only(routers), vec![1]);
        let exits = MachineQuery {
            role: Some(MachineRole::ExitNode),
            ..Default::default()
        };
        assert_eq!(only(exits), vec![2]);
        let tagged = MachineQuery {
            tag: Some("tag:exit".into()),
            ..Default::default()
        };
        assert_eq!(only(tagged), vec![2]);
        let alice = MachineQuery {
            user: Some("alice".into()),
            ..Default::default()
        };
        assert_eq!(only(alice), vec![1, 3]);
        let text = MachineQuery {
            q: "LAPTOP linux".into(),
            ..Default::default()
        };
        assert_eq!(only(text), vec![3]);
        let by_address = MachineQuery {
            q: "100.64.0.2".into(),
            ..Default::default()
        };
        assert_eq!(only(by_address), vec![2]);
        let nothing = MachineQuery {
            q: "laptop".into(),
            user: Some("bob".into()),
            ..Default::default()
        };
        assert_eq!(only(nothing), Vec::<u64>::new());
    }

    #[test]
    fn pages_are_bounded_and_clamped() {
        let all: Vec<_> = (0..1000).map(|i| machine(i, &format!("m{i:04}"))).collect();
        let list = MachineQuery::default().apply(all.clone());
        assert_eq!((list.total, list.matching, list.pages), (1000, 1000, 20));
        assert_eq!(list.rows.len(), MACHINES_PER_PAGE);
        assert_eq!(list.rows[0].name, "m0000");
        let last = MachineQuery {
            page: 99,
            ..Default::default()
        }
        .apply(all);
        assert_eq!(last.page, 20);
        assert_eq!(last.rows.last().unwrap().name, "m0999");
        assert_eq!(last.users, vec!["alice".to_owned()]);
    }

    #[test]
    fn routes_awaiting_approval_name_the_exit_node_once() {
        let mut m = machine(1, "r");
        m.advertised_routes = vec!["10.0.0.0/24".into(), "0.0.0.0/0".into(), "::/0".into()];
        assert_eq!(
            m.routes_awaiting_approval(),
            vec!["10.0.0.0/24", "exit node"]
        );
        m.approved_routes = vec!["0.0.0.0/0".into(), "::/0".into()];
        assert_eq!(m.routes_awaiting_approval(), vec!["10.0.0.0/24"]);
        assert!(m.exit_node_approved() && m.is_subnet_router());
    }

    #[test]
    fn lists_and_times() {
        assert_eq!(
            split_list("tag:a, tag:b  tag:c,"),
            vec!["tag:a", "tag:b", "tag:c"]
        );
        assert_eq!(short_time("2026-11-22T05:41:03Z"), "2026-11-22 05:41 UTC");
        assert_eq!(short_time("soon"), "soon");
    }
}
