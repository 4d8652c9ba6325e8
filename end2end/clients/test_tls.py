"""HTTPS from certificate files, with real clients (tsnet 1.90.9 in Caddy).

The server serves only HTTPS with a certificate from a throwaway CA (IP SAN 127.0.0.1,
server_url https://127.0.0.1:PORT). The clients trust that CA through SSL_CERT_FILE and run
with nothing else changed: no TS_DEBUG_USE_DERP_HTTP, so the embedded DERP is dialed over
TLS exactly as the DERP map announces it. With TS_DEBUG_ALWAYS_USE_DERP=1 the bytes between
the two nodes can only cross that relay.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time

import pytest

from harness import Server, oxiscale_bin, tail, wait_for
from pki import make_tls_files
from test_control_plane import DIRECT_PATH, HELLO_B, ipv4_of, magicdns, setup_user, start_pair


@pytest.fixture
def server_tls(test_dir):
    """Overrides conftest's: the `server` fixture serves HTTPS with these files."""
    return make_tls_files(test_dir / "pki", ["127.0.0.1"])


def plain_http_answer(port: int) -> bytes:
    """What a plain-HTTP request to the port gets back (never an HTTP response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return data


def served_der(server: Server) -> bytes:
    """The certificate the server presents now (verified against the test CA)."""
    pem = ssl.get_server_certificate(("127.0.0.1", server.http_port), ca_certs=str(server.tls.ca),
                                     timeout=5)
    return ssl.PEM_cert_to_DER_cert(pem)


def test_nodes_join_over_https_and_relay_through_tls_derp(server: Server, caddy_node, figures):
    assert server.url.startswith("https://127.0.0.1:"), server.url
    assert not plain_http_answer(server.http_port).startswith(b"HTTP/"), (
        "plain HTTP got an HTTP answer from the TLS listener")

    user = setup_user(server)
    a, b, nb, t0 = start_pair(server, caddy_node, user, always_derp=True)
    for node in (a, b):
        assert "TS_DEBUG_USE_DERP_HTTP" not in node.env, "DERP must be dialed over TLS"
        assert node.env.get("SSL_CERT_FILE") == str(server.tls.ca)
    t_ip = a.wait_reach(ipv4_of(nb), HELLO_B)
    a.wait_reach(magicdns(nb), HELLO_B)
    for node in (a, b):
        node.wait_log(r"disabled udp4 per TS_DEBUG_ALWAYS_USE_DERP", timeout=5)
        node.wait_log(r"magicsock: derp-\d+ connected", timeout=30)
    assert not DIRECT_PATH.search(a.log_text()), "node-a found a direct path despite DERP-only"

    # A renewal: new files on disk, served without a restart; a node that joins now checks
    # the new certificate for control and DERP alike.
    renewed = ssl.PEM_cert_to_DER_cert(server.tls.reissue(["127.0.0.1"]).decode())
    t_renew = time.monotonic()
    wait_for("the server to serve the renewed certificate",
             lambda: served_der(server) == renewed, 15)
    t_served = time.monotonic()
    c = caddy_node("node-c", server.create_key(user["id"])["key"], always_derp=True,
                   proxy_to=[ipv4_of(nb)])
    c.wait_reach(ipv4_of(nb), HELLO_B)
    c.wait_log(r"magicsock: derp-\d+ connected", timeout=30)
    assert not DIRECT_PATH.search(c.log_text()), "node-c found a direct path despite DERP-only"
    for node in (a, b, c):
        assert "x509:" not in node.log_text(), (
            f"{node.name} refused a certificate:\n{tail(node.log_path, 30)}")

    figures.record("tls_two_nodes[derp]", mode="derp over TLS",
                   first_request_by_ip_s=round(t_ip - t0, 2),
                   renewed_cert_served_after_s=round(t_served - t_renew, 2), nodes=3)


@pytest.mark.parametrize("problem", ["wrong-name", "missing-key"])
def test_bad_certificate_files_stop_the_server_with_the_reason(test_dir, problem: str):
    pki = make_tls_files(test_dir / "pki",
                         ["vpn.example.org"] if problem == "wrong-name" else ["127.0.0.1"])
    if problem == "missing-key":
        pki.key.unlink()
    srv = Server(oxiscale_bin(), test_dir / "srv", tls=pki)
    with open(srv.log_path, "wb") as log:
        proc = subprocess.run([str(srv.binary), "serve"], env=srv.env, cwd=srv.workdir,
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              timeout=30)
    text = srv.log_path.read_text("utf-8", "replace")
    assert proc.returncode != 0, f"the server ran with bad certificate files:\n{text[-2000:]}"
    if problem == "wrong-name":
        assert "not valid for 127.0.0.1" in text and "vpn.example.org" in text, text[-2000:]
    else:
        assert "cannot read the TLS key file" in text and str(pki.key) in text, text[-2000:]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", srv.http_port)) != 0, "something listens"
