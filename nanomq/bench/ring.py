"""`nanomq bench ring`: the shared-memory ring beside its peers, in one run, with the issue's targets.

Sections (all by default; pick with --only):
  throughput    one message per call, closed loop, two processes (M msg/s)
  batch         256 per call: the ring as a list of bytes and as one buffer; peers' closest equivalent
  latency       one-way latency, open loop at each --rates value, busy-polling ring consumer
  futex         the same at the first rate with the spin-then-futex ring consumer
  peer-latency  the peers' one-way latency at the first rate
  c             C-level loops: ping-pong RTT/2 and streaming throughput, threads and processes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from nanomq.bench import hdr, tables
from nanomq.bench.drivers import CResult, Driver, RingDriver, c_pingpong, c_stream, peer_drivers
from nanomq.bench.loadgen import LatencyResult, ThroughputResult, environment, run_latency, run_throughput
from nanomq.ring import DEFAULT_SPIN_US

__all__ = ["SECTIONS", "TARGETS", "add_arguments", "run"]

SECTIONS = ("throughput", "batch", "latency", "futex", "peer-latency", "c")

TARGETS: dict[str, float] = {
    "single_msgs_per_s": 3e6,
    "batch_bytes_msgs_per_s": 8e6,
    "batch_buffer_msgs_per_s": 25e6,
    "spin_p50_ns": 2_000,
    "spin_p99_ns": 10_000,
    "spin_p99.9_ns": 50_000,
    "futex_p50_ns": 20_000,
    "c_pingpong_p50_ns": 300,
}
"""The issue's targets for NanoMQ (throughput: at least; latency: at most)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `nanomq bench ring`'s options to `parser` and make it call run(args)."""
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--size", type=int, default=64, help="payload bytes per message (>= 16; default 64)")
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help="messages per one-per-call throughput run (default 1,000,000; "
        "batch runs send 10x); --quick: 20,000",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds measured per latency run (default 5; --quick: 0.3)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of warm-up left out of each latency run (default 0.5)",
    )
    parser.add_argument(
        "--rates",
        type=_rates,
        default=None,
        help="paced rates for the latency section, msg/s (default 10000,100000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a fast run of a few seconds (small counts, short runs)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write every result as JSON to PATH")
    parser.add_argument(
        "--only",
        type=_sections,
        default=None,
        metavar="SECTION[,SECTION]",
        help=f"run only these: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--start-method",
        choices=("fork", "spawn"),
        default="fork",
        help="multiprocessing start method (default fork)",
    )
    parser.add_argument("--no-peers", action="store_true", help="measure NanoMQ only")
    parser.add_argument(
        "--spin-us",
        type=float,
        default=DEFAULT_SPIN_US,
        help=f"the futex consumer's spin before it sleeps, µs (default {DEFAULT_SPIN_US:g})",
    )
    parser.set_defaults(func=run)


def _rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"rates must be numbers separated by commas, got {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be positive, got {text!r}")
    return rates


def _sections(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {bad or text!r}: choose from {', '.join(SECTIONS)}"
        )
    return names


# ------------------------------------------------------------------- runner ----


class _Plan:
    """The parameters of one invocation, resolved from the options."""

    def __init__(self, args: argparse.Namespace) -> None:
        quick = args.quick
        self.size = args.size
        self.count = args.count or (20_000 if quick else 1_000_000)
        self.batch_count = 10 * self.count
        self.duration = args.duration or (0.3 if quick else 5.0)
        self.warmup = args.warmup if args.warmup is not None else (0.1 if quick else 0.5)
        self.rates = args.rates or [10_000.0, 100_000.0]
        self.sections = args.only or list(SECTIONS)
        self.start_method = args.start_method
        self.spin_us = args.spin_us
        self.quick = quick
        self.c_pingpong = 20_000 if quick else 1_000_000
        self.c_stream = 200_000 if quick else 10_000_000
        if args.no_peers:
            self.peers: list[Driver] = []
            self.notes = ["peers left out (--no-peers)"]
        else:
            self.peers, self.notes = peer_drivers()

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "count": self.count,
            "batch_count": self.batch_count,
            "latency_duration_s": self.duration,
            "latency_warmup_s": self.warmup,
            "rates": self.rates,
            "sections": self.sections,
            "start_method": self.start_method,
            "quick": self.quick,
            "c_pingpong_count": self.c_pingpong,
            "c_stream_count": self.c_stream,
            "peers": [p.name for p in self.peers],
        }


def _progress(step: int, total: int, text: str) -> None:
    print(f"[{step}/{total}] {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the selected sections, print the tables, write --json; returns the exit code."""
    if args.size < 16 or args.size > 65536:
        print(f"nanomq bench ring: --size {args.size} must be between 16 and 65536 bytes", file=sys.stderr)
        return 2
    plan = _Plan(args)
    jobs = _jobs(plan)
    started = time.monotonic()
    results: dict[str, list[Any]] = {s: [] for s in plan.sections}
    for step, (section, text, job) in enumerate(jobs, 1):
        _progress(step, len(jobs), f"{section}: {text}")
        t = time.monotonic()
        results[section].append(job())
        print(f"      {time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    verdicts = _verdicts(plan, results)
    _print_report(plan, results, verdicts, elapsed)
    if args.json:
        record = {
            "tool": "nanomq bench ring",
            "options": {k: v for k, v in vars(args).items() if k != "func"},
            "parameters": plan.to_dict(),
            "environment": environment(),
            "notes": plan.notes,
            "elapsed_s": elapsed,
            "targets": verdicts,
            "sections": {s: [_as_dict(r) for r in rs] for s, rs in results.items()},
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        print(f"results written to {args.json}", file=sys.stderr)
    return 0


def _jobs(plan: _Plan) -> list[tuple[str, str, Callable[[], Any]]]:
    jobs: list[tuple[str, str, Callable[[], Any]]] = []
    sm = plan.start_method
    size = plan.size

    def tp(driver: Driver, mode: str, count: int) -> Callable[[], ThroughputResult]:
        return lambda: run_throughput(driver, size=size, count=count, mode=mode, start_method=sm)

    def lat(driver: Driver, rate: float) -> Callable[[], LatencyResult]:
        return lambda: run_latency(
            driver, rate=rate, duration=plan.duration, warmup=plan.warmup, size=size, start_method=sm
        )

    if "throughput" in plan.sections:
        for d in [RingDriver("spin"), *plan.peers]:
            jobs.append(
                (
                    "throughput",
                    f"{d.label}, {plan.count:,} x {size} B, one per call",
                    tp(d, "single", plan.count),
                )
            )
    if "batch" in plan.sections:
        ring = RingDriver("spin")
        jobs.append(("batch", f"{ring.label}, 256 per call as bytes", tp(ring, "batch", plan.batch_count)))
        jobs.append(
            ("batch", f"{ring.label}, 256 per call as one buffer", tp(ring, "buffer", plan.batch_count))
        )
        for d in plan.peers:
            if d.batch_label:
                jobs.append(("batch", f"{d.label}, {d.batch_label}", tp(d, "batch", plan.batch_count)))
    if "latency" in plan.sections:
        for rate in plan.rates:
            jobs.append(
                ("latency", f"NanoMQ ring (spin) at {rate:,.0f} msg/s", lat(RingDriver("spin"), rate))
            )
    if "futex" in plan.sections:
        rate = plan.rates[0]
        futex = RingDriver("futex", spin_us=plan.spin_us)
        jobs.append(
            ("futex", f"NanoMQ ring (futex, spin {plan.spin_us:g} µs) at {rate:,.0f} msg/s", lat(futex, rate))
        )
    if "peer-latency" in plan.sections:
        rate = plan.rates[0]
        for d in plan.peers:
            jobs.append(("peer-latency", f"{d.label} at {rate:,.0f} msg/s", lat(d, rate)))
    if "c" in plan.sections:
        for mode in ("threads", "processes"):
            n = plan.c_pingpong
            jobs.append(
                (
                    "c",
                    f"ping-pong, {mode}",
                    lambda m=mode, n=n: c_pingpong(mode=m, size=size, count=n, warmup=n // 10),
                )
            )
        for mode in ("threads", "processes"):
            for batch in (1, 256):
                n = plan.c_stream * (1 if batch == 1 else 4)
                jobs.append(
                    (
                        "c",
                        f"streaming, {mode}, batch {batch}",
                        lambda m=mode, b=batch, n=n: c_stream(
                            mode=m, size=size, count=n, warmup=n // 10, batch=b
                        ),
                    )
                )
    return jobs


# ------------------------------------------------------------------ results ----


def _c_dict(r: CResult) -> dict[str, Any]:
    expected = r.count + r.warmup
    reasons = []
    if r.received != expected:
        reasons.append(f"received {r.received} messages, sent {expected}")
    if r.seq_errors:
        reasons.append(f"{r.seq_errors} sequence errors")
    out: dict[str, Any] = {
        "kind": f"c-{r.kind}",
        "driver": "nanomq-c",
        "label": f"C {r.kind} ({r.mode})",
        "mode": r.mode,
        "parameters": {"size": r.size, "batch": r.batch, "count": r.count, "warmup": r.warmup},
        "status": "FAILED" if reasons else "OK",
        "reasons": reasons,
        "received": r.received,
        "measured": r.messages,
        "seq_errors": r.seq_errors,
        "elapsed_ns": r.elapsed_ns,
        "pinned": r.pinned,
    }
    if r.kind == "pingpong":
        out["round_trips_per_s"] = r.rate
        out["mean_rtt_half_ns"] = r.elapsed_ns / r.messages / 2 if r.messages else 0.0
    else:
        out["throughput_msgs_per_s"] = r.rate
        out["throughput_bytes_per_s"] = r.rate * r.size
    if r.histogram is not None:
        out["rtt_half_ns" if r.kind == "pingpong" else "latency_ns"] = hdr.percentiles(r.histogram)
        out["histogram"] = hdr.encode(r.histogram)
        out["dropped"] = r.dropped
    return out


def _as_dict(r: Any) -> dict[str, Any]:
    return _c_dict(r) if isinstance(r, CResult) else r.to_dict()


def _pct(r: LatencyResult | CResult, key: str) -> float | None:
    h = r.latency if isinstance(r, LatencyResult) else r.histogram
    if h is None or h.get_total_count() == 0:
        return None
    return hdr.percentiles(h)[key]


def _verdicts(plan: _Plan, results: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The issue's targets beside what NanoMQ measured: PASS, MISS, or FAILED (run not valid)."""
    out: list[dict[str, Any]] = []

    def add(name: str, measured: float | None, target: float, at_least: bool, ok: bool) -> None:
        if measured is None or not ok:
            verdict = "FAILED"
        else:
            verdict = tables.meets(measured, target, at_least)
        out.append(
            {"name": name, "measured": measured, "target": target, "at_least": at_least, "verdict": verdict}
        )

    for r in results.get("throughput", []):
        if r.driver.startswith("nanomq"):
            add("one message per call (msg/s)", r.rate, TARGETS["single_msgs_per_s"], True, r.status == "OK")
    for r in results.get("batch", []):
        if r.driver.startswith("nanomq"):
            key = "batch_bytes_msgs_per_s" if r.mode == "batch" else "batch_buffer_msgs_per_s"
            what = "as bytes" if r.mode == "batch" else "as one buffer"
            add(f"batch of 256 {what} (msg/s)", r.rate, TARGETS[key], True, r.status == "OK")
    for r in results.get("latency", []):
        for p in ("p50", "p99", "p99.9"):
            add(
                f"busy-poll {p.upper()} at {r.rate:,.0f} msg/s (ns)",
                _pct(r, p),
                TARGETS[f"spin_{p}_ns"],
                False,
                r.status == "OK",
            )
    for r in results.get("futex", []):
        add(
            f"futex P50 at {r.rate:,.0f} msg/s (ns)",
            _pct(r, "p50"),
            TARGETS["futex_p50_ns"],
            False,
            r.status == "OK",
        )
    for r in results.get("c", []):
        if r.kind == "pingpong":
            add(
                f"C ping-pong RTT/2 P50, {r.mode} (ns)",
                _pct(r, "p50"),
                TARGETS["c_pingpong_p50_ns"],
                False,
                _c_dict(r)["status"] == "OK",
            )
    return out


# ------------------------------------------------------------------- output ----


def _mps(rate: float) -> str:
    return f"{rate / 1e6:.2f} M"


def _us(ns: float | None) -> str:
    if ns is None:
        return "-"
    return f"{ns / 1000:.1f}" if ns >= 10_000 else f"{ns / 1000:.2f}"


def _ratio(ours: float, theirs: float) -> str:
    if ours <= 0 or theirs <= 0:
        return "-"
    return f"x{ours / theirs:.1f}"


def _print_report(
    plan: _Plan, results: dict[str, list[Any]], verdicts: list[dict[str, Any]], elapsed: float
) -> None:
    out = _Out()
    env = environment()
    out.line(
        f"nanomq bench ring — {plan.size}-byte messages, {env['cpu_model']}, {env['cores']} cores, "
        f"Python {env['python']}, {time.strftime('%Y-%m-%d %H:%M')}, {elapsed:.0f} s"
        + (" (quick)" if plan.quick else "")
    )
    for note in plan.notes:
        out.line(f"note: {note}")

    tp = results.get("throughput")
    if tp:
        ours = next((r for r in tp if r.driver.startswith("nanomq")), None)
        rows = []
        for r in tp:
            ratio = "" if r is ours or ours is None else f"NanoMQ {_ratio(ours.rate, r.rate)}"
            rows.append([r.label, _mps(r.rate), r.status, "pinned" if r.pinned else "unpinned", ratio])
        out.table(
            f"(i) throughput, one message per call, {plan.count:,} messages, two processes",
            ["transport", "msg/s", "run", "cpus", "vs peer"],
            rows,
        )
    bt = results.get("batch")
    if bt:
        ours_bytes = next((r for r in bt if r.driver.startswith("nanomq") and r.mode == "batch"), None)
        rows = []
        for r in bt:
            api = r.params.get("batch_api", "")
            ratio = ""
            if not r.driver.startswith("nanomq") and ours_bytes is not None:
                ratio = f"NanoMQ (bytes) {_ratio(ours_bytes.rate, r.rate)}"
            rows.append([r.label, api, _mps(r.rate), r.status, ratio])
        out.table(
            f"(ii) batch throughput, 256 per call, {plan.batch_count:,} messages "
            "(peers have no batch-as-one-buffer API; their closest equivalent is labelled)",
            ["transport", "batch call", "msg/s", "run", "vs peer"],
            rows,
        )
    lat_sections = [
        (
            "latency",
            "(iii) one-way latency, open loop from the intended send time, busy-polling ring consumer",
        ),
        ("futex", "(iv) one-way latency, spin-then-futex ring consumer"),
        ("peer-latency", "(v) peers' one-way latency"),
    ]
    spin_by_rate = {r.rate: r for r in results.get("latency", [])}
    for section, title in lat_sections:
        rs = results.get(section)
        if not rs:
            continue
        rows = []
        for r in rs:
            p = hdr.percentiles(r.latency) if r.latency is not None else {}
            ours = spin_by_rate.get(r.rate)
            ratio = ""
            if section != "latency" and ours is not None and ours.latency is not None and p:
                ratio = f"NanoMQ spin P50 {_ratio(p['p50'], _pct(ours, 'p50') or 0)}"
            rows.append(
                [
                    r.label,
                    f"{r.rate:,.0f}",
                    f"{r.achieved_rate:,.0f}",
                    _us(p.get("p50")),
                    _us(p.get("p99")),
                    _us(p.get("p99.9")),
                    _us(p.get("max")),
                    f"{r.measured:,}",
                    r.status,
                    ratio,
                ]
            )
        out.table(
            f"{title}; µs, {plan.duration:g} s after {plan.warmup:g} s warm-up",
            [
                "transport",
                "target/s",
                "achieved/s",
                "P50",
                "P99",
                "P99.9",
                "max",
                "samples",
                "run",
                "vs NanoMQ",
            ],
            rows,
        )
        for r in rs:
            for reason in r.reasons:
                out.line(f"  {r.label} at {r.rate:,.0f}/s FAILED: {reason}")
    cs = results.get("c")
    if cs:
        rows = []
        for r in cs:
            d = _c_dict(r)
            if r.kind == "pingpong":
                p = d["rtt_half_ns"]
                what = f"RTT/2 P50 {p['p50']} ns, P99 {p['p99']} ns, P99.9 {p['p99.9']} ns"
                rate = f"{r.rate / 1e6:.2f} M round trips/s"
            else:
                what = f"batch {r.batch}"
                rate = f"{_mps(r.rate)} msg/s"
            rows.append(
                [f"{r.kind} ({r.mode})", what, rate, d["status"], "pinned" if r.pinned else "unpinned"]
            )
        out.table(
            "(vi) C-level loops (no Python per message)",
            ["loop", "latency / batch", "rate", "run", "cpus"],
            rows,
        )
    if verdicts:
        rows = []
        for v in verdicts:
            unit_ns = v["name"].endswith("(ns)")
            shown = (
                "-"
                if v["measured"] is None
                else (f"{v['measured']:,.0f}" if unit_ns else _mps(v["measured"]))
            )
            target = f"{'>=' if v['at_least'] else '<='} " + (
                f"{v['target']:,.0f}" if unit_ns else _mps(v["target"])
            )
            rows.append([v["name"], shown, target, v["verdict"]])
        out.table("targets (NanoMQ)", ["target", "measured", "goal", "verdict"], rows)
    out.flush()


class _Out:
    """Tables on stdout: rich when installed, plain text otherwise."""

    def __init__(self) -> None:
        try:
            from rich.console import Console

            self._console: Any = Console(highlight=False, width=max(120, _terminal_width()))
        except ImportError:
            self._console = None

    def line(self, text: str) -> None:
        if self._console is not None:
            self._console.print(text, markup=False)
        else:
            print(text)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if self._console is not None:
            from rich.table import Table

            t = Table(title=title, title_justify="left", show_lines=False)
            for h in headers:
                t.add_column(h)
            for row in rows:
                t.add_row(*row)
            self._console.print()
            self._console.print(t)
            return
        widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
        print()
        print(title)
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for row in rows:
            print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))

    def flush(self) -> None:
        sys.stdout.flush()


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 24)).columns
