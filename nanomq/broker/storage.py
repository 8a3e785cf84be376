"""Topics and partitions on disk: one `nanomq.log.Log` per partition, and the durable group offsets.

Layout under the data directory (nothing is ever created outside it):

```
<data-dir>/topics/<topic>/topic.json        {"partitions": n}  (written before the partitions)
<data-dir>/topics/<topic>/<partition>/      a Log directory per partition, 0 .. n-1
<data-dir>/groups/<group>.json              committed offsets of a consumer group
<data-dir>/trash/                           deleted topics, renamed here then removed
```

Small metadata files are replaced atomically: write a temporary file, fsync it, rename it over
the old one, fsync the directory — so after a crash either the old or the new content is there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanomq import record
from nanomq.crc32c import crc32c
from nanomq.errors import InvalidTopicNameError, ProtocolError
from nanomq.log import Log
from nanomq.log.segment import fsync_dir, write_atomic
from nanomq.protocol import ErrorCode, validate_topic_name

log = logging.getLogger(__name__)

MAX_PARTITIONS = 1024


def checked_name(name: str, what: str = "topic") -> str:
    """`name` when valid as a topic or group name, else ProtocolError INVALID_TOPIC naming the rule."""
    try:
        return validate_topic_name(name)
    except InvalidTopicNameError as exc:
        msg = str(exc) if what == "topic" else str(exc).replace("topic name", f"{what} name", 1)
        raise ProtocolError(ErrorCode.INVALID_TOPIC, msg) from None


@dataclass(frozen=True, slots=True)
class LogOptions:
    """How partitions' logs are opened (Log.open keyword arguments)."""

    segment_bytes: int = 100 << 20
    fsync: str = "interval"
    fsync_interval_ms: int = 100
    retention_bytes: int | None = None
    retention_ms: int | None = None
    accept_loss: bool = False

    def kwargs(self) -> dict[str, Any]:
        return {
            "segment_bytes": self.segment_bytes,
            "fsync": self.fsync,
            "fsync_interval_ms": self.fsync_interval_ms,
            "retention_bytes": self.retention_bytes,
            "retention_ms": self.retention_ms,
            "accept_loss": self.accept_loss,
        }


RECENT_MAX_BYTES = 64 * 1024
"""Batches up to this size are kept for the subscribers they wake (larger ones go by sendfile)."""


