"""Run one experiment point (one repetition of one configuration) and write what it leaves.

`run(spec, out_dir)` takes the run spec that `experiment.Run.spec()` makes (experiment,
config hash, run id, parameters), measures with the load generator (nanomq.bench.loadgen)
or the C loops (nanomq.bench.drivers.c_stream), samples CPU and RSS of every process
meanwhile, and writes into `out_dir`:

  record.json      the run record (nanomq.bench.records), written last
  latency.hlog     latency runs: interval histograms, warm-up included
  send_lag.hlog    latency runs with a Python producer: its send lag

A transport that cannot run here (a peer's package or server missing) gives a SKIPPED
record saying why; a run that misses its rate or loses, duplicates or reorders a
message gives a FAILED one. A configuration error (an option the driver refuses) is an
exception: the job fails loudly instead of recording a result.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nanomq import errors
from nanomq.bench import envinfo
from nanomq.bench.records import (
    FAILED,
    OK,
    RECORD_FILE,
    SCHEMA_VERSION,
    SKIPPED,
    HlogInterval,
    ProcessSampler,
    failure_reasons,
    metric_summary,
    monotonic_to_epoch,
    utc_now,
    write_hlog,
    write_record,
)

__all__ = ["RUNNER_OPTIONS", "TransportUnavailable", "make_driver", "run"]

log = logging.getLogger(__name__)

RUNNER_OPTIONS = ("count", "api")
"""Keys of `options` the runner itself reads; the rest go to the driver's constructor.
count: messages of a throughput run (default: calibrated to duration_s); api: "batch"
(a list per call) or "buffer" (one buffer per call) for batch_size 256."""

PROBE_MIN_S = 0.2
"""A throughput calibration probe is repeated, ten times larger, until it lasts this long."""


class TransportUnavailable(RuntimeError):
    """The transport cannot run on this machine; the message says what is missing."""


# ------------------------------------------------------------------ drivers ----


def make_driver(params: dict[str, Any]) -> Any:
    """The loadgen driver for a point's transport (ring_c has none: it runs the C loops)."""
    from nanomq.bench import drivers

    transport = params["transport"]
    opts = {k: v for k, v in (params.get("options") or {}).items() if k not in RUNNER_OPTIONS}
    try:
        if transport == "ring":
            driver = drivers.RingDriver(wait=params["wait"], **opts)
        elif transport in ("log", "broker"):
            from nanomq.bench import nanomq_drivers

            if transport == "log":
                missing = nanomq_drivers.log_unavailable()
                make: Any = nanomq_drivers.LogDriver
            else:
                missing = nanomq_drivers.broker_unavailable()
                make = nanomq_drivers.BrokerDriver
            if missing:
                raise TransportUnavailable(missing)
            driver = make(fsync=params.get("fsync", "never"), **opts)
        elif transport == "stall":
            driver = drivers.StallDriver(**opts)
        elif transport == "mp_queue":
            driver = drivers.MpQueueDriver(**opts)
        elif transport == "faster_fifo":
            if not drivers.faster_fifo_available():
                raise TransportUnavailable("faster_fifo is not installed (pip install 'nanomq[peers]')")
            driver = drivers.FasterFifoDriver(**opts)
        elif transport == "zmq":
            if not drivers.zmq_available():
                raise TransportUnavailable("pyzmq is not installed (pip install 'nanomq[peers]')")
            driver = drivers.ZmqDriver(**opts)
        elif transport in ("nats", "redis"):
            from nanomq.bench import peers_server

            missing = peers_server.unavailable(transport)
            if missing:
                raise TransportUnavailable(missing)
            driver = peers_server.make_driver(transport, **opts)
        else:
            raise ValueError(f"transport {transport!r} has no driver")
    except TypeError as exc:
        raise ValueError(f"options {opts} not accepted by the {transport} driver: {exc}") from None
    if not params.get("pin", True):
        driver.pin = False  # instance attribute: loadgen then leaves both processes unpinned
    return driver


