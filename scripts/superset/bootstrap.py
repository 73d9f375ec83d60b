"""The dashboards as code: creates (or re-creates) their datasets, charts and dashboards in a
running Superset through the REST API, and prints their ids as JSON.

    python bootstrap.py http://127.0.0.1:PORT [DASHBOARD...]   (default: books)

Dashboards: `books` (SUPERSET_MARTS_SCHEMA, default analytics_marts, and SUPERSET_GOLD_SCHEMA,
default gold, say where its tables are) and `user_activity` (the windows of
pipelines/user_activity.toml, in SUPERSET_ACTIVITY_SCHEMA, default activity). The database is
the one `superset set-database-uri -d books` registered."""
import json
import os
import sys

from superset_api import Api

MARTS = os.environ.get("SUPERSET_MARTS_SCHEMA", "analytics_marts")
GOLD = os.environ.get("SUPERSET_GOLD_SCHEMA", "gold")
ACTIVITY = os.environ.get("SUPERSET_ACTIVITY_SCHEMA", "activity")
SHOP = os.environ.get("SUPERSET_SHOP_SCHEMA", "shop")
ORDERS = os.environ.get("SUPERSET_ORDERS_SCHEMA", "orders")


def metric(sql, label):
    return {"expressionType": "SQL", "sqlExpression": sql, "label": label}


SALES = metric("SUM(sales_millions)", "sales (millions)")
SESSION_LENGTH = {
    "expressionType": "SQL",
    "label": "session length",
    # Zero-padded so the bars sort in order.
    "sqlExpression": "CASE WHEN duration_seconds < 60 THEN '00-01 min' "
                     "WHEN duration_seconds < 300 THEN '01-05 min' "
                     "WHEN duration_seconds < 900 THEN '05-15 min' "
                     "WHEN duration_seconds < 1800 THEN '15-30 min' ELSE '30+ min' END",
}
HOUR = {
    "expressionType": "SQL",
    "label": "hour",
    "sqlExpression": "make_timestamp(year, month, day, hour, 0, 0)",
}
DELIVERY_MINUTES = {
    "expressionType": "SQL",
    "label": "minutes to delivery",
    # Zero-padded buckets of 5 minutes, so the bars sort in order; undelivered orders apart.
    "sqlExpression": "CASE WHEN delivered_at IS NULL THEN 'not delivered' "
                     "WHEN created_at IS NULL THEN 'creation quarantined' ELSE "
                     "lpad((5 * floor(extract(epoch FROM delivered_at - created_at) / 300))::int::text, 3, '0') "
                     "|| '+ min' END",
}
# slug: (title, charts); a chart is (name, viz, schema.table, group-by or x-axis column,
# metric, rows)
DASHBOARDS = {
    "books": ("Best-selling books", [
        ("Top genres by sales", "echarts_timeseries_bar", (GOLD, "sales_by_genre"), "genre", SALES,
         12),
        ("Sales by original language", "pie", (GOLD, "sales_by_language"), "original_language",
         SALES, 100),
        ("Top books by sales", "table", (MARTS, "fact_books"), "book_title", SALES, 10),
        ("Rows quarantined per rule", "table", (GOLD, "quality_by_rule"), "rule",
         metric("SUM(rows_failed)", "rows failed"), 100),
    ]),
    "user_activity": ("User activity", [
        ("Page views per minute", "echarts_timeseries_line", (ACTIVITY, "page_view_counts"),
         "window_start", metric("SUM(page_views)", "page views"), 10000),
        ("Active users (5-minute windows, every minute)", "echarts_timeseries_line",
         (ACTIVITY, "active_users"), "window_start", metric("MAX(active_users)", "active users"),
         10000),
        ("Sessions by length", "echarts_timeseries_bar", (ACTIVITY, "user_sessions"),
         SESSION_LENGTH, metric("COUNT(*)", "sessions"), 100),
        ("Most viewed pages", "table", (ACTIVITY, "page_view_counts"), "page",
         metric("SUM(page_views)", "page views"), 10),
    ]),
    "ecommerce": ("E-commerce", [
        ("Events by type", "echarts_timeseries_bar", (SHOP, "events_hourly"), "event_type",
         metric("SUM(events)", "events"), 10),
        ("Revenue by product (top 15)", "echarts_timeseries_bar", (SHOP, "revenue_hourly"),
         "product_id", metric("SUM(revenue)", "revenue"), 15),
        ("Events by device", "echarts_timeseries_bar", (SHOP, "events_hourly"), "device",
         metric("SUM(events)", "events"), 10),
        ("Events per hour", "echarts_timeseries_line", (SHOP, "events_hourly"), HOUR,
         metric("SUM(events)", "events"), 1000),
        ("Quality score per run (%)", "echarts_timeseries_line", (SHOP, "quality_scores"),
         "checked_at", metric("MIN(score)", "score %"), 1000),
    ]),
    "orders": ("Orders", [
        ("Orders by status", "echarts_timeseries_bar", (ORDERS, "order_status"), "status",
         metric("COUNT(*)", "orders"), 10),
        ("Minutes from created to delivered", "echarts_timeseries_bar", (ORDERS, "order_status"),
         DELIVERY_MINUTES, metric("COUNT(*)", "orders"), 20),
        ("Quarantined records by rule", "echarts_timeseries_bar",
         (ORDERS, "quarantined_by_rule"), "rule", metric("SUM(records)", "records"), 10),
    ]),
}
# Charts with an x axis (a time or a category) rather than groups.
X_AXIS = {"echarts_timeseries_line", "echarts_timeseries_bar"}


