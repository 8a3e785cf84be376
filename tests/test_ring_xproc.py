"""The ring between real processes: a producer process and a consumer process exchange a
reproducible stream; the consumer checks every record's order, length and bytes, and the
CRC32C over all of them must equal the producer's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ring_worker

from nanomq import Ring

WORKER = Path(__file__).with_name("ring_worker.py")
TIMEOUT = 150


def start_worker(function: str, *args: Any) -> subprocess.Popen[str]:
    """A fresh interpreter running ring_worker.<function>(*args); it prints the result as JSON."""
    cmd = [sys.executable, str(WORKER), function, json.dumps(args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"{proc.args[2]} exited with {proc.returncode}:\n{err}"
    return json.loads(out)


def run_pair(
    name: str, capacity: int, wait: str, producer: tuple[str, list[Any]], consumer: tuple[str, list[Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create the ring, run the producer and consumer processes on it, return their reports."""
    with Ring.create(name, capacity, wait=wait):  # the creator holds neither role
        procs = [start_worker(consumer[0], name, *consumer[1]), start_worker(producer[0], name, *producer[1])]
        try:
            got = report(procs[0])
            made = report(procs[1])
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        return made, got


def test_a_million_records_of_random_sizes_cross_processes_intact(ring_name: str) -> None:
    count = 1_000_000
    made, got = run_pair(
        ring_name, 1 << 20, "futex", ("produce", [0, count, 11]), ("consume", [0, count, 12])
    )
    assert got["error"] is None, got["error"]
    assert got["count"] == made["count"] == count
    assert got["crc"] == made["crc"]
    assert got["after"] == "RingClosedError"  # the producer closed; nothing more came


def test_blocking_put_and_get_with_futex_waits_cross_processes_intact(ring_name: str) -> None:
    """A 4 KiB ring and no spinning: the producer sleeps whenever the ring is full and the
    consumer whenever it is empty, so every record depends on a futex wake-up."""
    count = 20_000
    args = [count, "futex", 0.0]
    made, got = run_pair(ring_name, 4096, "futex", ("put_each", args), ("get_each", args))
    assert got["error"] is None, got["error"]
    assert got["count"] == made["count"] == count
    assert got["crc"] == made["crc"]
    assert got["after"] == "RingClosedError"


@pytest.mark.parametrize("wait", ["spin", "yield"])
def test_other_wait_strategies_cross_processes_intact(ring_name: str, wait: str) -> None:
    count = 5_000
    args = [count, wait, 5.0]
    made, got = run_pair(ring_name, 4096, wait, ("put_each", args), ("get_each", args))
    assert got["error"] is None, got["error"]
    assert got["count"] == made["count"] == count
    assert got["crc"] == made["crc"]
    assert got["after"] == "RingClosedError"


INTRUDER = """
import sys
from nanomq import Ring, RingBusyError
with Ring.attach(sys.argv[1]) as ring:
    try:
        ring.push(b"intruder")
        print("pushed")
    except RingBusyError as exc:
        print(f"RingBusyError: {exc}")
"""


def test_a_second_producer_process_is_refused_while_the_first_is_alive(ring_name: str) -> None:
    with Ring.create(ring_name, 4096) as ring:
        ring.push(b"first")
        child = subprocess.run(
            [sys.executable, "-c", INTRUDER, ring_name], capture_output=True, text=True, timeout=TIMEOUT
        )
        assert child.returncode == 0, child.stderr
        assert child.stdout.startswith("RingBusyError") and f"pid {os.getpid()}" in child.stdout
        assert ring.pop_batch() == [b"first"]


@pytest.mark.parametrize("damage", ["lost", "duplicated", "torn", "reordered"])
def test_the_stream_check_reports_a_damaged_stream(ring_name: str, damage: str) -> None:
    """The checks above can fail: the consumer's report names the first bad record."""
    records = [ring_worker.payload(seq) for seq in range(100)]
    if damage == "lost":
        del records[50]
    elif damage == "duplicated":
        records.insert(50, records[49])
    elif damage == "torn":
        records[50] = records[50][:-1] + bytes([records[50][-1] ^ 1])
    else:
        records[50], records[51] = records[51], records[50]
    with Ring.create(ring_name, 1 << 16, unlink_on_close=False) as ring:
        assert ring.push_batch(records) == len(records)
    got = ring_worker.consume(ring_name, 0, 100, seed=1)
    assert got["error"] is not None and got["error"].startswith("record 50:")
