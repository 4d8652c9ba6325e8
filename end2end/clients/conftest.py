"""Fixtures for the real-client tests. Run through ./run.sh (private network namespace)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from harness import CaddyNode, HarnessError, Server, oxiscale_bin, processes_under, tail

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
ALLOWED_INTERFACES = {"lo", "veth0", "veth1"}


def _interfaces() -> set[str]:
    # /proc/self/net/dev follows this process's network namespace; /sys/class/net does not
    # (sysfs shows the namespace of whoever mounted it), so it cannot be trusted here.
    with open("/proc/self/net/dev") as f:
        lines = f.read().splitlines()[2:]
    return {line.split(":", 1)[0].strip() for line in lines if ":" in line}


def _interrupt_on_sigterm(signum, frame):
    # Inside the namespace pytest is PID 1, which ignores signals it has no handler for;
    # netns.sh forwards TERM/INT here, and pytest tears fixtures down on KeyboardInterrupt.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    found = _interfaces()
    if not found <= ALLOWED_INTERFACES:
        pytest.exit(
            "refusing to run: these tests start real Tailscale clients, which must not see the "
            f"real network, but this process sees interfaces {sorted(found - ALLOWED_INTERFACES)}. "
            "Run them with end2end/clients/run.sh (it uses scripts/lib/netns.sh to enter a "
            "private network namespace).", returncode=3)


# ---------------------------------------------------------------------------------------------
# Logs of the current test, shown when it fails
# ---------------------------------------------------------------------------------------------

_LOGS = pytest.StashKey[list]()


def _register_log(request: pytest.FixtureRequest, label: str, path: Path) -> None:
    request.node.stash.setdefault(_LOGS, []).append((label, path))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    if report.failed and report.when in ("setup", "call", "teardown"):
        for label, path in item.stash.get(_LOGS, []):
            lines = 80 if label == "server" else 40
            report.sections.append((f"{label} log tail ({path})", tail(path, lines)))
    return report


# ---------------------------------------------------------------------------------------------
# Work dirs, figures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def session_dir():
    # Short paths: the server's unix socket lives in its data dir and sun_path is 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="oxe2e-", dir="/tmp"))
    yield base
    leaked = processes_under(base)
    for pid, _ in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if os.environ.get("E2E_KEEP_TMP") != "1":
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"\nkept work dirs in {base}")
    if leaked:
        pytest.fail(f"processes outlived their tests (killed now): {leaked}", pytrace=False)


_test_counter = [0]


@pytest.fixture
def test_dir(session_dir: Path, request: pytest.FixtureRequest) -> Path:
    _test_counter[0] += 1
    d = session_dir / f"t{_test_counter[0]:02d}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "TEST").write_text(request.node.nodeid + "\n")
    return d


class Figures:
    """Timings and memory figures, printed and written to results/figures.json."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def record(self, test: str, **values) -> None:
        row = {"test": test, **values}
        self.rows.append(row)
        print(f"\nFIGURE {json.dumps(row)}")

    def write(self) -> Path:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / "figures.json"
        payload = {
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "oxiscale_bin": str(oxiscale_bin()),
            "rows": self.rows,
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return path


@pytest.fixture(scope="session")
def figures():
    figs = Figures()
    yield figs
    if figs.rows:
        path = figs.write()
        print(f"\nfigures written to {path}")
        for row in figs.rows:
            print("  " + json.dumps(row))


# ---------------------------------------------------------------------------------------------
# Server and nodes
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def server_tls():
    """Certificate files for the `server` fixture (None: plain HTTP); a module that tests
    HTTPS overrides this fixture (test_tls.py)."""
    return None


@pytest.fixture
def server(test_dir: Path, request: pytest.FixtureRequest, server_tls):
    srv = Server(oxiscale_bin(), test_dir / "srv", tls=server_tls)
    _register_log(request, "server", srv.log_path)
    try:
        srv.start()
        start_error = None
    except HarnessError as err:
        srv.stop()
        start_error = str(err)
    if start_error is not None:  # outside the except block: no chained traceback
        pytest.fail(f"oxiscale server could not be started: {start_error}", pytrace=False)
    yield srv
    code = srv.stop()
    problems = []
    if code not in (0, None):
        problems.append(f"oxiscale exited with {code} on SIGTERM (the contract is a graceful exit)")
    log = srv.log_path.read_text("utf-8", "replace") if srv.log_path.exists() else ""
    panics = [line for line in log.splitlines() if "panicked at" in line]
    if panics:
        problems.append("oxiscale panicked (bad input must only affect its own connection):\n"
                        + "\n".join(panics[:5]))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def caddy_node(test_dir: Path, server: Server, request: pytest.FixtureRequest):
    """Factory: caddy_node(name, authkey, *, ephemeral, always_derp, serve_text, proxy_to)."""
    nodes: list[CaddyNode] = []

    def make(name: str, authkey: str, *, ephemeral: bool = False, always_derp: bool = False,
             serve_text: str | None = None, proxy_to: str | list[str] | None = None,
             start: bool = True, extra_env: dict[str, str] | None = None) -> CaddyNode:
        if isinstance(proxy_to, str):
            proxy_to = [proxy_to]
        node = CaddyNode(name=name, authkey=authkey, control_url=server.url,
                         workdir=test_dir / f"{name}-{len(nodes)}", ephemeral=ephemeral,
                         always_derp=always_derp, serve_text=serve_text,
                         proxy_to=list(proxy_to or []), extra_env=dict(extra_env or {}),
                         ca_file=server.tls.ca if server.tls else None)
        nodes.append(node)
        _register_log(request, f"caddy {name}", node.log_path)
        if start:
            node.start()
        return node

    yield make
    for node in nodes:
        node.stop()
