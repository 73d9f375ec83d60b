"""The user-activity generator as such generators are usually written: Faker for ids and
names, random for choices, json.dumps per event, confluent-kafka with a delivery callback."""
import json
import random
import sys
import time
from datetime import datetime, timedelta, timezone

from confluent_kafka import Producer
from faker import Faker

brokers, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
fake = Faker()
Faker.seed(7)
random.seed(7)
started = time.time()
producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "acks": "all",
                     "linger.ms": 5, "partitioner": "murmur2_random"})
counts = {"delivered": 0, "failed": 0}


def on_delivery(err, _msg):
    counts["failed" if err else "delivered"] += 1


users = [f"u{i:06d}" for i in range(50_000)]
pages = ["/", "/products", "/search", "/cart", "/checkout"] + [f"/products/p{i:04d}" for i in range(300)]
event_types = ["page_view", "click", "scroll", "search", "add_to_cart", "login", "logout"]
weights = [62, 20, 8, 4, 4, 1, 1]
clock = datetime(2026, 1, 1, tzinfo=timezone.utc)
for i in range(count):
    clock += timedelta(milliseconds=10)
    user = random.choice(users)
    event = {
        "event_id": fake.uuid4(),
        "user_id": user,
        "session_id": fake.uuid4(),
        "event_type": random.choices(event_types, weights)[0],
        "page": random.choice(pages),
        "referrer": random.choice([None, "google.com", "facebook.com", "newsletter"]),
        "device": random.choice(["desktop", "mobile", "tablet"]),
        "event_time": clock.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    value = json.dumps(event).encode()
    while True:
        try:
            producer.produce(topic, value, key=user.encode(), callback=on_delivery)
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)
producer.flush()
print(json.dumps({"records": counts["delivered"], "failed": counts["failed"],
                  "seconds": time.time() - started}))
