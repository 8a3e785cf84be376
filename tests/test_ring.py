"""The shared-memory SPSC ring, one process: records, limits, misuse, roles, waiting, corruption."""

from __future__ import annotations

import os
import queue
import threading
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ring_worker import RawRegion, payload

from nanomq import (
    CorruptRecordError,
    PayloadTooLargeError,
    RegionError,
    Ring,
    RingBatch,
    RingBusyError,
    RingClosedError,
    RingEmptyError,
    RingFullError,
    RingStateError,
)

SMALL = 4096
MAX_CAPACITY = 1 << 34
TAG_PAD = 0x4441504E


def total(length: int) -> int:
    """Bytes a record of `length` payload bytes takes in the ring: 8-byte header, padded to 8."""
    return 8 + (length + 7) // 8 * 8


def drain(ring: Ring) -> list[bytes]:
    """Pop everything and give all of it (skipped PADs included) back to the producer."""
    out: list[bytes] = []
    while batch := ring.pop_batch():
        out.extend(batch)
    ring.pop_batch(0)  # a consumer call: releases a PAD the last one skipped
    assert ring.stats().used_bytes == 0
    return out


def move_head_to(ring: Ring, raw: RawRegion, target: int) -> None:
    """Bring an empty ring's head to data offset `target` with filler records (no PADs)."""
    cap = ring.capacity
    pos = raw.head % cap
    if pos == target:
        return
    if target < pos:  # a filler exactly to the end, then from 0
        assert ring.push(bytes(cap - pos - 8))
        drain(ring)
        pos = 0
    if target > pos:
        assert ring.push(bytes(target - pos - 8))
        drain(ring)
    assert raw.head % cap == target


