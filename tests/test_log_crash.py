"""SIGKILL a log writer at random instants: every acknowledged record survives, in order.

A writer subprocess (tests/log_worker.py) appends with fsync="always" to a log with small
segments (so it rolls often) and reports each acknowledged offset over a pipe. The test
kills it after a random number of acknowledgements, reopens the log in this process and
checks it, then starts the next writer on the same log. NANOMQ_SOAK=1 runs 500 kills.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from log_worker import value

from nanomq.crc32c import crc32c
from nanomq.log import Log
from nanomq.log.log import MIN_SEGMENT_BYTES

KILLS = 500 if os.environ.get("NANOMQ_SOAK") == "1" else 50
WORKER = Path(__file__).with_name("log_worker.py")


def test_sigkill_at_random_instants_loses_nothing_acknowledged(tmp_path: Path) -> None:
    d = tmp_path / "log"
    rng = random.Random(2026)
    acked = 0  # every offset below this was acknowledged by some writer
    rolls_seen = set()
    for kill in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(d), str(kill), str(MIN_SEGMENT_BYTES)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            ready = proc.stdout.readline().split()
            assert ready and ready[0] == b"ready", (ready, proc.stderr.read() if proc.stderr else b"")
            assert int(ready[1]) >= acked  # appending resumes after everything acknowledged
            for _ in range(rng.randint(0, 60)):
                line = proc.stdout.readline()
                assert line, proc.stderr.read() if proc.stderr else b""
                first, nxt = map(int, line.split())
                assert first >= acked or first == acked
                acked = max(acked, nxt)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            if proc.stderr:
                proc.stderr.close()
        with Log.open(d, segment_bytes=MIN_SEGMENT_BYTES, fsync="never") as log:
            assert log.next_offset >= acked, f"kill {kill}: acknowledged {acked}, recovered {log.next_offset}"
            expect = 0
            for rec in log.read(0):
                assert rec.offset == expect, f"kill {kill}: offset {rec.offset} where {expect} was due"
                assert rec.value == value(rec.offset)
                assert crc32c(bytes(rec.raw)[12 : rec.length]) == rec.crc
                expect += 1
            assert expect == log.next_offset
            assert log.recovery is not None and not log.recovery.damaged
            rolls_seen.add(log.segment_count)
            # records past the acknowledged ones were written before the kill: they are
            # valid and stay (the writer never reported them, which is allowed)
            acked = log.next_offset
    assert max(rolls_seen) > 3, "segments should have rolled during the test"
