"""The shared-memory SPSC ring: Python face of csrc/ring.c.

One producer and one consumer exchange variable-length records (0 B to 64 KiB)
through a region that is either anonymous (threads of one process) or a named
shared-memory file that another process attaches to. Roles are taken by the first
push and the first pop; a second live producer or consumer is refused.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from nanomq import errors
from nanomq._ffi import address, ffi, function_address, last_error, lib, raise_status
from nanomq._ringcore import RingCore

__all__ = ["Ring", "RingBatch", "RingStats", "WaitStrategy"]

WaitStrategy = Literal["spin", "yield", "futex"]
_WAITS = {"spin": lib.NMQ_WAIT_SPIN, "yield": lib.NMQ_WAIT_YIELD, "futex": lib.NMQ_WAIT_FUTEX}
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
# Spin this long before yielding or sleeping: waking a sleeping vCPU costs ~40 µs, so a
# consumer fed every <= 200 µs never pays it, and one idle for longer uses no CPU.
DEFAULT_SPIN_US = 200.0
SHM_DIR = "/dev/shm"
SHM_PREFIX = "nanomq."

_OK = lib.NMQ_OK
_AGAIN = lib.NMQ_AGAIN
_TIMEOUT = lib.NMQ_TIMEOUT
_ETOOBIG = lib.NMQ_ETOOBIG
_LEN_BITS = lib.NMQ_REF_LEN_BITS
_LEN_MASK = (1 << _LEN_BITS) - 1
_MAX_BATCH = lib.NMQ_MAX_BATCH
_PEER_STATES = {
    lib.NMQ_PEER_NONE: "none",
    lib.NMQ_PEER_ALIVE: "alive",
    lib.NMQ_PEER_CLOSED: "closed",
    lib.NMQ_PEER_DEAD: "dead",
}

_push = lib.nmq_ring_push
_push_batch = lib.nmq_ring_push_batch
_peek = lib.nmq_ring_peek
_pop_batch = lib.nmq_ring_pop_batch
_release = lib.nmq_ring_release
_wait_readable = lib.nmq_ring_wait_readable
_wait_writable = lib.nmq_ring_wait_writable
_PUSH_ADDRESS = function_address("nmq_ring_push")
_PEEK_ADDRESS = function_address("nmq_ring_peek")


_U32 = "I" if array("I").itemsize == 4 else "L"  # array typecode of uint32_t
_BATCH_BYTES = 1 << 20  # pop_batch's copy buffer: a call returns at most this much payload


def _u32_lengths(lens: Sequence[int]) -> array:
    """Record lengths as a uint32 array (one C conversion); ValueError names a length out of range."""
    if type(lens) is array and lens.typecode == _U32:
        return lens
    try:
        return array(_U32, lens)
    except OverflowError:
        for i, size in enumerate(lens):
            if size < 0 or size > 0xFFFFFFFF:
                raise ValueError(f"record length {size} at index {i} is out of range") from None
        raise


@lru_cache(maxsize=64)
def _uniform(size: int, n: int) -> tuple[bytes, struct.Struct]:
    """For n records of `size` bytes end to end: their offsets as pop_batch writes them, and a
    Struct that splits the buffer into n bytes objects in one C call."""
    return array(_U32, range(0, (n + 1) * size, size)).tobytes(), struct.Struct(f"{size}s" * n)


@dataclass(frozen=True, slots=True)
class RingStats:
    """A snapshot of a ring's state."""

    capacity: int
    max_payload: int
    count: int
    used_bytes: int
    producer: str
    producer_pid: int
    consumer: str
    consumer_pid: int


@dataclass(frozen=True, slots=True)
class RingBatch(Sequence[memoryview]):
    """Records popped in one call, kept as one buffer: record i is data[offsets[i]:offsets[i+1]]."""

    data: bytes
    offsets: array  # array('I') of len(self) + 1 byte offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> memoryview:  # type: ignore[override]
        if i < 0:
            i += len(self.offsets) - 1
        if not 0 <= i < len(self.offsets) - 1:
            raise IndexError(f"record {i} out of range for a batch of {len(self.offsets) - 1}")
        return memoryview(self.data)[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[memoryview]:
        view = memoryview(self.data)
        offs = self.offsets
        for i in range(len(offs) - 1):
            yield view[offs[i] : offs[i + 1]]

    def to_list(self) -> list[bytes]:
        """Each record as its own bytes object (copies)."""
        data, offs = self.data, self.offsets
        return [data[offs[i] : offs[i + 1]] for i in range(len(offs) - 1)]


def _timeout_ns(timeout: float | None) -> int:
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout}")
    return int(timeout * 1e9)


