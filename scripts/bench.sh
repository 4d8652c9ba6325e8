#!/usr/bin/env bash
# Load benchmark (issue #5): starts a release `oxiscale serve` on loopback with a fresh SQLite
# data dir, creates a user and a reusable pre-auth key, and runs oxiscale-loadgen against it.
# It reports figures; it never fails on a missed target.
#
#   scripts/bench.sh [NODES] [-- extra loadgen flags]
#   e.g. scripts/bench.sh 1000
#        scripts/bench.sh 10000 -- --scenarios join,steady --steady-secs 65
#
# Environment: CARGO_TARGET_DIR (default ./target), BENCH_PORT (default 18080),
# BENCH_OUT (directory for the server log and JSON figures; default a temp dir),
# BENCH_NO_BUILD=1 to skip `cargo build --release`, BENCH_NICE (default -10): the priority of
# the server and the generator, so that other work on a shared machine (builds) does not
# starve them; each phase still reports the CPU other processes used meanwhile.
set -euo pipefail

nodes=${1:-1000}
shift || true
[[ "${1:-}" == "--" ]] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
port=${BENCH_PORT:-18080}
stun_port=$((port + 1))
out=${BENCH_OUT:-$(mktemp -d /tmp/oxiscale-bench.XXXXXX)}
mkdir -p "$out"
data=$(mktemp -d /tmp/oxiscale-bench-data.XXXXXX)

if [[ "${BENCH_NO_BUILD:-}" != 1 ]]; then
  (cd "$root" && cargo build --release -p server -p oxiscale-loadgen)
fi
oxiscale=$target/release/oxiscale
loadgen=$target/release/oxiscale-loadgen

# Each node is one TCP connection on each side, and a storm briefly doubles that.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# Room for N connections plus N in TIME_WAIT after a storm, and a deep accept queue.
# Best effort: needs root, changes only loopback-relevant limits, restored on exit.
old_ports=$(cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true)
old_somaxconn=$(cat /proc/sys/net/core/somaxconn 2>/dev/null || true)
sysctl -qw net.ipv4.ip_local_port_range="15000 64999" 2>/dev/null || true
sysctl -qw net.core.somaxconn=65535 2>/dev/null || true

export OXISCALE_DATA_DIR=$data
export OXISCALE_LISTEN_ADDR=127.0.0.1:$port
export OXISCALE_SERVER_URL=http://127.0.0.1:$port
export OXISCALE_DERP_SERVER_STUN_LISTEN_ADDR=127.0.0.1:$stun_port
export RUST_LOG=${RUST_LOG:-warn}
# Policies are stored in the database, so that the fan-out scenario can replace them over
# the API; none is set until it does (every node sees every other, as with no policy).
export OXISCALE_POLICY_MODE=database

nice_level=${BENCH_NICE:--10}
# The server runs from a copy under a neutral name: on a shared machine other harnesses clean
# up stray "oxiscale serve" processes by name, and one did end a 5,000-node run midway.
server_bin=$out/bench-control-server
cp "$oxiscale" "$server_bin"
nice -n "$nice_level" "$server_bin" serve >"$out/server.log" 2>&1 &
server_pid=$!
# With autogroup scheduling a nice value only counts inside its session's group: raise the
# group's own priority too (server and generator share this script's session).
echo "$nice_level" >"/proc/$server_pid/autogroup" 2>/dev/null || true
cleanup() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  rm -rf "$data"
  # The copy is the whole release binary with its debug info (≈ 370 MB): runs add up.
  rm -f "$server_bin"
  [[ -n "$old_ports" ]] && sysctl -qw net.ipv4.ip_local_port_range="$old_ports" 2>/dev/null || true
  [[ -n "$old_somaxconn" ]] && sysctl -qw net.core.somaxconn="$old_somaxconn" 2>/dev/null || true
}
trap cleanup EXIT

# shellcheck source=lib/load-server.sh
source "$root/scripts/lib/load-server.sh"
wait_until_serving "http://127.0.0.1:$port" "$server_pid" "$out/server.log"
key=$(reusable_key "$oxiscale" bench)
api_key=$(new_api_key "$oxiscale")

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "commit: $(git -C "$root" rev-parse --short HEAD); server pid $server_pid; nice $nice_level; out $out"
nice -n "$nice_level" "$loadgen" --url "http://127.0.0.1:$port" --auth-key "$key" --api-key "$api_key" --nodes "$nodes" \
  --server-pid "$server_pid" --json-out "$out/figures-$nodes.json" "$@" | tee "$out/loadgen-$nodes.txt"
if [[ -r /proc/$server_pid/status ]]; then
  echo "server peak RSS (VmHWM): $(awk '/VmHWM/{print $2, $3}' "/proc/$server_pid/status")"
else
  echo "the server process is gone (see $out/server.log)"
fi
