"""Load generators: closed-loop throughput and open-loop paced latency, in two processes.

Message layout (every transport, every mode): bytes 0..7 the intended send time
(CLOCK_MONOTONIC ns, little-endian; 0 in throughput runs), bytes 8..15 the sequence
number, then padding to `size`. A zero-length message ends the stream.

Throughput (closed loop): the producer sends warmup + count messages as fast as the
transport takes them; the consumer counts them and checks the sequence (the low byte
of every message in single mode, the first and last of every batch in batch modes);
rate = messages after the warm-up / the consumer's time from the end of the warm-up to
the last message.

Latency (open loop, coordinated-omission corrected): message i is due at
t_i = t0 + i / rate; the producer busy-waits until t_i when early, never when late,
stamps t_i into the message and sends; the consumer records now - t_i into a
preallocated array, so a stall charges every message it delayed. The producer records
its lag (actual - intended) apart. The first `warmup` seconds are left out. A run is
FAILED when the producer could not hold the rate (achieved < 99 % of it) or messages
were lost, duplicated or reordered. Samples become HDR histograms (one C call) after
the run, never per message.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import platform
import struct
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from nanomq._ffi import lib
from nanomq.bench import envinfo, hdr, procs
from nanomq.bench.drivers import BATCH, Consumer, Driver, Producer

__all__ = [
    "MIN_SIZE",
    "MODES",
    "LatencyResult",
    "ThroughputResult",
    "environment",
    "pair_cpus",
    "run_latency",
    "run_throughput",
]

MIN_SIZE = 16
"""Smallest message: 8 bytes of send time and 8 of sequence number."""
MODES = ("single", "batch", "buffer")
"""Throughput modes: one message per call, 256 per call as a list, 256 per call as one buffer."""
RATE_TOLERANCE = 0.99
"""A paced run below this fraction of its target rate is FAILED."""

_HEAD = struct.Struct("<qQ")
_SEQ_BYTE = struct.Struct("B")
_clock = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux, like time.monotonic_ns and the C side
_spin_until = lib.nmq_bench_spin_until  # the same clock; cffi releases the GIL for the call


# ------------------------------------------------------------------ results ----


@dataclass
class ThroughputResult:
    """One closed-loop throughput run."""

    driver: str
    label: str
    mode: str
    size: int
    count: int
    warmup: int
    params: dict[str, Any]
    status: str = "OK"  # OK or FAILED
    reasons: list[str] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    measured: int = 0
    seq_errors: int = 0
    elapsed_ns: int = 0
    pinned: bool = False
    begin_ns: int | None = None
    """CLOCK_MONOTONIC ns when the measured window began (the consumer's end of warm-up)."""

    @property
    def rate(self) -> float:
        """Messages per second over the measured window (0 when nothing was measured)."""
        return self.measured * 1e9 / self.elapsed_ns if self.elapsed_ns > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "kind": "throughput",
            "driver": self.driver,
            "label": self.label,
            "mode": self.mode,
            "parameters": {"size": self.size, "count": self.count, "warmup": self.warmup, **self.params},
            "status": self.status,
            "reasons": self.reasons,
            "sent": self.sent,
            "received": self.received,
            "measured": self.measured,
            "seq_errors": self.seq_errors,
            "elapsed_ns": self.elapsed_ns,
            "throughput_msgs_per_s": self.rate,
            "throughput_bytes_per_s": self.rate * self.size,
            "pinned": self.pinned,
        }


