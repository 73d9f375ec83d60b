#!/usr/bin/env bash
# scripts/superset.sh up|down|screenshot FILE: Superset 6.1 (pinned, in a cached venv) on
# 127.0.0.1 without Docker, with the books dashboard over the stack's Postgres.
#
#   up               install (once), set up its metadata (SQLite), serve it with gunicorn on a
#                    free loopback port, create the dashboard (scripts/superset/bootstrap.py);
#                    prints the URL and the login
#   down             stop it
#   check            each chart's data as Superset serves it, as JSON {chart: [rows]}
#   screenshot FILE [DASHBOARD]  a dashboard (default books) as a PNG, through headless Chromium
#
# Env: DATABASE_URL (default: .lakectl/services.env); SUPERSET_STATE (default .lakectl/superset);
# SUPERSET_DASHBOARDS (default "books"; also "user_activity"); SUPERSET_MARTS_SCHEMA
# (analytics_marts), SUPERSET_GOLD_SCHEMA (gold), SUPERSET_ACTIVITY_SCHEMA (activity): where the
# dashboards' tables are. The login is admin / admin: a local, loopback-only instance.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
STATE=${SUPERSET_STATE:-$ROOT/.lakectl/superset}
CACHE=${LAKECTL_CACHE:-$HOME/.cache/lakectl}
log() { printf '[superset] %s\n' "$*" >&2; }

up() {
  local py bin port url
  py=$(bash "$ROOT/scripts/python-env.sh" superset)
  bin=$(dirname "$py")
  mkdir -p "$STATE"
  [[ -f $STATE/secret ]] || "$py" -c 'import secrets; print(secrets.token_hex(32))' >"$STATE/secret"
  cat >"$STATE/superset_config.py" <<CONF
SECRET_KEY = open("$STATE/secret").read().strip()
SQLALCHEMY_DATABASE_URI = "sqlite:///$STATE/superset.db"
# A local instance on 127.0.0.1 driven through its REST API by scripts/superset/bootstrap.py.
WTF_CSRF_ENABLED = False
CONF
  export SUPERSET_CONFIG_PATH=$STATE/superset_config.py FLASK_APP=superset
  if [[ -z ${DATABASE_URL:-} ]]; then
    # shellcheck disable=SC1091
    source "$ROOT/.lakectl/services.env"
  fi
  log "metadata in $STATE"
  "$bin/superset" db upgrade >"$STATE/setup.log" 2>&1
  "$bin/superset" fab create-admin --username admin --firstname Admin --lastname User \
    --email admin@example.com --password admin >>"$STATE/setup.log" 2>&1 || true
  "$bin/superset" init >>"$STATE/setup.log" 2>&1
  "$bin/superset" set-database-uri -d books -u "postgresql+psycopg2://${DATABASE_URL#*://}" \
    >>"$STATE/setup.log" 2>&1
  down
  port=$(free_port)
  url=http://127.0.0.1:$port
  "$bin/gunicorn" --bind "127.0.0.1:$port" --workers 2 --timeout 120 --daemon \
    --pid "$STATE/gunicorn.pid" --error-logfile "$STATE/gunicorn.log" 'superset.app:create_app()'
  for _ in $(seq 120); do curl -fs "$url/health" >/dev/null && break; sleep 1; done
  curl -fs "$url/health" >/dev/null || { log "did not start; see $STATE/gunicorn.log"; exit 1; }
  echo "export SUPERSET_URL=$url" >"$STATE/env"
  # shellcheck disable=SC2086 # a list of slugs
  "$py" "$ROOT/scripts/superset/bootstrap.py" "$url" ${SUPERSET_DASHBOARDS:-books} \
    >"$STATE/dashboard.json"
  for slug in ${SUPERSET_DASHBOARDS:-books}; do
    log "dashboard: $url/superset/dashboard/$slug/  (login admin / admin)"
  done
  echo "$url"
}

down() {
  [[ -f $STATE/gunicorn.pid ]] || return 0
  local pid
  pid=$(cat "$STATE/gunicorn.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  rm -f "$STATE/gunicorn.pid"
}

check() {
  # shellcheck disable=SC1091
  source "$STATE/env"
  "$(bash "$ROOT/scripts/python-env.sh" superset)" "$ROOT/scripts/superset/check.py" \
    "$SUPERSET_URL" "$STATE/dashboard.json"
}

screenshot() {
  local out=${1:?usage: superset.sh screenshot FILE [DASHBOARD]}
  # shellcheck disable=SC1091
  source "$STATE/env"
  # Noto covers every script in the data (Chinese, Hindi, ...), not only Latin.
  if ! command -v chromium >/dev/null || ! grep -q "Noto Sans CJK" < <(fc-list); then
    log "installing chromium and fonts"
    apt-get update -qq >/dev/null &&
      apt-get install -y -qq chromium fonts-liberation fonts-noto-core fonts-noto-cjk >/dev/null
  fi
  local node_dir=$CACHE/node
  [[ -d $node_dir/node_modules/playwright-core ]] ||
    npm install --silent --prefix "$node_dir" playwright-core@1.65.1 >&2
  NODE_PATH=$node_dir/node_modules node "$ROOT/scripts/superset/screenshot.js" "$SUPERSET_URL" "$out" "${2:-books}"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  check) check ;;
  screenshot) screenshot "${2:-}" "${3:-books}" ;;
  *) echo "usage: $0 up|down|check|screenshot FILE" >&2; exit 2 ;;
esac
