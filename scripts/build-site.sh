#!/usr/bin/env bash
# Builds the console's browser half into target/site (the directory the server serves):
#   target/site/pkg/oxiscale.js        wasm-bindgen glue (--target web)
#   target/site/pkg/oxiscale_bg.wasm   the hydrate() entry of crate `frontend`
#   target/site/pkg/oxiscale.css       style/main.css, then style/pages/*.css in name order
#   target/site/*                      everything in public/
#
# Usage: scripts/build-site.sh [--release] [--no-wasm-opt]
#   --release      profile wasm-release (opt-level z, LTO), then wasm-opt -Oz and .gz copies
#   --no-wasm-opt  with --release: skip wasm-opt (and so the binaryen download)
#
# Needs only rustup/cargo (and node/npm for wasm-opt in --release); installs the rest into
# .tools/ on first use. Re-running with nothing changed takes a few seconds.
#
# File names: the server's <HydrationScripts> asks for `oxiscale_bg.wasm`, wasm-bindgen's own
# name, because LEPTOS_OUTPUT_NAME is NOT set when the server is compiled (leptos appends `_bg`
# exactly then). Do not set LEPTOS_OUTPUT_NAME in the build environment of the server.
#
# wasm-opt: only npm `binaryen` (pinned below), installed into .tools/. Debian's binaryen 108
# produces WASM that fails to hydrate, so a wasm-opt on PATH is never used.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"

OUTPUT_NAME=oxiscale
BINARYEN_VERSION=132.0.0
WASM_TARGET=wasm32-unknown-unknown

release=false
wasm_opt=true
for arg in "$@"; do
  case "$arg" in
    --release) release=true ;;
    --no-wasm-opt) wasm_opt=false ;;
    -h | --help)
      sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done

TOOLS="$ROOT/.tools"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# Beside the binaries: the server looks for `site/` next to `<target>/<profile>/oxiscale`.
SITE="$TARGET_DIR/site"
if $release; then
  profile=wasm-release
else
  profile=dev
fi
# cargo puts the dev profile under debug/, custom profiles under their own name.
profile_dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
wasm_in="$TARGET_DIR/$WASM_TARGET/$profile_dir/frontend.wasm"

started=$(date +%s)

# 1. The wasm32 target.
if ! rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"; then
  step "adding rust target $WASM_TARGET"
  rustup target add "$WASM_TARGET"
fi

# 2. wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock: the CLI
#    refuses (or silently mis-generates) for any other version.
wb_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' "$ROOT/Cargo.lock")
[ -n "$wb_version" ] || die "could not find the wasm-bindgen version in Cargo.lock"
wasm_bindgen="$TOOLS/bin/wasm-bindgen"
if [ "$("$wasm_bindgen" --version 2>/dev/null || true)" != "wasm-bindgen $wb_version" ]; then
  step "installing wasm-bindgen-cli $wb_version into $TOOLS (takes a few minutes once)"
  # No --locked: the CLI's own lockfile pins a webpki-roots release the index no longer has.
  cargo install wasm-bindgen-cli --version "$wb_version" --root "$TOOLS" --force
fi

# 3. The browser half. Only the `frontend` package: a workspace build would unify app's
#    `ssr` and `hydrate` features.
step "cargo build -p frontend ($profile, $WASM_TARGET)"
(cd "$ROOT" && cargo build -p frontend --lib --target "$WASM_TARGET" --profile "$profile")

# 4. Bindings, CSS and public files, assembled in a fresh directory and swapped in whole so a
#    running server never serves a half-written pkg/.
pkg="$SITE/pkg"
stamp_want="$wasm_in wasm-bindgen=$wb_version release=$release wasm-opt=$wasm_opt"
if [ -f "$pkg/.stamp" ] && [ "$(cat "$pkg/.stamp")" = "$stamp_want" ] &&
  [ "$pkg/${OUTPUT_NAME}_bg.wasm" -nt "$wasm_in" ]; then
  step "wasm unchanged; keeping bindings"
  staged=""
else
  staged="$SITE/.pkg.new"
  rm -rf "$staged"
  mkdir -p "$staged"
  step "wasm-bindgen --target web"
  "$wasm_bindgen" --target web --out-dir "$staged" --out-name "$OUTPUT_NAME" --no-typescript "$wasm_in"

  if $release && $wasm_opt; then
    wasm_opt_bin="$TOOLS/binaryen/node_modules/.bin/wasm-opt"
    if [ "$("$wasm_opt_bin" --version 2>/dev/null || true)" != "wasm-opt version ${BINARYEN_VERSION%%.*} (version_${BINARYEN_VERSION%%.*})" ]; then
      step "installing npm binaryen@$BINARYEN_VERSION into $TOOLS/binaryen"
      command -v npm >/dev/null || die "npm is needed for wasm-opt; install node or pass --no-wasm-opt"
      mkdir -p "$TOOLS/binaryen"
      npm install --prefix "$TOOLS/binaryen" --no-save --no-audit --no-fund "binaryen@$BINARYEN_VERSION"
    fi
    step "wasm-opt -Oz (binaryen $BINARYEN_VERSION)"
    "$wasm_opt_bin" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
      "$staged/${OUTPUT_NAME}_bg.wasm" -o "$staged/${OUTPUT_NAME}_bg.wasm"
  fi
  echo "$stamp_want" >"$staged/.stamp"
fi

mkdir -p "$SITE"
# One stylesheet: the base, then each page's own file (so pages never edit a shared file).
css_bundle="$TARGET_DIR/.oxiscale.css"
mkdir -p "$TARGET_DIR"
cat "$ROOT/style/main.css" "$ROOT"/style/pages/*.css >"$css_bundle"
if [ -n "$staged" ]; then
  cp "$css_bundle" "$staged/$OUTPUT_NAME.css"
  if $release; then
    # ServeDir serves these to browsers that accept gzip (precompressed_gzip).
    gzip -9 -k -f "$staged/$OUTPUT_NAME.js" "$staged/${OUTPUT_NAME}_bg.wasm" "$staged/$OUTPUT_NAME.css"
  fi
  rm -rf "$SITE/.pkg.old"
  [ -d "$pkg" ] && mv "$pkg" "$SITE/.pkg.old"
  mv "$staged" "$pkg"
  rm -rf "$SITE/.pkg.old"
elif ! cmp -s "$css_bundle" "$pkg/$OUTPUT_NAME.css"; then
  step "updating $OUTPUT_NAME.css"
  cp "$css_bundle" "$pkg/.$OUTPUT_NAME.css.new"
  mv "$pkg/.$OUTPUT_NAME.css.new" "$pkg/$OUTPUT_NAME.css"
  if $release; then gzip -9 -k -f "$pkg/$OUTPUT_NAME.css"; fi
fi

# public/ must not shadow pkg/.
[ -e "$ROOT/public/pkg" ] && die "public/pkg would collide with the generated pkg/ directory"
cp -R "$ROOT/public/." "$SITE/"

step "site ready in $SITE ($(($(date +%s) - started)) s)"
ls -l "$pkg" | sed 's/^/    /'
