"""What a run leaves behind: its JSON run record and its .hlog files.

A run directory holds
  record.json     the run record (below), the only file the aggregation reads first
  latency.hlog    one interval histogram per second of the run, warm-up included
  send_lag.hlog   the same for send lag (actual − intended send time), latency runs only

The record is plain JSON with `schema_version`; nothing is ever parsed back out of a file
or directory name. Its `latency.histogram` is the run's result: the compressed HDR
histogram of the measured (post-warm-up) samples, in nanoseconds.

The .hlog files follow HdrHistogram's histogram log format 1.2 (what the Java
HistogramLogProcessor and the Python `hdrh.log.HistogramLogReader` read): comment lines,
`#[StartTime: …]`, `#[BaseTime: …]`, a legend, then one line per interval:
  start_s,length_s,max_ms,HISTFAAA…   (start relative to BaseTime; max in milliseconds)
The Python writer's `output_start_time()` is broken and `output_interval_histogram()`
treats a start of 0.0 as unset, so the lines are written here directly, in the Java
writer's "%.3f,%.3f,%.3f,%s" layout. One file per metric: the writer has no tags.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nanomq.bench import hdr

__all__ = [
    "FAILED",
    "OK",
    "RECORD_FILE",
    "SCHEMA_VERSION",
    "SKIPPED",
    "STATUSES",
    "HlogInterval",
    "ProcessSampler",
    "RecordError",
    "failure_reasons",
    "metric_summary",
    "read_hlog",
    "read_record",
    "validate_record",
    "write_hlog",
    "write_record",
]

SCHEMA_VERSION = 1
OK, FAILED, SKIPPED = "OK", "FAILED", "SKIPPED"
STATUSES = (OK, FAILED, SKIPPED)
RECORD_FILE = "record.json"
RATE_TOLERANCE = 0.01
"""A latency run whose achieved rate is more than 1 % below its target is FAILED."""

REQUIRED_KEYS = (
    "schema_version",
    "run_id",
    "experiment",
    "config_hash",
    "repetition",
    "parameters",
    "mode",
    "status",
    "reason",
    "target_rate",
    "achieved_rate",
    "counts",
    "latency",
    "processes",
    "environment",
)


class RecordError(ValueError):
    """A run record that this version cannot use; the message names the file and the problem."""


# ------------------------------------------------------------------- records ----


def failure_reasons(
    *,
    mode: str,
    target_rate: float | None,
    achieved_rate: float | None,
    sent: int,
    received: int,
    lost: int,
    duplicated: int,
) -> list[str]:
    """Why a finished run must be FAILED (empty when it is good), in words a report can print."""
    reasons = []
    if mode == "latency" and target_rate:
        achieved = achieved_rate or 0.0
        if achieved < target_rate * (1 - RATE_TOLERANCE):
            reasons.append(
                f"achieved {achieved:,.0f} msg/s, more than {RATE_TOLERANCE:.0%} below the "
                f"target {target_rate:,.0f} msg/s"
            )
    if lost:
        reasons.append(f"{lost} of {sent} messages lost")
    if duplicated:
        reasons.append(f"{duplicated} messages duplicated")
    if sent and received == 0:
        reasons.append("nothing received")
    return reasons


def metric_summary(h: Any, *, hlog: str | None, dropped: int = 0) -> dict[str, Any]:
    """The run-record block of one metric: percentiles (ns), the encoded histogram, its .hlog."""
    out: dict[str, Any] = {"unit": "ns", **hdr.percentiles(h)}
    out["min"] = int(h.get_min_value()) if h.get_total_count() else 0
    out["dropped"] = int(dropped)
    out["histogram"] = hdr.encode(h)
    out["hlog"] = hlog
    return out


def write_record(path: str | Path, record: dict[str, Any]) -> None:
    """Write a run record atomically (a reader never sees half a file)."""
    validate_record(record, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=False, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_record(path: str | Path) -> dict[str, Any]:
    """Load and check one run record."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON: {exc}") from None
    validate_record(record, str(path))
    return record