class Worker(threading.Thread):
    """A thread whose exception or result comes back to the test through outcome()."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc

    def outcome(self, timeout: float = 60) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "worker thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def ring(ring_name: str) -> Ring:
    with Ring.create(ring_name, SMALL) as r:
        yield r


@pytest.fixture
def raw(ring: Ring) -> RawRegion:
    with RawRegion(ring.path) as region:
        yield region


# ------------------------------------------------------------- empty and full ----


def test_new_ring_is_empty_and_every_pop_form_returns_nothing(ring: Ring) -> None:
    assert len(ring) == 0
    assert ring.pop() is None
    assert ring.peek() is None
    assert ring.pop_batch() == []
    batch = ring.pop_batch_buffer()
    assert len(batch) == 0 and list(batch.offsets) == [0]
    assert ring.stats().used_bytes == 0


def test_push_returns_false_when_full_and_leaves_contents_unchanged(ring: Ring) -> None:
    records = [bytes([i]) * 64 for i in range(100)]
    pushed = 0
    while ring.push(records[pushed]):
        pushed += 1
    assert pushed == SMALL // total(64)
    for _ in range(3):
        assert ring.push(b"more") is False
    assert len(ring) == pushed
    assert drain(ring) == records[:pushed]


def test_space_of_popped_records_is_back_by_the_next_consumer_call(ring: Ring) -> None:
    while ring.push(b"r" * 64):
        pass
    assert ring.pop() == b"r" * 64
    ring.pop_batch(0)
    assert ring.push(b"n" * 64)


@pytest.mark.parametrize("residue", range(8))
def test_wrap_around_at_every_offset_modulo_8(ring: Ring, raw: RawRegion, residue: int) -> None:
    """Records of every length modulo 8, started 8..160 bytes before the end of the data area:
    those that fit end exactly there or earlier, the others leave a PAD and start again at 0."""
    cap = ring.capacity
    for to_end in range(8, 161, 8):
        for j in range(21):
            length = 8 * j + residue
            move_head_to(ring, raw, cap - to_end)
            data = os.urandom(length)
            assert ring.push(data)
            padded = total(length) > to_end
            assert ring.stats().used_bytes == total(length) + (to_end if padded else 0)
            assert raw.head % cap == ((total(length) if padded else total(length) - to_end) % cap)
            if padded:
                assert raw.u32(raw.DATA + cap - to_end + 4) == TAG_PAD
                assert raw.u32(raw.DATA + cap - to_end) == to_end - 8
            assert ring.pop() == data
            assert ring.pop() is None


# --------------------------------------------------------------------- sizes ----


def test_zero_byte_payload_round_trips_through_every_call(ring: Ring) -> None:
    assert ring.push(b"")
    assert ring.push_batch([b"", b""]) == 2
    assert ring.push_batch_buffer(b"", [0, 0]) == 2
    view = ring.reserve(0)
    assert view is not None and len(view) == 0
    ring.commit()
    ring.put(b"", timeout=1)
    assert len(ring) == 7
    assert ring.stats().used_bytes == 7 * 8
    assert ring.pop() == b""
    assert ring.pop_batch(2) == [b"", b""]
    assert ring.pop_batch_buffer(2).to_list() == [b"", b""]
    view = ring.peek()
    assert view is not None and bytes(view) == b""
    ring.release()
    assert ring.get(timeout=1) == b""
    assert len(ring) == 0


def test_64_kib_payload_round_trips_through_every_call(ring_name: str) -> None:
    big = os.urandom(65536)
    with Ring.create(ring_name, 1 << 18) as r:
        assert r.max_payload == 65536
        assert r.push(big)
        assert r.pop() == big
        assert r.push_batch([big, big[::-1]]) == 2
        assert r.pop_batch() == [big, big[::-1]]
        assert r.push_batch_buffer(big + big, [65536, 65536]) == 2
        # max_bytes is raised to max_payload, so one whole record always fits, and no more
        assert r.pop_batch_buffer(max_bytes=1).to_list() == [big]
        assert r.pop_batch_buffer(max_bytes=65536 + 65535).to_list() == [big]
        view = r.reserve(65536)
        assert view is not None
        view[:] = big
        r.commit()
        r.put(big, timeout=1)
        assert bytes(r.peek()) == big
        r.release()
        assert r.get(timeout=1) == big


@pytest.mark.parametrize(
    ("capacity", "max_payload"),
    [(4096, 4088), (8192, 8184), (65536, 65528), (1 << 17, 65536), (1 << 20, 65536)],
)
def test_max_payload_is_capacity_minus_header_up_to_64_kib(
    ring_name: str, capacity: int, max_payload: int
) -> None:
    with Ring.create(ring_name, capacity) as r:
        assert r.capacity == capacity
        assert r.max_payload == max_payload
        assert r.stats().max_payload == max_payload
        assert r.push(bytes(max_payload))
        assert r.pop() == bytes(max_payload)


@pytest.mark.parametrize("capacity", [4096, 1 << 17])
def test_payload_one_byte_over_max_raises_payload_too_large_and_pushes_nothing(
    ring_name: str, capacity: int
) -> None:
    with Ring.create(ring_name, capacity) as r:
        limit = r.max_payload
        big = bytes(limit + 1)
        calls: list[Callable[[], object]] = [
            lambda: r.push(big),
            lambda: r.put(big, timeout=0.1),
            lambda: r.push_batch([b"fits", big]),
            lambda: r.push_batch_buffer(b"fits" + big, [4, limit + 1]),
            lambda: r.reserve(limit + 1),
        ]
        for call in calls:
            with pytest.raises(PayloadTooLargeError) as info:
                call()
            assert isinstance(info.value, ValueError)
            assert info.value.limit == limit and info.value.size == limit + 1
            assert str(limit) in str(info.value) and str(limit + 1) in str(info.value)
            assert len(r) == 0 and r.stats().used_bytes == 0
        assert r.push(bytes(limit))


@pytest.mark.parametrize("position", [8, 1000, 2048, 4088])
def test_max_payload_record_fits_an_empty_ring_whose_head_is_mid_ring(
    ring: Ring, raw: RawRegion, position: int
) -> None:
    """The record needs the whole data area: the first push leaves a PAD to the end and
    returns False; once the consumer has skipped that PAD, the same push succeeds."""
    move_head_to(ring, raw, position)
    record = os.urandom(ring.max_payload)
    assert ring.push(record) is False
    assert len(ring) == 0
    assert ring.stats().used_bytes == SMALL - position  # only the PAD
    assert drain(ring) == []
    assert ring.push(record)
    assert raw.head % SMALL == 0
    assert ring.pop() == record


def test_put_of_max_payload_record_mid_ring_completes_while_a_thread_consumes(ring: Ring) -> None:
    producer = ring.share()
    producer.put(b"a" * 100, timeout=5)
    record = os.urandom(ring.max_payload)
    consumer = Worker(lambda: [ring.get(timeout=10), ring.get(timeout=10)])
    consumer.start()
    producer.put(record, timeout=10)
    assert consumer.outcome() == [b"a" * 100, record]
    producer.close()


# ------------------------------------------------------------------- batches ----


@pytest.mark.parametrize("count", [0, 1, 255, 256, 257, 1000])
def test_push_batch_and_pop_batch_move_any_count_in_order(ring_name: str, count: int) -> None:
    records = [payload(i) for i in range(count)]
    with Ring.create(ring_name, 1 << 20) as r:
        assert r.push_batch(records) == count
        assert r.push_batch(iter([])) == 0
        assert len(r) == count
        got: list[bytes] = []
        while batch := r.pop_batch(256):
            assert 1 <= len(batch) <= 256
            got.extend(batch)
        assert got == records


@pytest.mark.parametrize("count", [0, 1, 256, 257, 700])
def test_push_batch_buffer_and_pop_batch_buffer_move_any_count_in_order(ring_name: str, count: int) -> None:
    records = [payload(i) for i in range(count)]
    with Ring.create(ring_name, 1 << 20) as r:
        assert r.push_batch_buffer(b"".join(records), [len(x) for x in records]) == count
        got: list[bytes] = []
        while len(batch := r.pop_batch_buffer(256)):
            assert 1 <= len(batch) <= 256
            got.extend(batch.to_list())
        assert got == records


def test_push_batch_with_more_than_fits_pushes_a_prefix_and_returns_its_count(ring: Ring) -> None:
    records = [bytes([i]) * 100 for i in range(100)]
    fits = SMALL // total(100)
    assert ring.push_batch(records) == fits
    assert len(ring) == fits
    assert drain(ring) == records[:fits]
    assert ring.push_batch_buffer(b"".join(records), [100] * 100) == fits
    assert drain(ring) == records[:fits]


def test_pop_batch_buffer_returns_one_buffer_with_offsets(ring: Ring) -> None:
    records = [b"", b"a", b"bbbbbbb", b"cccccccc", b"d" * 9, b"e" * 100, b"", b"f" * 300]
    assert ring.push_batch_buffer(b"".join(records), [len(x) for x in records]) == len(records)
    batch = ring.pop_batch_buffer()
    assert isinstance(batch, RingBatch)
    assert len(batch) == len(records)
    assert batch.data == b"".join(records)
    ends = [0]
    for x in records:
        ends.append(ends[-1] + len(x))
    assert list(batch.offsets) == ends
    assert batch.to_list() == records
    assert [bytes(v) for v in batch] == records
    assert all(isinstance(v, memoryview) for v in batch)
    assert bytes(batch[5]) == b"e" * 100 and bytes(batch[-1]) == b"f" * 300
    with pytest.raises(IndexError):
        batch[len(records)]
    assert len(ring) == 0


def test_pop_batch_buffer_stops_at_max_records(ring: Ring) -> None:
    ring.push_batch([b"x"] * 10)
    assert len(ring.pop_batch_buffer(3)) == 3
    assert ring.pop_batch(4) == [b"x"] * 4
    assert len(ring) == 3


def test_pop_batch_of_zero_records_returns_nothing_and_keeps_the_records(ring: Ring) -> None:
    ring.push_batch([b"a", b"b"])
    assert ring.pop_batch(0) == []
    assert len(ring.pop_batch_buffer(0)) == 0
    assert ring.pop_batch() == [b"a", b"b"]


def test_push_batch_buffer_rejects_lengths_that_do_not_add_up(ring: Ring) -> None:
    with pytest.raises(ValueError, match="add up to 5 bytes"):
        ring.push_batch_buffer(b"abcdef", [2, 3])
    assert len(ring) == 0


@pytest.mark.parametrize("max_records", [-1, 257])
def test_pop_batch_rejects_more_than_256_records(ring: Ring, max_records: int) -> None:
    with pytest.raises(ValueError, match="256"):
        ring.pop_batch(max_records)
    with pytest.raises(ValueError, match="256"):
        ring.pop_batch_buffer(max_records)


# ----------------------------------------------------- reserve/commit, peek/release ----


def test_reserve_commit_round_trip_with_a_shorter_final_length(ring: Ring) -> None:
    view = ring.reserve(100)
    assert view is not None and len(view) == 100
    view[:] = bytes(range(100))
    assert len(ring) == 0  # not visible before commit
    ring.commit(60)
    view = ring.reserve(5)
    view[:] = b"hello"
    ring.commit()
    assert ring.pop() == bytes(range(60))
    assert ring.pop() == b"hello"
    assert ring.pop() is None
    assert ring.stats().used_bytes == 0


def test_reserve_returns_none_when_full(ring: Ring) -> None:
    while ring.push(b"z" * 500):
        pass
    assert ring.reserve(500) is None
    drain(ring)
    assert ring.reserve(500) is not None
    ring.commit(0)


def test_reserved_view_is_unusable_after_commit(ring: Ring) -> None:
    view = ring.reserve(8)
    ring.commit()
    with pytest.raises(ValueError):
        view[0] = 1


def test_commit_without_reserve_raises_ring_state_error(ring: Ring) -> None:
    with pytest.raises(RingStateError):
        ring.commit()
    with pytest.raises(RingStateError):
        ring.commit(0)


def test_reserve_twice_raises_ring_state_error_and_keeps_the_first_reservation(ring: Ring) -> None:
    view = ring.reserve(4)
    with pytest.raises(RingStateError):
        ring.reserve(4)
    view[:] = b"keep"
    ring.commit()
    assert ring.pop() == b"keep"


def test_commit_longer_than_reserved_is_refused_and_the_reservation_stays_open(ring: Ring) -> None:
    view = ring.reserve(10)
    with pytest.raises(ValueError, match="10 bytes reserved"):
        ring.commit(11)
    view[:] = b"0123456789"
    ring.commit(10)
    assert ring.pop() == b"0123456789"


@pytest.mark.parametrize("call", ["push", "push_batch", "push_batch_buffer"])
def test_push_during_an_open_reservation_raises_ring_state_error(ring: Ring, call: str) -> None:
    view = ring.reserve(3)
    with pytest.raises(RingStateError, match="reservation or a peeked record is still open"):
        if call == "push":
            ring.push(b"x")
        elif call == "push_batch":
            ring.push_batch([b"x"])
        else:
            ring.push_batch_buffer(b"x", [1])
    view[:] = b"abc"
    ring.commit()
    assert ring.pop_batch() == [b"abc"]


def test_peek_release_round_trip_gives_a_read_only_view(ring: Ring) -> None:
    ring.push_batch([b"first", b"second"])
    view = ring.peek()
    assert view == b"first" and view.readonly
    with pytest.raises(TypeError):
        view[0] = 0
    assert len(ring) == 1
    ring.release()
    assert ring.pop() == b"second"


def test_peeked_view_is_unusable_after_release(ring: Ring) -> None:
    ring.push(b"gone")
    view = ring.peek()
    ring.release()
    with pytest.raises(ValueError):
        bytes(view)
    with pytest.raises(ValueError):
        view[0]


def test_release_without_peek_raises_ring_state_error(ring: Ring) -> None:
    with pytest.raises(RingStateError):
        ring.release()
    ring.push(b"x")
    ring.peek()
    ring.release()
    with pytest.raises(RingStateError):
        ring.release()


def test_peek_twice_raises_ring_state_error(ring: Ring) -> None:
    ring.push_batch([b"a", b"b"])
    view = ring.peek()
    with pytest.raises(RingStateError):
        ring.peek()
    assert view == b"a"
    ring.release()
    assert ring.peek() == b"b"
    ring.release()


# --------------------------------------------------------------------- state ----


def test_len_capacity_and_stats_follow_pushes_and_pops(ring: Ring) -> None:
    assert ring.capacity == SMALL
    ring.push_batch([b"a" * 10, b"b" * 20, b"c"])
    assert len(ring) == 3
    stats = ring.stats()
    assert (stats.capacity, stats.max_payload, stats.count) == (SMALL, 4088, 3)
    assert stats.used_bytes == total(10) + total(20) + total(1)
    ring.pop_batch(2)
    assert len(ring) == 1 and ring.stats().count == 1
    assert ring.stats().used_bytes == total(1)
    assert ring.pop() == b"c"
    assert len(ring) == 0


def test_stats_name_the_holder_and_state_of_each_role(ring: Ring) -> None:
    stats = ring.stats()
    assert (stats.producer, stats.producer_pid, stats.consumer, stats.consumer_pid) == ("none", 0, "none", 0)
    producer = ring.share()
    producer.push(b"x")
    assert (ring.stats().producer, ring.stats().producer_pid) == ("alive", os.getpid())
    ring.pop()
    assert (ring.stats().consumer, ring.stats().consumer_pid) == ("alive", os.getpid())
    producer.close()
    assert ring.stats().producer == "closed"


def test_anonymous_ring_has_no_path_and_works_between_handles() -> None:
    with Ring.create(None, SMALL) as r:
        assert r.path is None
        other = r.share()
        other.push(b"anon")
        assert r.pop() == b"anon"
        other.close()


def test_close_unlinks_the_creators_file_unless_told_not_to(ring_name: str) -> None:
    path = Path("/dev/shm") / f"nanomq.{ring_name}"
    Ring.create(ring_name, SMALL).close()
    assert not path.exists()
    Ring.create(ring_name, SMALL, unlink_on_close=False).close()
    assert path.exists()
    with Ring.attach(ring_name) as again:
        assert again.capacity == SMALL


# ----------------------------------------------------------- invalid set-up ----


@pytest.mark.parametrize("capacity", [0, -4096, 1, 2048, 4095, 4097, 3 * 4096, 1 << 35, 4096.0, "4096"])
def test_invalid_capacity_raises_value_error_naming_the_limits(ring_name: str, capacity: Any) -> None:
    with pytest.raises(ValueError, match=r"capacity .* power of two from 4096 to 17179869184 bytes"):
        Ring.create(ring_name, capacity)
    with pytest.raises(ValueError):
        Ring.create(None, capacity)
    assert not os.path.exists(f"/dev/shm/nanomq.{ring_name}")


@pytest.mark.parametrize("name", ["", ".hidden", "has space", "x" * 201, "ümlaut", "tab\tname", "a\nb"])
def test_invalid_name_raises_value_error_and_creates_nothing(name: str) -> None:
    with pytest.raises(ValueError, match=r"ring name .* is invalid"):
        Ring.create(name, SMALL)
    with pytest.raises(ValueError, match=r"ring name .* is invalid"):
        Ring.attach(name)
    assert not os.path.exists(f"/dev/shm/nanomq.{name}")


def test_longest_valid_name_is_200_characters(new_ring_name: Callable[[], str]) -> None:
    name = (new_ring_name() + "x" * 200)[:200]
    with Ring.create(name, SMALL) as r:
        assert r.path == f"/dev/shm/nanomq.{name}"


def test_create_of_an_existing_name_raises_file_exists_error(ring: Ring, ring_name: str) -> None:
    ring.push(b"still here")
    with pytest.raises(FileExistsError, match=ring_name):
        Ring.create(ring_name, SMALL)
    assert ring.pop() == b"still here"


def test_attach_to_a_missing_name_raises_region_error(ring_name: str) -> None:
    with pytest.raises(RegionError, match=f"no ring named '{ring_name}'") as info:
        Ring.attach(ring_name)
    assert isinstance(info.value, OSError)


def _valid_ring_bytes(ring_name: str) -> bytearray:
    with Ring.create(ring_name, 8192, unlink_on_close=False) as r:
        r.push(b"a record")
        path = r.path
    data = bytearray(Path(path).read_bytes())
    os.unlink(path)
    return data


def _edited(*fields: tuple[int, int, int]) -> Callable[[bytearray], bytes]:
    """An edit that writes each (offset, width, value) little-endian into the file's bytes."""

    def edit(data: bytearray) -> bytes:
        for offset, width, value in fields:
            data[offset : offset + width] = value.to_bytes(width, "little")
        return bytes(data)

    return edit


