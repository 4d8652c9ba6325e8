# Shared helpers for scripts/*.sh. Source, do not execute.

# Prints a progress line to stderr.
step() {
  printf '==> %s\n' "$*" >&2
}

# Prints an error to stderr and exits.
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}