def validate_record(record: Any, where: str = "run record") -> None:
    if not isinstance(record, dict):
        raise RecordError(f"{where}: a run record is a JSON object, not {type(record).__name__}")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(f"{where}: schema_version {version!r}, this version reads {SCHEMA_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise RecordError(f"{where}: missing {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise RecordError(f"{where}: status {record['status']!r} is not one of {', '.join(STATUSES)}")
    if record["status"] != OK and not record["reason"]:
        raise RecordError(f"{where}: a {record['status']} run must say why (reason is empty)")
    if (
        record["status"] == OK
        and record["mode"] == "latency"
        and not (record["latency"] or {}).get("histogram")
    ):
        raise RecordError(f"{where}: an OK latency run must carry its latency histogram")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------- hlog ----


@dataclass(frozen=True, slots=True)
class HlogInterval:
    """One interval of a .hlog: seconds from the run's start, and its histogram (ns)."""

    start_s: float
    end_s: float
    histogram: Any


def write_hlog(
    path: str | Path,
    intervals: Iterable[HlogInterval],
    *,
    start_time: float,
    metric: str,
    warmup_s: float,
    comments: Sequence[str] = (),
) -> None:
    """Write interval histograms as an HdrHistogram log (format 1.2).

    `start_time` is the run's start in seconds since the epoch; interval times are
    relative to it. The first `warmup_s` seconds are warm-up: kept in the file, excluded
    from the run's result (the record says so too).
    """
    from hdrh.log import HistogramLogWriter

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    iso = datetime.fromtimestamp(start_time, UTC).isoformat(timespec="milliseconds")
    with open(tmp, "w", encoding="utf-8") as f:
        writer = HistogramLogWriter(f)
        writer.output_comment(f"[NanoMQ {metric}: values in nanoseconds; one interval per second]")
        writer.output_comment(
            f"[Warm-up: the first {warmup_s:.3f} s are warm-up: logged here, excluded from the run's result]"
        )
        for line in comments:
            writer.output_comment(line.replace("\n", " "))
        writer.output_log_format_version()
        # output_start_time() is broken in hdrhistogram 0.10.8: write the line ourselves.
        writer.output_comment(f"[StartTime: {start_time:.3f} (seconds since epoch), {iso}]")
        writer.output_comment(f"[BaseTime: {start_time:.3f} (seconds since epoch)]")
        writer.output_legend()
        for iv in intervals:
            h = iv.histogram
            max_ms = h.get_max_value() / 1e6 if h.get_total_count() else 0.0
            f.write(f"{iv.start_s:.3f},{iv.end_s - iv.start_s:.3f},{max_ms:.3f},{hdr.encode(h)}\n")
    os.replace(tmp, path)


def read_hlog(path: str | Path) -> list[HlogInterval]:
    """Read a .hlog with hdrhistogram's own HistogramLogReader (times relative to StartTime)."""
    from hdrh.log import HistogramLogReader

    reader = HistogramLogReader(str(path), hdr.new_histogram())
    out = []
    try:
        while True:
            h = reader.get_next_interval_histogram()
            if h is None:
                break
            start = h.get_start_time_stamp() / 1000.0 - reader.start_time_sec
            end = h.get_end_time_stamp() / 1000.0 - reader.start_time_sec
            out.append(HlogInterval(round(start, 3), round(end, 3), h))
    finally:
        reader.input_file.close()
    return out


# ------------------------------------------------------------ CPU and memory ----


def _hwm_bytes(pid: int) -> int | None:
    """Peak resident set (VmHWM) of a live process on Linux: exact, unlike sampling."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class ProcessSampler:
    """Samples CPU time and RSS of this process and every descendant, in a thread.

    Children are found by walking the process tree at each sample (every `interval`
    seconds), so processes a load generator starts are covered without it telling us;
    `name(pid, role)` labels one. CPU time counts from the start of sampling (or the last
    `reset()`, e.g. after a calibration probe): processes alive then are charged only what
    they use afterwards. A child's CPU time is its last sample before it exited (at most
    `interval` short); the total over reaped children from getrusage() is kept beside it as
    a check. Peak RSS is the kernel's high-water mark (VmHWM) where Linux shows it, else
    the largest RSS sampled.
    """

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        self._psutil = psutil
        self.interval = interval
        self._me = psutil.Process()
        self._seen: dict[int, dict[str, Any]] = {}
        self._roles: dict[int, str] = {os.getpid(): "runner"}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._rusage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._baseline: dict[int, tuple[float, float]] = {}

    def reset(self) -> None:
        """Forget what was sampled so far; live processes are charged from now on."""
        with self._lock:
            self._seen.clear()
            self._baseline.clear()
        self._rusage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            procs = [self._me, *self._me.children(recursive=True)]
        except self._psutil.Error:
            procs = [self._me]
        for proc in procs:
            try:
                cpu = proc.cpu_times()
            except self._psutil.Error:
                continue
            with self._lock:
                self._baseline[proc.pid] = (cpu.user, cpu.system)
        self.sample()

    def name(self, pid: int, role: str) -> None:
        with self._lock:
            self._roles[pid] = role
            if pid in self._seen:
                self._seen[pid]["role"] = role

    def sample(self) -> None:
        psutil = self._psutil
        try:
            procs = [self._me, *self._me.children(recursive=True)]
        except psutil.Error:
            procs = [self._me]
        for proc in procs:
            try:
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    rss = proc.memory_info().rss
                    name = proc.name()
            except psutil.Error:
                continue
            hwm = _hwm_bytes(proc.pid)
            with self._lock:
                entry = self._seen.get(proc.pid)
                if entry is None:
                    entry = self._seen[proc.pid] = {
                        "pid": proc.pid,
                        "role": self._roles.get(proc.pid, "child"),
                        "name": name,
                        "cpu_user_s": 0.0,
                        "cpu_system_s": 0.0,
                        "peak_rss_bytes": 0,
                        "samples": 0,
                    }
                base_user, base_system = self._baseline.get(proc.pid, (0.0, 0.0))
                entry["cpu_user_s"] = round(max(0.0, cpu.user - base_user), 4)
                entry["cpu_system_s"] = round(max(0.0, cpu.system - base_system), 4)
                entry["peak_rss_bytes"] = max(entry["peak_rss_bytes"], rss, hwm or 0)
                entry["samples"] += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> ProcessSampler:
        self.reset()
        self._thread = threading.Thread(target=self._loop, name="nanomq-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def processes(self) -> list[dict[str, Any]]:
        """One entry per process seen: pid, role, name, CPU user/system seconds, peak RSS bytes."""
        with self._lock:
            return [dict(v) for v in sorted(self._seen.values(), key=lambda e: e["pid"])]

    def children_rusage(self) -> dict[str, float]:
        """CPU seconds of the children reaped during the run, and the largest child's peak RSS."""
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        # ru_maxrss is KiB on Linux, bytes on macOS; it is a maximum, not a difference.
        scale = 1 if sys.platform == "darwin" else 1024
        return {
            "cpu_user_s": round(now.ru_utime - self._rusage0.ru_utime, 4),
            "cpu_system_s": round(now.ru_stime - self._rusage0.ru_stime, 4),
            "max_peak_rss_bytes": now.ru_maxrss * scale,
        }


def monotonic_to_epoch(t_ns: int) -> float:
    """Epoch seconds of a CLOCK_MONOTONIC timestamp in ns (to a few µs, for .hlog StartTime)."""
    return time.time() - (time.monotonic_ns() - t_ns) / 1e9
