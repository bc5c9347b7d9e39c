#!/usr/bin/env bash
# The tracking benchmark (issue 8; method and results: BENCHMARKS.md, "Tracking").
#
# The local runner's open pixel `GET /t/o/{token}` and click `GET /t/c/{token}`, next to
# the bare axum server `hello` (same routes, nothing behind them), in the same run:
#
#   0. setup (offline, on a fresh data dir): two workspaces (`mailpilot workspace
#      create`), "load" and "count"; `track-setup` gives each N contacts and N messages
#      sent two hours ago and mints one open and one click token per message with the
#      same link keys the runner is started with (BENCH_TRACK_TOKENS, default 10,000
#      distinct tokens of each kind for "load").
#   1. maximum req/s: wrk (closed loop; a Lua script cycles through the token paths),
#      open, click, and hello on the same paths. Each runner run starts a fresh runner
#      process (the recorder backlog of one run must not slow the next); after each run
#      the recorder is watched for BENCH_TRACK_RECORDER_WINDOW seconds (events recorded/s).
#   2. latency at a fixed rate, half of each endpoint's maximum: `loadgen --rate`
#      (open loop, latency from the scheduled send time: no coordinated omission);
#      hello at the open run's rate.
#   3. exact count: `loadgen --total N` opens and N clicks on the "count" workspace,
#      wait until the recorder has written them (bounded), then the analytics API's
#      counters must equal the answered requests exactly: human opens/clicks = answered,
#      unique = distinct messages requested, machine opens = bot clicks = 0.
#
# Every request carries a desktop Chrome User-Agent from 127.0.0.1 (neither Apple's
# network nor a scanner's), sent hours after the message: every open and click is human.
# Loopback only; every wait is bounded; every process started here is stopped on exit.
#
# Usage: scripts/bench-track.sh [--profile release|debug] [--no-build]
# Knobs (environment):
#   BENCH_TRACK_TOKENS (10000)   BENCH_TRACK_DURATION (15 s)  BENCH_TRACK_WARMUP (3 s)
#   BENCH_TRACK_CONNECTIONS (32) BENCH_TRACK_THREADS (2: wrk's and loadgen's threads)
#   BENCH_TRACK_TOTAL (10000 opens and as many clicks, exact count)
#   BENCH_TRACK_COUNT_MESSAGES (1000: messages of the "count" workspace)
#   BENCH_TRACK_RECORDER_WINDOW (10 s)  BENCH_TRACK_DRAIN_MAX (900 s: exact-count wait)
#   BENCH_TRACK_CONTACTS (1: messages have contacts; 0: none)
#   BENCH_OUT (a directory to keep the raw results in; default: a temp dir, removed)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh" # log, die, warn, stop_pid, apt_install

PROFILE=release
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile)
      PROFILE="${2:-}"
      shift 2
      ;;
    --profile=*)
      PROFILE="${1#--profile=}"
      shift
      ;;
    --no-build)
      BUILD=0
      shift
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
case "$PROFILE" in
  release | debug) ;;
  *) die "--profile is release or debug" ;;
esac

TOKENS="${BENCH_TRACK_TOKENS:-10000}"
DURATION="${BENCH_TRACK_DURATION:-15}"
WARMUP="${BENCH_TRACK_WARMUP:-3}"
CONNS="${BENCH_TRACK_CONNECTIONS:-32}"
THREADS="${BENCH_TRACK_THREADS:-2}"
TOTAL="${BENCH_TRACK_TOTAL:-10000}"
COUNT_MESSAGES="${BENCH_TRACK_COUNT_MESSAGES:-1000}"
RECORDER_WINDOW="${BENCH_TRACK_RECORDER_WINDOW:-10}"
DRAIN_MAX="${BENCH_TRACK_DRAIN_MAX:-900}"
CONTACTS="${BENCH_TRACK_CONTACTS:-1}"
for n in TOKENS DURATION WARMUP CONNS THREADS TOTAL COUNT_MESSAGES RECORDER_WINDOW DRAIN_MAX; do
  [[ "${!n}" =~ ^[0-9]+$ ]] || die "$n must be a whole number, got ${!n}"
done
if [ "$DURATION" -lt 1 ] || [ "$DURATION" -gt 600 ]; then
  die "BENCH_TRACK_DURATION must be 1..600"
fi
[ "$WARMUP" -le 120 ] || die "BENCH_TRACK_WARMUP must be 0..120"
if [ "$TOKENS" -lt 1 ] || [ "$COUNT_MESSAGES" -lt 1 ] || [ "$TOTAL" -lt 1 ]; then
  die "token, message and request counts must be at least 1"
