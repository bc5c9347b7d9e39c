#!/usr/bin/env bash
# The CSV import benchmark (results: BENCHMARKS.md, "CSV import").
#
# Generates a realistic 1,000,000-row CSV (bench/gen_import_csv.py: fixed seed,
# 8 columns, some quoting, 1% bad rows) and its first 100,000 rows, then for each size,
# in the same run:
#   1. baseline: a parse-only loop with the csv crate over the file (csv-parse);
#   2. baseline: sqlite3's `.import` of the file into an empty table;
#   3. the import on the local runner (release build, embedded store, fresh data dir):
#      POST /v1/imports, PUT the file, poll GET /v1/imports/{id} until it ends.
#      Reports wall time (upload + import), rows/s, item writes per row (the store's
#      own write counter, logged by the runner at the end of the run) and the peak RSS
#      of the runner process (VmHWM from /proc).
#
# Knobs: BENCH_IMPORT_SIZES ("100000 1000000"), BENCH_OUT (keep the raw results there),
# BENCH_IMPORT_PROFILE (release; `debug` only for a quick functional run on a machine
# without a release build: its times are not the benchmark's).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

SIZES="${BENCH_IMPORT_SIZES:-100000 1000000}"
command -v sqlite3 >/dev/null 2>&1 || apt_install sqlite3
for tool in cargo curl jq python3; do
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
if [ "$PROFILE" = release ]; then
  cargo build --release -p mailpilot-runner --bin mailpilot
  cargo build --release -p mailpilot-bench --bin csv-parse
else
  cargo build -p mailpilot-runner --bin mailpilot
  cargo build -p mailpilot-bench --bin csv-parse
fi
TARGET="$(cargo_target_dir)/$PROFILE"

log "generating the files"
python3 bench/gen_import_csv.py 1000000 "$WORK/1000000.csv"
head -n 100001 "$WORK/1000000.csv" >"$WORK/100000.csv"

now() { date +%s.%N; }

for n in $SIZES; do
  file="$WORK/$n.csv"
  [ -f "$file" ] || python3 bench/gen_import_csv.py "$n" "$file"
  bytes=$(wc -c <"$file")

  log "$n rows: csv crate, parse only"
  parse=$("$TARGET/csv-parse" "$file")

  log "$n rows: sqlite3 .import"
  rm -f "$WORK/sqlite.db"
  t0=$(now)
  sqlite3 "$WORK/sqlite.db" <<SQL
.mode csv
.import $file contacts
SQL
  t1=$(now)
  sqlite_secs=$(echo "$t1 - $t0" | bc -l)
  sqlite_rows=$(sqlite3 "$WORK/sqlite.db" 'select count(*) from contacts')

  log "$n rows: import on the local runner"
  data="$WORK/data-$n"
  mkdir -p "$data"
  key=$(MAILPILOT_DATA="$data" "$TARGET/mailpilot" workspace create bench | jq -r .api_key)
  port=$(free_port)
  MAILPILOT_ADDR="127.0.0.1:$port" MAILPILOT_DATA="$data" MAILPILOT_KEY_RATE=0 RUST_LOG=info \
    "$TARGET/mailpilot" serve >"$WORK/runner-$n.log" 2>&1 &
  RUNNER_PID=$!
  base="http://127.0.0.1:$port"
  wait_http "$base/health" 60 "$RUNNER_PID" || die "the runner did not start"
  id=$(curl -sf -X POST "$base/v1/imports" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' -d '{}' | jq -r .id)
  t0=$(now)
  curl -sf -X PUT "$base/v1/imports/$id/file" -H "Authorization: Bearer $key" \
    --data-binary "@$file" -o /dev/null
  t_up=$(now)
  samples=0
  while :; do
    state=$(curl -sf "$base/v1/imports/$id" -H "Authorization: Bearer $key")
    status=$(jq -r .status <<<"$state")
    case "$status" in
      completed | completed_with_errors | failed) break ;;
    esac
    samples=$((samples + 1))
    if [ $((samples % 20)) -eq 1 ]; then
      printf '  progress: %s rows, %s of %s bytes\n' "$(jq .rows_read <<<"$state")" \
        "$(jq .bytes_processed <<<"$state")" "$(jq .bytes_total <<<"$state")" >&2
    fi
    sleep 0.1
  done
  t1=$(now)
  rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$RUNNER_PID/status")
  sleep 0.3
  writes=$(grep -o 'item_writes[^ ]*' "$WORK/runner-$n.log" | tail -n 1 | grep -o '[0-9]*' || echo 0)
  stop_pid "$RUNNER_PID"
  RUNNER_PID=""
  jq -n --argjson n "$n" --argjson bytes "$bytes" --argjson parse "$parse" \
    --argjson sqlite_secs "$sqlite_secs" --argjson sqlite_rows "$sqlite_rows" \
    --argjson upload_secs "$(echo "$t_up - $t0" | bc -l)" \
    --argjson total_secs "$(echo "$t1 - $t0" | bc -l)" \
    --argjson rss_kb "$rss_kb" --argjson writes "$writes" --argjson state "$state" \
    '{rows: $n, bytes: $bytes, parse_secs: $parse.secs, sqlite_secs: $sqlite_secs,
      sqlite_rows: $sqlite_rows, upload_secs: $upload_secs, total_secs: $total_secs,
      rows_per_sec: ($n / $total_secs), peak_rss_mb: ($rss_kb / 1024),
      item_writes: $writes, writes_per_row: ($writes / $n),
      vs_sqlite: ($total_secs / $sqlite_secs),
      import: ($state | {status, rows_read, created, updated, failed, skipped})}' \
    | tee "$WORK/result-$n.json"
done

log "summary"
printf '| rows | csv parse only | sqlite3 .import | runner import (upload + import) | rows/s | × sqlite | item writes/row | peak RSS |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for n in $SIZES; do
  jq -r '"| \(.rows) | \(.parse_secs*100|round/100) s | \(.sqlite_secs*100|round/100) s | \(.total_secs*100|round/100) s | \(.rows_per_sec|round) | \(.vs_sqlite*10|round/10) | \(.writes_per_row*100|round/100) | \(.peak_rss_mb|round) MB |"' \
    "$WORK/result-$n.json"
done
