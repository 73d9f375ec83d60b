"""The user-activity windows computed by Apache Flink (PyFlink's local mini-cluster), as a
second oracle and a peer for lakectl's windows.

    python flink_windows.py EVENTS.ndjson WATERMARK_SECONDS OUT.json

EVENTS.ndjson holds the events in the order they arrived (one Kafka partition). The source
table's watermark is `event_time - WATERMARK_SECONDS`, emitted after every row
(`pipeline.auto-watermark-interval` = 0): each row meets the watermark the rows before it
made, as in lakectl. Flink's window table functions drop a row from the windows that fired
before it arrived and count it in the others. At the end of the input Flink fires every
window left. Writes, per window query, each window with its count and the ids of the events it
counted:

    {"page_view_counts": [[start_us, end_us, page, n, [ids]], ...],
     "active_users": [[start_us, end_us, distinct users, n, [ids]], ...],
     "user_sessions": [[user, start_us, end_us, n, [ids]], ...]}
"""
import json
import sys
from datetime import datetime, timezone

from pyflink.table import EnvironmentSettings, TableEnvironment


def micros(t):
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1_000_000 + 0.5) // 1000 * 1000


def main():
    events, watermark_s, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = env.get_config()
    config.set("parallelism.default", "1")
    config.set("pipeline.auto-watermark-interval", "0")
    config.set("table.local-time-zone", "UTC")
    env.execute_sql(f"""
        CREATE TABLE events (
            event_id STRING,
            user_id STRING,
            event_type STRING,
            page STRING,
            event_time TIMESTAMP_LTZ(3),
            WATERMARK FOR event_time AS event_time - INTERVAL '{watermark_s}' SECOND
        ) WITH (
            'connector' = 'filesystem',
            'path' = '{events}',
            'format' = 'json',
            'json.timestamp-format.standard' = 'ISO-8601'
        )""")
    env.execute_sql("CREATE TEMPORARY VIEW page_views AS "
                    "SELECT * FROM events WHERE event_type = 'page_view'")
    queries = {
        "page_view_counts": """
            SELECT window_start, window_end, page, COUNT(*), LISTAGG(event_id)
            FROM TABLE(TUMBLE(TABLE page_views, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
            GROUP BY window_start, window_end, page""",
        "active_users": """
            SELECT window_start, window_end, COUNT(DISTINCT user_id), COUNT(*), LISTAGG(event_id)
            FROM TABLE(HOP(TABLE events, DESCRIPTOR(event_time), INTERVAL '1' MINUTE,
                           INTERVAL '5' MINUTE))
            GROUP BY window_start, window_end""",
        "user_sessions": """
            SELECT user_id, window_start, window_end, COUNT(*), LISTAGG(event_id)
            FROM TABLE(SESSION(TABLE events PARTITION BY user_id, DESCRIPTOR(event_time),
                               INTERVAL '30' MINUTE))
            GROUP BY user_id, window_start, window_end""",
    }
    result = {}
    for name, sql in queries.items():
        rows = []
        with env.execute_sql(sql).collect() as results:
            for r in results:
                values = list(r)
                ids = values[-1].split(",") if values[-1] else []
                if name == "user_sessions":
                    rows.append([values[0], micros(values[1]), micros(values[2]), values[3], ids])
                else:
                    rows.append([micros(values[0]), micros(values[1])] + values[2:-1] + [ids])
        result[name] = rows
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