# ------------------------------------------------------------ measurements ----


def _calibrated_count(probe: Any, duration_s: float, first: int) -> tuple[int, list[dict[str, Any]]]:
    """Messages that take about `duration_s` at the rate a growing probe measures."""
    n = first
    probes = []
    while True:
        rate, elapsed = probe(n)
        probes.append({"count": n, "rate": rate, "elapsed_s": elapsed})
        if elapsed >= PROBE_MIN_S or n >= 100_000_000:
            break
        n *= 10
    return max(1000, int(rate * duration_s)), probes


def _throughput(params: dict[str, Any], driver: Any, sampler: ProcessSampler) -> dict[str, Any]:
    from nanomq.bench import loadgen

    size, batch = params["message_size"], params["batch_size"]
    options = params.get("options") or {}
    mode = "single" if batch == 1 else options.get("api", "batch")
    # a closed-loop run lasts about duration_s; one that hangs (a lost end marker) must not
    # hold the whole sweep for loadgen's default five minutes
    kw = {"size": size, "mode": mode, "timeout": 30 + 10 * (params["duration_s"] + params["warmup_s"])}

    from nanomq.bench import group

    several = _group(params)
    run_throughput = (
        functools.partial(group.run_throughput_group, **several) if several else loadgen.run_throughput
    )

    def probe(n: int) -> tuple[float, float]:
        r = run_throughput(driver, count=n, warmup=n // 10, **kw)
        if r.status != OK:
            raise _ProbeFailed("; ".join(r.reasons))
        return r.rate, r.elapsed_ns / 1e9

    probes: list[dict[str, Any]] = []
    if "count" in options:
        count = int(options["count"])
    else:
        count, probes = _calibrated_count(probe, params["duration_s"], 10_000)
    rate_guess = count / params["duration_s"]
    warmup = max(1000, int(rate_guess * params["warmup_s"]))
    sampler.reset()  # CPU and memory of the measurement, not of the calibration probes
    res = run_throughput(driver, count=count, warmup=warmup, **kw)
    expected = res.params.get("expected", res.sent)
    return {
        "status": res.status,
        "reasons": list(res.reasons),
        "achieved_rate": res.rate,
        "counts": {
            "sent": res.sent,
            "received": res.received,
            "measured": res.measured,
            "warmup": warmup,
            "seq_errors": res.seq_errors,
            "expected": expected,
            "lost": max(0, expected - res.received),
            "duplicated": max(0, res.received - expected),
        },
        "measured_s": res.elapsed_ns / 1e9,
        "latency": None,
        "latency_intervals": None,
        "send_lag": None,
        "pinned": res.pinned,
        "loadgen": {
            "kind": "throughput",
            "mode": mode,
            "count": res.count,
            "warmup": res.warmup,
            "probes": probes,
            **res.params,
        },
    }


def _latency(params: dict[str, Any], driver: Any) -> dict[str, Any]:
    from nanomq.bench import group, loadgen

    several = _group(params)
    run_latency = functools.partial(group.run_latency_group, **several) if several else loadgen.run_latency
    res = run_latency(
        driver,
        rate=float(params["rate"]),
        duration=float(params["duration_s"]),
        warmup=float(params["warmup_s"]),
        size=params["message_size"],
    )
    expected = res.params.get("expected", res.sent)
    return {
        "status": res.status,
        "reasons": list(res.reasons),
        "achieved_rate": res.achieved_rate,
        "counts": {
            "planned": res.planned,
            "sent": res.sent,
            "received": res.received,
            "measured": res.measured,
            "warmup": res.warmup_messages,
            "seq_errors": res.seq_errors,
            "expected": expected,
            "lost": max(0, expected - res.received),
            "duplicated": max(0, res.received - expected),
        },
        "measured_s": float(params["duration_s"]),
        "latency": res.latency,
        "latency_dropped": res.dropped,
        # Per-second histograms when the load generator provides them (see _intervals).
        "latency_intervals": getattr(res, "latency_intervals", None),
        "send_lag": res.lag,
        "send_lag_dropped": res.lag_dropped,
        "send_lag_intervals": getattr(res, "lag_intervals", None),
        "schedule_start_ns": getattr(res, "start_ns", None),
        "pinned": res.pinned,
        # not res.to_dict(): it computes percentiles again, at ~0.4 s per histogram
        "loadgen": {
            "kind": "latency",
            "planned": res.planned,
            "warmup_messages": res.warmup_messages,
            **res.params,
        },
    }


def _c_loops(params: dict[str, Any], sampler: ProcessSampler) -> dict[str, Any]:
    """ring_c: the ring driven by csrc/bench.c in two forked processes, no Python per message."""
    from nanomq.bench import drivers, loadgen

    size, batch = params["message_size"], params["batch_size"]
    cpus = (0, 1) if params.get("pin", True) else None
    if cpus is not None:
        pair = loadgen.pair_cpus(True)
        cpus = pair if None not in pair else None
    options = params.get("options") or {}
    extra = {k: v for k, v in options.items() if k not in RUNNER_OPTIONS}
    base = {"mode": "processes", "size": size, "cpus": cpus, **extra}
    if params["rate"] == "max":

        def probe(n: int) -> tuple[float, float]:
            r = drivers.c_stream(count=n, warmup=n // 10, batch=batch, **base)
            return r.rate, r.elapsed_ns / 1e9

        probes: list[dict[str, Any]] = []
        if "count" in options:
            count = int(options["count"])
        else:
            count, probes = _calibrated_count(probe, params["duration_s"], 100_000)
        warmup = max(1000, int(count / params["duration_s"] * params["warmup_s"]))
        sampler.reset()  # CPU and memory of the measurement, not of the calibration probes
        r = drivers.c_stream(count=count, warmup=warmup, batch=batch, record_latency=size >= 16, **base)
        kind = {"kind": "c_stream", "rate": 0, "probes": probes}
    else:
        rate = float(params["rate"])
        count = max(2, int(rate * params["duration_s"]))
        warmup = int(rate * params["warmup_s"])
        timeout = params["duration_s"] + params["warmup_s"] + 60
        r = drivers.c_stream(
            count=count,
            warmup=warmup,
            batch=1,
            record_latency=True,
            rate=rate,
            timeout=timeout,
            series=True,
            **base,
        )
        kind = {"kind": "c_stream", "rate": rate, "series": True}
    sent = count + warmup
    reasons = []
    if r.seq_errors:
        reasons.append(f"{r.seq_errors} records with a wrong sequence number or length")
    return {
        "status": FAILED if reasons else OK,
        "reasons": reasons,
        "achieved_rate": r.rate,
        "counts": {
            "sent": sent,
            "received": r.received,
            "measured": r.messages,
            "warmup": warmup,
            "seq_errors": r.seq_errors,
            "lost": max(0, sent - r.received),
            "duplicated": max(0, r.received - sent),
        },
        "measured_s": r.elapsed_ns / 1e9,
        "latency": r.histogram,
        "latency_dropped": r.dropped,
        "latency_intervals": r.latency_intervals,
        "send_lag": r.lag,
        "send_lag_intervals": r.lag_intervals,
        "schedule_start_ns": r.start_ns,
        "pinned": r.pinned,
        "loadgen": {**kind, "count": count, "warmup": warmup, "batch": batch, "mode": "processes"},
    }


class _ProbeFailed(RuntimeError):
    pass


def _group(params: dict[str, Any]) -> dict[str, int] | None:
    """Producer and consumer counts of a point with more than one of either (run by nanomq.bench.group)."""
    p, c = int(params.get("producers", 1)), int(params.get("consumers", 1))
    return {"producers": p, "consumers": c} if (p, c) != (1, 1) else None


# --------------------------------------------------------------------- hlog ----


def _intervals(m: dict[str, Any], metric: str, warmup_s: float, measured_s: float) -> tuple[list, str]:
    """Interval histograms for the .hlog, and how they were obtained.

    With per-second histograms from the load generator (`latency_intervals`: a list of
    histograms, interval k holding the messages due in second k of the schedule, warm-up
    included), each is one interval. Without them the .hlog holds one interval: the
    measured window, after the warm-up.
    """
    per_second = m.get(f"{metric}_intervals")
    if per_second:
        end = warmup_s + measured_s  # the last second of the schedule may be a partial one
        return [
            HlogInterval(float(k), min(float(k + 1), max(end, float(k))), h) for k, h in enumerate(per_second)
        ], "per-second"
    h = m.get(metric)
    if h is None:
        return [], "none"
    return [HlogInterval(warmup_s, warmup_s + measured_s, h)], "measured window (no per-second data)"


# ---------------------------------------------------------------------- run ----


class _Ticker:
    """Progress on stderr for runs longer than 10 s (the measurement itself is one blocking call)."""

    def __init__(self, run_id: str, total_s: float) -> None:
        self.run_id, self.total_s = run_id, total_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="nanomq-progress")

    def _loop(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(10.0):
            print(
                f"[{self.run_id}] {time.monotonic() - t0:.0f} s of about {self.total_s:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> _Ticker:
        if self.total_s > 10:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def run(spec: dict[str, Any], out_dir: str | Path, *, quiet: bool = False) -> dict[str, Any]:
    """Measure one run and write its files into `out_dir`; returns the record."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (RECORD_FILE, "latency.hlog", "send_lag.hlog"):
        (out / stale).unlink(missing_ok=True)
    params = spec["parameters"]
    mode = "throughput" if params["rate"] == "max" else "latency"
    env = envinfo.capture()
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": spec["run_id"],
        "experiment": spec["experiment"],
        "experiment_file": spec.get("experiment_file"),
        "config_hash": spec["config_hash"],
        "repetition": spec["repetition"],
        "parameters": params,
        "mode": mode,
        "status": None,
        "reason": "",
        "target_rate": None if mode == "throughput" else float(params["rate"]),
        "achieved_rate": None,
        "counts": {},
        "measured_s": None,
        "latency": None,
        "send_lag": None,
        "throughput": None,
        "processes": [],
        "children_rusage": None,
        "pinned": None,
        "loadgen": None,
        "notes": [],
        "environment": env,
        "started_at": utc_now(),
        "finished_at": None,
        "wall_s": None,
    }
    if not quiet:
        print(f"[{spec['run_id']}] {mode} run of {spec['experiment']}: {params}", file=sys.stderr, flush=True)
    t_start_epoch = time.time()
    t0 = time.monotonic()
    try:
        driver = None if params["transport"] == "ring_c" else make_driver(params)
    except TransportUnavailable as exc:
        record["status"], record["reason"] = SKIPPED, str(exc)
        return _finish(record, out, t0, quiet)
    if driver is None and params["rate"] == "max":
        record["notes"].append(
            "ring_c closed loop: one histogram for the measured window (one .hlog interval)"
        )
    ignored = _ignored_parameters(params)
    if ignored:
        record["notes"].append(f"{params['transport']} does not use: {', '.join(ignored)}")
    if _group(params) and params.get("pin", True):
        record["notes"].append(
            "several producers or consumers run unpinned (more processes than CPUs to pin)"
        )
    elif driver is not None and params.get("pin", True) and not driver.pin:
        record["notes"].append(f"{params['transport']} runs unpinned: its driver must not be pinned")
    with ProcessSampler() as sampler, _Ticker(spec["run_id"], params["duration_s"] + params["warmup_s"]):
        try:
            if driver is None:
                m = _c_loops(params, sampler)
            elif mode == "throughput":
                m = _throughput(params, driver, sampler)
            else:
                m = _latency(params, driver)
        except _ProbeFailed as exc:
            m = {"status": FAILED, "reasons": [f"calibration probe failed: {exc}"], "counts": {}}
        except (OSError, RuntimeError, errors.NanoMQError) as exc:
            # a server that would not start, a C loop that timed out: a result of this run,
            # recorded as FAILED so a long sweep goes on (a configuration error still raises)
            log.warning("run %s failed: %r", spec["run_id"], exc)
            m = {"status": FAILED, "reasons": [f"the measurement raised {exc!r}"], "counts": {}}
    record["processes"] = sampler.processes()
    record["children_rusage"] = sampler.children_rusage()
    counts = m.get("counts", {})
    record["counts"] = counts
    record["achieved_rate"] = m.get("achieved_rate")
    record["measured_s"] = m.get("measured_s")
    record["pinned"] = m.get("pinned")
    record["loadgen"] = m.get("loadgen")
    reasons = list(m.get("reasons", []))
    if counts and not reasons:  # a second opinion on what the load generator judged OK
        reasons = failure_reasons(
            mode=mode,
            target_rate=record["target_rate"],
            achieved_rate=record["achieved_rate"],
            sent=counts.get("sent", 0),
            received=counts.get("received", 0),
            lost=counts.get("lost", 0),
            duplicated=counts.get("duplicated", 0),
        )
    if mode == "latency" and m.get("latency") is None and not reasons:
        reasons.append("no latency histogram came back")
    record["status"] = FAILED if (reasons or m.get("status") == FAILED) else OK
    record["reason"] = "; ".join(reasons) if record["status"] == FAILED else ""
    if record["status"] == FAILED and not record["reason"]:
        record["reason"] = "the load generator marked the run FAILED"
    if record["achieved_rate"] is not None:
        size = params["message_size"]
        record["throughput"] = {
            "messages_per_s": record["achieved_rate"],
            "bytes_per_s": record["achieved_rate"] * size,
        }
    warmup_s, measured_s = float(params["warmup_s"]), float(record["measured_s"] or params["duration_s"])
    if m.get("schedule_start_ns"):  # interval times count from the first intended send time
        t_start_epoch = monotonic_to_epoch(m["schedule_start_ns"])
    for metric, fname in (("latency", "latency.hlog"), ("send_lag", "send_lag.hlog")):
        h = m.get(metric)
        if h is None:
            continue
        intervals, how = _intervals(m, metric, warmup_s, measured_s)
        write_hlog(
            out / fname,
            intervals,
            start_time=t_start_epoch,
            metric=f"{metric} of run {spec['run_id']} ({params['transport']}, config {spec['config_hash']})",
            warmup_s=warmup_s,
            comments=[f"[Intervals: {how}]"],
        )
        record[metric] = metric_summary(h, hlog=fname, dropped=m.get(f"{metric}_dropped", 0))
        record[metric]["intervals"] = how
    return _finish(record, out, t0, quiet)


def _ignored_parameters(params: dict[str, Any]) -> list[str]:
    t = params["transport"]
    ignored = []
    if params.get("fsync", "never") != "never" and t not in ("log", "broker"):
        ignored.append(f"fsync={params['fsync']}")
    if t != "ring" and params.get("wait", "spin") != "spin":
        ignored.append(f"wait={params['wait']}")
    return ignored


def _finish(record: dict[str, Any], out: Path, t0: float, quiet: bool) -> dict[str, Any]:
    record["finished_at"] = utc_now()
    record["wall_s"] = round(time.monotonic() - t0, 3)
    write_record(out / RECORD_FILE, record)
    if not quiet:
        lat = record.get("latency") or {}
        detail = (
            record["reason"]
            or (
                f"P50 {lat.get('p50', 0) / 1000:.1f} µs, P99 {lat.get('p99', 0) / 1000:.1f} µs, "
                if lat
                else ""
            )
            + f"{(record['achieved_rate'] or 0):,.0f} msg/s"
        )
        print(f"[{record['run_id']}] {record['status']}: {detail}", file=sys.stderr, flush=True)
    return record
