"""Real Tailscale clients (caddy-tailscale, tsnet 1.90.9) under `grants` (no `acls` section).

Like test_policy.py (whose `server` fixture and helpers this module reuses), every request
crosses the tailnet and the receiving node's packet filter decides. The nodes here are
`GrantNode`s: the harness's CaddyNode with more than one served port, proxies to any
`host:port` upstream, and optionally tsnet's web client (caddy-tailscale's `webui` option).

How a capability is seen through WhoIs: caddy-tailscale's `tailscale_auth` handler puts only
the user's identity in its placeholders (`http.auth.user.tailscale_{user,login,name,
profile_picture,tailnet}`), never the WhoIs CapMap, and the harness has no LocalAPI. tsnet's
web client does read it: on a tagged node it answers `GET /api/auth` (port 5252 of its
Tailscale IP) with `viewerIdentity.capabilities`, parsed from the caller's WhoIs CapMap entry
`tailscale.com/cap/webui` (`{"canEdit": [...]}`, client/web/auth.go toPeerCapabilities). So
an app grant of that capability is what a real client here can show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import _register_log
from harness import CaddyNode, free_tcp_port, http_get, tail, wait_for
from test_policy import REACH_TIMEOUT, PolicyServer, server  # noqa: F401  (fixture)

TAG_OWNERS = '"tagOwners": { "tag:web": ["alice@"] }'

# alice's devices may open bob's port 80; nothing else (no acls section at all).
GRANT_ALICE_TO_BOB_80 = """{
  %s,
  "grants": [ { "src": ["alice@"], "dst": ["bob@"], "ip": ["tcp:80"] } ],
}
""" % TAG_OWNERS

GRANT_ALICE_TO_BOB_80_8080 = """{
  %s,
  "grants": [ { "src": ["alice@"], "dst": ["bob@"], "ip": ["tcp:80", "tcp:8080"] } ],
}
""" % TAG_OWNERS

# alice's devices reach the tag:web node's web client (port 5252) ...
WEB_CLIENT_ONLY = """{
  %s,
  "grants": [ { "src": ["alice@"], "dst": ["tag:web"], "ip": ["tcp:5252"] } ],
}
""" % TAG_OWNERS

# ... and, with this one, may also edit its SSH settings there.
WEB_CLIENT_AND_WEBUI_CAP = """{
  %s,
  "grants": [
    { "src": ["alice@"], "dst": ["tag:web"], "ip": ["tcp:5252"] },
    { "src": ["alice@"], "dst": ["tag:web"],
      "app": { "tailscale.com/cap/webui": [ { "canEdit": ["ssh", "subnets"] } ] } },
  ],
}
""" % TAG_OWNERS

BLOCKED_TRY_TIMEOUT = 4.0
WEB_CLIENT_PORT = 5252  # tsnet's web client (client/web ListenPort)


@dataclass
class GrantNode(CaddyNode):
    """serve: port -> text answered on the node's tailnet address at that port.
    proxies: label -> upstream `host:port`; each gets a 127.0.0.1 port proxying there through
    tsnet, with the upstream's host:port as Host (tsnet's web client redirects other Hosts).
    webui: run tsnet's web client (caddy-tailscale `webui`)."""

    serve: dict[int, str] = field(default_factory=dict)
    proxies: dict[str, str] = field(default_factory=dict)
    webui: bool = False
    local_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        for label in self.proxies:
            self.local_ports[label] = free_tcp_port()

    def caddyfile(self) -> str:
        text = super().caddyfile()  # global options and the node (serve_text/proxy_to unset)
        if self.webui:
            host_line = f"\t\t\thostname {self.name}\n"
            assert host_line in text
            text = text.replace(host_line, host_line + "\t\t\twebui true\n", 1)
        parts = [text]
        for port, body in self.serve.items():
            body = body.replace("\\", "\\\\").replace('"', '\\"')
            parts += [f"http://:{port} {{", f"\tbind tailscale/{self.name}", f'\trespond "{body}"',
                      "}", ""]
        for label, upstream in self.proxies.items():
            parts += [
                f"http://127.0.0.1:{self.local_ports[label]} {{",
                "\tbind 127.0.0.1",
                f"\treverse_proxy http://{upstream} {{",
                "\t\theader_up Host {upstream_hostport}",
                f"\t\ttransport tailscale {self.name}",
                "\t}",
                "}",
                "",
            ]
        return "\n".join(parts)

    def get(self, label: str, path: str = "/", timeout: float = 10.0) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{self.local_ports[label]}{path}", timeout=timeout)

    def reaches(self, label: str, expect: str) -> bool:
        try:
            status, body = self.get(label, timeout=BLOCKED_TRY_TIMEOUT)
        except OSError:
            return False
        return status == 200 and body.strip() == expect

    def wait_reaches(self, label: str, expect: str, timeout: float = REACH_TIMEOUT) -> None:
        wait_for(f"{self.name} -> {label} to answer {expect!r}", lambda: self.reaches(label, expect),
                 timeout, interval=0.5,
                 on_timeout=lambda: f"{self.name} log tail:\n{tail(self.log_path, 30)}")

    def wait_blocked(self, label: str, expect: str, timeout: float = 30.0, tries: int = 3) -> None:
        streak = [0]

        def probe():
            streak[0] = 0 if self.reaches(label, expect) else streak[0] + 1
            return streak[0] >= tries

        wait_for(f"{self.name} -> {label} to be refused {tries} times in a row", probe, timeout,
                 interval=0.2)


