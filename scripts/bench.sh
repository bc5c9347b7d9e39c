#!/usr/bin/env bash
# Reproducible benchmarks (results and how to read them: BENCHMARKS.md).
#
#   1. store-bench: raw redb write throughput vs the same writes through the storage
#      port (Store::batch_write), commit sizes 25 and 1,000, fsync on and off, and how
#      the cost grows with the table size.
#   2. GET /v1/contacts/{id} on the local runner (release build, MAILPILOT_KEY_RATE=0,
#      a fresh temp data dir) vs a bare axum hello-world (`hello`, same axum/tokio),
#      driven by the same closed-loop client (`loadgen`), alternating
#      runner, hello, runner, hello, … ; the summary is the median round of each.
#
# All traffic goes to 127.0.0.1 only; every loop is bounded; both servers are stopped
# on every exit path.
#
# Knobs (environment):
#   BENCH_CONNECTIONS (32)  BENCH_DURATION (15 s)  BENCH_WARMUP (3 s)  BENCH_ROUNDS (3)
#   BENCH_THREADS (2: loadgen's worker threads)
#   BENCH_SKIP_STORE=1 (HTTP only)  BENCH_SKIP_HTTP=1 (store only)
#   BENCH_STORE_ARGS (extra store-bench flags, e.g. "--max-secs 2 --growth-sizes 10000")
#   BENCH_OUT (a directory to keep the raw results in; default: a temp dir, removed)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CONNS="${BENCH_CONNECTIONS:-32}"
DURATION="${BENCH_DURATION:-15}"
WARMUP="${BENCH_WARMUP:-3}"
ROUNDS="${BENCH_ROUNDS:-3}"
THREADS="${BENCH_THREADS:-2}"
STORE_ARGS="${BENCH_STORE_ARGS:-}"

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh" # log, die, stop_pid

for tool in cargo curl jq; do
  command -v "$tool" >/dev/null 2>&1 || die "needs $tool"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mailpilot-bench.XXXXXX")"
OUT="${BENCH_OUT:-$WORK/out}"
mkdir -p "$OUT"
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    stop_pid "$pid"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "machine"
{
  machine_info
} | tee "$OUT/machine.txt"

log "cargo build --release -p mailpilot-bench -p mailpilot-runner"
cargo build --release -p mailpilot-bench -p mailpilot-runner
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

if [ "${BENCH_SKIP_STORE:-0}" != 1 ]; then
  log "store-bench ${STORE_ARGS}"
  # shellcheck disable=SC2086 # STORE_ARGS is a list of flags on purpose
  "$BIN/store-bench" --dir "$WORK" $STORE_ARGS | tee "$OUT/store.md"
fi

if [ "${BENCH_SKIP_HTTP:-0}" = 1 ]; then
  exit 0
fi

log "starting the runner (release, MAILPILOT_KEY_RATE=0, fresh data dir)"
MAILPILOT_ADDR=127.0.0.1:0 MAILPILOT_DATA="$WORK/data" MAILPILOT_KEY_RATE=0 \
  "$BIN/mailpilot" serve >"$WORK/runner.out" 2>"$WORK/runner.log" &
RUNNER_PID=$!
PIDS+=("$RUNNER_PID")
RUNNER_URL="$(wait_for "$WORK/runner.log" 'http://127\.0\.0\.1:[0-9]+' "$RUNNER_PID")"
KEY="$(wait_for "$WORK/runner.log" 'mp_[A-Za-z0-9_-]+' "$RUNNER_PID")"
echo "runner at $RUNNER_URL"

log "creating a contact through the API"
CONTACT="$(curl -sS --fail-with-body --max-time 10 -X POST "$RUNNER_URL/v1/contacts" \
  -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"email": "ana.silva@example.com", "first_name": "Ana", "last_name": "Silva",
       "time_zone": "Europe/Lisbon", "locale": "pt-PT", "external_id": "crm-0000001",
       "attributes": {"plan": "pro", "company": "Acme Lda", "lifetime_value": 1234.5,
                      "tags": ["beta", "newsletter"]}}')"
CONTACT_ID="$(jq -r .id <<<"$CONTACT")"
if [ -z "$CONTACT_ID" ] || [ "$CONTACT_ID" = null ]; then
  die "no contact id in: $CONTACT"
fi
RUNNER_TARGET="$RUNNER_URL/v1/contacts/$CONTACT_ID"
BODY="$(curl -sS --fail-with-body --max-time 10 "$RUNNER_TARGET" -H "Authorization: Bearer $KEY")"
echo "GET $RUNNER_TARGET → ${#BODY} bytes: $BODY"

log "starting hello (bare axum)"
"$BIN/hello" 127.0.0.1:0 >"$WORK/hello.out" 2>"$WORK/hello.log" &
HELLO_PID=$!
PIDS+=("$HELLO_PID")
HELLO_URL="$(wait_for "$WORK/hello.log" 'http://127\.0\.0\.1:[0-9]+' "$HELLO_PID")"
HELLO_TARGET="$HELLO_URL/v1/contacts/$CONTACT_ID"
HBODY="$(curl -sS --fail-with-body --max-time 10 "$HELLO_TARGET")"
echo "GET $HELLO_TARGET → ${#HBODY} bytes: $HBODY"

RESULTS="$OUT/http.jsonl"
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  log "round $round/$ROUNDS: runner"
  "$BIN/loadgen" "$RUNNER_TARGET" -H "Authorization: Bearer $KEY" \
    -c "$CONNS" -d "$DURATION" -w "$WARMUP" -t "$THREADS" -l runner |
    jq -c --argjson r "$round" '. + {round: $r}' | tee -a "$RESULTS"
  log "round $round/$ROUNDS: hello"
  "$BIN/loadgen" "$HELLO_TARGET" \
    -c "$CONNS" -d "$DURATION" -w "$WARMUP" -t "$THREADS" -l hello |
    jq -c --argjson r "$round" '. + {round: $r}' | tee -a "$RESULTS"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"

log "GET /v1/contacts/{id}: $CONNS connections, ${DURATION} s measured after ${WARMUP} s warm-up, $ROUNDS rounds"
jq -rs '
  def ms: . / 1000 | . * 100 | round / 100;
  "| server | round | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |",
  "|---|---:|---:|---:|---:|---:|---:|---:|",
  (sort_by(.label, .round)[] |
    "| \(.label) | \(.round) | \(.rps | round) | \(.p50_us | ms) | \(.p90_us | ms) | \(.p99_us | ms) | \(.max_us | ms) | \(.errors) |"),
  "",
  "Median round (by req/s) of each server:",
  "",
  "| server | req/s | p50 ms | p99 ms | errors |",
  "|---|---:|---:|---:|---:|",
  (group_by(.label)[] | sort_by(.rps) | .[(length - 1) / 2 | floor] |
    "| \(.label) | \(.rps | round) | \(.p50_us | ms) | \(.p99_us | ms) | \(.errors) |"),
  "",
  (
    (map(select(.label == "runner")) | sort_by(.rps) | .[(length - 1) / 2 | floor].rps) as $r |
    (map(select(.label == "hello")) | sort_by(.rps) | .[(length - 1) / 2 | floor].rps) as $h |
    "runner ÷ hello (medians): \($r / $h * 1000 | round / 10) % — goal ≥ 50 %: \(if $r / $h >= 0.5 then "met" else "NOT met" end)"
  )
' "$RESULTS" | tee "$OUT/http.md"
