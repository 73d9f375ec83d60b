"""Prints each chart's data as Superset serves it (GET /api/v1/chart/{id}/data/), as JSON:
{chart name: [rows]}.  python check.py http://127.0.0.1:PORT dashboard.json"""
import json
import sys

from superset_api import Api

api = Api(sys.argv[1])
charts = json.load(open(sys.argv[2]))["charts"]
out = {}
for name, chart_id in charts.items():
    result = api.call("GET", f"/api/v1/chart/{chart_id}/data/")["result"]
    out[name] = result[0]["data"]
print(json.dumps(out))
