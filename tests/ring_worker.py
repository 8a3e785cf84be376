"""Helpers for the ring tests: a reproducible record stream, the process bodies that produce
and consume it, and a second mapping of a ring's file to read or corrupt its bytes.

Run as a script, it is one side of a cross-process test:
    python tests/ring_worker.py FUNCTION JSON_ARGS   (prints the function's result as JSON)

Record `seq` of the stream is a pure function of `seq` (its size and its bytes), so any
process can recompute what it must receive: a lost, duplicated, reordered or torn record
shows up as the first record that differs from `payload(seq)`.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import struct
import sys
import time
from typing import Any

from nanomq import Ring, crc32c

# ------------------------------------------------------------------ the stream ----

_BLOB = random.Random(0x5EED).randbytes(1 << 17)
_SIZES = random.Random(0x512E).randbytes(1 << 16)
LARGE_EVERY = 1009  # every 1009th record is 1000..3999 bytes; the others 0..200


def size_of(seq: int) -> int:
    """Payload length of record `seq`: mostly 0..200 bytes, some up to 4 KiB."""
    if seq % LARGE_EVERY == LARGE_EVERY - 1:
        return 1000 + seq % 3000
    return _SIZES[seq & 0xFFFF] * 200 // 255


def payload(seq: int) -> bytes:
    """The bytes of record `seq`: its sequence number (4 bytes, when it fits), then filler."""
    n = size_of(seq)
    off = (seq * 40503) & 0xFFFF
    if n < 4:
        return _BLOB[off : off + n]
    return (seq & 0xFFFFFFFF).to_bytes(4, "little") + _BLOB[off : off + n - 4]


def describe_mismatch(seq: int, got: bytes | memoryview) -> str:
    """Why `got` is not record `seq`, naming the sequence number it carries if any."""
    got = bytes(got)
    want = payload(seq)
    carried = int.from_bytes(got[:4], "little") if len(got) >= 4 else None
    return (
        f"record {seq}: expected {len(want)} bytes, got {len(got)} bytes "
        f"(carrying sequence number {carried}); first bytes {got[:16].hex()} vs {want[:16].hex()}"
    )


# --------------------------------------------------------- producer processes ----


def produce(
    name: str,
    start: int,
    count: int,
    seed: int,
    wait: str = "futex",
    spin_us: float = 20.0,
    ready_fd: int | None = None,
) -> dict[str, Any]:
    """Push records start..start+count-1 with a random mix of calls, blocking when full; close.

    Writes one byte to `ready_fd` (if given) once it holds the producer role and the first
    records are published. Returns {"count", "crc"}: the running CRC32C over every payload
    pushed, in order.
    """
    rng = random.Random(seed)
    ring = Ring.attach(name, wait=wait, spin_us=spin_us)
    crc = 0
    seq, end = start, start + count
    while seq < end:
        mode = rng.random()
        if mode < 0.55:  # push_batch of up to 300 (crosses the 256-per-C-call boundary)
            recs = [payload(s) for s in range(seq, min(end, seq + rng.randint(1, 300)))]
            done = 0
            while done < len(recs):
                n = ring.push_batch(recs[done:])
                done += n
                if done < len(recs) and n == 0:
                    ring.put(recs[done], timeout=60)  # full: wait for room
                    done += 1
        elif mode < 0.75:  # push_batch_buffer
            recs = [payload(s) for s in range(seq, min(end, seq + rng.randint(1, 256)))]
            lens = [len(r) for r in recs]
            done = 0
            while done < len(recs):
                n = ring.push_batch_buffer(b"".join(recs[done:]), lens[done:])
                done += n
                if done < len(recs) and n == 0:
                    ring.put(recs[done], timeout=60)
                    done += 1
        elif mode < 0.9:  # single push, put when full
            recs = [payload(seq)]
            if not ring.push(recs[0]):
                ring.put(recs[0], timeout=60)
        else:  # zero-copy reserve/commit
            rec = payload(seq)
            recs = [rec]
            view = ring.reserve(len(rec) + rng.randint(0, 16))
            if view is None:
                ring.put(rec, timeout=60)
            else:
                view[: len(rec)] = rec
                ring.commit(len(rec))
        for rec in recs:
            crc = crc32c(rec, crc)
        seq += len(recs)
        if ready_fd is not None:
            os.write(ready_fd, b"r")
            os.close(ready_fd)
            ready_fd = None
    ring.close()
    return {"count": count, "crc": crc}


def produce_until_killed(name: str, start: int, seed: int, ready_fd: int) -> None:
    """Push the stream from record `start` on, forever (blocking when full); write one byte to
    `ready_fd` once the first record is published, so the parent knows the stream has started."""
    rng = random.Random(seed)
    ring = Ring.attach(name, spin_us=20)
    ring.put(payload(start), timeout=60)
    seq = start + 1
    os.write(ready_fd, b"r")
    os.close(ready_fd)
    while True:
        if rng.random() < 0.3:
            rec = payload(seq)
            if not ring.push(rec):
                ring.put(rec, timeout=60)
            seq += 1
            continue
        recs = [payload(s) for s in range(seq, seq + rng.randint(1, 256))]
        done = 0
        while done < len(recs):
            n = ring.push_batch(recs[done:])
            done += n
            if done < len(recs) and n == 0:
                ring.put(recs[done], timeout=60)
                done += 1
        seq += len(recs)


def produce_then_hang(name: str, count: int, ready_fd: int) -> None:
    """Push records 0..count-1, say so on `ready_fd`, then stay alive doing nothing."""
    ring = Ring.attach(name)
    for seq in range(count):
        ring.put(payload(seq), timeout=60)
    os.write(ready_fd, b"r")
    os.close(ready_fd)
    time.sleep(300)


def consume_one_then_hang(name: str, ready_fd: int) -> None:
    """Take the consumer role with one get(), say so on `ready_fd`, then stay alive doing nothing."""
    ring = Ring.attach(name)
    ring.get(timeout=60)
    os.write(ready_fd, b"r")
    os.close(ready_fd)
    time.sleep(300)


# --------------------------------------------------------- consumer processes ----


def consume(name: str, start: int, count: int, seed: int, wait: str = "futex", spin_us: float = 20.0) -> dict:
    """Read records start..start+count-1 with a random mix of calls and check each one.

    Returns {"count", "crc", "error", "after"}: how many matched in order, the CRC32C over
    them, the first mismatch (None if none), and what the ring said once all were read
    (the name of the exception get() raised: the producer closes after its last record).
    """
    rng = random.Random(seed)
    ring = Ring.attach(name, wait=wait, spin_us=spin_us)
    crc = 0
    seq, end = start, start + count
    while seq < end:
        mode = rng.random()
        if mode < 0.45:
            recs: Any = ring.pop_batch_buffer(rng.randint(1, 256))
        elif mode < 0.8:
            recs = ring.pop_batch(rng.randint(1, 256))
        elif mode < 0.9:
            rec = ring.pop()
            recs = [] if rec is None else [rec]
        else:
            view = ring.peek()
            if view is not None:
                if view != payload(seq):
                    return {"count": seq - start, "crc": crc, "error": describe_mismatch(seq, view)}
                crc = crc32c(view, crc)
                ring.release()
                seq += 1
            recs = []
        if not recs and mode < 0.9:
            recs = [ring.get(timeout=60)]
        for rec in recs:
            if rec != payload(seq):
                return {"count": seq - start, "crc": crc, "error": describe_mismatch(seq, rec)}
            crc = crc32c(rec, crc)
            seq += 1
    try:
        extra = ring.get(timeout=60)
        after = f"an extra record of {len(extra)} bytes"
    except Exception as exc:
        after = type(exc).__name__
    ring.close()
    return {"count": seq - start, "crc": crc, "error": None, "after": after}


def put_each(name: str, count: int, wait: str, spin_us: float) -> dict[str, Any]:
    """Blocking put() of records 0..count-1, one at a time; close. Returns {"count", "crc"}."""
    ring = Ring.attach(name, wait=wait, spin_us=spin_us)
    crc = 0
    for seq in range(count):
        rec = payload(seq)
        ring.put(rec, timeout=60)
        crc = crc32c(rec, crc)
    ring.close()
    return {"count": count, "crc": crc}


def get_each(name: str, count: int, wait: str, spin_us: float) -> dict[str, Any]:
    """Blocking get() of records 0..count-1, checking each; returns what consume() returns."""
    ring = Ring.attach(name, wait=wait, spin_us=spin_us)
    crc = 0
    for seq in range(count):
        rec = ring.get(timeout=60)
        if rec != payload(seq):
            return {"count": seq, "crc": crc, "error": describe_mismatch(seq, rec)}
        crc = crc32c(rec, crc)
    try:
        extra = ring.get(timeout=60)
        after = f"an extra record of {len(extra)} bytes"
    except Exception as exc:
        after = type(exc).__name__
    ring.close()
    return {"count": count, "crc": crc, "error": None, "after": after}


# ------------------------------------------------------------- raw region ----


class RawRegion:
    """A second mapping of a ring's file: the header fields and data bytes, read and written
    directly (offsets from csrc/ring.c's layout drawing)."""

    MAGIC, VERSION, HEADER_BYTES, CAPACITY, MAX_PAYLOAD = 0, 8, 12, 16, 24
    PRODUCER_PID, CONSUMER_PID = 128 + 16, 256 + 16
    HEAD, TAIL = 384, 512
    DATA = 4096

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self.mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.mm.close()

    def __enter__(self) -> RawRegion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def u32(self, offset: int) -> int:
        return struct.unpack_from("<I", self.mm, offset)[0]

    def u64(self, offset: int) -> int:
        return struct.unpack_from("<Q", self.mm, offset)[0]

    def set_u32(self, offset: int, value: int) -> None:
        struct.pack_into("<I", self.mm, offset, value)

    def set_u64(self, offset: int, value: int) -> None:
        struct.pack_into("<Q", self.mm, offset, value)

    @property
    def capacity(self) -> int:
        return self.u64(self.CAPACITY)

    @property
    def head(self) -> int:
        return self.u64(self.HEAD)

    @property
    def tail(self) -> int:
        return self.u64(self.TAIL)

    def record_offset(self, counter: int) -> int:
        """Offset in the mapping of the record header at byte counter `counter` (head/tail)."""
        return self.DATA + counter % self.capacity


if __name__ == "__main__":
    function = {"produce": produce, "consume": consume, "put_each": put_each, "get_each": get_each}[
        sys.argv[1]
    ]
    print(json.dumps(function(*json.loads(sys.argv[2]))))