R = RawRegion
NOT_A_RING: dict[str, tuple[Callable[[bytearray], bytes], str]] = {
    "random bytes": (lambda data: os.urandom(len(data)), "not a NanoMQ ring .*magic"),
    "empty file": (lambda data: b"", "smaller than the 4096-byte ring header"),
    "too short": (lambda data: bytes(data[:100]), "smaller than the 4096-byte ring header"),
    "header only": (lambda data: bytes(data[:4096]), "4096 bytes but its header says 12288"),
    "longer than the ring": (lambda data: bytes(data) + bytes(4096), "16384 bytes but its header says 12288"),
    "zeros": (lambda data: bytes(len(data)), "not a NanoMQ ring"),
    "wrong version": (_edited((R.VERSION, 4, 7)), "version 7 is not supported"),
    "wrong header size": (_edited((R.HEADER_BYTES, 4, 2048)), "header is corrupt .*header 2048 bytes"),
    "capacity not a power of two": (_edited((R.CAPACITY, 8, 3000)), "header is corrupt .*capacity 3000"),
    "capacity zero": (_edited((R.CAPACITY, 8, 0)), "header is corrupt .*capacity 0"),
    "capacity too large": (_edited((R.CAPACITY, 8, 1 << 40)), "header is corrupt"),
    "capacity not matching the file": (
        _edited((R.CAPACITY, 8, 16384), (R.MAX_PAYLOAD, 4, 16376)),
        "12288 bytes but its header says 20480",
    ),
    "wrong max payload": (_edited((R.MAX_PAYLOAD, 4, 9999)), "header is corrupt .*max payload 9999"),
    "head not 8-aligned": (_edited((R.HEAD, 8, 19)), "indices are corrupt .*head 19"),
    "head more than capacity ahead": (
        _edited((R.HEAD, 8, 8192 + 16)),
        "indices are corrupt .*head 8208, tail 0",
    ),
    "tail ahead of head": (_edited((R.TAIL, 8, 64)), "indices are corrupt .*head 16, tail 64"),
}


