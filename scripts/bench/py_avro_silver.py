"""The customer events' Avro records decoded the way the original Python consumer did:
confluent-kafka's AvroDeserializer (writer schema from the registry, cached) on each value,
then pyarrow builds the nested table and writes it as Parquet. Reads the same bronze Delta
table lakectl's silver reads.

    python py_avro_silver.py BRONZE_TABLE OUT.parquet REGISTRY_URL TOPIC
"""
import json
import sys
import time

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

bronze, out, registry, topic = sys.argv[1:5]
started = time.time()
values = deltalake.DeltaTable(bronze).to_pyarrow_table(columns=["value"]).column("value")
deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry}))
ctx = SerializationContext(topic, MessageField.VALUE)
rows, bad = [], 0
for value in values.to_pylist():
    try:
        rows.append(deserialize(value, ctx))
    except Exception:  # an unframed or undecodable record: skipped, as the original did
        bad += 1
table = pa.Table.from_pylist(rows)
pq.write_table(table, out)
print(json.dumps({"rows": table.num_rows, "bad": bad, "seconds": time.time() - started}))
