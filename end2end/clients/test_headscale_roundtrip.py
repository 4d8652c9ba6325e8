"""The way back to headscale and forward again, with real clients (issue #20).

Two tsnet nodes on oxiscale; the tailnet exported to headscale 0.29's schema
(`oxiscale export headscale`); a fresh oxiscale started on that file the way a headscale
user starts it (`-c config.yaml` naming headscale's database and Noise key) takes it over.
The nodes, left running throughout, reconnect with the same identities and addresses,
never log in again, and reach each other.
"""

from __future__ import annotations

import shutil
import time

from harness import wait_for
from test_control_plane import HELLO_B, magicdns, node_snapshot, setup_user, start_pair


def test_nodes_survive_an_export_to_headscale_and_a_takeover(server, caddy_node, test_dir,
                                                             figures):
    user = setup_user(server)
    a, b, nb, _ = start_pair(server, caddy_node, user)
    a.wait_reach(magicdns(nb), HELLO_B)
    server.wait_node("node-a")
    before = sorted(server.nodes(), key=lambda n: n["id"])
    old_data = server.data_dir

    server.stop()
    headscale_dir = test_dir / "headscale"
    headscale_dir.mkdir()
    exported = headscale_dir / "db.sqlite"
    t_export = time.monotonic()
    summary = server.cli("export", "headscale", "--to", str(exported))
    export_s = time.monotonic() - t_export
    assert (summary["users"], summary["nodes"]) == (1, 2), summary
    assert summary["headscale_version"] == "v0.29.2", summary

    # headscale's layout: its database and Noise key, and a config that names both.
    noise = headscale_dir / "noise_private.key"
    shutil.copy(old_data / "noise_private.key", noise)
    config = headscale_dir / "config.yaml"
    config.write_text(
        "database:\n  type: sqlite\n  sqlite:\n"
        f"    path: {exported}\n"
        f"noise:\n  private_key_path: {noise}\n")
    server.data_dir = test_dir / "fresh"
    server.data_dir.mkdir()
    server.extra_args = ["-c", str(config)]
    t_start = time.monotonic()
    server.start()

    def both_online():
        nodes = server.nodes()
        return nodes if len(nodes) == 2 and all(n.get("online") for n in nodes) else None

    after = sorted(wait_for("both nodes online on the server that took the export over",
                            both_online, 120, interval=1,
                            on_timeout=lambda: f"nodes: {server.nodes()}"),
                   key=lambda n: n["id"])
    t_online = time.monotonic()
    assert [node_snapshot(n) for n in after] == [node_snapshot(n) for n in before], (
        "ids, names, addresses or keys changed through the export and the takeover")
    assert a.running() and b.running()
    assert a.auth_url() is None and b.auth_url() is None, "no node was asked to log in"
    a.wait_reach(magicdns(nb), HELLO_B)
    t_reach = time.monotonic()
    backups = sorted(p.name for p in headscale_dir.iterdir() if ".backup-" in p.name)
    assert backups and backups[0].startswith("db.sqlite.backup-"), list(headscale_dir.iterdir())
    log = server.log_path.read_text("utf-8", "replace")
    assert "headscale takeover: imported headscale" in log, "the takeover says what it did"

    figures.record("headscale_roundtrip", export_s=round(export_s, 2),
                   start_to_both_online_s=round(t_online - t_start, 2),
                   start_to_request_s=round(t_reach - t_start, 2), nodes=2)
