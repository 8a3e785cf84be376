"""Property tests: the log against a list model under appends, reads, reopens and retention."""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from nanomq.log import Log
from nanomq.log.log import MIN_SEGMENT_BYTES
from nanomq.record import encode_batch

SEG = MIN_SEGMENT_BYTES
values = st.one_of(st.binary(max_size=64), st.binary(min_size=2000, max_size=20000))
keys = st.one_of(st.none(), st.binary(max_size=16))


class LogModel(RuleBasedStateMachine):
    """The model is a list of (value, key) per offset and the log's first offset."""

    @initialize()
    def start(self) -> None:
        self.tmp = tempfile.mkdtemp(
            prefix="nanomq-logp-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
        )
        self.path = os.path.join(self.tmp, "log")
        self.model: list[tuple[bytes, bytes | None]] = []
        self.first = 0
        self.log = Log.open(self.path, segment_bytes=SEG, fsync="never")

    def teardown(self) -> None:
        if hasattr(self, "log"):
            self.log.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(value=values, key=keys)
    def append(self, value: bytes, key: bytes | None) -> None:
        assert self.log.append(value, key=key) == len(self.model)
        self.model.append((value, key))

    @rule(batch=st.lists(st.tuples(values, keys), max_size=20))
    def append_batch(self, batch: list[tuple[bytes, bytes | None]]) -> None:
        first = self.log.append_batch([v for v, _ in batch], keys=[k for _, k in batch])
        assert first == len(self.model)
        self.model.extend(batch)

    @rule(batch=st.lists(values, min_size=1, max_size=20))
    def append_encoded(self, batch: list[bytes]) -> None:
        first, nxt = self.log.append_encoded(encode_batch(batch))
        assert (first, nxt) == (len(self.model), len(self.model) + len(batch))
        self.model.extend((v, None) for v in batch)

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = Log.open(self.path, segment_bytes=SEG, fsync="never")
        assert self.log.recovery is not None and not self.log.recovery.truncated

    @rule(limit=st.integers(min_value=0, max_value=4 * SEG))
    def retention(self, limit: int) -> None:
        self.log.retention_bytes = limit
        deleted = self.log.apply_retention()
        self.log.retention_bytes = None
        first = self.log.first_offset
        assert first >= self.first and (deleted > 0) == (first > self.first)
        assert self.log.size_bytes <= max(limit, 0) or self.log.segment_count == 1
        self.first = first

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def read_from(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(min_value=self.first, max_value=len(self.model)))
        limit = data.draw(st.one_of(st.none(), st.integers(min_value=1, max_value=30)))
        got = [(r.offset, r.value, r.key) for r in self.log.read(start, max_records=limit)]
        end = len(self.model) if limit is None else min(len(self.model), start + limit)
        assert got == [(o, *self.model[o]) for o in range(start, end)]

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def read_encoded(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(min_value=self.first, max_value=len(self.model)))
        chunk = self.log.read_encoded(start, data.draw(st.integers(min_value=1, max_value=50000)))
        if start == len(self.model):
            assert chunk == b""
        else:
            assert chunk[:8] == start.to_bytes(8, "little")

    @invariant()
    def offsets_agree(self) -> None:
        if hasattr(self, "log"):
            assert self.log.next_offset == len(self.model)
            assert self.log.first_offset == self.first


TestLogModel = LogModel.TestCase
TestLogModel.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
