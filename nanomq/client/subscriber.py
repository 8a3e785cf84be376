"""Subscriber: messages of a topic pushed by the broker under credit, alone or in a consumer group.

How it works: one connection; per assigned partition a SUBSCRIBE from the position to read
next, after which the broker pushes DELIVER frames (record batches in the record format,
validated here with one C call, then decoded column-wise when the records are alike, else
through `Record` views) as long as this subscriber has credit (bytes). Credit is granted
back as the application takes messages with `poll`, so the broker never sends more than
`max_buffered_bytes` ahead of the application: a slow consumer costs a cursor on the broker
and a bounded buffer here.

In a group, a background thread sends heartbeats; when the broker answers that the group is
rebalancing, the subscriber (after committing, with auto_commit) joins again and moves to its
new partitions, starting each at the group's committed offset (at-least-once: what a member
took but did not commit is delivered again to the next owner). The same thread reconnects,
with back-off, when the connection breaks, and resumes every partition where the application
stopped reading.
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, NamedTuple

from nanomq import protocol as P
from nanomq import record
from nanomq._msgcore import deliver_messages
from nanomq.client._conn import Connection
from nanomq.client._errors import error_from_code
from nanomq.client._util import Backoff, Deadline, Message
from nanomq.errors import (
    BrokerUnreachableError,
    ClientClosedError,
    CommitFailedError,
    ConnectionLostError,
    GroupNotFoundError,
    NanoMQError,
    NotAuthorizedError,
    TopicNotFoundError,
)

log = logging.getLogger(__name__)

Start = str | int | _dt.datetime


class PartitionLag(NamedTuple):
    """Lag of one partition: messages not yet taken, and the age (s) of the oldest of them."""

    partition: int
    position: int
    end_offset: int
    messages: int
    seconds: float


class Lag(NamedTuple):
    """`Subscriber.lag()`: total messages behind, the largest age in seconds, and per partition."""

    messages: int
    seconds: float
    partitions: list[PartitionLag]


def start_to_spec(start: Start) -> tuple[str, int]:
    """`start=` → ("earliest"|"latest", 0), ("offset", n) or ("timestamp", ns)."""
    if isinstance(start, str):
        if start in ("earliest", "latest"):
            return start, 0
        raise ValueError(f"start must be 'earliest', 'latest', an offset, a datetime or ns, not {start!r}")
    if isinstance(start, _dt.datetime):
        if start.tzinfo is None:
            raise ValueError(f"start datetime {start.isoformat()} has no timezone: give an aware datetime")
        ns = int(start.timestamp()) * 1_000_000_000 + start.microsecond * 1000
        return "timestamp", ns
    if isinstance(start, bool) or not isinstance(start, int):
        raise TypeError(f"start must be a str, an int or a datetime, not {type(start).__name__}")
    if start < 0:
        raise ValueError(f"start offset {start} is negative")
    # Offsets are small; nanosecond timestamps since 1970 are > 10**15. Anything that large is a time.
    if start >= TIMESTAMP_THRESHOLD:
        return "timestamp", start
    return "offset", start


_MIN_WINDOW = 128 * 1024  # credit per partition: room for the largest record (64 KiB + key + header) twice
_MAX_DELIVER = 256 * 1024  # record bytes in one DELIVER


_GROUP_CODES = frozenset({"UNKNOWN_MEMBER", "ILLEGAL_GENERATION", "NOT_ASSIGNED", "UNKNOWN_GROUP"})


def _group_moved_on(exc: BaseException) -> bool:
    """Whether `exc` says this member's view of the group is stale (rejoin, do not fail)."""
    code = getattr(exc, "code", None)
    return isinstance(exc, GroupNotFoundError) or getattr(code, "name", None) in _GROUP_CODES


class _Chunk:
    """Messages of one DELIVER not yet handed out: `msgs[i:]`, with the record bytes each
    occupied (`size` each, or `sizes[k]` for message k when they differ) for the credit."""

    __slots__ = ("i", "msgs", "part", "size", "sizes", "sub")

    def __init__(self, msgs: list[Message], sub: int, part: int, size: int, sizes: list[int] | None) -> None:
        self.msgs = msgs
        self.i = 0
        self.sub = sub
        self.part = part
        self.size = size
        self.sizes = sizes