fi

UA='Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'

for tool in cargo curl jq timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "needs $tool"
done
command -v wrk >/dev/null 2>&1 || apt_install wrk
command -v wrk >/dev/null 2>&1 || die "needs wrk"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mailpilot-bench-track.XXXXXX")"
OUT="${BENCH_OUT:-$WORK/out}"
mkdir -p "$OUT"
DATA="$WORK/data"
RESULTS="$OUT/track.jsonl"
: >"$RESULTS"
RUNNER_PID=""
HELLO_PID=""
RUNS=0

cleanup() {
  stop_pid "$RUNNER_PID"
  stop_pid "$HELLO_PID"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "machine"
{
  machine_info
  echo "wrk: $(wrk -v 2>&1 | head -n1)"
  echo "profile: $PROFILE"
} | tee "$OUT/machine.txt"

if [ "$BUILD" = 1 ]; then
  if [ "$PROFILE" = release ]; then
    log "cargo build --release -p mailpilot-bench -p mailpilot-runner"
    cargo build --release -p mailpilot-bench -p mailpilot-runner
  else
    log "cargo build -p mailpilot-bench -p mailpilot-runner (debug: a smoke run, not figures)"
    cargo build -p mailpilot-bench -p mailpilot-runner
  fi
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
for b in mailpilot hello loadgen track-setup; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing (build it, or drop --no-build)"
done

# Fixed link keys: the runner verifies what track-setup signs.
MAILPILOT_LINK_KEYS="bench:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export MAILPILOT_LINK_KEYS

log "setup: workspaces, contacts, sent messages, tokens"
ws_create() {
  MAILPILOT_DATA="$DATA" timeout 120 "$BIN/mailpilot" workspace create "$1" 2>>"$WORK/setup.log"
}
LOAD="$(ws_create "Bench load")"
COUNT="$(ws_create "Bench count")"
LOAD_WS="$(jq -r .workspace_id <<<"$LOAD")"
LOAD_KEY="$(jq -r .api_key <<<"$LOAD")"
COUNT_WS="$(jq -r .workspace_id <<<"$COUNT")"
COUNT_KEY="$(jq -r .api_key <<<"$COUNT")"
SETUP_FLAGS=()
[ "$CONTACTS" = 1 ] || SETUP_FLAGS+=(--no-contacts)
timeout 1800 "$BIN/track-setup" --data "$DATA" --workspace "$LOAD_WS" \
  --messages "$TOKENS" --out "$WORK/load" "${SETUP_FLAGS[@]}" | tee "$OUT/setup.jsonl"
timeout 1800 "$BIN/track-setup" --data "$DATA" --workspace "$COUNT_WS" \
  --messages "$COUNT_MESSAGES" --out "$WORK/count" "${SETUP_FLAGS[@]}" | tee -a "$OUT/setup.jsonl"
for f in load-open load-click count-open count-click; do
  echo "$f: $(wc -l <"$WORK/$f.txt") paths, e.g. $(head -c 60 "$WORK/$f.txt")…"
done

log "starting hello (bare axum)"
"$BIN/hello" 127.0.0.1:0 >"$WORK/hello.out" 2>"$WORK/hello.log" &
HELLO_PID=$!
HELLO_URL="$(wait_for "$WORK/hello.log" 'http://127\.0\.0\.1:[0-9]+' "$HELLO_PID" 1200)"

start_runner() {
  RUNS=$((RUNS + 1))
  local logf="$WORK/runner-$RUNS.log"
  MAILPILOT_ADDR=127.0.0.1:0 MAILPILOT_DATA="$DATA" MAILPILOT_KEY_RATE=0 \
    "$BIN/mailpilot" serve >"$WORK/runner-$RUNS.out" 2>"$logf" &
  RUNNER_PID=$!
  RUNNER_URL="$(wait_for "$logf" 'http://127\.0\.0\.1:[0-9]+' "$RUNNER_PID" 1200)"
}

# Stops the runner: SIGTERM (it stops accepting and drains the recorder), SIGKILL after
# 5 s. Events still waiting in the recorder then are lost: only the exact-count phase,
# which waits for the recorder first, counts events.
stop_runner() {
  stop_pid "$RUNNER_PID"
  RUNNER_PID=""
}

# counts KEY: the workspace's counters (the analytics API) as one JSON object.
counts() {
  local from to
  from="$(date -u -d '-2 days' +%F)"
  to="$(date -u +%F)"
  curl -sS --fail-with-body --max-time 30 -H "Authorization: Bearer $1" \
    "$RUNNER_URL/v1/analytics/overview?from=$from&to=$to" | jq -c .counts
}

# recorded KEY KIND: opens (human + machine) or clicks (human + bot) recorded so far.
recorded() {
  local c
  c="$(counts "$1")"
  if [ "$2" = open ]; then
    jq '.human_opens + .machine_opens' <<<"$c"
  else
    jq '.human_clicks + .bot_clicks' <<<"$c"
  fi
}

# wrk_json LABEL SERVER_URL PATHS SECONDS: one wrk run as a JSON line on stdout.
wrk_json() {
  local label=$1 url=$2 paths=$3 secs=$4 raw
  raw="$(timeout $((secs + 60)) wrk -t "$THREADS" -c "$CONNS" -d "${secs}s" --latency \
    --timeout 10s -H "User-Agent: $UA" -s "$ROOT/scripts/bench-track.lua" "$url" -- "$paths")"
  printf '%s\n' "$raw" >>"$OUT/wrk.txt"
  awk -v label="$label" -v secs="$secs" '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
      return v + 0
    }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    / requests in / { total = $1 }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    /Socket errors:/ { gsub(",", ""); sock = $4 + $6 + $8 + $10 }
    /^Requests\/sec:/ { rps = $2 }
    END {
      printf "{\"label\":\"%s\",\"tool\":\"wrk\",\"seconds\":%s,\"requests\":%d,\"rps\":%s,", label, secs, total, rps
      printf "\"p50_ms\":%s,\"p99_ms\":%s,\"bad_status\":%d,\"socket_errors\":%d}\n", p50 + 0, p99 + 0, bad, sock
    }' <<<"$raw"
}

