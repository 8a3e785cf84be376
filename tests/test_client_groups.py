"""Consumer groups with real member processes: 3 members over 6 partitions, 100 k messages, members
SIGKILLed at random points and replaced. Every message is processed at least once; a message is
processed again only if no commit had covered it (duplicates stay within the uncommitted window);
committed offsets survive a broker restart.

Each member is this file run as a script (`python test_client_groups.py member ADDRESS LOG`): it
polls, "processes" a batch by appending one line per message to its log (one write() per batch,
so a SIGKILL never tears a line), then commits and appends a commit line. Lines carry
CLOCK_MONOTONIC times, which all processes on the machine share.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

TOPIC = "jobs"
GROUP = "workers"
PARTITIONS = 6
COUNT = int(os.environ.get("NANOMQ_GROUP_TEST_MESSAGES", "100000"))


def member(address: str, log_path: str) -> None:
    """A group member that logs what it processed and what it committed, until killed."""
    from nanomq import NanoMQError, Subscriber

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    deadline = time.monotonic() + 240  # never outlive a crashed test run for long
    with Subscriber(address, TOPIC, group=GROUP, start="earliest", session_timeout_ms=3000) as sub:
        os.write(fd, b"J %d\n" % time.monotonic_ns())
        seen_assignment = None
        taken: dict[int, int] = {}  # partition → next offset, over the batches not yet committed
        batches = 0
        while time.monotonic() < deadline:
            asked = time.monotonic_ns()  # the messages were handed out at this time or later
            msgs = sub.poll_batch(max_messages=500, timeout=0.2)
            assignment = (sub.generation, sub.assignment)
            if assignment != seen_assignment:  # for reading a failure: which generation gave what
                seen_assignment = assignment
                os.write(
                    fd, b"A %d %d %s\n" % (time.monotonic_ns(), assignment[0], str(sub.position).encode())
                )
            if not msgs:
                if not taken:
                    continue
            else:
                os.write(fd, b"".join(b"P %d %d %d\n" % (asked, m.partition, m.offset) for m in msgs))
                for m in msgs:
                    taken[m.partition] = max(taken.get(m.partition, 0), m.offset + 1)
                batches += 1
                if batches % 2:  # commit every second batch: a wider uncommitted window to die in
                    continue
            try:
                sub.commit()
            except NanoMQError as exc:  # lost the partition in a rebalance: its next owner redoes it
                os.write(fd, b"F %d %s\n" % (time.monotonic_ns(), type(exc).__name__.encode()))
                taken.clear()
                continue
            done = time.monotonic_ns()
            os.write(fd, b"C %d %s\n" % (done, " ".join(f"{p}:{o}" for p, o in taken.items()).encode()))
            taken.clear()


def parse(log: Path) -> tuple[list[tuple[int, int, int]], list[tuple[int, dict[int, int]]]]:
    """(processed (time, partition, offset) list, commits (time, {partition: next offset}) list)."""
    processed, commits = [], []
    for line in log.read_bytes().splitlines():
        kind, *rest = line.split()
        if kind == b"P":
            processed.append((int(rest[0]), int(rest[1]), int(rest[2])))
        elif kind == b"C":
            commits.append((int(rest[0]), {int(p): int(o) for p, o in (x.split(b":") for x in rest[1:])}))
    return processed, commits


@pytest.mark.timeout(280)
def test_group_members_killed_at_random_lose_nothing(tmp_path: Path) -> None:
    from test_client import BrokerProcess

    from nanomq import Admin, Publisher

    seed = int(os.environ.get("NANOMQ_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"seed {seed}")
    broker = BrokerProcess(tmp_path / "data").start()
    members: list[subprocess.Popen[bytes]] = []
    try:
        with Admin(broker.address) as admin:
            admin.create_topic(TOPIC, PARTITIONS)
        per = COUNT // PARTITIONS
        with Publisher(broker.address, acks=1, max_in_flight=50_000) as pub:
            for p in range(PARTITIONS):
                n = per + (1 if p < COUNT % PARTITIONS else 0)
                for i in range(0, n, 2000):
                    pub.publish_batch_async(
                        TOPIC, [b"%d" % (i + j) for j in range(min(2000, n - i))], partition=p
                    )
            assert pub.flush(60) == 0
        with Admin(broker.address) as admin:
            ends = {o.partition: o.end_offset for o in admin.offsets(TOPIC)}
        assert sum(ends.values()) == COUNT

        logs: list[Path] = []

        def spawn() -> None:
            log = tmp_path / f"member-{len(logs)}.log"
            logs.append(log)
            with open(tmp_path / f"member-{len(logs) - 1}.err", "wb") as err:
                members.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "member", broker.address, str(log)], stderr=err
                    )
                )

        for _ in range(3):
            spawn()
        kill_at = sorted(rng.sample(range(COUNT // 10, COUNT * 8 // 10), 3))  # progress points for SIGKILLs
        kills = 0
        deadline = time.monotonic() + 200
        while True:
            assert time.monotonic() < deadline, f"no progress to the end (seed {seed})"
            for m in members:
                assert m.poll() in (None, -signal.SIGKILL), (tmp_path / "member-0.err").read_text()
            seen = sum(log.stat().st_size // 28 for log in logs if log.exists())  # ≈ lines: rough progress
            if kills < len(kill_at) and seen >= kill_at[kills]:
                live = [m for m, log in zip(members, logs, strict=True) if m.poll() is None and log.exists()]
                victim = rng.choice(live)  # a member that has joined (and so holds partitions)
                time.sleep(rng.random() * 0.05)  # a random instant, mid-batch or mid-commit
                victim.kill()
                victim.wait()
                kills += 1
                spawn()
            with Admin(broker.address) as admin:
                committed = {o.partition: o.committed for o in admin.offsets(TOPIC, GROUP)}
            if committed == ends and kills == len(kill_at):
                break
            time.sleep(0.2)
        for m in members:
            m.kill()
            m.wait()

        first_commit: dict[tuple[int, int], int] = {}  # message -> earliest time a commit covered it
        processed: dict[tuple[int, int], list[int]] = defaultdict(list)
        for log in logs:
            if not log.exists():  # a replacement killed (or ended) before it joined
                continue
            proc, commits = parse(log)
            pending: dict[int, list[int]] = defaultdict(list)  # this member's uncovered offsets per partition
            events = sorted([(t, 0, p, o) for t, p, o in proc] + [(t, 1, offs, 0) for t, offs in commits])
            for t, kind, a, b in events:
                if kind == 0:
                    processed[(a, b)].append(t)
                    pending[a].append(b)
                    continue
                for part, next_offset in a.items():  # a commit covers what this member took before it
                    keep = []
                    for o in pending[part]:
                        if o < next_offset:
                            first_commit[(part, o)] = min(first_commit.get((part, o), t), t)
                        else:
                            keep.append(o)
                    pending[part] = keep
        missing = [(p, o) for p in range(PARTITIONS) for o in range(ends[p]) if (p, o) not in processed]
        assert missing == [], f"{len(missing)} messages never processed, e.g. {missing[:5]} (seed {seed})"
        late = [k for k, ts in processed.items() if k in first_commit and max(ts) > first_commit[k]]
        assert late == [], f"{len(late)} messages processed again after a commit covered them (seed {seed})"
        duplicates = sum(len(ts) - 1 for ts in processed.values())
        print(f"{COUNT} messages, {kills} members killed, {duplicates} processed twice (uncommitted window)")

        broker.restart()  # committed offsets are durable
        with Admin(broker.address) as admin:
            assert {o.partition: o.committed for o in admin.offsets(TOPIC, GROUP)} == ends
    finally:
        for m in members:
            if m.poll() is None:
                m.kill()
                m.wait()
        broker.kill()


if __name__ == "__main__" and sys.argv[1:2] == ["member"]:
    member(sys.argv[2], sys.argv[3])