@pytest.mark.parametrize("case", NOT_A_RING)
def test_attach_to_a_file_that_is_not_a_ring_raises_region_error(ring_name: str, case: str) -> None:
    edit, message = NOT_A_RING[case]
    content = edit(_valid_ring_bytes(ring_name))
    path = f"/dev/shm/nanomq.{ring_name}"
    Path(path).write_bytes(content)
    with pytest.raises(RegionError, match=message) as info:
        Ring.attach(ring_name)
    assert path in str(info.value)


def test_attach_to_a_valid_ring_file_reads_what_was_pushed(ring_name: str) -> None:
    Path(f"/dev/shm/nanomq.{ring_name}").write_bytes(_valid_ring_bytes(ring_name))
    with Ring.attach(ring_name) as r:
        assert r.pop() == b"a record"


# ------------------------------------------------------------------ closing ----

AFTER_CLOSE: dict[str, Callable[[Ring], object]] = {
    "push": lambda r: r.push(b"x"),
    "put": lambda r: r.put(b"x", timeout=1),
    "push_batch": lambda r: r.push_batch([b"x"]),
    "push_batch_buffer": lambda r: r.push_batch_buffer(b"x", [1]),
    "reserve": lambda r: r.reserve(1),
    "pop": lambda r: r.pop(),
    "get": lambda r: r.get(timeout=1),
    "pop_batch": lambda r: r.pop_batch(),
    "pop_batch_buffer": lambda r: r.pop_batch_buffer(),
    "peek": lambda r: r.peek(),
    "iterate": lambda r: next(iter(r)),
    "share": lambda r: r.share(),
}