# max_run LABEL URL PATHS: warm-up (discarded) then the measured wrk run; appends the
# result (with the requests of both runs as "answered") to the results.
max_run() {
  local label=$1 url=$2 paths=$3 warm=0 line
  if [ "$WARMUP" -gt 0 ]; then
    warm="$(wrk_json "$label-warmup" "$url" "$paths" "$WARMUP" | jq .requests)"
  fi
  line="$(wrk_json "$label" "$url" "$paths" "$DURATION")"
  jq -c --argjson w "$warm" '. + {phase: "max", answered: (.requests + $w)}' <<<"$line" |
    tee -a "$RESULTS"
}

# recorder_watch LABEL KIND ANSWERED BEFORE: after a load run on the "load" workspace,
# how fast the recorder writes the events (bounded by BENCH_TRACK_RECORDER_WINDOW).
recorder_watch() {
  local label=$1 kind=$2 answered=$3 before=$4 start now end_at first t0 secs
  first="$(recorded "$LOAD_KEY" "$kind")"
  t0="$(date +%s.%N)"
  end_at=$((SECONDS + RECORDER_WINDOW))
  now="$first"
  while [ "$SECONDS" -lt "$end_at" ] && [ $((now - before)) -lt "$answered" ]; do
    sleep 1
    now="$(recorded "$LOAD_KEY" "$kind")"
  done
  secs="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
  start=$((first - before))
  jq -cn --arg l "$label" --argjson ans "$answered" --argjson s "$start" \
    --argjson e "$((now - before))" --argjson secs "$secs" \
    '{label: $l, phase: "recorder", answered: $ans, recorded_at_end_of_load: $s,
      recorded_at_end_of_watch: $e, watch_seconds: $secs,
      recorded_per_s: (if $secs > 0 then (($e - $s) / $secs | round) else null end),
      left: ($ans - $e)}' | tee -a "$RESULTS"
}

# ---- 1. maximum req/s ----------------------------------------------------------------
for kind in open click; do
  log "max req/s: runner $kind (wrk, $CONNS connections, $THREADS threads, ${WARMUP} s warm-up + ${DURATION} s)"
  start_runner
  before="$(recorded "$LOAD_KEY" "$kind")"
  res="$(max_run "runner-$kind" "$RUNNER_URL" "$WORK/load-$kind.txt")"
  recorder_watch "runner-$kind" "$kind" "$(jq .answered <<<"$res")" "$before"
  stop_runner
  log "max req/s: hello $kind"
  max_run "hello-$kind" "$HELLO_URL" "$WORK/load-$kind.txt" >/dev/null
done

