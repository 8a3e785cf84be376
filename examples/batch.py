"""Publish in batches (one frame and one C encode call per batch) and read back in batches.

python examples/batch.py [HOST:PORT] [COUNT]      (default $NANOMQ_ADDRESS, else 127.0.0.1:9000; 100000)
"""

import os
import sys
import time

from nanomq import Admin, Publisher, Subscriber

address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("NANOMQ_ADDRESS", "127.0.0.1:9000")
count = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
topic = "examples.batch"
batch_size = 500

with Admin(address) as admin:
    admin.create_topic(topic, partitions=1, exist_ok=True)

payloads = [i.to_bytes(8, "little") * 8 for i in range(count)]  # 64-byte messages
t0 = time.perf_counter()
with Publisher(address, acks=1, max_in_flight=20_000) as pub:
    futures = [
        pub.publish_batch_async(topic, payloads[i : i + batch_size], partition=0)
        for i in range(0, count, batch_size)
    ]
    assert pub.flush(timeout=60) == 0
    first = futures[0].result()[0]
elapsed = time.perf_counter() - t0
print(f"published {count} messages in {count // batch_size} batches: {count / elapsed:,.0f} msg/s")

t0 = time.perf_counter()
received = 0
with Subscriber(address, topic, start=first) as sub:
    while received < count:
        msgs = sub.poll_batch(max_messages=1024, timeout=10)
        if not msgs:
            sys.exit(f"timed out after {received} messages")
        for msg in msgs:
            if int.from_bytes(msg.value[:8], "little") != received:
                sys.exit(f"message {received} out of order at offset {msg.offset}")
            received += 1
elapsed = time.perf_counter() - t0
print(f"received {received} messages in order: {received / elapsed:,.0f} msg/s")
