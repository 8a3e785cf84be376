"""acks=all survives SIGKILL: the broker is killed at random instants while clients publish.

Two client subprocesses publish numbered batches with acks=all, several in flight each, and
print every ack. The test SIGKILLs the broker after a random number of acks (≥ 20 rounds),
restarts it, and checks that every acknowledged message is present, at the acknowledged offset,
in order, exactly once — and that no message at all appears twice.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from broker_util import BrokerProcess, RawClient

ROUNDS = int(os.environ.get("NANOMQ_CRASH_ROUNDS", "20"))
UTIL = Path(__file__).with_name("broker_util.py")


def test_acked_messages_survive_sigkill_at_random_instants(tmp_path: Path) -> None:
    rnd = random.Random(int(os.environ.get("NANOMQ_CRASH_SEED", "4")))
    # --fsync never: the only syncs are the ones acks=all asks for; the strictest setting to test
    broker = BrokerProcess(tmp_path / "data", "--fsync", "never", "--segment-bytes", "300000")
    acked: list[tuple[int, int, int]] = []  # partition, base offset, count
    next_seq = {"a": 0, "b": 0}
    try:
        with RawClient(broker.address) as c:
            c.create_topic("crash", 3)
        for round_ in range(ROUNDS):
            pubs = {
                prefix: subprocess.Popen(
                    [
                        sys.executable,
                        str(UTIL),
                        "publish",
                        broker.address,
                        "crash",
                        prefix,
                        str(next_seq[prefix]),
                        "3",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for prefix in next_seq
            }
            kill_after = rnd.randint(1, 150)
            seen = 0
            # read acks until the chosen instant (alternating between the two publishers)
            while seen < kill_after:
                line = pubs["ab"[seen % 2]].stdout.readline()  # type: ignore[union-attr]
                if not line:
                    break
                seen += 1
                acked.append(parse_ack(line))
            broker.kill()
            for proc in pubs.values():
                assert proc.stdout is not None
                rest = proc.stdout.read()  # through the same buffer readline() used
                proc.stdout.close()
                proc.wait(timeout=60)
                acked.extend(parse_ack(line) for line in rest.splitlines())
            broker.start()
            check(broker, acked, next_seq, round_)
    finally:
        broker.stop()


def parse_ack(line: str) -> tuple[int, int, int]:
    word, p, base, n, _first = line.split()
    assert word == "ack", line
    return int(p), int(base), int(n)


def check(
    broker: BrokerProcess, acked: list[tuple[int, int, int]], next_seq: dict[str, int], round_: int
) -> None:
    with RawClient(broker.address) as c:
        logs = {p: c.fetch_all("crash", p) for p in range(3)}
    seen: set[bytes] = set()
    for p, records in logs.items():
        assert [r.offset for r in records] == list(range(len(records))), (
            f"round {round_}: gap in partition {p}"
        )
        for r in records:
            assert r.value not in seen, f"round {round_}: {r.value!r} appears twice"
            seen.add(r.value)
    for p, base, n in acked:
        values = [r.value for r in logs[p][base : base + n]]
        assert len(values) == n, f"round {round_}: acked {p}@{base}+{n} is missing"
        prefix, first = values[0].decode().rsplit("-", 1)
        assert values == [f"{prefix}-{int(first) + i}".encode() for i in range(n)], f"round {round_}: order"
    # new publishers continue past every number handed out so far
    for value in seen:
        prefix, num = value.decode().rsplit("-", 1)
        next_seq[prefix] = max(next_seq[prefix], int(num) + 1)
    for prefix in next_seq:
        next_seq[prefix] += 1000
