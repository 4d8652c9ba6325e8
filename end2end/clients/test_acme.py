"""HTTPS with a certificate from ACME, against a real ACME server: Debian's pebble.

Inside the private network namespace (run.sh): pebble-challtestsrv answers DNS for every name
with 127.0.0.1; pebble (its ACME directory on 127.0.0.1:14000, HTTPS with a throwaway CA the
server trusts through acme_ca_file) validates HTTP-01 on port 5002 and TLS-ALPN-01 on port
5001, so oxiscale's main listener is 127.0.0.1:5001 and its HTTP-01 responder
(tls_letsencrypt_listen) 127.0.0.1:5002. A TLS client that trusts only pebble's issuing root
(from its management interface, /roots/0) checks what is served for oxiscale.test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from conftest import _register_log
from harness import Server, oxiscale_bin, stop_process_group, tail, wait_for
from pki import make_tls_files
from test_control_plane import DIRECT_PATH, HELLO_B, ipv4_of, setup_user, start_pair

HOSTNAME = "oxiscale.test"
TLS_PORT = 5001  # pebble's tlsPort: TLS-ALPN-01 validations dial it; the main listener
HTTP01_PORT = 5002  # pebble's httpPort: HTTP-01 validations dial it
ACME_DIR = "https://127.0.0.1:14000/dir"
MANAGEMENT = "https://127.0.0.1:15000"


@dataclass
class Pebble:
    """pebble and pebble-challtestsrv, started in `workdir`; restartable."""

    workdir: Path
    validity_s: int

    def __post_init__(self) -> None:
        self.pki = make_tls_files(self.workdir / "pebble-pki", ["localhost", "127.0.0.1"])
        self.config = self.workdir / "pebble-config.json"
        self.config.write_text(json.dumps({"pebble": {
            "listenAddress": "127.0.0.1:14000",
            "managementListenAddress": "127.0.0.1:15000",
            "certificate": str(self.pki.cert),
            "privateKey": str(self.pki.key),
            "httpPort": HTTP01_PORT,
            "tlsPort": TLS_PORT,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": self.validity_s,
        }}))
        self.log_path = self.workdir / "pebble.log"
        self.procs: list[subprocess.Popen] = []
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts} =====\n".encode())
        log.flush()
        if not self.procs:
            # DNS only: every A query answers 127.0.0.1, no AAAA; its own challenge
            # responders stay off (oxiscale answers the challenges).
            self.procs.append(subprocess.Popen(
                ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                 "-dns01", "127.0.0.1:8053", "-http01", "", "-https01", "", "-tlsalpn01", "",
                 "-management", "127.0.0.1:8055"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        self.pebble = subprocess.Popen(
            ["pebble", "-config", str(self.config), "-dnsserver", "127.0.0.1:8053"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(self.pebble)
        log.close()
        wait_for("pebble's ACME directory", lambda: self._get(ACME_DIR), 20)
        self.root = self._root()

    def stop_pebble(self) -> None:
        stop_process_group(self.pebble, grace=5)
        self.procs.remove(self.pebble)

    def stop(self) -> None:
        for proc in self.procs:
            stop_process_group(proc, grace=5)
        self.procs.clear()

    def _get(self, url: str) -> bytes | None:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as rsp:
                return rsp.read()
        except OSError:
            return None

    def _root(self) -> str:
        pem = self._get(f"{MANAGEMENT}/roots/0")
        assert pem and b"BEGIN CERTIFICATE" in pem, pem
        return pem.decode()

    def root_pem(self) -> str:
        """The root pebble issues under (new at every pebble start: the last one's)."""
        return self.root

    def orders(self) -> int:
        """Certificates issued so far by this pebble process (its log says so per issuance)."""
        return self.log_path.read_text("utf-8", "replace").count("Issued certificate serial")


@pytest.fixture
def pebble(test_dir, request):
    validity = getattr(request, "param", 3600)
    p = Pebble(test_dir, validity)
    p.start()
    yield p
    p.stop()


@pytest.fixture
def acme_server(test_dir, pebble, request):
    """Makes AcmeServers in test_dir/srv; stops them at teardown, even after a failure."""
    made: list[AcmeServer] = []

    def make(challenge: str) -> AcmeServer:
        server = AcmeServer(test_dir / "srv", challenge, pebble)
        _register_log(request, "server", server.log_path)
        _register_log(request, "pebble", pebble.log_path)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


class AcmeServer(Server):
    """oxiscale with tls_letsencrypt_*: server_url https://oxiscale.test:5001.

    `tls` stays None for the harness (no certificate files); `acme_root` is what clients
    trust once the server is up (pebble's root, written to a file).
    """

    def __init__(self, workdir: Path, challenge: str, pebble: Pebble | None):
        super().__init__(oxiscale_bin(), workdir)
        self.http_port = TLS_PORT
        self.url = f"https://{HOSTNAME}:{TLS_PORT}"
        self.pebble = pebble
        self.cache_dir = self.data_dir / "acme"
        self.extra_env = {
            "OXISCALE_TLS_LETSENCRYPT_HOSTNAME": HOSTNAME,
            "OXISCALE_TLS_LETSENCRYPT_CHALLENGE_TYPE": challenge,
            "OXISCALE_TLS_LETSENCRYPT_LISTEN": f"127.0.0.1:{HTTP01_PORT}",
            "OXISCALE_ACME_URL": ACME_DIR,
            "OXISCALE_ACME_EMAIL": "admin@example.org",
            "OXISCALE_ACME_CA_FILE": str(pebble.pki.ca if pebble else "/nonexistent"),
        }

    @property
    def env(self) -> dict[str, str]:
        # No certificate files: the harness's env without them, whatever `tls` holds.
        trust, self.tls = self.tls, None
        try:
            return super().env
        finally:
            self.tls = trust

    def healthy(self) -> bool:
        if self.pebble is None:
            return False
        try:
            status, _ = https_get("/health", self.pebble.root_pem())
        except (OSError, ssl.SSLError):
            return False
        return status == 200


def served(root_pem: str) -> x509.Certificate:
    """The certificate served on 127.0.0.1:5001 for SNI oxiscale.test, verified against
    pebble's root only."""
    ctx = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def https_get(path: str, root_pem: str) -> tuple[int, str]:
    ctx = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOSTNAME}\r\nConnection: close\r\n\r\n"
                        .encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
    return int(head.split()[1]), body


