"""Protocol fuzz against a real broker: random and mutated frames from many connections.

Frames are valid requests, valid requests with bit flips, truncated frames, frames whose length
field is 0 / the limit / the limit + 1 / 2**32 - 1, unknown opcodes and wrong versions, and pure
random bytes — ≥ 100 k of them (NANOMQ_FUZZ_FRAMES) over thousands of connections from several
threads. Throughout, a well-behaved client publishes and reads back; at the end the broker is
alive, its RSS grew by less than 10 MiB after warm-up, and its file descriptors are back to
where they were.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from broker_util import BrokerProcess, RawClient

from nanomq import protocol as P
from nanomq import record

FRAMES = int(os.environ.get("NANOMQ_FUZZ_FRAMES", "100000"))
THREADS = 4
PER_CONNECTION = 40
TOPICS = ["f0", "f1", "f2"]
GROUPS = ["g0", "g1"]
MAX_FRAME = 1 << 20


def valid_frames(rnd: random.Random) -> list[Callable[[int], bytes]]:
    t = rnd.choice(TOPICS)
    g = rnd.choice(GROUPS)
    n = rnd.randint(1, 5)
    batch = record.encode_batch([rnd.randbytes(rnd.randint(0, 200)) for _ in range(n)])
    return [
        lambda c: P.encode_ping(c),
        lambda c: P.encode_publish(c, t, rnd.randint(-1, 3), rnd.choice((0, 1)), batch),
        lambda c: P.encode_publish(c, t, -1, 1, batch, key=rnd.randbytes(4)),
        lambda c: P.encode_fetch(c, t, rnd.randint(0, 2), rnd.randint(0, 50), rnd.randint(0, 1 << 20), 0),
        lambda c: P.encode_subscribe(
            c, t, rnd.randint(0, 2), rnd.choice((-3, -2, -1, 0, 5)), rnd.randint(0, 5000)
        ),
        lambda c: P.encode_credit(c, rnd.randint(0, 50), rnd.randint(0, 1 << 20)),
        lambda c: P.encode_unsubscribe(c, rnd.randint(0, 50)),
        lambda c: P.encode_join(c, g, t, "", rnd.randint(500, 20_000), rnd.randint(0, 1)),
        lambda c: P.encode_heartbeat(c, g, "m", rnd.randint(0, 3)),
        lambda c: P.encode_leave(c, g, "m"),
        lambda c: P.encode_commit(c, g, t, {rnd.randint(0, 3): rnd.randint(0, 20)}),
        lambda c: P.encode_offsets(c, t, g),
        lambda c: P.encode_time_offset(c, t, 0, rnd.randint(0, 2**62)),
        lambda c: P.encode_describe_topic(c, t),
        lambda c: P.encode_list_topics(c),
        lambda c: P.encode_list_groups(c),
        lambda c: P.encode_describe_group(c, g),
        lambda c: P.encode_stats(c),
    ]


def mutate(rnd: random.Random, frame: bytes) -> bytes:
    kind = rnd.randrange(9)
    data = bytearray(frame)
    if kind == 0:  # bit flips anywhere
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(len(data))
            data[i] ^= 1 << rnd.randrange(8)
    elif kind == 1:  # bit flips in the body only: the header stays valid, the body does not
        if len(data) > 16:
            for _ in range(rnd.randint(1, 3)):
                i = rnd.randrange(16, len(data))
                data[i] ^= 1 << rnd.randrange(8)
    elif kind == 2:  # truncated: the length says more than follows (the connection then ends)
        return bytes(data[: rnd.randrange(1, len(data))])
    elif kind == 3:  # special lengths
        length = rnd.choice((0, MAX_FRAME - 16, MAX_FRAME - 15, 2**32 - 1, 2**31, 1))
        struct.pack_into("<I", data, 12, length)
        if length == MAX_FRAME - 16:
            data += bytes(max(0, 16 + length - len(data)))  # a whole maximal frame
    elif kind == 4:  # wrong opcode
        data[3] = rnd.choice((0, 0x02, 0x03, 0x07, 0x11, 0x21, 0x24, 0x31, 0x35, 0x57, 0x7F, 0xFF))
    elif kind == 5:  # wrong version
        data[2] = rnd.choice((0, 2, 255))
    elif kind == 6:  # pure random bytes
        return rnd.randbytes(rnd.randint(1, 64))
    elif kind == 7:  # body replaced by random bytes of the same length
        data[16:] = rnd.randbytes(len(data) - 16)
    else:  # reserved header bits
        data[4 + rnd.randrange(4)] |= 1 << rnd.randrange(8)
    return bytes(data)


def fuzz_connection(address: tuple[str, int], rnd: random.Random) -> int:
    """One connection: HELLO (usually), a burst of frames, then a PING; returns frames sent."""
    frames: list[bytes] = []
    if rnd.random() < 0.97:
        frames.append(P.encode_hello(1, "fuzz"))
    # most mutations end the connection, so some connections mutate rarely to reach deep states
    rate = rnd.choice((0.01, 0.05, 0.3, 0.8))
    for i in range(PER_CONNECTION):
        build = rnd.choice(valid_frames(rnd))
        frame = build(i + 2)
        frames.append(mutate(rnd, frame) if rnd.random() < rate else frame)
    frames.append(P.encode_ping(999_999))
    payload = b"".join(frames)
    with socket.create_connection(address, timeout=30) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while s.recv(1 << 16):  # read every reply until the broker closes
                pass
        except OSError:
            pass  # reset by the broker after a fatal error: expected
    return len(frames)


def test_fuzzed_frames_never_hurt_the_broker(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", "--fsync", "never")
    address = (broker.host, broker.port)
    stop = threading.Event()
    good_errors: list[BaseException] = []
    good_rounds = [0]

    def good_client() -> None:
        try:
            with RawClient(broker.address, client_id="good") as c:
                while not stop.is_set():
                    value = f"v{good_rounds[0]}".encode()
                    ack = c.publish("good", [value], acks=P.Acks.LEADER)
                    assert ack is not None
                    r = c.fetch("good", 0, ack.base_offset)
                    assert record.decode_batch(bytes(r.records))[0].value == value
                    good_rounds[0] += 1
        except BaseException as exc:
            good_errors.append(exc)

    sent = [0] * THREADS

    def fuzzer(k: int, quota: int) -> None:
        rnd = random.Random(1000 + k)
        while sent[k] < quota:
            sent[k] += fuzz_connection(address, rnd)

    try:
        with RawClient(broker.address) as admin:
            for t in TOPICS:
                admin.create_topic(t, 3)
            admin.create_topic("good", 1)
        warm = [threading.Thread(target=fuzzer, args=(k, FRAMES // 20 // THREADS)) for k in range(THREADS)]
        for t in warm:
            t.start()
        for t in warm:
            t.join()
        settle(broker)
        rss0, fds0 = broker.rss_bytes(), broker.fd_count()
        good = threading.Thread(target=good_client)
        good.start()
        workers = [threading.Thread(target=fuzzer, args=(k, FRAMES // THREADS)) for k in range(THREADS)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        good.join()
        assert not good_errors, good_errors
        assert good_rounds[0] > 0
        assert sum(sent) >= FRAMES
        assert broker.alive()
        settle(broker)
        rss1 = broker.rss_bytes()
        # a commit of a closed connection may still be writing its file: a leak is what stays
        deadline = time.monotonic() + 10
        while (fds1 := broker.fd_count()) > fds0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rss1 - rss0 < 10 << 20, f"RSS grew by {(rss1 - rss0) / 2**20:.1f} MiB"
        assert fds1 <= fds0, f"fds {fds0} -> {fds1}: {fd_targets(broker)}"
        with RawClient(broker.address) as c:
            c.ping()
            stats = P.parse_info(c.request(P.encode_stats))
            assert stats["connections"] == 1
            print(f"fuzz: {sum(sent)} frames, {stats['protocol_errors']} invalid-frame closes,", end=" ")
            print(f"RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB, fds {fds0} -> {fds1}")
    finally:
        broker.stop()
    assert broker.proc is not None and broker.proc.returncode == 0


def settle(broker: BrokerProcess) -> None:
    """Wait until the broker has processed every close (STATS says only our connection is open)."""
    deadline = time.monotonic() + 30
    with RawClient(broker.address) as c:
        while time.monotonic() < deadline:
            if P.parse_info(c.request(P.encode_stats))["connections"] == 1:
                return
            time.sleep(0.05)  # closes are noticed by the broker's loop; nothing to wait on here
    raise AssertionError("connections never closed on the broker side")


def fd_targets(broker: BrokerProcess) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{broker.pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{broker.pid}/fd/{fd}"))
        except OSError:
            pass
    return sorted(out)
