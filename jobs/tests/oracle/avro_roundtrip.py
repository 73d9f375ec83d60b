"""Avro records written the way users' producers write them (confluent_kafka's
AvroSerializer through the schema registry), and the check that lakectl's silver table holds
what confluent_kafka's AvroDeserializer reads from the same topic, field for field.

    python3 avro_roundtrip.py produce BROKERS REGISTRY_URL TOPIC
    python3 avro_roundtrip.py check BROKERS REGISTRY_URL TOPIC SILVER_TABLE_URI

`produce` sends 300 records with schema v1 (nested record, arrays of strings and of records,
an enum, unions with null, timestamp-millis, int, long, float, double, boolean), then 200
with v2 (v1 plus an optional field `coupon`), then 5 with a schema registered under another
subject whose `user_id` is a string (records the table's schema cannot read).
`check` prints JSON: the records the deserializer read per writer schema, silver's row count
and columns, and the first mismatches.
"""
import json
import os
import random
import sys
from datetime import datetime, timezone

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

DEVICE = {"type": "record", "name": "Device", "fields": [
    {"name": "os", "type": "string"},
    {"name": "version", "type": ["null", "string"], "default": None}]}
REC = {"type": "record", "name": "Rec", "fields": [
    {"name": "media_id", "type": "string"}, {"name": "score", "type": "float"}]}
V1_FIELDS = [
    {"name": "event_id", "type": "string"},
    {"name": "user_id", "type": "long"},
    {"name": "seconds", "type": "int"},
    {"name": "score", "type": "double"},
    {"name": "premium", "type": "boolean"},
    {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["PLAY", "PAUSE", "SEEK"]}},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "title", "type": ["null", "string"], "default": None},
    {"name": "device", "type": DEVICE},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "recs", "type": {"type": "array", "items": REC}},
]


def schema(fields):
    return json.dumps({"type": "record", "name": "Play", "namespace": "test.lakectl",
                       "fields": fields})


V1 = schema(V1_FIELDS)
V2 = schema(V1_FIELDS + [{"name": "coupon", "type": ["null", "string"], "default": None}])
INCOMPATIBLE = schema([dict(f, type="string") if f["name"] == "user_id" else f
                       for f in V1_FIELDS])


def record(i, rng, version):
    r = {
        "event_id": f"e{i:05d}",
        "user_id": rng.randrange(1, 10**12),
        "seconds": rng.randrange(-1000, 100000),
        "score": rng.random() * 100,
        "premium": rng.random() < 0.3,
        "kind": rng.choice(["PLAY", "PAUSE", "SEEK"]),
        "at": datetime.fromtimestamp(1767225600 + i * 7, tz=timezone.utc).replace(
            microsecond=(i * 125 % 1000) * 1000),
        "title": None if i % 4 == 0 else rng.choice(["Dune", "Amélie", "千と千尋", ""]),
        "device": {"os": rng.choice(["iOS", "Android"]),
                   "version": None if i % 3 == 0 else f"{rng.randrange(10, 19)}.{i % 4}"},
        "tags": [rng.choice(["a", "b", "c"]) for _ in range(rng.randrange(0, 4))],
        "recs": [{"media_id": f"m{rng.randrange(100)}", "score": rng.random()}
                 for _ in range(rng.randrange(0, 3))],
    }
    if version == 2:
        r["coupon"] = None if i % 2 else f"C{i}"
    return r


def produce(brokers, registry_url, topic):
    client = SchemaRegistryClient({"url": registry_url})
    producer = Producer({"bootstrap.servers": brokers})
    ctx = SerializationContext(topic, MessageField.VALUE)
    rng = random.Random(7)
    other = {"subject.name.strategy": lambda ctx, name: "lakectl-test-other-value"}
    batches = [(AvroSerializer(client, V1), range(0, 300), 1),
               (AvroSerializer(client, V2), range(300, 500), 2),
               (AvroSerializer(client, INCOMPATIBLE, conf=other), range(500, 505), 1)]
    for serializer, ids, version in batches:
        for i in ids:
            value = record(i, rng, version)
            if serializer is batches[2][0]:
                value["user_id"] = str(value["user_id"])
            producer.produce(topic, key=f"e{i:05d}".encode(), value=serializer(value, ctx))
    assert producer.flush(30) == 0


def check(brokers, registry_url, topic, silver_uri):
    import deltalake
    client = SchemaRegistryClient({"url": registry_url})
    deserializer = AvroDeserializer(client)
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "avro-check",
                         "enable.auto.commit": False})
    ctx = SerializationContext(topic, MessageField.VALUE)
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    expected, by_schema, left = {}, {}, 0
    assignment = []
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        assignment.append(TopicPartition(topic, p, low))
        left += high - low
    consumer.assign(assignment)
    while left > 0:
        m = consumer.poll(10)
        if m is None or m.error():
            continue
        left -= 1
        value = m.value()
        if len(value) < 5 or value[0] != 0:
            by_schema["unframed"] = by_schema.get("unframed", 0) + 1
            continue
        schema_id = int.from_bytes(value[1:5], "big")
        try:
            decoded = deserializer(value, ctx)
        except Exception:
            by_schema["unreadable"] = by_schema.get("unreadable", 0) + 1
            continue
        subject_schema = client.get_schema(schema_id).schema_str
        kind = {V1: "v1", V2: "v2"}.get(subject_schema, "other")
        by_schema[kind] = by_schema.get(kind, 0) + 1
        if kind != "other":
            expected[decoded["event_id"]] = decoded
    consumer.close()
    opts = {k.lower(): os.environ[k] for k in (
        "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
        "AWS_ALLOW_HTTP") if k in os.environ}
    silver = deltalake.DeltaTable(silver_uri, storage_options=opts).to_pyarrow_table()
    columns = [c for c in silver.column_names if not c.startswith("_")]
    mismatches = []
    for row in silver.to_pylist():
        want = expected.get(row["event_id"])
        got = {c: row[c] for c in columns}
        if want is None or any(want.get(c) != got[c] for c in columns) or set(want) - set(got):
            mismatches.append({"event_id": row["event_id"], "want": want, "got": got})
    print(json.dumps({"read": by_schema, "expected_rows": len(expected), "rows": silver.num_rows,
                      "columns": columns, "mismatches": mismatches[:3]}, default=str))


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(*sys.argv[2:5])
    else:
        check(*sys.argv[2:6])
    sys.stdout.flush()
    os._exit(0)
