#!/usr/bin/env bash
# The lakectl service stack without Docker, on 127.0.0.1 and free ports:
#   PostgreSQL 15 (a private cluster), the Nisshi Kafka-protocol broker (sqlite engine),
#   a moto S3 server with the lake bucket created, and a Confluent-compatible schema registry
#   (scripts/schema_registry.py, schemas in the broker's `_schemas` topic).
#
#   scripts/services.sh up [--fresh] [--cluster]
#                                      start what is not running (--fresh: start empty;
#                                      --cluster: also a Ballista scheduler and two executors
#                                      from lakectl itself, LAKECTL_CLUSTER_URL)
#   scripts/services.sh down           stop everything
#   scripts/services.sh status         say what runs where
#
# Addresses go to .lakectl/services.env as `export NAME=value` lines; `source` it.
# Tools are installed on first use and cached outside the clone, in $LAKECTL_CACHE
# (default ~/.cache/lakectl): nisshi via cargo install, moto and the registry in venvs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.lakectl"
ENV_FILE="$STATE/services.env"
CACHE=${LAKECTL_CACHE:-$HOME/.cache/lakectl}
TOOLS="$CACHE/tools"
NISSHI="$TOOLS/bin/nisshi"
NISSHI_VERSION=0.8.1
NISSHI_TOOLCHAIN=1.96.0 # nisshi 0.8.1 needs rustc >= 1.96
S3_VENV="$CACHE/venvs/s3"
MOTO_VERSION=5.2.5
BUCKET=lake
PG_BIN=/usr/lib/postgresql/15/bin

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
log() { printf '[services] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

wait_until() { # wait_until SECONDS WHAT CMD...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || die "$what did not become ready within the time limit"
    sleep 0.2
  done
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# ---- installs (cached) -------------------------------------------------------------------

install_nisshi() {
  if [[ -x $NISSHI ]] && "$NISSHI" --version >/dev/null 2>&1; then return; fi
  log "installing nisshi $NISSHI_VERSION (first time only; up to ~30 min on 2 cores)"
  rustup toolchain list | grep -q "^$NISSHI_TOOLCHAIN" ||
    rustup toolchain install "$NISSHI_TOOLCHAIN" --profile minimal >&2
  # Only the sqlite (libsql) and memory (dynostore) engines: quicker to build.
  CARGO_TARGET_DIR="$CACHE/build/nisshi" cargo "+$NISSHI_TOOLCHAIN" install nisshi \
    --version "$NISSHI_VERSION" --locked --no-default-features --features libsql,dynostore \
    --root "$TOOLS" >&2
  rm -rf "$CACHE/build/nisshi"
}

install_moto() {
  if [[ -x $S3_VENV/bin/moto_server ]]; then return; fi
  log "installing moto $MOTO_VERSION into $S3_VENV"
  python3 -m venv "$S3_VENV"
  "$S3_VENV/bin/pip" install --quiet "moto[server]==$MOTO_VERSION" >&2
}

# ---- state -------------------------------------------------------------------------------

load_ports() {
  PG_PORT="" KAFKA_PORT="" S3_PORT="" REGISTRY_PORT="" CLUSTER_PORT="" EXECUTOR_PORTS=""
  if [[ -f $STATE/ports ]]; then
    # shellcheck source=/dev/null
    source "$STATE/ports"
  fi
  # A port we chose before is kept while it is ours; a taken one is replaced.
  local name
  for name in PG_PORT KAFKA_PORT S3_PORT REGISTRY_PORT CLUSTER_PORT; do
    [[ -n ${!name} ]] || printf -v "$name" '%s' "$(free_port)"
  done
  # Each executor serves Arrow Flight on its port and gRPC on the next: both free.
  if [[ -z $EXECUTOR_PORTS ]]; then
    local p
    while (($(wc -w <<<"$EXECUTOR_PORTS") < 2)); do
      p=$(free_port)
      port_open $((p + 1)) || EXECUTOR_PORTS="$EXECUTOR_PORTS $p"
    done
  fi
  printf 'PG_PORT=%s\nKAFKA_PORT=%s\nS3_PORT=%s\nREGISTRY_PORT=%s\nCLUSTER_PORT=%s\nEXECUTOR_PORTS="%s"\n' \
    "$PG_PORT" "$KAFKA_PORT" "$S3_PORT" "$REGISTRY_PORT" "$CLUSTER_PORT" "${EXECUTOR_PORTS# }" >"$STATE/ports"
}

write_env() {
  cat >"$ENV_FILE" <<EOF
# Written by scripts/services.sh; source it to reach the local stack.
export LAKECTL_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export LAKECTL_LAKE_URI=s3://$BUCKET/
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=lakectl
export AWS_SECRET_ACCESS_KEY=lakectl-secret
export AWS_REGION=us-east-1
export AWS_ALLOW_HTTP=true
export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/lakectl
export LAKECTL_SCHEMA_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
# The Ballista cluster of up --cluster; export LAKECTL_ENGINE_URL=\$LAKECTL_CLUSTER_URL to use it.
export LAKECTL_CLUSTER_URL=ballista://127.0.0.1:$CLUSTER_PORT
# Python with Confluent's client and Avro serializer (the registry's own venv).
export LAKECTL_REGISTRY_PYTHON=$REGISTRY_PYTHON
# The service binaries, for fault tests that run private instances.
export LAKECTL_NISSHI_BIN=$NISSHI
export LAKECTL_MOTO_BIN=$S3_VENV/bin/moto_server
EOF
}

# ---- postgres ----------------------------------------------------------------------------

as_postgres() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_up() {
  local dir="$STATE/pg"
  if [[ ! -f $dir/PG_VERSION ]]; then
    mkdir -p "$dir"
    [[ $(id -u) == 0 ]] && chown postgres: "$dir"
    as_postgres "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 >/dev/null
  fi
  if ! as_postgres "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    port_open "$PG_PORT" && die "port $PG_PORT is taken; remove $STATE/ports to pick new ports"
    as_postgres "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/log" -w -t 30 \
      -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  fi
  wait_until 30 postgres pg_isready -q -h 127.0.0.1 -p "$PG_PORT"
  as_postgres psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='lakectl'" | grep -q 1 ||
    as_postgres psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE lakectl"
  log "postgres  127.0.0.1:$PG_PORT (database lakectl)"
}

pg_down() {
  [[ -f $STATE/pg/PG_VERSION ]] || return 0
  as_postgres "$PG_BIN/pg_ctl" -D "$STATE/pg" -m fast -w stop >/dev/null 2>&1 || true
}

# ---- nisshi (kafka) ----------------------------------------------------------------------

kafka_up() {
  local dir="$STATE/nisshi" pidfile="$STATE/nisshi.pid"
  if ! pid_alive "$pidfile"; then
    port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken; remove $STATE/ports to pick new ports"
    mkdir -p "$dir"
    # The sqlite path is relative: run inside the data dir.
    (cd "$dir" && run_nisshi "$NISSHI" "$KAFKA_PORT" sqlite://nisshi.db >"$dir/log" 2>&1 </dev/null) &
    echo $! >"$pidfile"
  fi
  wait_until 30 "nisshi broker" port_open "$KAFKA_PORT"
  log "kafka     127.0.0.1:$KAFKA_PORT (nisshi, sqlite engine)"
}

# ---- moto (s3) ---------------------------------------------------------------------------

s3_up() {
  local pidfile="$STATE/moto.pid"
  if ! pid_alive "$pidfile"; then
    port_open "$S3_PORT" && die "port $S3_PORT is taken; remove $STATE/ports to pick new ports"
    (exec setsid "$S3_VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" \
      >"$STATE/moto.log" 2>&1 </dev/null) &
    echo $! >"$pidfile"
  fi
  wait_until 30 "moto S3 server" curl -sf -o /dev/null "http://127.0.0.1:$S3_PORT/moto-api/"
  "$S3_VENV/bin/python" - "$S3_PORT" "$BUCKET" <<'EOF'
import sys, boto3
port, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="lakectl", aws_secret_access_key="lakectl-secret")
if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=bucket)
EOF
  log "s3        http://127.0.0.1:$S3_PORT (moto, bucket $BUCKET)"
}

# ---- schema registry ----------------------------------------------------------------------
# Our own Confluent-compatible registry (scripts/schema_registry.py): no registry server
# installs here. Its schemas live in the broker's `_schemas` topic.

registry_up() {
  local pidfile="$STATE/registry.pid"
  REGISTRY_PYTHON=$(bash "$ROOT/scripts/python-env.sh" registry)
  if ! pid_alive "$pidfile"; then
    port_open "$REGISTRY_PORT" && die "port $REGISTRY_PORT is taken; remove $STATE/ports to pick new ports"
    (exec setsid "$REGISTRY_PYTHON" "$ROOT/scripts/schema_registry.py" \
      --brokers "127.0.0.1:$KAFKA_PORT" --port "$REGISTRY_PORT" \
      >"$STATE/registry.log" 2>&1 </dev/null) &
    echo $! >"$pidfile"
  fi
  wait_until 60 "schema registry" curl -sf -o /dev/null "http://127.0.0.1:$REGISTRY_PORT/subjects"
  log "registry  http://127.0.0.1:$REGISTRY_PORT (schemas in topic _schemas)"
}

# ---- ballista cluster (up --cluster) -------------------------------------------------------

cluster_up() {
  local bin=${LAKECTL_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/lakectl-target}/debug/lakectl}
  if [[ ! -x $bin ]]; then
    log "building lakectl for the cluster"
    (cd "$ROOT" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakectl-target} cargo build -p jobs --bin lakectl >&2)
  fi
  if ! pid_alive "$STATE/scheduler.pid"; then
    (exec setsid "$bin" cluster scheduler --bind "127.0.0.1:$CLUSTER_PORT" \
      >"$STATE/scheduler.log" 2>&1 </dev/null) &
    echo $! >"$STATE/scheduler.pid"
  fi
  wait_until 30 "ballista scheduler" port_open "$CLUSTER_PORT"
  local i=0 port
  for port in $EXECUTOR_PORTS; do
    i=$((i + 1))
    if ! pid_alive "$STATE/executor-$i.pid"; then
      mkdir -p "$STATE/executor-$i"
      # Executors read the lake with the stack's S3 settings, as every lakectl process does.
      (export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ACCESS_KEY_ID=lakectl \
        AWS_SECRET_ACCESS_KEY=lakectl-secret AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
      exec setsid "$bin" cluster executor --scheduler "127.0.0.1:$CLUSTER_PORT" \
        --bind "127.0.0.1:$port" --work-dir "$STATE/executor-$i" \
        >"$STATE/executor-$i.log" 2>&1 </dev/null) &
      echo $! >"$STATE/executor-$i.pid"
    fi
    wait_until 30 "ballista executor $i" port_open "$port"
  done
  log "cluster   ballista://127.0.0.1:$CLUSTER_PORT (scheduler and $i executors)"
}

