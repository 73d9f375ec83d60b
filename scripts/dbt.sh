#!/usr/bin/env bash
# scripts/dbt.sh ARGS…: dbt (pinned, in a cached venv) in $DBT_PROJECT (default
# books_analytics/), connected to the Postgres in $DATABASE_URL (default: the one
# scripts/services.sh started) and, for streaming_analytics' duckdb target, the lake.
#   bash scripts/dbt.sh build                  # models and tests
#   bash scripts/dbt.sh source freshness
#   DBT_PROJECT=streaming_analytics bash scripts/dbt.sh build --target duckdb
# dbt vars pick the loaded table: --vars '{books_schema: silver, books_table: books}'.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=$(bash "$ROOT/scripts/python-env.sh" dbt)
if [[ -z ${DATABASE_URL:-} ]]; then
  [[ -f $ROOT/.lakectl/services.env ]] || { echo "no DATABASE_URL and no .lakectl/services.env: start scripts/services.sh up" >&2; exit 2; }
  # shellcheck disable=SC1091
  source "$ROOT/.lakectl/services.env"
fi
# libpq variables from the URL, for profiles.yml.
eval "$("$PY" - "$DATABASE_URL" <<'PY'
import shlex, sys
from urllib.parse import unquote, urlsplit
u = urlsplit(sys.argv[1])
for var, value in [("PGHOST", u.hostname or "127.0.0.1"), ("PGPORT", u.port or 5432),
                   ("PGUSER", unquote(u.username or "postgres")),
                   ("PGPASSWORD", unquote(u.password or "")),
                   ("PGDATABASE", u.path.lstrip("/") or "postgres")]:
    print(f"export {var}={shlex.quote(str(value))}")
PY
)"
cd "$ROOT/${DBT_PROJECT:-books_analytics}"
DBT_PROFILES_DIR=. exec "$(dirname "$PY")/dbt" "$@"
