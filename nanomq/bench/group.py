"""Several producers and consumers on one transport: the load generator beyond one of each.

The single-pair paths of nanomq.bench.loadgen stay as they are (tuned for one producer
and one consumer); this module runs P producer and M consumer processes over a driver
that allows it (`Driver.max_producers`, `Driver.max_consumers`). Two delivery models:

- work queue (`Driver.fanout` False: multiprocessing.Queue, faster_fifo): each message
  goes to exactly one consumer; all consumers together must receive every message once.
- fan-out (`Driver.fanout` True: NATS and Redis pub/sub, the broker): every consumer
  receives every message; each must receive all of them.
- fan-in (one consumer of any transport, e.g. pyzmq PUSH/PULL with several producers):
  the one consumer receives everything, each producer's messages in order.

Messages carry a global sequence number: producer p sends messages p, p + P, p + 2P, …
(latency: message i is due at t0 + i / rate, so P producers share one schedule at the
total rate; throughput: each sends count / P as fast as it can). A consumer checks that
each producer's messages reach it in order (fan-out: without a gap). The end of the
stream: in fan-out and fan-in every producer sends one end marker and a consumer stops
after P; in a work queue the other producers flush, then producer 0 sends M end markers one at a
time, each after the previous one was taken, so no consumer can take two.

Runs with more than two processes are never pinned (two CPUs cannot hold them).
Latency is from the intended send time, as in loadgen; warm-up messages (the first
`warmup` seconds of the schedule) are left out by their sequence number.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import time
from array import array
from typing import Any

from nanomq.bench import hdr, procs
from nanomq.bench.drivers import BATCH, Consumer, Driver, Producer
from nanomq.bench.loadgen import (
    MIN_SIZE,
    LatencyResult,
    ThroughputResult,
    _check_size,
    _collect,
    _judge_latency,
    _schedule,
    _seconds,
    wait_until,
)

__all__ = ["check_group", "run_latency_group", "run_throughput_group"]

_HEAD = struct.Struct("<qQ")
_clock = time.perf_counter_ns
_END_WAIT_S = 30.0
# With more processes than CPUs a producer that busy-waits for its next due time takes the
# CPU a consumer needs (2 producers + 2 consumers on 2 cores: mp.Queue's P50 at 10k msg/s
# was 11 ms, a backlog). So there a producer is polite (loadgen.wait_until): it sleeps until
# shortly before each due time; latency still counts from the intended time, and a late
# wake-up shows in the send lag.


def check_group(driver: Driver, producers: int, consumers: int) -> None:
    """Raise ValueError naming the limit when `driver` cannot run this many producers or consumers."""
    if producers < 1 or consumers < 1:
        raise ValueError(f"producers ({producers}) and consumers ({consumers}) must be at least 1")
    if producers > driver.max_producers or consumers > driver.max_consumers:
        raise ValueError(
            f"{driver.label} takes at most {driver.max_producers} producers and {driver.max_consumers} "
            f"consumers, not {producers} and {consumers}"
        )


def _each_gets_all(driver: Driver, consumers: int) -> bool:
    """Whether every consumer receives every message: pub/sub, or a single consumer of anything.

    Then each producer's messages reach a consumer in order and without a gap, and the
    stream ends with one end marker per producer."""
    return driver.fanout or consumers == 1


def _delivery(driver: Driver, consumers: int) -> str:
    if driver.fanout:
        return "fan-out"
    return "fan-in" if consumers == 1 else "work queue"


# ------------------------------------------------------------------ processes ----


def _child(role: str, index: int, driver: Driver, fn: Any, kwargs: dict, go: Any, conn: Any) -> None:
    def open_end() -> Producer | Consumer:
        end = driver.producer() if role == "producer" else driver.consumer()
        if role == "consumer" and hasattr(end, "peers"):
            end.peers = kwargs["producers"]  # an end that confirms the close to each producer (zmq)
        return end

    procs.child_main(f"{role} {index}", open_end, lambda end: fn(end, index=index, **kwargs), go, conn)


def _run_group(
    driver: Driver,
    ctx: Any,
    size: int,
    producer: tuple[Any, dict],
    consumer: tuple[Any, dict],
    producers: int,
    consumers: int,
    timeout: float,
    before_go: Any = None,
) -> tuple[list[dict], list[dict]]:
    """Run P producer and M consumer processes (consumers start first); their result dicts."""
    driver.setup(ctx, size)
    children: list[Any] = []
    try:
        go = ctx.Event()
        conns: dict[str, Any] = {}
        roles = [("consumer", i, consumer) for i in range(consumers)]
        roles += [("producer", i, producer) for i in range(producers)]
        for role, i, (fn, kwargs) in roles:
            proc, conns[f"{role}-{i}"] = procs.spawn(
                ctx, _child, (role, i, driver, fn, kwargs, go), f"bench-{role}-{i}"
            )
            children.append(proc)
        deadline = time.monotonic() + timeout
        ready = _collect(conns, deadline)
        if not any("error" in res for res in ready.values()):
            if before_go is not None:
                before_go()
            go.set()
            ready = _collect(conns, deadline)
        return (
            [ready.get(f"producer-{i}", {"error": "no result"}) for i in range(producers)],
            [ready.get(f"consumer-{i}", {"error": "no result"}) for i in range(consumers)],
        )
    finally:
        procs.reap(children)
        driver.teardown()


def _finish_stream(
    end: Producer, *, index: int, fanout: bool, consumers: int, flushed: Any, taken: Any
) -> None:
    """Send this producer's share of end markers (see the module docstring)."""
    if fanout:
        end.send(b"")
        return
    if index != 0:
        end.flush()
        flushed.wait(_END_WAIT_S)
        return
    flushed.wait(_END_WAIT_S)  # every other producer's messages are in the transport
    for k in range(consumers):
        end.send(b"")
        if not taken.acquire(timeout=_END_WAIT_S):
            raise RuntimeError(f"end marker {k + 1} of {consumers} was not taken within {_END_WAIT_S} s")


