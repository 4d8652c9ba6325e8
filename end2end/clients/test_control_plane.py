"""Real Tailscale clients (caddy-tailscale, tsnet 1.90.9) against `oxiscale serve` (issue #2).

Each test starts its own server with a fresh data dir, creates a user and pre-auth keys with
the CLI, runs Caddy processes as tailnet nodes and checks traffic through the tailnet.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import socket
import time

import pytest

import ts2021
from harness import CaddyNode, HarnessError, Server, http_get, wait_for

HELLO_B = "hello from node-b"
HELLO_C = "hello from node-c"
DOMAIN = "tail.test"
DIRECT_PATH = re.compile(r"magicsock: disco: node \S+ d:\S+ now using \d+\.\d+\.\d+\.\d+:\d+")
REGISTER_ERROR = re.compile(r"Received error: (?!EOF)[^\n]+|tsnet\.Up: backend: [^\n]+")


def ipv4_of(node: dict) -> str:
    for addr in node.get("ip_addresses") or []:
        if "." in addr:
            return addr
    raise HarnessError(f"node {node.get('name')!r} has no IPv4 address: {node!r}")


def proto_time(t: dict) -> dt.datetime:
    """A time as headscale's -o json prints it: {"seconds": …, "nanos": …}."""
    return dt.datetime.fromtimestamp(t.get("seconds", 0) + t.get("nanos", 0) / 1e9, dt.timezone.utc)


def magicdns(node: dict) -> str:
    return f"{node['given_name']}.{DOMAIN}"


def setup_user(server: Server, name: str = "alice") -> dict:
    user = server.create_user(name)
    assert isinstance(user.get("id"), int) and user["id"] > 0, f"bad user JSON: {user!r}"
    assert user.get("name") == name, f"bad user JSON: {user!r}"
    return user


def node_snapshot(node: dict) -> dict:
    return {k: node.get(k) for k in ("id", "name", "given_name", "ip_addresses", "node_key",
                                      "machine_key")}


def check_connected_node(node: dict, user: dict) -> None:
    assert node.get("online") is True, f"{node.get('name')} should be online: {node!r}"
    addrs = node.get("ip_addresses") or []
    assert any(a.startswith("100.") for a in addrs), f"no 100.x IPv4 in {addrs}"
    assert any(a.lower().startswith("fd7a:115c:a1e0:") for a in addrs), f"no fd7a: IPv6 in {addrs}"
    assert str(node.get("node_key", "")).startswith("nodekey:"), node
    assert str(node.get("machine_key", "")).startswith("mkey:"), node
    assert (node.get("user") or {}).get("id") == user["id"], f"wrong owner: {node!r}"


def start_pair(server: Server, caddy_node, user: dict, *, always_derp: bool = False,
               extra_upstreams_for_a: tuple[str, ...] = ()):
    """node-b serves HELLO_B; node-a proxies to node-b's IP and MagicDNS name.

    Returns (a, b, node_b_json, t0) where t0 is the monotonic time node-b was started.
    """
    key_b = server.create_key(user["id"])
    key_a = server.create_key(user["id"])
    b = caddy_node("node-b", key_b["key"], serve_text=HELLO_B, always_derp=always_derp)
    t0 = b.started_at
    nb = server.wait_node("node-b")
    a = caddy_node("node-a", key_a["key"], always_derp=always_derp,
                   proxy_to=[ipv4_of(nb), magicdns(nb), *extra_upstreams_for_a])
    return a, b, nb, t0


