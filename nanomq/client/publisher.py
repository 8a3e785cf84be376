"""Publisher: sync, async (futures with delivery callbacks) and batch publishing to a broker.

Shape: a pool of `pool_size` connections, each read by whichever thread waits on it (a
synchronous publish reads its own ack) or else by its own I/O thread, which resolves futures
(so `on_delivery` callbacks run without the caller polling). Messages are encoded with
`nanomq.record.encode_batch_after` straight behind the frame's fields (one C call per frame,
a single message included) and the PUBLISH frame carries those bytes unchanged. The number of
unacknowledged messages is bounded by `max_in_flight`: a publish that would exceed it blocks
until acks free room, and raises PublishTimeoutError when `timeout` passes first.

Ordering: messages with the same (topic, partition) or the same (topic, key) always take
the same connection, so they are appended in the order they were published; keyless
messages without a partition spread round-robin over the pool.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from nanomq import protocol as P
from nanomq import record
from nanomq.client._conn import Connection
from nanomq.client._util import Backoff, Deadline
from nanomq.errors import (
    BrokerUnreachableError,
    ClientClosedError,
    ConnectionLostError,
    PayloadTooLargeError,
    PublishTimeoutError,
)

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview
DeliveryCallback = Callable[[BaseException | None, int | None], None]


def parse_acks(acks: int | str) -> int:
    """0, 1, "all" (or -1) → the protocol's acks level."""
    if acks in (0, "0"):
        return P.Acks.NONE
    if acks in (1, "1"):
        return P.Acks.LEADER
    if acks in ("all", -1, "-1"):
        return P.Acks.ALL
    raise ValueError(f"acks must be 0, 1 or 'all', not {acks!r}")


class Pool:
    """`size` connections to one broker, each reconnected with back-off when it breaks."""

    def __init__(
        self, address: str | tuple[str, int], size: int, reconnect_timeout: float, **conn: Any
    ) -> None:
        if size < 1:
            raise ValueError(f"pool_size must be at least 1, not {size}")
        self._address = address
        self._conn_kwargs = conn
        self._reconnect_timeout = reconnect_timeout
        self._locks = [threading.Lock() for _ in range(size)]
        self._closed = False
        # the first connection is made at once so a wrong address or token fails the constructor
        first = Connection(address, **conn)
        self._conns: list[Connection | None] = [first] + [None] * (size - 1)
        self.welcome = first.welcome
        self.address = first.address

    def __len__(self) -> int:
        return len(self._conns)

    def get(self, index: int, deadline: Deadline | None = None) -> Connection:
        """A live connection for slot `index`, reconnecting (with back-off) if it broke."""
        conn = self._conns[index]
        if conn is not None and not conn.closed.is_set():
            return conn
        with self._locks[index]:
            conn = self._conns[index]
            if conn is not None and not conn.closed.is_set():
                return conn
            if self._closed:
                raise ClientClosedError("the publisher is closed")
            if deadline is None or deadline.remaining() is None:
                deadline = Deadline(self._reconnect_timeout)
            backoff = Backoff()
            while True:
                try:
                    conn = Connection(self._address, **self._conn_kwargs)
                    break
                except (BrokerUnreachableError, ConnectionLostError) as exc:
                    delay = backoff.next_delay()
                    left = deadline.remaining()
                    if left is not None and left <= delay:
                        raise BrokerUnreachableError(
                            f"{exc} (gave up reconnecting after {self._reconnect_timeout} s)"
                        ) from exc
                    log.debug("reconnect to %s failed (%s); retrying in %.3f s", self.address, exc, delay)
                    time.sleep(delay)
            self._conns[index] = conn
            self.welcome = conn.welcome
            return conn

    def current(self, index: int) -> Connection | None:
        """Slot `index`'s connection as it is (None before the first use; maybe closed)."""
        return self._conns[index]

    def close(self) -> None:
        """Close every connection."""
        self._closed = True
        for i, conn in enumerate(self._conns):
            if conn is not None:
                conn.close()
                self._conns[i] = None


