#!/usr/bin/env bash
# Time to interactive of the console's /machines page with many machines in the database
# (issue #4 asks for it with 1,000). Prints the figure; it never fails on a slow result.
#
#   scripts/console-tti.sh [MACHINES]        (default 1000; as root: it uses a network namespace)
#
# What it does, all inside a private network namespace (scripts/lib/netns.sh):
#  1. starts a release `oxiscale serve` with a fresh data dir and the release console build
#     (scripts/build-site.sh --release: the WASM and CSS a deployment serves);
#  2. registers MACHINES nodes through the real protocol with oxiscale-loadgen (its `join`
#     scenario), which then exits: the machines stay in the database, offline;
#  3. runs the machines spec's measurement in Chromium (OXISCALE_E2E_TTI=1): five loads of
#     /machines, each timed from navigation until the first row's action button is enabled
#     (the page is hydrated), and prints the runs and their median.
#
# Environment: CARGO_TARGET_DIR (default ./target; the release site is written to its site/,
# so use a target dir of its own if a debug site there matters), TTI_PORT (default 18580),
# TTI_NO_BUILD=1 to reuse the binaries and site already built.
set -euo pipefail

machines=${1:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/common.sh
source "$root/scripts/lib/common.sh"
target=${CARGO_TARGET_DIR:-$root/target}
port=${TTI_PORT:-18580}

if [[ "${TTI_NO_BUILD:-}" != 1 ]]; then
  (cd "$root" && CARGO_TARGET_DIR="$target" scripts/build-site.sh --release)
  (cd "$root" && CARGO_TARGET_DIR="$target" cargo build --release -p server -p oxiscale-loadgen)
fi
"$root/scripts/lib/install-browser.sh"
(cd "$root/end2end/console" && [[ -d node_modules/@playwright/test ]] || npm ci --no-audit --no-fund)

data=$(mktemp -d /tmp/oxiscale-tti.XXXXXX)
trap 'rm -rf "$data"' EXIT
export TTI_ROOT=$root TTI_TARGET=$target TTI_DATA=$data/d TTI_PORT=$port TTI_MACHINES=$machines

# The part that needs the namespace: server, load generator and browser.
"$root/scripts/lib/netns.sh" bash -euo pipefail -c '
  bin=$TTI_TARGET/release/oxiscale
  url=http://127.0.0.1:$TTI_PORT
  export OXISCALE_DATA_DIR=$TTI_DATA OXISCALE_LISTEN_ADDR=127.0.0.1:$TTI_PORT
  export OXISCALE_SERVER_URL=$url OXISCALE_DERP_SERVER_STUN_LISTEN_ADDR=127.0.0.1:0
  export RUST_LOG=${RUST_LOG:-warn}
  ulimit -n 65536 2>/dev/null || true
  "$bin" serve >"$TTI_DATA.server.log" 2>&1 &
  server=$!
  trap "kill $server 2>/dev/null; wait $server 2>/dev/null || true" EXIT
  source "$TTI_ROOT/scripts/lib/load-server.sh"
  wait_until_serving "$url" $server "$TTI_DATA.server.log"
  key=$(reusable_key "$bin" seed)
  echo "==> registering $TTI_MACHINES machines with oxiscale-loadgen"
  "$TTI_TARGET/release/oxiscale-loadgen" --url "$url" --auth-key "$key" \
    --nodes "$TTI_MACHINES" --scenarios join | sed "s/^/   /"
  echo "==> $("$bin" nodes list -o json | python3 -c "import json,sys; print(len(json.load(sys.stdin)))") machines in the database; measuring /machines"
  cd "$TTI_ROOT/end2end/console"
  # Not CI: Playwright reuses the server started above instead of starting its own.
  env -u CI OXISCALE_E2E_TTI=1 OXISCALE_E2E_BASE_URL="$url" OXISCALE_E2E_DATA_DIR="$TTI_DATA" \
    OXISCALE_E2E_BIN="$bin" \
    npx playwright test tests/machines.spec.ts --project desktop --workers 1 --reporter line 2>&1 |
    grep -E "TTI|passed|failed|Error"
'