# ---------------------------------------------------------------------------------------------
# a. / b. traffic between two nodes, direct and through the embedded DERP
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("always_derp", [False, True], ids=["direct", "derp"])
def test_two_nodes_reach_each_other_by_ip_and_magicdns(server: Server, caddy_node, figures,
                                                      always_derp: bool):
    user = setup_user(server)
    a, b, nb, t0 = start_pair(server, caddy_node, user, always_derp=always_derp)
    t_registered_b = time.monotonic()

    t_ip = a.wait_reach(ipv4_of(nb), HELLO_B)
    t_dns = a.wait_reach(magicdns(nb), HELLO_B)
    if always_derp:
        # Direct UDP is off, so the bytes that arrived can only have crossed the embedded DERP.
        for node in (a, b):
            node.wait_log(r"disabled udp4 per TS_DEBUG_ALWAYS_USE_DERP", timeout=5)
            node.wait_log(r"magicsock: derp-\d+ connected", timeout=30)
        assert not DIRECT_PATH.search(a.log_text()), "node-a found a direct path despite DERP-only"
        t_path = None
    else:
        # Endpoints were relayed through control: magicsock switches to a direct UDP path.
        a.wait_log(DIRECT_PATH.pattern, timeout=30)
        t_path = time.monotonic()

    na = server.wait_node("node-a")
    nodes = {n["name"]: n for n in server.nodes()}
    assert set(nodes) == {"node-a", "node-b"}, f"unexpected nodes: {list(nodes)}"
    for n in nodes.values():
        check_connected_node(n, user)
    assert set(na["ip_addresses"]).isdisjoint(nb["ip_addresses"]), "nodes share an address"
    assert nodes["node-b"]["given_name"] == "node-b", nodes["node-b"]

    figures.record(
        f"two_nodes[{'derp' if always_derp else 'direct'}]",
        mode="derp" if always_derp else "direct",
        node_b_registered_s=round(t_registered_b - t0, 2),
        first_request_by_ip_s=round(t_ip - t0, 2),
        first_request_by_ip_after_node_a_start_s=round(t_ip - a.started_at, 2),
        first_request_by_magicdns_s=round(t_dns - t0, 2),
        direct_path_seen_by_s=None if t_path is None else round(t_path - t0, 2),
        server_rss_kib=server.rss_kib(),
        nodes=2,
    )


# ---------------------------------------------------------------------------------------------
# c. state survives a server restart
# ---------------------------------------------------------------------------------------------


def test_nodes_survive_server_restart(server: Server, caddy_node, figures):
    user = setup_user(server)
    a, b, nb, t0 = start_pair(server, caddy_node, user)
    t_first = a.wait_reach(magicdns(nb), HELLO_B)
    server.wait_node("node-a")
    before = sorted(server.nodes(), key=lambda n: n["id"])
    assert [n["name"] for n in before] == ["node-b", "node-a"], before
    for n in before:
        check_connected_node(n, user)
    keys_before = server.cli("preauthkeys", "list")
    rss_before = server.rss_kib()

    t_restart = time.monotonic()
    server.restart()
    t_healthy = time.monotonic()

    def both_online():
        nodes = server.nodes()
        return nodes if len(nodes) == 2 and all(n.get("online") for n in nodes) else None

    after = sorted(wait_for("both nodes to be online again after the restart", both_online, 120,
                            interval=1, on_timeout=lambda: f"nodes list: {server.nodes()}"),
                   key=lambda n: n["id"])
    t_online = time.monotonic()
    assert a.running() and b.running(), "caddy nodes must survive the server restart"
    assert [node_snapshot(n) for n in after] == [node_snapshot(n) for n in before], (
        "node identity changed across the restart (ids, names, addresses or keys)")
    t_again = a.wait_reach(magicdns(nb), HELLO_B)
    assert a.get_via(ipv4_of(nb))[1].strip() == HELLO_B
    keys_after = server.cli("preauthkeys", "list")
    assert len(keys_after or []) == len(keys_before or []), (
        f"pre-auth keys changed across the restart: {keys_before} -> {keys_after}")

    figures.record(
        "server_restart",
        first_request_s=round(t_first - t0, 2),
        restart_to_healthy_s=round(t_healthy - t_restart, 2),
        restart_to_both_online_s=round(t_online - t_restart, 2),
        restart_to_request_s=round(t_again - t_restart, 2),
        server_rss_kib_before=rss_before,
        server_rss_kib_after=server.rss_kib(),
        nodes=2,
    )


