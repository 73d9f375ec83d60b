"""The gold tables of pipelines/ecommerce.toml and pipelines/orders.toml, computed
independently of lakectl from what the generator wrote (its NDJSON file and truth file).

    python3 shop.py ecommerce EVENTS.ndjson TRUTH.ndjson
    python3 shop.py orders EVENTS.ndjson TRUTH.ndjson

Silver keeps every record but the corrupt ones and the re-sent duplicates the truth file
lists. Prints JSON (times in microseconds since the epoch, money as exact decimal strings):
- ecommerce: the clean event count, the revenue of all purchases, revenue per hour and
  product, and events per hour, type and device;
- orders: per order (the payload's order_id) its latest event type by event time, the first
  time it reached each step, its latest amount and its event count.
"""
import json
import sys
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def when(text):
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t, (t - EPOCH) // timedelta(microseconds=1)


def clean_events(events_path, truth_path):
    skipped = {json.loads(line)["seq"] for line in open(truth_path)
               if json.loads(line)["defect"] in ("corrupt", "duplicate")}
    for seq, line in enumerate(open(events_path)):
        if seq not in skipped:
            yield json.loads(line, parse_float=Decimal)


def ecommerce(events):
    clean, total = 0, Decimal(0)
    revenue = defaultdict(Decimal)
    counts = defaultdict(int)
    for e in events:
        clean += 1
        t, _ = when(e["event_time"])
        hour = (t.year, t.month, t.day, t.hour)
        counts[hour + (e["event_type"], e["device"])] += 1
        if e["event_type"] == "purchase":
            total += e["revenue"]
            revenue[hour + (e["product_id"],)] += e["revenue"]
    return {
        "clean": clean,
        "revenue_total": str(total),
        "revenue_hourly": sorted(list(k) + [str(v)] for k, v in revenue.items()),
        "events_hourly": sorted(list(k) + [v] for k, v in counts.items()),
    }


STEPS = {"order_created": 2, "payment_captured": 3, "shipped": 4, "delivered": 5, "cancelled": 6}


def orders(events):
    by_order = defaultdict(list)
    for e in events:
        payload = json.loads(e["payload"], parse_float=Decimal)
        by_order[payload["order_id"]].append((when(e["event_time"])[1], e["event_type"],
                                              payload["amount"]))
    rows = []
    for order_id, steps in by_order.items():
        steps.sort()
        row = [order_id, steps[-1][1], None, None, None, None, None,
               str(steps[-1][2].quantize(Decimal("0.01"))), len(steps)]
        for at, step, _ in steps:
            if row[STEPS[step]] is None:
                row[STEPS[step]] = at
        rows.append(row)
    return {"order_status": sorted(rows)}


if __name__ == "__main__":
    kind, events_path, truth_path = sys.argv[1:4]
    compute = {"ecommerce": ecommerce, "orders": orders}[kind]
    print(json.dumps(compute(clean_events(events_path, truth_path))))
