#!/bin/sh
# Real-client (caddy-tailscale / tsnet 1.90.9) end-to-end tests of the oxiscale control plane.
#
#   end2end/clients/run.sh [pytest args...]      e.g.  run.sh -s -k derp
#
# Installs the pinned Python requirements if missing (install.sh), then runs pytest inside a
# private network namespace (scripts/lib/netns.sh) so the clients reach nothing but loopback.
# Env: OXISCALE_BIN (default <repo>/target/debug/oxiscale), E2E_KEEP_TMP=1 keeps work dirs.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

"$here/install.sh"

cd "$here"
exec "$repo/scripts/lib/netns.sh" "$python" -m pytest "$@"