@pytest.mark.parametrize("call", AFTER_CLOSE)
@pytest.mark.parametrize("used", [False, True], ids=["fresh", "used"])
def test_use_after_close_raises_ring_closed_error(ring_name: str, call: str, used: bool) -> None:
    r = Ring.create(ring_name, SMALL)
    if used:
        r.push(b"before")
        r.pop()
        r.push(b"left behind")
    r.close()
    r.close()  # idempotent
    assert r.closed
    with pytest.raises(RingClosedError):
        AFTER_CLOSE[call](r)


# -------------------------------------------------------------------- roles ----


def test_second_live_producer_handle_is_refused_with_ring_busy_error(ring: Ring) -> None:
    ring.push(b"mine")
    other = ring.share()
    for call in (lambda: other.push(b"b"), lambda: other.push_batch([b"b"]), lambda: other.reserve(1)):
        with pytest.raises(RingBusyError, match=f"live producer .*pid {os.getpid()}"):
            call()
    assert ring.push(b"still mine")
    assert ring.pop_batch() == [b"mine", b"still mine"]
    other.close()


def test_second_live_consumer_handle_is_refused_with_ring_busy_error(ring: Ring, ring_name: str) -> None:
    ring.push_batch([b"a", b"b"])
    assert ring.pop() == b"a"
    with Ring.attach(ring_name) as other:
        with pytest.raises(RingBusyError, match="live consumer"):
            other.pop()
        with pytest.raises(RingBusyError):
            other.get(timeout=1)
    assert ring.pop() == b"b"


