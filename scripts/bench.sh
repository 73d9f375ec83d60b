#!/usr/bin/env bash
# Benchmarks lakectl stage by stage against what users would otherwise run, on one machine, on
# the same input. Not part of the tests. Prints a table and writes bench/results/<date>.md and
# .json.
#
#   BENCH_RECORDS=1000000 bash scripts/bench.sh
#
# It runs its own broker and S3 on free loopback ports (a memory-engine Nisshi, a moto server)
# and stops them at the end; for Postgres it starts scripts/services.sh's cluster (if it is not
# up) and works in databases of its own, dropped at the end.
#
# Stages: produce (against pandas + confluent-kafka), bronze into a local folder and into S3
# (against confluent-kafka + pyarrow), silver (the shipped books cleaning, against Polars), load
# (against psql \copy and pandas to_sql). Each is run BENCH_REPEAT times (default 3) on fresh
# state and the median of each figure reported. Then: produce --rate accuracy; the scaling check
# (bronze and silver at 100k, 1M and 5M records, then 1M more onto the largest: peak RSS should
# stay flat, time linear; RSS over time at the largest drawn as bench/results/<date>-rss.png);
# and the freshness curve (produce at each of BENCH_FRESH_RATES records/s for
# BENCH_FRESH_SECONDS with bronze, silver and load running continuously;
# p50/p95/p99 from produce to the row in Postgres per rate, the highest rate held with p99 <= 2
# s, drawn as bench/results/<date>-freshness.png). Every ratio is computed from figures measured
# in this run.
#
# generate: `lakectl generate user-activity` into the broker against the same profile written the
# usual way (Python + Faker + confluent-kafka), and its --rate accuracy.
#
# windows: the user-activity windows (pipelines/user_activity.toml: 1-minute page views, 5-minute
# active users sliding by 1 minute, 30-minute sessions) over the same N generated events, by
# `lakectl run window`, by Spark Structured Streaming (PySpark, local[2], the silver rows as
# a stream of JSON files, the same 2-minute watermark) and by Flink SQL's window table
# functions (PyFlink's local mini-cluster, parallelism 2, the same rows as one file).
#
# window_freshness: the user-activity pipeline continuous (generate at BENCH_WINDOW_RATE events/s
# with event time = now, bronze, silver, windows, load) for BENCH_WINDOW_SECONDS; how soon a
# final window row is in Postgres after the watermark passes its end. Bronze commits every
# BENCH_WINDOW_FLUSH_MS (500), the others look for new commits every BENCH_WINDOW_POLL_MS (200).
#
# avro: silver over N generated customer events (nested), Avro through the schema registry,
# against the same decode in Python (confluent-kafka's AvroDeserializer + pyarrow, written as
# Parquet) and against lakectl's own JSON path for the same events.
#
# cluster: a gold query with a shuffle (a self-JOIN on event_id, GROUP BY, count distinct) over
# BENCH_CLUSTER_ROWS (default 10,000,000) generated user-activity rows in a local Delta table,
# in process and on a Ballista cluster of `lakectl cluster` processes with 1 and 2 executors
# (2 task slots each); wall time, and peak RSS of the client, the scheduler and each executor.
#
# BENCH_SECTIONS (default "books generate avro windows cluster window_freshness scaling
# freshness") picks what runs; "books" is the produce -> bronze -> silver -> load chain.
# BENCH_STAMP names the results files (default: today's date), so a run of some sections does
# not overwrite a fuller run of the same day. BENCH_KEEP=1 keeps the work directory (the lakes
# and every stage's log) for a look afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${BENCH_RECORDS:-1000000}
REPEAT=${BENCH_REPEAT:-3}
SCALES=${BENCH_SCALES:-100000 1000000 5000000}
RATE=${BENCH_RATE:-2000}
RATE_SECONDS=${BENCH_RATE_SECONDS:-60}
SECTIONS=" ${BENCH_SECTIONS:-books generate avro windows cluster window_freshness scaling freshness} "
section() { [[ $SECTIONS == *" $1 "* ]]; }
CACHE=${LAKECTL_CACHE:-$HOME/.cache/lakectl}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakectl-target}
LAKECTL="$CARGO_TARGET_DIR/release/lakectl"
WORK=$(mktemp -d /tmp/lakectl-bench.XXXXXX)
RESULTS="$ROOT/bench/results"
STAMP=${BENCH_STAMP:-$(date -u +%Y-%m-%d)}   # the results files' name
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
log() { printf '[bench] %s\n' "$*" >&2; }
wait_port() { until port_open "$1"; do sleep 0.1; done; }
# calc FORMAT EXPR: EXPR evaluated in floating point, printed with printf's FORMAT.
calc() { awk "BEGIN {printf \"$1\", $2}"; }

PIDS=()
BENCH_DB=lakectl_bench_$$
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n ${PG_ADMIN:-} ]]; then
    psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $BENCH_DB" 2>/dev/null || true
    for rate in ${FRESH_RATES:-}; do
      psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS ${BENCH_DB}_fresh_$rate" 2>/dev/null || true
    done
  fi
  if [[ -n ${BENCH_KEEP:-} ]]; then log "kept $WORK (BENCH_KEEP)"; else rm -rf "$WORK"; fi
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

section scaling || SCALES=""
BIGGEST=$N
for n in $SCALES; do ((n > BIGGEST)) && BIGGEST=$n; done
# The first n records (and the header) of the same file.
csv_of() { [[ -f $WORK/books-$1.csv ]] || head -n $(($1 + 1)) "$WORK/all.csv" >"$WORK/books-$1.csv"; echo "$WORK/books-$1.csv"; }
if section books || section scaling || section freshness; then
  log "generating $BIGGEST records"
  "$PY" scripts/bench/gen_books.py "$BIGGEST" "$WORK/all.csv"
  CSV=$(csv_of "$N")
  BYTES=$(stat -c %s "$CSV")
fi
# variant TOPIC: the shipped books pipeline (its bronze, silver and load settings are what is
# measured) reading TOPIC, written to $WORK/TOPIC.toml with its SQL file's path made absolute.
variant() {
  sed -e "s/^topic = \"books\"/topic = \"$1\"/" \
    -e "s#^sql_file = \"books.silver.sql\"#sql_file = \"$ROOT/pipelines/books.silver.sql\"#" \
    "$ROOT/pipelines/books.toml" >"$WORK/$1.toml"
  echo "$WORK/$1.toml"
}
PIPELINE=$(variant books_1)

