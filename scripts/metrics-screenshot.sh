#!/usr/bin/env bash
# Draws docs/prometheus_lag.png for the README: Prometheus's own graph page of
# lakectl_kafka_consumer_lag while continuous bronze (--metrics-addr) drains three bursts of
# generated events. Uses the stack of scripts/services.sh, a private Prometheus and headless
# Chromium (scripts/superset.sh installs it); stops what it started.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakectl-target}
BIN=${LAKECTL_BIN:-$CARGO_TARGET_DIR/debug/lakectl}
[[ -x $BIN ]] || cargo build -p jobs --bin lakectl >&2
bash scripts/services.sh up >&2
set -a
# shellcheck source=/dev/null
source .lakectl/services.env
set +a
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

topic=lag_demo_$$
# Small commits make the drain slow enough to see.
printf 'name = "lag_demo"\n[bronze.activity]\ntopic = "%s"\nflush_rows = 2000\n' "$topic" >"$WORK/p.toml"
export LAKECTL_LAKE_URI=s3://lake/lag-demo-$$/
metrics=$(free_port)
web=$(free_port)
printf 'global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lakectl\n    static_configs:\n      - targets: ["127.0.0.1:%s"]\n' \
  "$metrics" >"$WORK/prometheus.yml"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$web" >/dev/null 2>&1 &
PIDS+=($!)
"$BIN" -p "$WORK/p.toml" generate user-activity --count 1 --topic "$topic" --partitions 3 >/dev/null 2>&1
"$BIN" -p "$WORK/p.toml" run bronze --continuous --metrics-addr "127.0.0.1:$metrics" >/dev/null 2>&1 &
PIDS+=($!)
sleep 5
for burst in 100000 250000 150000; do
  "$BIN" -p "$WORK/p.toml" generate user-activity --count "$burst" --seed "$burst" --topic "$topic" >/dev/null 2>&1
  sleep 20
done
expr='sum by (partition) (lakectl_kafka_consumer_lag{stage="bronze"})'
url="http://127.0.0.1:$web/graph?g0.expr=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$expr")&g0.tab=0&g0.range_input=2m"
chromium --headless --no-sandbox --hide-scrollbars --window-size=1400,900 \
  --virtual-time-budget=15000 --screenshot="$ROOT/docs/prometheus_lag.png" "$url" >/dev/null 2>&1
echo "docs/prometheus_lag.png: $expr"