def test_a_role_is_free_again_once_its_holder_closes(ring: Ring) -> None:
    first = ring.share()
    first.push(b"one")
    first.close()
    second = ring.share()
    second.push(b"two")
    assert ring.pop_batch() == [b"one", b"two"]
    second.close()


# ------------------------------------------------------------------ waiting ----


def test_put_times_out_with_ring_full_error_after_the_timeout(ring: Ring) -> None:
    while ring.push(b"f" * 200):
        pass
    start = time.monotonic()
    with pytest.raises(RingFullError) as info:
        ring.put(b"f" * 200, timeout=0.2)
    elapsed = time.monotonic() - start
    assert isinstance(info.value, queue.Full)
    assert 0.19 <= elapsed < 2.0
    with pytest.raises(queue.Full):
        ring.put(b"f", timeout=0)


def test_get_times_out_with_ring_empty_error_after_the_timeout(ring: Ring) -> None:
    start = time.monotonic()
    with pytest.raises(RingEmptyError) as info:
        ring.get(timeout=0.2)
    elapsed = time.monotonic() - start
    assert isinstance(info.value, queue.Empty)
    assert 0.19 <= elapsed < 2.0
    with pytest.raises(queue.Empty):
        ring.get(timeout=0)


def test_iteration_ends_when_the_producer_thread_closes_and_the_ring_is_drained(ring: Ring) -> None:
    records = [payload(i) for i in range(3000)]
    producer = ring.share()

    def produce() -> None:
        for rec in records:
            producer.put(rec, timeout=10)
        producer.close()

    worker = Worker(produce)
    worker.start()
    assert list(ring) == records
    worker.outcome()
    with pytest.raises(RingClosedError, match="producer closed"):
        ring.get(timeout=1)