class _Checker:
    """Per-producer order of the messages one consumer receives."""

    def __init__(self, producers: int, fanout: bool) -> None:
        self.p = producers
        self.fanout = fanout
        self.last = [-1] * producers
        self.bad = 0

    def seq(self, seq: int) -> None:
        p = seq % self.p
        last = self.last[p]
        if (seq != (p if last < 0 else last + self.p)) if self.fanout else seq <= last:
            self.bad += 1
        self.last[p] = seq


def _end_seen(end_markers: int, needed: int, fanout: bool, taken: Any) -> bool:
    if not fanout:
        taken.release()
    return end_markers >= needed


# ---------------------------------------------------------------- throughput ----


def _tp_producer(
    end: Producer,
    *,
    index: int,
    producers: int,
    consumers: int,
    per_producer: int,
    size: int,
    batch: bool,
    fanout: bool,
    flushed: Any,
    taken: Any,
) -> dict:
    pad = bytes(size - MIN_SIZE)
    pack = _HEAD.pack
    t0 = _clock()
    if batch:
        send_batch = end.send_batch
        for k0 in range(0, per_producer, BATCH):
            send_batch(
                [pack(0, k * producers + index) + pad for k in range(k0, min(per_producer, k0 + BATCH))]
            )
    else:
        send = end.send
        for k in range(per_producer):
            send(pack(0, k * producers + index) + pad)
    t1 = _clock()
    _finish_stream(end, index=index, fanout=fanout, consumers=consumers, flushed=flushed, taken=taken)
    return {"sent": per_producer, "t_first_send": t0, "t_last_send": t1}


def _tp_consumer(
    end: Consumer, *, index: int, producers: int, warmup_seq: int, batch: bool, fanout: bool, taken: Any
) -> dict:
    check = _Checker(producers, fanout)
    unpack = _HEAD.unpack_from
    got = measured = markers = 0
    t_first = t_last = 0
    needed = producers if fanout else 1
    done = False
    while not done:
        msgs = end.recv_batch() if batch else (end.recv(),)
        now = _clock()
        for m in msgs:
            if not len(m):
                markers += 1
                done = _end_seen(markers, needed, fanout, taken)
                continue
            seq = unpack(m)[1]
            check.seq(seq)
            got += 1
            if seq >= warmup_seq:
                if not measured:
                    t_first = now
                measured += 1
                t_last = now
    return {
        "received": got,
        "measured": measured,
        "seq_errors": check.bad,
        "t_first": t_first,
        "t_last": t_last,
    }


