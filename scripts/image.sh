#!/usr/bin/env bash
# Builds the oxiscale container image on a machine that reaches no image registry, then runs
# it with real Tailscale clients. Everything comes from Debian's packages and this repo:
#
#   1. base     a Debian bookworm rootfs (debootstrap --variant=minbase, plus ca-certificates,
#               docs/locales/apt lists removed) imported as localhost/oxiscale-base:bookworm;
#               reused when it exists (--rebuild-base to redo it)
#   2. binary   scripts/build-site.sh --release and cargo build --release -p server, on the host
#   3. image    the Dockerfile's `runtime` stage, with buildah: FROM that base, the binary and
#               site from step 2 in place of the `build` stage (--build-context build=...)
#   4. test     inside scripts/lib/netns.sh (a private network namespace: loopback only), podman
#               runs the image with a named volume; the CLI in the container makes a user and a
#               pre-auth key; two real tsnet 1.90.9 nodes (end2end/clients) trusting a throwaway
#               CA join over https and talk through the embedded DERP over TLS; `podman
#               restart`; the same nodes come back online and talk again. Twice: the container
#               serving HTTPS itself (certificate files), and plain HTTP behind Caddy
#               terminating TLS (scripts/lib/image_e2e.py)
#
# Usage: scripts/image.sh [--rebuild-base] [--no-test] [--keep] [--clean]
#   --rebuild-base  debootstrap the base again even if the image exists
#   --no-test       stop after step 3
#   --keep          keep the staging dir (binary + site) and the clients' work dirs and logs
#   --clean         at the end, remove the images, containers and volumes of its storage
# The images stay otherwise (localhost/oxiscale:dev; run it with the same storage:
# CONTAINERS_STORAGE_CONF=$OXISCALE_IMAGE_WORK/storage.conf podman --runtime runc ...).
#
# Needs root and: apt-get install podman buildah debootstrap runc (runc: this machine's hybrid
# cgroups defeat crun). Env: OXISCALE_IMAGE_WORK (default /var/tmp/oxiscale-image: rootfs,
# container storage, logs), OXISCALE_IMAGE (default localhost/oxiscale:dev), DEBIAN_MIRROR
# (default http://deb.debian.org/debian), CARGO_TARGET_DIR (default <repo>/target; step 2
# replaces <target>/site with the release site, so point it elsewhere on a shared checkout).
# Timings go to stdout as `TIMING name seconds` and to $OXISCALE_IMAGE_WORK/timings.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib/common.sh
source scripts/lib/common.sh

WORK="${OXISCALE_IMAGE_WORK:-/var/tmp/oxiscale-image}"
IMAGE="${OXISCALE_IMAGE:-localhost/oxiscale:dev}"
BASE=localhost/oxiscale-base:bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

rebuild_base=false test=true clean=false keep=false
for arg in "$@"; do
  case "$arg" in
    --rebuild-base) rebuild_base=true ;;
    --no-test) test=false ;;
    --clean) clean=true ;;
    --keep) keep=true ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, rootful podman, network namespaces)"
for tool in podman buildah debootstrap runc unshare python3; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt-get install podman buildah debootstrap runc"
done

# Container storage of its own, under the work dir: nothing touches /var/lib/containers.
mkdir -p "$WORK"
cat >"$WORK/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
export CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
# runc, not crun: crun refuses hybrid cgroup v1/v2 hosts. The rlimits podman would set by
# default (nproc/nofile above the current hard limit) fail without CAP_SYS_RESOURCE.
PODMAN="podman --runtime runc"
ulimits=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
: >"$WORK/timings.txt"
timing() {
  echo "TIMING $1 $2"
  echo "$1 $2" >>"$WORK/timings.txt"
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# 1. The base image from Debian's packages.
if $rebuild_base || ! $PODMAN image exists "$BASE"; then
  step "1. base: debootstrap --variant=minbase bookworm from $MIRROR"
  t=$(now)
  rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
  # What a container never needs: the .debs, apt's lists, documentation, translations.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  tar --numeric-owner -C "$rootfs" -c . |
    $PODMAN import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  timing base_image "$(since "$t")"
else
  step "1. base: $BASE exists (--rebuild-base to build it again)"
fi

# 2. The binary and the console's site, built on the host.
step "2. binary: scripts/build-site.sh --release; cargo build --release -p server"
t=$(now)
scripts/build-site.sh --release
cargo build --release -p server
timing binary_build "$(since "$t")"
dist="$WORK/dist"
rm -rf "$dist"
mkdir -p "$dist/out"
cp "$CARGO_TARGET_DIR/release/oxiscale" "$dist/out/oxiscale"
cp -R "$CARGO_TARGET_DIR/site" "$dist/out/site"
echo "    binary: $(du -h "$dist/out/oxiscale" | cut -f1), site: $(du -sh "$dist/out/site" | cut -f1)"

# 3. The image: the Dockerfile's runtime stage on the local base. Chroot isolation: the one
#    RUN step needs neither network nor cgroups. --format docker keeps HEALTHCHECK.
step "3. image: buildah build --target runtime -> $IMAGE"
t=$(now)
buildah build --isolation chroot --format docker --target runtime \
  --build-arg BASE_IMAGE="$BASE" --build-context build="$dist" \
  -f "$ROOT/Dockerfile" -t "$IMAGE" "$dist" >"$WORK/buildah.log" 2>&1 ||
  { tail -30 "$WORK/buildah.log"; die "buildah build failed"; }
timing image_assembly "$(since "$t")"
size=$($PODMAN image inspect "$IMAGE" --format '{{.Size}}')
base_size=$($PODMAN image inspect "$BASE" --format '{{.Size}}')
echo "    $IMAGE: $((size / 1000000)) MB (base $((base_size / 1000000)) MB)"
$PODMAN image inspect "$IMAGE" --format \
  '    user {{.Config.User}}, volumes {{.Config.Volumes}}, ports {{.Config.ExposedPorts}}, healthcheck {{.HealthCheck.Test}}'
echo "image_size_mb $((size / 1000000))" >>"$WORK/timings.txt"
echo "base_size_mb $((base_size / 1000000))" >>"$WORK/timings.txt"
$keep || rm -rf "$dist"

# 4. Real clients through the image, inside a private network namespace.
if $test; then
  step "4. test: podman run + real clients over TLS + restart, TLS in the container and behind a proxy (private network namespace)"
  end2end/clients/install.sh
  t=$(now)
  e2e="$WORK/e2e"
  rm -rf "$e2e"
  set +e
  scripts/lib/netns.sh env PODMAN="$PODMAN" PODMAN_RUN_ARGS="${ulimits[*]}" \
    python3 scripts/lib/image_e2e.py "$IMAGE" "$e2e" 2>&1 | tee "$WORK/e2e.log"
  rc=${PIPESTATUS[0]}
  set -e
  grep '^TIMING ' "$WORK/e2e.log" | sed 's/^TIMING //' >>"$WORK/timings.txt" || true
  timing e2e_total "$(since "$t")"
  $keep || rm -rf "$e2e"
  [ "$rc" = 0 ] || die "the image test failed (log: $WORK/e2e.log)"
fi

if $clean; then
  step "removing the images and the container storage in $WORK"
  # Only this storage (CONTAINERS_STORAGE_CONF above); not `podman system reset`, which would
  # also remove the host's podman networks.
  $PODMAN rm -a -f >/dev/null 2>&1 || true
  $PODMAN volume prune -f >/dev/null 2>&1 || true
  $PODMAN rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$WORK/storage" "$WORK/run" "$WORK/storage.conf"
fi
step "done; timings in $WORK/timings.txt"
