#!/usr/bin/env bash
# The one test command (README and .ci/run call exactly this).
#
# Phases, all run even when one fails (the exit code is non-zero if any failed):
#   fmt          cargo fmt --check
#   clippy       cargo clippy --workspace --all-targets -D warnings
#   cfn-lint     template.yaml
#   smtp         a real SMTP server (aiosmtpd: scripts/smtp_server.py) with STARTTLS, TLS
#                and injected 4xx/5xx replies, for the SMTP provider's tests
#   moto         the AWS emulator (moto's server, serialised: scripts/moto_server.py) on a
#                free port on 127.0.0.1
#   chromium     Debian's chromium, installed when missing (the starter-template layout test)
#   tests        cargo nextest run --workspace (unit, conformance on both engines, e2e)
#   schemathesis the local runner's API against its own /openapi.json
#
# Tools come from a virtualenv at .venv (pinned; installed only when missing or changed).
# Environment knobs: SCHEMATHESIS_MAX_EXAMPLES (default 20), SCHEMATHESIS_SEED (default fixed; "random" for a new one each run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

PY_TOOLS=("moto[server]==5.2.5" "cfn-lint==1.58.0" "schemathesis==4.32.5" "aiosmtpd==1.4.6" "dkimpy==1.1.8")

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/mailpilot-test.XXXXXX")"
PIDFILE="$RUN_DIR/pids" # every background process a phase starts, for the trap
: >"$PIDFILE"
MOTO_PID=""
SMTP_PID=""
PASSED=()
FAILED=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$MOTO_PID"
  stop_pid "$SMTP_PID"
  local pid
  while read -r pid; do
    stop_pid "$pid"
  done <"$PIDFILE"
  rm -rf "$RUN_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# phase NAME COMMAND...: runs COMMAND in a subshell with errexit on (so any failing
# step fails the phase) and records the outcome; never stops the script.
phase() {
  local name=$1
  shift
  log "$name"
  local started=$SECONDS rc
  set +e
  (
    set -e
    "$@"
  )
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    PASSED+=("$name")
    printf -- '--- %s: ok (%ss)\n' "$name" "$((SECONDS - started))" >&2
  else
    FAILED+=("$name")
    printf -- '--- %s: FAILED (exit %s, %ss)\n' "$name" "$rc" "$((SECONDS - started))" >&2
  fi
}

ensure_rust_components() {
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
}

# Headless Chromium lays out the starter templates (tests/tests/starter_chromium.rs).
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 || apt_install chromium
}

run_fmt() { cargo fmt --all -- --check; }

run_clippy() { cargo clippy --workspace --all-targets -- -D warnings; }

run_cfn_lint() { "$VENV/bin/cfn-lint" -- template.yaml; }

# Starts moto in this shell (not a phase subshell) so the trap can stop it.
start_moto() {
  local port
  port=$(free_port) || return 1
  # moto's server, with requests handled one at a time (scripts/moto_server.py says why).
  "$VENV/bin/python" "$ROOT/scripts/moto_server.py" -H 127.0.0.1 -p "$port" \
    >"$RUN_DIR/moto.log" 2>&1 &
  MOTO_PID=$!
  if ! wait_http "http://127.0.0.1:$port/moto-api/" 60 "$MOTO_PID"; then
    tail -n 50 "$RUN_DIR/moto.log" >&2 || true
    return 1
  fi
  export MAILPILOT_TEST_AWS_ENDPOINT="http://127.0.0.1:$port"
  # Any AWS SDK call from a test goes to the emulator, with static test credentials
  # (an assumed role or profile would ignore the endpoint override).
  export AWS_ENDPOINT_URL="$MAILPILOT_TEST_AWS_ENDPOINT"
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE
  printf 'moto_server on %s (pid %s)\n' "$MAILPILOT_TEST_AWS_ENDPOINT" "$MOTO_PID" >&2
}

# Starts the test SMTP server in this shell (not a phase subshell) so the trap can stop it.
start_smtp() {
  local port tls_port dir
  port=$(free_port) || return 1
  tls_port=$(free_port) || return 1
  dir="$RUN_DIR/smtp"
  "$VENV/bin/python" "$ROOT/scripts/smtp_server.py" --port "$port" --tls-port "$tls_port" \
    --dir "$dir" >"$RUN_DIR/smtp.log" 2>&1 &
  SMTP_PID=$!
  local deadline=$((SECONDS + 60))
  until [ -f "$dir/ready" ]; do
    if ! kill -0 "$SMTP_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 50 "$RUN_DIR/smtp.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  # What the SMTP provider tests read (they fail when these are missing).
  export MAILPILOT_TEST_SMTP_ADDR="127.0.0.1:$port"
  export MAILPILOT_TEST_SMTPS_ADDR="127.0.0.1:$tls_port"
  export MAILPILOT_TEST_SMTP_DIR="$dir"
  # A Python with dkimpy, for the test that verifies DKIM signatures independently.
  export MAILPILOT_TEST_PYTHON="$VENV/bin/python"
  printf 'smtp_server on %s, TLS on %s (pid %s)\n' "$MAILPILOT_TEST_SMTP_ADDR" \
    "$MAILPILOT_TEST_SMTPS_ADDR" "$SMTP_PID" >&2
}

