"""Real Tailscale clients (caddy-tailscale, tsnet 1.90.9) under an access policy (issue #3).

The server runs in file mode with its own policy file (this module overrides the `server`
fixture to add OXISCALE_POLICY_PATH). node-a and node-b each serve a text on :80 and proxy
to the other by MagicDNS name, so every request crosses the tailnet and the receiving node's
packet filter decides.

Not covered here: route approval and autoApprovers. caddy-tailscale cannot advertise routes
(tsnet sets RoutableIPs only through prefs it does not expose), so those are tested in
server/tests/policy.rs with protocol-level clients that send Hostinfo.RoutableIPs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from conftest import _register_log
from harness import HarnessError, Server, http_get, oxiscale_bin, wait_for

HELLO_A = "hello from node-a"
HELLO_B = "hello from node-b"
A_DNS = "node-a.tail.test"
B_DNS = "node-b.tail.test"

ALICE_TO_BOB_80 = """{
  // alice's devices may open bob's port 80; nothing else is allowed
  "tagOwners": { "tag:web": ["alice@"], "tag:other": ["alice@"] },
  "acls": [ { "action": "accept", "src": ["alice@"], "dst": ["bob@:80"] } ],
}
"""

BOB_TO_ALICE_80 = """{
  "tagOwners": { "tag:web": ["alice@"], "tag:other": ["alice@"] },
  "acls": [ { "action": "accept", "src": ["bob@"], "dst": ["alice@:80"] } ],
}
"""

BOB_TO_TAG_WEB = """{
  "tagOwners": { "tag:web": ["alice@"], "tag:other": ["alice@"] },
  "acls": [ { "action": "accept", "src": ["bob@"], "dst": ["tag:web:80"] } ],
}
"""

# Positive checks wait this long for the policy to reach the clients and a path to form.
REACH_TIMEOUT = 90.0
# A blocked request: the SYN is dropped, so the proxy waits; keep each try short.
BLOCKED_TRY_TIMEOUT = 4.0


class PolicyServer(Server):
    """The harness server with a policy file (file mode)."""

    def __init__(self, binary: Path, workdir: Path, policy_path: Path):
        super().__init__(binary, workdir)
        self.policy_path = policy_path

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env["OXISCALE_POLICY_MODE"] = "file"
        env["OXISCALE_POLICY_PATH"] = str(self.policy_path)
        return env


@pytest.fixture
def server(test_dir: Path, request: pytest.FixtureRequest, initial_policy: str):
    path = test_dir / "policy.hujson"
    path.write_text(initial_policy)
    srv = PolicyServer(oxiscale_bin(), test_dir / "srv", path)
    _register_log(request, "server", srv.log_path)
    try:
        srv.start()
    except HarnessError as err:
        srv.stop()
        pytest.fail(f"oxiscale server could not be started: {err}", pytrace=False)
    yield srv
    code = srv.stop()
    assert code in (0, None), f"oxiscale exited with {code} on SIGTERM (expected a graceful 0)"


def reaches(node, upstream: str, expect: str) -> bool:
    try:
        status, body = node.get_via(upstream, timeout=BLOCKED_TRY_TIMEOUT)
    except OSError:
        return False
    return status == 200 and body.strip() == expect


def wait_blocked(node, upstream: str, expect: str, timeout: float = 30.0, tries: int = 3) -> None:
    """Waits until `tries` requests in a row fail (a policy change may take a moment)."""
    streak = [0]

    def probe():
        streak[0] = 0 if reaches(node, upstream, expect) else streak[0] + 1
        return streak[0] >= tries

    wait_for(f"{node.name} -> {upstream} to be refused {tries} times in a row", probe, timeout,
             interval=0.2)


def start_pair(server: PolicyServer, caddy_node):
    """alice owns node-a, bob owns node-b; both serve and proxy to the other."""
    alice = server.create_user("alice")
    bob = server.create_user("bob")
    key_a = server.create_key(alice["id"])
    key_b = server.create_key(bob["id"])
    a = caddy_node("node-a", key_a["key"], serve_text=HELLO_A, proxy_to=B_DNS)
    b = caddy_node("node-b", key_b["key"], serve_text=HELLO_B, proxy_to=A_DNS)
    server.wait_node("node-a")
    server.wait_node("node-b")
    return a, b


@pytest.mark.parametrize("initial_policy", [ALICE_TO_BOB_80], ids=["alice-to-bob"])
def test_acl_is_one_way_and_a_policy_edit_applies_without_reconnecting(server, caddy_node):
    a, b = start_pair(server, caddy_node)

    # alice -> bob:80 is allowed; bob -> alice is not.
    a.wait_reach(B_DNS, HELLO_B, timeout=REACH_TIMEOUT)
    wait_blocked(b, A_DNS, HELLO_A)
    assert server.cli("policy", "get")["policy"] == ALICE_TO_BOB_80

    # An invalid edit is refused; the policy in force stays (and so does the traffic).
    server.policy_path.write_text('{ "acls": [ { "action": "allow", "src": ["*"] } ] }')
    time.sleep(2.5)
    assert server.cli("policy", "get")["policy"] == ALICE_TO_BOB_80
    assert reaches(a, B_DNS, HELLO_B) or reaches(a, B_DNS, HELLO_B)
    wait_blocked(b, A_DNS, HELLO_A, tries=2)

    # The reverse policy, picked up from the file while both nodes stay connected.
    pids = (a.proc.pid, b.proc.pid)
    t0 = time.monotonic()
    server.policy_path.write_text(BOB_TO_ALICE_80)
    b.wait_reach(A_DNS, HELLO_A, timeout=REACH_TIMEOUT)
    took = time.monotonic() - t0
    wait_blocked(a, B_DNS, HELLO_B)
    assert (a.proc.pid, b.proc.pid) == pids and a.running() and b.running()
    node_ids = {n["name"]: n["id"] for n in server.nodes()}
    assert set(node_ids) == {"node-a", "node-b"}, "no node re-registered"
    print(f"\npolicy edit to first allowed request: {took:.1f}s")


@pytest.mark.parametrize("initial_policy", [BOB_TO_TAG_WEB], ids=["bob-to-tag-web"])
def test_a_tag_rule_follows_the_node_when_its_tag_changes(server, caddy_node):
    a, b = start_pair(server, caddy_node)
    node_a = server.node_named("node-a")

    # node-a is alice's and untagged: bob may not reach it.
    wait_blocked(b, A_DNS, HELLO_A)

    tagged = server.cli("nodes", "tag", "-i", str(node_a["id"]), "-t", "tag:web")
    assert tagged["tags"] == ["tag:web"]
    b.wait_reach(A_DNS, HELLO_A, timeout=REACH_TIMEOUT)

    server.cli("nodes", "tag", "-i", str(node_a["id"]), "-t", "tag:other")
    wait_blocked(b, A_DNS, HELLO_A)

    # A tag the policy does not define is refused.
    with pytest.raises(HarnessError, match="tagOwners"):
        server.cli("nodes", "tag", "-i", str(node_a["id"]), "-t", "tag:undefined")


@pytest.mark.parametrize("initial_policy", [ALICE_TO_BOB_80], ids=["alice-to-bob"])
def test_policy_cli_against_a_running_server(server, test_dir):
    server.create_user("alice")
    server.create_user("bob")
    # check against the live tailnet (no nodes yet: every user has an empty report)
    report = server.cli("policy", "check", "--file", str(server.policy_path))
    assert report == {}, report
    # set is refused in file mode, with a message that says why
    with pytest.raises(HarnessError, match="file"):
        server.cli("policy", "set", "--file", str(server.policy_path))
    # a broken file: line and column, non-zero exit
    bad = test_dir / "bad.hujson"
    bad.write_text('{\n  "acls": [\n    { "action": "allow", "src": ["*"], "dst": ["*:*"] }\n  ]\n}\n')
    with pytest.raises(HarnessError, match=r"line 3, column \d+"):
        server.cli("policy", "check", "--file", str(bad))
    status, _ = http_get(f"{server.url}/api/v1/policy")
    assert status == 401, "the API on the main listener needs a key"

    # SIGHUP reloads the policy (and does not stop the server, SIGHUP's default action).
    server.policy_path.write_text(BOB_TO_ALICE_80)
    os.kill(server.pid, signal.SIGHUP)
    wait_for("the new policy after SIGHUP",
             lambda: server.cli("policy", "get")["policy"] == BOB_TO_ALICE_80, 10.0)
    os.kill(server.pid, signal.SIGHUP)
    wait_for("the server to log the unchanged-policy SIGHUP",
             lambda: "SIGHUP: the policy is unchanged" in server.log_path.read_text(), 10.0)
    assert server.alive() and server.healthy()
