"""Drivers for NanoMQ's log and broker, behind the load generator's interface (nanomq.bench.drivers).

- `LogDriver` ("log"): the producer process appends each message to a `nanomq.log.Log`
  with the run's fsync policy and, once the append returned (durable per the policy),
  hands the message on through a ring to the consumer process. The latency is therefore
  "intended send → durably logged and seen by a reader", the ring adding a microsecond or
  two. (A log has one writer and takes an exclusive lock, so the consumer cannot open it
  in its own process; the ring is the cheapest hand-over there is.)
- `BrokerDriver` ("broker"): a private `nanomq broker` subprocess on 127.0.0.1, port 0,
  with a temporary data directory; the producer publishes with `nanomq.Publisher`
  (`publish_async` one message per call, `publish_batch_async` 256 per frame; acks from
  the options), the consumer reads with `nanomq.Subscriber` from the earliest offset.
  Subscribers without a group each receive every message (fan-out).
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanomq.bench.drivers import Consumer, Driver, Producer, RingDriver
from nanomq.bench.procs import log_tail, stop_server

__all__ = ["BrokerDriver", "LogDriver", "broker_unavailable", "log_unavailable", "start_broker"]

START_TIMEOUT_S = 15.0
TOPIC = "nanomq-bench"
_LISTENING = re.compile(rb"listening on (\S+):(\d+)")


def log_unavailable() -> str | None:
    """Why the log cannot be driven here (None when it can)."""
    try:
        from nanomq.log import Log  # noqa: F401
    except ImportError as exc:
        return f"nanomq.log is not available ({exc})"
    return None


def broker_unavailable() -> str | None:
    """Why the broker cannot be driven here (None when it can)."""
    try:
        from nanomq import Publisher, Subscriber  # noqa: F401
    except ImportError as exc:
        return f"the NanoMQ clients are not available ({exc})"
    import argparse

    import nanomq.broker as broker_pkg

    # until the broker lands, nanomq.broker is a placeholder whose add_arguments adds nothing
    parser = argparse.ArgumentParser(add_help=False)
    broker_pkg.add_arguments(parser)
    if not any("--port" in action.option_strings for action in parser._actions):
        return "the NanoMQ broker is not available in this build (`nanomq broker` takes no --port yet)"
    return None


# ---------------------------------------------------------------------- log ----


class _LogProducer(Producer):
    def __init__(self, log: Any, ring_end: Producer) -> None:
        self.log = log
        self.ring_end = ring_end

    def send(self, data: bytes) -> None:
        self.log.append(data)
        self.ring_end.send(data)

    def send_batch(self, records: list[bytes]) -> None:
        self.log.append_batch(records)
        self.ring_end.send_batch(records)

    def close(self) -> None:
        try:
            self.log.close()
        finally:
            self.ring_end.close()


class LogDriver(Driver):
    """NanoMQ's write-ahead log (append with an fsync policy), handed on through a ring."""

    name = "log"
    pin = True
    batch_label = "append_batch of 256, then push_batch"

    def __init__(self, fsync: str = "never", segment_bytes: int = 100 << 20, capacity: int = 1 << 20) -> None:
        if fsync not in ("never", "interval", "always"):
            raise ValueError(f"fsync policy {fsync!r} is not never, interval or always")
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.label = f"NanoMQ log (fsync={fsync})"
        self.ring = RingDriver("spin", capacity=capacity)
        self._dir: str | None = None

    def setup(self, ctx: Any, size: int) -> None:
        self._dir = tempfile.mkdtemp(prefix="nanomq-bench-log-")
        self.ring.setup(ctx, size)

    def producer(self) -> Producer:
        from nanomq.log import Log

        assert self._dir is not None, "setup() was not called"
        log = Log.open(Path(self._dir) / "log", fsync=self.fsync, segment_bytes=self.segment_bytes)  # type: ignore[arg-type]
        return _LogProducer(log, self.ring.producer())

    def consumer(self) -> Consumer:
        return self.ring.consumer()

    def teardown(self) -> None:
        self.ring.teardown()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def params(self) -> dict[str, Any]:
        return {
            "driver": self.name,
            "fsync": self.fsync,
            "segment_bytes": self.segment_bytes,
            "hand_over": "ring",
        }


# ------------------------------------------------------------------- broker ----


