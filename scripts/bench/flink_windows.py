"""The windows of pipelines/user_activity.toml in Apache Flink SQL (PyFlink's local
mini-cluster), the way a Flink user writes them: the events as JSON, a 2-minute
watermark, the TUMBLE, HOP and SESSION window table functions, exact COUNT(DISTINCT), the
three queries in one job at parallelism 2 into JSON files. Flink's late rows are dropped
silently. Prints JSON: rows written per query, and the CPU time and peak RSS of the Python
driver and the JVM together.

    python flink_windows.py INPUT_DIR OUTPUT_DIR
"""
import glob
import json
import os
import sys

from pyflink.java_gateway import get_gateway
from pyflink.table import EnvironmentSettings, TableEnvironment

source, out = sys.argv[1], sys.argv[2]
env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
config = env.get_config()
config.set("parallelism.default", "2")
config.set("table.local-time-zone", "UTC")
env.execute_sql(f"""
    CREATE TABLE events (
        event_id STRING, user_id STRING, session_id STRING, event_type STRING, page STRING,
        referrer STRING, device STRING, event_time TIMESTAMP_LTZ(3),
        WATERMARK FOR event_time AS event_time - INTERVAL '2' MINUTE
    ) WITH ('connector' = 'filesystem', 'path' = '{source}', 'format' = 'json',
            'json.timestamp-format.standard' = 'ISO-8601')""")
sinks = {
    "page_view_counts": "window_start TIMESTAMP(3), window_end TIMESTAMP(3), page STRING, "
                        "page_views BIGINT",
    "active_users": "window_start TIMESTAMP(3), window_end TIMESTAMP(3), active_users BIGINT, "
                    "events BIGINT",
    "user_sessions": "window_start TIMESTAMP(3), window_end TIMESTAMP(3), user_id STRING, "
                     "events BIGINT, pages BIGINT, duration_seconds BIGINT",
}
for name, columns in sinks.items():
    env.execute_sql(f"CREATE TABLE {name}_out ({columns}) WITH ('connector' = 'filesystem', "
                    f"'path' = '{out}/{name}', 'format' = 'json')")
statements = env.create_statement_set()
statements.add_insert_sql("""
    INSERT INTO page_view_counts_out
    SELECT window_start, window_end, page, COUNT(*)
    FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
    WHERE event_type = 'page_view'
    GROUP BY window_start, window_end, page""")
statements.add_insert_sql("""
    INSERT INTO active_users_out
    SELECT window_start, window_end, COUNT(DISTINCT user_id), COUNT(*)
    FROM TABLE(HOP(TABLE events, DESCRIPTOR(event_time), INTERVAL '1' MINUTE, INTERVAL '5' MINUTE))
    GROUP BY window_start, window_end""")
statements.add_insert_sql("""
    INSERT INTO user_sessions_out
    SELECT window_start, window_end, user_id, COUNT(*), COUNT(DISTINCT page),
           TIMESTAMPDIFF(SECOND, MIN(event_time), MAX(event_time))
    FROM TABLE(SESSION(TABLE events PARTITION BY user_id, DESCRIPTOR(event_time),
                       INTERVAL '30' MINUTE))
    GROUP BY window_start, window_end, user_id""")
statements.execute().wait()


def peak_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def lines(name):
    return sum(sum(1 for _ in open(f)) for f in glob.glob(f"{out}/{name}/**/*", recursive=True)
               if os.path.isfile(f) and not os.path.basename(f).startswith("."))


jvm = get_gateway().jvm.java.lang.ProcessHandle.current()
jvm_cpu_s = jvm.info().totalCpuDuration().get().toMillis() / 1000
driver = os.times()
print(json.dumps({"rows": {name: lines(name) for name in sinks},
                  "cpu_s": round(driver.user + driver.system + jvm_cpu_s, 2),
                  "peak_rss_kb": peak_kb(os.getpid()) + peak_kb(jvm.pid())}))