# ---- 2. latency at half the maximum -------------------------------------------------
half() {
  jq -rs --arg l "$1" 'map(select(.label == $l and .phase == "max"))[0].rps / 2 | floor' "$RESULTS"
}
OPEN_RATE="$(half runner-open)"
CLICK_RATE="$(half runner-click)"
if [ "$OPEN_RATE" -lt 1 ] || [ "$CLICK_RATE" -lt 1 ]; then
  die "no maximum measured"
fi

rate_run() {
  local label=$1 url=$2 paths=$3 rate=$4 flags=()
  case "$label" in *-click) flags+=(--ok-redirects) ;; esac
  timeout $((WARMUP + DURATION + 60)) "$BIN/loadgen" "$url" --paths "$paths" \
    --rate "$rate" -c "$CONNS" -t "$THREADS" -d "$DURATION" -w "$WARMUP" \
    -H "User-Agent: $UA" -l "$label" "${flags[@]}" |
    jq -c '. + {phase: "rate", tool: "loadgen"}' | tee -a "$RESULTS"
}
for kind in open click; do
  rate="$OPEN_RATE"
  if [ "$kind" = click ]; then rate="$CLICK_RATE"; fi
  log "latency: runner $kind at $rate req/s (open loop, ${WARMUP} s warm-up + ${DURATION} s)"
  start_runner
  rate_run "runner-$kind" "$RUNNER_URL" "$WORK/load-$kind.txt" "$rate" >/dev/null
  stop_runner
done
log "latency: hello open at $OPEN_RATE req/s (the runner's open rate)"
rate_run "hello-open" "$HELLO_URL" "$WORK/load-open.txt" "$OPEN_RATE" >/dev/null

# ---- 3. exact count -------------------------------------------------------------------
log "exact count: $TOTAL opens and $TOTAL clicks on $COUNT_MESSAGES messages"
start_runner
BASE="$(counts "$COUNT_KEY")"
for kind in open click; do
  flags=()
  if [ "$kind" = click ]; then flags+=(--ok-redirects); fi
  # At most 600 s (loadgen's limit) for the N requests.
  timeout 660 "$BIN/loadgen" "$RUNNER_URL" --paths "$WORK/count-$kind.txt" \
    --total "$TOTAL" -c "$CONNS" -t "$THREADS" -d 600 \
    -H "User-Agent: $UA" -l "exact-$kind" "${flags[@]}" |
    jq -c '. + {phase: "exact-load", tool: "loadgen"}' | tee -a "$RESULTS"
done
OPEN_OK="$(jq -rs 'map(select(.label == "exact-open"))[0].requests' "$RESULTS")"
CLICK_OK="$(jq -rs 'map(select(.label == "exact-click"))[0].requests' "$RESULTS")"
ERRORS="$(jq -rs 'map(select(.phase == "exact-load") | .errors) | add' "$RESULTS")"
# Unique: request i asks for message i mod COUNT_MESSAGES.
UNIQUE_OPEN=$((OPEN_OK < COUNT_MESSAGES ? OPEN_OK : COUNT_MESSAGES))
UNIQUE_CLICK=$((CLICK_OK < COUNT_MESSAGES ? CLICK_OK : COUNT_MESSAGES))
drain_start=$SECONDS
stalled_since=$SECONDS
last=-1
while :; do
  NOW="$(counts "$COUNT_KEY")"
  got="$(jq -n --argjson a "$NOW" --argjson b "$BASE" \
    '($a.human_opens + $a.machine_opens + $a.human_clicks + $a.bot_clicks)
     - ($b.human_opens + $b.machine_opens + $b.human_clicks + $b.bot_clicks)')"
  [ "$got" -ge $((OPEN_OK + CLICK_OK)) ] && break
  [ "$got" != "$last" ] && stalled_since=$SECONDS
  last="$got"
  if [ $((SECONDS - drain_start)) -ge "$DRAIN_MAX" ] || [ $((SECONDS - stalled_since)) -ge 60 ]; then
    warn "the recorder did not catch up ($got of $((OPEN_OK + CLICK_OK)) events after $((SECONDS - drain_start)) s)"
    break
  fi
  sleep 1