# ---------------------------------------------------------------------------------------------
# d. keys and node lifecycle
# ---------------------------------------------------------------------------------------------


def _assert_refused(server: Server, node: CaddyNode, known: set[str], reason: str) -> str:
    match = node.wait_log(REGISTER_ERROR.pattern, timeout=60)
    assert re.search(reason, match.group(0), re.I), (
        f"the client's error should say why (/{reason}/): {match.group(0)!r}")
    names = {n["name"] for n in server.nodes()}
    assert node.name not in names, f"{node.name} registered although its key is invalid: {names}"
    assert names == known, f"nodes changed: expected {known}, got {names}"
    return match.group(0)


def test_used_single_use_key_is_refused(server: Server, caddy_node, figures):
    user = setup_user(server)
    key = server.create_key(user["id"])
    # headscale's -o json leaves false out.
    assert not key.get("reusable") and not key.get("used"), key
    b = caddy_node("node-b", key["key"], serve_text=HELLO_B)
    server.wait_node("node-b")
    keys = {k["id"]: k for k in server.cli("preauthkeys", "list")}
    assert keys[key["id"]].get("used") is True, f"key should be marked used: {keys[key['id']]}"

    t0 = time.monotonic()
    x = caddy_node("node-x", key["key"], serve_text="should never be reachable")
    error = _assert_refused(server, x, {"node-b"}, reason=r"used|invalid")
    print(f"\nnode-x refused after {time.monotonic() - t0:.1f}s: {error}")
    assert b.running()
    figures.record("used_key_refused", refused_after_s=round(time.monotonic() - t0, 2),
                   client_error=error[:200], server_rss_kib=server.rss_kib(), nodes=1)


