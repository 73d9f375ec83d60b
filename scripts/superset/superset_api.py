"""A small client for Superset's REST API (standard library only): log in once, call, find."""
import json
import urllib.error
import urllib.parse
import urllib.request


class Api:
    def __init__(self, base, username="admin", password="admin"):
        self.base = base.rstrip("/")
        self.token = None
        self.token = self.call("POST", "/api/v1/security/login", {
            "username": username, "password": password, "provider": "db", "refresh": False,
        })["access_token"]

    def call(self, method, path, body=None):
        headers = {"Referer": self.base}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            # Only with a body: Flask refuses a GET that claims JSON and sends none.
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            raise SystemExit(f"{method} {path}: HTTP {e.code}: {e.read().decode()[:500]}")
        return json.loads(text) if text else None

    def find(self, kind, column, value, schema=None):
        """The first `kind` (chart, dataset, ...) whose `column` equals `value`, or None."""
        filters = [f"(col:{column},opr:eq,value:'{value}')"]
        if schema is not None:
            filters.append(f"(col:schema,opr:eq,value:'{schema}')")
        q = urllib.parse.quote(f"(filters:!({','.join(filters)}),page_size:100)")
        rows = self.call("GET", f"/api/v1/{kind}/?q={q}")["result"]
        return rows[0] if rows else None
