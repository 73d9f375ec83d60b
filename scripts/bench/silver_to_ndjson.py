"""Writes a silver user-activity table's rows in the order they were produced (Kafka
timestamp, then partition and offset) as FILES NDJSON files, numbered in that order: the
input of the Spark peer of `lakectl run window` (scripts/bench/spark_windows.py). Spark's
watermark is global, so it needs the partitions interleaved as they were sent; lakectl's is
per partition and does not. Prints the row count.

    python silver_to_ndjson.py TABLE_URI OUT_DIR FILES"""
import os
import sys

import polars as pl

COLUMNS = ["event_id", "user_id", "session_id", "event_type", "page", "referrer", "device",
           "event_time"]

table, out, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = pl.read_delta(table).sort(["_kafka_ts", "_partition", "_offset"]).select(COLUMNS)
os.makedirs(out, exist_ok=True)
size = -(-len(rows) // files)
for i in range(files):
    # Written one after another: Spark's file source takes files in modification-time order.
    rows.slice(i * size, size).write_ndjson(f"{out}/part-{i:04d}.json")
print(len(rows))
sys.stdout.flush()
os._exit(0)  # deltalake may abort interpreter teardown (known upstream bug)
