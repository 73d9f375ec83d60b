"""The books dashboard as code: creates (or re-creates) its datasets, charts and dashboard in
a running Superset through the REST API, and prints their ids as JSON.

    python bootstrap.py http://127.0.0.1:PORT

SUPERSET_MARTS_SCHEMA (analytics_marts) and SUPERSET_GOLD_SCHEMA (gold) say where the tables
are; the database is the one `superset set-database-uri -d books` registered."""
import json
import os
import sys

from superset_api import Api

MARTS = os.environ.get("SUPERSET_MARTS_SCHEMA", "analytics_marts")
GOLD = os.environ.get("SUPERSET_GOLD_SCHEMA", "gold")
DASHBOARD = "books"


def metric(sql, label):
    return {"expressionType": "SQL", "sqlExpression": sql, "label": label}


SALES = metric("SUM(sales_millions)", "sales (millions)")
# name, viz, schema.table, group-by column, metric, rows
CHARTS = [
    ("Sales by genre", "pie", (GOLD, "sales_by_genre"), "genre", SALES, 100),
    ("Sales by original language", "pie", (GOLD, "sales_by_language"), "original_language", SALES, 100),
    ("Top books by sales", "table", (MARTS, "fact_books"), "book_title", SALES, 10),
    ("Rows quarantined per rule", "table", (GOLD, "quality_by_rule"), "rule",
     metric("SUM(rows_failed)", "rows failed"), 100),
]


def chart_body(name, viz, dataset_id, column, measure, rows):
    params = {
        "datasource": f"{dataset_id}__table",
        "viz_type": viz,
        "groupby": [column],
        "metric": measure,
        "metrics": [measure],
        "row_limit": rows,
        "sort_by_metric": True,
        "order_desc": True,
        "query_mode": "aggregate",
        "adhoc_filters": [],
        "show_legend": True,
        "show_labels": True,
    }
    query = {
        "datasource": {"id": dataset_id, "type": "table"},
        "force": False,
        "queries": [{
            "columns": [column],
            "metrics": [measure],
            "orderby": [[measure, False]],
            "row_limit": rows,
            "filters": [],
        }],
        "result_format": "json",
        "result_type": "full",
    }
    return {
        "slice_name": name,
        "viz_type": viz,
        "datasource_id": dataset_id,
        "datasource_type": "table",
        "params": json.dumps(params),
        "query_context": json.dumps(query),
    }


def layout(charts):
    """Two charts per row, each half the width."""
    position = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
    }
    for r in range(0, len(charts), 2):
        row = f"ROW-{r // 2}"
        position["GRID_ID"]["children"].append(row)
        position[row] = {"type": "ROW", "id": row, "children": [],
                         "parents": ["ROOT_ID", "GRID_ID"],
                         "meta": {"background": "BACKGROUND_TRANSPARENT"}}
        for name, chart in charts[r:r + 2]:
            key = f"CHART-{chart['id']}"
            position[row]["children"].append(key)
            position[key] = {"type": "CHART", "id": key, "children": [],
                             "parents": ["ROOT_ID", "GRID_ID", row],
                             "meta": {"chartId": chart["id"], "uuid": chart["uuid"],
                                      "sliceName": name, "width": 6, "height": 60}}
    return position


def main():
    api = Api(sys.argv[1])
    database = api.find("database", "database_name", "books")
    if database is None:
        sys.exit("no database `books` in Superset: run `superset set-database-uri -d books` first")
    # Re-create: the dashboard and charts of an earlier bootstrap go first.
    old = api.find("dashboard", "slug", DASHBOARD)
    if old:
        api.call("DELETE", f"/api/v1/dashboard/{old['id']}")
    for name, *_ in CHARTS:
        while (chart := api.find("chart", "slice_name", name)) is not None:
            api.call("DELETE", f"/api/v1/chart/{chart['id']}")
    made = []
    for name, viz, (schema, table), column, measure, rows in CHARTS:
        dataset = api.find("dataset", "table_name", table, schema=schema)
        dataset_id = dataset["id"] if dataset else api.call(
            "POST", "/api/v1/dataset/",
            {"database": database["id"], "schema": schema, "table_name": table})["id"]
        chart_id = api.call("POST", "/api/v1/chart/",
                            chart_body(name, viz, dataset_id, column, measure, rows))["id"]
        uuid = api.call("GET", f"/api/v1/chart/{chart_id}")["result"].get("uuid")
        made.append((name, {"id": chart_id, "uuid": uuid}))
    dashboard = api.call("POST", "/api/v1/dashboard/", {
        "dashboard_title": "Best-selling books", "slug": DASHBOARD, "published": True,
        "position_json": json.dumps(layout(made))})["id"]
    for _, chart in made:
        api.call("PUT", f"/api/v1/chart/{chart['id']}", {"dashboards": [dashboard]})
    print(json.dumps({"dashboard": dashboard, "charts": {n: c["id"] for n, c in made}}))


if __name__ == "__main__":
    main()
