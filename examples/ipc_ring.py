"""Two processes, one ring: the parent produces, a child process consumes.

python examples/ipc_ring.py [count]
"""

import multiprocessing as mp
import sys
import time
import uuid

from nanomq import Ring


def consume(name: str, ready: "mp.synchronize.Event") -> None:
    with Ring.attach(name) as ring:
        ready.set()
        total = count = 0
        for msg in ring:  # blocks; ends when the producer closes and the ring is drained
            count += 1
            total += int.from_bytes(msg[:8], "little")
        print(f"consumer: {count} messages, sum of sequence numbers {total}")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    name = f"example-{uuid.uuid4().hex[:8]}"
    with Ring.create(name, capacity=1 << 20) as ring:
        ready = mp.Event()
        child = mp.Process(target=consume, args=(name, ready))
        child.start()
        ready.wait()
        start = time.perf_counter()
        batch: list[bytes] = []
        for seq in range(count):
            batch.append(seq.to_bytes(8, "little") + b"payload")
            if len(batch) == 256:
                for msg in batch[ring.push_batch(batch) :]:
                    ring.put(msg)  # the rest, waiting for room
                batch.clear()
        for msg in batch:
            ring.put(msg)
        elapsed = time.perf_counter() - start
        print(f"producer: {count} messages in {elapsed:.3f} s ({count / elapsed / 1e6:.2f} M msg/s)")
    # leaving the block closed the producer side: the consumer's loop ends after draining
    child.join()
    assert child.exitcode == 0
    print(f"expected sum of sequence numbers {count * (count - 1) // 2}")


if __name__ == "__main__":
    main()