class Partition:
    """One partition: its log, the waiters for new records, and group commit of syncs."""

    def __init__(self, topic: str, index: int, log_: Log, executor: Executor) -> None:
        self.topic = topic
        self.index = index
        self.log = log_
        self.closed = False
        self._executor = executor
        self._waiters: set[Callable[[], None]] = set()
        # The last batch appended while someone waited for it: (first offset, next offset, its
        # bytes as published — offsets stamped on first use). A caught-up subscriber is served
        # from it instead of a slice and a read of the segment.
        self._recent: tuple[int, int, bytes | bytearray | memoryview] | None = None
        self._sync_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._syncing = False
        self._sync_task: asyncio.Task[None] | None = None
        self.on_sync: Callable[[float], None] | None = None  # fsync latency (s), for the metrics

    # ---- new data ----

    def add_waiter(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, on the loop, after the next append (or when the partition closes)."""
        self._waiters.add(callback)

    def remove_waiter(self, callback: Callable[[], None]) -> None:
        self._waiters.discard(callback)

    def notify(self, first: int = -1, nxt: int = -1, batch: bytes | memoryview | None = None) -> None:
        """Records were appended (`batch`: their bytes, records [first, nxt), when the caller has
        them at hand): wake every waiter once."""
        if self._waiters:
            small = batch is not None and len(batch) <= RECENT_MAX_BYTES
            self._recent = (first, nxt, batch) if small else None  # type: ignore[assignment]
            waiters, self._waiters = self._waiters, set()
            for cb in waiters:
                cb()
        else:
            self._recent = None

    def recent(self, offset: int) -> tuple[int, bytes | bytearray | memoryview] | None:
        """(next offset, records) of the batch appended last, when it starts at `offset` and
        was kept (see notify): the same bytes the log holds for [offset, next offset)."""
        r = self._recent
        if r is None or r[0] != offset:
            return None
        first, nxt, data = r
        if not isinstance(data, bytearray):  # stamped once, however many subscribers read it
            data = bytearray(data)
            record.stamp_offsets(data, first)
            self._recent = (first, nxt, data)
        return nxt, data

    # ---- durability ----

    async def wait_durable(self, upto: int) -> None:
        """Return once every record below `upto` is fsynced. Concurrent callers on this
        partition share one fdatasync per round (group commit across connections)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._sync_waiters.append((upto, fut))
        if not self._syncing:
            self._syncing = True
            self._sync_task = loop.create_task(self._sync_rounds())
        await fut

    async def _sync_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._sync_waiters:
                waiters, self._sync_waiters = self._sync_waiters, []
                target = max(u for u, _ in waiters)
                t0 = time.perf_counter()
                try:
                    await loop.run_in_executor(self._executor, self.log.sync, target)
                except BaseException as exc:  # LogFailedError: reported to every waiter
                    for _, fut in waiters:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                if self.on_sync is not None:
                    self.on_sync(time.perf_counter() - t0)
                for _, fut in waiters:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._syncing = False

    def close(self) -> None:
        self.closed = True
        self.notify()
        for _, fut in self._sync_waiters:
            if not fut.done():
                fut.set_exception(ProtocolError(ErrorCode.UNKNOWN_TOPIC, f"topic {self.topic!r} was deleted"))
        self._sync_waiters.clear()
        self.log.close()


class Topic:
    """A topic: its partitions and the round-robin cursor for unkeyed publishes."""

    def __init__(self, name: str, partitions: list[Partition]) -> None:
        self.name = name
        self.partitions = partitions
        self._rr = 0

    def partition(self, index: int) -> Partition:
        """Partition `index`, or ProtocolError UNKNOWN_PARTITION."""
        if not 0 <= index < len(self.partitions):
            raise ProtocolError(
                ErrorCode.UNKNOWN_PARTITION,
                f"topic {self.name!r} has no partition {index} (it has {len(self.partitions)})",
            )
        return self.partitions[index]

    def choose(self, partition: int, key: bytes | None) -> Partition:
        """The partition a publish goes to: as given, or by crc32c(key), or round-robin."""
        if partition >= 0:
            return self.partition(partition)
        if partition != -1:
            raise ProtocolError(ErrorCode.UNKNOWN_PARTITION, f"partition {partition} is neither >= 0 nor -1")
        n = len(self.partitions)
        if key is not None:
            return self.partitions[crc32c(key) % n]
        self._rr = (self._rr + 1) % n
        return self.partitions[self._rr]

    def describe(self) -> dict[str, Any]:
        parts = []
        for p in self.partitions:
            st = p.log.stats()
            parts.append(
                {
                    "partition": p.index,
                    "first_offset": st.first_offset,
                    "end_offset": st.next_offset,
                    "size_bytes": st.size_bytes,
                    "segments": st.segments,
                }
            )
        return {"name": self.name, "partitions": parts}


class TopicStore:
    """Every topic of the broker, opened from and created in <data-dir>/topics."""

    def __init__(self, data_dir: Path, options: LogOptions, executor: Executor) -> None:
        self.data_dir = data_dir.resolve()
        self.root = self.data_dir / "topics"
        self.trash = self.data_dir / "trash"
        self.options = options
        self.executor = executor
        self.topics: dict[str, Topic] = {}
        self.on_new_partition: Callable[[Partition], None] | None = None

    def _topic_dir(self, name: str) -> Path:
        checked_name(name)
        path = (self.root / name).resolve()
        # Belt and braces: a valid name cannot leave the root, but never trust one check alone.
        if path.parent != self.root:
            raise ProtocolError(ErrorCode.INVALID_TOPIC, f"topic name {name!r} escapes the data directory")
        return path

    def load(self) -> None:
        """Open every topic found on disk (at start-up; recovery of each log runs here)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.trash.exists():
            shutil.rmtree(self.trash, ignore_errors=True)
        self._probe_options()
        for entry in sorted(self.root.iterdir()):
            try:
                checked_name(entry.name)
            except ProtocolError:
                log.warning("ignoring %s: not a valid topic name", entry)
                continue
            meta = entry / "topic.json"
            try:
                n = int(json.loads(meta.read_bytes())["partitions"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring topic directory %s: unreadable %s (%s)", entry, meta.name, exc)
                continue
            self.topics[entry.name] = self._open(entry.name, entry, n)
        log.info("opened %d topic(s) from %s", len(self.topics), self.root)

    def _probe_options(self) -> None:
        """Open and drop a log with the configured options, so a bad option (a segment size the
        log refuses, say) stops the broker at start rather than at the first topic created."""
        probe = self.trash / f"probe-{os.getpid()}"
        self.trash.mkdir(exist_ok=True)
        try:
            Log.open(probe, **self.options.kwargs()).close()
        finally:
            shutil.rmtree(probe, ignore_errors=True)

    def _open(self, name: str, path: Path, n: int) -> Topic:
        parts = []
        try:
            for i in range(n):
                lg = Log.open(path / str(i), **self.options.kwargs())
                part = Partition(name, i, lg, self.executor)
                if self.on_new_partition is not None:
                    self.on_new_partition(part)
                parts.append(part)
        except BaseException:
            for p in parts:
                p.log.close()
            raise
        return Topic(name, parts)

    def get(self, name: str) -> Topic:
        """The topic `name`, or ProtocolError (INVALID_TOPIC / UNKNOWN_TOPIC)."""
        topic = self.topics.get(name)
        if topic is None:
            checked_name(name)
            raise ProtocolError(ErrorCode.UNKNOWN_TOPIC, f"topic {name!r} does not exist")
        return topic

    def create(self, name: str, partitions: int) -> Topic:
        """Create a topic with `partitions` partitions (blocking: a few small fsyncs)."""
        path = self._topic_dir(name)
        if name in self.topics:
            raise ProtocolError(ErrorCode.TOPIC_EXISTS, f"topic {name!r} already exists")
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST, f"partition count {partitions} is not within 1..{MAX_PARTITIONS}"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        path.mkdir(exist_ok=True)
        write_atomic(path / "topic.json", json.dumps({"partitions": partitions}).encode())
        fsync_dir(self.root)
        topic = self._open(name, path, partitions)
        self.topics[name] = topic
        log.info("created topic %r with %d partition(s)", name, partitions)
        return topic

    def delete(self, name: str) -> Path:
        """Close the topic and move its directory to the trash; returns the path to remove."""
        topic = self.get(name)
        del self.topics[name]
        for p in topic.partitions:
            p.close()
        self.trash.mkdir(exist_ok=True)
        dest = self.trash / f"{name}.{uuid.uuid4().hex[:8]}"
        os.rename(self._topic_dir(name), dest)
        fsync_dir(self.root)
        log.info("deleted topic %r", name)
        return dest

    def close(self) -> None:
        for topic in self.topics.values():
            for p in topic.partitions:
                try:
                    p.close()
                except Exception:
                    log.exception("closing %s/%d failed", topic.name, p.index)
        self.topics.clear()


class OffsetStore:
    """Committed offsets of consumer groups, one JSON file per group, replaced atomically."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve() / "groups"
        self.offsets: dict[str, dict[str, dict[int, int]]] = {}  # group → topic → partition → offset

    def load(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in sorted(self.root.glob("*.json")):
            name = entry.name[: -len(".json")]
            try:
                checked_name(name, "group")
                doc = json.loads(entry.read_bytes())
                self.offsets[name] = {
                    t: {int(p): int(o) for p, o in parts.items()} for t, parts in doc["offsets"].items()
                }
            except (OSError, ValueError, KeyError, TypeError, AttributeError, ProtocolError) as exc:
                log.warning("ignoring group offsets file %s: %s", entry, exc)

    def committed(self, group: str, topic: str, partition: int) -> int:
        """The committed offset, -1 when none."""
        return self.offsets.get(group, {}).get(topic, {}).get(partition, -1)

    def apply(self, group: str, topic: str, items: dict[int, int]) -> None:
        """Apply a commit in memory (durable once a later `snapshot` of the group is written)."""
        self.offsets.setdefault(group, {}).setdefault(topic, {}).update(items)

    def snapshot(self, group: str) -> bytes:
        """The group's offsets file as it should be now (write it with `write`, in a thread)."""
        doc = {
            "group": group,
            "offsets": {
                t: {str(p): o for p, o in sorted(ps.items())} for t, ps in self.offsets[group].items()
            },
        }
        return json.dumps(doc, sort_keys=True).encode()

    def write(self, group: str, data: bytes) -> None:
        write_atomic(self.root / f"{group}.json", data)

    def forget_topic(self, topic: str) -> None:
        for g in self.offsets.values():
            g.pop(topic, None)