@dataclass
class LatencyResult:
    """One open-loop paced latency run: latency from the intended send time, and the producer's lag."""

    driver: str
    label: str
    rate: float
    size: int
    duration: float
    warmup: float
    params: dict[str, Any]
    status: str = "OK"
    reasons: list[str] = field(default_factory=list)
    planned: int = 0
    warmup_messages: int = 0
    sent: int = 0
    received: int = 0
    seq_errors: int = 0
    achieved_rate: float = 0.0
    dropped: int = 0
    lag_dropped: int = 0
    pinned: bool = False
    latency: HdrHistogram | None = None
    lag: HdrHistogram | None = None
    start_ns: int | None = None
    """CLOCK_MONOTONIC ns when message 0 was due: the schedule's origin."""
    latency_intervals: list[HdrHistogram] | None = None
    """Latency per second of the schedule (interval k: messages due in second k), warm-up included."""
    lag_intervals: list[HdrHistogram] | None = None
    """Send lag per second of the schedule, warm-up included."""

    @property
    def measured(self) -> int:
        """Latency samples in the histogram."""
        return self.latency.get_total_count() if self.latency is not None else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record, histograms as HdrHistogram V2 base64 text."""
        return {
            "kind": "latency",
            "driver": self.driver,
            "label": self.label,
            "parameters": {
                "rate": self.rate,
                "size": self.size,
                "duration_s": self.duration,
                "warmup_s": self.warmup,
                **self.params,
            },
            "status": self.status,
            "reasons": self.reasons,
            "planned": self.planned,
            "warmup_messages": self.warmup_messages,
            "sent": self.sent,
            "received": self.received,
            "measured": self.measured,
            "seq_errors": self.seq_errors,
            "achieved_rate": self.achieved_rate,
            "dropped": self.dropped,
            "pinned": self.pinned,
            "latency_ns": hdr.percentiles(self.latency) if self.latency is not None else None,
            "send_lag_ns": hdr.percentiles(self.lag) if self.lag is not None else None,
            "histogram": hdr.encode(self.latency) if self.latency is not None else None,
            "send_lag_histogram": hdr.encode(self.lag) if self.lag is not None else None,
        }


# ------------------------------------------------------------ two processes ----


def pair_cpus(pin: bool) -> tuple[int | None, int | None]:
    """CPUs for (producer, consumer): the first two this process may use, or None when not pinning."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def _pin(cpu: int | None) -> bool:
    if cpu is None:
        return False
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return False
    return True


def _child(
    role: str, driver: Driver, cpu: int | None, fn: Callable[..., dict], kwargs: dict, go: Any, conn: Any
) -> None:
    pinned = _pin(cpu)

    def open_end() -> Producer | Consumer:
        return driver.producer() if role == "producer" else driver.consumer()

    def work(end: Producer | Consumer) -> dict:
        return {**fn(end, **kwargs), "pinned": pinned}

    procs.child_main(role, open_end, work, go, conn)


def _run_pair(
    driver: Driver,
    size: int,
    producer: tuple[Callable[..., dict], dict],
    consumer: tuple[Callable[..., dict], dict],
    start_method: str,
    timeout: float,
) -> tuple[dict, dict]:
    """Run producer and consumer functions in two processes, started together; their result dicts.

    A side that fails, or does not finish within `timeout` seconds, gives {"error": ...}.
    """
    ctx = multiprocessing.get_context(start_method)
    driver.setup(ctx, size)
    children: list[Any] = []
    try:
        go = ctx.Event()
        cpu_p, cpu_c = pair_cpus(driver.pin)
        conns = {}
        for role, (fn, kwargs), cpu in (("consumer", consumer, cpu_c), ("producer", producer, cpu_p)):
            proc, conns[role] = procs.spawn(ctx, _child, (role, driver, cpu, fn, kwargs, go), f"bench-{role}")
            children.append(proc)
        deadline = time.monotonic() + timeout
        ready = _collect(conns, deadline)
        failed = {role: res for role, res in ready.items() if "error" in res}
        if failed:
            return ready.get("producer", {}), ready.get("consumer", {})
        go.set()
        results = _collect(conns, deadline)
        return results["producer"], results["consumer"]
    finally:
        procs.reap(children)
        driver.teardown()


def _collect(conns: dict[str, Any], deadline: float) -> dict[str, dict]:
    """One message from each connection, or an error for those that time out or close."""
    pending = dict(conns)
    out: dict[str, dict] = {}
    while pending:
        left = deadline - time.monotonic()
        ready = multiprocessing.connection.wait(list(pending.values()), timeout=max(0.0, left))
        if not ready:
            for role in pending:
                out[role] = {"error": f"{role} did not finish in time"}
            break
        for role, conn in list(pending.items()):
            if conn in ready:
                try:
                    out[role] = conn.recv()
                except EOFError:
                    out[role] = {"error": f"{role} exited without a result"}
                del pending[role]
                if "error" in out[role]:  # the other side may now wait forever: stop collecting
                    for other in pending:
                        out[other] = {"error": f"{other} stopped: {out[role]['error']}"}
                    return out
    return out