def shm_path(name: str) -> str:
    """The file behind a ring name: /dev/shm/nanomq.<name>, or `name` itself if it contains '/'."""
    if "/" in name:
        return name
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"ring name {name!r} is invalid: use 1 to 200 characters from [A-Za-z0-9._-], "
            "not starting with '.', or give a path containing '/'"
        )
    return os.path.join(SHM_DIR, SHM_PREFIX + name)


class Ring(RingCore):
    """A single-producer single-consumer ring of byte records in shared memory.

    Create with `Ring.create(name, capacity)` (name None: anonymous, for threads) and
    attach from another process with `Ring.attach(name)`. The first push takes the
    producer role and the first pop the consumer role; each role has one live holder.
    Blocking calls (`put`, `get`, iteration) wait with the strategy chosen at
    create/attach and notice a closed or dead peer instead of waiting forever.
    """

    __slots__ = (
        "__weakref__",
        "_batch_buf",
        "_batch_offs",
        "_buf",
        "_closed",
        "_mm",
        "_mv",
        "_path",
        "_r",
        "_res_len",
        "_res_view",
        "_unlink_on_close",
    )

    def __init__(self, mm: mmap.mmap, path: str | None, wait: WaitStrategy, spin_us: float) -> None:
        if wait not in _WAITS:
            raise ValueError(f"wait strategy {wait!r} is not one of {sorted(_WAITS)}")
        if spin_us < 0 or spin_us > 1e6:
            raise ValueError(f"spin_us must be between 0 and 1e6 microseconds, got {spin_us}")
        self._mm = mm
        self._path = path
        self._buf = ffi.from_buffer(mm)
        out = ffi.new("nmq_ring **")
        rc = lib.nmq_ring_open(self._buf, len(mm), _WAITS[wait], int(spin_us * 1000), out)
        if rc < 0:
            message = last_error()
            ffi.release(self._buf)
            raise (errors.RegionError if rc != lib.NMQ_EINVAL else ValueError)(
                f"{path or 'anonymous ring'}: {message}"
            )
        self._r = ffi.gc(out[0], lib.nmq_ring_free)
        # push() and pop() are RingCore's C methods (csrc/py/ringcore.c): they call the
        # ring through these addresses; the handle and the buffer stay owned here.
        self._bind(
            address(self._r), address(self._buf), _PUSH_ADDRESS, _PEEK_ADDRESS, (self._r, self._buf, mm)
        )
        self._mv = memoryview(mm)
        self._closed = False
        self._unlink_on_close = False
        self._peek_view: memoryview | None = None
        self._res_view: memoryview | None = None
        self._res_len = -1
        self._batch_offs = ffi.new("uint32_t[]", _MAX_BATCH + 1)
        self._batch_buf = None

    # ------------------------------------------------------------ set-up ----

    @classmethod
    def create(
        cls,
        name: str | None = None,
        capacity: int = 1 << 20,
        *,
        wait: WaitStrategy = "futex",
        spin_us: float = DEFAULT_SPIN_US,
        unlink_on_close: bool = True,
    ) -> Ring:
        """Create a ring of `capacity` data bytes (a power of two, 4 KiB to 16 GiB).

        With a name, the region is a new file under /dev/shm (or the path given) that
        other processes attach to; it must not exist yet. With name None the region is
        anonymous memory for threads of this process. `unlink_on_close` removes the
        file when this handle closes (processes already attached keep working).
        """
        size = lib.nmq_ring_region_size(capacity) if isinstance(capacity, int) and capacity > 0 else 0
        if size == 0:
            raise ValueError(
                f"ring capacity {capacity!r} is invalid: must be a power of two from "
                f"{1 << lib.NMQ_RING_MIN_CAPACITY_LOG2} to {1 << lib.NMQ_RING_MAX_CAPACITY_LOG2} bytes"
            )
        if name is None:
            mm = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
            path = None
        else:
            path = shm_path(name)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raise FileExistsError(
                    f"ring {name!r} already exists at {path}; attach to it or unlink it"
                ) from None
            try:
                # fallocate, not ftruncate: a full /dev/shm is ENOSPC now, not SIGBUS later
                os.posix_fallocate(fd, 0, size)
                mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
            except OSError:
                os.close(fd)
                os.unlink(path)
                raise
            os.close(fd)
        rc = lib.nmq_ring_init(ffi.from_buffer(mm), size, capacity)
        if rc < 0:
            raise ValueError(last_error())
        ring = cls(mm, path, wait, spin_us)
        ring._unlink_on_close = unlink_on_close and path is not None
        return ring

    @classmethod
    def attach(cls, name: str, *, wait: WaitStrategy = "futex", spin_us: float = DEFAULT_SPIN_US) -> Ring:
        """Attach to a ring another process created; fails clearly if it is missing or not a ring."""
        path = shm_path(name)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise errors.RegionError(f"no ring named {name!r}: {path} does not exist") from None
        try:
            size = os.fstat(fd).st_size
            if size < lib.NMQ_RING_HEADER_BYTES:
                raise errors.RegionError(
                    f"{path} is not a NanoMQ ring: {size} bytes is smaller than the "
                    f"{lib.NMQ_RING_HEADER_BYTES}-byte ring header"
                )
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        return cls(mm, path, wait, spin_us)

    def share(self, *, wait: WaitStrategy | None = None, spin_us: float | None = None) -> Ring:
        """A second, independent handle on the same region, for another thread.

        Each thread then takes its role and closes its own handle: a producer thread's
        close() ends a consumer thread's iteration once the ring is drained.
        """
        if self._closed:
            raise errors.RingClosedError("ring handle is closed")
        return Ring(
            self._mm, self._path, wait or self._wait_name(), self._spin_us() if spin_us is None else spin_us
        )

    def _wait_name(self) -> WaitStrategy:
        code = lib.nmq_ring_wait_strategy(self._r)
        return next(name for name, value in _WAITS.items() if value == code)

    def _spin_us(self) -> float:
        return lib.nmq_ring_spin_ns(self._r) / 1000

    def close(self) -> None:
        """Close this handle: the peer sees the close, and a creator's file is unlinked.

        The mapping itself is released when the object is garbage-collected, so a
        thread still inside a call on this ring can never touch unmapped memory.
        """
        if self._closed:
            return
        self._closed = True
        for view in (self._peek_view, self._res_view):
            try:
                if view is not None:
                    view.release()
            except BufferError:  # exported elsewhere: it stays readable, the mapping stays alive
                pass
        self._peek_view = self._res_view = None
        lib.nmq_ring_close(self._r)
        if self._unlink_on_close:
            self.unlink()

    def unlink(self) -> None:
        """Remove the ring's name; attached handles keep working. No-op for an anonymous ring."""
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} records"
        return f"<Ring {self._path or 'anonymous'} capacity={self.capacity} {state}>"

    # ------------------------------------------------------------- state ----

    @property
    def capacity(self) -> int:
        """Data bytes in the ring (records take 8 bytes of header and pad to 8)."""
        return lib.nmq_ring_capacity(self._r)

    @property
    def max_payload(self) -> int:
        """The largest payload this ring takes: 64 KiB, or less for a ring smaller than that."""
        return lib.nmq_ring_max_payload(self._r)

    @property
    def path(self) -> str | None:
        """The file behind the ring, or None when anonymous."""
        return self._path

    @property
    def closed(self) -> bool:
        """True once close() was called on this handle."""
        return self._closed

    def __len__(self) -> int:
        return lib.nmq_ring_count(self._r)

    def stats(self) -> RingStats:
        """Snapshot of counts, bytes used and who holds each role."""
        r = self._r
        return RingStats(
            capacity=lib.nmq_ring_capacity(r),
            max_payload=lib.nmq_ring_max_payload(r),
            count=lib.nmq_ring_count(r),
            used_bytes=lib.nmq_ring_used_bytes(r),
            producer=_PEER_STATES[lib.nmq_ring_peer_state(r, lib.NMQ_ROLE_PRODUCER)],
            producer_pid=lib.nmq_ring_peer_pid(r, lib.NMQ_ROLE_PRODUCER),
            consumer=_PEER_STATES[lib.nmq_ring_peer_state(r, lib.NMQ_ROLE_CONSUMER)],
            consumer_pid=lib.nmq_ring_peer_pid(r, lib.NMQ_ROLE_CONSUMER),
        )

    # ---------------------------------------------------------- producer ----

    def _fail(self, rc: int, size: int = 0) -> None:
        if self._closed:
            raise errors.RingClosedError("ring handle is closed")
        if rc == _ETOOBIG:
            raise errors.PayloadTooLargeError(size, self.max_payload)
        raise_status(rc, self._path or "anonymous ring")

    def put(self, data: bytes, timeout: float | None = None) -> None:
        """Append one record, waiting up to `timeout` seconds (None: forever) for room.

        Raises RingFullError on timeout, PeerDeadError if the consumer died and
        RingClosedError if it closed.
        """
        if type(data) is not bytes:
            data = ffi.from_buffer(data)
        n = len(data)
        r = self._r
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rc = _push(r, data, n)
            if rc == _OK:
                return
            if rc != _AGAIN:
                self._fail(rc, n)
            left = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1e9))
            rc = _wait_writable(r, n, left)
            if rc == _TIMEOUT:
                raise errors.RingFullError(f"ring stayed full for {timeout} s ({n}-byte record)")
            if rc < 0:
                self._fail(rc, n)

    def push_batch(self, records: Iterable[bytes]) -> int:
        """Append records in order, 256 per C call, until one does not fit; returns how many went in."""
        if not isinstance(records, list):
            records = list(records)
        total = 0
        for start in range(0, len(records), _MAX_BATCH):
            whole = start == 0 and len(records) <= _MAX_BATCH
            chunk = records if whole else records[start : start + _MAX_BATCH]
            pushed = self._push_packed(b"".join(chunk), array(_U32, map(len, chunk)))
            total += pushed
            if pushed < len(chunk):
                break
        return total

    def push_batch_buffer(self, data: bytes, lengths: Sequence[int]) -> int:
        """Append records laid end to end in one buffer (record i is lengths[i] bytes)."""
        if sum(lengths) != len(data):
            raise ValueError(f"lengths add up to {sum(lengths)} bytes but the buffer holds {len(data)}")
        if len(lengths) <= _MAX_BATCH and type(data) is bytes:
            return self._push_packed(data, lengths)  # one C call, no views
        view = memoryview(data).cast("B")
        total = offset = 0
        for start in range(0, len(lengths), _MAX_BATCH):
            chunk = lengths[start : start + _MAX_BATCH]
            size = sum(chunk)
            pushed = self._push_packed(view[offset : offset + size], chunk)
            total += pushed
            offset += size
            if pushed < len(chunk):
                break
        return total

    def _push_packed(self, data: bytes | memoryview, lens: Sequence[int]) -> int:
        n = len(lens)
        if n == 0:
            return 0
        # array() converts and range-checks all lengths in C; a Python loop over them cost
        # more than the C call that pushes the whole batch
        lens = _u32_lengths(lens)
        buf = data if type(data) is bytes else ffi.from_buffer(data)
        rc = _push_batch(self._r, buf, ffi.from_buffer("uint32_t[]", lens), n)
        if rc >= 0:
            return rc
        self._fail(rc, max(lens))
        return 0

    def reserve(self, size: int) -> memoryview | None:
        """Zero-copy write: a writable view of `size` bytes in the ring, or None when full.

        Fill it, then `commit(length)` publishes the record (length <= size).
        """
        if self._res_view is not None:
            raise errors.RingStateError("reserve() called twice without commit()")
        if not 0 <= size <= 0xFFFFFFFF:
            raise errors.PayloadTooLargeError(size, self.max_payload)
        off = lib.nmq_ring_reserve(self._r, size)
        if off == _AGAIN:
            return None
        if off < 0:
            self._fail(int(off), size)
        self._res_len = size
        self._res_view = self._mv[off : off + size]
        return self._res_view

    def commit(self, length: int | None = None) -> None:
        """Publish the reserved record with `length` bytes (default: all that was reserved)."""
        if self._res_view is None:
            raise errors.RingStateError("commit() without a reserve()")
        n = self._res_len if length is None else length
        if not 0 <= n <= self._res_len:
            raise ValueError(f"commit length {n} is outside the {self._res_len} bytes reserved")
        self._res_view.release()
        self._res_view = None
        rc = lib.nmq_ring_commit(self._r, n)
        if rc < 0:
            self._fail(rc)

    # ---------------------------------------------------------- consumer ----

    def _drop_peek(self) -> None:
        # A consumer call gives a peeked record back; its view must not show the
        # producer's next bytes. A view something else still exports stays readable.
        view, self._peek_view = self._peek_view, None
        try:
            view.release()  # type: ignore[union-attr]
        except BufferError:
            pass

    def get(self, timeout: float | None = None) -> bytes:
        """Take one record, waiting up to `timeout` seconds (None: forever).

        Raises RingEmptyError on timeout, RingClosedError once the producer closed and
        the ring is drained, PeerDeadError once the producer died and it is drained.
        """
        if self._peek_view is not None:
            self._drop_peek()
        r = self._r
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ref = _peek(r)
            if ref > 0:
                off = ref >> _LEN_BITS
                return self._mm[off : off + (ref & _LEN_MASK)]
            if ref != _AGAIN:
                self._fail(int(ref))
            left = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1e9))
            rc = _wait_readable(r, left)
            if rc == _TIMEOUT:
                raise errors.RingEmptyError(f"ring stayed empty for {timeout} s")
            if rc < 0:
                self._fail(rc)

    def __iter__(self) -> Iterator[bytes]:
        """Blocking iteration; ends when the producer closes and the ring is drained."""
        while True:
            try:
                yield self.get()
            except errors.RingClosedError:
                if self._closed:
                    raise
                return

    def _pop_packed(self, max_records: int, max_bytes: int) -> int:
        """Copy up to max_records whole records (max_bytes at most) into the batch buffer."""
        if not 0 <= max_records <= _MAX_BATCH:
            raise ValueError(f"max_records {max_records} is outside 0..{_MAX_BATCH}")
        if self._peek_view is not None:
            self._drop_peek()
        max_bytes = max(max_bytes, self.max_payload)  # the next record always fits
        if self._batch_buf is None or len(self._batch_buf) < max_bytes:
            self._batch_buf = ffi.new("char[]", max_bytes)
        # one C call copies the records out and gives their space back to the producer
        n = _pop_batch(self._r, self._batch_buf, max_bytes, self._batch_offs, max_records)
        if n < 0:
            self._fail(n)
        return n

    def pop_batch(self, max_records: int = _MAX_BATCH) -> list[bytes]:
        """Take up to `max_records` (<= 256) records (1 MiB at most) without blocking, each as bytes."""
        n = self._pop_packed(max_records, _BATCH_BYTES)
        if n == 0:
            return []
        buf, offs = self._batch_buf, self._batch_offs
        size = offs[1]
        if size:
            offsets, split = _uniform(size, n)
            if ffi.buffer(offs, 4 * (n + 1))[:] == offsets:
                # equal lengths (the common case): n bytes objects from one struct call
                return list(split.unpack_from(ffi.buffer(buf, n * size)))
        elif offs[n] == 0:
            return [b""] * n
        data = ffi.buffer(buf, offs[n])[:]
        o = ffi.unpack(offs, n + 1)
        return [data[o[i] : o[i + 1]] for i in range(n)]

    def pop_batch_buffer(self, max_records: int = _MAX_BATCH, max_bytes: int = _BATCH_BYTES) -> RingBatch:
        """Take up to `max_records` (<= 256) records without blocking, as one buffer with offsets."""
        n = self._pop_packed(max_records, max_bytes)
        # the offsets as one memcpy: a list of n + 1 ints cost more than copying the records
        offsets = array(_U32)
        offsets.frombytes(ffi.buffer(self._batch_offs, 4 * (n + 1)))
        return RingBatch(ffi.buffer(self._batch_buf, offsets[n])[:], offsets)

    def peek(self) -> memoryview | None:
        """Zero-copy read: a read-only view of the next record, valid until `release()`."""
        if self._peek_view is not None:
            raise errors.RingStateError("peek() called again before release()")
        ref = _peek(self._r)
        if ref > 0:
            off = ref >> _LEN_BITS
            self._peek_view = self._mv[off : off + (ref & _LEN_MASK)].toreadonly()
            return self._peek_view
        if ref == _AGAIN:
            return None
        self._fail(int(ref))
        return None

    def release(self) -> None:
        """Give the peeked record's space back to the producer; its view becomes unusable."""
        if self._peek_view is None:
            raise errors.RingStateError("release() without a peek()")
        self._drop_peek()
        rc = _release(self._r)
        if rc < 0 and rc != lib.NMQ_ESTATE:
            self._fail(rc)
