#!/usr/bin/env bash
# The books, user-activity and customer-events pipelines on a fresh machine without Docker,
# in one command:
#
#   bash scripts/quickstart.sh
#
# Installs what it needs (cached under ~/.cache/lakectl), starts PostgreSQL, the Nisshi
# Kafka-protocol broker, a moto S3 server and a schema registry on 127.0.0.1
# (scripts/services.sh), builds lakectl, runs books (produce -> bronze -> silver -> gold ->
# load -> dbt build), user activity (generate -> bronze -> silver -> window -> sink -> load)
# and customer events (generate in Avro -> bronze -> silver -> gold -> load -> dbt on Postgres
# and on DuckDB), starts Superset with a dashboard for books and user activity, and prints what
# landed, read from Postgres and DuckDB. The services stay up for you
# to explore; the last lines say how to stop them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
started=$(date +%s)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "tools and services"
bash scripts/install-deps.sh
bash scripts/services.sh up
# shellcheck disable=SC1091
source .lakectl/services.env
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakectl-target}

step "building lakectl"
cargo build --locked -p jobs --bin lakectl
lakectl() { "$CARGO_TARGET_DIR/debug/lakectl" "$@"; }
export LAKECTL_PIPELINE=pipelines/books.toml

step "the books pipeline"
lakectl validate
lakectl produce
lakectl run bronze --once
lakectl run silver
lakectl run gold
lakectl run load
bash scripts/dbt.sh build

step "the user-activity pipeline"
# 100,000 generated events over 2¾ hours of event time, with late, re-sent and broken ones.
# Run again, the same events come again and silver leaves them out as duplicates.
activity() { lakectl -p pipelines/user_activity.toml "$@"; }
activity generate
activity run bronze --once
activity run silver
activity run window
activity run sink
activity run load

step "the customer-events pipeline (Avro through the schema registry, dbt on Postgres and DuckDB)"
events() { lakectl -p pipelines/customer_events.toml "$@"; }
events generate
events run bronze --once
events run silver
events run gold
events run load
DBT_PROJECT=streaming_analytics bash scripts/dbt.sh build --target postgres
DBT_PROJECT=streaming_analytics DUCKDB_PATH="$ROOT/.lakectl/streaming.duckdb" \
  bash scripts/dbt.sh build --target duckdb

step "Superset"
SUPERSET_URL=$(SUPERSET_DASHBOARDS="books user_activity" bash scripts/superset.sh up)

step "rows per layer"
lakectl query "
  SELECT 'bronze.books' AS \"table\", count(*) AS \"rows\" FROM bronze.books
  UNION ALL SELECT 'silver.books', count(*) FROM silver.books
  UNION ALL SELECT 'quarantine.books', count(*) FROM quarantine.books
  UNION ALL SELECT 'gold.sales_by_genre', count(*) FROM gold.sales_by_genre
  UNION ALL SELECT 'gold.sales_by_language', count(*) FROM gold.sales_by_language
  UNION ALL SELECT 'gold.sales_by_decade', count(*) FROM gold.sales_by_decade
  ORDER BY 1"
psql "$DATABASE_URL" -c "
  SELECT 'silver.books' AS postgres_table, count(*) AS rows FROM silver.books
  UNION ALL SELECT 'analytics_marts.fact_books', count(*) FROM analytics_marts.fact_books
  UNION ALL SELECT 'analytics_marts.dim_author', count(*) FROM analytics_marts.dim_author
  UNION ALL SELECT 'analytics_marts.dim_language', count(*) FROM analytics_marts.dim_language"

step "top 5 books by sales (Postgres, analytics_marts.fact_books)"
psql "$DATABASE_URL" -c "
  SELECT f.book_title, a.author_name, f.sales_millions
  FROM analytics_marts.fact_books f JOIN analytics_marts.dim_author a USING (author_key)
  ORDER BY f.sales_millions DESC, f.book_title LIMIT 5"

step "user activity (Postgres, schema activity)"
psql "$DATABASE_URL" -c "
  SELECT 'page_view_counts' AS postgres_table, count(*) AS rows FROM activity.page_view_counts
  UNION ALL SELECT 'active_users', count(*) FROM activity.active_users
  UNION ALL SELECT 'user_sessions', count(*) FROM activity.user_sessions"
psql "$DATABASE_URL" -c "
  SELECT count(*) AS sessions, round(avg(events), 1) AS avg_events,
         round(avg(duration_seconds)::numeric / 60, 1) AS avg_minutes
  FROM activity.user_sessions"
activity query "SELECT rule, count(*) AS late_events FROM quarantine.user_sessions GROUP BY rule"

step "customer events: plays per genre (Postgres, streaming_marts.agg_genre_daily)"
psql "$DATABASE_URL" -c "
  SELECT genre, sum(plays) AS plays, sum(viewers) AS viewer_days,
         round(sum(seconds_played) / 3600.0) AS hours_played
  FROM streaming_marts.agg_genre_daily GROUP BY genre ORDER BY plays DESC LIMIT 5"
echo "The same mart in DuckDB, built from the lake: .lakectl/streaming.duckdb (streaming_marts.agg_genre_daily)"

step "done in $(( $(date +%s) - started )) s"
cat <<MSG
The services are still running (addresses in .lakectl/services.env):
  Superset dashboards: $SUPERSET_URL/superset/dashboard/books/
                       $SUPERSET_URL/superset/dashboard/user_activity/  (login admin / admin)
  source .lakectl/services.env
  $CARGO_TARGET_DIR/debug/lakectl -p pipelines/books.toml status
  psql "\$DATABASE_URL"
Stop them with: bash scripts/superset.sh down && bash scripts/services.sh down
MSG