ROWS=()   # "stage|engine|wall|cpu|rss_kb": medians over REPEAT runs on the same N records
# median COLUMN: the median of that column of $WORK/times, one line a run.
median() { awk "{print \$$1}" "$WORK/times" | sort -n | awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}'; }
# measure STAGE ENGINE CMD...: runs CMD REPEAT times under /usr/bin/time; in CMD and in
# $BEFORE (run first, untimed), @I@ is the repetition's number, for state of its own.
measure() {
  local stage=$1 engine=$2 i
  shift 2
  : >"$WORK/times"
  for ((i = 1; i <= REPEAT; i++)); do
    [[ -n ${BEFORE:-} ]] && eval "${BEFORE//@I@/$i}"
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" "${@//@I@/$i}" >"$WORK/out" 2>"$WORK/err" || {
      log "$stage/$engine failed:"; tail -20 "$WORK/err" >&2; exit 1
    }
    [[ -z ${CHECK:-} ]] || grep -q "$CHECK" "$WORK/out" || {
      log "$stage/$engine: no \"$CHECK\" in its output:"; tail -20 "$WORK/out" >&2; exit 1
    }
    cat "$WORK/time" >>"$WORK/times"
  done
  local wall cpu rss
  wall=$(median 1)
  cpu=$(awk '{print $2 + $3}' "$WORK/times" | sort -n | awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}')
  rss=$(median 4)
  ROWS+=("$stage|$engine|$wall|$cpu|$rss")
  log "$stage/$engine: median of $REPEAT: ${wall}s, peak RSS $((rss / 1024)) MiB"
}

if section books; then
log "produce"
CHECK="delivered $N, failed 0" \
  measure produce lakectl "$LAKECTL" -p "$PIPELINE" produce --file "$CSV" --topic books_@I@
CHECK="\"records\": $N" \
  measure produce "python (pandas+confluent-kafka)" "$PY" scripts/bench/py_produce.py \
  "$LAKECTL_KAFKA_BROKERS" books_py_@I@ "$CSV"

# --rate is a promise too: a minute at a fixed rate must land within 5 %.
log "produce --rate $RATE/s for ${RATE_SECONDS}s"
started=$(date +%s.%N)
"$LAKECTL" -p "$PIPELINE" produce --file "$CSV" --topic books_rate \
  --rate "$RATE" --limit $((RATE * RATE_SECONDS)) >/dev/null 2>&1
elapsed=$(calc %.1f "$(date +%s.%N) - $started")
RATE_LINE="produce --rate $RATE/s --limit $((RATE * RATE_SECONDS)): $(calc %.1f "$RATE * $RATE_SECONDS / $elapsed") records/s over $elapsed s ($(calc %+.2f "($RATE * $RATE_SECONDS / $elapsed - $RATE) * 100 / $RATE") % off the target)"
log "$RATE_LINE"

# Bronze reads the topic lakectl's first run produced; each run in a consumer group and lake of
# its own.
log "bronze"
CHECK="$N rows written" \
  measure bronze "lakectl -> local folder" env LAKECTL_LAKE_URI="$WORK/lake-@I@" \
  LAKECTL_KAFKA_GROUP_ID=bench-local-@I@ "$LAKECTL" -p "$PIPELINE" run bronze --once
CHECK="$N rows written" \
  measure bronze "lakectl -> S3 (moto)" env LAKECTL_LAKE_URI=s3://lake/bench-@I@/ \
  LAKECTL_KAFKA_GROUP_ID=bench-s3-@I@ "$LAKECTL" -p "$PIPELINE" run bronze --once
CHECK="\"records\": $N" \
  measure bronze "python (confluent-kafka+pyarrow) -> local folder" "$PY" scripts/bench/py_bronze.py \
  "$LAKECTL_KAFKA_BROKERS" books_1 "$WORK/py-bronze-@I@" bench-py-@I@
VALUE_BYTES=$("$PY" -c 'import json,sys; print(json.load(sys.stdin)["bytes"])' <"$WORK/out")

# Silver: each repetition cleans the bronze table of its own lake; Polars reads the same tables.
log "silver"
CHECK="$N bronze rows read, $N rows merged" \
  measure silver "lakectl" env LAKECTL_LAKE_URI="$WORK/lake-@I@" "$LAKECTL" -p "$PIPELINE" run silver
CHECK="\"records\": $N" \
  measure silver "python (polars+deltalake)" "$PY" scripts/bench/py_silver.py \
  "$WORK/lake-@I@/bronze/books" "$WORK/py-silver-@I@"

# Load: lakectl's silver table into an empty Postgres table; psql \copy of the same rows from
# CSV into a table of the same shape (the ceiling); pandas to_sql from the same Delta table.
log "load"
BEFORE="psql \"$BENCH_DB_URL\" -qc 'DROP TABLE IF EXISTS silver.books; DELETE FROM lakectl.load_state' 2>/dev/null || true" \
CHECK="$N rows written" \
  measure load "lakectl (binary COPY)" env DATABASE_URL="$BENCH_DB_URL" \
  LAKECTL_LAKE_URI="$WORK/lake-1" "$LAKECTL" -p "$PIPELINE" run load books
"$PY" scripts/bench/silver_to_csv.py "$WORK/lake-1/silver/books" "$WORK/silver.csv"
COLUMNS=$(head -1 "$WORK/silver.csv")
psql "$BENCH_DB_URL" -qc "CREATE TABLE silver.books_copy (LIKE silver.books INCLUDING ALL)"
BEFORE="psql \"$BENCH_DB_URL\" -qc 'TRUNCATE silver.books_copy'" \
  measure load "psql \\copy from CSV (ceiling)" psql "$BENCH_DB_URL" -qc \
  "\\copy silver.books_copy ($COLUMNS) FROM '$WORK/silver.csv' CSV HEADER"
