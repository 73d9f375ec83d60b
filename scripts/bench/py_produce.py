"""The seed pipelines' producer: pandas rows -> json.dumps -> confluent-kafka produce."""
import json
import sys
import time

import pandas as pd
from confluent_kafka import Producer

brokers, topic, path = sys.argv[1:4]
started = time.time()
df = pd.read_csv(path)
producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "acks": "all",
                     "linger.ms": 5})
counts = {"delivered": 0, "failed": 0}


def on_delivery(err, _msg):
    counts["failed" if err else "delivered"] += 1


for _, row in df.iterrows():
    value = json.dumps(row.to_dict()).encode()
    while True:
        try:
            producer.produce(topic, value, callback=on_delivery)
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)
producer.flush()
print(json.dumps({"records": counts["delivered"], "failed": counts["failed"],
                  "seconds": time.time() - started}))
