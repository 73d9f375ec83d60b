#!/usr/bin/env bash
# scripts/python-env.sh NAME: creates (once) the cached venv NAME with the packages pinned in
# scripts/python/NAME.txt (and, when present, constrained by NAME.constraints.txt),
# re-installing when either file changes, and prints its python.
#   test      the "other engine" the tests read Delta tables with
#   bench     the seed-style Python pipelines scripts/bench.sh compares lakectl with
#   dbt       dbt-core and dbt-postgres for books_analytics (scripts/dbt.sh)
#   superset  Superset 6.1 for the dashboards (scripts/superset.sh)
#   spark     PySpark, the windows peer in scripts/bench.sh
#   flink     PyFlink, the windows' second oracle (tests) and a peer (scripts/bench.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=${1:?usage: python-env.sh test|bench|dbt|superset|spark|flink}
REQ="$ROOT/scripts/python/$NAME.txt"
CONSTRAINTS="$ROOT/scripts/python/$NAME.constraints.txt"
[[ -f $REQ ]] || { echo "no $REQ" >&2; exit 2; }
VENV=${LAKECTL_CACHE:-$HOME/.cache/lakectl}/venvs/$NAME
stamp="$VENV/.requirements"
wanted=$(cat "$REQ"; if [[ -f $CONSTRAINTS ]]; then cat "$CONSTRAINTS"; fi)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  echo "[python] installing scripts/python/$NAME.txt into $VENV" >&2
  python3 -m venv "$VENV"
  args=(-r "$REQ")
  [[ -f $CONSTRAINTS ]] && args+=(-c "$CONSTRAINTS")
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${args[@]}" >&2
  printf '%s' "$wanted" >"$stamp"
fi
echo "$VENV/bin/python"
