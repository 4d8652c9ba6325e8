#!/bin/sh
# Run a command inside a private network namespace that looks "up" to Tailscale clients
# but cannot reach anything beyond loopback (shared/protocol/05 §0).
#
#   scripts/lib/netns.sh <command> [args...]          # as a script
#   . scripts/lib/netns.sh; netns_run <command> ...   # as a library function (POSIX sh/bash)
#
# The namespace has: lo (up), and a veth pair veth0/veth1 with 192.0.2.1/24 on veth0
# (documentation range; with loopback alone tsnet thinks the network is down and never
# dials control). There is no default route, so any outside address fails at once.
# A private PID namespace is used too: when the command exits (or is killed) every process
# started inside dies with it, so a crashed or timed-out test run cannot leak caddy or
# server processes.
# Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN); unshare from util-linux, ip from iproute2.
#
# Signals: unshare --fork ignores SIGTERM/SIGINT and the command runs as PID 1 of its
# namespace (which ignores signals it has no handler for), so TERM/INT/HUP sent to this
# script are forwarded to the command as SIGTERM, and after NETNS_KILL_GRACE seconds
# (default 30) the whole namespace is SIGKILLed.

netns_run() {
	if [ "$#" -eq 0 ]; then
		echo "netns_run: no command given" >&2
		return 2
	fi
	unshare --net --pid --fork --kill-child --mount-proc sh -c '
		set -e
		ip link set lo up
		ip link add veth0 type veth peer name veth1
		ip addr add 192.0.2.1/24 dev veth0
		ip link set veth0 up
		ip link set veth1 up
		exec "$@"' netns-run "$@" &
	_netns_unshare=$!
	_netns_reaper=""
	trap '_netns_forward' TERM INT HUP
	_netns_rc=0
	while :; do
		wait "$_netns_unshare" && _netns_rc=0 || _netns_rc=$?
		kill -0 "$_netns_unshare" 2>/dev/null || break
	done
	trap - TERM INT HUP
	if [ -n "$_netns_reaper" ]; then kill "$_netns_reaper" 2>/dev/null || true; fi
	return "$_netns_rc"
}

_netns_forward() {
	# The namespace's PID 1 (the command) is unshare's only child.
	_netns_inner="$(cat "/proc/$_netns_unshare/task/$_netns_unshare/children" 2>/dev/null || true)"
	if [ -n "$_netns_inner" ]; then
		kill -TERM $_netns_inner 2>/dev/null || true
	fi
	if [ -z "$_netns_reaper" ]; then
		# Killing unshare makes the kernel SIGKILL its child (--kill-child), and with it the
		# whole PID namespace.
		(sleep "${NETNS_KILL_GRACE:-30}"; kill -KILL "$_netns_unshare" 2>/dev/null) &
		_netns_reaper=$!
	fi
}

# Executed directly (not sourced): run the arguments.
case "$(basename -- "$0")" in
netns.sh)
	netns_run "$@"
	exit $?
	;;
esac
