"""ring_c (the C loops of csrc/bench.c) in the harness: per-second histograms and send lag.

A paced ring_c run (nmq_bench_stream_series in csrc/bench.c) writes one .hlog interval per
second of its schedule (warm-up included) and a send-lag histogram, like the Python drivers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nanomq.bench import drivers, runner
from nanomq.bench.experiment import parse_experiment
from nanomq.bench.records import read_hlog


def _paced_run(tmp_path: Path) -> dict:
    grid = {
        "name": "g",
        "transport": "ring_c",
        "rate": 10_000,
        "duration_s": 1.2,
        "warmup_s": 0.5,
        "repetitions": 1,
    }
    (run,) = parse_experiment({"experiment": "c", "grids": [grid]}).runs()
    return runner.run(run.spec(), tmp_path, quiet=True)


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_paced_c_stream_counts_every_message_per_second_and_its_lag(mode: str) -> None:
    r = drivers.c_stream(
        mode=mode,
        size=16,
        count=20_000,
        warmup=5_000,
        rate=10_000.0,
        record_latency=True,
        series=True,
        timeout=30,
    )
    assert (r.received, r.seq_errors) == (25_000, 0)
    assert r.histogram is not None and r.histogram.get_total_count() + r.dropped == 20_000
    assert r.lag is not None and r.lag.get_total_count() == 20_000
    assert r.latency_intervals is not None and r.lag_intervals is not None
    assert [h.get_total_count() for h in r.latency_intervals] == [10_000, 10_000, 5_000]
    assert [h.get_total_count() for h in r.lag_intervals] == [10_000, 10_000, 5_000]
    assert r.start_ns is not None and r.start_ns > 0


def test_a_paced_ring_c_run_writes_per_second_intervals_and_send_lag(tmp_path: Path) -> None:
    record = _paced_run(tmp_path)
    assert record["status"] in ("OK", "FAILED") and record["counts"]["lost"] == 0
    assert record["latency"]["intervals"] == "per-second" and not record["notes"]
    assert record["send_lag"]["count"] == record["latency"]["count"] == 12_000
    latency = read_hlog(tmp_path / "latency.hlog")
    assert [iv.histogram.get_total_count() for iv in latency] == [10_000, 7_000]  # warm-up included
    lag = read_hlog(tmp_path / "send_lag.hlog")
    assert (lag[0].start_s, lag[0].end_s) == (0.0, 1.0) and len(lag) == len(latency)


def test_series_need_a_paced_run() -> None:
    with pytest.raises(ValueError, match="paced"):
        drivers.c_stream(count=10, series=True)
