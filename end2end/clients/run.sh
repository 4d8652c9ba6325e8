#!/bin/sh
# Real-client (caddy-tailscale / tsnet 1.90.9) end-to-end tests of the oxiscale control plane.
#
#   end2end/clients/run.sh [pytest args...]      e.g.  run.sh -s -k derp
#
# Installs the pinned Python requirements if missing, then runs pytest inside a private
# network namespace (scripts/lib/netns.sh) so the clients can reach nothing but loopback.
# Env: OXISCALE_BIN (default <repo>/target/debug/oxiscale), E2E_KEEP_TMP=1 keeps work dirs.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

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

cd "$here"
exec "$repo/scripts/lib/netns.sh" "$python" -m pytest "$@"