def _ignore(fut: Future[Any]) -> None:
    fut.exception()  # retrieve it: an UNSUBSCRIBE that failed with the connection is fine


TIMESTAMP_THRESHOLD = 10**15
"""An int `start=` at or above this (≈ 11.6 days after the epoch, in ns) is a timestamp, below it
an offset."""


class Subscriber:
    """Reads a topic from a NanoMQ broker: `poll`, `poll_batch`, iteration, `commit`, `seek`, `lag`.

    Without `group` it reads every partition of the topic (or those in `partitions`) from
    `start`: "earliest", "latest", an offset (the same in every partition), or a time — an
    aware `datetime` or nanoseconds since the epoch — meaning the first message at or after it.
    With `group` the broker assigns partitions among the group's members; each starts at the
    group's committed offset, or at `start` when the group has none.
    `auto_commit=True` commits, at each poll (at most every `auto_commit_interval` s) and on
    close, what earlier polls returned; otherwise call `commit()` after processing.
    `max_buffered_bytes`: record bytes the broker may push ahead of the application (the credit
    window, shared by the assigned partitions, at least 128 KiB each).
    `session_timeout_ms`: how long the broker keeps a silent group member before rebalancing.
    The constructor connects, subscribes and (with a group) joins before it returns.
    """

    def __init__(
        self,
        address: str | tuple[str, int] = "127.0.0.1:9000",
        topic: str = "",
        group: str | None = None,
        start: Start = "earliest",
        auto_commit: bool = False,
        client_id: str | None = None,
        auth_token: str | bytes | None = None,
        tls: bool | ssl.SSLContext | None = None,
        *,
        partitions: list[int] | None = None,
        max_buffered_bytes: int = 4 << 20,
        auto_commit_interval: float = 1.0,
        session_timeout_ms: int = 10_000,
        connect_timeout: float = 5.0,
        reconnect_timeout: float = 30.0,
    ) -> None:
        P.validate_topic_name(topic)
        if max_buffered_bytes < _MIN_WINDOW:
            raise ValueError(f"max_buffered_bytes must be at least {_MIN_WINDOW}, not {max_buffered_bytes}")
        self.topic = topic
        self.group = group
        self.auto_commit = auto_commit
        self.auto_commit_interval = auto_commit_interval
        self.max_buffered_bytes = max_buffered_bytes
        self.session_timeout_ms = session_timeout_ms
        self._start = start_to_spec(start)
        self._fixed_partitions = partitions
        self._conn_kwargs: dict[str, Any] = {
            "client_id": client_id or f"nanomq-py-{os.getpid()}",
            "auth_token": auth_token,
            "tls": tls,
            "connect_timeout": connect_timeout,
        }
        self._address = address
        self._reconnect_timeout = reconnect_timeout
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._chunks: collections.deque[_Chunk] = collections.deque()  # messages not yet handed out
        self._count = 0  # messages in _chunks
        self._position: dict[int, int] = {}  # next offset to hand to the application
        self._fetched: dict[int, int] = {}  # next offset expected from the broker
        self._committed: dict[int, int] = {}  # last offsets committed (group only)
        self._initial: dict[int, int] = {}  # where each partition started in this member (group only)
        self._returned: dict[int, int] = {}  # positions as of the previous poll (what auto_commit commits)
        self._sub_of: dict[int, int] = {}  # partition → its current subscription id
        self._part_of: dict[int, int] = {}  # subscription id → partition
        self._pending_credit: dict[int, int] = {}  # subscription → bytes taken and not yet granted back
        self._end: dict[int, int] = {}  # partition → the log's end offset as last reported
        self._assignment: list[int] = []
        self._member_id = ""
        self._generation = -1
        self._error: BaseException | None = None
        self._stale = False  # in a group: a rebalance is under way; nothing is handed out until rejoined
        self._seen_generation = -1  # the newest generation the broker told of (REBALANCE, HEARTBEAT_OK)
        self._lost: dict[int, int] = {}  # revoked partition → position not committed when it was revoked
        self._closed = False
        self._listeners: list[Callable[[], None]] = []
        self._last_auto_commit = time.monotonic()
        self._wake = threading.Event()
        self._rejoin = threading.Event()
        self._heartbeat_interval = 1.0
        self._conn = self._connect_once()
        self.address = self._conn.address
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise
        self._thread = threading.Thread(target=self._maintain, name="nanomq-subscriber", daemon=True)
        self._thread.start()

    # --------------------------------------------------------------- the API ----

    def poll(self, timeout: float | None = None) -> Message | None:
        """The next message, or None when none arrives within `timeout` seconds (None: wait)."""
        msgs = self.poll_batch(1, timeout)
        return msgs[0] if msgs else None

    def poll_batch(self, max_messages: int = 256, timeout: float | None = 0.1) -> list[Message]:
        """Up to `max_messages` messages (those already here, or the first to arrive within
        `timeout` seconds); [] on timeout. Raises the error that stopped the subscription."""
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        self._maybe_auto_commit()
        if self.group is not None and self._count and not self._stale:
            # a REBALANCE that has reached the socket fences this member before it hands out
            # more of what it buffered: the partitions may be another member's now, which may
            # already have committed past these messages (the random-kill group test caught a
            # member doing so while busy with its buffer: 1,000 messages processed again after
            # a commit covered them)
            self._conn.read_ready()
        if (not self._count or self._stale) and (timeout is None or timeout > 0):
            self._wait_ready(timeout)
        with self._cond:
            if not self._count or self._stale:
                self._check()
            n = min(max_messages, self._count) if not self._stale else 0
            if n == 0:
                return []
            self._count -= n
            out: list[Message] = []
            taken = []
            chunks, pos = self._chunks, self._position
            while n:
                c = chunks[0]
                msgs, i = c.msgs, c.i
                j = min(len(msgs), i + n)
                if i == 0 and j == len(msgs) and not out:
                    out = msgs
                else:
                    out.extend(msgs[i:j])
                taken.append((c.sub, (j - i) * c.size if c.sizes is None else sum(c.sizes[i:j])))
                pos[c.part] = msgs[j - 1].offset + 1
                n -= j - i
                if j == len(msgs):
                    chunks.popleft()
                else:
                    c.i = j
        self._grant(taken)
        return out

    def _ready(self) -> bool:
        return bool((self._count and not self._stale) or self._error or self._closed)

    def _wait_ready(self, timeout: float | None) -> None:
        """Wait until messages are here (or an error, or close), reading the connection on this
        thread meanwhile (no hand-off from the reader thread); while it is being replaced
        (reconnect), wait for the maintenance thread instead."""
        deadline = Deadline(timeout)
        while not self._ready():
            left = deadline.remaining()
            if left is not None and left <= 0:
                return
            conn = self._conn

            def done(conn: Connection = conn) -> bool:
                return self._ready() or self._conn is not conn

            if conn.closed.is_set():
                with self._cond:
                    self._cond.wait_for(done, min(left or 0.5, 0.5))
                continue
            conn.wait_for(done, left)

    def __iter__(self) -> Iterator[Message]:
        """Messages forever (blocking); stops only by an error or `close()`."""
        while not self._closed:
            yield from self.poll_batch(256, timeout=0.5)

    def commit(self, timeout: float | None = 30.0) -> None:
        """Commit the position after every message returned so far; durable when it returns.

        Without a group there is nothing to commit (a no-op). Raises NanoMQError when the group
        moved on (this member lost the partition in a rebalance: its messages go to the next owner).
        """
        if self.group is None:
            return
        with self._lock:
            offsets = {p: o for p, o in self._position.items() if p in self._assignment}
            lost, self._lost = self._lost, {}
            generation = self._generation
        self._commit(offsets, generation, timeout)
        if lost:
            raise CommitFailedError(
                f"partitions {sorted(lost)} of {self.topic!r} were reassigned in a rebalance before messages "
                f"up to offsets {lost} were committed: their next owner reads them again"
            )

    def seek(self, position: Start, partition: int | None = None) -> None:
        """Read from `position` next ("earliest", "latest", an offset or a time), in `partition`
        or in every assigned partition. Buffered messages of those partitions are dropped."""
        spec = start_to_spec(position)
        with self._lock:
            parts = list(self._assignment) if partition is None else [partition]
            if partition is not None and partition not in self._assignment:
                raise ValueError(
                    f"partition {partition} is not assigned to this subscriber: {self._assignment}"
                )
        offsets = self._resolve(parts, spec)
        with self._lock:
            self._drop_buffered(set(parts))
            for p, off in offsets.items():
                self._position[p] = self._fetched[p] = off
            self._subscribe(offsets)

    def lag(self, timeout: float | None = 10.0) -> Lag:
        """How far behind the end of each assigned partition this subscriber is: messages not yet
        returned by poll, and the age in seconds of the oldest of them (0 when caught up)."""
        with self._lock:
            parts = list(self._assignment)
            positions = {p: self._position.get(p, 0) for p in parts}
            buffered = {}
            for c in self._chunks:
                buffered.setdefault(c.part, c.msgs[c.i])
        ends = self._offsets(parts, timeout)
        now = time.time_ns()
        out = []
        for p in parts:
            pos, end = positions[p], ends[p].end_offset
            behind = max(0, end - pos)
            seconds = 0.0
            if behind:
                oldest = buffered.get(p)
                ts = (
                    oldest.timestamp
                    if oldest is not None and oldest.offset == pos
                    else self._timestamp_at(p, pos)
                )
                if ts is not None:
                    seconds = max(0.0, (now - ts) / 1e9)
            out.append(PartitionLag(p, pos, end, behind, seconds))
        return Lag(sum(x.messages for x in out), max((x.seconds for x in out), default=0.0), out)

    @property
    def assignment(self) -> list[int]:
        """Partitions this subscriber reads now (in a group: those the broker assigned it)."""
        with self._lock:
            return list(self._assignment)

    @property
    def position(self) -> dict[int, int]:
        """Per assigned partition, the offset the next message returned will have."""
        with self._lock:
            return {p: self._position.get(p, 0) for p in self._assignment}

    @property
    def generation(self) -> int:
        """The group generation this member belongs to (-1 without a group)."""
        return self._generation

    def close(self, timeout: float | None = 10.0) -> None:
        """Commit (with auto_commit), leave the group and close the connection; idempotent."""
        if self._closed:
            return
        try:
            if self.auto_commit and self.group is not None and self._error is None:
                try:
                    self.commit(timeout)
                except NanoMQError as exc:
                    log.warning("final auto-commit failed: %s", exc)
            if self.group is not None and self._member_id:
                try:
                    conn = self._conn
                    leave = conn.request(lambda c: P.encode_leave(c, self.group, self._member_id))
                    conn.result(leave, timeout)
                except (NanoMQError, TimeoutError, OSError) as exc:
                    log.debug("leave failed: %s", exc)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._wake.set()
            self._notify()
            self._thread.join(timeout=5)
            self._conn.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Subscriber({self.address!r}, {self.topic!r}, group={self.group!r}, "
            f"assignment={self.assignment})"
        )

    # ----------------------------------------------------------- connecting ----

    def _connect_once(self) -> Connection:
        return Connection(self._address, on_push=self._on_push, on_close=self._on_close, **self._conn_kwargs)

    def _on_close(self, conn: Connection, reason: BaseException | None) -> None:
        if not self._closed:
            log.info("subscriber lost its connection to %s: %s", conn.address, reason)
            self._wake.set()

    def _setup(self) -> None:
        """After (re)connecting: join the group or take the partitions, then subscribe."""
        if self.group is not None:
            self._join()
        else:
            parts = self._fixed_partitions
            if parts is None:
                parts = list(range(self._partition_count()))
            with self._lock:
                known = {p: self._position[p] for p in parts if p in self._position}
            missing = [p for p in parts if p not in known]
            offsets = dict(known)
            if missing:
                offsets.update(self._resolve(missing, self._start))
            with self._lock:
                self._assignment = sorted(parts)
                self._drop_buffered(set(parts))
                for p, off in offsets.items():
                    self._position[p] = self._fetched[p] = off
                self._subscribe(offsets)

    def _reconnect(self) -> None:
        backoff = Backoff()
        deadline = Deadline(self._reconnect_timeout)
        while not self._closed:
            try:
                conn = self._connect_once()
            except (BrokerUnreachableError, ConnectionLostError) as exc:
                delay = backoff.next_delay()
                left = deadline.remaining()
                if left is not None and left <= delay:
                    self._set_error(
                        BrokerUnreachableError(
                            f"{exc} (gave up reconnecting after {self._reconnect_timeout} s)"
                        )
                    )
                    return
                self._wake.wait(delay)
                continue
            except NanoMQError as exc:
                self._set_error(exc)
                return
            with self._lock:
                self._conn = conn
                self._sub_of.clear()
                self._part_of.clear()
                self._pending_credit.clear()
            try:
                self._setup()
            except ConnectionLostError:
                continue
            except NanoMQError as exc:
                self._set_error(exc)
            return

    # ------------------------------------------------------------- the wire ----

    def _request(self, build: Callable[[int], bytes], timeout: float | None = 30.0) -> P.Frame:
        conn = self._conn
        return conn.result(conn.request(build), timeout)

    def _offsets(self, parts: list[int], timeout: float | None = 30.0) -> dict[int, P.PartitionOffsets]:
        """First, end and (in a group) committed offsets of `parts` (TopicNotFoundError when missing)."""
        frame = self._request(lambda c: P.encode_offsets(c, self.topic, self.group or ""), timeout)
        info = {o.partition: o for o in P.parse_offsets_result(frame)}
        missing = [p for p in parts if p not in info]
        if missing:
            raise TopicNotFoundError(
                f"topic {self.topic!r} has no partition {missing[0]} (it has {len(info)} partitions)"
            )
        return info

    def _partition_count(self) -> int:
        frame = self._request(lambda c: P.encode_offsets(c, self.topic, ""))
        return len(P.parse_offsets_result(frame))

    def _resolve(self, parts: list[int], spec: tuple[str, int]) -> dict[int, int]:
        """Where `spec` points in each partition (clamped to the partition's range)."""
        kind, value = spec
        info = self._offsets(parts)
        out = {}
        for p in parts:
            o = info[p]
            if kind == "earliest":
                out[p] = o.first_offset
            elif kind == "latest":
                out[p] = o.end_offset
            elif kind == "offset":
                out[p] = min(max(value, o.first_offset), o.end_offset)
            else:
                frame = self._request(lambda c, p=p: P.encode_time_offset(c, self.topic, p, value))
                out[p] = P.parse_time_offset_result(frame)[1]
        return out

    def _window(self) -> int:
        """Credit (bytes) each partition's subscription may have outstanding."""
        n = max(1, len(self._assignment))
        return max(_MIN_WINDOW, self.max_buffered_bytes // n)

    def _subscribe(self, offsets: dict[int, int]) -> None:
        """(Re)start pushes from `offsets` (partition → offset), each with a full credit window.
        Called with the lock held; a subscription a partition had before is cancelled."""
        conn = self._conn
        window = self._window()
        for p, off in sorted(offsets.items()):
            old = self._sub_of.pop(p, None)
            if old is not None:
                self._part_of.pop(old, None)
                self._pending_credit.pop(old, None)
                if not conn.closed.is_set():
                    conn.request(lambda c, old=old: P.encode_unsubscribe(c, old)).add_done_callback(_ignore)
            corr = conn.next_id()
            self._sub_of[p] = corr
            self._part_of[corr] = p
            self._pending_credit[corr] = 0
            fut = conn.expect(corr)  # the SUBSCRIBE's correlation id is the subscription id
            fut.add_done_callback(lambda f, p=p, corr=corr: self._subscribed(f, p, corr))
            try:
                conn.send(
                    P.encode_subscribe(corr, self.topic, p, off, window, _MAX_DELIVER, self.group or "")
                )
            except ConnectionLostError:
                return  # the reconnect subscribes again

    def _subscribed(self, fut: Future[P.Frame], partition: int, subscription: int) -> None:
        exc = fut.exception()
        if exc is None:
            return
        if isinstance(exc, ConnectionLostError):
            return
        with self._lock:
            current = self._sub_of.get(partition) == subscription
        if not current:
            return
        if (
            self.group is not None
            and isinstance(exc, NanoMQError)
            and not isinstance(exc, TopicNotFoundError | NotAuthorizedError)
        ):
            log.info("subscription to %s[%d] refused (%s): joining again", self.topic, partition, exc)
            self._rejoin.set()
            self._wake.set()
            return
        self._set_error(exc)

    def _unsubscribe_all(self, parts: set[int]) -> None:
        conn = self._conn
        for p in parts:
            old = self._sub_of.pop(p, None)
            if old is None:
                continue
            self._part_of.pop(old, None)
            self._pending_credit.pop(old, None)
            if not conn.closed.is_set():
                try:
                    conn.request(lambda c, old=old: P.encode_unsubscribe(c, old)).add_done_callback(_ignore)
                except ConnectionLostError:
                    pass

    def _grant(self, taken: list[tuple[int, int]]) -> None:
        """Give back credit for messages the application took: (subscription, bytes) pairs."""
        threshold = self._window() // 4
        sends = []
        with self._lock:
            for sub, nbytes in taken:
                if sub not in self._pending_credit:
                    continue  # a cancelled subscription
                total = self._pending_credit[sub] + nbytes
                if total >= threshold:
                    sends.append((sub, total))
                    total = 0
                self._pending_credit[sub] = total
            conn = self._conn
        for sub, credit in sends:
            try:
                conn.send(P.encode_credit(conn.next_id(), sub, credit))
            except ConnectionLostError:
                return  # the reconnect subscribes again with a full window

    def _timestamp_at(self, partition: int, offset: int) -> int | None:
        try:
            frame = self._request(lambda c: P.encode_fetch(c, self.topic, partition, offset, 1, 0))
        except NanoMQError:
            return None
        for r in record.iter_records(P.parse_records(frame).records):
            return r.timestamp
        return None

    def _on_push(self, frame: P.Frame) -> None:
        """Frames the broker pushes (DELIVER, REBALANCE, ERROR), on the thread reading the
        connection (a poller, or the connection's I/O thread)."""
        op = frame.opcode
        if op == P.Opcode.DELIVER:
            self._on_deliver(frame)
        elif op == P.Opcode.REBALANCE:
            if self.group is not None:
                self._saw_generation(P.parse_rebalance(frame).generation)
        elif op == P.Opcode.ERROR:
            err = P.parse_error(frame)
            if err.code != P.ErrorCode.UNKNOWN_SUBSCRIPTION and frame.correlation_id in self._part_of:
                # the broker ended a live subscription (its topic was deleted: TopicNotFoundError;
                # its log is damaged: BrokerError STORAGE_ERROR): nothing more will come
                self._set_error(error_from_code(err.code, err.message))
                return
            # CREDIT racing an UNSUBSCRIBE is expected; anything else is worth a line in the log
            level = logging.DEBUG if err.code == P.ErrorCode.UNKNOWN_SUBSCRIPTION else logging.WARNING
            log.log(level, "broker error for a subscriber of %s: %s (%s)", self.topic, err.message, err.code)
        else:
            log.debug("unexpected frame %r pushed", op)

    def _on_deliver(self, frame: P.Frame) -> None:
        # the usual DELIVER (valid, uniform records of a live subscription) in one C call
        fast = deliver_messages(frame.body, self.topic, self._part_of, Message, record.SCAN_ADDRESS)
        if fast is not None:
            sub, p, end, msgs, size = fast
            with self._cond:
                if self._part_of.get(sub) == p and msgs[0].offset >= self._fetched.get(p, 0):
                    self._fetched[p] = msgs[-1].offset + 1
                    self._chunks.append(_Chunk(msgs, sub, p, size, None))
                    self._count += len(msgs)
                    self._end[p] = end
                    self._cond.notify_all()
                    fast = None
            if fast is None:
                self._notify()
                return
        self._on_deliver_records(frame)  # anything else, and a resent batch, record by record

    def _on_deliver_records(self, frame: P.Frame) -> None:
        d = P.parse_records(frame)
        batch = d.records
        try:
            record.validate_batch(batch)
        except NanoMQError as exc:  # a corrupt batch: never hand it out
            self._set_error(exc)
            return
        sub = d.subscription
        p = self._part_of.get(sub)
        if p is None:
            return  # a subscription cancelled by a seek or a rebalance: drop what it sent
        topic = self.topic
        with self._cond:
            if self._part_of.get(sub) != p:
                return
            expected = self._fetched.get(p, 0)
            msgs, sizes = [], []
            for r in record.iter_records(bytes(batch)):
                off = r.offset
                if off < expected:
                    self._pending_credit[sub] = self._pending_credit.get(sub, 0) + r.size
                    continue  # already had it
                msgs.append(Message(topic, p, off, r.timestamp, r.key, r.value))
                sizes.append(r.size)
                expected = off + 1
            added = len(msgs)
            if added:
                self._fetched[p] = msgs[-1].offset + 1
                self._chunks.append(_Chunk(msgs, sub, p, 0, sizes))
                self._count += added
            self._end[p] = d.end_offset
            if added:
                self._cond.notify_all()
        if added:
            self._notify()

    # ----------------------------------------------------------------- groups ----

    def _join(self) -> None:
        """JOIN (again) and move to the assignment the broker answers with.

        A partition is kept (buffer, subscription and position untouched) only when this member
        held it in the generation just before: after a jump of several generations, or a new
        connection, another member may have read and committed it meanwhile, so every partition
        starts again from the group's committed offset.
        """
        join = lambda c: P.encode_join(c, self.group, self.topic, self._member_id, self.session_timeout_ms)  # noqa: E731
        try:
            frame = self._request(join)
        except NanoMQError as exc:
            if not self._member_id or not _group_moved_on(exc):
                raise
            self._member_id = ""  # this member expired or its connection closed: join as a new one
            frame = self._request(join)
        a = P.parse_assignment(frame)
        self._member_id = a.member_id
        self._heartbeat_interval = (
            max(0.02, a.heartbeat_interval_ms / 1e3) if a.heartbeat_interval_ms else 1.0
        )
        parts = sorted(a.partitions)
        with self._lock:
            old = set(self._assignment)
            continuous = a.generation - self._generation in (0, 1) and bool(self._sub_of or not old)
        new = set(parts)
        kept = old & new if continuous else set()
        added = sorted(new - kept)
        offsets: dict[int, int] = {}
        if added:
            info = self._offsets(added)
            fallback = [p for p in added if info[p].committed < 0]
            offsets = {p: info[p].committed for p in added if p not in fallback}
            if fallback:
                offsets.update(self._resolve(fallback, self._start))
        with self._lock:
            revoked = old - kept
            for p in revoked:
                pos = self._position.get(p)
                if pos is not None and pos > self._committed.get(p, -1) and pos > self._initial.get(p, -1):
                    self._lost[p] = pos  # returned to the application and never committed
            self._unsubscribe_all(revoked)
            self._drop_buffered(revoked)
            for p in revoked:
                self._position.pop(p, None)
                self._fetched.pop(p, None)
                self._returned.pop(p, None)
                self._committed.pop(p, None)
                self._initial.pop(p, None)
            self._assignment = parts
            self._generation = a.generation  # with the assignment, under the lock: commits see both
            for p, off in offsets.items():
                self._position[p] = self._fetched[p] = self._returned[p] = self._initial[p] = off
            self._subscribe(offsets)
            # a REBALANCE that came while this JOIN was answered leaves the member fenced
            self._stale = self._seen_generation > self._generation
            self._cond.notify_all()
        log.info(
            "member %s of %s: generation %d, partitions %s",
            self._member_id,
            self.group,
            self._generation,
            parts,
        )

    def _heartbeat(self) -> None:
        frame = self._request(
            lambda c: P.encode_heartbeat(c, self.group, self._member_id, self._generation),
            timeout=max(5.0, self._heartbeat_interval * 3),
        )
        generation = P.parse_heartbeat_ok(frame)
        if generation != self._generation:
            self._saw_generation(generation)
            self._fence()
            self._rejoin.clear()
            self._join()

    def _rejoin_now(self) -> None:
        # No commit first: the generation already moved, so the broker would refuse it; what this
        # member took and did not commit goes to the partition's next owner (at-least-once).
        self._join()

    def _commit(self, offsets: dict[int, int], generation: int, timeout: float | None) -> None:
        """Commit `offsets`, taken from the assignment of `generation` (the broker refuses them if the
        group moved on, and this member then fences itself and rejoins)."""
        with self._lock:
            todo = {p: o for p, o in offsets.items() if self._committed.get(p) != o}
            member = self._member_id
        if not todo:
            return
        try:
            self._request(
                lambda c: P.encode_commit(c, self.group, self.topic, todo, member, generation), timeout
            )
        except NanoMQError as exc:
            if _group_moved_on(exc):
                self._fence()
            raise
        with self._lock:
            self._committed.update(todo)

    def _maybe_auto_commit(self) -> None:
        """With auto_commit: commit what earlier polls returned (the caller polling again means it is
        done with them), at most every auto_commit_interval seconds."""
        if not self.auto_commit or self.group is None:
            return
        with self._lock:
            offsets = {p: o for p, o in self._returned.items() if p in self._assignment}
            self._returned = dict(self._position)
            generation = self._generation
        now = time.monotonic()
        if now - self._last_auto_commit < self.auto_commit_interval:
            return
        self._last_auto_commit = now
        try:
            self._commit(offsets, generation, 10.0)
        except NanoMQError as exc:
            log.info("auto-commit failed: %s", exc)

    # ------------------------------------------------------------ background ----

    def _maintain(self) -> None:
        """Heartbeats, rejoins and reconnects, on the subscriber's own thread."""
        next_beat = time.monotonic() + self._heartbeat_interval
        idle_ms = getattr(self._conn.welcome, "idle_timeout_ms", 0)
        ping_every = idle_ms / 3e3 if idle_ms else None  # keep the connection from idling out
        next_ping = time.monotonic() + (ping_every or 0)
        while not self._closed:
            wait = next_beat - time.monotonic() if self.group is not None else 1.0
            if ping_every is not None:
                wait = min(wait, next_ping - time.monotonic())
            self._wake.wait(max(0.0, wait))
            self._wake.clear()
            if self._closed:
                return
            try:
                if (
                    ping_every is not None
                    and time.monotonic() >= next_ping
                    and not self._conn.closed.is_set()
                ):
                    next_ping = time.monotonic() + ping_every
                    self._conn.request(P.encode_ping).add_done_callback(_ignore)
                if self._conn.closed.is_set():
                    self._reconnect()
                    next_beat = time.monotonic() + self._heartbeat_interval
                elif self.group is not None and (self._rejoin.is_set() or time.monotonic() >= next_beat):
                    if self._rejoin.is_set():
                        self._rejoin.clear()
                        self._rejoin_now()
                    else:
                        self._heartbeat()
                    next_beat = time.monotonic() + self._heartbeat_interval
            except (ConnectionLostError, BrokerUnreachableError, TimeoutError):
                continue  # the next round reconnects
            except NanoMQError as exc:
                if _group_moved_on(exc):
                    log.info("member %s of %s: %s; joining again", self._member_id, self.group, exc)
                    if getattr(exc, "code", None) in (P.ErrorCode.UNKNOWN_MEMBER, P.ErrorCode.UNKNOWN_GROUP):
                        self._member_id = ""  # expired: join as a new member
                    self._rejoin.set()
                    self._wake.set()
                    continue
                self._set_error(exc)
                return
            except Exception as exc:  # never let the thread die silently
                log.exception("subscriber maintenance failed")
                self._set_error(exc)
                return

    # --------------------------------------------------------------- helpers ----

    def _saw_generation(self, generation: int) -> None:
        """The broker named the group's current generation: fence when it is newer than ours."""
        with self._cond:
            self._seen_generation = max(self._seen_generation, generation)
            newer = generation > self._generation
        if newer:
            self._fence()

    def _fence(self) -> None:
        """The group moved on: hand out nothing more until this member has joined the new
        generation (its partitions may belong to another member now), and rejoin at once."""
        with self._cond:
            self._stale = True
        self._rejoin.set()
        self._wake.set()

    def _drop_buffered(self, parts: set[int]) -> None:
        if parts and self._chunks:
            self._chunks = collections.deque(c for c in self._chunks if c.part not in parts)
            self._count = sum(len(c.msgs) - c.i for c in self._chunks)

    def _set_error(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()
        self._notify()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ClientClosedError("the subscriber is closed")

    def _add_listener(self, fn: Callable[[], None]) -> None:
        """`fn()` is called (from the I/O thread) when messages or an error arrive (nanomq.aio)."""
        self._listeners.append(fn)

    def _notify(self) -> None:
        for fn in self._listeners:
            fn()