def plain_http(port: int, path: str = "/health") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOSTNAME}\r\n\r\n".encode())
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
                if b"\r\n\r\n" in data:
                    break
        except (socket.timeout, ConnectionResetError):
            pass
        return data


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def log_of_start(server: Server, n: int) -> str:
    text = server.log_path.read_text("utf-8", "replace")
    parts = text.split("===== harness: start #")
    return next(p for p in parts if p.startswith(f"{n} "))


def check_served(server: AcmeServer) -> x509.Certificate:
    cert = served(server.pebble.root_pem())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [HOSTNAME]
    assert "Pebble" in cert.issuer.rfc4514_string(), cert.issuer
    return cert


def test_http01_obtains_serves_and_restarts_from_the_cache(acme_server, pebble):
    server = acme_server("HTTP-01")
    t0 = time.monotonic()
    server.start(timeout=60)
    t_first = time.monotonic() - t0
    first = check_served(server)
    assert pebble.orders() == 1
    log = log_of_start(server, 1)
    assert "answered an ACME HTTP-01 challenge" in log, log[-3000:]
    assert "new ACME certificate in force" in log, log[-3000:]

    # Only HTTPS on the main listener; the HTTP-01 port answers challenges and redirects the
    # rest, never the API.
    assert not plain_http(TLS_PORT).startswith(b"HTTP/"), "plain HTTP on the TLS listener"
    head = plain_http(HTTP01_PORT, "/health?x=1").decode("utf-8", "replace")
    assert head.startswith("HTTP/1.1 308"), head
    assert f"location: https://{HOSTNAME}:{TLS_PORT}/health?x=1" in head.lower(), head
    assert plain_http(HTTP01_PORT, "/.well-known/acme-challenge/unknown").startswith(
        b"HTTP/1.1 404")

    # The cache: private, and what is served.
    assert (server.cache_dir.stat().st_mode & 0o777) == 0o700
    files = sorted(p.name for p in server.cache_dir.iterdir())
    assert f"{HOSTNAME}.cert.pem" in files and f"{HOSTNAME}.key.pem" in files, files
    assert any(f.startswith("account-") for f in files), files
    for f in server.cache_dir.iterdir():
        assert (f.stat().st_mode & 0o777) == 0o600, f
    cached = x509.load_pem_x509_certificate((server.cache_dir / f"{HOSTNAME}.cert.pem")
                                            .read_bytes())
    assert cached.serial_number == first.serial_number

    # A restart serves the cached certificate: no new order.
    server.restart()
    log = log_of_start(server, 2)
    assert "using the cached ACME certificate" in log, log[-3000:]
    assert "ordering a certificate" not in log, log[-3000:]
    assert check_served(server).serial_number == first.serial_number
    assert pebble.orders() == 1
    server.stop()
    print(f"HTTP-01: first certificate served after {t_first:.1f} s")