@pytest.fixture
def grant_node(test_dir: Path, server: PolicyServer, request: pytest.FixtureRequest):
    nodes: list[GrantNode] = []

    def make(name: str, authkey: str, **kw) -> GrantNode:
        node = GrantNode(name=name, authkey=authkey, control_url=server.url,
                         workdir=test_dir / f"{name}-{len(nodes)}", **kw)
        nodes.append(node)
        _register_log(request, f"caddy {name}", node.log_path)
        node.start()
        return node

    yield make
    for node in nodes:
        node.stop()


def ipv4_of(server: PolicyServer, name: str) -> str:
    node = server.wait_node(name)
    return next(ip for ip in node["ip_addresses"] if "." in ip)


@pytest.mark.parametrize("initial_policy", [GRANT_ALICE_TO_BOB_80], ids=["grant-alice-to-bob-80"])
def test_an_ip_grant_decides_who_reaches_what(server, grant_node):
    alice = server.create_user("alice")
    bob = server.create_user("bob")
    a = grant_node("node-a", server.create_key(alice["id"])["key"], serve={80: "a:80"},
                   proxies={"b80": "node-b.tail.test:80", "b8080": "node-b.tail.test:8080"})
    b = grant_node("node-b", server.create_key(bob["id"])["key"],
                   serve={80: "b:80", 8080: "b:8080"}, proxies={"a80": "node-a.tail.test:80"})
    server.wait_node("node-a")
    server.wait_node("node-b")

    # The granted pair and port: alice -> bob:80.
    a.wait_reaches("b80", "b:80")
    # Another port of the same pair, and the pair the other way round, are not granted.
    a.wait_blocked("b8080", "b:8080")
    b.wait_blocked("a80", "a:80")

    # A grant of both ports, picked up from the file while the nodes stay connected.
    server.policy_path.write_text(GRANT_ALICE_TO_BOB_80_8080)
    a.wait_reaches("b8080", "b:8080")
    assert a.reaches("b80", "b:80") or a.reaches("b80", "b:80")
    b.wait_blocked("a80", "a:80")


@pytest.mark.parametrize("initial_policy", [WEB_CLIENT_ONLY], ids=["web-client-only"])
def test_an_app_grant_shows_in_the_destinations_whois(server, grant_node):
    alice = server.create_user("alice")
    # node-b: tagged (the web client reads granted capabilities only on tagged nodes).
    # It serves port 80 only so that caddy-tailscale starts the node (it starts a node when a
    # site binds to it or a proxy uses it); the grants do not open that port.
    grant_node("node-b", server.create_key(alice["id"], tags=["tag:web"])["key"], webui=True,
               serve={80: "b:80"})
    assert server.wait_node("node-b")["tags"] == ["tag:web"]
    b_ip = ipv4_of(server, "node-b")
    # node-a: alice's, untagged, proxying to node-b's web client on its bare Tailscale IP.
    a = grant_node("node-a", server.create_key(alice["id"])["key"],
                   proxies={"web": f"{b_ip}:{WEB_CLIENT_PORT}"}, serve={80: "a:80"})
    a_ip = ipv4_of(server, "node-a")

    def auth() -> dict | None:
        try:
            status, body = a.get("web", "/api/auth", timeout=BLOCKED_TRY_TIMEOUT)
        except OSError:
            return None
        return json.loads(body) if status == 200 else None

    # Without the app grant: node-b's WhoIs of node-a has no webui capability.
    first = wait_for("node-b's web client to answer /api/auth through the tailnet", auth,
                     REACH_TIMEOUT, interval=0.5,
                     on_timeout=lambda: f"node-a log tail:\n{tail(a.log_path, 30)}")
    viewer = first["viewerIdentity"]
    assert viewer["loginName"].split("@")[0] == "alice", first
    assert viewer["nodeIP"] == a_ip, first
    assert viewer["capabilities"] == {}, first

    # With it: the capability's values, as node-b's client parsed them from WhoIs.
    server.policy_path.write_text(WEB_CLIENT_AND_WEBUI_CAP)
    granted = wait_for("node-b's WhoIs of node-a to carry tailscale.com/cap/webui",
                       lambda: (r := auth()) and r["viewerIdentity"]["capabilities"] and r,
                       REACH_TIMEOUT, interval=0.5)
    assert granted["viewerIdentity"]["capabilities"] == {"ssh": True, "subnets": True}, granted

    # And taken away again.
    server.policy_path.write_text(WEB_CLIENT_ONLY)
    gone = wait_for("the capability to leave node-b's WhoIs of node-a",
                    lambda: (r := auth()) and r["viewerIdentity"]["capabilities"] == {} and r,
                    REACH_TIMEOUT, interval=0.5)
    assert gone["viewerIdentity"]["nodeIP"] == a_ip