@pytest.mark.parametrize("wait", ["spin", "yield", "futex"])
def test_producer_and_consumer_threads_exchange_records_with_each_wait_strategy(
    ring_name: str, wait: str
) -> None:
    count = 20_000
    with Ring.create(ring_name, SMALL, wait=wait, spin_us=5) as ring:
        producer = ring.share()

        def produce() -> None:
            seq = 0
            while seq < count:
                if seq % 3:
                    producer.put(payload(seq), timeout=30)
                    seq += 1
                else:
                    recs = [payload(s) for s in range(seq, min(count, seq + 20))]
                    n = producer.push_batch(recs)
                    if n == 0:
                        producer.put(recs[0], timeout=30)
                        n = 1
                    seq += n
            producer.close()

        worker = Worker(produce)
        worker.start()
        seq = 0
        for rec in ring:
            assert rec == payload(seq), f"record {seq}"
            seq += 1
        worker.outcome()
        assert seq == count


# --------------------------------------------------------------- corruption ----


def _corrupt_len_over_max(raw: RawRegion) -> None:
    raw.set_u32(raw.record_offset(raw.tail), 5000)


def _corrupt_len_past_head(raw: RawRegion) -> None:
    raw.set_u32(raw.record_offset(raw.tail), 100)


def _corrupt_tag(raw: RawRegion) -> None:
    raw.set_u32(raw.record_offset(raw.tail) + 4, 0x12345678)


