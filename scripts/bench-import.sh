#!/usr/bin/env bash
# The CSV import benchmark (results: BENCHMARKS.md, "CSV import").
#
# Generates realistic CSV files (bench/gen_import_csv.py: fixed seed, 8 columns, some
# quoting, 1% bad rows; the smaller file is the first rows of the larger), then for each
# size, in the same run:
#   1. baseline: a parse-only loop with the csv crate over the file (csv-parse);
#   2. baseline: sqlite3's `.import` of the file into an empty (new) table;
#   3. the import on the local runner (release build, embedded store, fresh data dir,
#      default fsync): POST /v1/imports, PUT the file, poll GET /v1/imports/{id} until
#      it ends, printing a progress line (status, rows, bytes, the runner's RSS) about
#      once a second. Reports wall time (upload + import), rows/s, item writes per row
#      (the store's own write counter, logged by the runner at the end of the run) and
#      the peak RSS of the runner process (VmHWM from /proc).
# The load average is recorded before and after each size: the machine may be shared.
#
# Knobs: BENCH_IMPORT_SIZES ("100000 1000000"), BENCH_OUT (keep the raw results there),
# BENCH_IMPORT_ENV (extra env for the runner, e.g. "MAILPILOT_IMPORT_CHUNK_ROWS=2000"),
# BENCH_IMPORT_NO_BUILD=1 (use the binaries already built), BENCH_IMPORT_PROFILE (release; `debug` only for a quick functional run on a machine
# without a release build: its times are not the benchmark's).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

SIZES="${BENCH_IMPORT_SIZES:-100000 1000000}"
command -v sqlite3 >/dev/null 2>&1 || apt_install sqlite3
for tool in cargo curl jq python3 bc; do
  command -v "$tool" >/dev/null 2>&1 || die "needs $tool"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mailpilot-bench-import.XXXXXX")"
