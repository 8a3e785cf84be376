"""SIGKILL on either side of the ring, at random points.

What the survivor must see: every record it reads is whole and in sequence (a clean prefix of
the stream, never a torn record), then PeerDeadError within a bounded time instead of a hang —
whether the dead process is still a zombie or already reaped. A new producer may then take
the role over and the consumer reads on.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ring_worker import (
    consume_one_then_hang,
    describe_mismatch,
    payload,
    produce,
    produce_then_hang,
    produce_until_killed,
)

from nanomq import PeerDeadError, Ring

KILLS = 60
DETECT_WITHIN = 2.0  # seconds from the last record to PeerDeadError (checks run every 2 ms)


def fork_child(fn: Callable[..., Any], *args: Any) -> int:
    """Run fn(*args) in a forked child that exits with os._exit and never returns into pytest."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn(*args)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def wait_ready(read_fd: int) -> None:
    try:
        assert os.read(read_fd, 1) == b"r", "the child died before it was ready"
    finally:
        os.close(read_fd)


def start(fn: Callable[..., Any], name: str, *args: Any) -> int:
    """Fork a child running fn(name, *args, ready_fd) and return once it wrote to ready_fd."""
    read_fd, write_fd = os.pipe()
    pid = fork_child(fn, name, *args, write_fd)
    os.close(write_fd)
    wait_ready(read_fd)
    return pid


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def make_dead(pid: int, how: str) -> None:
    """SIGKILL pid and leave it a zombie ("zombie"), reap it ("reaped"), or neither ("racing":
    the survivor may look while the kernel is still tearing the process down)."""
    os.kill(pid, signal.SIGKILL)
    if how == "zombie":
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        assert process_state(pid) == "Z"
    elif how == "reaped":
        os.waitpid(pid, 0)


def cleanup(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class Checker:
    """Checks records against the stream as they come: record n must be payload(n)."""

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq

    def __call__(self, records: Iterator[bytes] | list[bytes]) -> None:
        for rec in records:
            assert rec == payload(self.seq), describe_mismatch(self.seq, rec)
            self.seq += 1

    def drain_until_dead(self, ring: Ring, pid: int) -> float:
        """get() until PeerDeadError names `pid`; returns how long that last get() took."""
        while True:
            started = time.monotonic()
            try:
                rec = ring.get(timeout=10)
            except PeerDeadError as exc:
                assert f"producer (pid {pid}) died" in str(exc)
                return time.monotonic() - started
            self([rec])


def test_killed_producer_leaves_a_clean_prefix_then_the_consumer_gets_peer_dead_error(
    new_ring_name: Callable[[], str],
) -> None:
    rng = random.Random(20240229)
    read_per_kill = []
    for i in range(KILLS):
        how = ("zombie", "reaped", "racing")[i % 3]
        wait = ("futex", "yield", "spin")[i // 3 % 3]
        name = new_ring_name()
        with Ring.create(name, 1 << 16, wait=wait, spin_us=20) as ring:
            pid = start(produce_until_killed, name, 0, i)
            try:
                check = Checker()
                kill_at = time.monotonic() + rng.uniform(0, 0.02)
                while time.monotonic() < kill_at:  # read while the producer writes
                    check(ring.pop_batch(rng.randint(1, 256)))
                make_dead(pid, how)
                took = check.drain_until_dead(ring, pid)
                assert took < DETECT_WITHIN, f"kill {i} ({how}, {wait}): PeerDeadError after {took:.2f} s"
                stats = ring.stats()
                assert (stats.producer, stats.producer_pid, stats.count) == ("dead", pid, 0)
                with pytest.raises(PeerDeadError):
                    ring.get(timeout=1)  # and it stays so
            finally:
                cleanup(pid)
        read_per_kill.append(check.seq)
    assert min(read_per_kill) >= 1  # every child was killed mid-stream, after it had started
    assert len(set(read_per_kill)) > KILLS // 2  # at many different points of the stream


@pytest.mark.parametrize("how", ["zombie", "reaped"])
@pytest.mark.parametrize("wait", ["futex", "yield", "spin"])
def test_consumer_blocked_in_get_gets_peer_dead_error_when_the_producer_is_killed(
    ring_name: str, wait: str, how: str
) -> None:
    with Ring.create(ring_name, 4096, wait=wait, spin_us=20) as ring:
        pid = start(produce_then_hang, ring_name, 10)
        killer = threading.Timer(0.1, make_dead, (pid, how))
        try:
            check = Checker()
            killer.start()
            started = time.monotonic()
            check.drain_until_dead(ring, pid)
            elapsed = time.monotonic() - started
            assert check.seq == 10
            assert 0.09 <= elapsed < 0.1 + DETECT_WITHIN  # it was blocked until the kill
        finally:
            killer.join()
            cleanup(pid)


@pytest.mark.parametrize("how", ["zombie", "reaped"])
@pytest.mark.parametrize("wait", ["futex", "yield", "spin"])
def test_producer_blocked_in_put_on_a_full_ring_gets_peer_dead_error_when_the_consumer_is_killed(
    ring_name: str, wait: str, how: str
) -> None:
    with Ring.create(ring_name, 4096, wait=wait, spin_us=20) as ring:
        ring.push(b"hello")
        pid = start(consume_one_then_hang, ring_name)
        while ring.push(b"x" * 100):
            pass
        killer = threading.Timer(0.1, make_dead, (pid, how))
        try:
            killer.start()
            started = time.monotonic()
            with pytest.raises(PeerDeadError, match=rf"consumer \(pid {pid}\) died"):
                ring.put(b"x" * 100, timeout=30)
            elapsed = time.monotonic() - started
            assert 0.09 <= elapsed < 0.1 + DETECT_WITHIN
            assert ring.stats().consumer == "dead"
        finally:
            killer.join()
            cleanup(pid)


def _produce_range(name: str, start: int, count: int, ready_fd: int) -> None:
    produce(name, start, count, seed=start, ready_fd=ready_fd)


def test_a_new_producer_takes_over_after_the_old_one_died_and_the_consumer_reads_on(ring_name: str) -> None:
    rng = random.Random(5)
    with Ring.create(ring_name, 1 << 16, wait="futex", spin_us=20) as ring:
        check = Checker()
        pids = []
        for how in ("zombie", "reaped"):  # two producers killed in turn, each resuming the stream
            pid = start(produce_until_killed, ring_name, check.seq, len(pids))
            pids.append(pid)
            try:
                kill_at = time.monotonic() + rng.uniform(0.002, 0.01)
                while time.monotonic() < kill_at:
                    check(ring.pop_batch())
                make_dead(pid, how)
                check.drain_until_dead(ring, pid)
                assert ring.stats().producer_pid == pid
            finally:
                cleanup(pid)
        resume_at = check.seq
        # Until a new producer claims the role the ring reports the dead one: wait for the claim.
        with pytest.raises(PeerDeadError):
            ring.get(timeout=1)
        pid = start(_produce_range, ring_name, resume_at, 5000)
        try:
            check(iter(ring))  # iteration ends when the third producer closes
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        finally:
            cleanup(pid)
        assert check.seq == resume_at + 5000
        stats = ring.stats()
        assert (stats.producer, stats.producer_pid, stats.count) == ("closed", pid, 0)
