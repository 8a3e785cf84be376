"""Properties of the ring against a model: any sequence of calls leaves the same records,
in the same order, with the same fullness, as a deque that knows the ring's byte layout."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from nanomq import PayloadTooLargeError, Ring

HEADER = 8
ALIGN = 8


def total(length: int) -> int:
    """Bytes a record takes in the data area: its header plus the payload padded to 8."""
    return HEADER + (length + ALIGN - 1) // ALIGN * ALIGN


class RingModel:
    """What csrc/ring.c does, in bytes and records.

    Producer (make_room): a record that would cross the end of the data area needs a PAD
    to the end first. When the PAD and the record both fit, both go in. When they do not,
    but the PAD alone fits, the PAD goes in anyway and the push reports "full".

    Consumer: a call first gives back ("releases") what the previous call took; then it
    skips PADs and takes records. pop() and peek() keep their record held until the next
    consumer call (or release()); pop_batch()/pop_batch_buffer() release what they took,
    and the PADs skipped after it, before returning — but a call that took nothing keeps
    any PAD it skipped until the next call.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.max_payload = min(capacity - HEADER, 65536)
        self.head = 0  # bytes written by the producer
        self.released = 0  # bytes given back to the producer (the ring's tail)
        self.taken = 0  # bytes the consumer is past: records taken, PADs skipped
        self.entries: deque[tuple[str, int, bytes]] = deque()  # (kind, bytes, payload) not taken yet

    # ---- producer ----
    def _make_room(self, size: int) -> bool:
        pos = self.head % self.capacity
        to_end = self.capacity - pos
        crosses = to_end < size
        need = to_end + size if crosses else size
        if self.head + need - self.released > self.capacity:
            if crosses and self.head + to_end - self.released <= self.capacity:
                self._pad(to_end)
            return False
        if crosses:
            self._pad(to_end)
        return True

    def _pad(self, size: int) -> None:
        self.entries.append(("pad", size, b""))
        self.head += size

    def push(self, data: bytes) -> bool:
        if not self._make_room(total(len(data))):
            return False
        self.entries.append(("data", total(len(data)), data))
        self.head += total(len(data))
        return True

    def push_batch(self, records: list[bytes]) -> int:
        for i, data in enumerate(records):
            if not self.push(data):
                return i
        return len(records)

    def reserve_commit(self, size: int, data: bytes) -> bool:
        if not self._make_room(total(size)):
            return False
        self.entries.append(("data", total(len(data)), data))
        self.head += total(len(data))
        return True

    # ---- consumer ----
    def _enter(self) -> None:
        self.released = self.taken

    def _next(self) -> bytes | None:
        while self.entries and self.entries[0][0] == "pad":
            self.taken += self.entries.popleft()[1]
        return self.entries[0][2] if self.entries else None

    def _take(self) -> None:
        self.taken += self.entries.popleft()[1]

    def pop(self) -> bytes | None:
        self._enter()
        data = self._next()
        if data is not None:
            self._take()
        return data

    def peek_release(self) -> bytes | None:
        data = self.pop()
        if data is not None:
            self.released = self.taken
        return data

    def pop_batch(self, max_records: int) -> list[bytes]:
        self._enter()
        out: list[bytes] = []
        while len(out) < max_records:
            data = self._next()
            if data is None:
                break
            self._take()
            out.append(data)
        if out:
            self.released = self.taken
        return out

    # ---- state ----
    def __len__(self) -> int:
        return sum(1 for kind, _, _ in self.entries if kind == "data")

    @property
    def used_bytes(self) -> int:
        return self.head - self.released


sizes = st.one_of(st.integers(0, 16), st.integers(0, 300), st.integers(0, 8184))


