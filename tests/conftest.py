"""Fixtures shared by the test modules: unique ring names whose files are removed afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SHM_PREFIX = "/dev/shm/nanomq."


@pytest.fixture
def new_ring_name() -> Iterator[Callable[[], str]]:
    """A factory of unique ring names; every /dev/shm/nanomq.<name> it handed out is
    unlinked at teardown (a test that dies before close() leaves nothing behind)."""
    names: list[str] = []

    def make() -> str:
        name = f"pytest-{os.getpid()}-{uuid.uuid4().hex[:16]}"
        names.append(name)
        return name

    yield make
    for name in names:
        try:
            os.unlink(SHM_PREFIX + name)
        except FileNotFoundError:
            pass


@pytest.fixture
def ring_name(new_ring_name: Callable[[], str]) -> str:
    """One unique ring name, unlinked at teardown."""
    return new_ring_name()


# ------------------------------------------------------------ the broker ----


@pytest.fixture
def broker(tmp_path: os.PathLike[str]) -> Iterator[object]:
    """A real `nanomq broker` subprocess on an ephemeral 127.0.0.1 port with a temporary data
    dir (`.address` is "127.0.0.1:PORT", `.data_dir`, `.pid`); stopped with SIGTERM at teardown.
    For other options, build `tests.broker_util.BrokerProcess(data_dir, *args)` directly."""
    from broker_util import BrokerProcess  # tests/broker_util.py (tests/ is on sys.path)

    proc = BrokerProcess(os.path.join(tmp_path, "nanomq-data"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def nmq(tmp_path: os.PathLike[str]) -> Iterator[object]:
    """A broker that auto-creates topics with 1 partition, for the client tests
    (`test_client.BrokerProcess`: `.address`, `.restart()`, `.signal()`); killed at teardown."""
    from test_client import BrokerProcess  # tests/ is on sys.path

    b = BrokerProcess(Path(tmp_path) / "data", "--auto-create-topics", "--default-partitions", "1")
    b.start()
    try:
        yield b
    finally:
        b.kill()