# --------------------------------------------------------------- throughput ----


def _messages(size: int) -> list[bytes]:
    """256 messages whose sequence field holds 0..255 (message i of a stream is msgs[i % 256])."""
    pad = bytes(size - MIN_SIZE)
    return [_HEAD.pack(0, k) + pad for k in range(BATCH)]


def _seq_byte(m: Any) -> int:
    """Low byte of a message's sequence number, for bytes or any bytes-like view."""
    return _SEQ_BYTE.unpack_from(m, 8)[0]


def _tp_producer(end: Producer, *, count: int, warmup: int, size: int, mode: str) -> dict:
    total = count + warmup
    msgs = _messages(size)
    full, rest = divmod(total, BATCH)
    t0 = _clock()
    if mode == "single":
        try_send = end.try_send
        if try_send is not None:
            for i in range(total):
                m = msgs[i & 255]
                while not try_send(m):
                    pass
        else:
            send = end.send
            for i in range(total):
                send(msgs[i & 255])
    elif mode == "batch":
        send_batch = end.send_batch
        for _ in range(full):
            send_batch(msgs)
        if rest:
            send_batch(msgs[:rest])
    else:
        data, lengths = b"".join(msgs), [size] * BATCH
        send_buffer = end.send_buffer
        for _ in range(full):
            send_buffer(data, lengths)
        if rest:
            send_buffer(data[: rest * size], lengths[:rest])
    t1 = _clock()
    end.send(b"")
    return {"sent": total, "t_first_send": t0, "t_last_send": t1}


def _tp_single(end: Consumer, limit: int, got: int, bad: int) -> tuple[int, int, bool]:
    """Receive one message per call until `limit` messages or the end marker; checks every sequence byte."""
    try_recv = end.try_recv
    if try_recv is not None:
        while got < limit:
            m = try_recv()
            if m is None:
                continue
            if not m:
                return got, bad, True
            if m[8] != got & 255:
                bad += 1
            got += 1
    else:
        recv = end.recv
        while got < limit:
            m = recv()
            if not m:
                return got, bad, True
            if m[8] != got & 255:
                bad += 1
            got += 1
    return got, bad, False


def _tp_consumer(end: Consumer, *, count: int, warmup: int, size: int, mode: str) -> dict:
    got = bad = 0
    ended = False
    t_begin = _clock()
    at_begin = 0
    if mode == "single":
        got, bad, ended = _tp_single(end, warmup, 0, 0)
        t_begin, at_begin = _clock(), got
        if not ended:
            got, bad, ended = _tp_single(end, 1 << 62, got, bad)
    else:
        recv = end.recv_batch if mode == "batch" else end.recv_buffer
        seq_of = _seq_byte
        begun = warmup == 0
        while not ended:
            if mode == "batch":
                batch = recv()
                n = len(batch)
                if not batch[n - 1]:
                    ended, n = True, n - 1
                if n and (seq_of(batch[0]) != got & 255 or seq_of(batch[n - 1]) != (got + n - 1) & 255):
                    bad += 1
            else:
                data, offs = recv()
                n = len(offs) - 1
                if offs[n] == offs[n - 1]:
                    ended, n = True, n - 1
                if n and (data[offs[0] + 8] != got & 255 or data[offs[n - 1] + 8] != (got + n - 1) & 255):
                    bad += 1
            got += n
            if not begun and got >= warmup:
                begun, t_begin, at_begin = True, _clock(), got
    t_end = _clock()
    return {
        "received": got,
        "seq_errors": bad,
        "ended": ended,
        "measured": got - at_begin,
        "elapsed_ns": t_end - t_begin,
        "begin_ns": t_begin,
    }


