#!/usr/bin/env bash
# Benchmarks lakectl stage by stage against the seed-style Python pipelines, on one machine,
# on the same input. Not part of the tests. Prints a table and writes bench/results/<date>.md
# and .json.
#
#   BENCH_RECORDS=1000000 bash scripts/bench.sh
#
# It runs its own broker and S3 on free loopback ports (a memory-engine Nisshi, a moto server)
# and stops them at the end; for Postgres it starts scripts/services.sh's cluster (if it is not
# up) and works in a database of its own, dropped at the end.
# Stages so far: produce, bronze (into a local folder and into S3), silver (the shipped books
# cleaning, against Polars), load (against psql \copy and pandas to_sql). Every ratio is
# computed from figures measured in this run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${BENCH_RECORDS:-1000000}
CACHE=${LAKECTL_CACHE:-$HOME/.cache/lakectl}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakectl-target}
LAKECTL="$CARGO_TARGET_DIR/release/lakectl"
WORK=$(mktemp -d /tmp/lakectl-bench.XXXXXX)
RESULTS="$ROOT/bench/results"
STAMP=$(date -u +%Y-%m-%d)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
log() { printf '[bench] %s\n' "$*" >&2; }
wait_port() { until port_open "$1"; do sleep 0.1; done; }

PIDS=()
BENCH_DB=lakectl_bench_$$
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -n ${PG_ADMIN:-} ]] && psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $BENCH_DB" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