stop_pid() {
  local pidfile=$1
  if pid_alive "$pidfile"; then
    local pid
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# ---- commands ----------------------------------------------------------------------------

cmd_down() {
  stop_pid "$STATE/executor-1.pid"
  stop_pid "$STATE/executor-2.pid"
  stop_pid "$STATE/scheduler.pid"
  stop_pid "$STATE/registry.pid"
  stop_pid "$STATE/nisshi.pid"
  stop_pid "$STATE/moto.pid"
  pg_down
  log "services stopped"
}

cmd_up() {
  local fresh=false cluster=false arg
  for arg in "$@"; do
    case $arg in
      --fresh) fresh=true ;;
      --cluster) cluster=true ;;
      *) die "unknown option $arg (up [--fresh] [--cluster])" ;;
    esac
  done
  mkdir -p "$STATE"
  if $fresh; then
    cmd_down
    rm -rf "$STATE/pg" "$STATE/nisshi" "$STATE/ports"
  fi
  install_moto
  install_nisshi
  load_ports
  pg_up
  kafka_up
  s3_up
  registry_up
  if $cluster; then cluster_up; fi
  write_env
  log "addresses written to $ENV_FILE"
}

cmd_status() {
  [[ -f $STATE/ports ]] || { echo "services: not set up (run scripts/services.sh up)"; return 1; }
  load_ports
  local rc=0
  if pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then echo "postgres  up    127.0.0.1:$PG_PORT"; else echo "postgres  down"; rc=1; fi
  if pid_alive "$STATE/nisshi.pid" && port_open "$KAFKA_PORT"; then echo "kafka     up    127.0.0.1:$KAFKA_PORT"; else echo "kafka     down"; rc=1; fi
  if pid_alive "$STATE/moto.pid" && port_open "$S3_PORT"; then echo "s3        up    http://127.0.0.1:$S3_PORT"; else echo "s3        down"; rc=1; fi
  if pid_alive "$STATE/registry.pid" && port_open "$REGISTRY_PORT"; then echo "registry  up    http://127.0.0.1:$REGISTRY_PORT"; else echo "registry  down"; rc=1; fi
  return $rc
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up [--fresh] [--cluster] | down | status" >&2; exit 2 ;;
esac
