"""The benchmark harness, for real: `nanomq bench ring --quick`, the C loops, the load generators.

Nothing here asserts a speed: the machine is shared and noisy. What is asserted is that
every message is accounted for, that the records are well formed, and that the checks
can fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from nanomq.bench import drivers, hdr, loadgen, procs, tables
from nanomq.bench import ring as ring_bench
from nanomq.cli import main

PERCENTILE_ORDER = ("p50", "p90", "p99", "p99.9", "p99.99", "max")


def _assert_ordered(p: dict) -> None:
    values = [p[k] for k in PERCENTILE_ORDER]
    assert values == sorted(values), p
    assert p["count"] > 0


def test_bench_ring_quick_json_has_every_section_with_sane_values(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ring.json"
    assert main(["bench", "ring", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "NanoMQ ring" in printed and "targets" in printed

    record = json.loads(out.read_text())
    assert set(record["sections"]) == set(ring_bench.SECTIONS)
    env = record["environment"]
    assert env["cores"] >= 1 and env["python"] and "cpu_model" in env
    assert record["parameters"]["quick"] is True
    peers = set(record["parameters"]["peers"])
    assert "mp-queue" in peers
    assert {t["verdict"] for t in record["targets"]} <= {"PASS", "MISS", "FAILED"}

    for section in ("throughput", "batch"):
        runs = record["sections"][section]
        assert {r["driver"] for r in runs} >= {"nanomq-spin"}
        for r in runs:
            assert r["status"] == "OK", r["reasons"]
            p = r["parameters"]
            assert r["sent"] == r["received"] == p["count"] + p["warmup"]
            assert r["seq_errors"] == 0
            assert r["throughput_msgs_per_s"] > 0
    assert {r["driver"] for r in record["sections"]["throughput"]} == {"nanomq-spin", *peers}
    assert {r["mode"] for r in record["sections"]["batch"] if r["driver"] == "nanomq-spin"} == {
        "batch",
        "buffer",
    }

    latency_runs = (
        record["sections"]["latency"] + record["sections"]["futex"] + record["sections"]["peer-latency"]
    )
    assert [r["parameters"]["rate"] for r in record["sections"]["latency"]] == [10_000.0, 100_000.0]
    assert record["sections"]["futex"][0]["parameters"]["wait"] == "futex"
    assert {r["driver"] for r in record["sections"]["peer-latency"]} == peers
    for r in latency_runs:
        # the status may be FAILED on a loaded machine (rate not held); the accounting may not
        assert r["status"] in ("OK", "FAILED")
        assert r["received"] == r["sent"] == r["planned"], r["reasons"]
        assert r["seq_errors"] == 0
        assert r["measured"] == r["sent"] - r["warmup_messages"]
        _assert_ordered(r["latency_ns"])
        h = hdr.decode(r["histogram"])
        assert h.get_total_count() == r["measured"] == r["latency_ns"]["count"]
        assert hdr.decode(r["send_lag_histogram"]).get_total_count() == r["measured"]

    c_runs = record["sections"]["c"]
    assert {(r["kind"], r["mode"]) for r in c_runs} == {
        (kind, mode) for kind in ("c-pingpong", "c-stream") for mode in ("threads", "processes")
    }
    for r in c_runs:
        p = r["parameters"]
        assert r["status"] == "OK", r["reasons"]
        assert r["received"] == p["count"] + p["warmup"]
        assert r["seq_errors"] == 0 and r["elapsed_ns"] > 0
        if r["kind"] == "c-pingpong":
            assert r["measured"] == p["count"]
            _assert_ordered(r["rtt_half_ns"])
            assert hdr.decode(r["histogram"]).get_total_count() == p["count"] - r["dropped"]
        else:
            assert r["throughput_msgs_per_s"] > 0


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_c_pingpong_returns_every_round_trip(mode: str) -> None:
    r = drivers.c_pingpong(mode=mode, size=64, count=3000, warmup=300, timeout=30)
    assert (r.messages, r.received, r.seq_errors) == (3000, 3300, 0)
    assert r.histogram is not None
    assert r.histogram.get_total_count() + r.dropped == 3000
    assert r.elapsed_ns > 0


@pytest.mark.parametrize("mode", ["threads", "processes"])
@pytest.mark.parametrize("batch", [1, 7, 256])
def test_c_stream_returns_every_message(mode: str, batch: int) -> None:
    r = drivers.c_stream(
        mode=mode, size=40, count=50_000, warmup=1000, batch=batch, capacity=1 << 14, timeout=30
    )
    assert (r.received, r.seq_errors) == (51_000, 0)
    if batch == 1:
        assert r.messages == 50_000
    assert r.elapsed_ns > 0 and r.histogram is None


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_c_stream_records_latency_of_every_measured_message(mode: str) -> None:
    r = drivers.c_stream(
        mode=mode, size=16, count=2000, warmup=100, rate=200_000, record_latency=True, timeout=30
    )
    assert (r.received, r.messages, r.seq_errors) == (2100, 2000, 0)
    assert r.histogram is not None
    assert r.histogram.get_total_count() + r.dropped == 2000


def test_c_loops_refuse_bad_parameters() -> None:
    with pytest.raises(ValueError, match="batch"):
        drivers.c_stream(batch=257, count=10)
    with pytest.raises(ValueError, match="batch"):
        drivers.c_stream(batch=4, rate=1000.0, count=10)
    with pytest.raises(ValueError, match="mode"):
        drivers.c_pingpong(mode="fibers")


def _all_drivers() -> list[drivers.Driver]:
    found, _notes = drivers.peer_drivers()
    return [drivers.RingDriver("spin"), drivers.RingDriver("futex"), *found]


@pytest.mark.parametrize("driver", _all_drivers(), ids=lambda d: d.name)
def test_throughput_accounts_for_every_message(driver: drivers.Driver) -> None:
    modes = ["single"] + (["batch"] if driver.batch_label else []) + (["buffer"] if driver.buffer else [])
    for mode in modes:
        r = loadgen.run_throughput(driver, size=32, count=3000, warmup=517, mode=mode, timeout=60)
        assert r.status == "OK", (mode, r.reasons)
        assert (r.sent, r.received, r.seq_errors) == (3517, 3517, 0), mode
        assert 0 < r.measured <= 3517 and r.rate > 0
        if mode == "single":
            assert r.measured == 3000


def test_ring_driver_works_with_spawned_processes() -> None:
    r = loadgen.run_throughput(
        drivers.RingDriver("spin"), count=2000, warmup=100, start_method="spawn", timeout=60
    )
    assert r.status == "OK", r.reasons
    assert r.received == 2100


def test_latency_run_accounts_for_every_message() -> None:
    r = loadgen.run_latency(drivers.RingDriver("spin"), rate=20_000, duration=0.1, warmup=0.05, size=16)
    assert r.planned == 1000 + 2000
    assert r.sent == r.received == r.planned, r.reasons
    assert r.seq_errors == 0
    assert r.latency is not None and r.lag is not None
    assert r.latency.get_total_count() == r.lag.get_total_count() == 2000
    assert r.start_ns is not None and r.latency_intervals and r.lag_intervals
    # per-second intervals cover the whole schedule, warm-up included
    assert sum(h.get_total_count() for h in r.latency_intervals) == r.planned
    assert sum(h.get_total_count() for h in r.lag_intervals) == r.planned
    record = r.to_dict()
    assert hdr.decode(record["histogram"]).get_total_count() == 2000
    json.dumps(record)


def test_latency_run_is_failed_when_the_rate_is_impossible() -> None:
    # 10 M msg/s through multiprocessing.Queue (pickling, a pipe, a feeder thread) cannot be held
    r = loadgen.run_latency(drivers.MpQueueDriver(), rate=10_000_000, duration=0.02, warmup=0.0)
    assert r.status == "FAILED"
    assert any("below 99 %" in reason or "fell behind" in reason for reason in r.reasons), r.reasons
    assert r.achieved_rate < 0.99 * 10_000_000
    assert r.received == r.sent  # slow is not lossy: every message sent still arrives


def test_loadgen_refuses_messages_too_small_for_the_header() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        loadgen.run_throughput(drivers.MpQueueDriver(), size=8, count=10)
    with pytest.raises(ValueError, match="no buffer mode"):
        loadgen.run_throughput(drivers.MpQueueDriver(), count=10, mode="buffer")


def test_targets_are_judged_pass_miss_failed_or_not_measured() -> None:
    targets = {
        "fast": (100.0, True, "at least 100"),
        "small": (5.0, False, "at most 5"),
        "slow": (100.0, True, "at least 100, missed"),
        "broken": (1.0, True, "its run failed"),
        "absent": (1.0, False, "not measured"),
    }
    measured = {"fast": 100.0, "small": 5.0, "slow": 99.9, "broken": 7.0, "absent": None}
    verdicts = tables.judge(targets, measured, failed={"broken"})
    assert [v["key"] for v in verdicts] == list(targets)
    assert [v["verdict"] for v in verdicts] == ["PASS", "PASS", "MISS", "FAILED", "n/a"]
    assert verdicts[2] == {
        "key": "slow",
        "what": "at least 100, missed",
        "measured": 99.9,
        "target": 100.0,
        "at_least": True,
        "verdict": "MISS",
    }
    lines = tables.targets_table("t", verdicts, lambda _k, v: f"{v:g}", lambda _k, v: f"{v:g}")
    assert lines[:2] == ["", "t"] and lines[2].split() == ["target", "measured", "goal", "verdict"]
    assert lines[-1].split()[-4:] == ["—", "≤", "1", "n/a"] and "≥ 100" in lines[4]


def test_a_server_that_ignores_sigterm_is_killed_and_its_log_tail_quoted(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    code = (
        "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    with proc:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # SIGTERM is ignored from here
        procs.stop_server(proc, wait_s=0.2)
        assert proc.returncode == -signal.SIGKILL
    log = tmp_path / "server.log"
    log.write_text("x" * 600 + "last words\n")
    assert procs.log_tail(log) == "x" * 489 + "last words"  # the last 500 characters, stripped
    log.write_text("")
    assert procs.log_tail(log) == "(no output)"
    assert procs.log_tail(tmp_path / "missing.log") == "(no log)"


def test_a_producer_waits_without_holding_the_gil() -> None:
    """loadgen.wait_until returns at or after the due time, spinning in C with the GIL released,
    so the client's own threads run meanwhile; a Python spin holds it (here for the switch
    interval, set to 1 s: the other thread gets nowhere)."""
    import sys
    import threading
    import time

    counted = [0]
    stop = threading.Event()

    def count() -> None:  # a thread that needs the GIL briefly, often (as a client's reader does)
        while not stop.is_set():
            counted[0] += 1
            time.sleep(0)

    def python_spin(due: int) -> int:
        while (now := time.perf_counter_ns()) < due:
            pass
        return now

    def spin(wait: Callable[[int], int]) -> int:
        before = counted[0]
        for _ in range(500):
            due = time.perf_counter_ns() + 150_000  # under the threshold for sleeping: all spin
            assert wait(due) >= due
        return counted[0] - before

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    t = threading.Thread(target=count)
    t.start()
    try:
        time.sleep(0.05)
        polite = spin(lambda due: loadgen.wait_until(due, True))
        plain = spin(lambda due: loadgen.wait_until(due, False))
        held = spin(python_spin)
    finally:
        sys.setswitchinterval(interval)
        stop.set()
        t.join()
    assert polite >= 20 and plain >= 20 and held <= 2, (polite, plain, held)
    now = time.perf_counter_ns()
    assert loadgen.wait_until(now - 5, True) >= now