def start_broker(
    data_dir: str | Path, *args: str, timeout: float = START_TIMEOUT_S
) -> tuple[subprocess.Popen, str]:
    """Start `python -m nanomq broker --port 0 --data-dir DIR ARGS` on 127.0.0.1; (process, "host:port").

    Waits for the line `nanomq broker listening on HOST:PORT` on its stdout (a pipe, read
    through a selector, so a broker that never says it is an error after `timeout`, never a
    hang). The caller stops it (SIGTERM, then SIGKILL).
    """
    argv = [
        sys.executable,
        "-m",
        "nanomq",
        "broker",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        *args,
    ]
    log_path = Path(data_dir).with_name(Path(data_dir).name + ".log")
    with open(log_path, "wb") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RuntimeError(
                    f"nanomq broker did not report its address within {timeout} s: {log_tail(log_path)}"
                )
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                proc.wait(timeout=5)
                raise RuntimeError(f"nanomq broker exited with {proc.returncode}: {log_tail(log_path)}")
            seen += chunk
            m = _LISTENING.search(seen)
            if m:
                return proc, f"{m[1].decode()}:{m[2].decode()}"
    except BaseException:
        _stop(proc)
        raise
    finally:
        sel.close()


def _stop(proc: subprocess.Popen) -> None:
    stop_server(proc, wait_s=10)  # graceful: the broker flushes and closes its logs
    if proc.stdout is not None:
        proc.stdout.close()


class _BrokerProducer(Producer):
    def __init__(self, address: str, topic: str, acks: int | str) -> None:
        from nanomq import Publisher

        self.pub = Publisher(address, acks=acks, client_id=f"bench-producer-{os.getpid()}")
        self.topic = topic

    def send(self, data: bytes) -> None:
        self.pub.publish_async(self.topic, data, partition=0)

    def send_batch(self, records: list[bytes]) -> None:
        self.pub.publish_batch_async(self.topic, records, partition=0)

    def flush(self) -> None:
        left = self.pub.flush(60.0)
        if left:
            raise RuntimeError(f"{left} messages still unacknowledged after 60 s")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.pub.close()


class _BrokerConsumer(Consumer):
    def __init__(self, address: str, topic: str) -> None:
        from nanomq import Subscriber

        self.sub = Subscriber(address, topic, start="earliest")

    def recv(self) -> bytes:
        poll = self.sub.poll
        while True:
            msg = poll(timeout=1.0)
            if msg is not None:
                return msg.value

    def recv_batch(self) -> Sequence[bytes]:
        poll_batch = self.sub.poll_batch
        while True:
            msgs = poll_batch(max_messages=256, timeout=1.0)
            if msgs:
                return [m.value for m in msgs]

    def close(self) -> None:
        self.sub.close()


class BrokerDriver(Driver):
    """NanoMQ's broker in a private subprocess, with the Python Publisher and Subscriber."""

    name = "broker"
    pin = False  # the broker needs a CPU too
    batch_label = "publish_batch_async of 256 (one frame) / poll_batch"
    max_producers = 64
    max_consumers = 64
    fanout = True  # subscribers without a group each receive every message
    sleep_between_sends = True  # the client's I/O thread reads acks and frees in-flight room

    def __init__(
        self,
        acks: int | str = 1,
        fsync: str = "never",
        topic: str = TOPIC,
        broker_args: Sequence[str] = (),
    ) -> None:
        if str(acks) not in ("0", "1", "all"):
            raise ValueError(f"acks {acks!r} is not 0, 1 or all")
        if fsync not in ("never", "interval", "always"):
            raise ValueError(f"fsync policy {fsync!r} is not never, interval or always")
        self.acks: int | str = acks if acks == "all" else int(acks)
        self.fsync = fsync
        self.topic = topic
        self.broker_args = list(broker_args)
        self.label = f"NanoMQ broker (acks={acks})"
        self.address: str | None = None
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_proc"] = None  # the parent owns the broker; a child needs only the address
        return state

    def setup(self, ctx: Any, size: int) -> None:
        self._dir = tempfile.mkdtemp(prefix="nanomq-bench-broker-")
        try:
            self._proc, self.address = start_broker(
                Path(self._dir) / "data", "--fsync", self.fsync, *self.broker_args
            )
            self._create_topic()
        except BaseException:
            self.teardown()
            raise

    def _create_topic(self) -> None:
        """One partition, so one producer's messages stay in order for every subscriber."""
        assert self.address is not None
        try:
            from nanomq import Admin
        except ImportError:  # clients without an admin API: the command line does it
            pass
        else:
            admin = Admin(self.address, client_id=f"bench-admin-{os.getpid()}")
            try:
                admin.create_topic(self.topic, 1, exist_ok=True)
            finally:
                admin.close()
            return
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "nanomq",
                "topics",
                "create",
                self.topic,
                "--partitions",
                "1",
                "--broker",
                self.address,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"could not create topic {self.topic!r}: {proc.stderr.strip() or proc.stdout.strip()}"
            )

    def server_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def producer(self) -> Producer:
        assert self.address is not None, "setup() was not called"
        return _BrokerProducer(self.address, self.topic, self.acks)

    def consumer(self) -> Consumer:
        assert self.address is not None, "setup() was not called"
        return _BrokerConsumer(self.address, self.topic)

    def teardown(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def params(self) -> dict[str, Any]:
        return {"driver": self.name, "acks": self.acks, "fsync": self.fsync, "topic": self.topic}