def chart_body(name, viz, dataset_id, column, measure, rows):
    params = {
        "datasource": f"{dataset_id}__table",
        "viz_type": viz,
        "metric": measure,
        "metrics": [measure],
        "row_limit": rows,
        "adhoc_filters": [],
        "show_legend": True,
    }
    if viz in X_AXIS:
        axis = column if isinstance(column, dict) else {
            "expressionType": "SQL", "sqlExpression": column, "label": column}
        # Bars of named categories: the largest first, `rows` of them. Time lines and bucket
        # bars: in the axis's order.
        by_metric = viz == "echarts_timeseries_bar" and isinstance(column, str)
        params.update({"x_axis": column, "groupby": [], "time_grain_sqla": None,
                       "markerEnabled": True, "markerSize": 6,
                       "x_axis_sort": measure["label"] if by_metric else axis["label"],
                       "x_axis_sort_asc": not by_metric, "truncate_metric": True})
        columns = [{**axis, "columnType": "BASE_AXIS"}]
        # Superset orders by a column name or a metric, not by an SQL expression: bucket
        # axes are left to the chart's own x-axis sort.
        orderby = ([[measure, False]] if by_metric
                   else [] if isinstance(column, dict) else [[column, True]])
    else:
        params.update({"groupby": [column], "sort_by_metric": True, "order_desc": True,
                       "query_mode": "aggregate", "show_labels": True})
        columns = [column]
        orderby = [[measure, False]]
    query = {
        "datasource": {"id": dataset_id, "type": "table"},
        "force": False,
        "queries": [{
            "columns": columns,
            "metrics": [measure],
            "orderby": orderby,
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


def create(api, database, slug):
    """Re-creates dashboard `slug` and its charts; returns its id and {chart name: id}."""
    title, charts = DASHBOARDS[slug]
    old = api.find("dashboard", "slug", slug)
    if old:
        api.call("DELETE", f"/api/v1/dashboard/{old['id']}")
    for name, *_ in charts:
        while (chart := api.find("chart", "slice_name", name)) is not None:
            api.call("DELETE", f"/api/v1/chart/{chart['id']}")
    made = []
    for name, viz, (schema, table), column, measure, rows in charts:
        dataset = api.find("dataset", "table_name", table, schema=schema)
        dataset_id = dataset["id"] if dataset else api.call(
            "POST", "/api/v1/dataset/",
            {"database": database["id"], "schema": schema, "table_name": table})["id"]
        chart_id = api.call("POST", "/api/v1/chart/",
                            chart_body(name, viz, dataset_id, column, measure, rows))["id"]
        uuid = api.call("GET", f"/api/v1/chart/{chart_id}")["result"].get("uuid")
        made.append((name, {"id": chart_id, "uuid": uuid}))
    dashboard = api.call("POST", "/api/v1/dashboard/", {
        "dashboard_title": title, "slug": slug, "published": True,
        "position_json": json.dumps(layout(made))})["id"]
    for _, chart in made:
        api.call("PUT", f"/api/v1/chart/{chart['id']}", {"dashboards": [dashboard]})
    return dashboard, {n: c["id"] for n, c in made}


def main():
    api = Api(sys.argv[1])
    slugs = sys.argv[2:] or ["books"]
    unknown = [s for s in slugs if s not in DASHBOARDS]
    if unknown:
        sys.exit(f"no dashboard {unknown}: there are {sorted(DASHBOARDS)}")
    database = api.find("database", "database_name", "books")
    if database is None:
        sys.exit("no database `books` in Superset: run `superset set-database-uri -d books` first")
    out = {"dashboards": {}, "charts": {}}
    for slug in slugs:
        out["dashboards"][slug], charts = create(api, database, slug)
        out["charts"].update(charts)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
