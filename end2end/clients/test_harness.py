"""Checks of the harness itself; these need no oxiscale binary.

They prove the pieces the real tests stand on: the network namespace really is private, Caddy
nodes start with the generated config and dial the control URL they were given, teardown
leaves no process behind, the server lifecycle code works (against a stand-in), and the ts2021
initiator agrees with a responder built from the same spec.
"""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

import ts2021
from harness import (CaddyNode, HarnessError, Server, http_get, process_group_alive, wait_for)


def test_namespace_is_private():
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "veth0"],
                         capture_output=True, text=True, check=True).stdout
    assert "192.0.2.1/24" in out, f"veth0 should carry 192.0.2.1/24, got: {out!r}"
    # No default route: anything beyond the namespace fails at once instead of leaking.
    with socket.socket() as s:
        s.settimeout(5)
        err = s.connect_ex(("198.51.100.7", 443))
    assert err == errno.ENETUNREACH, f"expected ENETUNREACH for an outside address, got {err}"


class _RecordingControl:
    """A fake control URL that only records what it is asked (answers 404)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                outer.requests.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _any

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_caddy_nodes_start_dial_control_and_are_torn_down(test_dir: Path):
    ctl_b, ctl_a = _RecordingControl(), _RecordingControl()
    node_b = CaddyNode("node-b", "tskey-selfcheck-b", ctl_b.url, test_dir / "b",
                       serve_text="hello from node-b")
    node_a = CaddyNode("node-a", "tskey-selfcheck-a", ctl_a.url, test_dir / "a",
                       proxy_to=["node-b.tail.test", "100.64.0.2"])
    try:
        node_b.start()
        node_a.start()
        # A listener node starts its tsnet server at once and fetches the control key.
        wait_for("node-b to fetch /key from its control URL",
                 lambda: any(r.startswith("GET /key?v=") for r in ctl_b.requests), 30)
        # A proxy-only node starts lazily, on the first proxied request.
        assert not ctl_a.requests, f"node-a dialled control before any request: {ctl_a.requests}"
        try:  # with no working control the request fails or hangs; either is fine here
            status, _ = http_get(node_a.proxy_url("node-b.tail.test"), timeout=5)
            assert status >= 500, f"proxy without a tailnet should fail, got {status}"
        except TimeoutError:
            pass
        wait_for("node-a to fetch /key after the first proxied request",
                 lambda: any(r.startswith("GET /key?v=") for r in ctl_a.requests), 30)
        assert node_b.running() and node_a.running()
        assert "tailscale" in node_b.log_text(), "tsnet debug logs should reach the caddy log"
    finally:
        node_a.stop()
        node_b.stop()
        ctl_a.close()
        ctl_b.close()
    for node in (node_a, node_b):
        assert node.proc.poll() is not None, f"{node.name} still running"
        assert not process_group_alive(node.proc.pid), f"{node.name} left processes behind"
    # Nothing in the node's dir escaped to $HOME: the state dir is where we said.
    assert (node_b.state_dir / "tailscaled.state").exists() or (node_b.state_dir).exists()


STUB_SERVER = r'''#!/usr/bin/env python3
# Stand-in for `oxiscale`, just enough of the contract to exercise the harness.
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
data = os.environ["OXISCALE_DATA_DIR"]
db = os.path.join(data, "users.json")
args = [a for a in sys.argv[1:] if a not in ("-o", "json")]
if args == ["serve"]:
    if os.environ.get("STUB_CRASH") == "1":
        print("stub: crashing on purpose", flush=True); sys.exit(7)
    host, port = os.environ["OXISCALE_LISTEN_ADDR"].rsplit(":", 1)
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status":"pass"}' if self.path == "/health" else b"{}"
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    httpd = HTTPServer((host, int(port)), H)
    signal.signal(signal.SIGTERM, lambda *a: (print("stub: SIGTERM", flush=True), os._exit(0)))
    print("stub: listening", flush=True)
    httpd.serve_forever()
elif args[:2] == ["users", "create"]:
    users = json.load(open(db)) if os.path.exists(db) else []
    users.append({"id": len(users) + 1, "name": args[2]})
    json.dump(users, open(db, "w")); print(json.dumps(users[-1]))
elif args[:2] == ["users", "list"]:
    print(json.dumps(json.load(open(db)) if os.path.exists(db) else []))
else:
    print(f"stub: unknown command {args}", file=sys.stderr); sys.exit(2)
'''


def test_server_lifecycle_against_stub(test_dir: Path, monkeypatch: pytest.MonkeyPatch):
    stub = test_dir / "oxiscale-stub"
    stub.write_text(STUB_SERVER.replace("/usr/bin/env python3", sys.executable, 1))
    stub.chmod(0o755)
    srv = Server(stub, test_dir / "srv")
    try:
        srv.start(timeout=20)
        first_pid = srv.pid
        assert srv.rss_kib() > 0
        assert srv.create_user("alice") == {"id": 1, "name": "alice"}
        srv.restart()
        assert srv.pid != first_pid, "restart should start a new process"
        assert srv.cli("users", "list") == [{"id": 1, "name": "alice"}], \
            "state should survive a restart (same data dir)"
        with pytest.raises(HarnessError, match="exited 2"):
            srv.cli("nodes", "frobnicate")
    finally:
        code = srv.stop()
    assert code == 0, f"stub should exit 0 on SIGTERM, got {code}"
    log = srv.log_path.read_text()
    assert log.count("stub: listening") == 2 and log.count("stub: SIGTERM") == 2, log

    missing = Server(test_dir / "no-such-oxiscale", test_dir / "missing")
    with pytest.raises(HarnessError, match="oxiscale binary not found"):
        missing.start()

    monkeypatch.setenv("STUB_CRASH", "1")
    crashing = Server(stub, test_dir / "crash")
    with pytest.raises(HarnessError, match=r"exited with code 7(.|\n)*crashing on purpose"):
        crashing.start(timeout=20)


def _respond(server_priv: X25519PrivateKey, message: bytes):
    """Noise IK responder from 01 §3, to cross-check the initiator."""
    version = int.from_bytes(message[:2], "big")
    assert message[2] == 1 and int.from_bytes(message[3:5], "big") == 96 and len(message) == 101
    st = ts2021._Symmetric()
    st.mix_hash(b"Tailscale Control Protocol v%d" % version)
    st.mix_hash(ts2021._pub_bytes(server_priv.public_key()))
    e_i = message[5:37]
    st.mix_hash(e_i)
    st.mix_key(server_priv.exchange(X25519PublicKey.from_public_bytes(e_i)))
    machine_pub = st.decrypt_and_hash(message[37:85])
    st.mix_key(server_priv.exchange(X25519PublicKey.from_public_bytes(machine_pub)))
    st.decrypt_and_hash(message[85:101])
    e_r = X25519PrivateKey.generate()
    e_r_pub = ts2021._pub_bytes(e_r.public_key())
    st.mix_hash(e_r_pub)
    st.mix_key(e_r.exchange(X25519PublicKey.from_public_bytes(e_i)))
    st.mix_key(e_r.exchange(X25519PublicKey.from_public_bytes(machine_pub)))
    tag = st.encrypt_and_hash(b"")
    k1, k2 = st.split()
    return bytes([2, 0, 48]) + e_r_pub + tag, machine_pub, k1, k2


def test_ts2021_initiator_matches_spec_responder():
    server_priv = X25519PrivateKey.generate()
    server_pub = ts2021._pub_bytes(server_priv.public_key())
    left, right = socket.socketpair()
    result: dict = {}

    def server_side():
        head = b""
        while b"\r\n\r\n" not in head:
            head += right.recv(4096)
        hdr = [l for l in head.split(b"\r\n") if l.lower().startswith(b"x-tailscale-handshake:")]
        import base64
        msg = base64.b64decode(hdr[0].split(b":", 1)[1].strip())
        resp, machine_pub, k1, k2 = _respond(server_priv, msg)
        result["machine_pub"] = machine_pub
        right.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol"
                      b"\r\nConnection: upgrade\r\n\r\n" + resp)
        # Two records server->client with counters 0 and 1 (big-endian nonce matters at 1).
        for n, text in enumerate([b"first", b"second"]):
            ct = ChaCha20Poly1305(k2).encrypt(ts2021._transport_nonce(n), text, None)
            right.sendall(bytes([4]) + len(ct).to_bytes(2, "big") + ct)
        hdr3 = right.recv(3, socket.MSG_WAITALL)
        assert hdr3[0] == 4, hdr3
        ln = int.from_bytes(hdr3[1:3], "big")
        ct = right.recv(ln, socket.MSG_WAITALL)
        result["from_client"] = ChaCha20Poly1305(k1).decrypt(ts2021._transport_nonce(0), ct, None)

    t = threading.Thread(target=server_side, daemon=True)
    t.start()
    session = ts2021.handshake(left, "127.0.0.1:1", server_pub)
    assert session.read_record() == b"first"
    assert session.read_record() == b"second"
    left.sendall(session.seal_record(b"PRI * HTTP/2.0"))
    t.join(10)
    assert result["from_client"] == b"PRI * HTTP/2.0"
    left.close()
    right.close()