class RingMachine(RuleBasedStateMachine):
    """Random calls on a small anonymous ring and on the model, compared after every step."""

    ring: Ring
    model: RingModel

    @initialize(capacity=st.sampled_from([4096, 8192]))
    def create(self, capacity: int) -> None:
        self.ring = Ring.create(None, capacity)
        self.model = RingModel(capacity)
        self.counter = 0

    def teardown(self) -> None:
        if hasattr(self, "ring"):
            self.ring.close()

    def record(self, size: int) -> bytes:
        """A payload of min(size, max_payload) bytes, unique to this step."""
        size = min(size, self.model.max_payload)
        self.counter += 1
        return (self.counter.to_bytes(4, "little") * (size // 4 + 1))[:size]

    # ---- producer rules ----
    @rule(size=sizes)
    def push(self, size: int) -> None:
        data = self.record(size)
        before = len(self.model)
        ok = self.ring.push(data)
        assert ok == self.model.push(data)
        if not ok:
            assert len(self.ring) == before

    @rule(size_list=st.lists(sizes, max_size=12))
    def push_batch(self, size_list: list[int]) -> None:
        records = [self.record(s) for s in size_list]
        assert self.ring.push_batch(records) == self.model.push_batch(records)

    @rule(count=st.integers(0, 300), size=st.integers(0, 24))
    def push_batch_many(self, count: int, size: int) -> None:
        records = [self.record(size) for _ in range(count)]
        assert self.ring.push_batch(records) == self.model.push_batch(records)

    @rule(size_list=st.lists(sizes, max_size=12))
    def push_batch_buffer(self, size_list: list[int]) -> None:
        records = [self.record(s) for s in size_list]
        pushed = self.ring.push_batch_buffer(b"".join(records), [len(r) for r in records])
        assert pushed == self.model.push_batch(records)

    @rule(size=sizes, keep=st.floats(0, 1))
    def reserve_commit(self, size: int, keep: float) -> None:
        size = min(size, self.model.max_payload)
        data = self.record(int(size * keep))
        view = self.ring.reserve(size)
        assert (view is not None) == self.model.reserve_commit(size, data)
        if view is not None:
            assert len(view) == size
            view[: len(data)] = data
            self.ring.commit(len(data))

    @rule(extra=st.integers(1, 70000))
    def push_too_large(self, extra: int) -> None:
        with pytest.raises(PayloadTooLargeError):
            self.ring.push(bytes(self.model.max_payload + extra))

    # ---- consumer rules ----
    @rule()
    def pop(self) -> None:
        assert self.ring.pop() == self.model.pop()

    @rule(max_records=st.integers(0, 256))
    def pop_batch(self, max_records: int) -> None:
        assert self.ring.pop_batch(max_records) == self.model.pop_batch(max_records)

    @rule(max_records=st.integers(0, 256))
    def pop_batch_buffer(self, max_records: int) -> None:
        batch = self.ring.pop_batch_buffer(max_records)
        assert batch.to_list() == self.model.pop_batch(max_records)

    @rule()
    def peek_release(self) -> None:
        view = self.ring.peek()
        want = self.model.peek_release()
        if view is None:
            assert want is None
        else:
            assert bytes(view) == want
            self.ring.release()

    @precondition(lambda self: len(self.model) == 0)
    @rule(size=sizes)
    def push_into_an_empty_ring(self, size: int) -> None:
        """Into an empty ring, a push succeeds unless the record fits neither before the end nor
        from 0 behind a PAD; then it leaves only that PAD, and succeeds once the consumer
        has skipped it."""
        data = self.record(size)
        ok = self.ring.push(data)
        assert ok == self.model.push(data)
        if not ok:
            assert self.ring.pop_batch() == self.model.pop_batch(256) == []
            self.ring.pop_batch(0)
            self.model.pop_batch(0)
            if self.model.used_bytes == 0:
                assert self.ring.push(data) and self.model.push(data)

    # ---- compared after every step ----
    @invariant()
    def same_count_and_bytes(self) -> None:
        if hasattr(self, "ring"):
            assert len(self.ring) == len(self.model)
            assert self.ring.stats().used_bytes == self.model.used_bytes
            assert 0 <= self.model.used_bytes <= self.model.capacity


RingMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None, database=None, print_blob=True
)
TestRingAgainstModel = RingMachine.TestCase


@settings(max_examples=150, deadline=None, database=None)
@given(
    capacity=st.sampled_from([4096, 8192]),
    position=st.integers(0, 1023),
    size=st.integers(0, 8184),
)
def test_push_into_a_drained_ring_needs_at_most_one_pad_skip(capacity: int, position: int, size: int) -> None:
    """With the head at any 8-aligned position of a drained ring, a payload of up to max_payload
    is accepted at once, or — when it fits neither before the end nor before the head — right
    after the consumer has skipped the PAD the first attempt left."""
    with Ring.create(None, capacity) as ring:
        size = min(size, ring.max_payload)
        pos = position * 8 % capacity
        if pos:
            assert ring.push(bytes(pos - HEADER))
            assert ring.pop_batch() == [bytes(pos - HEADER)]
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        to_end = capacity - pos
        fits_now = total(size) <= to_end or total(size) <= pos
        assert ring.push(data) is fits_now
        if not fits_now:
            assert len(ring) == 0
            assert ring.stats().used_bytes == to_end
            assert ring.pop_batch() == []
            ring.pop_batch(0)
            assert ring.push(data)
        assert ring.pop_batch() == [data]
