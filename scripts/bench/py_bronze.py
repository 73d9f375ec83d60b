"""The seed pipelines' bronze: confluent-kafka consumer -> batches of 1,200 -> pyarrow Parquet."""
import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition

brokers, topic, out_dir, group = sys.argv[1:5]
os.makedirs(out_dir, exist_ok=True)
started = time.time()
consumer = Consumer({"bootstrap.servers": brokers, "group.id": group,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
metadata = consumer.list_topics(topic, timeout=10)
partitions = list(metadata.topics[topic].partitions)
total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions)
consumer.subscribe([topic])
seen, batch, files, nbytes = 0, [], 0, 0


def flush():
    global batch, files
    table = pa.table({
        "key": [m.key() for m in batch], "value": [m.value() for m in batch],
        "topic": [m.topic() for m in batch], "partition": [m.partition() for m in batch],
        "offset": [m.offset() for m in batch], "timestamp": [m.timestamp()[1] for m in batch]})
    pq.write_table(table, os.path.join(out_dir, f"part-{files:06d}.parquet"))
    consumer.commit(asynchronous=False)
    files += 1
    batch = []


while seen < total:
    msg = consumer.poll(1.0)
    if msg is None or msg.error():
        continue
    batch.append(msg)
    seen += 1
    nbytes += len(msg.value() or b"")
    if len(batch) >= 1200:
        flush()
if batch:
    flush()
consumer.close()
print(json.dumps({"records": seen, "bytes": nbytes, "files": files,
                  "seconds": time.time() - started}))
