"""Transports the load generator drives: NanoMQ's ring and its peers, behind one small interface.

A `Driver` is made in the parent process; `setup()` creates what both sides share (a
named ring, a queue, an ipc path); the producer process calls `producer()` and the
consumer process `consumer()` to get their ends (a driver object survives fork and
spawn pickling); `teardown()` runs in the parent after both ended.

An end offers blocking calls (`send`, `recv`, batch forms) and, where polling is cheap,
non-blocking ones (`try_send`, `try_recv`) that the load generator busy-polls. A
zero-length message is the load generator's end marker, so every transport must carry
it. `c_pingpong` / `c_stream` run the C loops of csrc/bench.c (no Python per message).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from nanomq import errors
from nanomq._ffi import ffi, last_error, lib, raise_status
from nanomq.bench import hdr
from nanomq.ring import DEFAULT_SPIN_US, Ring

__all__ = [
    "BATCH",
    "CResult",
    "Consumer",
    "Driver",
    "FasterFifoDriver",
    "MpQueueDriver",
    "Producer",
    "RingDriver",
    "StallDriver",
    "ZmqDriver",
    "c_pingpong",
    "c_stream",
    "faster_fifo_available",
    "make_driver",
    "peer_drivers",
    "zmq_available",
]

log = logging.getLogger(__name__)

BATCH = 256
"""Records per batch call (the ring's NMQ_MAX_BATCH)."""


def identity(x: Any) -> Any:
    """faster_fifo's dumps/loads for raw bytes (module level, so a spawned child can unpickle it)."""
    return x


# ----------------------------------------------------------------- interface ----


class Producer:
    """The sending end, used in the producer process only."""

    try_send: Callable[[bytes], bool] | None = None
    """Non-blocking send returning False when full, where busy-polling it is cheap; else None."""

    def send(self, data: bytes) -> None:
        """Send one message, blocking while the transport is full."""
        raise NotImplementedError

    def send_batch(self, records: list[bytes]) -> None:
        """Send records (≤ 256) with the transport's batch call (see Driver.batch_label)."""
        raise NotImplementedError

    def send_buffer(self, data: bytes, lengths: Sequence[int]) -> None:
        """Send records laid end to end in one buffer (Driver.buffer must be True)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Return once every message sent so far is in the transport (a consumer can take it)."""

    def close(self) -> None:
        """Release this end (the message stream was already ended by the caller)."""


class Consumer:
    """The receiving end, used in the consumer process only."""

    try_recv: Callable[[], Any] | None = None
    """Non-blocking receive returning None when empty, for busy-polling; None if not offered."""

    def recv(self) -> Any:
        """One message (bytes, or a bytes-like view valid until the next call), blocking."""
        raise NotImplementedError

    def recv_batch(self) -> Sequence[Any]:
        """At least one message, at most 256, blocking."""
        raise NotImplementedError

    def recv_buffer(self) -> tuple[bytes, Sequence[int]]:
        """At least one message as one buffer and offsets (record i is data[off[i]:off[i+1]])."""
        raise NotImplementedError

    def close(self) -> None:
        """Release this end."""


class Driver:
    """One transport: set up in the parent, opened once on each side, torn down in the parent."""

    name = "driver"
    """Short identifier, used in JSON and --only style filters."""
    label = "driver"
    """What the table prints."""
    pin = True
    """Whether producer and consumer should be pinned to one CPU each."""
    batch_label: str | None = None
    """How send_batch/recv_batch move 256 records (None: no batch mode)."""
    buffer = False
    """Whether send_buffer/recv_buffer exist (one buffer for a whole batch)."""
    max_producers = 1
    """Producer processes the transport takes at once (nanomq.bench.group runs more than one)."""
    max_consumers = 1
    """Consumer processes the transport takes at once."""
    fanout = False
    """True: every consumer receives every message (pub/sub); False: each message goes to one consumer."""
    sleep_between_sends = False
    """True: the paced producer sleeps until shortly before each send instead of spinning, because
    the transport's client has an I/O thread that needs the GIL between sends (a Python spin
    holds it for the interpreter's whole switch interval, 5 ms)."""

    def setup(self, ctx: Any, size: int) -> None:
        """Create the shared parts (parent, before the processes start); ctx is a multiprocessing context."""

    def producer(self) -> Producer:
        """Open the sending end (in the producer process)."""
        raise NotImplementedError

    def consumer(self) -> Consumer:
        """Open the receiving end (in the consumer process)."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Remove the shared parts (parent, after both processes ended)."""

    def server_pid(self) -> int | None:
        """The pid of the server process this driver started (between setup and teardown), if any."""
        return None

    def params(self) -> dict[str, Any]:
        """The driver's settings, for the run record."""
        return {"driver": self.name}


# -------------------------------------------------------------- NanoMQ ring ----


class _RingProducer(Producer):
    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.try_send = ring.push
        self.send = ring.put  # type: ignore[method-assign]

    def send_batch(self, records: list[bytes]) -> None:
        ring = self.ring
        done = ring.push_batch(records)
        while done < len(records):
            rest = records[done:]
            n = ring.push_batch(rest)
            if n == 0:
                ring.put(rest[0])  # waits with the ring's strategy until there is room
                n = 1
            done += n

    def send_buffer(self, data: bytes, lengths: Sequence[int]) -> None:
        ring = self.ring
        done = ring.push_batch_buffer(data, lengths)
        if done == len(lengths):
            return
        view = memoryview(data)
        offset = sum(lengths[:done])
        while done < len(lengths):
            n = ring.push_batch_buffer(view[offset:], lengths[done:])
            if n == 0:
                ring.put(view[offset : offset + lengths[done]])
                n = 1
            offset += sum(lengths[done : done + n])
            done += n

    def close(self) -> None:
        self.ring.close()


class _RingConsumer(Consumer):
    def __init__(self, ring: Ring, poll: bool) -> None:
        self.ring = ring
        self.recv = ring.get  # type: ignore[method-assign]
        if poll:
            self.try_recv = ring.pop

    def recv_batch(self) -> Sequence[bytes]:
        ring = self.ring
        while True:
            out = ring.pop_batch(BATCH)
            if out:
                return out
            if self.try_recv is None:  # block with the ring's strategy, then take the rest
                return [ring.get(), *ring.pop_batch(BATCH - 1)]

    def recv_buffer(self) -> tuple[bytes, Sequence[int]]:
        pop = self.ring.pop_batch_buffer
        while True:
            batch = pop(BATCH)
            if len(batch):
                return batch.data, batch.offsets

    def close(self) -> None:
        self.ring.close()


class RingDriver(Driver):
    """NanoMQ's ring through its Python API; the consumer busy-polls (spin) or blocks (futex)."""

    pin = True
    batch_label = "push_batch / pop_batch (list of bytes)"
    buffer = True

    def __init__(self, wait: str = "spin", capacity: int = 1 << 20, spin_us: float = DEFAULT_SPIN_US) -> None:
        if wait not in ("spin", "yield", "futex"):
            raise ValueError(f"wait strategy {wait!r} is not spin, yield or futex")
        self.wait = wait
        self.capacity = capacity
        self.spin_us = spin_us
        self.name = f"nanomq-{wait}"
        self.label = f"NanoMQ ring ({wait})"
        self._ring_name: str | None = None
        self._ring: Ring | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ring"] = None  # the creator's handle stays in the parent
        return state

    def setup(self, ctx: Any, size: int) -> None:
        self._ring_name = f"bench-{os.getpid()}-{secrets.token_hex(4)}"
        self._ring = Ring.create(self._ring_name, self.capacity, wait=self.wait, spin_us=self.spin_us)  # type: ignore[arg-type]

    def _attach(self) -> Ring:
        assert self._ring_name is not None, "setup() was not called"
        return Ring.attach(self._ring_name, wait=self.wait, spin_us=self.spin_us)  # type: ignore[arg-type]

    def producer(self) -> Producer:
        return _RingProducer(self._attach())

    def consumer(self) -> Consumer:
        return _RingConsumer(self._attach(), poll=self.wait == "spin")

    def teardown(self) -> None:
        if self._ring is not None:
            self._ring.close()  # unlinks the name
            self._ring = None

    def params(self) -> dict[str, Any]:
        return {"driver": self.name, "wait": self.wait, "capacity": self.capacity, "spin_us": self.spin_us}


# -------------------------------------------------------- multiprocessing.Queue ----


class _MpProducer(Producer):
    def __init__(self, q: Any) -> None:
        self.q = q
        self.send = q.put  # type: ignore[method-assign]

    def send_batch(self, records: list[bytes]) -> None:
        self.q.put(records)

    def flush(self) -> None:
        # the feeder thread writes to the pipe behind put()'s back: only join_thread says it is done,
        # and only after close(), so a flushed end sends nothing more
        self.close()

    def close(self) -> None:
        self.q.close()
        self.q.join_thread()  # everything put reaches the pipe before the process exits


class _MpConsumer(Consumer):
    def __init__(self, q: Any) -> None:
        self.q = q
        self.recv = q.get  # type: ignore[method-assign]

    def recv_batch(self) -> Sequence[bytes]:
        item = self.q.get()
        return item if isinstance(item, list) else [item]


class MpQueueDriver(Driver):
    """multiprocessing.Queue (unbounded, pickles each item through a pipe and a feeder thread)."""

    name = "mp-queue"
    label = "multiprocessing.Queue"
    pin = True
    max_producers = 64
    max_consumers = 64
    batch_label = "put/get of a list of 256 (pickled as one item)"

    def __init__(self) -> None:
        self._q: Any = None

    def setup(self, ctx: Any, size: int) -> None:
        self._q = ctx.Queue()

    def producer(self) -> Producer:
        return _MpProducer(self._q)

    def consumer(self) -> Consumer:
        return _MpConsumer(self._q)

    def teardown(self) -> None:
        if self._q is not None:
            self._q.close()
            self._q = None


# ---------------------------------------------------------------- faster_fifo ----


def faster_fifo_available() -> bool:
    """True when the faster_fifo package can be imported."""
    try:
        import faster_fifo  # noqa: F401
    except ImportError:
        return False
    return True


class _FfProducer(Producer):
    def __init__(self, q: Any, timeout: float) -> None:
        self.q = q
        self.timeout = timeout

    def send(self, data: bytes) -> None:
        self.q.put(data, True, self.timeout)

    def send_batch(self, records: list[bytes]) -> None:
        self.q.put_many(records, True, self.timeout)


class _FfConsumer(Consumer):
    def __init__(self, q: Any, timeout: float) -> None:
        self.q = q
        self.timeout = timeout

    def recv(self) -> Any:
        # identity loads hands out a '<B' view of faster_fifo's buffer: cast it (no copy) to index like bytes
        return self.q.get(True, self.timeout).cast("B")

    def recv_batch(self) -> Sequence[Any]:
        return self.q.get_many(True, self.timeout, BATCH)


class FasterFifoDriver(Driver):
    """faster_fifo.Queue with identity dumps/loads: raw bytes in, memoryviews out (no pickling)."""

    name = "faster-fifo"
    label = "faster_fifo.Queue"
    pin = True
    max_producers = 64
    max_consumers = 64
    batch_label = "put_many / get_many"

    def __init__(self, max_size_bytes: int = 1 << 20, timeout: float = 60.0) -> None:
        self.max_size_bytes = max_size_bytes
        self.timeout = timeout
        self._q: Any = None

    def setup(self, ctx: Any, size: int) -> None:
        import faster_fifo
        import faster_fifo_reduction  # noqa: F401  (lets a spawned child unpickle the queue)

        self._q = faster_fifo.Queue(max_size_bytes=self.max_size_bytes, dumps=identity, loads=identity)

    def producer(self) -> Producer:
        return _FfProducer(self._q, self.timeout)

    def consumer(self) -> Consumer:
        return _FfConsumer(self._q, self.timeout)

    def teardown(self) -> None:
        if self._q is not None:
            self._q.close()
            self._q = None

    def params(self) -> dict[str, Any]:
        return {"driver": self.name, "max_size_bytes": self.max_size_bytes}


# --------------------------------------------------------------------- pyzmq ----


def zmq_available() -> bool:
    """True when pyzmq can be imported."""
    try:
        import zmq  # noqa: F401
    except ImportError:
        return False
    return True


# LINGER does not make close() wait for bytes already in libzmq's engine buffer: closing
# the PUSH side right after its last send lost the last few hundred messages (and the end
# marker) in about 1 run in 10 here. So the consumer confirms the end over REQ/REP, and
# the producer's close() waits for that confirmation before it closes. The consumer binds
# the REP side, so several producers (fan-in) can each ask it.
_ZMQ_CLOSE_WAIT_MS = 30_000
_ZMQ_CONFIRM_WAIT_MS = 10_000


class _ZmqProducer(Producer):
    def __init__(self, endpoint: str) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, -1)
        self.sock.connect(endpoint)
        self.done = self.ctx.socket(zmq.REQ)
        self.done.setsockopt(zmq.RCVTIMEO, _ZMQ_CLOSE_WAIT_MS)
        self.done.setsockopt(zmq.LINGER, 1000)
        self.done.connect(endpoint + "-done")
        self.send = self.sock.send  # type: ignore[method-assign]

    def send_batch(self, records: list[bytes]) -> None:
        self.sock.send_multipart(records)

    def close(self) -> None:
        import zmq

        try:
            self.done.send(b"")
            self.done.recv()  # the consumer has everything this producer sent
        except zmq.Again:
            log.warning("zmq consumer did not confirm the end within %d ms", _ZMQ_CLOSE_WAIT_MS)
        self.done.close()
        self.sock.close()
        self.ctx.term()


