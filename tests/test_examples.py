"""Every broker example in examples/ runs against a real broker and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_client import BrokerProcess

pytestmark = pytest.mark.timeout(180)

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.fixture(scope="module")
def nmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = BrokerProcess(tmp_path_factory.mktemp("examples") / "data").start()
    yield b
    b.kill()


def run(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        timeout=150,
        env={**os.environ, **(env or {})},
    )
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_pubsub(nmq: BrokerProcess) -> None:
    out = run("pubsub.py", nmq.address).splitlines()
    assert out[0].startswith("published 10 messages from offset ") and out[0].endswith("(0 unacknowledged)")
    assert len(out) == 11
    assert out[1].endswith("key=b'greeting' value=b'hello'")
    assert out[10].endswith("value=b'message 9'")


def test_batch_reads_everything_back_in_order(nmq: BrokerProcess) -> None:
    out = run("batch.py", nmq.address, "20000")
    assert "published 20000 messages in 40 batches" in out
    assert "received 20000 messages in order" in out


def test_consumer_groups_share_the_partitions(nmq: BrokerProcess) -> None:
    out = run("consumer_groups.py", nmq.address, "3").splitlines()
    assert out[0].startswith("group billing-") and out[0].endswith("across 3 members")
    total = int(out[0].split(": ")[1].split()[0])
    assert total >= 1200
    counts = [int(line.rsplit(": ", 1)[1]) for line in out[1:]]
    assert sum(counts) >= total  # at least once: a rebalance may hand a few messages on twice


def test_asyncio_pubsub_takes_the_address_from_the_environment(nmq: BrokerProcess) -> None:
    out = run("asyncio_pubsub.py", env={"NANOMQ_ADDRESS": nmq.address}).splitlines()
    assert out[0].startswith("published 12 messages")
    assert len(out) == 13
    assert out[1].endswith("b'hello from asyncio'") and out[12].endswith("b'batch b'")
