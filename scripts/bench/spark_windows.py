"""The windows of pipelines/user_activity.toml in Spark Structured Streaming, the way a Spark
user writes them: the events as a stream of JSON files (one file a micro-batch), a 2-minute
watermark, `window()` and `session_window()`, append mode into Parquet, run to the end of
the input (Trigger.AvailableNow). Prints JSON: rows written per query, and the CPU time and
peak RSS of the Python driver and the JVM together.

    python spark_windows.py INPUT_DIR OUTPUT_DIR

Spark refuses exact distinct counts in streaming aggregations, so `active_users` and a
session's `pages` use approx_count_distinct (lakectl's are exact); its file sink has no
update mode, so `active_users` is written in append mode (lakectl's in update mode)."""
import json
import os
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

source, out = sys.argv[1], sys.argv[2]
spark = (SparkSession.builder.master("local[2]").appName("lakectl-bench-windows")
         .config("spark.sql.shuffle.partitions", "2")
         .config("spark.ui.enabled", "false")
         .config("spark.driver.memory", "2g")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
schema = T.StructType([T.StructField(name, T.StringType()) for name in (
    "event_id", "user_id", "session_id", "event_type", "page", "referrer", "device")]
    + [T.StructField("event_time", T.TimestampType())])
events = (spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).json(source)
          .withWatermark("event_time", "2 minutes"))

queries = {
    "page_view_counts": events.where("event_type = 'page_view'")
    .groupBy(F.window("event_time", "1 minute"), "page")
    .agg(F.count("*").alias("page_views")),
    "active_users": events.groupBy(F.window("event_time", "5 minutes", "1 minute"))
    .agg(F.approx_count_distinct("user_id").alias("active_users"), F.count("*").alias("events")),
    "user_sessions": events.groupBy(F.session_window("event_time", "30 minutes"), "user_id")
    .agg(F.count("*").alias("events"), F.approx_count_distinct("page").alias("pages"),
         (F.max("event_time").cast("double") - F.min("event_time").cast("double"))
         .alias("duration_seconds")),
}
running = [df.writeStream.format("parquet").outputMode("append")
           .option("path", f"{out}/{name}").option("checkpointLocation", f"{out}/_checkpoints/{name}")
           .trigger(availableNow=True).start() for name, df in queries.items()]
for query in running:
    query.awaitTermination()


def peak_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


jvm = spark.sparkContext._jvm.java.lang.ProcessHandle.current()
jvm_cpu_s = jvm.info().totalCpuDuration().get().toMillis() / 1000
rows = {name: spark.read.parquet(f"{out}/{name}").count() for name in queries}
driver = os.times()
print(json.dumps({"rows": rows, "cpu_s": round(driver.user + driver.system + jvm_cpu_s, 2),
                  "peak_rss_kb": peak_kb(os.getpid()) + peak_kb(jvm.pid())}))
spark.stop()
