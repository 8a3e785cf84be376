"""The pub/sub example with asyncio: `await` to publish, `async for` to consume.

python examples/asyncio_pubsub.py [HOST:PORT]      (default $NANOMQ_ADDRESS, else 127.0.0.1:9000)
"""

import asyncio
import os
import sys

from nanomq import Admin
from nanomq.aio import Publisher, Subscriber

address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("NANOMQ_ADDRESS", "127.0.0.1:9000")
topic = "examples.asyncio"


async def main() -> None:
    async with Publisher(address, acks=1) as pub:
        first = await pub.publish(topic, b"hello from asyncio")
        futures = [pub.publish_async(topic, f"message {i}".encode()) for i in range(1, 10)]
        offsets = await asyncio.gather(*futures)
        await pub.publish_batch(topic, [b"batch a", b"batch b"])
        print(f"published 12 messages, offsets {first}..{offsets[-1] + 2}")

    async with Subscriber(address, topic, start=first) as sub:
        n = 0
        async for msg in sub:
            print(f"{msg.topic}[{msg.partition}]@{msg.offset} {msg.value!r}")
            n += 1
            if n == 12:
                break


with Admin(address) as admin:
    admin.create_topic(topic, partitions=1, exist_ok=True)
asyncio.run(main())
