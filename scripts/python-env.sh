#!/usr/bin/env bash
# scripts/python-env.sh NAME: creates (once) the cached venv NAME with the packages pinned in
# scripts/python/NAME.txt, re-installing when that file changes, and prints its python.
#   test   the "other engine" the tests read Delta tables with
#   bench  the seed-style Python pipelines scripts/bench.sh compares lakectl with
#   dbt    dbt-core and dbt-postgres for books_analytics (scripts/dbt.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=${1:?usage: python-env.sh test|bench}
REQ="$ROOT/scripts/python/$NAME.txt"
[[ -f $REQ ]] || { echo "no $REQ" >&2; exit 2; }
VENV=${LAKECTL_CACHE:-$HOME/.cache/lakectl}/venvs/$NAME
stamp="$VENV/.requirements"
if ! cmp -s "$REQ" "$stamp" 2>/dev/null; then
  echo "[python] installing scripts/python/$NAME.txt into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >&2
  cp "$REQ" "$stamp"
fi
echo "$VENV/bin/python"
