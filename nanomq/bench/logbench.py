"""`nanomq bench log`: the write-ahead log against the physical limit and SQLite, in one run.

Every figure is measured beside its comparison, on the same file system (`--dir`,
default a temporary directory under /tmp; the output names the file system type, since
tmpfs makes an fdatasync free):

  physical limit   plain sequential write() of the same bytes the log writes (each record
                   framed as the log frames it: a 64-byte header, padded to 8 bytes), and
                   write() + fdatasync per append / per batch
  SQLite           stdlib sqlite3 in WAL mode inserting the same records, one transaction
                   per batch: synchronous=FULL is the durable comparison, NORMAL (in WAL
                   mode: synced only at checkpoints) the non-durable one (OFF shown too)
  NanoMQ           nanomq.log.Log with fsync "never" and "always": 64 KiB records, 100 B
                   records in batches of 256 and one per call, single-append latency, group
                   commit (batches; threads appending concurrently), reopening a large log
                   (recovery scan) and reading it back

The issue's targets stand beside each NanoMQ figure with PASS or MISS. Without
nanomq.log (not built yet) the baselines still run and the log's rows say so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nanomq.bench import envinfo, hdr, tables

__all__ = ["TARGETS", "Sizes", "add_arguments", "filesystem", "framed_size", "measure", "run"]

HEADER = 64
"""Bytes of a record's header in the log (docs/FORMAT.md)."""
BATCH = 256
SMALL = 100
BIG = 64 * 1024