class _InFlight:
    """A counter of unacknowledged messages bounded by `limit`, with waiting for room and for zero."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {limit}")
        self.limit = limit
        self.count = 0
        self._cond = threading.Condition()

    def acquire(self, n: int, timeout: float | None) -> None:
        # A batch larger than the limit is let through alone, or it could never be sent.
        with self._cond:
            if self.count + n <= self.limit or self.count == 0:  # room: no predicate, no wait
                self.count += n
                return
            if not self._cond.wait_for(lambda: self.count == 0 or self.count + n <= self.limit, timeout):
                raise PublishTimeoutError(
                    f"{self.count} messages in flight (max_in_flight={self.limit}) and no room for {n} more "
                    f"within {timeout} s: the broker is not acknowledging fast enough"
                )
            self.count += n

    def release(self, n: int) -> None:
        with self._cond:
            self.count -= n
            if self.count <= 0 or self.count + n > self.limit:
                self._cond.notify_all()

    def wait_empty(self, timeout: float | None) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.count == 0, timeout)
            return self.count


class _Entry:
    """One publish call waiting in a group: its future and how many messages it holds."""

    __slots__ = ("count", "future", "single", "size")

    def __init__(self, future: Future[Any], count: int, single: bool, size: int) -> None:
        self.future = future
        self.count = count
        self.single = single  # resolves to one offset (publish/publish_async), else a list
        self.size = size  # bytes its records take encoded (without compression)


class _Group:
    """Messages for one (topic, partition, partitioning key) waiting to go out in one frame."""

    __slots__ = ("created", "entries", "key", "keyed", "keys", "partition", "stamps", "topic", "values")

    def __init__(self, topic: str, partition: int, key: bytes | None) -> None:
        self.topic = topic
        self.partition = partition
        self.key = key
        self.values: list[Buffer] = []
        self.keys: list[Buffer | None] = []
        self.keyed = False  # some message has a key (else the frame's batch is encoded without keys)
        self.stamps: list[int] = []
        self.entries: list[_Entry] = []
        self.created = time.monotonic()


class _Slot:
    """Per connection of the pool: PUBLISH frames awaiting their ack, and groups waiting to be sent."""

    __slots__ = ("frame_buf", "frames", "groups", "send_lock")

    def __init__(self) -> None:
        self.frames = 0
        self.groups: dict[tuple[str, int, bytes | None], _Group] = {}
        # held from taking messages to having written them: frames leave in the order taken
        self.send_lock = threading.RLock()
        # where batch frames are encoded, under send_lock, each written before the next is built
        self.frame_buf: bytearray | None = None

    def buffer_for(self, limits: P.Welcome) -> bytearray:
        """The slot's frame buffer: room for the largest frame and the encoder's slack of up
        to 7 padding bytes a record it reserves before the exact size is known."""
        need = limits.max_frame + 8 * limits.max_batch
        if self.frame_buf is None or len(self.frame_buf) < need:
            self.frame_buf = bytearray(need)
        return self.frame_buf


_RECORD_PAD = record.HEADER_SIZE + 7

_PREFIXES = 1024
"""PUBLISH frame prefixes a publisher keeps (per topic and partition, see Publisher._prefix)."""

MAX_FRAMES_IN_FLIGHT = 2
"""PUBLISH frames per connection awaiting an ack before further messages wait and go out together.

