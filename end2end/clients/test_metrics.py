"""Prometheus metrics on `metrics_listen_addr` while real tsnet nodes join, talk through the
embedded DERP relay and leave (issue #21): the numbers a dashboard shows move with them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness import free_tcp_port, http_get, wait_for
from test_control_plane import HELLO_B, magicdns, setup_user, start_pair

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "grafana-dashboard.json"
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$")


def scrape(url: str) -> dict[str, float]:
    """`name{labels}` -> value, from Prometheus' text format."""
    status, body = http_get(url)
    assert status == 200, f"GET {url}: {status} {body[:200]}"
    samples = {}
    for line in body.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def test_metrics_follow_nodes_joining_talking_and_leaving(server, caddy_node, test_dir):
    port = free_tcp_port()
    server.extra_env["OXISCALE_METRICS_LISTEN_ADDR"] = f"127.0.0.1:{port}"
    server.extra_env["OXISCALE_POLICY_MODE"] = "database"
    server.restart()
    url = f"http://127.0.0.1:{port}/metrics"

    before = scrape(url)
    assert before['oxiscale_nodes{state="online"}'] == 0, before
    assert before["oxiscale_map_streams"] == 0, before
    assert before.get('oxiscale_registrations_total{result="authorized"}', 0) == 0, before

    user = setup_user(server)
    a, b, nb, _ = start_pair(server, caddy_node, user, always_derp=True)
    a.wait_reach(magicdns(nb), HELLO_B)
    server.wait_node("node-a")

    def both_on_the_relay():
        m = scrape(url)
        return m if m.get("oxiscale_derp_clients") == 2 and m["oxiscale_map_streams"] == 2 else None

    joined = wait_for("both nodes on their map streams and the relay", both_on_the_relay, 60,
                      interval=1, on_timeout=lambda: str(scrape(url)))
    assert joined['oxiscale_nodes{state="online"}'] == 2, joined
    assert joined["oxiscale_users"] == 1, joined
    assert joined['oxiscale_registrations_total{result="authorized"}'] == 2, joined
    assert joined['oxiscale_map_messages_total{kind="full"}'] >= 2, joined
    assert joined['oxiscale_map_bytes_total{kind="full"}'] > 1000, joined
    assert joined['oxiscale_map_messages_total{kind="delta"}'] >= 1, "node-b learnt of node-a"
    assert joined["oxiscale_derp_packets_total"] > 0 and joined["oxiscale_derp_bytes_total"] > 0, (
        "node-a reached node-b through the relay")
    assert joined["oxiscale_store_commit_duration_seconds_count"] > 0, joined
    assert joined['oxiscale_http_request_duration_seconds_count{route="/ts2021"}'] >= 2, joined

    # A policy set from the command line is compiled against the tailnet.
    policy = test_dir / "policy.hujson"
    policy.write_text('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}')
    compiled_before = joined.get("oxiscale_policy_compile_duration_seconds_count", 0)
    server.cli("policy", "set", "-f", str(policy))
    after_policy = scrape(url)
    assert after_policy.get("oxiscale_policy_compile_duration_seconds_count", 0) > compiled_before

    a.stop()

    def one_left():
        m = scrape(url)
        return m if m['oxiscale_nodes{state="online"}'] == 1 else None

    left = wait_for("node-a to be counted offline", one_left, 60, interval=1,
                    on_timeout=lambda: str(scrape(url)))
    assert left['oxiscale_nodes{state="offline"}'] == 1, left
    assert left["oxiscale_map_streams"] == 1, left

    # The dashboard in the repository plots only series the server exports.
    exported = {re.sub(r"\{.*", "", k) for k in left}
    exported |= {re.sub(r"_(bucket|count|sum)$", "", k) for k in exported}
    plotted = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            plotted |= set(re.findall(r"oxiscale_[a-z_]+", target["expr"]))
    assert plotted and plotted <= exported, f"plotted but not exported: {plotted - exported}"