BEFORE="psql \"$BENCH_DB_URL\" -qc 'DROP TABLE IF EXISTS silver.books_pandas'" CHECK="\"records\": $N" \
  measure load "python (pandas to_sql)" "$PY" scripts/bench/py_load.py "$WORK/lake-1/silver/books" \
  "$BENCH_DB_URL" silver.books_pandas
COPY_SHARE=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$1 == "load" && $2 ~ /^lakectl/ {l=$3} $1 == "load" && $2 ~ /copy/ {c=$3} END {printf "%.0f", 100 * c / l}')
fi

if section generate; then
  # The bytes of the generated values, from the same stream written to a file.
  "$LAKECTL" generate user-activity --count "$N" --out "$WORK/activity.ndjson" >/dev/null
  GEN_BYTES=$(($(stat -c %s "$WORK/activity.ndjson") - N))   # less one newline a record
  rm -f "$WORK/activity.ndjson"
  log "generate"
  CHECK="delivered $N, failed 0" \
    measure generate lakectl "$LAKECTL" generate user-activity --count "$N" --topic activity_@I@
  CHECK="\"records\": $N" \
    measure generate "python (faker+confluent-kafka)" "$PY" scripts/bench/py_generate.py \
    "$LAKECTL_KAFKA_BROKERS" activity_py_@I@ "$N"
  log "generate --rate $RATE/s for ${RATE_SECONDS}s"
  started=$(date +%s.%N)
  "$LAKECTL" generate user-activity --topic activity_rate --rate "$RATE" \
    --count $((RATE * RATE_SECONDS)) >/dev/null 2>&1
  elapsed=$(calc %.1f "$(date +%s.%N) - $started")
  GEN_RATE_LINE="generate --rate $RATE/s --count $((RATE * RATE_SECONDS)): $(calc %.1f "$RATE * $RATE_SECONDS / $elapsed") records/s over $elapsed s ($(calc %+.2f "($RATE * $RATE_SECONDS / $elapsed - $RATE) * 100 / $RATE") % off the target)"
  log "$GEN_RATE_LINE"
fi

if section avro; then
  log "avro: $N customer events"
  REGISTRY_PORT=$(free_port)
  "$(bash scripts/python-env.sh registry)" scripts/schema_registry.py --brokers "$LAKECTL_KAFKA_BROKERS" \
    --port "$REGISTRY_PORT" >/dev/null 2>&1 &
  PIDS+=($!)
  wait_port "$REGISTRY_PORT"
  export LAKECTL_SCHEMA_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
  # One variant per format: the shipped pipeline (Avro), and the same with the JSON schema.
  sed -e 's/^name = "customer_events"/name = "bench_avro"/' \
    -e 's/^topic = "customer_events"/topic = "ce_avro"/' pipelines/customer_events.toml >"$WORK/ce-avro.toml"
  cp pipelines/customer_events.json-schema.toml "$WORK/ce-schema.toml"
  awk -v schema="$WORK/ce-schema.toml" '
    /^format = "avro"   #/ {print "format = \"json\""; next}
    /^format = "avro" +# columns/ {print ""; while ((getline line < schema) > 0) print line; next}
    {print}' "$WORK/ce-avro.toml" | sed -e 's/^name = "bench_avro"/name = "bench_json"/' \
    -e 's/^topic = "ce_avro"/topic = "ce_json"/' >"$WORK/ce-json.toml"
  for format in avro json; do
    ce=(env LAKECTL_LAKE_URI="$WORK/ce-$format-lake" "$LAKECTL" -p "$WORK/ce-$format.toml")
    "${ce[@]}" generate --count "$N" >/dev/null 2>&1
    "${ce[@]}" run bronze --once >/dev/null 2>&1
    BEFORE="rm -rf '$WORK/ce-$format-lake/silver' '$WORK/ce-$format-lake/quarantine'" \
      CHECK="silver:customer_events: succeeded" \
      measure "silver_$format" "lakectl ($format)" "${ce[@]}" run silver customer_events
  done
  AVRO_BYTES=$("$PY" -c 'import deltalake, sys; print(sum(len(v) for v in deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table(columns=["value"]).column("value").to_pylist()))' "$WORK/ce-avro-lake/bronze/customer_events")
  JSON_BYTES=$("$PY" -c 'import deltalake, sys; print(sum(len(v) for v in deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table(columns=["value"]).column("value").to_pylist()))' "$WORK/ce-json-lake/bronze/customer_events")
  CHECK='"rows"' measure silver_avro "python (confluent-kafka AvroDeserializer + pyarrow)" \
    "$PY" scripts/bench/py_avro_silver.py "$WORK/ce-avro-lake/bronze/customer_events" \
    "$WORK/ce-py.parquet" "$LAKECTL_SCHEMA_REGISTRY_URL" ce_avro
fi

# A JVM peer (PySpark, PyFlink): runs SCRIPT INPUT OUTPUT REPEAT times and adds its row.
# The JVM is not a waited-for child: its CPU and RSS come from the script's own JSON report.
measure_jvm() {
  local section=$1 label=$2 python=$3 script=$4 input=$5
  : >"$WORK/times"
  for ((i = 1; i <= REPEAT; i++)); do
    rm -rf "$WORK/jvm-out"
    /usr/bin/time -f '%e' -o "$WORK/time" "$python" "$script" "$input" "$WORK/jvm-out" \
      >"$WORK/jvm.json" 2>"$WORK/err" || {
      log "$section/$label failed:"; tail -20 "$WORK/err" >&2; exit 1
    }
    echo "$(cat "$WORK/time") $("$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["cpu_s"], d["peak_rss_kb"])' "$WORK/jvm.json")" >>"$WORK/times"
  done
  ROWS+=("$section|$label|$(median 1)|$(median 2)|$(median 3)")
  log "$section/$label: median of $REPEAT: $(median 1)s, peak RSS $(($(median 3) / 1024)) MiB"
}

# The rows per output of the last JVM peer run, as "name count, …".
jvm_rows() {
  "$PY" -c 'import json, sys; print(", ".join(f"{k} {v}" for k, v in json.load(open(sys.argv[1]))["rows"].items()))' "$WORK/jvm.json"
}

