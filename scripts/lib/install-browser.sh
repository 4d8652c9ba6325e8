#!/usr/bin/env bash
# Prepares the console's browser tests: Debian chromium (Playwright's own browser downloads
# are unreachable here), the npm packages of end2end/console, and those of end2end/oidc (the
# OpenID provider the device-login tests sign in at). Idempotent; does nothing when all are
# present.
#
# Usage: scripts/lib/install-browser.sh      (as root, or with sudo available, for apt-get)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=common.sh
source "$ROOT/scripts/lib/common.sh"

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
E2E_DIR="$ROOT/end2end/console"
OIDC_DIR="$ROOT/end2end/oidc"

if [ ! -x "$CHROMIUM" ]; then
  [ "$CHROMIUM" = /usr/bin/chromium ] || die "CHROMIUM_PATH=$CHROMIUM is not an executable"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  step "installing Debian chromium"
  # Package lists are fetched once per run, and only when something must be installed.
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi
step "$("$CHROMIUM" --version 2>/dev/null || echo "chromium at $CHROMIUM")"

if [ ! -d "$E2E_DIR/node_modules/@playwright/test" ]; then
  command -v npm >/dev/null || die "npm is needed for the browser tests"
  step "installing npm packages in end2end/console"
  if [ -f "$E2E_DIR/package-lock.json" ]; then
    (cd "$E2E_DIR" && npm ci --no-audit --no-fund)
  else
    (cd "$E2E_DIR" && npm install --no-audit --no-fund)
  fi
fi
# Its lock file is committed, so always `npm ci`: the exact provider version the tests expect.
if [ ! -d "$OIDC_DIR/node_modules/oidc-provider" ]; then
  command -v npm >/dev/null || die "npm is needed for the browser tests"
  step "installing npm packages in end2end/oidc"
  (cd "$OIDC_DIR" && npm ci --no-audit --no-fund)
fi
step "browser tests ready: (cd end2end/console && npx playwright test)"