done
DRAIN_SECS=$((SECONDS - drain_start))
# A last look a moment later: nothing more may arrive (an over-count shows here).
sleep 2
NOW="$(counts "$COUNT_KEY")"
jq -cn --argjson a "$NOW" --argjson b "$BASE" --argjson oo "$OPEN_OK" --argjson co "$CLICK_OK" \
  --argjson uo "$UNIQUE_OPEN" --argjson uc "$UNIQUE_CLICK" --argjson err "$ERRORS" \
  --argjson drain "$DRAIN_SECS" --argjson msgs "$COUNT_MESSAGES" '
  def d(k): $a[k] - $b[k];
  {label: "exact", phase: "exact", drain_seconds: $drain, errors: $err,
   expected: {human_opens: $oo, unique_human_opens: $uo, machine_opens: 0,
              human_clicks: $co, unique_human_clicks: $uc, bot_clicks: 0, sent: $msgs},
   recorded: {human_opens: d("human_opens"), unique_human_opens: d("unique_human_opens"),
              machine_opens: d("machine_opens"), human_clicks: d("human_clicks"),
              unique_human_clicks: d("unique_human_clicks"), bot_clicks: d("bot_clicks"),
              sent: $a.sent}}
  | .ok = (.expected == .recorded and $err == 0)' | tee -a "$RESULTS"
stop_runner
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"

# ---- summary ----------------------------------------------------------------------------
log "results (Markdown)"
DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
MACHINE="$(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
jq -rs --arg date "$DATE" --arg machine "$MACHINE" --arg profile "$PROFILE" \
  --argjson tokens "$TOKENS" --argjson conns "$CONNS" --argjson dur "$DURATION" '
  def r1: . * 10 | round / 10;
  def ms: . / 1000 | . * 100 | round / 100;
  def get(l; p): map(select(.label == l and .phase == p))[0];
  . as $all |
  "Run: \($date), \($machine), \($profile) build, \($tokens) distinct tokens per endpoint, \($conns) connections, \($dur) s runs.",
  "",
  "| date | machine | endpoint | runner max req/s (wrk) | hello max req/s (wrk) | runner ÷ hello | goal ≥ 70 % |",
  "|---|---|---|---:|---:|---:|---|",
  (["open", "click"][] as $k |
    get("runner-\($k)"; "max") as $r | get("hello-\($k)"; "max") as $h |
    "| \($date) | \($machine) | `GET /t/\($k[0:1])/{token}` | \($r.rps | round) | \($h.rps | round) | \($r.rps / $h.rps * 100 | r1) % | \(if $r.rps / $h.rps >= 0.7 then "met" else "NOT met" end) |"),
  "",
  "| server | endpoint | fixed rate req/s (loadgen, open loop) | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | goal p99 < 5 ms |",
  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
  (["runner-open", "runner-click", "hello-open"][] as $l | get($l; "rate") |
    "| \($l | split("-")[0]) | \($l | split("-")[1]) | \(.target_rps | round) | \(.rps | round) | \(.p50_us | ms) | \(.p99_us | ms) | \(.p999_us | ms) | \(.max_us | ms) | \(.errors) | \(if ($l | startswith("runner")) then (if .p99_us < 5000 and .errors == 0 then "met" else "NOT met" end) else "—" end) |"),
  "",
  "| after the max run | answered | recorded by the end of the run | recorded after watching | watched s | recorder events/s | not yet recorded |",
  "|---|---:|---:|---:|---:|---:|---:|",
  (map(select(.phase == "recorder"))[] |
    "| \(.label) | \(.answered) | \(.recorded_at_end_of_load) | \(.recorded_at_end_of_watch) | \(.watch_seconds) | \(.recorded_per_s) | \(.left) |"),
  "",
  (get("exact"; "exact") as $e |
    "| exact count | human opens (unique) | machine opens | human clicks (unique) | bot clicks | drain s | result |",
    "|---|---:|---:|---:|---:|---:|---|",
    "| requests answered | \($e.expected.human_opens) (\($e.expected.unique_human_opens)) | 0 | \($e.expected.human_clicks) (\($e.expected.unique_human_clicks)) | 0 | | |",
    "| recorded (analytics API) | \($e.recorded.human_opens) (\($e.recorded.unique_human_opens)) | \($e.recorded.machine_opens) | \($e.recorded.human_clicks) (\($e.recorded.unique_human_clicks)) | \($e.recorded.bot_clicks) | \($e.drain_seconds) | \(if $e.ok then "OK" else "MISMATCH (errors: \($e.errors))" end) |")
' "$RESULTS" | tee "$OUT/track.md"
jq -e -s 'map(select(.phase == "exact"))[0].ok' "$RESULTS" >/dev/null || {
  warn "exact count: MISMATCH"
  exit 1
}
echo "exact count: OK"