def _corrupt_as_short_pad(raw: RawRegion) -> None:
    raw.set_u32(raw.record_offset(raw.tail), 8)
    raw.set_u32(raw.record_offset(raw.tail) + 4, TAG_PAD)


def _corrupt_len_to_all_ones(raw: RawRegion) -> None:
    raw.set_u32(raw.record_offset(raw.tail), 0xFFFFFFFF)


CORRUPTIONS = {
    "length over max payload": _corrupt_len_over_max,
    "length past head": _corrupt_len_past_head,
    "length all ones": _corrupt_len_to_all_ones,
    "unknown tag": _corrupt_tag,
    "pad not reaching the end": _corrupt_as_short_pad,
}

CONSUMER_CALLS: dict[str, Callable[[Ring], object]] = {
    "pop": lambda r: r.pop(),
    "get": lambda r: r.get(timeout=1),
    "pop_batch": lambda r: r.pop_batch(),
    "pop_batch_buffer": lambda r: r.pop_batch_buffer(),
    "peek": lambda r: r.peek(),
}


@pytest.mark.parametrize("call", CONSUMER_CALLS)
@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_record_in_the_data_area_raises_corrupt_record_error(
    ring: Ring, raw: RawRegion, corruption: str, call: str
) -> None:
    ring.push(b"g" * 8)
    CORRUPTIONS[corruption](raw)
    for _ in range(2):  # and again: never garbage on a retry
        with pytest.raises(CorruptRecordError):
            CONSUMER_CALLS[call](ring)


def test_corrupt_pad_before_the_wrap_raises_corrupt_record_error(ring: Ring, raw: RawRegion) -> None:
    move_head_to(ring, raw, 4008)
    assert ring.push(b"w" * 200)  # a PAD of 88 bytes at 4008, the record at 0
    assert raw.u32(raw.DATA + 4008 + 4) == TAG_PAD
    raw.set_u32(raw.DATA + 4008, 40)
    with pytest.raises(CorruptRecordError):
        ring.pop()


def test_corrupt_record_error_names_the_ring_not_an_earlier_unrelated_failure(
    ring: Ring, raw: RawRegion, tmp_path: Path
) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(RegionError, match="magic"):
        Ring.attach(str(junk))  # leaves a slow-path message on this thread
    ring.push(b"g" * 8)
    _corrupt_len_over_max(raw)
    with pytest.raises(CorruptRecordError) as info:
        ring.pop()
    assert "magic" not in str(info.value)
    assert ring.path in str(info.value)


def test_push_takes_any_contiguous_buffer_and_refuses_other_objects(ring: Ring) -> None:
    # push and pop are C methods (csrc/py/ringcore.c): bytes go straight through,
    # other buffers through the buffer protocol.
    assert ring.push(bytearray(b"ab"))
    assert ring.push(memoryview(b"xcdx")[1:3])
    assert ring.push(array("H", [1, 2]))
    assert [ring.pop(), ring.pop(), ring.pop()] == [b"ab", b"cd", bytes(array("H", [1, 2]))]
    with pytest.raises(TypeError, match="bytes-like"):
        ring.push(5)  # type: ignore[arg-type]
    with pytest.raises(BufferError):
        ring.push(memoryview(bytearray(8))[::2])  # not contiguous
    assert ring.pop() is None


def test_pop_after_peek_gives_the_peeked_record_back_first(ring: Ring) -> None:
    ring.push_batch([b"one", b"two"])
    view = ring.peek()
    assert view == b"one"
    assert ring.pop() == b"two"
    with pytest.raises(ValueError):
        bytes(view)  # released by pop(): it must not show the producer's next bytes
