# shellcheck shell=bash
# Helpers shared by scripts/test.sh and scripts/package.sh (sourced, not run).
# Callers set `set -euo pipefail` and ROOT (the repository root) first.

VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

log() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Installs Debian packages, only where a tool is missing (fresh machines run as root).
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    die "need Debian packages $*, and apt-get is not available: install them by hand"
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install $*"
    sudo=(sudo)
  fi
  log "installing Debian packages: $*"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null
}

# Creates (or reuses) the virtualenv at $VENV.
ensure_venv() {
  command -v "$PYTHON" >/dev/null 2>&1 || apt_install python3 python3-venv python3-pip
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    return 0
  fi
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 ships venv/ensurepip separately.
    rm -rf "$VENV"
    apt_install python3-venv
    "$PYTHON" -m venv "$VENV"
  fi
}

# venv_install NAME REQUIREMENT...: pip-installs pinned requirements into $VENV unless
# the stamp file $VENV/.stamp-NAME says exactly these are already installed.
venv_install() {
  local name=$1
  shift
  ensure_venv
  local stamp="$VENV/.stamp-$name"
  local want
  want="$("$VENV/bin/python" --version 2>&1); $*"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "installing into $VENV: $*"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "$@"
  printf '%s' "$want" >"$stamp"
}

# A free TCP port on 127.0.0.1.
free_port() {
  "$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# wait_http URL SECONDS [PID]: waits until URL answers (any HTTP status), at most
# SECONDS; gives up early when PID (the server) has died.
wait_http() {
  local url=$1 seconds=$2 pid=${3:-}
  local deadline=$((SECONDS + seconds))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      warn "the server for $url exited before it answered"
      return 1
    fi
    if "$PYTHON" - "$url" >/dev/null 2>&1 <<'PY'; then
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass  # it answered
PY
      return 0
    fi
    sleep 0.3
  done
  warn "$url did not answer within ${seconds}s"
  return 1
}

# Stops a process we started: TERM, then KILL after 5 s.
stop_pid() {
  local pid=${1:-}
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local _
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# The cargo target directory (honours CARGO_TARGET_DIR and .cargo/config).
cargo_target_dir() {
  cargo metadata --format-version 1 --no-deps |
    "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# Waits (bounded: TRIES tenths of a second, default 300) until FILE has a line matching
# REGEX, while PID lives; prints the first match.
wait_for() {
  local file="$1" regex="$2" pid="$3" tries="${4:-300}"
  for _ in $(seq 1 "$tries"); do
    if grep -qE "$regex" "$file" 2>/dev/null; then
      grep -oE "$regex" "$file" | head -n1
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || {
      cat "$file" >&2
      die "the server exited before it was ready"
    }
    sleep 0.1
  done
  cat "$file" >&2
  die "timed out waiting for /$regex/ in $file"
}

# The machine a benchmark ran on (date, CPUs, memory, kernel, rustc, load average), one
# "key: value" a line; a benchmark adds its own lines after it.
machine_info() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
  echo "kernel: $(uname -srm)"
  echo "rustc: $(rustc --version)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}