RUNNER_PID=""
cleanup() {
  stop_pid "$RUNNER_PID"
  if [ -n "${BENCH_OUT:-}" ]; then
    mkdir -p "$BENCH_OUT"
    cp "$WORK"/*.json "$WORK"/*.log "$BENCH_OUT"/ 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PROFILE="${BENCH_IMPORT_PROFILE:-release}"
log "building ($PROFILE): mailpilot, csv-parse"
# One cargo invocation for both packages: the shared crate is built once, with the
# features both need (two invocations would build it twice).
if [ -n "${BENCH_IMPORT_NO_BUILD:-}" ]; then
  warn "BENCH_IMPORT_NO_BUILD: using the binaries already built"
elif [ "$PROFILE" = release ]; then
  cargo build --release -p mailpilot-runner --bin mailpilot -p mailpilot-bench --bin csv-parse
else
  cargo build -p mailpilot-runner --bin mailpilot -p mailpilot-bench --bin csv-parse
fi
TARGET="$(cargo_target_dir)/$PROFILE"

log "machine"
{
  date -u '+date: %Y-%m-%d %H:%M:%S UTC'
  echo "nproc: $(nproc)"
  echo "cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "sqlite3: $(sqlite3 --version | cut -d' ' -f1)"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$WORK/machine.log" >&2

log "generating the files (fixed seed)"
for n in $SIZES; do
  python3 bench/gen_import_csv.py "$n" "$WORK/$n.csv"
done

now() { date +%s.%N; }
# The runner's own CPU time so far (utime + stime, in clock ticks): on a shared machine
# the wall time includes waiting for a CPU, this does not.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
secs_since() { echo "$(now) - $1" | bc -l; }

for n in $SIZES; do
  file="$WORK/$n.csv"
  bytes=$(wc -c <"$file")
  load_before=$(cut -d' ' -f1 /proc/loadavg)

  log "$n rows: csv crate, parse only"
  parse=$("$TARGET/csv-parse" "$file")

  log "$n rows: sqlite3 .import"
  rm -f "$WORK/sqlite.db"
  t0=$(now)
  sqlite3 "$WORK/sqlite.db" <<SQL
.mode csv
.import $file contacts
SQL
  sqlite_secs=$(secs_since "$t0")
  sqlite_rows=$(sqlite3 "$WORK/sqlite.db" 'select count(*) from contacts')
  rm -f "$WORK/sqlite.db"

  log "$n rows: import on the local runner"
  data="$WORK/data-$n"
  mkdir -p "$data"
  key=$(MAILPILOT_DATA="$data" "$TARGET/mailpilot" workspace create bench | jq -r .api_key)
  port=$(free_port)
  # shellcheck disable=SC2086
  env ${BENCH_IMPORT_ENV:-} MAILPILOT_ADDR="127.0.0.1:$port" MAILPILOT_DATA="$data" \
    MAILPILOT_KEY_RATE=0 RUST_LOG=info "$TARGET/mailpilot" serve >"$WORK/runner-$n.log" 2>&1 &
  RUNNER_PID=$!
  base="http://127.0.0.1:$port"
  wait_http "$base/health" 60 "$RUNNER_PID" || die "the runner did not start"
  id=$(curl -sf -X POST "$base/v1/imports" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' -d '{}' | jq -r .id)
  cpu0=$(cpu_ticks "$RUNNER_PID")
  t0=$(now)
  curl -sf -X PUT "$base/v1/imports/$id/file" -H "Authorization: Bearer $key" \
    --data-binary "@$file" -o /dev/null
  upload_secs=$(secs_since "$t0")
  last_print=0
  while :; do
    state=$(curl -sf "$base/v1/imports/$id" -H "Authorization: Bearer $key")
    status=$(jq -r .status <<<"$state")
    case "$status" in
      completed | completed_with_errors | failed) break ;;
    esac
    t=$(now)
    if [ "$(echo "$t - $last_print >= 1" | bc -l)" = 1 ]; then
      last_print=$t
      rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$RUNNER_PID/status")
      printf '  progress %6.1fs: %s, %s rows read, %s of %s bytes, runner RSS %s MB\n' \
        "$(echo "$t - $t0" | bc -l)" "$status" "$(jq .rows_read <<<"$state")" \
        "$(jq .bytes_processed <<<"$state")" "$(jq .bytes_total <<<"$state")" "$rss" >&2
    fi
    sleep 0.2
  done
  total_secs=$(secs_since "$t0")
  printf '  done %6.1fs: %s\n' "$total_secs" \
    "$(jq -c '{status, rows_read, created, updated, failed, skipped}' <<<"$state")" >&2
  rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$RUNNER_PID/status")
  cpu_secs=$(echo "($(cpu_ticks "$RUNNER_PID") - $cpu0) / $(getconf CLK_TCK)" | bc -l)
  sleep 0.3
  writes=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/runner-$n.log" | grep -o 'item_writes=[0-9]*' | tail -n 1 | cut -d= -f2)
  writes=${writes:-0}
  stop_pid "$RUNNER_PID"
  RUNNER_PID=""
  rm -rf "$data"
  jq -n --argjson n "$n" --argjson bytes "$bytes" --argjson parse "$parse" \
    --argjson sqlite_secs "$sqlite_secs" --argjson sqlite_rows "$sqlite_rows" \
    --argjson upload_secs "$upload_secs" --argjson total_secs "$total_secs" \
    --argjson rss_kb "$rss_kb" --argjson cpu_secs "$cpu_secs" --argjson writes "$writes" --argjson state "$state" \
    --argjson load_before "$load_before" --argjson load_after "$(cut -d' ' -f1 /proc/loadavg)" \
    '{rows: $n, bytes: $bytes, parse_secs: $parse.secs, sqlite_secs: $sqlite_secs,
      sqlite_rows: $sqlite_rows, upload_secs: $upload_secs, total_secs: $total_secs,
      rows_per_sec: ($n / $total_secs), cpu_secs: $cpu_secs,
      cpu_us_per_row: ($cpu_secs * 1000000 / $n), peak_rss_mb: ($rss_kb / 1024),
      item_writes: $writes, writes_per_row: ($writes / $n),
      vs_sqlite: ($total_secs / $sqlite_secs),
      load_before: $load_before, load_after: $load_after,
      import: ($state | {status, rows_read, created, updated, failed, skipped})}' \
    | tee "$WORK/result-$n.json"
done

log "summary"
cat "$WORK/machine.log"
printf '| rows | file | csv parse only | sqlite3 .import | runner: upload | runner: upload + import | rows/s | × sqlite | runner CPU | µs CPU/row | item writes/row | peak RSS | load avg before / after |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
for n in $SIZES; do
  jq -r '"| \(.rows) | \(.bytes/1048576*10|round/10) MB | \(.parse_secs*100|round/100) s | \(.sqlite_secs*100|round/100) s | \(.upload_secs*100|round/100) s | \(.total_secs*100|round/100) s | \(.rows_per_sec|round) | \(.vs_sqlite*10|round/10) | \(.cpu_secs*10|round/10) s | \(.cpu_us_per_row*10|round/10) | \(.writes_per_row*100|round/100) | \(.peak_rss_mb|round) MB | \(.load_before) / \(.load_after) |"' \
    "$WORK/result-$n.json"
done