def run_throughput_group(
    driver: Driver,
    *,
    producers: int,
    consumers: int,
    size: int = 64,
    count: int = 100_000,
    warmup: int | None = None,
    mode: str = "single",
    start_method: str = "fork",
    timeout: float = 300.0,
) -> ThroughputResult:
    """Closed-loop throughput with P producers and M consumers; count (and warmup) split over the producers.

    The rate is the measured messages (deliveries, in fan-out) over the time from the first
    measured one to the last, across all consumers.
    """
    check_group(driver, producers, consumers)
    _check_size(size)
    if mode not in ("single", "batch") or (mode == "batch" and driver.batch_label is None):
        raise ValueError(f"{driver.label} has no {mode} mode with several producers or consumers")
    warmup = max(1000, count // 10) if warmup is None else warmup
    per_producer = max(1, -(-(count + warmup) // producers))
    warmup_k = -(-warmup // producers)
    ctx = multiprocessing.get_context(start_method)
    fanout = _each_gets_all(driver, consumers)
    flushed, taken = ctx.Barrier(producers), ctx.Semaphore(0)
    pkw = {
        "producers": producers,
        "consumers": consumers,
        "per_producer": per_producer,
        "size": size,
        "batch": mode == "batch",
        "fanout": fanout,
        "flushed": flushed,
        "taken": taken,
    }
    ckw = {
        "producers": producers,
        "warmup_seq": warmup_k * producers,
        "batch": mode == "batch",
        "fanout": fanout,
        "taken": taken,
    }
    prods, conss = _run_group(
        driver, ctx, size, (_tp_producer, pkw), (_tp_consumer, ckw), producers, consumers, timeout
    )
    params = {
        **driver.params(),
        "start_method": start_method,
        "producers": producers,
        "consumers": consumers,
        "delivery": _delivery(driver, consumers),
    }
    if mode == "batch":
        params["batch"] = BATCH
        params["batch_api"] = driver.batch_label
    total = per_producer * producers
    res = ThroughputResult(
        driver.name, driver.label, mode, size, total - warmup_k * producers, warmup_k * producers, params
    )
    res.reasons += [side["error"] for side in prods + conss if "error" in side]
    res.sent = sum(p.get("sent", 0) for p in prods)
    res.received = sum(c.get("received", 0) for c in conss)
    res.measured = sum(c.get("measured", 0) for c in conss)
    res.seq_errors = sum(c.get("seq_errors", 0) for c in conss)
    firsts = [c["t_first"] for c in conss if c.get("measured")]
    lasts = [c["t_last"] for c in conss if c.get("measured")]
    res.elapsed_ns = (max(lasts) - min(firsts)) if firsts else 0
    expected = res.sent * (consumers if fanout else 1)
    if not res.reasons:
        if res.received != expected:
            res.reasons.append(f"received {res.received} messages, expected {expected}")
        if res.seq_errors:
            res.reasons.append(f"{res.seq_errors} sequence errors (lost, duplicated or reordered messages)")
    res.status = "FAILED" if res.reasons else "OK"
    res.params["expected"] = expected
    return res


# ------------------------------------------------------------------ latency ----


def _per_second(samples: array, total: int, rate: float) -> list[str]:
    """Encoded histograms by second of the schedule (message i's slot), skipping -1 (not this process's)."""
    out = []
    for lo, hi in _seconds(total, rate):
        values = array("q", (v for v in samples[lo:hi] if v >= 0))
        h, _ = hdr.histogram_from_values(memoryview(values))
        out.append(hdr.encode(h))
    return out


def _measured(samples: array, warmup: int) -> tuple[str, int]:
    values = array("q", (v for v in samples[warmup:] if v >= 0))
    h, dropped = hdr.histogram_from_values(memoryview(values))
    return hdr.encode(h), dropped


def _lat_producer(
    end: Producer,
    *,
    index: int,
    producers: int,
    consumers: int,
    rate: float,
    total: int,
    warmup: int,
    size: int,
    grace_ns: int,
    t0: Any,
    fanout: bool,
    flushed: Any,
    taken: Any,
    polite: bool,
) -> dict:
    lag = array("q", [-1]) * total
    pad = bytes(size - MIN_SIZE)
    pack = _HEAD.pack
    interval = 1e9 / rate
    start = t0.value
    stop = start + int(total * interval) + grace_ns
    send = end.send
    sent = 0
    stopped_early = False
    first_actual = last_actual = 0
    for i in range(index, total, producers):
        due = start + int(i * interval)
        now = wait_until(due, polite)
        send(pack(due, i) + pad)
        lag[i] = now - due
        sent += 1
        if i >= warmup:
            if not first_actual:  # the intended time: a late first send must not shorten the window
                first_actual = due
            last_actual = now
        if now > stop:
            stopped_early = True
            break
    _finish_stream(end, index=index, fanout=fanout, consumers=consumers, flushed=flushed, taken=taken)
    encoded, dropped = _measured(lag, warmup)
    return {
        "sent": sent,
        "stopped_early": stopped_early,
        "first_actual": first_actual,
        "last_actual": last_actual,
        "lag": encoded,
        "lag_dropped": dropped,
        "lag_intervals": _per_second(lag, total, rate),
    }


def _lat_consumer(
    end: Consumer,
    *,
    index: int,
    producers: int,
    total: int,
    warmup: int,
    rate: float,
    fanout: bool,
    taken: Any,
) -> dict:
    lat = array("q", [-1]) * total
    check = _Checker(producers, fanout)
    unpack = _HEAD.unpack_from
    recv = end.recv
    got = markers = 0
    needed = producers if fanout else 1
    while True:
        m = recv()
        now = _clock()
        if not len(m):
            markers += 1
            if _end_seen(markers, needed, fanout, taken):
                break
            continue
        due, seq = unpack(m)
        check.seq(seq)
        if 0 <= seq < total:
            lat[seq] = now - due
        got += 1
    encoded, dropped = _measured(lat, warmup)
    return {
        "received": got,
        "seq_errors": check.bad,
        "latency": encoded,
        "dropped": dropped,
        "latency_intervals": _per_second(lat, total, rate),
    }


def _merge_intervals(parts: list[list[str]]) -> list[Any]:
    n = max((len(p) for p in parts), default=0)
    return [hdr.merge(hdr.decode(p[k]) for p in parts if k < len(p)) for k in range(n)]


def run_latency_group(
    driver: Driver,
    *,
    producers: int,
    consumers: int,
    rate: float,
    duration: float = 2.0,
    warmup: float = 0.5,
    size: int = 64,
    start_method: str = "fork",
    timeout: float | None = None,
) -> LatencyResult:
    """Open-loop latency at `rate` msg/s in all, from P producers sharing one schedule, to M consumers."""
    check_group(driver, producers, consumers)
    _check_size(size)
    warmup_n, total, grace, timeout = _schedule(rate, duration, warmup, timeout, at_least=2 * producers)
    ctx = multiprocessing.get_context(start_method)
    fanout = _each_gets_all(driver, consumers)
    flushed, taken = ctx.Barrier(producers), ctx.Semaphore(0)
    t0 = ctx.Value("q", 0, lock=False)
    common = {
        "producers": producers,
        "total": total,
        "warmup": warmup_n,
        "rate": rate,
        "fanout": fanout,
        "taken": taken,
    }
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    polite = producers + consumers > cpus
    pkw = {
        **common,
        "consumers": consumers,
        "size": size,
        "grace_ns": int(grace * 1e9),
        "t0": t0,
        "flushed": flushed,
        "polite": polite,
    }

    def set_start() -> None:
        t0.value = _clock() + 2_000_000  # message 0 is due 2 ms after the go signal

    prods, conss = _run_group(
        driver,
        ctx,
        size,
        (_lat_producer, pkw),
        (_lat_consumer, common),
        producers,
        consumers,
        timeout,
        set_start,
    )
    res = LatencyResult(
        driver.name,
        driver.label,
        rate,
        size,
        duration,
        warmup,
        {
            **driver.params(),
            "start_method": start_method,
            "producers": producers,
            "consumers": consumers,
            "delivery": _delivery(driver, consumers),
            "pacing": "sleep, then spin" if polite else "spin",
        },
        planned=total,
        warmup_messages=warmup_n,
    )
    res.reasons += [side["error"] for side in prods + conss if "error" in side]
    res.sent = sum(p.get("sent", 0) for p in prods)
    res.received = sum(c.get("received", 0) for c in conss)
    res.seq_errors = sum(c.get("seq_errors", 0) for c in conss)
    res.dropped = sum(c.get("dropped", 0) for c in conss)
    res.lag_dropped = sum(p.get("lag_dropped", 0) for p in prods)
    res.start_ns = t0.value or None
    firsts = [p["first_actual"] for p in prods if p.get("first_actual")]
    lasts = [p["last_actual"] for p in prods if p.get("last_actual")]
    measured_sent = max(0, res.sent - warmup_n)
    if firsts and measured_sent > 1:
        res.achieved_rate = (measured_sent - 1) * 1e9 / max(1, max(lasts) - min(firsts))
    if all("latency" in c for c in conss):
        res.latency = hdr.merge(hdr.decode(c["latency"]) for c in conss)
        res.latency_intervals = _merge_intervals([c["latency_intervals"] for c in conss])
    if all("lag" in p for p in prods):
        res.lag = hdr.merge(hdr.decode(p["lag"]) for p in prods)
        res.lag_intervals = _merge_intervals([p["lag_intervals"] for p in prods])
    expected = res.sent * (consumers if fanout else 1)
    res.params["expected"] = expected
    stopped = f"a producer fell behind and stopped ({res.sent} of {total} messages sent)"
    _judge_latency(res, stopped if any(p.get("stopped_early") for p in prods) else None, expected, "expected")
    return res
