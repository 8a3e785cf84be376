"""asyncio clients: `from nanomq.aio import Publisher, Subscriber`, the sync names with `await`.

`Publisher` is asyncio through and through: one stream connection, frames written with the
transport (never a blocking socket call on the loop), acks resolving asyncio futures from a
reader task, back-pressure by awaiting room under `max_in_flight`.

`Subscriber` shares its engine with the sync `nanomq.Subscriber`, whose I/O thread receives
pushed messages, keeps group membership alive with heartbeats and grants credit; the asyncio
face awaits that engine's buffer without blocking the loop (the thread signals the loop with
`call_soon_threadsafe`), and anything that may wait on the network (connecting, joining,
committing, seeking) runs in the loop's default executor or is awaited as a wrapped future.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from nanomq import protocol as P
from nanomq import record
from nanomq.client import Message
from nanomq.client import Subscriber as _SyncSubscriber
from nanomq.client._conn import Handshake, make_ssl_context
from nanomq.client._errors import error_from_frame, unreachable
from nanomq.client._util import format_address, parse_address
from nanomq.client.publisher import _batch_size, body_limit, cut_frames, parse_acks
from nanomq.errors import ClientClosedError, ConnectionLostError, PayloadTooLargeError, PublishTimeoutError

__all__ = ["Message", "Publisher", "Subscriber"]

_MAX_FRAMES_IN_FLIGHT = 2  # as nanomq.client.publisher.MAX_FRAMES_IN_FLIGHT

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview


class _Connection:
    """One asyncio stream to the broker, after the handshake; requests resolve asyncio futures."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._pending: dict[int, asyncio.Future[P.Frame]] = {}
        self._next = 0
        self.closed = False
        self.close_reason: BaseException | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter
        self.welcome: Any

    @classmethod
    async def open(
        cls,
        address: str | tuple[str, int],
        client_id: str,
        auth_token: str | bytes | None,
        tls: bool | ssl.SSLContext | None,
        timeout: float,
    ) -> _Connection:
        host, port = parse_address(address)
        self = cls(format_address(host, port))
        context = make_ssl_context(tls)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, server_hostname=host if context else None),
                timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise unreachable(self.address, exc) from exc
        self.writer = writer
        hs = Handshake(self.address, client_id, auth_token)
        try:
            writer.write(hs.hello)
            frame = None
            while frame is None:
                frame = hs.feed(await asyncio.wait_for(reader.read(65536), timeout))
            self.welcome = hs.welcome(frame)
        except TimeoutError as exc:
            writer.close()
            raise unreachable(self.address, exc, what=f"no handshake reply within {timeout} s") from exc
        except BaseException:
            writer.close()
            raise
        self._reader_task = asyncio.get_running_loop().create_task(
            self._read_loop(reader, P.FrameDecoder(max_frame=self.welcome.max_frame))
        )
        return self

    def next_id(self) -> int:
        self._next = (self._next + 1) & 0xFFFFFFFF or 1
        return self._next

    def request(self, frame_for: Any) -> asyncio.Future[P.Frame]:
        """Write `frame_for(correlation_id)`; the future resolves with the reply frame."""
        if self.closed:
            raise self._lost()
        corr = self.next_id()
        fut: asyncio.Future[P.Frame] = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        self.writer.write(frame_for(corr))
        return fut

    def send(self, data: bytes | bytearray) -> None:
        if self.closed:
            raise self._lost()
        self.writer.write(data)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (OSError, RuntimeError) as exc:
            self._fail(exc)
            raise self._lost() from exc

    async def _read_loop(self, reader: asyncio.StreamReader, decoder: Any) -> None:
        reason: BaseException | None = None
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    reason = ConnectionLostError(f"broker at {self.address} closed the connection")
                    break
                for frame in decoder.feed(data):
                    fut = self._pending.pop(frame.correlation_id, None)
                    if fut is None or fut.done():
                        continue
                    err = error_from_frame(frame)
                    if err is not None:
                        fut.set_exception(err)
                    else:
                        fut.set_result(frame)
        except asyncio.CancelledError:
            reason = ConnectionLostError(f"connection to broker at {self.address} closed by the client")
        except Exception as exc:
            reason = exc
        self._fail(reason)

    def _lost(self) -> ConnectionLostError:
        detail = f": {self.close_reason}" if self.close_reason is not None else ""
        if isinstance(self.close_reason, ConnectionLostError):
            return ConnectionLostError(str(self.close_reason))
        return ConnectionLostError(f"connection to broker at {self.address} lost{detail}")

    def _fail(self, reason: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(self._lost())
                fut.exception()  # retrieved here: a future nobody awaits must not warn
        self.writer.close()

    async def close(self) -> None:
        self._fail(ConnectionLostError(f"connection to broker at {self.address} closed by the client"))
        if self._reader_task is not None:
            self._reader_task.cancel()
            try:
                await self._reader_task
            except asyncio.CancelledError:
                pass
        try:
            await self.writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


class Publisher:
    """asyncio Publisher: `await publish(...)` returns the offset once acked (None with acks=0).

    Same arguments as `nanomq.Publisher`; connect with `await Publisher(...).start()` or
    `async with Publisher(...) as pub`. One connection (`pool_size` is accepted for symmetry:
    on one event loop a single connection is not the bottleneck). A broken connection is
    re-established (with back-off, up to `reconnect_timeout`) by the next publish.
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
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.address = address
        self.acks = parse_acks(acks)
        self.codec = record.Codec.parse(compression)
        self.max_in_flight = max_in_flight
        self.linger_ms = linger_ms
        self._client_id = client_id or f"nanomq-py-{os.getpid()}"
        self._auth_token = auth_token
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._reconnect_timeout = reconnect_timeout
        self._conn: _Connection | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._in_flight = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._slow: list[asyncio.Task[Any]] = []  # publishes waiting to connect or for room, in call order
        self._groups: dict[tuple[str, int, bytes | None], dict[str, Any]] = {}
        self._frames = 0  # PUBLISH frames awaiting an ack
        self._empty: asyncio.Event | None = None
        self._producer_id = random.getrandbits(63) or 1
        self._seq = 0
        self._closed = False

    async def start(self) -> Publisher:
        """Connect (BrokerUnreachableError naming the address, NotAuthorizedError)."""
        self._connect_lock = asyncio.Lock()
        self._conn = await _Connection.open(
            self.address, self._client_id, self._auth_token, self._tls, self._connect_timeout
        )
        self.address = self._conn.address
        return self

    async def __aenter__(self) -> Publisher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def in_flight(self) -> int:
        """Messages published and not yet acknowledged."""
        return self._in_flight

    async def _connection(self) -> _Connection:
        if self._closed:
            raise ClientClosedError("the publisher is closed")
        if self._conn is None or self._connect_lock is None:
            await self.start()
        assert self._conn is not None and self._connect_lock is not None
        if not self._conn.closed:
            return self._conn
        async with self._connect_lock:
            if not self._conn.closed:
                return self._conn
            from nanomq.client._util import Backoff

            backoff, deadline = Backoff(), time.monotonic() + self._reconnect_timeout
            while True:
                try:
                    self._conn = await _Connection.open(
                        self.address, self._client_id, self._auth_token, self._tls, self._connect_timeout
                    )
                    return self._conn
                except (OSError, ConnectionLostError) as exc:
                    delay = backoff.next_delay()
                    if time.monotonic() + delay >= deadline:
                        raise
                    log.debug("reconnect to %s failed (%s); retrying in %.3f s", self.address, exc, delay)
                    await asyncio.sleep(delay)

    async def publish(
        self,
        topic: str,
        value: Buffer,
        key: Buffer | None = None,
        *,
        partition: int | None = None,
        timestamp_ns: int | None = None,
        timeout: float | None = 30.0,
    ) -> int | None:
        """Publish one message and wait for its ack: its offset (None with acks=0)."""
        keys = None if key is None else [key]
        return await self._wait(
            self._start_publish(topic, [value], keys, partition, timestamp_ns, timeout, True), timeout
        )

    def publish_async(
        self,
        topic: str,
        value: Buffer,
        key: Buffer | None = None,
        *,
        partition: int | None = None,
        timestamp_ns: int | None = None,
        timeout: float | None = 30.0,
    ) -> asyncio.Future[int | None]:
        """Start publishing one message; a future of its offset (await it, or gather many).

        Calls made in order are written in order. While earlier messages await their acks, later
        ones are gathered and sent as one batch frame when an ack returns.
        """
        keys = None if key is None else [key]
        return self._start_publish(topic, [value], keys, partition, timestamp_ns, timeout, True)

    async def publish_batch(
        self,
        topic: str,
        values: Sequence[Buffer],
        keys: Sequence[Buffer | None] | None = None,
        *,
        partition: int | None = None,
        timestamp_ns: int | Sequence[int] | None = None,
        timeout: float | None = 30.0,
    ) -> list[int] | None:
        """Publish `values` in one frame and wait: their consecutive offsets (None with acks=0)."""
        return await self._wait(
            self._start_publish(topic, values, keys, partition, timestamp_ns, timeout, False), timeout
        )

    def publish_batch_async(
        self,
        topic: str,
        values: Sequence[Buffer],
        keys: Sequence[Buffer | None] | None = None,
        *,
        partition: int | None = None,
        timeout: float | None = 30.0,
    ) -> asyncio.Future[list[int] | None]:
        """`publish_batch` as a future."""
        return self._start_publish(topic, values, keys, partition, None, timeout, False)

    async def _wait(self, fut: asyncio.Future[Any], timeout: float | None) -> Any:
        if isinstance(fut, asyncio.Task):  # the slow path keeps its own deadline
            return await fut
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            raise PublishTimeoutError(
                f"no acknowledgement from the broker within {timeout} s (the message may still be appended)"
            ) from None

    def _start_publish(
        self,
        topic: str,
        values: Sequence[Buffer],
        keys: Sequence[Buffer | None] | None,
        partition: int | None,
        timestamp_ns: int | Sequence[int] | None,
        timeout: float | None,
        single: bool,
    ) -> asyncio.Future[Any]:
        """Check the call, then queue or send it at once when connected with room in flight;
        otherwise a task does so after connecting / waiting for room (in call order)."""
        if self._closed:
            raise ClientClosedError("the publisher is closed")
        P.validate_topic_name(topic)
        n = len(values)
        loop = asyncio.get_running_loop()
        if n == 0:
            done: asyncio.Future[Any] = loop.create_future()
            done.set_result([] if self.acks != P.Acks.NONE else None)
            return done
        if keys is not None and len(keys) != n:
            raise ValueError(f"{len(keys)} keys for {n} values: give one key (or None) per value")
        size = _batch_size(values, keys, single)
        if timestamp_ns is None:
            stamps = [time.time_ns()] * n
        elif isinstance(timestamp_ns, int):
            stamps = [timestamp_ns] * n
        else:
            stamps = list(timestamp_ns)
            if len(stamps) != n:
                raise ValueError(f"{len(stamps)} timestamps for {n} values")
        call = (
            topic,
            list(values),
            list(keys) if keys is not None else [None] * n,
            partition,
            stamps,
            size,
            single,
        )
        conn = self._conn
        if (
            conn is not None
            and not conn.closed
            and not self._waiters
            and not self._slow
            and (self._in_flight == 0 or self._in_flight + n <= self.max_in_flight)
        ):
            self._check_limits(conn, call)
            self._in_flight += n
            return self._enqueue(conn, call)
        task = loop.create_task(self._slow_publish(call, timeout))
        self._slow.append(task)
        task.add_done_callback(self._slow.remove)
        return task

    async def _slow_publish(self, call: tuple[Any, ...], timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        conn = await self._connection()
        self._check_limits(conn, call)
        await self._acquire(len(call[1]), None if deadline is None else max(0.0, deadline - loop.time()))
        try:
            conn = await self._connection()
        except BaseException:
            self._release(len(call[1]))
            raise
        fut = self._enqueue(conn, call)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(fut)
        except TimeoutError:
            raise PublishTimeoutError(
                f"no acknowledgement from the broker within {timeout} s (the message may still be appended)"
            ) from None

    def _check_limits(self, conn: _Connection, call: tuple[Any, ...]) -> None:
        topic, values, keys, _, _, size, _ = call
        limits = conn.welcome
        if len(values) > limits.max_batch:
            raise PayloadTooLargeError(len(values), limits.max_batch, what="batch of messages (count)")
        first_key = next((k for k in keys if k is not None), None)
        room = body_limit(limits, topic, first_key)
        if size > room:
            raise PayloadTooLargeError(size, room, what="encoded batch")

    def _enqueue(self, conn: _Connection, call: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Send now (nothing waiting, few frames unanswered) or add to the waiting groups."""
        topic, values, keys, partition, stamps, size, single = call
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        part = -1 if partition is None else partition
        first_key = next((bytes(k) for k in keys if k is not None), None)
        gkey = (topic, part, first_key if part < 0 else None)
        group = self._groups.get(gkey)
        if group is None:
            group = {
                "topic": topic,
                "part": part,
                "key": gkey[2],
                "values": [],
                "keys": [],
                "stamps": [],
                "entries": [],
                "size": 0,
            }
        group["values"] += values
        group["keys"] += keys
        group["stamps"] += stamps
        group["entries"].append((fut, len(values), single, size))
        group["size"] += size
        if not self._groups and (self._frames < _MAX_FRAMES_IN_FLIGHT or self.acks == P.Acks.NONE):
            self._send_groups(conn, [group])
        else:
            self._groups[gkey] = group
        return fut

    def _send_groups(self, conn: _Connection, groups: list[dict[str, Any]]) -> None:
        limits = conn.welcome
        for g in groups:
            entries = g["entries"]
            limit = body_limit(limits, g["topic"], g["key"])
            for e0, e1, v0, v1 in cut_frames(((c, s) for _, c, _, s in entries), limits.max_batch, limit):
                self._send_frame(conn, g, entries[e0:e1], v0, v1)

    def _send_frame(self, conn: _Connection, g: dict[str, Any], entries: list[Any], v0: int, v1: int) -> None:
        n = v1 - v0
        keys = g["keys"][v0:v1]
        seq, self._seq = self._seq, self._seq + n
        topic, part, key = g["topic"], g["part"], g["key"]
        try:
            frame = record.encode_batch_after(
                P.publish_prefix(topic, part, self.acks, key=key),
                g["values"][v0:v1],
                None if keys.count(None) == n else keys,  # one C loop, not a genexpr
                timestamp_ns=g["stamps"][v0:v1],
                producer_id=self._producer_id,
                first_sequence=seq,
                codec=self.codec,
            )
            if self.acks == P.Acks.NONE:
                conn.send(P.seal_frame(frame, P.Opcode.PUBLISH, conn.next_id()))
                self._resolve(entries, None, None, n)
                return
            reply = conn.request(lambda corr: P.seal_frame(frame, P.Opcode.PUBLISH, corr))
        except Exception as exc:
            self._resolve(entries, exc, None, n)
            return
        self._frames += 1
        reply.add_done_callback(lambda f: self._on_ack(conn, f, entries, n))

    def _on_ack(self, conn: _Connection, f: asyncio.Future[P.Frame], entries: list[Any], n: int) -> None:
        self._frames -= 1
        exc = f.exception()
        base = None
        if exc is None:
            try:
                base = P.parse_publish_ack(f.result()).base_offset
            except Exception as e:
                exc = e
        self._resolve(entries, exc, base, n)
        if self._groups and self._frames < _MAX_FRAMES_IN_FLIGHT:
            groups = list(self._groups.values())
            self._groups.clear()
            if conn.closed:
                err = conn._lost()
                for g in groups:
                    self._resolve(g["entries"], err, None, len(g["values"]))
            else:
                self._send_groups(conn, groups)

    def _resolve(self, entries: list[Any], exc: BaseException | None, base: int | None, n: int) -> None:
        off = base
        for fut, cnt, single, _ in entries:
            if not fut.done():
                if exc is not None:
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: a future nobody awaits must not warn
                elif off is None:
                    fut.set_result(None)
                else:
                    fut.set_result(off if single else list(range(off, off + cnt)))
            if off is not None:
                off += cnt
        self._release(n)

    async def _acquire(self, n: int, timeout: float | None) -> None:
        # Fast path without a suspension point, so tasks started in order write in order;
        # once someone waits, later callers queue behind them (FIFO).
        if not self._waiters and (self._in_flight == 0 or self._in_flight + n <= self.max_in_flight):
            self._in_flight += n
            return
        loop = asyncio.get_running_loop()
        me: asyncio.Future[None] = loop.create_future()
        self._waiters.append((n, me))
        try:
            await asyncio.wait_for(asyncio.shield(me), timeout)
        except TimeoutError:
            if me.done():  # room came at the last moment: it is ours
                return
            me.cancel()
            raise PublishTimeoutError(
                f"{self._in_flight} messages in flight (max_in_flight={self.max_in_flight}) and no room for "
                f"{n} more within {timeout} s"
            ) from None
        finally:
            if not me.done():
                me.cancel()

    def _release(self, n: int) -> None:
        self._in_flight -= n
        while self._waiters:
            want, fut = self._waiters[0]
            if fut.done():  # timed out
                self._waiters.popleft()
                continue
            if self._in_flight != 0 and self._in_flight + want > self.max_in_flight:
                break
            self._waiters.popleft()
            self._in_flight += want
            fut.set_result(None)
        if self._in_flight == 0 and self._empty is not None:
            self._empty.set()

    async def flush(self, timeout: float | None = None) -> int:
        """Wait until every message is acknowledged (or `timeout`): how many are still unacknowledged."""
        if self._in_flight == 0 and not self._waiters:
            return 0
        self._empty = self._empty or asyncio.Event()
        self._empty.clear()
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            pass
        return self._in_flight + sum(n for n, f in self._waiters if not f.done())

    async def close(self, timeout: float | None = 30.0) -> None:
        """Flush (up to `timeout`) and close the connection; idempotent."""
        if self._closed:
            return
        try:
            await self.flush(timeout)
        finally:
            self._closed = True
            if self._conn is not None:
                await self._conn.close()


class Subscriber:
    """asyncio Subscriber: `await poll()`, `await poll_batch()`, `await commit()`, `async for msg in sub`.

    Same arguments as `nanomq.Subscriber`; `async with Subscriber(...) as sub` connects (and joins
    the group) without blocking the loop.
    """

    def __init__(
        self, address: str | tuple[str, int] = "127.0.0.1:9000", topic: str = "", **kwargs: Any
    ) -> None:
        self._args = (address, topic)
        self._kwargs = kwargs
        self._sub: _SyncSubscriber | None = None
        self._ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog: collections.deque[Message] = collections.deque()

    async def start(self) -> Subscriber:
        """Connect, subscribe (and join the group) in the executor; returns self."""
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._sub = await self._loop.run_in_executor(
            None, lambda: _SyncSubscriber(*self._args, **self._kwargs)
        )
        self._sub._add_listener(self._wake)
        return self

    def _wake(self) -> None:
        loop, ready = self._loop, self._ready
        if loop is not None and ready is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ready.set)

    async def __aenter__(self) -> Subscriber:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _engine(self) -> _SyncSubscriber:
        if self._sub is None:
            raise ClientClosedError("the subscriber is not started: use `async with` or `await start()`")
        return self._sub

    async def poll(self, timeout: float | None = None) -> Message | None:
        """The next message, or None when none arrives within `timeout` seconds."""
        msgs = await self.poll_batch(1, timeout)
        return msgs[0] if msgs else None

    async def poll_batch(self, max_messages: int = 256, timeout: float | None = 0.1) -> list[Message]:
        """Up to `max_messages` messages; [] when none arrives within `timeout` seconds."""
        sub = self._engine()
        assert self._ready is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._ready.clear()
            msgs = sub.poll_batch(max_messages, timeout=0)
            if msgs:
                return msgs
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            try:
                await asyncio.wait_for(self._ready.wait(), left)
            except TimeoutError:
                return sub.poll_batch(max_messages, timeout=0)

    async def commit(self) -> None:
        """Commit the offsets of every message returned so far (durable on the broker when it returns)."""
        sub = self._engine()
        assert self._loop is not None
        await self._loop.run_in_executor(None, sub.commit)

    async def seek(self, position: Any, partition: int | None = None) -> None:
        """Move the subscription (same arguments as `nanomq.Subscriber.seek`)."""
        sub = self._engine()
        assert self._loop is not None
        await self._loop.run_in_executor(None, lambda: sub.seek(position, partition))

    async def lag(self) -> Any:
        """Lag in messages and seconds (see `nanomq.Subscriber.lag`)."""
        sub = self._engine()
        assert self._loop is not None
        return await self._loop.run_in_executor(None, sub.lag)

    @property
    def assignment(self) -> list[int]:
        """Partitions this subscriber currently reads."""
        return self._engine().assignment

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            msgs = await self.poll_batch(256, timeout=None)
            for msg in msgs:
                yield msg

    async def close(self) -> None:
        """Leave the group (committing first with auto_commit) and close the connection."""
        if self._sub is None:
            return
        sub, self._sub = self._sub, None
        assert self._loop is not None
        await self._loop.run_in_executor(None, sub.close)
