"""A consumer group: members share a topic's partitions; each message goes to one member.

python examples/consumer_groups.py [HOST:PORT] [MEMBERS]    (default $NANOMQ_ADDRESS, else 127.0.0.1:9000; 3)

Publishes 1200 keyed messages to a 6-partition topic, then runs MEMBERS subscribers in one
group (one thread each). They split the partitions, process and commit, and together see
every message. Committed offsets are stored by the broker: a member that joins the group
later starts where the group left off.
"""

import os
import sys
import threading
import uuid
from collections import Counter

from nanomq import Admin, CommitFailedError, Publisher, Subscriber

address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("NANOMQ_ADDRESS", "127.0.0.1:9000")
members = int(sys.argv[2]) if len(sys.argv) > 2 else 3
topic = "examples.orders"
group = f"billing-{uuid.uuid4().hex[:6]}"  # a fresh group, so this run reads from the start
total = 1200

with Admin(address) as admin:
    admin.create_topic(topic, partitions=6, exist_ok=True)
    before = sum(o.end_offset - o.first_offset for o in admin.offsets(topic))

with Publisher(address, acks=1) as pub:
    for i in range(total):
        pub.publish_async(topic, f"order {i}".encode(), key=f"customer-{i % 40}".encode())
    assert pub.flush(timeout=30) == 0
expected = before + total

seen: Counter[str] = Counter()  # messages each member processed and committed
done_ids: set[tuple[int, int]] = set()  # (partition, offset) of every message processed
lock = threading.Lock()
done = threading.Event()


def member(name: str) -> None:
    with Subscriber(address, topic, group=group, start="earliest", client_id=name) as sub:
        while not done.is_set():
            msgs = sub.poll_batch(max_messages=100, timeout=0.2)
            if msgs:
                # process, then commit: a member that dies before committing has its
                # messages redelivered to the next owner (at-least-once)
                try:
                    sub.commit()
                except CommitFailedError:
                    # A rebalance (another member joined or left) moved partitions away
                    # before this commit: their next owner reads those messages again.
                    continue
                with lock:
                    seen[name] += len(msgs)
                    done_ids.update((m.partition, m.offset) for m in msgs)
                    if len(done_ids) >= expected:
                        done.set()


threads = [threading.Thread(target=member, args=(f"member-{i}",)) for i in range(members)]
for t in threads:
    t.start()
if not done.wait(timeout=60):
    done.set()
    sys.exit(f"only {len(done_ids)} of {expected} messages arrived")
for t in threads:
    t.join()
print(f"group {group}: {len(done_ids)} messages across {members} members")
for name in sorted(seen):
    print(f"  {name}: {seen[name]}")