# Pebble issues 30 s certificates here: renewed 20 s in, in the background.
@pytest.mark.parametrize("pebble", [30], indirect=True)
def test_tls_alpn01_obtains_and_renews_in_the_background(acme_server, pebble):
    server = acme_server("TLS-ALPN-01")
    server.start(timeout=60)
    first = check_served(server)
    lifetime = first.not_valid_after_utc - first.not_valid_before_utc
    assert lifetime.total_seconds() <= 31, lifetime
    log = log_of_start(server, 1)
    assert "new ACME certificate in force" in log, log[-3000:]
    assert "answering an ACME TLS-ALPN-01 validation" in log, log[-3000:]
    assert not listening(HTTP01_PORT), "TLS-ALPN-01 needs no HTTP-01 responder"
    assert not plain_http(TLS_PORT).startswith(b"HTTP/")

    renewed = wait_for("a renewed certificate to be served",
                       lambda: (c if (c := check_served(server)).serial_number
                                != first.serial_number else None), 60)
    assert renewed.not_valid_after_utc > first.not_valid_after_utc
    assert pebble.orders() >= 2
    assert server.alive()
    status, body = https_get("/health", pebble.root_pem())
    assert status == 200, body
    server.stop()


@pytest.mark.parametrize("pebble", [30], indirect=True)
def test_a_failed_renewal_keeps_the_cached_certificate(acme_server, pebble):
    server = acme_server("HTTP-01")
    server.start(timeout=60)
    first = check_served(server)
    server.stop()
    pebble.stop_pebble()
    # Past the renewal point (20 s of 30), before expiry: the restart must order, cannot,
    # and serves the cached certificate; the background renewal keeps trying.
    renew_at = first.not_valid_before_utc.timestamp() + 21
    time.sleep(max(0.0, renew_at - time.time()))
    server.start(timeout=30)
    assert check_served(server).serial_number == first.serial_number
    wait_for("the failed renewal to be logged", lambda: "the cached one stays in force"
             in log_of_start(server, 2), 20)
    log = log_of_start(server, 2)
    assert "cannot use the ACME server at https://127.0.0.1:14000/dir (acme_url)" in log, log[-3000:]
    # The ACME server is back: the background retry gets a new certificate.
    pebble.start()
    renewed = wait_for("the renewed certificate", lambda: (
        c if (c := check_served(server)).serial_number != first.serial_number else None), 40)
    assert renewed.not_valid_after_utc > first.not_valid_after_utc
    # The restarted pebble forgot the account: a new one was made.
    assert "the cached ACME account is gone; creating a new one" in log_of_start(server, 2)
    server.stop()


def refused_start(server: AcmeServer) -> str:
    with open(server.log_path, "wb") as log:
        proc = subprocess.run([str(server.binary), "serve"], env=server.env, cwd=server.workdir,
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              timeout=240)
    text = server.log_path.read_text("utf-8", "replace")
    assert proc.returncode != 0, f"the server ran:\n{text[-3000:]}"
    assert not listening(TLS_PORT) and not listening(HTTP01_PORT), "something listens"
    return text