def run_throughput(
    driver: Driver,
    *,
    size: int = 64,
    count: int = 1_000_000,
    warmup: int | None = None,
    mode: str = "single",
    start_method: str = "fork",
    timeout: float = 300.0,
) -> ThroughputResult:
    """Closed-loop throughput of `driver`: count messages of `size` bytes after `warmup` ones.

    mode: "single" (one message per call), "batch" (256 per call as a list; the driver's
    closest equivalent, see Driver.batch_label) or "buffer" (256 per call as one buffer;
    drivers with Driver.buffer only). warmup None: a tenth of count, at least 1000.
    """
    _check_size(size)
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    if (mode == "batch" and driver.batch_label is None) or (mode == "buffer" and not driver.buffer):
        raise ValueError(f"{driver.label} has no {mode} mode")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    warmup = max(1000, count // 10) if warmup is None else warmup
    kwargs = {"count": count, "warmup": warmup, "size": size, "mode": mode}
    prod, cons = _run_pair(
        driver, size, (_tp_producer, kwargs), (_tp_consumer, kwargs), start_method, timeout
    )
    params = {**driver.params(), "start_method": start_method}
    if mode != "single":
        params["batch"] = BATCH
        params["batch_api"] = (
            driver.batch_label if mode == "batch" else "push_batch_buffer / pop_batch_buffer"
        )
    res = ThroughputResult(driver.name, driver.label, mode, size, count, warmup, params)
    for side in (prod, cons):
        if "error" in side:
            res.reasons.append(side["error"])
    res.sent = prod.get("sent", 0)
    res.received = cons.get("received", 0)
    res.measured = cons.get("measured", 0)
    res.seq_errors = cons.get("seq_errors", 0)
    res.elapsed_ns = cons.get("elapsed_ns", 0)
    res.begin_ns = cons.get("begin_ns")
    res.pinned = bool(prod.get("pinned")) and bool(cons.get("pinned"))
    if not res.reasons:
        if res.received != count + warmup:
            res.reasons.append(f"received {res.received} messages, sent {count + warmup}")
        if res.seq_errors:
            res.reasons.append(f"{res.seq_errors} sequence errors (lost, duplicated or reordered messages)")
        if not cons.get("ended"):
            res.reasons.append("the end marker never arrived")
    res.status = "FAILED" if res.reasons else "OK"
    return res


# ------------------------------------------------------------------ latency ----


# Every producer waits for its next due time in C (nmq_bench_spin_until): with the GIL released,
# so a client's own threads run meanwhile (a Python spin holds the GIL for the interpreter's
# switch interval, 5 ms, and starved NanoMQ's reader thread), and yielding the CPU at every look,
# so what the system under test has runnable on the producer's CPU runs at once rather than after
# the spinner's time slice (on two vCPUs the spinner has one of them: NanoMQ's end-to-end P99 at
# 10k msg/s 1.9-3.4 ms with the yield against 4.9-25.7 ms without, three runs each). A polite
# producer (Driver.sleep_between_sends) also sleeps until _SLEEP_MARGIN_NS before a due time more
# than _SLEEP_ABOVE_NS away. (It spun with time.sleep(0) before, which on Linux sleeps for the
# timer slack — ≈ 105 µs a call here, longer than the interval at 10k msg/s: NanoMQ's sends went
# out 17-170 µs late (P50), and that lateness counted as latency.) Lateness of any kind is in the
# send lag, and so in the latency, which counts from the intended time.
_SLEEP_ABOVE_NS = 200_000
_SLEEP_MARGIN_NS = 100_000


def wait_until(due: int, polite: bool) -> int:
    """Return at CLOCK_MONOTONIC time `due` (ns) or just after, with that time (see above)."""
    now = _clock()
    if now >= due:
        return now
    if polite and due - now > _SLEEP_ABOVE_NS:
        time.sleep((due - now - _SLEEP_MARGIN_NS) / 1e9)
    return _spin_until(due)


def _lat_producer(
    end: Producer, *, rate: float, total: int, warmup: int, size: int, grace_ns: int, polite: bool = False
) -> dict:
    lag = array("q", bytes(8 * total))
    pad = bytes(size - MIN_SIZE)
    pack = _HEAD.pack
    interval = 1e9 / rate
    try_send, send = end.try_send, end.send
    t0 = _clock() + 1_000_000  # the first message is due 1 ms after the start
    stop = t0 + int(total * interval) + grace_ns
    sent = 0
    stopped_early = False
    for i in range(total):
        due = t0 + int(i * interval)
        now = wait_until(due, polite)
        m = pack(due, i) + pad
        if try_send is not None:
            while not try_send(m):
                pass
        else:
            send(m)
        lag[i] = now - due
        sent = i + 1
        if now > stop:
            stopped_early = True
            break
    end.send(b"")
    measured = max(0, sent - warmup)
    achieved = 0.0
    if measured > 1:  # from the first measured message's intended time to the last one's actual
        # send: a late first message must not shorten the window (it would read as a rate above
        # the target when the producer then catches up back to back)
        first = t0 + int(warmup * interval)
        last = t0 + int((sent - 1) * interval) + lag[sent - 1]
        achieved = (measured - 1) * 1e9 / max(1, last - first)
    h, dropped = hdr.histogram_from_values(memoryview(lag)[warmup:sent])
    return {
        "sent": sent,
        "stopped_early": stopped_early,
        "achieved_rate": achieved,
        "start_ns": t0,
        "lag": hdr.encode(h),
        "lag_dropped": dropped,
        "lag_intervals": _per_second(lag, sent, rate),
    }


def _per_second(samples: array, n: int, rate: float) -> list[str]:
    """Encoded histograms of samples[:n] (sample i belongs to message i), one per second of the
    schedule: interval k holds the messages due in [k s, k + 1 s) after the first, warm-up included."""
    view = memoryview(samples)
    return [hdr.encode(hdr.histogram_from_values(view[lo:hi])[0]) for lo, hi in _seconds(n, rate)]


def _seconds(n: int, rate: float) -> Iterator[tuple[int, int]]:
    """The message index range [lo, hi) of each second of a schedule at `rate` msg/s, over its first n."""
    interval = 1e9 / rate
    lo, k = 0, 1
    while lo < n:
        hi = min(_first_due_at_or_after(k * 1_000_000_000, interval), n)
        yield lo, hi
        lo, k = hi, k + 1


def _first_due_at_or_after(offset_ns: int, interval: float) -> int:
    """The first message index i with int(i * interval) >= offset_ns (the producer's schedule)."""
    i = max(0, int(offset_ns / interval))
    while i > 0 and int((i - 1) * interval) >= offset_ns:
        i -= 1
    while int(i * interval) < offset_ns:
        i += 1
    return i


def _lat_consumer(end: Consumer, *, total: int, warmup: int, rate: float) -> dict:
    lat = array("q", bytes(8 * total))
    unpack = _HEAD.unpack_from
    got = bad = expected = 0
    try_recv = end.try_recv
    if try_recv is not None:
        while True:
            m = try_recv()
            if m is None:
                continue
            now = _clock()
            if not m:
                break
            due, seq = unpack(m)
            if seq != expected:
                bad += 1
            expected = seq + 1
            if got < total:
                lat[got] = now - due
            got += 1
    else:
        recv = end.recv
        while True:
            m = recv()
            now = _clock()
            if not m:
                break
            due, seq = unpack(m)
            if seq != expected:
                bad += 1
            expected = seq + 1
            if got < total:
                lat[got] = now - due
            got += 1
    n = min(got, total)
    h, dropped = hdr.histogram_from_values(memoryview(lat)[min(warmup, got) : n])
    return {
        "received": got,
        "seq_errors": bad,
        "latency": hdr.encode(h),
        "dropped": dropped,
        "latency_intervals": _per_second(lat, n, rate),
    }


def _check_size(size: int) -> None:
    """Raise ValueError naming the limit when a message cannot hold its send time and sequence number."""
    if size < MIN_SIZE:
        raise ValueError(
            f"message size {size} is below the {MIN_SIZE} bytes of send time and sequence number"
        )


def _schedule(
    rate: float, duration: float, warmup: float, timeout: float | None, *, at_least: int
) -> tuple[int, int, float, float]:
    """An open-loop schedule: (warm-up messages, all messages, the producer's grace s, timeout s).

    At least `at_least` messages are measured; the producer gives up `grace` s after the
    schedule's end; timeout None: the schedule, twice the grace and 30 s."""
    if rate <= 0 or duration <= 0 or warmup < 0:
        raise ValueError(
            f"rate ({rate}) and duration ({duration}) must be positive and warmup ({warmup}) not negative"
        )
    warmup_n = int(rate * warmup)
    total = warmup_n + max(at_least, int(rate * duration))
    grace = max(1.0, 0.5 * (duration + warmup))
    if timeout is None:
        timeout = duration + warmup + 2 * grace + 30.0
    return warmup_n, total, grace, timeout


def _judge_latency(res: LatencyResult, stopped: str | None, expected: int, what: str) -> None:
    """Set res.status: FAILED with the reasons (kept when a process reported an error), else OK.

    stopped: why the producer gave up early (None if it did not); expected: the deliveries
    res.received must equal, named `what` in the reason."""
    if not res.reasons:
        if stopped:
            res.reasons.append(stopped)
        if res.achieved_rate < RATE_TOLERANCE * res.rate:
            res.reasons.append(
                f"achieved {res.achieved_rate:,.0f} msg/s, below 99 % of the target {res.rate:,.0f}"
            )
        if res.received != expected:
            res.reasons.append(f"received {res.received} messages, {what} {expected}")
        if res.seq_errors:
            res.reasons.append(f"{res.seq_errors} sequence errors (lost, duplicated or reordered messages)")
        if res.dropped:
            res.reasons.append(f"{res.dropped} latency samples beyond the histogram's range")
    res.status = "FAILED" if res.reasons else "OK"


def run_latency(
    driver: Driver,
    *,
    rate: float,
    duration: float = 2.0,
    warmup: float = 0.5,
    size: int = 64,
    start_method: str = "fork",
    timeout: float | None = None,
) -> LatencyResult:
    """Open-loop latency of `driver` at `rate` messages/s for `duration` s after `warmup` s.

    Latency counts from each message's intended send time (coordinated omission
    corrected). The producer gives up 1 s (or half the run) after the schedule ends, and
    the run is FAILED if it fell below 99 % of `rate` or any message was lost,
    duplicated or reordered.
    """
    _check_size(size)
    warmup_n, total, grace, timeout = _schedule(rate, duration, warmup, timeout, at_least=2)
    pkw = {
        "rate": rate,
        "total": total,
        "warmup": warmup_n,
        "size": size,
        "grace_ns": int(grace * 1e9),
        "polite": driver.sleep_between_sends,
    }
    ckw = {"total": total, "warmup": warmup_n, "rate": rate}
    prod, cons = _run_pair(driver, size, (_lat_producer, pkw), (_lat_consumer, ckw), start_method, timeout)
    res = LatencyResult(
        driver.name,
        driver.label,
        rate,
        size,
        duration,
        warmup,
        {**driver.params(), "start_method": start_method},
        planned=total,
        warmup_messages=warmup_n,
    )
    for side in (prod, cons):
        if "error" in side:
            res.reasons.append(side["error"])
    res.sent = prod.get("sent", 0)
    res.received = cons.get("received", 0)
    res.seq_errors = cons.get("seq_errors", 0)
    res.achieved_rate = prod.get("achieved_rate", 0.0)
    res.dropped = cons.get("dropped", 0)
    res.lag_dropped = prod.get("lag_dropped", 0)
    res.pinned = bool(prod.get("pinned")) and bool(cons.get("pinned"))
    res.start_ns = prod.get("start_ns")
    if "latency" in cons:
        res.latency = hdr.decode(cons["latency"])
        res.latency_intervals = [hdr.decode(x) for x in cons["latency_intervals"]]
    if "lag" in prod:
        res.lag = hdr.decode(prod["lag"])
        res.lag_intervals = [hdr.decode(x) for x in prod["lag_intervals"]]
    stopped = f"producer fell behind and stopped after {res.sent} of {total} messages"
    _judge_latency(res, stopped if prod.get("stopped_early") else None, res.sent, "sent")
    return res


# -------------------------------------------------------------- environment ----


def environment() -> dict[str, Any]:
    """What the run record says about the machine: CPU, cores, affinity, kernel, load, Python, versions."""
    return {
        "cpu_model": envinfo.cpu_model() or "",
        "cores": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "kernel": platform.release(),
        "machine": platform.machine(),
        "governor": envinfo.governor(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "versions": envinfo.package_versions(("nanomq", "cffi", "hdrhistogram", "faster-fifo", "pyzmq")),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
