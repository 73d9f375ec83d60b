"""Row counts and column sums of every mart of streaming_analytics, built by dbt on Postgres
and on DuckDB, side by side. Run with the dbt venv's Python (psycopg2 and duckdb).

    python3 marts_agree.py DATABASE_URL DUCKDB_PATH MARTS_SCHEMA

Prints JSON: {mart: {"postgres": {"rows": n, column: sum, …}, "duckdb": {…}}}; sums of
numbers are rounded to 6 places (floating sums differ in the last bits between engines),
timestamps and dates are compared by their count of distinct values.
"""
import json
import sys

import duckdb
import psycopg2

MARTS = ["dim_users", "dim_content", "fact_plays", "agg_genre_daily", "agg_recommended"]
NUMBERS = ("integer", "bigint", "numeric", "double", "decimal", "real", "hugeint", "smallint")


def summary(query, columns_of, mart):
    out = {"rows": query(f"select count(*) from {mart}")[0][0]}
    for name, kind in columns_of(mart):
        if any(kind.lower().startswith(n) for n in NUMBERS):
            total = query(f'select sum("{name}") from {mart}')[0][0]
            out[name] = None if total is None else round(float(total), 6)
        else:
            out[name + " (distinct)"] = query(f'select count(distinct "{name}") from {mart}')[0][0]
    return out


url, duck_path, schema = sys.argv[1:4]
pg = psycopg2.connect(url)
pg_cursor = pg.cursor()


def pg_query(sql):
    pg_cursor.execute(sql.replace(" from ", f" from {schema}.", 1))
    return pg_cursor.fetchall()


def pg_columns(mart):
    pg_cursor.execute("select column_name, data_type from information_schema.columns "
                      "where table_schema = %s and table_name = %s order by ordinal_position",
                      (schema, mart))
    return pg_cursor.fetchall()


duck = duckdb.connect(duck_path, read_only=True)


def duck_query(sql):
    return duck.execute(sql.replace(" from ", f" from {schema}.", 1)).fetchall()


def duck_columns(mart):
    return duck.execute("select column_name, data_type from information_schema.columns "
                        "where table_schema = ? and table_name = ? order by ordinal_position",
                        [schema, mart]).fetchall()


print(json.dumps({m: {"postgres": summary(pg_query, pg_columns, m),
                      "duckdb": summary(duck_query, duck_columns, m)} for m in MARTS}))