def test_an_acme_server_that_is_down_stops_the_server(acme_server, pebble):
    pebble.stop()
    text = refused_start(acme_server("HTTP-01"))
    assert "cannot use the ACME server at https://127.0.0.1:14000/dir (acme_url)" in text, text
    assert "Connection refused" in text or "connection refused" in text.lower(), text[-2000:]


def test_a_failed_validation_stops_the_server_with_the_acme_servers_reason(acme_server, pebble):
    server = acme_server("HTTP-01")
    # The HTTP-01 responder where pebble does not look: validation fails.
    server.extra_env["OXISCALE_TLS_LETSENCRYPT_LISTEN"] = "127.0.0.1:5004"
    text = refused_start(server)
    assert f"the ACME server could not validate {HOSTNAME} by HTTP-01" in text, text[-3000:]
    assert "urn:ietf:params:acme:error:connection" in text, text[-3000:]
    assert not listening(5004)
    assert pebble.orders() == 0


@dataclass(frozen=True)
class _Trust:
    """What caddy_node reads from `server.tls`: the CA file clients trust (SSL_CERT_FILE)."""

    ca: Path


@pytest.fixture
def hosts_entry(test_dir):
    """oxiscale.test → 127.0.0.1 for the clients, by a copy of /etc/hosts bind-mounted over it.
    Only inside this run's private mount namespace: netns.sh unshares one (--mount-proc), and
    conftest refuses to run outside that namespace."""
    if os.getpid() != 1:
        # netns.sh execs pytest as PID 1 of its private PID and mount namespaces; anywhere
        # else the mount would change the machine's /etc/hosts.
        pytest.skip("needs run.sh's private mount namespace to name oxiscale.test")
    original = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
    hosts = test_dir / "hosts"
    hosts.write_text(original + f"\n127.0.0.1 {HOSTNAME}\n")
    if shutil.which("mount") is None:
        pytest.skip("mount(8) is needed to name oxiscale.test for the clients")
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True, timeout=10)
    try:
        assert socket.gethostbyname(HOSTNAME) == "127.0.0.1"
        yield
    finally:
        subprocess.run(["umount", "/etc/hosts"], check=True, timeout=10)


@pytest.fixture
def server(acme_server, pebble, hosts_entry, test_dir):
    """Overrides conftest's for caddy_node: the server with a TLS-ALPN-01 certificate from
    pebble, which the clients trust (and nothing else)."""
    srv = acme_server("TLS-ALPN-01")
    srv.start(timeout=60)
    root = test_dir / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    srv.tls = _Trust(ca=root)
    yield srv
    srv.tls = None
    srv.stop()


def test_real_clients_join_through_an_acme_certificate(server, caddy_node, figures):
    """tsnet nodes that trust only pebble's root register over https://oxiscale.test:5001 and
    relay through the embedded DERP over TLS with the ACME certificate."""
    assert server.url == f"https://{HOSTNAME}:{TLS_PORT}"
    user = setup_user(server)
    a, b, nb, t0 = start_pair(server, caddy_node, user, always_derp=True)
    for node in (a, b):
        assert node.env.get("SSL_CERT_FILE") == str(server.tls.ca)
        assert "TS_DEBUG_USE_DERP_HTTP" not in node.env, "DERP must be dialed over TLS"
    t_ip = a.wait_reach(ipv4_of(nb), HELLO_B)
    for node in (a, b):
        node.wait_log(r"magicsock: derp-\d+ connected", timeout=30)
        assert "x509:" not in node.log_text(), (
            f"{node.name} refused a certificate:\n{tail(node.log_path, 30)}")
    assert not DIRECT_PATH.search(a.log_text()), "node-a found a direct path despite DERP-only"
    figures.record("acme_two_nodes[derp]", mode="derp over TLS, ACME certificate",
                   first_request_by_ip_s=round(t_ip - t0, 2), nodes=2)