run_tests() {
  if [ -z "${MAILPILOT_TEST_AWS_ENDPOINT:-}" ]; then
    warn "the emulator is not running: tests that need DynamoDB will fail"
  fi
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
  else
    warn "cargo-nextest is not installed; falling back to cargo test"
    cargo test --workspace --no-fail-fast
  fi
}

# The local runner's API, fuzzed against its own OpenAPI document.
run_schemathesis() {
  # The runner binary the tests phase built (its integration tests need it); building it
  # with `cargo build --bin` instead would unify features differently and rebuild crates.
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-run
  else
    cargo test --workspace --no-run
  fi
  local bin
  bin="$(cargo_target_dir)/debug/mailpilot"
  local data="$RUN_DIR/schemathesis-data"
  mkdir -p "$data"

  local created api_key
  created=$(MAILPILOT_DATA="$data" "$bin" workspace create schemathesis)
  api_key=$("$PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])["api_key"])' "$created")
  [ -n "$api_key" ]

  local port admin_token runner_pid
  port=$(free_port)
  admin_token=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')
  MAILPILOT_ADDR="127.0.0.1:$port" \
    MAILPILOT_DATA="$data" \
    MAILPILOT_KEY_RATE=0 \
    MAILPILOT_ADMIN_TOKEN="$admin_token" \
    "$bin" serve >"$RUN_DIR/runner.log" 2>&1 &
  runner_pid=$!
  echo "$runner_pid" >>"$PIDFILE"
  # shellcheck disable=SC2064 # expand now: the pid of this runner
  trap "stop_pid $runner_pid" EXIT

  local base="http://127.0.0.1:$port"
  if ! wait_http "$base/openapi.json" 60 "$runner_pid"; then
    tail -n 50 "$RUN_DIR/runner.log" >&2 || true
    return 1
  fi

  # A fixed seed by default, so CI runs the cases a local run passed (reproducible);
  # SCHEMATHESIS_SEED=random explores new ones, any other value picks that seed.
  local seed=(--seed "${SCHEMATHESIS_SEED:-20261206}")
  if [ "${SCHEMATHESIS_SEED:-}" = random ]; then
    seed=()
  fi
  # Run from the target dir: schemathesis keeps its cache (.schemathesis/, replayed
  # crashes first) in the working directory, which must not be the repository.
  local work_dir
  work_dir="$(cargo_target_dir)/schemathesis"
  mkdir -p "$work_dir"
  local config=()
  if [ -f "$ROOT/schemathesis.toml" ]; then
    config=(--config-file "$ROOT/schemathesis.toml")
  fi
  local rc=0
  # Bounded: N examples per operation, and a hard stop well inside CI's budget.
  (
    cd "$work_dir"
    timeout --signal=INT --kill-after=30 600 \
      "$VENV/bin/schemathesis" "${config[@]}" run "$base/openapi.json" \
      --checks all \
      --header "Authorization: Bearer $api_key" \
      --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-20}" \
      --request-timeout 10 \
      --report junit --report-junit-path "$work_dir/junit.xml" \
      "${seed[@]}"
  ) || rc=$?
  if [ "$rc" -ne 0 ]; then
    printf 'runner log (last 30 lines):\n' >&2
    tail -n 30 "$RUN_DIR/runner.log" >&2 || true
    # Last, so a log cut to its head and tail still shows what failed.
    "$PYTHON" - "$work_dir/junit.xml" >&2 <<'PY' || true
import sys
import xml.etree.ElementTree as ET

print("schemathesis failures (from junit.xml):")
for case in ET.parse(sys.argv[1]).iter("testcase"):
    for bad in list(case.findall("failure")) + list(case.findall("error")):
        text = (bad.get("message") or bad.text or "").strip()
        print(f"- {case.get('name')}: {text[:1500]}")
PY
  fi
  return "$rc"
}

main() {
  local started=$SECONDS
  phase python-tools venv_install test "${PY_TOOLS[@]}"
  ensure_rust_components
  phase chromium ensure_chromium

  phase fmt run_fmt
  phase clippy run_clippy
  phase cfn-lint run_cfn_lint

  log "smtp"
  if start_smtp; then
    PASSED+=(smtp)
  else
    FAILED+=(smtp)
  fi

  log "moto"
  if start_moto; then
    PASSED+=(moto)
  else
    FAILED+=(moto)
  fi

  phase tests run_tests
  phase schemathesis run_schemathesis

  local total=$((SECONDS - started))
  if [ "${#FAILED[@]}" -eq 0 ]; then
    printf '\ntest.sh: PASS in %ss (%s)\n' "$total" "${PASSED[*]}"
    return 0
  fi
  printf '\ntest.sh: FAIL in %ss; failed: %s; passed: %s\n' \
    "$total" "${FAILED[*]}" "${PASSED[*]:-none}"
  return 1
}

main "$@"
