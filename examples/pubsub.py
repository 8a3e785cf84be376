"""Publish a few messages and read them back: the smallest NanoMQ program.

python examples/pubsub.py [HOST:PORT]      (default $NANOMQ_ADDRESS, else 127.0.0.1:9000)
Needs a running broker: nanomq broker --port 9000 --data-dir ./nanomq-data
"""

import os
import sys

from nanomq import Admin, Publisher, Subscriber

address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("NANOMQ_ADDRESS", "127.0.0.1:9000")
topic = "examples.pubsub"

with Admin(address) as admin:
    admin.create_topic(topic, partitions=1, exist_ok=True)

with Publisher(address, acks=1) as pub:
    first = pub.publish(topic, b"hello", key=b"greeting")  # returns the offset once the broker acked
    for i in range(1, 10):
        pub.publish_async(topic, f"message {i}".encode())  # a future; acks are read by the I/O thread
    left = pub.flush(timeout=10)  # waits for every ack; returns how many are still unacknowledged
    print(f"published 10 messages from offset {first} ({left} unacknowledged)")

with Subscriber(address, topic, start=first) as sub:
    for _ in range(10):
        msg = sub.poll(timeout=10)
        if msg is None:
            sys.exit("timed out waiting for a message")
        print(f"{msg.topic}[{msg.partition}]@{msg.offset} key={msg.key!r} value={msg.value!r}")
