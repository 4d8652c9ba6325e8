#!/usr/bin/env python3
"""Runs one real tsnet node (caddy-tailscale, as the client tests use) until it is stopped.

    python3 end2end/clients/node.py --server URL (--authkey KEY | --interactive)
        --hostname NAME --state DIR [--proxy-to PEER ...]

Used by the console's browser tests, which spawn it to register a real machine. The node
answers HTTP on its tailnet address port 80 with its hostname. Each --proxy-to PEER (a MagicDNS
name or tailnet IP) adds a local reverse proxy to http://PEER:80 through the tailnet, printed as
`node: proxy to PEER at http://127.0.0.1:PORT/`, so a test can send traffic across the tailnet
and the peer's packet filter decides. With --interactive instead of a key, the node logs in the
way `tailscale up` without a key does: it prints `node: auth url URL` (each new AuthURL tsnet
logs) for a browser to open. Prints `node: started pid=N` and then waits;
SIGTERM/SIGINT stop the node (its whole process group).
Run it only inside scripts/lib/netns.sh, like every test that starts a client.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import CaddyNode  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="control URL (the --login-server)")
    login = parser.add_mutually_exclusive_group(required=True)
    login.add_argument("--authkey")
    login.add_argument("--interactive", action="store_true",
                       help="no auth key: print the AuthURL for a browser sign-in")
    parser.add_argument("--hostname", required=True)
    parser.add_argument("--state", required=True, type=Path, help="work and state directory")
    parser.add_argument("--ephemeral", action="store_true")
    parser.add_argument("--proxy-to", action="append", default=[], metavar="PEER",
                        help="serve a local reverse proxy to http://PEER:80 over the tailnet")
    args = parser.parse_args()

    node = CaddyNode(name=args.hostname, authkey=args.authkey, control_url=args.server,
                     workdir=args.state, ephemeral=args.ephemeral, serve_text=args.hostname,
                     proxy_to=args.proxy_to)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node.start()
    for peer in args.proxy_to:
        print(f"node: proxy to {peer} at {node.proxy_url(peer)}", flush=True)
    print(f"node: started pid={node.proc.pid} log={node.log_path}", flush=True)
    printed_url = None
    try:
        while not stop.wait(0.5):
            # tsnet repeats the URL every 5 s; a new one (after a refusal, say) is printed too.
            url = node.auth_url() if args.interactive else None
            if url and url != printed_url:
                print(f"node: auth url {url}", flush=True)
                printed_url = url
            if not node.running():
                print(f"node: caddy exited early; log follows\n{node.log_text()[-4000:]}",
                      file=sys.stderr, flush=True)
                return 1
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