def test_expired_key_is_refused(server: Server, caddy_node, figures):
    user = setup_user(server)
    key = server.create_key(user["id"], expiration="2s")
    expires = proto_time(key["expiration"])
    now = dt.datetime.now(dt.timezone.utc)
    assert now < expires <= now + dt.timedelta(seconds=10), f"expiration not ~2s ahead: {key}"
    # This test is about time passing: wait until the key has expired.
    time.sleep(max(0.0, (expires - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 1.0)

    t0 = time.monotonic()
    x = caddy_node("node-x", key["key"], serve_text="should never be reachable")
    error = _assert_refused(server, x, set(), reason=r"expir|invalid")
    print(f"\nnode-x refused after {time.monotonic() - t0:.1f}s: {error}")
    figures.record("expired_key_refused", refused_after_s=round(time.monotonic() - t0, 2),
                   client_error=error[:200], server_rss_kib=server.rss_kib(), nodes=0)


def test_stopped_ephemeral_node_is_removed(server: Server, caddy_node, figures):
    user = setup_user(server)
    eph_key = server.create_key(user["id"], ephemeral=True)
    assert eph_key.get("ephemeral") is True, eph_key
    perm_key = server.create_key(user["id"])
    eph = caddy_node("node-e", eph_key["key"], ephemeral=True, serve_text="ephemeral")
    perm = caddy_node("node-p", perm_key["key"], serve_text="permanent")
    ne = server.wait_node("node-e")
    np_ = server.wait_node("node-p")
    # headscale tells an ephemeral node by its pre-auth key.
    assert (ne.get("pre_auth_key") or {}).get("ephemeral") is True, f"node-e should be ephemeral: {ne}"
    assert not (np_.get("pre_auth_key") or {}).get("ephemeral"), f"node-p should not be ephemeral: {np_}"
    rss = server.rss_kib()

    # A crash, not a clean logout: the server has to notice the lost session and time it out.
    t_kill = time.monotonic()
    eph.kill()
    perm.kill()
    wait_for("ephemeral node-e to disappear from `nodes list` (inactivity timeout 5s)",
             lambda: server.node_named("node-e") is None, 90, interval=0.5,
             on_timeout=lambda: f"nodes list: {server.nodes()}")
    gone_after = time.monotonic() - t_kill
    remaining = server.node_named("node-p")
    assert remaining is not None, "the non-ephemeral node must stay after going offline"
    wait_for("node-p to be shown offline", lambda: not server.node_named("node-p").get("online"),
             30, interval=0.5)
    figures.record("ephemeral_removed", gone_after_kill_s=round(gone_after, 2),
                   inactivity_timeout_s=5, server_rss_kib=rss, nodes=2)


def test_cli_expired_node_loses_its_peers(server: Server, caddy_node, figures):
    user = setup_user(server)
    a, b, nb, t0 = start_pair(server, caddy_node, user)
    dns_b = magicdns(nb)
    t_first = a.wait_reach(dns_b, HELLO_B)
    rss = server.rss_kib()
    # Both ways work right before the expiry, so a failure afterwards is caused by it.
    for upstream in (dns_b, ipv4_of(nb)):
        assert a.get_via(upstream) == (200, HELLO_B), f"node-a -> {upstream} before expiry"

    t_expire = time.monotonic()
    server.cli("nodes", "expire", "-i", str(nb["id"]))
    expired = server.node_named("node-b")
    assert expired is not None and expired.get("expiry"), f"node-b should carry an expiry: {expired}"
    assert proto_time(expired["expiry"]) <= \
        dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1), expired

    failures: list[object] = []

    def unreachable():
        # Two failures in a row, so one dropped packet is not taken for the loss of the peer.
        for upstream in (dns_b, ipv4_of(nb)):
            try:
                status, body = a.get_via(upstream, timeout=5)
            except OSError as exc:
                failures.append(exc)
                continue
            if status == 200 and body.strip() == HELLO_B:
                failures.clear()
                return False
            failures.append(status)
        return len(failures) >= 2

    wait_for("node-a to lose node-b after `nodes expire`", unreachable, 90, interval=1,
             on_timeout=lambda: f"nodes list: {server.nodes()}")
    lost_after = time.monotonic() - t_expire
    print(f"\nnode-a lost node-b {lost_after:.2f}s after `nodes expire`; answers: {failures}")
    figures.record("expired_node_loses_peers", first_request_s=round(t_first - t0, 2),
                   lost_after_expire_s=round(lost_after, 2), server_rss_kib=rss, nodes=2)


# ---------------------------------------------------------------------------------------------
# e. a third node joins a running tailnet
# ---------------------------------------------------------------------------------------------


def test_third_node_joins_without_reconnecting_others(server: Server, caddy_node, figures):
    user = setup_user(server)
    a, b, nb, t0 = start_pair(server, caddy_node, user,
                              extra_upstreams_for_a=(f"node-c.{DOMAIN}",))
    t_first = a.wait_reach(magicdns(nb), HELLO_B)
    server.wait_node("node-a")
    pids = (a.proc.pid, b.proc.pid)

    key_c = server.create_key(user["id"])
    c = caddy_node("node-c", key_c["key"], serve_text=HELLO_C)
    nc = server.wait_node("node-c")
    assert nc["given_name"] == "node-c", f"node-a proxies to node-c.{DOMAIN}; got {nc}"
    t_c = a.wait_reach(f"node-c.{DOMAIN}", HELLO_C)
    assert a.running() and b.running() and (a.proc.pid, b.proc.pid) == pids, (
        "node-a and node-b must keep running while node-c joins")
    assert a.get_via(magicdns(nb))[1].strip() == HELLO_B, "node-a lost node-b when node-c joined"
    assert all(n.get("online") for n in server.nodes()), server.nodes()

    figures.record("third_node_joins", first_request_s=round(t_first - t0, 2),
                   node_c_first_request_s=round(t_c - c.started_at, 2),
                   server_rss_kib=server.rss_kib(), nodes=3)


# ---------------------------------------------------------------------------------------------
# f. bad input on the control port does not hurt anyone else
# ---------------------------------------------------------------------------------------------


def _read_until_close(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read everything until the peer closes; returns (data, closed_within_timeout)."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _status(data: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else None


def _send_quietly(sock: socket.socket, payload: bytes) -> None:
    try:
        sock.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may hang up before reading everything; that is a fine answer


def _garbage_cases(port: int, server_pub: bytes) -> list[tuple[str, object]]:
    host = f"127.0.0.1:{port}"
    junk = os.urandom(64 * 1024)

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=10)

    def expect_closed(name, sock, payload=b"", timeout=10.0):
        _send_quietly(sock, payload)
        data, closed = _read_until_close(sock, timeout)
        sock.close()
        return name, data, closed

    def noise_then(payload_fn):
        sock = connect()
        session = ts2021.handshake(sock, host, server_pub)
        return sock, payload_fn(session)

    cases: list[tuple[str, object]] = []

    def case(name):
        def deco(fn):
            cases.append((name, fn))
            return fn
        return deco

    @case("upgrade with undecryptable initiation, then garbage")
    def _():
        sock = connect()
        _, data, closed = expect_closed(
            "", sock, ts2021.upgrade_request(host, ts2021.random_initiation()) + junk)
        problems = []
        if not closed:
            problems.append("connection still open after 10s")
        head, _, rest = data.partition(b"\r\n\r\n")
        if _status(data) == 101 and rest[:1] == b"\x02":
            problems.append("server answered an undecryptable initiation with a Noise response")
        return problems, data[:80]

    @case("upgrade with non-base64 handshake header")
    def _():
        sock = connect()
        _send_quietly(sock, ts2021.upgrade_request(host, "!!not*base64!!") + junk[:1024])
        data, _ = _read_until_close(sock, 10)
        sock.close()
        st = _status(data)
        return ([] if st is not None and 400 <= st < 500 else
                [f"expected a 4xx answer, got {data[:80]!r}"]), data[:80]

    @case("upgrade with a 64 KiB handshake header")
    def _():
        sock = connect()
        big = base64.b64encode(os.urandom(48 * 1024)).decode()
        _send_quietly(sock, ts2021.upgrade_request(host, big))
        data, closed = _read_until_close(sock, 10)
        sock.close()
        st = _status(data)
        ok = (st is not None and 400 <= st < 500) or (closed and st is None)
        return ([] if ok else [f"expected 4xx or a closed connection, got {data[:80]!r} "
                               f"(closed={closed})"]), data[:80]

    @case("valid handshake, then a record header claiming 65535 bytes")
    def _():
        sock, payload = noise_then(lambda s: b"\x04\xff\xff" + junk[:4096])
        _, data, closed = expect_closed("", sock, payload)
        return ([] if closed else ["connection still open 10s after an oversized frame"]), None

    @case("valid handshake, then a record that does not decrypt")
    def _():
        sock, payload = noise_then(lambda s: b"\x04\x00\x40" + junk[:64])
        _, data, closed = expect_closed("", sock, payload)
        return ([] if closed else ["connection still open 10s after a bad record"]), None

    @case("valid handshake, then an unknown message type")
    def _():
        sock, payload = noise_then(lambda s: b"\x07\x00\x10" + junk[:16])
        _, data, closed = expect_closed("", sock, payload)
        return ([] if closed else ["connection still open 10s after a bad message type"]), None

    @case("valid handshake, then encrypted garbage instead of the HTTP/2 preface")
    def _():
        sock, payload = noise_then(lambda s: s.seal_record(junk[:2000]) + s.seal_record(junk[:100]))
        _, data, closed = expect_closed("", sock, payload)
        return ([] if closed else ["connection still open 10s after a bad h2 preface"]), None

    @case("POST /ts2021 with a garbage body and no Upgrade")
    def _():
        sock = connect()
        body = junk[:4096]
        _send_quietly(sock, (f"POST /ts2021 HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}"
                             "\r\nConnection: close\r\n\r\n").encode() + body)
        data, _ = _read_until_close(sock, 10)
        sock.close()
        st = _status(data)
        return ([] if st is not None and 400 <= st < 500 else
                [f"expected a 4xx answer, got {data[:80]!r}"]), data[:80]

    @case("raw binary garbage instead of HTTP")
    def _():
        sock = connect()
        _, data, closed = expect_closed("", sock, b"\x16\x03\x01" + junk[:8192])
        st = _status(data)
        ok = closed and (st is None or 400 <= st < 500)
        return ([] if ok else [f"expected 4xx/close, got {data[:80]!r} (closed={closed})"]), data[:80]

    return cases


def test_bad_input_does_not_disturb_the_tailnet(server: Server, caddy_node, figures):
    user = setup_user(server)
    a, b, nb, t0 = start_pair(server, caddy_node, user)
    t_first = a.wait_reach(magicdns(nb), HELLO_B)
    rss_before = server.rss_kib()

    status, body = http_get(f"{server.url}/key?v={ts2021.CAPABILITY_VERSION}")
    assert status == 200, f"/key answered {status}: {body[:200]}"
    server_pub = ts2021.parse_server_key(json.loads(body))

    problems: list[str] = []
    for name, fn in _garbage_cases(server.http_port, server_pub):
        try:
            issues, sample = fn()
        except (ts2021.HandshakeError, OSError) as exc:
            issues, sample = [f"harness could not deliver the input: {exc!r}"], None
        print(f"\n[bad input] {name}: {'ok' if not issues else issues} answer={sample!r}")
        problems += [f"{name}: {i}" for i in issues]
        if not server.alive():
            pytest.fail(f"oxiscale died after: {name}")
        if not server.healthy():
            problems.append(f"{name}: /health not 200 afterwards")

    assert server.alive(), "oxiscale must survive bad input"
    t_after = time.monotonic()
    a.wait_reach(magicdns(nb), HELLO_B, timeout=30)
    assert a.get_via(ipv4_of(nb))[1].strip() == HELLO_B
    assert all(n.get("online") for n in server.nodes()), server.nodes()
    figures.record("bad_input", first_request_s=round(t_first - t0, 2),
                   request_after_bad_input_s=round(time.monotonic() - t_after, 2),
                   server_rss_kib_before=rss_before, server_rss_kib_after=server.rss_kib(),
                   nodes=2)
    assert not problems, "bad input was not rejected cleanly:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# g. DNS settings changed from the CLI reach running clients
# ---------------------------------------------------------------------------------------------


def test_dns_set_renames_the_tailnet_for_running_clients(server: Server, caddy_node, test_dir):
    user = setup_user(server)
    renamed = "node-b.tail2.test"
    a, _, nb, _ = start_pair(server, caddy_node, user, extra_upstreams_for_a=(renamed,))
    a.wait_reach(magicdns(nb), HELLO_B)
    settings = server.cli("dns", "get")
    assert settings["base_domain"] == DOMAIN, settings

    # A misspelt field is named with its line, a bad value is named; nothing changes.
    bad = test_dir / "dns-bad.json"
    bad.write_text(json.dumps({**settings, "nameserver": ["9.9.9.9"]}, indent=2))
    with pytest.raises(HarnessError, match=r"unknown field `nameserver`.* line \d+"):
        server.cli("dns", "set", "--file", str(bad))
    bad.write_text(json.dumps({**settings, "nameservers": ["not-an-address"]}))
    with pytest.raises(HarnessError, match="not-an-address"):
        server.cli("dns", "set", "--file", str(bad))
    assert server.cli("dns", "get") == settings

    good = test_dir / "dns.json"
    good.write_text(json.dumps({**settings, "base_domain": "tail2.test"}))
    saved = server.cli("dns", "set", "--file", str(good))
    assert saved["base_domain"] == "tail2.test", saved
    # node-a learns node-b's new name from its open map stream, without restarting.
    a.wait_reach(renamed, HELLO_B, timeout=30)
    server.restart()
    assert server.cli("dns", "get") == saved