TARGETS: dict[str, tuple[float, bool, str]] = {
    # key: (target, at_least, what)
    "never_64k_gb_s": (2.0, True, "fsync=never, 64 KiB records (GB/s)"),
    "never_batch_rec_s": (3e6, True, "fsync=never, 100 B in batches of 256 (records/s)"),
    "never_single_rec_s": (1e6, True, "fsync=never, 100 B one append per call (records/s)"),
    "always_p50_ratio": (1.3, False, "fsync=always single append P50 / bare write+fdatasync P50"),
    "always_group_rec_s": (
        5e5,
        True,
        "fsync=always, group commit: batches and/or threads, the best (records/s)",
    ),
    "recovery_gb_s": (1.0, True, "recovery scan on reopen (GB/s)"),
    "read_gb_s": (2.0, True, "reading back (GB/s)"),
    "vs_sqlite_durable": (10.0, True, "NanoMQ / SQLite records/s, durable (fsync=always vs FULL)"),
    "vs_sqlite_nondurable": (10.0, True, "NanoMQ / SQLite records/s, non-durable (never vs NORMAL)"),
}


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each case writes."""

    big_bytes: int = 512 << 20
    """Bytes of 64 KiB records (the GB/s cases; also the log reopened and read back)."""
    batch_records: int = 2_000_000
    """100 B records appended in batches of 256 (fsync never)."""
    single_records: int = 500_000
    """100 B records appended one per call (fsync never)."""
    sync_appends: int = 1000
    """Single appends with fsync=always (latency samples)."""
    sync_batches: int = 200
    """Batches of 256 with fsync=always."""
    threads: int = 4
    """Concurrent appenders (2..4) in the group-commit case."""
    thread_appends: int = 1000
    """Single appends per thread with fsync=always."""
    sqlite_records: int = 500_000
    """Records SQLite inserts without syncing (its durable case uses sync_batches)."""

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            big_bytes=32 << 20,
            batch_records=100_000,
            single_records=50_000,
            sync_appends=100,
            sync_batches=20,
            threads=2,
            thread_appends=100,
            sqlite_records=50_000,
        )


def framed_size(value_len: int, key_len: int = 0) -> int:
    """Bytes one record occupies in a segment: header, key and value, padded to 8."""
    n = HEADER + key_len + value_len
    return (n + 7) & ~7


# ----------------------------------------------------------------- filesystem ----


def filesystem(path: str | Path) -> dict[str, Any]:
    """The mount holding `path`: mount point, device, type, free bytes (from /proc/mounts)."""
    real = os.path.realpath(path)
    best: tuple[str, str, str] = ("/", "?", "?")
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                device, mount, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[0]):
                    best = (mount, device, fstype)
    except OSError:
        pass
    usage = shutil.disk_usage(real)
    return {
        "path": real,
        "mount": best[0],
        "device": best[1],
        "type": best[2],
        "free_bytes": usage.free,
        "volatile": best[2] in ("tmpfs", "ramfs"),
    }


# ------------------------------------------------------------------- helpers ----


def _clock() -> int:
    return time.perf_counter_ns()


def _rate(n: float, ns: int) -> float:
    return n * 1e9 / ns if ns > 0 else 0.0


def _repeat(call: Callable[[Any], object], arg: Any, n: int) -> int:
    """Elapsed ns of `n` calls of call(arg)."""
    t0 = _clock()
    for _ in range(n):
        call(arg)
    return _clock() - t0


def _bytes_rate(nbytes: int, ns: int) -> dict[str, Any]:
    return {"bytes": nbytes, "ns": ns, "gb_s": _rate(nbytes, ns) / 1e9}


def _records_rate(records: int, ns: int) -> dict[str, Any]:
    return {"records": records, "ns": ns, "rec_s": _rate(records, ns)}


def _latency(samples: array) -> dict[str, Any]:
    h, dropped = hdr.histogram_from_values(memoryview(samples))
    out = {k: v for k, v in hdr.percentiles(h).items()}
    out["dropped"] = dropped
    return out


def _payload(n: int) -> bytes:
    return bytes((i * 131 + 7) & 0xFF for i in range(n))


class _Dir:
    """A fresh subdirectory per case, removed afterwards (a case never reads another's page cache)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0

    @contextlib.contextmanager
    def case(self, name: str) -> Iterator[Path]:
        """A new numbered subdirectory, removed when the block ends."""
        self.n += 1
        path = self.root / f"{self.n:02d}-{name}"
        path.mkdir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------- physical limit ----


def _write_seq(
    path: Path, chunk: bytes, calls: int, *, sync_each: bool = False, preallocate: bool = False
) -> int:
    """Elapsed ns of `calls` write()s of `chunk` (each followed by fdatasync when sync_each)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if preallocate:
            os.posix_fallocate(fd, 0, len(chunk) * calls)
        write, sync = os.write, os.fdatasync
        t0 = _clock()
        if sync_each:
            for _ in range(calls):
                write(fd, chunk)
                sync(fd)
        else:
            for _ in range(calls):
                write(fd, chunk)
        return _clock() - t0
    finally:
        os.close(fd)


def _write_sync_latency(path: Path, record: bytes, n: int, *, preallocate: bool) -> array:
    """Latency (ns) of each write() + fdatasync of one record, appending to a file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if preallocate:
            os.posix_fallocate(fd, 0, max(1, len(record) * n))
        out = array("q", bytes(8 * n))
        write, sync = os.write, os.fdatasync
        for i in range(n):
            t0 = _clock()
            write(fd, record)
            sync(fd)
            out[i] = _clock() - t0
        return out
    finally:
        os.close(fd)


def _read_seq(path: Path, chunk: int = 1 << 20) -> tuple[int, int]:
    """(bytes, ns) reading the file sequentially in `chunk`-byte readinto calls."""
    buf = bytearray(chunk)
    total = 0
    with open(path, "rb", buffering=0) as f:
        t0 = _clock()
        while True:
            n = f.readinto(buf)
            if not n:
                break
            total += n
        return total, _clock() - t0


def baselines(d: _Dir, sizes: Sizes) -> dict[str, Any]:
    """The physical limit: write(), write()+fdatasync and read() of the bytes the log writes."""
    out: dict[str, Any] = {}
    big = bytes(framed_size(BIG))
    calls = max(1, sizes.big_bytes // len(big))
    # Warm-up, not measured: the first run to fill this much page cache paid for the guest's
    # first touch of fresh memory (512 MiB of write() ran at 0.34 GB/s, the same again
    # after it at ~2 GB/s on this VM), which would flatter whichever case came second.
    with d.case("warm-up") as p:
        _write_seq(p / "f", big, calls)
    with d.case("write-64k") as p:
        ns = _write_seq(p / "f", big, calls)
        out["write_64k"] = _bytes_rate(calls * len(big), ns)
        got, rns = _read_seq(p / "f")
        out["read_64k"] = _bytes_rate(got, rns)
    with d.case("write-64k-prealloc") as p:
        ns = _write_seq(p / "f", big, calls, preallocate=True)
        out["write_64k_prealloc"] = _bytes_rate(calls * len(big), ns)

    small = framed_size(SMALL)
    batch = bytes(small * BATCH)
    nb = max(1, sizes.batch_records // BATCH)
    with d.case("write-batch") as p:
        ns = _write_seq(p / "f", batch, nb)
        out["write_batch"] = _records_rate(nb * BATCH, ns)

    with d.case("write-single") as p:
        ns = _write_seq(p / "f", bytes(small), sizes.single_records)
        out["write_single"] = _records_rate(sizes.single_records, ns)

    with d.case("fdatasync-single") as p:
        lat = _write_sync_latency(p / "append", bytes(small), sizes.sync_appends, preallocate=False)
        out["fdatasync_single_append"] = _latency(lat)
        lat = _write_sync_latency(p / "prealloc", bytes(small), sizes.sync_appends, preallocate=True)
        out["fdatasync_single_prealloc"] = _latency(lat)

    with d.case("fdatasync-batch") as p:
        ns = _write_sync_latency(p / "f", batch, sizes.sync_batches, preallocate=False)
        total = sum(ns)
        out["fdatasync_batch"] = {
            **_records_rate(sizes.sync_batches * BATCH, total),
            "latency_ns": _latency(ns),
        }
    return out


# ------------------------------------------------------------------- SQLite ----


def _sqlite_insert(path: Path, synchronous: str, batches: int, value: bytes) -> dict[str, Any]:
    """Records/s inserting `batches` transactions of 256 (key NULL, value) rows in WAL mode."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={synchronous}")
        con.execute("CREATE TABLE log (offset INTEGER PRIMARY KEY, ts INTEGER, key BLOB, value BLOB)")
        rows = [(0, None, value)] * BATCH
        sql = "INSERT INTO log (ts, key, value) VALUES (?, ?, ?)"
        t0 = _clock()
        for _ in range(batches):
            con.execute("BEGIN")
            con.executemany(sql, rows)
            con.execute("COMMIT")
        ns = _clock() - t0
    finally:
        con.close()
    return {"synchronous": synchronous, **_records_rate(batches * BATCH, ns)}


def sqlite_cases(d: _Dir, sizes: Sizes) -> dict[str, Any]:
    value = _payload(SMALL)
    out: dict[str, Any] = {"version": sqlite3.sqlite_version}
    with d.case("sqlite-full") as p:
        out["durable"] = _sqlite_insert(p / "db", "FULL", sizes.sync_batches, value)
    with d.case("sqlite-normal") as p:
        out["nondurable"] = _sqlite_insert(p / "db", "NORMAL", max(1, sizes.sqlite_records // BATCH), value)
    with d.case("sqlite-off") as p:
        out["nondurable_off"] = _sqlite_insert(p / "db", "OFF", max(1, sizes.sqlite_records // BATCH), value)
    return out


# ------------------------------------------------------------------- NanoMQ ----


def log_unavailable() -> str | None:
    """Why nanomq.log cannot be measured here (None when it can)."""
    try:
        from nanomq.log import Log  # noqa: F401
    except ImportError as exc:
        return f"nanomq.log is not available yet ({exc})"
    return None


def _open(path: Path, fsync: str, **kw: Any) -> Any:
    from nanomq.log import Log

    return Log.open(path, fsync=fsync, **kw)


def log_cases(d: _Dir, sizes: Sizes) -> dict[str, Any]:
    """Every NanoMQ case; each in a fresh log directory."""
    out: dict[str, Any] = {}
    small = _payload(SMALL)
    batch = [small] * BATCH

    # 64 KiB records, fsync never; the log stays for the reopen and read-back cases
    with d.case("log-64k") as big_dir:
        big = _payload(BIG)
        n = max(1, sizes.big_bytes // framed_size(BIG))
        # one segment holds it all, so reopening scans every byte (sealed segments below the
        # checkpoint are trusted through their index and not scanned)
        one_segment = {"segment_bytes": max(100 << 20, n * framed_size(BIG) + (1 << 20))}
        log = _open(big_dir / "log", "never", **one_segment)
        try:
            ns = _repeat(log.append, big, n)
            size = log.size_bytes
        finally:
            log.close()
        out["never_64k"] = {"records": n, **_bytes_rate(n * framed_size(BIG), ns)}

        t0 = _clock()
        log = _open(big_dir / "log", "never", **one_segment)
        ns = _clock() - t0
        try:
            report = getattr(log, "recovery", None)
            scanned = getattr(report, "scanned_bytes", None)
            out["reopen"] = {
                "bytes": size,
                "scanned_bytes": scanned,
                "ns": ns,
                "gb_s": _rate(size, ns) / 1e9,
                "records": log.next_offset,
            }
            count = nbytes = 0
            t0 = _clock()
            for rec in log.read(0):
                nbytes += len(rec.value)
                count += 1
            ns = _clock() - t0
            out["read_records"] = {"records": count, **_bytes_rate(nbytes, ns)}
            offset, nbytes = log.first_offset, 0
            read_encoded = log.read_encoded
            t0 = _clock()
            while True:
                chunk = read_encoded(offset, 1 << 20)
                if not chunk:
                    break
                nbytes += len(chunk)
                offset += max(1, len(chunk) // framed_size(BIG))
            ns = _clock() - t0
            out["read_encoded"] = _bytes_rate(nbytes, ns)
        finally:
            log.close()

    nb = max(1, sizes.batch_records // BATCH)
    with d.case("log-batch") as p, _open(p / "log", "never") as log:
        ns = _repeat(log.append_batch, batch, nb)
    out["never_batch"] = _records_rate(nb * BATCH, ns)

    with d.case("log-single") as p, _open(p / "log", "never") as log:
        ns = _repeat(log.append, small, sizes.single_records)
    out["never_single"] = _records_rate(sizes.single_records, ns)

    with d.case("log-always-single") as p:
        # Each append alternates with a bare write()+fdatasync of the same bytes into a fallocated
        # file, so the ratio compares flushes taken in the same seconds: the device's own flush
        # time drifts by 40 % from one minute to the next here (173-247 µs P50 in three runs).
        n = sizes.sync_appends
        frame = bytes(framed_size(SMALL))
        fd = os.open(p / "bare", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, len(frame) * n)
            write, sync = os.write, os.fdatasync
            with _open(p / "log", "always") as log:
                append = log.append
                lat = array("q", bytes(8 * n))
                bare = array("q", bytes(8 * n))
                for i in range(n):
                    t0 = _clock()
                    append(small)
                    t1 = _clock()
                    write(fd, frame)
                    sync(fd)
                    bare[i] = _clock() - t1
                    lat[i] = t1 - t0
        finally:
            os.close(fd)
        out["always_single"] = _latency(lat)
        out["always_single_bare"] = _latency(bare)

    with d.case("log-always-batch") as p, _open(p / "log", "always") as log:
        ns = _repeat(log.append_batch, batch, sizes.sync_batches)
    out["always_batch"] = _records_rate(sizes.sync_batches * BATCH, ns)

    with d.case("log-always-threads") as p:
        threads = max(2, min(4, sizes.threads))
        with _open(p / "log", "always") as log:
            out["always_threads"] = _threads(log.append, small, 1, threads, sizes.thread_appends)
            out["always_threads"]["durable_offset"] = log.durable_offset

    with d.case("log-always-threads-batch") as p:
        threads = max(2, min(4, sizes.threads))
        per_thread = max(1, sizes.sync_batches // threads)
        with _open(p / "log", "always") as log:
            out["always_threads_batch"] = _threads(log.append_batch, batch, BATCH, threads, per_thread)
            out["always_threads_batch"]["fdatasyncs"] = log.stats().syncs
    return out


def _threads(append: Any, arg: Any, per_call: int, threads: int, per_thread: int) -> dict[str, Any]:
    """`threads` threads each calling `append(arg)` (`per_call` records) `per_thread` times on
    one fsync=always log: what group commit shares between concurrent appenders."""
    start = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work() -> None:
        start.wait()
        try:
            for _ in range(per_thread):
                append(arg)
        except BaseException as exc:  # reported in the result, not lost in a thread
            errors.append(exc)

    pool = [threading.Thread(target=work, name=f"bench-appender-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = _clock()
    for t in pool:
        t.join()
    ns = _clock() - t0
    total = threads * per_thread * per_call
    return {
        "threads": threads,
        **_records_rate(total, ns),
        "errors": [repr(e) for e in errors],
    }


# ------------------------------------------------------------------ verdicts ----


def _verdicts(
    base: dict[str, Any], lite: dict[str, Any], nano: dict[str, Any] | None
) -> list[dict[str, Any]]:
    measured: dict[str, float | None] = dict.fromkeys(TARGETS)
    if nano:
        measured["never_64k_gb_s"] = nano["never_64k"]["gb_s"]
        measured["never_batch_rec_s"] = nano["never_batch"]["rec_s"]
        measured["never_single_rec_s"] = nano["never_single"]["rec_s"]
        bare = nano["always_single_bare"]["p50"]  # measured interleaved with the appends
        measured["always_p50_ratio"] = nano["always_single"]["p50"] / bare if bare else None
        measured["always_group_rec_s"] = max(
            nano[k]["rec_s"] for k in ("always_batch", "always_threads", "always_threads_batch")
        )
        measured["recovery_gb_s"] = nano["reopen"]["gb_s"]
        measured["read_gb_s"] = max(nano["read_records"]["gb_s"], nano["read_encoded"]["gb_s"])
        measured["vs_sqlite_durable"] = nano["always_batch"]["rec_s"] / lite["durable"]["rec_s"]
        measured["vs_sqlite_nondurable"] = nano["never_batch"]["rec_s"] / lite["nondurable"]["rec_s"]
    return tables.judge(TARGETS, measured)


# --------------------------------------------------------------------- run ----


def measure(
    directory: str | Path | None = None,
    sizes: Sizes | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every case in a fresh directory under `directory` (default: the temp dir); the results."""
    sizes = sizes or Sizes()
    say = progress or (lambda _text: None)
    parent = Path(directory) if directory is not None else Path(tempfile.gettempdir())
    if not parent.is_dir():
        raise FileNotFoundError(f"--dir {parent} is not a directory")
    root = Path(tempfile.mkdtemp(prefix="nanomq-bench-log-", dir=parent))
    t_start = time.monotonic()
    try:
        fs = filesystem(root)
        need = sizes.big_bytes * 2 + (64 << 20)
        if fs["free_bytes"] < need:
            raise OSError(f"{fs['mount']} has {fs['free_bytes']:,} bytes free; this run needs about {need:,}")
        d = _Dir(root)
        say("physical limit: write(), write()+fdatasync, read()")
        base = baselines(d, sizes)
        say(f"SQLite {sqlite3.sqlite_version} in WAL mode")
        lite = sqlite_cases(d, sizes)
        missing = log_unavailable()
        nano = None
        if missing is None:
            say("NanoMQ log")
            nano = log_cases(d, sizes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "benchmark": "log",
        "parameters": {**asdict(sizes), "record_bytes": SMALL, "big_record_bytes": BIG, "batch": BATCH},
        "filesystem": fs,
        "environment": envinfo.capture(),
        "baseline": base,
        "sqlite": lite,
        "nanomq": nano,
        "nanomq_missing": missing,
        "targets": _verdicts(base, lite, nano),
        "elapsed_s": round(time.monotonic() - t_start, 3),
    }


# -------------------------------------------------------------------- printing ----


Fmt = Callable[[float | None], str]


def _fmt_gb(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} GB/s"


def format_report(res: dict[str, Any]) -> str:
    """The human-readable tables of a measure() result."""
    fs, base, lite, nano = res["filesystem"], res["baseline"], res["sqlite"], res["nanomq"] or {}
    lines = [
        f"nanomq bench log — {fs['path']} on {fs['mount']} ({fs['type']}, {fs['device']})"
        + ("  [volatile: fdatasync costs nothing here, durable figures are not]" if fs["volatile"] else ""),
    ]
    if res["nanomq_missing"]:
        lines.append(f"NanoMQ log: SKIPPED — {res['nanomq_missing']}")

    def g(section: dict[str, Any], key: str, field: str) -> float | None:
        return (section.get(key) or {}).get(field)

    threads = g(nano, "always_threads", "threads") or res["parameters"]["threads"]
    bare = base["fdatasync_single_prealloc"]
    bare_a = base["fdatasync_single_append"]

    def row(case: str, fmt: Fmt, ours: float | None, theirs: float | None, what: str) -> list[str]:
        """NanoMQ's figure (on a case's first row only), a comparison's, and their ratio."""
        return [case, fmt(ours) if case else "", fmt(theirs), what, tables.ratio(ours, theirs)]

    gb, rate, us = _fmt_gb, tables.fmt_rate, tables.fmt_us
    big, batch = g(nano, "never_64k", "gb_s"), g(nano, "never_batch", "rec_s")
    single = g(nano, "never_single", "rec_s")
    sync_p50, sync_p99 = g(nano, "always_single", "p50"), g(nano, "always_single", "p99")
    sync_batch, sync_threads = g(nano, "always_batch", "rec_s"), g(nano, "always_threads", "rec_s")
    read_rec, read_enc = g(nano, "read_records", "gb_s"), g(nano, "read_encoded", "gb_s")
    rows = [
        row("fsync=never, 64 KiB records", gb, big, base["write_64k"]["gb_s"], "write() 64 KiB"),
        row("", gb, big, base["write_64k_prealloc"]["gb_s"], "write() 64 KiB (fallocated)"),
        row(
            "fsync=never, 100 B, batches of 256",
            rate,
            batch,
            base["write_batch"]["rec_s"],
            "write() per batch",
        ),
        row("", rate, batch, lite["nondurable"]["rec_s"], "SQLite WAL NORMAL"),
        row("", rate, batch, lite["nondurable_off"]["rec_s"], "SQLite WAL OFF"),
        row(
            "fsync=never, 100 B, one per call",
            rate,
            single,
            base["write_single"]["rec_s"],
            "write() per record",
        ),
        row(
            "fsync=always, single append P50",
            us,
            sync_p50,
            g(nano, "always_single_bare", "p50"),
            "write+fdatasync, interleaved",
        ),
        row("", us, sync_p50, bare["p50"], "write+fdatasync (fallocated)"),
        row("", us, sync_p50, bare_a["p50"], "write+fdatasync (growing)"),
        row(
            "fsync=always, single append P99",
            us,
            sync_p99,
            g(nano, "always_single_bare", "p99"),
            "write+fdatasync, interleaved",
        ),
        row(
            "fsync=always, batches of 256",
            rate,
            sync_batch,
            base["fdatasync_batch"]["rec_s"],
            "write+fdatasync per batch",
        ),
        row("", rate, sync_batch, lite["durable"]["rec_s"], "SQLite WAL FULL"),
        row(
            f"fsync=always, {threads} threads, one per call",
            rate,
            sync_threads,
            _rate(1, int(bare["p50"])),
            "1 / write+fdatasync P50",
        ),
        row(
            f"fsync=always, {threads} threads, batches of 256",
            rate,
            g(nano, "always_threads_batch", "rec_s"),
            base["fdatasync_batch"]["rec_s"],
            "write+fdatasync per batch",
        ),
        ["reopen (recovery scan)", gb(g(nano, "reopen", "gb_s")), "", "", ""],
        row("read back: read() records", gb, read_rec, base["read_64k"]["gb_s"], "read() 1 MiB chunks"),
        row("read back: read_encoded 1 MiB", gb, read_enc, base["read_64k"]["gb_s"], "read() 1 MiB chunks"),
    ]
    lines += tables.table(
        "NanoMQ log against the physical limit and SQLite (ratio: NanoMQ / comparison)",
        ["case", "NanoMQ", "comparison", "what", "ratio"],
        rows,
    )

    def shown(key: str, m: float) -> str:
        if key.endswith("gb_s"):
            return f"{m:.2f} GB/s"
        return tables.fmt_rate(m) if key.endswith("rec_s") else f"{m:.2f}×"

    def goal(key: str, target: float) -> str:
        if key.endswith("gb_s"):
            return f"{target:g} GB/s"
        return tables.fmt_rate(target) if key.endswith("rec_s") else f"{target:g}×"

    lines += tables.targets_table("targets (issue 3)", res["targets"], shown, goal)
    lines.append("")
    lines.append(f"SQLite {lite['version']}; {res['elapsed_s']:.1f} s in all")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `nanomq bench log`'s options to `parser` and make it call run(args)."""
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--dir", metavar="DIR", help="measure on this directory's file system (default: the temp dir, /tmp)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a run of a few seconds")
    parser.add_argument("--json", metavar="FILE", help="also write every result as JSON to FILE")
    parser.add_argument(
        "--threads",
        type=int,
        choices=(2, 3, 4),
        default=None,
        help="concurrent appenders in the group-commit case (default 4; --quick 2)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`nanomq bench log`: measure, print the tables, write --json."""
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.threads is not None:
        sizes = Sizes(**{**asdict(sizes), "threads": args.threads})
    try:
        res = measure(args.dir, sizes, progress=lambda text: print(f"… {text}", file=sys.stderr, flush=True))
    except OSError as exc:
        print(f"nanomq bench log: {exc}", file=sys.stderr)
        return 2
    return tables.print_and_save(res, args, format_report)
