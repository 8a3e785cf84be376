"""The writer of the log crash test (tests/test_log_crash.py), run as a subprocess:

    python tests/log_worker.py DIRECTORY SEED SEGMENT_BYTES

Opens the log with fsync="always", prints "ready <next_offset>", then appends forever —
single records, batches and pre-encoded batches, chosen at random — and after each call
returns prints "<first> <next>": those records are acknowledged (durable). The test kills
it with SIGKILL at a random instant.

Record `offset` carries value(offset): its size and bytes are a pure function of the
offset, so the test can check every record it reads back.
"""

from __future__ import annotations

import random
import sys

from nanomq.log import Log
from nanomq.record import encode_batch


def value(offset: int) -> bytes:
    size = (offset * 7919) % 3001
    seed = f"[{offset}]".encode()
    return (seed * (size // len(seed) + 1))[:size]


def main() -> None:
    directory, seed, segment_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    out = sys.stdout
    with Log.open(directory, segment_bytes=segment_bytes, fsync="always") as log:
        out.write(f"ready {log.next_offset}\n")
        out.flush()
        while True:
            nxt = log.next_offset
            kind = rng.random()
            if kind < 0.5:
                first = log.append(value(nxt), key=b"k" if nxt % 3 == 0 else None)
                last = first + 1
            elif kind < 0.8:
                n = rng.randint(1, 16)
                first = log.append_batch([value(nxt + i) for i in range(n)])
                last = first + n
            else:
                n = rng.randint(1, 16)
                first, last = log.append_encoded(encode_batch([value(nxt + i) for i in range(n)]))
            assert first == nxt, (first, nxt)
            out.write(f"{first} {last}\n")
            out.flush()


if __name__ == "__main__":
    main()