class _ZmqConsumer(Consumer):
    def __init__(self, endpoint: str) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.bind(endpoint)
        self.done = self.ctx.socket(zmq.REP)
        self.done.setsockopt(zmq.RCVTIMEO, _ZMQ_CONFIRM_WAIT_MS)
        self.done.setsockopt(zmq.LINGER, 1000)
        self.done.bind(endpoint + "-done")
        self.peers = 1
        """Producers whose close this end confirms (the load generator sets it)."""
        self.recv = self.sock.recv  # type: ignore[method-assign]

    def recv_batch(self) -> Sequence[bytes]:
        return self.sock.recv_multipart()

    def close(self) -> None:
        import zmq

        for _ in range(self.peers):  # everything is received: confirm to each producer
            try:
                self.done.recv()
                self.done.send(b"")
            except zmq.Again:
                break  # a producer that never asked (it failed); nothing more is owed to it
        self.done.close()
        self.sock.close(linger=0)
        self.ctx.term()


class ZmqDriver(Driver):
    """pyzmq PUSH/PULL over ipc:// (not pinned: pinning starves zmq's own I/O thread)."""

    name = "zmq"
    label = "pyzmq PUSH/PULL ipc"
    pin = False
    max_producers = 64  # PUSH sockets connecting to the consumer's one PULL (fan-in)
    batch_label = "send_multipart / recv_multipart of 256 frames"

    def __init__(self) -> None:
        self._dir: str | None = None
        self.endpoint: str | None = None

    def setup(self, ctx: Any, size: int) -> None:
        self._dir = tempfile.mkdtemp(prefix="nanomq-bench-zmq-")
        self.endpoint = f"ipc://{self._dir}/pushpull"

    def producer(self) -> Producer:
        assert self.endpoint is not None, "setup() was not called"
        return _ZmqProducer(self.endpoint)

    def consumer(self) -> Consumer:
        assert self.endpoint is not None, "setup() was not called"
        return _ZmqConsumer(self.endpoint)

    def teardown(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# ----------------------------------------------------------- synthetic stall ----


class _StallProducer(Producer):
    """Counts the messages it sends and sleeps once, before message `stall_at`."""

    def __init__(self, inner: Producer, stall_at: int, stall_s: float) -> None:
        self.inner = inner
        self.stall_at = stall_at
        self.stall_s = stall_s
        self.sent = 0
        if inner.try_send is not None:
            self.try_send = self._try_send

    def _stall_if_due(self) -> None:
        if self.sent == self.stall_at:
            self.stall_at = -1  # once
            time.sleep(self.stall_s)  # the synthetic stall itself (a GC pause, a page fault storm)

    def _try_send(self, data: bytes) -> bool:
        self._stall_if_due()
        assert self.inner.try_send is not None
        if self.inner.try_send(data):
            self.sent += 1
            return True
        return False

    def send(self, data: bytes) -> None:
        self._stall_if_due()
        self.inner.send(data)
        self.sent += 1

    def send_batch(self, records: list[bytes]) -> None:
        self._stall_if_due()
        self.inner.send_batch(records)
        self.sent += len(records)

    def close(self) -> None:
        self.inner.close()


class StallDriver(Driver):
    """A synthetic transport: another driver (default the ring) whose producer stalls once.

    The producer sleeps `stall_ms` before its message number `stall_at` (warm-up
    included), once per run. At a constant intended rate every message due during the
    stall is sent late, so a coordinated-omission-corrected histogram shows about
    rate × stall of delayed samples; a naive one (send time stamped at the actual send)
    would show one. The harness's own check, usable from an experiment (transport
    "stall").
    """

    name = "stall"
    label = "synthetic stall"
    buffer = False

    def __init__(self, stall_ms: float = 100.0, stall_at: int = 1000, inner: str = "nanomq-spin") -> None:
        if stall_ms < 0 or stall_at < 0:
            raise ValueError(f"stall_ms ({stall_ms}) and stall_at ({stall_at}) must not be negative")
        self.stall_ms = stall_ms
        self.stall_at = stall_at
        self.inner = make_driver(inner)
        self.pin = self.inner.pin
        self.batch_label = self.inner.batch_label
        self.label = f"{self.inner.label} stalling {stall_ms:g} ms once"

    def setup(self, ctx: Any, size: int) -> None:
        self.inner.setup(ctx, size)

    def producer(self) -> Producer:
        return _StallProducer(self.inner.producer(), self.stall_at, self.stall_ms / 1000)

    def consumer(self) -> Consumer:
        return self.inner.consumer()

    def teardown(self) -> None:
        self.inner.teardown()

    def params(self) -> dict[str, Any]:
        return {
            "driver": self.name,
            "stall_ms": self.stall_ms,
            "stall_at": self.stall_at,
            "inner": self.inner.params(),
        }


def peer_drivers() -> tuple[list[Driver], list[str]]:
    """The installed peers, and a note for each one that is missing."""
    drivers: list[Driver] = [MpQueueDriver()]
    notes = []
    if faster_fifo_available():
        drivers.append(FasterFifoDriver())
    else:
        notes.append("faster_fifo is not installed (pip install faster-fifo): skipped")
    if zmq_available():
        drivers.append(ZmqDriver())
    else:
        notes.append("pyzmq is not installed (pip install pyzmq): skipped")
    return drivers, notes


def make_driver(name: str) -> Driver:
    """A driver by name: nanomq-spin, nanomq-futex, nanomq-yield, mp-queue, faster-fifo, zmq."""
    if name.startswith("nanomq-"):
        return RingDriver(wait=name.removeprefix("nanomq-"))
    table: dict[str, Callable[[], Driver]] = {
        "mp-queue": MpQueueDriver,
        "faster-fifo": FasterFifoDriver,
        "zmq": ZmqDriver,
    }
    if name not in table:
        raise ValueError(f"unknown driver {name!r}: use nanomq-spin, nanomq-futex, {', '.join(table)}")
    return table[name]()


# ------------------------------------------------------------ C-level ring ----


@dataclass(frozen=True, slots=True)
class CResult:
    """What one C loop (csrc/bench.c) measured."""

    kind: str  # "pingpong" or "stream"
    mode: str  # "threads" or "processes"
    size: int
    batch: int
    count: int
    warmup: int
    elapsed_ns: int
    messages: int
    received: int
    seq_errors: int
    dropped: int
    pinned: bool
    histogram: HdrHistogram | None
    lag: HdrHistogram | None = None
    """Paced streams with series: the producer's send lag of the measured messages (ns)."""
    latency_intervals: list[HdrHistogram] | None = None
    """Paced streams with series: latency per second of the schedule, warm-up included."""
    lag_intervals: list[HdrHistogram] | None = None
    """Paced streams with series: send lag per second of the schedule, warm-up included."""
    start_ns: int | None = None
    """Paced streams with series: CLOCK_MONOTONIC ns when message 0 was due."""

    @property
    def rate(self) -> float:
        """Messages (ping-pong: round trips) per second over the measured window."""
        return self.messages * 1e9 / self.elapsed_ns if self.elapsed_ns > 0 else 0.0


_MODES = {"threads": lib.NMQ_BENCH_THREADS, "processes": lib.NMQ_BENCH_PROCESSES}


def _c_run(
    fn: Any,
    kind: str,
    *,
    mode: str,
    size: int,
    count: int,
    warmup: int,
    batch: int = 1,
    record_latency: bool = False,
    rate: float = 0.0,
    cpus: tuple[int, int] | None = (0, 1),
    capacity: int = 1 << 20,
    timeout: float = 60.0,
    intervals: int = 0,
) -> CResult:
    if mode not in _MODES:
        raise ValueError(f"mode {mode!r} is not threads or processes")
    cpu_p, cpu_c = cpus if cpus is not None else (-1, -1)
    params = ffi.new(
        "nmq_bench_params *",
        {
            "mode": _MODES[mode],
            "cpu_producer": cpu_p,
            "cpu_consumer": cpu_c,
            "size": size,
            "batch": batch,
            "record_latency": int(record_latency),
            "count": count,
            "warmup": warmup,
            "capacity": capacity,
            "rate": rate,
            "timeout_ns": int(timeout * 1e9),
        },
    )
    res = ffi.new("nmq_bench_result *")
    counts = hdr.new_counts() if (kind == "pingpong" or record_latency) else ffi.NULL
    series: dict[str, Any] = {}
    if intervals:
        n = hdr.layout().counts_len
        series = {
            "lag": hdr.new_counts(),
            "lat": ffi.new("uint64_t[]", n * intervals),
            "lags": ffi.new("uint64_t[]", n * intervals),
            "t0": ffi.new("int64_t *"),
        }
        rc = lib.nmq_bench_stream_series(
            params, hdr.layout(), counts, series["lag"], series["lat"], series["lags"], intervals,
            1_000_000_000, series["t0"], res,
        )  # fmt: skip
    else:
        rc = fn(params, hdr.layout(), counts, res)
    if rc < 0:
        message = last_error()
        if rc == lib.NMQ_EINVAL:
            raise ValueError(message)
        if rc == lib.NMQ_TIMEOUT:
            raise errors.NanoMQError(message or f"C {kind} timed out after {timeout} s")
        raise_status(rc)
    return CResult(
        kind=kind,
        mode=mode,
        size=size,
        batch=batch,
        count=count,
        warmup=warmup,
        elapsed_ns=res.elapsed_ns,
        messages=res.messages,
        received=res.received,
        seq_errors=res.seq_errors,
        dropped=res.dropped,
        pinned=bool(res.pinned),
        histogram=hdr.counts_to_histogram(counts) if counts != ffi.NULL else None,
        **(_series_results(series, intervals) if series else {}),
    )


def _series_results(series: dict[str, Any], intervals: int) -> dict[str, Any]:
    n = hdr.layout().counts_len

    def split(arr: Any) -> list[HdrHistogram]:
        return [hdr.counts_to_histogram(ffi.unpack(arr + k * n, n)) for k in range(intervals)]

    return {
        "lag": hdr.counts_to_histogram(series["lag"]),
        "latency_intervals": split(series["lat"]),
        "lag_intervals": split(series["lags"]),
        "start_ns": int(series["t0"][0]),
    }


def c_pingpong(
    *,
    mode: str = "threads",
    size: int = 64,
    count: int = 100_000,
    warmup: int = 10_000,
    cpus: tuple[int, int] | None = (0, 1),
    timeout: float = 60.0,
) -> CResult:
    """C ping-pong over two rings; the histogram holds RTT/2 (ns) of each measured round trip.

    mode is "threads" or "processes" (forked children); cpus None leaves both unpinned.
    Blocks for the whole run (the GIL is released).
    """
    return _c_run(
        lib.nmq_bench_pingpong,
        "pingpong",
        mode=mode,
        size=size,
        count=count,
        warmup=warmup,
        cpus=cpus,
        timeout=timeout,
    )


def c_stream(
    *,
    mode: str = "threads",
    size: int = 64,
    count: int = 1_000_000,
    warmup: int = 10_000,
    batch: int = 1,
    record_latency: bool = False,
    rate: float = 0.0,
    cpus: tuple[int, int] | None = (0, 1),
    capacity: int = 1 << 20,
    timeout: float = 60.0,
    series: bool = False,
) -> CResult:
    """C streaming: count + warmup messages pushed `batch` per call and popped; rate = messages/s.

    With record_latency (size >= 16) the histogram holds one-way latency from the send
    stamp; with rate > 0 (batch 1) the producer is paced and stamps the intended time.
    With series (paced only) the result also holds the send lag and per-second latency and
    lag histograms of the whole schedule (nmq_bench_stream_series).
    """
    intervals = 0
    if series:
        if rate <= 0:
            raise ValueError(f"series need a paced run (rate > 0), not rate {rate}")
        intervals = max(1, math.ceil((count + warmup) / rate))
    return _c_run(
        lib.nmq_bench_stream,
        "stream",
        mode=mode,
        size=size,
        count=count,
        warmup=warmup,
        batch=batch,
        record_latency=record_latency,
        rate=rate,
        cpus=cpus,
        capacity=capacity,
        timeout=timeout,
        intervals=intervals,
    )