Messages published while this many frames are unanswered are gathered and sent as one batch frame
when an ack comes back (acks decide the batch size, like Nagle's algorithm): at a low rate every
message goes out at once; under load, one frame (one C encode, one syscall, one ack) carries many.
"""


def _batch_size(values: Sequence[Buffer], keys: Sequence[Buffer | None] | None, single: bool) -> int:
    """Bytes the records of `values` (and `keys`) will occupy, after checking each against the
    limits (PayloadTooLargeError names the first one over). Computed in Python, with one pass
    over the lengths for a batch of equal sizes: `record.record_size` is a cffi call that
    releases the GIL (≈ 18 µs per message on the publish path when the I/O thread is busy)."""
    if keys is None and len(values) == 1:  # one message, the usual publish call
        size = len(values[0])
        if size > record.MAX_PAYLOAD:
            what = "message" if single else "payload of message 0"
            raise PayloadTooLargeError(size, record.MAX_PAYLOAD, what=what)
        return (_RECORD_PAD + size) & ~7
    lens = list(map(len, values))
    n = len(lens)
    if max(lens) > record.MAX_PAYLOAD:
        i = next(i for i, x in enumerate(lens) if x > record.MAX_PAYLOAD)
        what = "message" if single else f"payload of message {i}"
        raise PayloadTooLargeError(lens[i], record.MAX_PAYLOAD, what=what)
    if keys is not None:
        klens = [0 if k is None else len(k) for k in keys]
        if max(klens) > record.MAX_KEY:
            big = max(klens)
            raise PayloadTooLargeError(big, record.MAX_KEY, what="key")
        return sum((_RECORD_PAD + v + k) & ~7 for v, k in zip(lens, klens, strict=True))
    if lens.count(lens[0]) == n:
        return n * ((_RECORD_PAD + lens[0]) & ~7)
    return sum((_RECORD_PAD + v) & ~7 for v in lens)


def body_limit(limits: P.Welcome, topic: str, key: bytes | None) -> int:
    """Bytes of records one PUBLISH frame to `topic` (with partitioning `key`) may carry."""
    return limits.max_frame - P.PUBLISH_OVERHEAD - len(topic.encode()) - len(key or b"")


def cut_frames(
    entries: Iterable[tuple[int, int]], max_messages: int, limit: int
) -> list[tuple[int, int, int, int]]:
    """Cut publish calls waiting together — (messages, record bytes) each — into frames of at most
    `max_messages` messages and `limit` bytes, on call boundaries (a call alone may exceed them:
    its own limits were checked when it was made). Returns (first call, end call, first message,
    end message) per frame."""
    out = []
    e0 = v0 = v = count = size = 0
    i = -1
    for i, (cnt, esize) in enumerate(entries):
        if i > e0 and (count + cnt > max_messages or size + esize > limit):
            out.append((e0, i, v0, v))
            e0, v0, count, size = i, v, 0, 0
        count += cnt
        size += esize
        v += cnt
    out.append((e0, i + 1, v0, v))
    return out


class Publisher:
    """Publishes messages to a NanoMQ broker; thread-safe.

    `acks`: 0 (fire and forget: futures resolve to None once written to the socket), 1 (the
    broker appended the message) or "all" (the broker fsynced it: it survives a broker crash).
    `tls`: None (plain TCP), True (verify with the system's CAs) or an `ssl.SSLContext`.
    `compression`: None, "zstd" or "lz4", applied per record (kept only when it helps).
    `max_in_flight`: unacknowledged messages at most; publishing beyond blocks (back-pressure).
    `linger_ms`: when > 0, messages wait up to this long to be sent together (otherwise they go
    out at once, or — while `MAX_FRAMES_IN_FLIGHT` frames await acks — with the next ack).
    `pool_size`: connections to the broker.
    The constructor connects once and raises BrokerUnreachableError (naming the address) or
    NotAuthorizedError at once; a connection that breaks later is re-established with back-off
    for up to `reconnect_timeout` seconds on the next publish.
    """

    def __init__(
        self,
        address: str | tuple[str, int] = "127.0.0.1:9000",
        acks: int | str = 1,
        client_id: str | None = None,
        auth_token: str | bytes | None = None,
        tls: bool | ssl.SSLContext | None = None,
        compression: str | None = None,
        max_in_flight: int = 8192,
        linger_ms: float = 0.0,
        pool_size: int = 1,
        *,
        connect_timeout: float = 5.0,
        reconnect_timeout: float = 10.0,
        max_batch_messages: int | None = None,
    ) -> None:
        self.acks = parse_acks(acks)
        self.codec = record.Codec.parse(compression)
        self._inflight = _InFlight(max_in_flight)
        self.linger_ms = float(linger_ms)
        self._pool = Pool(
            address,
            pool_size,
            reconnect_timeout,
            client_id=client_id or f"nanomq-py-{os.getpid()}",
            auth_token=auth_token,
            tls=tls,
            connect_timeout=connect_timeout,
            on_push=_on_push,
        )
        self.address = self._pool.address
        limits = self._pool.welcome
        self.max_batch_messages = min(max_batch_messages or limits.max_batch, limits.max_batch)
        self._rr = itertools.count()
        self._producer_id = random.getrandbits(63) or 1
        self._seq = 0
        self._closed = False
        self._topics: set[str] = set()  # names already validated
        self._prefixes: dict[tuple[str, int], bytes] = {}  # see _prefix
        self._lock = threading.Lock()  # guards the slots and the sequence counter
        self._slots = [_Slot() for _ in range(pool_size)]
        self._linger_thread: threading.Thread | None = None
        self._linger_wake = threading.Condition(self._lock)
        if self.linger_ms > 0:
            self._linger_thread = threading.Thread(
                target=self._linger_loop, name="nanomq-linger", daemon=True
            )
            self._linger_thread.start()

    # ------------------------------------------------------------- public API ----

    def publish(
        self,
        topic: str,
        value: Buffer,
        key: Buffer | None = None,
        *,
        partition: int | None = None,
        timestamp_ns: int | None = None,
        timeout: float | None = 30.0,
    ) -> int | None:
        """Publish one message and wait for its ack: returns its offset (None with acks=0).

        Raises TopicNotFoundError, PayloadTooLargeError, NotAuthorizedError, PublishTimeoutError
        (no room in flight or no ack within `timeout`), ConnectionLostError (the connection broke
        with the message unacknowledged: it may or may not have been appended).
        """
        deadline = Deadline(timeout)
        keys = None if key is None else [key]
        fut, slot = self._submit(topic, [value], keys, partition, timestamp_ns, deadline, True)
        return self._wait(fut, slot, deadline)

    def publish_async(
        self,
        topic: str,
        value: Buffer,
        key: Buffer | None = None,
        *,
        partition: int | None = None,
        timestamp_ns: int | None = None,
        on_delivery: DeliveryCallback | None = None,
        timeout: float | None = 30.0,
    ) -> Future[int | None]:
        """Publish one message without waiting: a future of its offset (None with acks=0).

        `on_delivery(error, offset)` runs once the broker answered (keep it short), on whichever
        thread reads the connection then: the client's I/O thread, or a thread of yours that is
        waiting in a call of this publisher. Blocks only while `max_in_flight` messages are
        unacknowledged, for at most `timeout` seconds (then PublishTimeoutError).
        """
        fut, _ = self._submit(
            topic, [value], None if key is None else [key], partition, timestamp_ns, Deadline(timeout), True
        )
        if on_delivery is not None:
            fut.add_done_callback(lambda f: _deliver(on_delivery, f))
        return fut

    def publish_batch(
        self,
        topic: str,
        values: Sequence[Buffer],
        keys: Sequence[Buffer | None] | None = None,
        *,
        partition: int | None = None,
        timestamp_ns: int | Sequence[int] | None = None,
        timeout: float | None = 30.0,
    ) -> list[int] | None:
        """Publish `values` in one frame and wait: their offsets, consecutive (None with acks=0).

        A batch goes to one partition (`partition`, else the partition of its first key, else the
        broker's choice): publish messages with different keys in separate batches.
        """
        deadline = Deadline(timeout)
        fut, slot = self._submit(topic, values, keys, partition, timestamp_ns, deadline, False)
        return self._wait(fut, slot, deadline)

    def publish_batch_async(
        self,
        topic: str,
        values: Sequence[Buffer],
        keys: Sequence[Buffer | None] | None = None,
        *,
        partition: int | None = None,
        timestamp_ns: int | Sequence[int] | None = None,
        on_delivery: Callable[[BaseException | None, list[int] | None], None] | None = None,
        timeout: float | None = 30.0,
    ) -> Future[list[int] | None]:
        """`publish_batch` without waiting: a future of the offsets."""
        fut, _ = self._submit(topic, values, keys, partition, timestamp_ns, Deadline(timeout), False)
        if on_delivery is not None:
            fut.add_done_callback(lambda f: _deliver(on_delivery, f))
        return fut

    def flush(self, timeout: float | None = None) -> int:
        """Send what waits and block until every message is acknowledged or `timeout` passes.

        Returns how many messages are still unacknowledged (0: all delivered or failed).
        """
        for slot in range(len(self._slots)):
            self._flush_slot(slot, force=True)
        return self._inflight.wait_empty(timeout)

    @property
    def in_flight(self) -> int:
        """Messages published and not yet acknowledged (or failed)."""
        return self._inflight.count

    @property
    def max_in_flight(self) -> int:
        """The back-pressure bound on unacknowledged messages."""
        return self._inflight.limit

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush (up to `timeout`), then close the connections; idempotent."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            with self._lock:
                self._linger_wake.notify_all()
            if self._linger_thread is not None:
                self._linger_thread.join(timeout=5)
            self._pool.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Publisher({self.address!r}, acks={self.acks!r}, in_flight={self.in_flight})"

    # ---------------------------------------------------------------- sending ----

    def _slot_of(self, topic: str, partition: int | None, key: Buffer | None) -> int:
        n = len(self._slots)
        if n == 1:
            return 0
        if partition is not None:
            return zlib.crc32(topic.encode(), partition) % n
        if key is not None:
            return zlib.crc32(bytes(key), zlib.crc32(topic.encode())) % n
        return next(self._rr) % n

    def _submit(
        self,
        topic: str,
        values: Sequence[Buffer],
        keys: Sequence[Buffer | None] | None,
        partition: int | None,
        timestamp_ns: int | Sequence[int] | None,
        deadline: Deadline,
        single: bool,
    ) -> tuple[Future[Any], int]:
        """Queue or send one publish call: the future of its offset(s), and its pool slot."""
        if self._closed:
            raise ClientClosedError("the publisher is closed")
        if topic not in self._topics:
            P.validate_topic_name(topic)
            self._topics.add(topic)
        n = len(values)
        fut: Future[Any] = Future()
        if n == 0:
            fut.set_result([] if self.acks != P.Acks.NONE else None)
            return fut, 0
        if keys is not None and len(keys) != n:
            raise ValueError(f"{len(keys)} keys for {n} values: give one key (or None) per value")
        limits = self._pool.welcome
        if n > limits.max_batch:
            raise PayloadTooLargeError(n, limits.max_batch, what="batch of messages (count)")
        size = _batch_size(values, keys, single)
        first_key = None if keys is None else next((bytes(k) for k in keys if k is not None), None)
        room = body_limit(limits, topic, first_key)
        if size > room:
            raise PayloadTooLargeError(size, room, what="encoded batch")
        if timestamp_ns is None:
            stamps = [time.time_ns()] * n
        elif isinstance(timestamp_ns, int):
            stamps = [timestamp_ns] * n
        else:
            stamps = list(timestamp_ns)
            if len(stamps) != n:
                raise ValueError(f"{len(stamps)} timestamps for {n} values")
        self._inflight.acquire(n, deadline.remaining())
        part = -1 if partition is None else partition
        # keyless messages without a partition share one group: the broker spreads frames round-robin
        gkey = (topic, part, first_key if part < 0 else None)
        slot_index = self._slot_of(topic, partition, first_key)
        slot = self._slots[slot_index]
        entry = _Entry(fut, n, single, size)
        # sending happens under the slot's send lock, in order with any flush under way; when a
        # flush holds it, the call first tries to join the waiting groups without it
        if slot.send_lock.acquire(blocking=False):
            try:
                self._enqueue(slot_index, slot, gkey, entry, values, keys, stamps, n, may_send=True)
            finally:
                slot.send_lock.release()
        elif not self._enqueue(slot_index, slot, gkey, entry, values, keys, stamps, n, may_send=False):
            with slot.send_lock:
                self._enqueue(slot_index, slot, gkey, entry, values, keys, stamps, n, may_send=True)
        return fut, slot_index

    def _enqueue(
        self,
        slot_index: int,
        slot: _Slot,
        gkey: tuple[str, int, bytes | None],
        entry: _Entry,
        values: Sequence[Buffer],
        keys: Sequence[Buffer | None] | None,
        stamps: list[int],
        n: int,
        may_send: bool,
    ) -> bool:
        """Add to the slot's waiting groups, or (`may_send`, with the slot's send lock held) send at
        once when nothing waits and fewer than MAX_FRAMES_IN_FLIGHT frames are unanswered.
        Returns False (having done nothing) when it would send but may not."""
        topic, part, _ = gkey
        with self._lock:
            group = slot.groups.get(gkey)
            direct = (
                group is None
                and not slot.groups
                and self.linger_ms <= 0
                and (slot.frames < MAX_FRAMES_IN_FLIGHT or self.acks == P.Acks.NONE)
            )
            if direct and not may_send:
                return False
            if direct:
                slot.frames += 1
            elif group is None:
                group = slot.groups[gkey] = _Group(topic, part, gkey[2])
                if self.linger_ms > 0:
                    self._linger_wake.notify()
            if not direct:
                group.values.extend(values)
                if keys is not None:
                    group.keys.extend(keys)
                    group.keyed = group.keyed or any(k is not None for k in keys)
                else:
                    group.keys.extend(itertools.repeat(None, n))
                group.stamps.extend(stamps)
                group.entries.append(entry)
                flush_now = len(group.values) >= self.max_batch_messages
        if direct:
            # straight to the wire, as one frame (a call larger than max_batch_messages goes
            # through a group, which cuts it into frames)
            if n <= self.max_batch_messages:
                try:
                    conn = self._pool.get(slot_index)
                except BaseException as exc:  # as _send_frames: the call fails, the count is returned
                    self._frame_done(slot_index)
                    self._resolve([entry], exc, None, n)
                    if isinstance(exc, Exception):
                        return True
                    raise
                self._send(slot_index, conn, topic, part, gkey[2], values, keys, stamps, [entry], n)
                return True
            group = _Group(topic, part, gkey[2])
            group.values.extend(values)
            group.keys.extend(keys if keys is not None else itertools.repeat(None, n))
            group.keyed = keys is not None and any(k is not None for k in keys)
            group.stamps.extend(stamps)
            group.entries.append(entry)
            self._send_frames(slot_index, [group], reserved=1)
        elif flush_now or (self.linger_ms <= 0 and slot.frames == 0):
            self._flush_slot(slot_index, force=True)
        return True

    def _flush_slot(self, slot_index: int, force: bool) -> None:
        """Send the slot's waiting groups (force: whatever the frames in flight; else only when
        fewer than MAX_FRAMES_IN_FLIGHT frames await acks)."""
        slot = self._slots[slot_index]
        with slot.send_lock:
            with self._lock:
                if not slot.groups or (not force and slot.frames >= MAX_FRAMES_IN_FLIGHT):
                    return
                groups = list(slot.groups.values())
                slot.groups.clear()
                frames = sum(self._frame_count(g) for g in groups)
                slot.frames += frames
            self._send_frames(slot_index, groups, reserved=frames)

    def _frame_count(self, group: _Group) -> int:
        return len(self._chunks(group))

    def _chunks(self, group: _Group) -> list[tuple[int, int, int, int]]:
        """Cut a group into frames on entry boundaries: (first entry, end entry, first value, end value)."""
        limit = body_limit(self._pool.welcome, group.topic, group.key)
        return cut_frames(((e.count, e.size) for e in group.entries), self.max_batch_messages, limit)

    def _send_frames(self, slot_index: int, groups: list[_Group], reserved: int) -> None:
        """Encode and send `groups` on the slot's connection (`reserved` frames were counted)."""
        try:
            conn = self._pool.get(slot_index)
        except BaseException as exc:
            self._fail_groups(slot_index, groups, exc, reserved)
            if isinstance(exc, Exception):
                return
            raise
        for group in groups:
            for e0, e1, v0, v1 in self._chunks(group):
                self._send_one(slot_index, conn, group, group.entries[e0:e1], v0, v1)

    def _send_one(
        self, slot_index: int, conn: Connection, group: _Group, entries: list[_Entry], v0: int, v1: int
    ) -> None:
        g = group
        keys = g.keys[v0:v1] if g.keyed else None
        values, stamps = g.values[v0:v1], g.stamps[v0:v1]
        self._send(slot_index, conn, g.topic, g.partition, g.key, values, keys, stamps, entries, v1 - v0)

    def _send(
        self,
        slot_index: int,
        conn: Connection,
        topic: str,
        part: int,
        key: bytes | None,
        values: Sequence[Buffer],
        keys: Sequence[Buffer | None] | None,
        stamps: list[int],
        entries: list[_Entry],
        n: int,
    ) -> None:
        """Encode `values` as one batch and send it as one PUBLISH frame (one frame counted)."""
        if keys is not None and keys.count(None) == n:
            keys = None
        with self._lock:
            seq = self._seq
            self._seq += n
        try:
            # one C call from the lists straight behind the frame's fields, in the slot's buffer
            # (sent before the next frame is built there)
            frame = record.encode_batch_after(
                self._prefix(topic, part, key),
                values,
                keys,
                timestamp_ns=stamps,
                producer_id=self._producer_id,
                first_sequence=seq,
                codec=self.codec,
                into=self._slots[slot_index].buffer_for(conn.welcome),
            )
            build = lambda corr: P.seal_frame(frame, P.Opcode.PUBLISH, corr)  # noqa: E731
            if self.acks == P.Acks.NONE:
                conn.send(build(conn.next_id()))
                self._frame_done(slot_index)
                self._resolve(entries, None, None, n)
                return
            conn.request_cb(build, lambda frame, exc: self._on_ack(slot_index, frame, exc, entries, n))
        except Exception as exc:
            self._frame_done(slot_index)
            self._resolve(entries, exc, None, n)

    def _prefix(self, topic: str, part: int, key: bytes | None) -> bytes:
        """What precedes the records in a PUBLISH frame (`P.publish_prefix`), kept per topic and
        partition for keyless frames (a bounded cache: cleared at _PREFIXES entries)."""
        if key is not None:
            return P.publish_prefix(topic, part, self.acks, key=key)
        prefix = self._prefixes.get((topic, part))
        if prefix is None:
            if len(self._prefixes) >= _PREFIXES:
                self._prefixes.clear()
            prefix = self._prefixes[topic, part] = P.publish_prefix(topic, part, self.acks)
        return prefix

    def _on_ack(
        self,
        slot_index: int,
        frame: P.Frame | None,
        exc: BaseException | None,
        entries: list[_Entry],
        n: int,
    ) -> None:
        """On the thread reading the connection: resolve the frame's futures, then send what
        waited for this ack (`frame`, or the error the frame failed with)."""
        base = None
        if frame is not None:
            try:
                base = P.parse_publish_ack(frame).base_offset
            except Exception as e:  # a malformed ack fails this frame, not the I/O thread
                exc = e
        self._frame_done(slot_index)
        self._resolve(entries, exc, base, n)
        if self._slots[slot_index].groups:
            if isinstance(exc, ConnectionLostError):
                # this is the broken connection's own thread: reconnect (with back-off) elsewhere
                threading.Thread(target=self._flush_slot, args=(slot_index, False), daemon=True).start()
            else:
                self._flush_slot(slot_index, force=False)

    def _frame_done(self, slot_index: int) -> None:
        with self._lock:
            self._slots[slot_index].frames -= 1

    def _resolve(self, entries: list[_Entry], exc: BaseException | None, base: int | None, n: int) -> None:
        self._inflight.release(n)
        off = base
        for e in entries:
            if exc is not None:
                e.future.set_exception(exc)
            elif off is None:
                e.future.set_result(None)
            else:
                e.future.set_result(off if e.single else list(range(off, off + e.count)))
                off += e.count

    def _fail_groups(self, slot_index: int, groups: list[_Group], exc: BaseException, reserved: int) -> None:
        with self._lock:
            self._slots[slot_index].frames -= reserved
        for g in groups:
            self._resolve(g.entries, exc, None, len(g.values))

    def _wait(self, fut: Future[Any], slot_index: int, deadline: Deadline) -> Any:
        """The result of a publish call, reading its connection on this thread meanwhile (the
        ack reaches the caller without a hand-off from the reader thread)."""
        conn = self._pool.current(slot_index)
        if conn is not None and not fut.done():
            conn.wait_for(fut.done, deadline.remaining())
        try:
            return fut.result(deadline.remaining())
        except TimeoutError:
            raise PublishTimeoutError(
                "no acknowledgement from the broker within the timeout (the message may still be appended)"
            ) from None

    # ---------------------------------------------------------------- linger ----

    def _linger_loop(self) -> None:
        linger = self.linger_ms / 1e3
        while not self._closed:
            due = []
            with self._lock:
                oldest = min((g.created for s in self._slots for g in s.groups.values()), default=None)
                if oldest is None:
                    self._linger_wake.wait(0.5)
                    continue
                wait = oldest + linger - time.monotonic()
                if wait > 0:
                    self._linger_wake.wait(wait)
                    continue
                due = [i for i, s in enumerate(self._slots) if s.groups]
            for i in due:
                try:
                    self._flush_slot(i, force=True)
                except Exception:  # errors went to the futures; keep lingering for the others
                    log.exception("linger flush failed")


def _on_push(frame: P.Frame) -> None:
    """A frame no request waits for: the ERROR of a publish sent with acks=0."""
    if frame.opcode == P.Opcode.ERROR:
        err = P.parse_error(frame)
        log.warning("a publish sent with acks=0 failed: %s (%s)", err.message, err.code)


def _deliver(callback: Callable[[BaseException | None, Any], None], fut: Future[Any]) -> None:
    exc = fut.exception()
    try:
        callback(exc, None if exc is not None else fut.result())
    except Exception:  # a user callback must not kill the I/O thread
        log.exception("on_delivery callback raised")