if section windows; then
  log "windows: $N user-activity events"
  WIN=$WORK/windows.toml
  sed -e 's/^name = "user_activity"/name = "bench_windows"/' \
    -e 's/^topic = "user_activity"/topic = "win_activity"/' pipelines/user_activity.toml >"$WIN"
  win=(env LAKECTL_LAKE_URI="$WORK/win-lake" "$LAKECTL" -p "$WIN")
  "${win[@]}" generate --count "$N" >/dev/null 2>&1
  "${win[@]}" run bronze --once >/dev/null 2>&1
  "${win[@]}" run silver >/dev/null 2>&1
  # Spark reads the same silver rows, as 20 JSON files (20 micro-batches).
  WIN_ROWS=$("$PY" scripts/bench/silver_to_ndjson.py "$WORK/win-lake/silver/user_activity" "$WORK/win-json" 20)
  WIN_BYTES=$(cat "$WORK"/win-json/*.json | wc -c)
  WINDOWS=(page_view_counts active_users user_sessions)
  BEFORE='rm -rf "$WORK/win-lake/window" "$WORK/win-lake/_lakectl/state" "$WORK"/win-lake/quarantine/{page_view_counts,active_users,user_sessions}' \
    CHECK="window:user_sessions: succeeded" \
    measure windows lakectl "${win[@]}" run window "${WINDOWS[@]}"
  WIN_LAKECTL_ROWS=$(for w in "${WINDOWS[@]}"; do
    "${win[@]}" query "SELECT count(*) AS n FROM window.$w" | awk -v w="$w" '/^\| [0-9]/ {printf "%s %s, ", w, $2}'
  done)
  measure_jvm windows "spark (structured streaming, local[2])" "$(bash scripts/python-env.sh spark)" \
    scripts/bench/spark_windows.py "$WORK/win-json"
  WIN_SPARK_ROWS=$(jvm_rows)
  # Flink reads the same rows, with its window table functions, in one job, as one file: its
  # file source hands a directory's files to its readers in no time order, and its watermark
  # then drops most rows as late. Its JSON format takes ISO-8601 times with a `Z` only (Polars
  # wrote `+00:00`): a copy, not timed.
  FLINK_PY=$(bash scripts/python-env.sh flink)
  mkdir -p "$WORK/win-json-flink"
  cat "$WORK"/win-json/*.json | sed 's/+00:00"/Z"/g' >"$WORK/win-json-flink/events.json"
  measure_jvm windows "flink (sql window functions, parallelism 2)" "$FLINK_PY" \
    scripts/bench/flink_windows.py "$WORK/win-json-flink"
  WIN_FLINK_ROWS=$(jvm_rows)
fi

CLUSTER_ROWS=${BENCH_CLUSTER_ROWS:-10000000}
if section cluster; then
  log "cluster: a gold query over $CLUSTER_ROWS rows"
  CL=$WORK/cluster.toml
  cat >"$CL" <<'TOML'
name = "bench_cluster"
[bronze.activity]
topic = "bench_cluster"
[silver.user_activity]
source = "activity"
key = ["event_id"]
schema = { event_id = "string" }
TOML
  cat scripts/bench/pages_by_device.toml >>"$CL"
  cl=(env LAKECTL_LAKE_URI="$WORK/cl-lake" "$LAKECTL" -p "$CL")
  # Million-event chunks with seeds of their own (distinct event ids), one Delta commit each.
  chunks=()
  for ((c = 0; c * 1000000 < CLUSTER_ROWS; c++)); do
    count=$((CLUSTER_ROWS - c * 1000000 < 1000000 ? CLUSTER_ROWS - c * 1000000 : 1000000))
    "$LAKECTL" generate user-activity --count "$count" --seed "$((c + 1))" --out "$WORK/cl-$c.ndjson" >/dev/null 2>&1
    chunks+=("$WORK/cl-$c.ndjson")
  done
  written=$("$PY" scripts/bench/events_to_delta.py "$WORK/cl-lake/silver/user_activity" "${chunks[@]}")
  rm -f "${chunks[@]}"
  ((written == CLUSTER_ROWS)) || { log "cluster: wrote $written rows, not $CLUSTER_ROWS"; exit 1; }
  CLUSTER_BYTES=$(du -sb "$WORK/cl-lake/silver/user_activity" | cut -f1)
  CHECK="gold:pages_by_device: succeeded" measure cluster_gold "lakectl, in process" \
    "${cl[@]}" run gold --full-refresh
  "${cl[@]}" query "SELECT * FROM gold.pages_by_device ORDER BY 1, 2" >"$WORK/cl-local.txt"
  CLUSTER_RSS=()   # "executors|scheduler MiB|executor MiB ..."
  # Peak RSS of a long-lived process over all its runs (VmHWM), in MiB.
  hwm() { awk '/^VmHWM/ {printf "%d", $2 / 1024}' "/proc/$1/status"; }
  for executors in 1 2; do
    sched_port=$(free_port)
    "$LAKECTL" cluster scheduler --bind "127.0.0.1:$sched_port" >"$WORK/scheduler.log" 2>&1 &
    sched=$!
    PIDS+=("$sched")
    wait_port "$sched_port"
    execs=()
    for ((e = 1; e <= executors; e++)); do
      # Arrow Flight on the port, gRPC on the next one: both free.
      port=$(free_port)
      while port_open $((port + 1)); do port=$(free_port); done
      mkdir -p "$WORK/executor-$e"
      "$LAKECTL" cluster executor --slots 2 --scheduler "127.0.0.1:$sched_port" \
        --bind "127.0.0.1:$port" --work-dir "$WORK/executor-$e" --file-root "$WORK/cl-lake" \
        >"$WORK/executor-$e.log" 2>&1 &
      execs+=($!)
      PIDS+=($!)
      wait_port "$port"
    done
    sleep 3   # registered with the scheduler by their first heartbeat
    CHECK="gold:pages_by_device: succeeded" \
      measure cluster_gold "lakectl on ballista, $executors executor(s)" \
      env LAKECTL_ENGINE_URL="ballista://127.0.0.1:$sched_port" "${cl[@]}" run gold --full-refresh
    "${cl[@]}" query "SELECT * FROM gold.pages_by_device ORDER BY 1, 2" >"$WORK/cl-remote.txt"
    cmp -s "$WORK/cl-local.txt" "$WORK/cl-remote.txt" || {
      log "cluster: the gold table on $executors executor(s) differs from the in-process one"; exit 1
    }
    line="$executors|$(hwm "$sched")"
    for pid in "${execs[@]}"; do line+="|$(hwm "$pid")"; done
    CLUSTER_RSS+=("$line")
    kill "$sched" "${execs[@]}"
    wait "$sched" "${execs[@]}" 2>/dev/null || true
  done
  CLUSTER_GROUPS=$(($(grep -c '^| ' "$WORK/cl-local.txt") - 1))
fi

# Window freshness: generate at a fixed rate with event time = now, bronze, silver, the windows
# and the load of page_view_counts running continuously; how long after the watermark passes a
# window its final row is in Postgres, and how long after an event arrives.
WF_RATE=${BENCH_WINDOW_RATE:-2000}
# 4 minutes make 2 windows final (the watermark is 2 minutes behind); 10 make 8.
WF_SECONDS=${BENCH_WINDOW_SECONDS:-600}
# How often bronze commits and the other stages look for new commits: each hop waits for them.
WF_FLUSH_MS=${BENCH_WINDOW_FLUSH_MS:-500}
WF_POLL_MS=${BENCH_WINDOW_POLL_MS:-200}
if section window_freshness; then
  log "window freshness: $WF_RATE events/s for ${WF_SECONDS}s"
  # A broker of its own, on the sqlite engine: the memory engine lists every batch of a
  # partition on each fetch, so over a 10-minute stream its fetches came to cost more CPU
  # (39 % of the run's samples by its end) than any lakectl stage; sqlite fetches by an index
  # on the offset, as Kafka does.
  WF_KAFKA_PORT=$(free_port)
  (cd "$WORK" && run_nisshi "$CACHE/tools/bin/nisshi" "$WF_KAFKA_PORT" sqlite://wf-nisshi.db >/dev/null 2>&1) &
  PIDS+=($!)
  wait_port "$WF_KAFKA_PORT"
  psql "$PG_ADMIN" -qc "CREATE DATABASE ${BENCH_DB}_windows"
  WF_URL=${PG_ADMIN%/*}/${BENCH_DB}_windows
  WF=$WORK/window-freshness.toml
  sed -e 's/^name = "user_activity"/name = "bench_window_freshness"/' \
    -e 's/^topic = "user_activity"/topic = "wf_activity"/' \
    -e "s/^\[bronze.user_activity\]/&\nflush_interval_ms = $WF_FLUSH_MS/" pipelines/user_activity.toml >"$WF"
  wf=(env LAKECTL_LAKE_URI="$WORK/wf-lake" DATABASE_URL="$WF_URL" LAKECTL_RUNNER_IDLE_POLL_MS=$WF_POLL_MS
    LAKECTL_KAFKA_BROKERS=127.0.0.1:$WF_KAFKA_PORT
    "$LAKECTL" -p "$WF")
  # The topic first (another seed: its one event is not the stream's first).
  "${wf[@]}" generate --count 1 --seed 99 >/dev/null 2>&1
  JOB_PIDS=()
  WF_STAGES=("bronze" "silver" "window" "load page_view_counts")
  for stage in "${WF_STAGES[@]}"; do
    # shellcheck disable=SC2086
    "${wf[@]}" run $stage --continuous >"$WORK/wf-${stage%% *}.log" 2>&1 &
    JOB_PIDS+=($!)
  done
  PIDS+=("${JOB_PIDS[@]}")
  sleep 3
  "${wf[@]}" generate --start now --rate "$WF_RATE" --event-rate "$WF_RATE" \
    --duration "${WF_SECONDS}s" --seed 2 >/dev/null 2>&1
  sleep 10   # the last windows the stream made final
  # What each stage cost over the run (CPU seconds, utime + stime): on 2 cores the stages
  # share, one stage's CPU is every other stage's wait.
  WF_CPU=""
  for i in "${!JOB_PIDS[@]}"; do
    ticks=$(awk '{print $14 + $15}' "/proc/${JOB_PIDS[$i]}/stat")
    WF_CPU+="${WF_CPU:+, }${WF_STAGES[$i]%% *} $(calc %.1f "$ticks / $(getconf CLK_TCK)") s"
  done
  kill -TERM "${JOB_PIDS[@]}" 2>/dev/null || true
  wait "${JOB_PIDS[@]}" 2>/dev/null || true
  "$PY" scripts/bench/window_latency.py "$WORK/wf-lake/silver/user_activity" "$WF_URL" \
    activity.page_view_counts 120 >"$WORK/wf.out"
  WF_JSON=$(head -1 "$WORK/wf.out")
  WF_SENTENCE="$(tail -1 "$WORK/wf.out"); CPU over the run: $WF_CPU"
  log "window freshness: $WF_SENTENCE"
fi

# Scaling: lakectl bronze and silver over 100k, 1M and 5M records, once each. The flush limits
# that should bound memory are written into the pipeline (the defaults unless overridden), so
# the report states the ones measured.
FLUSH_ROWS=${BENCH_FLUSH_ROWS:-100000}
BATCH_ROWS=${BENCH_BATCH_ROWS:-100000}
SCALE_ROWS=()   # "records|stage|wall|rss_kb|reached": reached, the share of the run after
# which the high-water mark was within 5 % of the peak (sampled from /proc every 0.2 s): a peak
# reached early and never exceeded is memory bounded by the flush limits, not by the input.
# timed_stage RECORDS LABEL STAGE PIPELINE LAKE: one `run STAGE --once`, measured into SCALE_ROWS.
timed_stage() {
  local n=$1 label=$2 stage=$3 pipeline=$4 lake=$5
  /usr/bin/time -f '%e %M' -o "$WORK/time" env LAKECTL_LAKE_URI="$lake" \
    "$LAKECTL" -p "$pipeline" run "$stage" --once >"$WORK/out" 2>"$WORK/err" &
  local timer=$! started
  started=$(date +%s%N)
  local series="$WORK/rss-$n-${label// /_}"   # "ms-since-start VmRSS-kB VmHWM-kB" lines
  : >"$series"
  while kill -0 "$timer" 2>/dev/null; do
    # env execs lakectl: the timer's one child is the job.
    child=$(pgrep -P "$timer" | head -1) || true
    [[ -n $child ]] && awk -v t=$((($(date +%s%N) - started) / 1000000)) \
      '/^VmRSS/ {rss = $2} /^VmHWM/ {hwm = $2} END {if (rss) print t, rss, hwm}' \
      "/proc/$child/status" >>"$series" 2>/dev/null || true
    sleep 0.2
  done
  wait "$timer" || { tail -20 "$WORK/err" >&2; exit 1; }
  read -r wall rss <"$WORK/time"
  reached=$(awk -v peak="$rss" -v wall="$wall" \
    '$3 >= 0.95 * peak {printf "%.2f", $1 / 1000 / wall; found = 1; exit} END {if (!found) print "null"}' \
    "$series")
  SCALE_ROWS+=("$n|$label|$wall|$rss|$reached")
  log "scaling: $label, $n records: ${wall}s, peak RSS $((rss / 1024)) MiB (95 % of it after ${reached} of the run)"
}
for n in $SCALES; do
  log "scaling: $n records"
  scale_pipeline=$(variant "scale_$n")
  sed -i -e "s/^\[bronze.books\]/&\nflush_rows = $FLUSH_ROWS/" \
    -e "s/^\[silver.books\]/&\nbatch_rows = $BATCH_ROWS/" "$scale_pipeline"
  "$LAKECTL" -p "$scale_pipeline" produce --file "$(csv_of "$n")" >/dev/null 2>&1
  for stage in bronze silver; do
    timed_stage "$n" "$stage" "$stage" "$scale_pipeline" "$WORK/scale-$n"
  done
done
# Growth: GROWTH new records onto the largest run's tables, in units of the same size. Silver's
# time per million then is judged against the GROWTH-record run onto an empty table.
GROWTH=${BENCH_GROWTH:-1000000}
if [[ -n $SCALES ]]; then
  read -r held < <(printf '%s\n' $SCALES | sort -n | tail -1)
  log "scaling: $GROWTH new records onto $held"
  "$PY" scripts/bench/gen_books.py "$GROWTH" "$WORK/growth.csv" "$BIGGEST"
  "$LAKECTL" -p "$WORK/scale_$held.toml" produce --file "$WORK/growth.csv" >/dev/null 2>&1
  for stage in bronze silver; do
    timed_stage "$GROWTH" "$stage onto $held" "$stage" "$WORK/scale_$held.toml" "$WORK/scale-$held"
  done
  "$PY" scripts/bench/plot_rss.py "$RESULTS/$STAMP-rss.png" "$held" \
    "bronze=$WORK/rss-$held-bronze" "silver=$WORK/rss-$held-silver"
fi

# Freshness: continuous bronze, silver and load while produce sends at a fixed rate, at each of
# FRESH_RATES in turn (a topic, lake and database of its own each). The lag of a row is
# _loaded_at (its load transaction's start) minus _kafka_ts (when it was produced). A rate whose
# rows are not all in Postgres FRESH_DRAIN seconds after produce ends was not kept up with, and
# higher rates are not tried.
FRESH_RATES=${BENCH_FRESH_RATES:-5000 20000 50000 100000}
FRESH_SECONDS=${BENCH_FRESH_SECONDS:-60}
FRESH_DRAIN=${BENCH_FRESH_DRAIN:-60}
FRESH_ROWS=()   # "rate|sent|produce_s|loaded|p50|p95|p99"
if section freshness; then
for rate in $FRESH_RATES; do
  n=$((rate * FRESH_SECONDS))
  log "freshness: $rate records/s for ${FRESH_SECONDS}s"
  db=${BENCH_DB}_fresh_$rate
  psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
  url=${PG_ADMIN%/*}/$db
  pipeline=$(variant "fresh_$rate")
  sed -i 's/^\[bronze.books\]/&\nflush_interval_ms = 500/' "$pipeline"
  fresh_env=(env LAKECTL_LAKE_URI="$WORK/fresh-$rate" DATABASE_URL="$url" LAKECTL_RUNNER_IDLE_POLL_MS=200)
  # One record first, so the topic exists when bronze subscribes.
  "$LAKECTL" -p "$pipeline" produce --file "$CSV" --limit 1 >/dev/null 2>&1
  JOB_PIDS=()
  for stage in "bronze" "silver" "load books"; do
    # shellcheck disable=SC2086
    "${fresh_env[@]}" "$LAKECTL" -p "$pipeline" run $stage --continuous \
      >"$WORK/fresh-$rate-${stage%% *}.log" 2>&1 &
    JOB_PIDS+=($!)
  done
  PIDS+=("${JOB_PIDS[@]}")
  sleep 3
  started=$(date +%s%N)
  # --forever makes each pass's keys new, so every record is a row of its own.
  "$LAKECTL" -p "$pipeline" produce --file "$CSV" --forever --rate "$rate" --limit "$n" \
    >/dev/null 2>&1
  produce_s=$(calc %.1f "($(date +%s%N) - $started) / 1e9")
  # The first record's key comes again as the run's first: n rows when all are in.
  loaded=0
  for _ in $(seq "$FRESH_DRAIN"); do
    loaded=$(psql "$url" -tAc "SELECT count(*) FROM silver.books" 2>/dev/null || echo 0)
    ((loaded >= n)) && break
    sleep 1
  done
  kill -TERM "${JOB_PIDS[@]}" 2>/dev/null || true
  wait "${JOB_PIDS[@]}" 2>/dev/null || true
  line=$(psql "$url" -tA -F' ' -c "
    SELECT count(*),
           round(percentile_cont(0.50) WITHIN GROUP (ORDER BY lag)::numeric, 2),
           round(percentile_cont(0.95) WITHIN GROUP (ORDER BY lag)::numeric, 2),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric, 2)
    FROM (SELECT extract(epoch FROM _loaded_at - _kafka_ts) AS lag FROM silver.books) l")
  read -r rows p50 p95 p99 <<<"$line"
  FRESH_ROWS+=("$rate|$n|$produce_s|$rows|${p50:-null}|${p95:-null}|${p99:-null}")
  log "freshness: $rate records/s (produce took ${produce_s}s): $rows of $n rows, p50 ${p50}s, p95 ${p95}s, p99 ${p99}s"
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db"
  ((rows >= n)) || { log "freshness: $rate records/s not kept up with; higher rates not tried"; break; }
done
if ((${#FRESH_ROWS[@]} > 0)); then
  printf '%s\n' "${FRESH_ROWS[@]}" >"$WORK/freshness"
  "$PY" scripts/bench/plot_freshness.py "$WORK/freshness" "$RESULTS/$STAMP-freshness.png"
fi
fi

# Report: the ratio is lakectl's records/s over the Python peer's, per stage.
mkdir -p "$RESULTS"
{
  echo "# lakectl benchmark, $STAMP"
  echo
  echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM; $N records; sections:$SECTIONS. Each figure is the median of $REPEAT runs."
  if section books; then
    echo "Books input CSV $((BYTES / 1048576)) MiB, as JSON record values $((VALUE_BYTES / 1048576)) MiB ($((VALUE_BYTES / N)) bytes a record)."
  fi
  if section generate; then
    echo "Generated user-activity values: $((GEN_BYTES / 1048576)) MiB ($((GEN_BYTES / N)) bytes a record)."
  fi
  echo "MB/s is CSV read per second for produce, record values written per second for generate, record values processed per second for the other stages."
  echo
  echo "| stage | engine | wall s | records/s | MB/s | CPU s | peak RSS MiB | speed vs the peer |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for row in "${ROWS[@]}"; do
    IFS='|' read -r stage engine wall cpu rss <<<"$row"
    records=$N
    case $stage in
      produce) stage_bytes=$BYTES ;;
      generate) stage_bytes=$GEN_BYTES ;;
      windows) stage_bytes=$WIN_BYTES records=$WIN_ROWS ;;
      silver_avro) stage_bytes=$AVRO_BYTES ;;
      silver_json) stage_bytes=$JSON_BYTES ;;
      cluster_gold) stage_bytes=$CLUSTER_BYTES records=$CLUSTER_ROWS ;;
      *) stage_bytes=$VALUE_BYTES ;;
    esac
    rate=$(calc %.0f "$records / $wall")
    mbs=$(calc %.1f "$stage_bytes / 1048576 / $wall")
    peer=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' -v s="$stage" '$1 == s && $2 ~ /^(python|spark)/ {print $3; exit}')
    ratio=-
    [[ -n $peer ]] && ratio="$(calc %.2f "$peer / $wall")x"
    echo "| $stage | $engine | $wall | $rate | $mbs | $cpu | $((rss / 1024)) | $ratio |"
  done
  echo
  if section books; then
    echo "Rate accuracy: $RATE_LINE."
    echo
    echo "Load: lakectl ran at $COPY_SHARE % of the psql \\copy rate (the goal is 90 %)."
    echo
  fi
  if section generate; then
    echo "Rate accuracy: $GEN_RATE_LINE."
    echo
  fi
  if section avro; then
    avro_wall=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$2 == "lakectl (avro)" {print $3}')
    json_wall=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$2 == "lakectl (json)" {print $3}')
    echo "Avro: silver over $N generated customer events (1 % re-sent, 1 % broken): the same events as Confluent-framed Avro ($((AVRO_BYTES / 1048576)) MiB of record values) and as JSON ($((JSON_BYTES / 1048576)) MiB), typed into the same struct and list columns; lakectl's Avro path took $(calc %.2f "$json_wall / $avro_wall")x less time than its JSON path. The Python peer decodes and writes Parquet only (no dedupe, no expectations, no Delta commit)."
    echo
  fi
  if section windows; then
    flink_line=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$1 == "windows" && $2 ~ /^flink/')
    lakectl_line=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$1 == "windows" && $2 == "lakectl"')
    if [[ -n $flink_line && -n $lakectl_line ]]; then
      IFS='|' read -r _ _ l_wall _ l_rss <<<"$lakectl_line"
      IFS='|' read -r _ _ f_wall _ f_rss <<<"$flink_line"
      echo "Windows against Flink: lakectl $(calc %.2f "$f_wall / $l_wall")x the throughput at $(calc %.2f "$l_rss / $f_rss")x the peak memory."
      echo
    fi
    echo "Windows: $N generated user-activity events, $WIN_ROWS after silver ($((WIN_BYTES / 1048576)) MiB as JSON); lakectl runs its three windows one after another in one process, Spark its three queries side by side on 2 cores (JVM start included), Flink its three in one job at parallelism 2 over the rows as one file in the order they were produced (JVM start included). Rows written: lakectl ${WIN_LAKECTL_ROWS%, }; Spark $WIN_SPARK_ROWS (Spark's distinct counts are approximate and its watermark is global per micro-batch, so its late rows differ); Flink $WIN_FLINK_ROWS (it fires every window left at the end of its input; lakectl leaves the open ones open)."
    echo
  fi
  if section cluster; then
    local_wall=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$2 == "lakectl, in process" {print $3}')
    one_wall=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$2 ~ /ballista, 1 executor/ {print $3}')
    two_wall=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$2 ~ /ballista, 2 executor/ {print $3}')
    echo "Cluster: the gold query (a self-JOIN of $CLUSTER_ROWS rows on event_id, then GROUP BY device and page with count distinct users: $CLUSTER_GROUPS groups) over a local Delta table of $((CLUSTER_BYTES / 1048576)) MiB, in process and on Ballista with 1 and 2 executors of 2 task slots; the cluster's rows were checked equal to the in-process ones. Peak RSS in the table is the lakectl client's (on the cluster it only plans and collects); the cluster's own processes, peak over all $REPEAT runs:"
    echo
    echo "| executors | scheduler MiB | executor MiB (each) |"
    echo "|---:|---:|---|"
    for line in "${CLUSTER_RSS[@]}"; do
      IFS='|' read -r executors sched rest <<<"$line"
      echo "| $executors | $sched | ${rest//|/, } |"
    done
    echo
    per_executor=$(calc %.0f "$CLUSTER_ROWS / $one_wall")
    echo "On 2 cores a cluster cannot add compute: every executor shares the same two cores, and the cluster pays for distribution (shuffle files written to disk and read back over Arrow Flight at the join and at the aggregate, task launches, the scheduler's polling). 1 executor took $(calc %.2f "$one_wall / $local_wall")x the in-process time, 2 executors $(calc %.2f "$two_wall / $local_wall")x (two executors hold 4 task slots on the 2 cores, so more shuffle I/O overlaps with compute). What 2 cores do show: the work splits across executors with the same result, and no process holds the whole join (the in-process peak RSS is the client's own; each executor's is in the table above). One executor with 2 cores ran $per_executor rows/s; ten such executors, each on 2 cores of its own, would reach about $(calc %.0f "$per_executor * 10") rows/s ($(calc %.1f "$per_executor * 10 / ($CLUSTER_ROWS / $local_wall)")x one lakectl process here), this query over 100M rows in ~$(calc %.0f "100000000 / ($per_executor * 10)") s, if the scan and partial aggregates scale with executors and the network keeps up with the shuffle: a projection from one measured executor, not a measurement."
    echo
  fi
  if section scaling; then
  echo "Scaling (lakectl, one run each; bronze commits every $FLUSH_ROWS records, silver reads units of $BATCH_ROWS rows):"
  echo
  echo "| records | stage | wall s | s per million | peak RSS MiB | 95 % of the peak reached after |"
  echo "|---:|---|---:|---:|---:|---:|"
  for row in "${SCALE_ROWS[@]}"; do
    IFS='|' read -r n stage wall rss reached <<<"$row"
    at="-"   # a run too short to sample
    [[ $reached != null ]] && at="$(calc %.0f "100 * $reached") % of the run (~$(calc %.0f "$reached * $n") records)"
    echo "| $n | $stage | $wall | $(calc %.2f "$wall * 1000000 / $n") | $((rss / 1024)) | $at |"
  done
  echo
  # Growth between the two largest inputs, both many flushes long: what "flat" is judged by.
  read -r below largest < <(printf '%s\n' $SCALES | sort -n | tail -2 | paste -sd' ')
  for stage in bronze silver; do
    printf '%s\n' "${SCALE_ROWS[@]}" | awk -F'|' -v s="$stage" -v a="$below" -v b="$largest" '
      $2 == s && $1 == a {ra = $4; ta = $3 / $1} $2 == s && $1 == b {rb = $4; tb = $3 / $1}
      END {printf "%s from %d to %d records: peak RSS %+.0f %%, time per record %+.0f %%.\n", s, a, b, 100 * (rb / ra - 1), 100 * (tb / ta - 1)}'
  done
  printf '%s\n' "${SCALE_ROWS[@]}" | awk -F'|' -v g="$GROWTH" -v h="$largest" '
    $2 == "silver" && $1 == g {empty = $3} $2 == "silver onto " h {onto = $3}
    END {if (empty && onto) printf "silver, %d new records: %.2f s per million onto an empty table, %.2f s onto one holding %d rows (%+.0f %%).\n", g, empty * 1e6 / g, onto * 1e6 / g, h, 100 * (onto / empty - 1)}'
  echo
  echo "RSS over time while bronze and silver took in $largest records (sampled every 0.2 s): ![RSS over time]($STAMP-rss.png)"
  echo
  fi
  if section window_freshness; then
    echo "Window freshness: generate at $WF_RATE events/s (event time = now) for ${WF_SECONDS} s with bronze, silver, the windows and the load of page_view_counts running continuously on a sqlite-engine Nisshi (bronze flushes every $WF_FLUSH_MS ms, the others poll every $WF_POLL_MS ms): $WF_SENTENCE."
    echo
  fi
  if section freshness; then
    echo "Freshness: produce at each rate for ${FRESH_SECONDS} s with bronze (flushing every 500 ms), silver and load running continuously (polling every 200 ms); lag = the row's load transaction minus its Kafka timestamp, over every row in Postgres:"
    echo
    echo "| target records/s | produced records/s | rows in Postgres | p50 s | p95 s | p99 s |"
    echo "|---:|---:|---:|---:|---:|---:|"
    for row in "${FRESH_ROWS[@]}"; do
      IFS='|' read -r rate sent produce_s rows p50 p95 p99 <<<"$row"
      echo "| $rate | $(calc %.0f "$sent / $produce_s") | $rows of $sent | $p50 | $p95 | $p99 |"
    done
    echo
    held=$(printf '%s\n' "${FRESH_ROWS[@]}" | awk -F'|' '$4 == $2 && $7 <= 2 {h = $1} END {print h ? h : "none"}')
    echo "Highest rate held with every row loaded and p99 <= 2 s: $held records/s. ![freshness curve]($STAMP-freshness.png)"
    echo
  fi
} | tee "$RESULTS/$STAMP.md"
{
  echo "{\"cores\": $(nproc), \"records\": $N, \"repeat\": $REPEAT, \"stages\": ["
  ((${#ROWS[@]} == 0)) || printf '%s\n' "${ROWS[@]}" | awk -F'|' '{printf "%s{\"stage\":\"%s\",\"engine\":\"%s\",\"wall_s\":%s,\"cpu_s\":%s,\"peak_rss_kb\":%s}", (NR>1?",\n":""), $1, $2, $3, $4, $5}'
  echo "], \"scaling\": ["
  ((${#SCALE_ROWS[@]} == 0)) || printf '%s\n' "${SCALE_ROWS[@]}" | awk -F'|' '{printf "%s{\"records\":%s,\"stage\":\"%s\",\"wall_s\":%s,\"peak_rss_kb\":%s,\"peak_95_reached_at\":%s}", (NR>1?",\n":""), $1, $2, $3, $4, $5}'
  echo "], \"window_freshness\": ${WF_JSON:-null}, \"freshness\": ["
  ((${#FRESH_ROWS[@]} == 0)) || printf '%s\n' "${FRESH_ROWS[@]}" | awk -F'|' -v s="$FRESH_SECONDS" '{printf "%s{\"rate\":%s,\"seconds\":%s,\"sent\":%s,\"produce_s\":%s,\"rows\":%s,\"p50_s\":%s,\"p95_s\":%s,\"p99_s\":%s}", (NR>1?",\n":""), $1, s, $2, $3, $4, $5, $6, $7}'
  echo "]}"
} >"$RESULTS/$STAMP.json"
log "results in bench/results/$STAMP.md and .json"