log "building lakectl (release)"
cargo build --release --locked -p jobs --bin lakectl >&2
bash scripts/services.sh up >&2   # the tools, and the Postgres cluster
PG_ADMIN=$(grep -o 'postgres://[^ ]*' .lakectl/services.env | head -1)
psql "$PG_ADMIN" -qc "CREATE DATABASE $BENCH_DB"
BENCH_DB_URL=${PG_ADMIN%/*}/$BENCH_DB
PY=$(bash scripts/python-env.sh bench)

KAFKA_PORT=$(free_port)
(cd "$WORK" && run_nisshi "$CACHE/tools/bin/nisshi" "$KAFKA_PORT" memory://nisshi/ >/dev/null 2>&1) &
PIDS+=($!)
S3_PORT=$(free_port)
"$CACHE/venvs/s3/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$KAFKA_PORT"
wait_port "$S3_PORT"
until curl -sf -X PUT "http://127.0.0.1:$S3_PORT/lake" >/dev/null; do sleep 0.2; done
export LAKECTL_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
  AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true

log "generating $N records"
"$PY" scripts/bench/gen_books.py "$N" "$WORK/books.csv"
BYTES=$(stat -c %s "$WORK/books.csv")
# The shipped books pipeline: its bronze and silver settings are what is measured.
PIPELINE="$ROOT/pipelines/books.toml"

ROWS=()   # "stage|engine|wall|cpu|rss_kb", each over the same N records
# measure STAGE ENGINE CMD...: runs CMD under /usr/bin/time.
measure() {
  local stage=$1 engine=$2
  shift 2
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || {
    log "$stage/$engine failed:"; tail -20 "$WORK/err" >&2; exit 1
  }
  read -r wall user sys rss <"$WORK/time"
  ROWS+=("$stage|$engine|$wall|$(echo "$user + $sys" | bc)|$rss")
  log "$stage/$engine: ${wall}s, peak RSS $((rss / 1024)) MiB"
}

log "produce"
measure produce lakectl "$LAKECTL" -p "$PIPELINE" produce --file "$WORK/books.csv" --topic books
grep -q "delivered $N, failed 0" "$WORK/out" || { log "lakectl produce did not deliver $N"; exit 1; }
measure produce "python (pandas+confluent-kafka)" "$PY" scripts/bench/py_produce.py \
  "$LAKECTL_KAFKA_BROKERS" books_py "$WORK/books.csv"
grep -q "\"records\": $N" "$WORK/out" || { log "python produce did not deliver $N"; exit 1; }

# --rate is a promise too: a minute at a fixed rate must land within 5 %.
RATE=${BENCH_RATE:-2000}
RATE_SECONDS=${BENCH_RATE_SECONDS:-60}
log "produce --rate $RATE/s for ${RATE_SECONDS}s"
started=$(date +%s.%N)
"$LAKECTL" -p "$PIPELINE" produce --file "$WORK/books.csv" --topic books_rate \
  --rate "$RATE" --limit $((RATE * RATE_SECONDS)) >/dev/null 2>&1
elapsed=$(echo "$(date +%s.%N) - $started" | bc)
RATE_LINE="produce --rate $RATE/s --limit $((RATE * RATE_SECONDS)): $(echo "scale=1; $RATE * $RATE_SECONDS / $elapsed" | bc) records/s over ${elapsed%.*} s ($(echo "scale=2; ($RATE * $RATE_SECONDS / $elapsed - $RATE) * 100 / $RATE" | bc) % off the target)"
log "$RATE_LINE"

# Bronze reads the topic lakectl produced; each run in its own consumer group.
log "bronze"
LAKECTL_LAKE_URI="$WORK/lake" LAKECTL_KAFKA_GROUP_ID=bench-local \
  measure bronze "lakectl -> local folder" "$LAKECTL" -p "$PIPELINE" run bronze --once
grep -q "$N rows written" "$WORK/out" || { log "bronze local wrote $(cat "$WORK/out")"; exit 1; }
LAKECTL_LAKE_URI=s3://lake/bench/ LAKECTL_KAFKA_GROUP_ID=bench-s3 \
  measure bronze "lakectl -> S3 (moto)" "$LAKECTL" -p "$PIPELINE" run bronze --once
grep -q "$N rows written" "$WORK/out" || { log "bronze s3 wrote $(cat "$WORK/out")"; exit 1; }
measure bronze "python (confluent-kafka+pyarrow) -> local folder" "$PY" scripts/bench/py_bronze.py \
  "$LAKECTL_KAFKA_BROKERS" books "$WORK/py-bronze" bench-py
grep -q "\"records\": $N" "$WORK/out" || { log "python bronze read $(cat "$WORK/out")"; exit 1; }
VALUE_BYTES=$("$PY" -c 'import json,sys; print(json.load(sys.stdin)["bytes"])' <"$WORK/out")

# Silver reads lakectl's local bronze table; Polars reads the same table.
log "silver"
LAKECTL_LAKE_URI="$WORK/lake" \
  measure silver "lakectl" "$LAKECTL" -p "$PIPELINE" run silver
grep -q "$N bronze rows read, $N rows merged" "$WORK/out" || { log "silver: $(cat "$WORK/out")"; exit 1; }
measure silver "python (polars+deltalake)" "$PY" scripts/bench/py_silver.py \
  "$WORK/lake/bronze/books" "$WORK/py-silver"
grep -q "\"records\": $N" "$WORK/out" || { log "polars silver wrote $(cat "$WORK/out")"; exit 1; }

# Load: lakectl's silver table into an empty Postgres table; psql \copy of the same rows from
# CSV into a table of the same shape (the ceiling); pandas to_sql from the same Delta table.
log "load"
DATABASE_URL=$BENCH_DB_URL LAKECTL_LAKE_URI="$WORK/lake" \
  measure load "lakectl (binary COPY)" "$LAKECTL" -p "$PIPELINE" run load
grep -q "$N rows written" "$WORK/out" || { log "load: $(cat "$WORK/out")"; exit 1; }
"$PY" scripts/bench/silver_to_csv.py "$WORK/lake/silver/books" "$WORK/silver.csv"
COLUMNS=$(head -1 "$WORK/silver.csv")
psql "$BENCH_DB_URL" -qc "CREATE TABLE silver.books_copy (LIKE silver.books INCLUDING ALL)"
measure load "psql \\copy from CSV (ceiling)" psql "$BENCH_DB_URL" -qc \
  "\\copy silver.books_copy ($COLUMNS) FROM '$WORK/silver.csv' CSV HEADER"
measure load "python (pandas to_sql)" "$PY" scripts/bench/py_load.py "$WORK/lake/silver/books" \
  "$BENCH_DB_URL" silver.books_pandas
grep -q "\"records\": $N" "$WORK/out" || { log "pandas load: $(cat "$WORK/out")"; exit 1; }
COPY_SHARE=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$1 == "load" && $2 ~ /^lakectl/ {l=$3} $1 == "load" && $2 ~ /copy/ {c=$3} END {printf "%.0f", 100 * c / l}')

# Report: one table; the ratio is lakectl's records/s over the Python peer's, per stage.
mkdir -p "$RESULTS"
{
  echo "# lakectl benchmark, $STAMP"
  echo
  echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM; $N records; input CSV $((BYTES / 1048576)) MiB, as JSON record values $((VALUE_BYTES / 1048576)) MiB ($((VALUE_BYTES / N)) bytes a record)."
  echo "MB/s is CSV read per second for produce, record values processed per second for the other stages."
  echo
  echo "| stage | engine | wall s | records/s | MB/s | CPU s | peak RSS MiB | speed vs Python |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for row in "${ROWS[@]}"; do
    IFS='|' read -r stage engine wall cpu rss <<<"$row"
    rate=$(echo "$N / $wall" | bc)
    stage_bytes=$BYTES
    [[ $stage != produce ]] && stage_bytes=$VALUE_BYTES
    mbs=$(echo "scale=1; $stage_bytes / 1048576 / $wall" | bc)
    peer=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' -v s="$stage" '$1 == s && $2 ~ /^python/ {print $3}')
    ratio=$(echo "scale=2; $peer / $wall" | bc)
    echo "| $stage | $engine | $wall | $rate | $mbs | $cpu | $((rss / 1024)) | ${ratio}x |"
  done
  echo
  echo "Rate accuracy: $RATE_LINE."
  echo
  echo "Load: lakectl ran at $COPY_SHARE % of the psql \\copy rate (the goal is 90 %)."
} | tee "$RESULTS/$STAMP.md"
printf '%s\n' "${ROWS[@]}" | awk -F'|' -v n="$N" 'BEGIN {print "["} {printf "%s{\"stage\":\"%s\",\"engine\":\"%s\",\"records\":%s,\"wall_s\":%s,\"cpu_s\":%s,\"peak_rss_kb\":%s}", (NR>1?",\n":""), $1, $2, n, $3, $4, $5} END {print "\n]"}' >"$RESULTS/$STAMP.json"
log "results in bench/results/$STAMP.md and .json"
