# Helpers for scripts that run a throwaway server and fill it with simulated nodes
# (scripts/bench.sh, scripts/console-tti.sh). Source it from bash.

# wait_until_serving URL PID LOG: waits (up to 10 s) until the server at URL answers /key;
# if process PID ends first, prints LOG and returns 1.
wait_until_serving() {
  local url=$1 pid=$2 log=$3
  for _ in $(seq 1 100); do
    curl -fsS "$url/key?v=130" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log"; return 1; }
    sleep 0.1
  done
  echo "the server at $url did not answer within 10 s" >&2
  return 1
}

# reusable_key BIN USER: creates USER with the CLI BIN (over the running server's socket) and
# prints a reusable one-hour pre-auth key for it.
reusable_key() {
  local bin=$1 user=$2
  "$bin" users create "$user" >/dev/null
  "$bin" preauthkeys create --user "$user" --reusable --expiration 1h -o json | json_key
}

# new_api_key BIN: prints a new one-day API key, made with the CLI BIN.
new_api_key() {
  # headscale's -o json prints the new API key alone, as a JSON string.
  "$1" apikeys create --expiration 1d -o json | python3 -c 'import json,sys; print(json.load(sys.stdin))'
}

# The "key" of the pre-auth key JSON on standard input (a secret, shown once by the CLI).
json_key() {
  python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}
