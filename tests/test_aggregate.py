"""Aggregation merges histograms, never averaging percentiles, and keeps the spread; compare flags changes."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nanomq.bench import hdr
from nanomq.bench.aggregate import aggregate, load_records
from nanomq.bench.compare import compare, load_summary
from nanomq.bench.experiment import config_hash
from nanomq.bench.records import FAILED, OK, SKIPPED, metric_summary, write_record
from nanomq.cli import main

PARAMS = {
    "transport": "ring",
    "message_size": 64,
    "rate": 10_000,
    "batch_size": 1,
    "producers": 1,
    "consumers": 1,
    "duration_s": 1.0,
    "warmup_s": 0.5,
    "fsync": "never",
    "wait": "spin",
    "pin": True,
    "options": {},
}


def histogram_of(values):
    h = hdr.new_histogram()
    for v in values:
        h.record_value(int(v))
    return h


def write_run(
    root: Path, params: dict, rep: int, values=None, status=OK, reason="", experiment="t", achieved=None
):
    """A run record as the runner writes it, from known latency samples (ns)."""
    h = config_hash(params)
    run_dir = root / "runs" / f"{params['transport']}-{h}" / f"r{rep}"
    mode = "throughput" if params["rate"] == "max" else "latency"
    target = None if mode == "throughput" else float(params["rate"])
    record = {
        "schema_version": 1,
        "run_id": f"{params['transport']}-{h}-r{rep}",
        "experiment": experiment,
        "experiment_file": "experiments/t.yaml",
        "config_hash": h,
        "repetition": rep,
        "parameters": params,
        "mode": mode,
        "status": status,
        "reason": reason,
        "target_rate": target,
        "achieved_rate": achieved if achieved is not None else target,
        "counts": {"sent": 100, "received": 100, "lost": 0, "duplicated": 0},
        "latency": metric_summary(histogram_of(values), hlog=None) if values is not None else None,
        "send_lag": None,
        "processes": [
            {"pid": 1, "role": "runner", "cpu_user_s": 0.5, "cpu_system_s": 0.1, "peak_rss_bytes": 1 << 20}
        ],
        "environment": {"node": "test-node", "git": {"sha": "abc"}},
        "started_at": f"2026-01-01T00:00:0{rep}",
    }
    write_record(run_dir / "record.json", record)
    return record


def lognormal(seed, n, mu, sigma):
    rng = random.Random(seed)
    return [max(1, int(rng.lognormvariate(mu, sigma))) for _ in range(n)]


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results" / "t"
    reps = [lognormal(1, 3000, 9, 0.3), lognormal(2, 3000, 9.5, 1.0), lognormal(3, 500, 8, 2.0)]
    for i, values in enumerate(reps):
        write_run(root, PARAMS, i, values)
    return root, reps


def test_percentiles_come_from_the_merged_histogram_of_the_repetitions(results):
    root, reps = results
    aggregate([root], root)
    summary = pd.read_csv(root / "summary.csv")
    assert len(summary) == 1
    row = summary.iloc[0]
    pooled = [v for rep in reps for v in rep]
    exact = hdr.percentiles(histogram_of(pooled))
    assert row["samples"] == len(pooled)
    for key, stem in (("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max")):
        assert row[f"{stem}_ns"] == exact[key]
    # ... which are the percentiles of the pooled samples, to HDR precision (3 significant figures)
    for q, stem in ((50, "p50"), (99, "p99"), (99.9, "p999"), (100, "max")):
        truth = float(np.percentile(pooled, q, method="inverted_cdf"))
        assert row[f"{stem}_ns"] == pytest.approx(truth, rel=2e-3)
    # ... and not the average of the repetitions' percentiles, which is a different number here
    per_rep_p99 = [hdr.percentiles(histogram_of(r))["p99"] for r in reps]
    assert abs(statistics.mean(per_rep_p99) - row["p99_ns"]) > 0.05 * row["p99_ns"]


def test_the_spread_across_repetitions_is_kept(results):
    root, reps = results
    aggregate([root], root)
    row = pd.read_csv(root / "summary.csv").iloc[0]
    per_rep = [hdr.percentiles(histogram_of(r)) for r in reps]
    for key, stem in (("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max")):
        values = [p[key] for p in per_rep]
        assert row[f"{stem}_ns_min"] == min(values)
        assert row[f"{stem}_ns_max"] == max(values)
        assert row[f"{stem}_ns_median"] == statistics.median(values)
    assert row["runs"] == row["runs_ok"] == 3


def test_failed_runs_are_counted_but_never_merged(results):
    root, reps = results
    write_run(
        root, PARAMS, 3, values=[10**9] * 50, status=FAILED, reason="achieved 10 msg/s, more than 1% below"
    )
    aggregate([root], root)
    row = pd.read_csv(root / "summary.csv").iloc[0]
    assert row["status"] == FAILED
    assert (row["runs"], row["runs_ok"], row["runs_failed"]) == (4, 3, 1)
    assert "achieved 10 msg/s" in row["reasons"]
    assert row["samples"] == sum(len(r) for r in reps)
    assert row["max_ns"] < 10**9
    runs = pd.read_csv(root / "runs.csv")
    failed = runs[runs["status"] == FAILED]
    assert len(failed) == 1 and pd.isna(failed.iloc[0]["p99_ns"])
    assert failed.iloc[0]["run_dir"] == f"runs/ring-{config_hash(PARAMS)}/r3"


def test_a_skipped_configuration_has_no_numbers(tmp_path):
    root = tmp_path / "t"
    redis = {**PARAMS, "transport": "redis"}
    write_run(root, redis, 0, values=None, status=SKIPPED, reason="redis-server is not on PATH")
    write_run(root, PARAMS, 0, values=[1000, 2000])
    aggregate([root], root)
    summary = pd.read_csv(root / "summary.csv").set_index("transport")
    assert summary.loc["redis", "status"] == SKIPPED
    assert pd.isna(summary.loc["redis", "p50_ns"])
    assert summary.loc["ring", "status"] == OK


def test_records_of_two_experiments_are_not_mixed(tmp_path):
    write_run(tmp_path / "a", PARAMS, 0, [1000], experiment="a")
    write_run(tmp_path / "b", PARAMS, 0, [1000], experiment="b")
    with pytest.raises(ValueError, match="several experiments"):
        load_records([tmp_path])


def test_the_rate_sweep_finds_the_highest_rate_meeting_the_slo(tmp_path):
    root = tmp_path / "t"
    # P99 grows with the rate; 50k misses its rate outright
    for rate, centre in ((1_000, 20_000), (10_000, 60_000), (20_000, 150_000)):
        write_run(root, {**PARAMS, "rate": rate}, 0, values=[centre] * 200)
    write_run(root, {**PARAMS, "rate": 50_000}, 0, values=[10_000] * 200, status=FAILED, reason="missed")
    aggregate([root], root, slo={"percentile": 99, "latency_us": 100})
    sustain = pd.read_csv(root / "sustainable.csv")
    assert len(sustain) == 1
    assert sustain.iloc[0]["sustainable_rate"] == 10_000
    assert sustain.iloc[0]["rates_tested"] == "1000;10000;20000;50000"
    assert sustain.iloc[0]["workload"] == "ring 64 B"


def summary_with(tmp_path, name, p99s, throughput=None):
    root = tmp_path / name
    for rep, p99 in enumerate(p99s):
        write_run(root, PARAMS, rep, values=[p99 // 2] * 99 + [p99])
    if throughput:
        tp = {**PARAMS, "rate": "max"}
        for rep, rate in enumerate(throughput):
            write_run(root, tp, rep, values=None, achieved=rate)
    aggregate([root], root)
    return root


def test_compare_flags_only_changes_beyond_the_run_to_run_spread(tmp_path):
    base = summary_with(tmp_path, "a", [100_000, 110_000, 105_000], throughput=[1e6, 1.1e6, 1.05e6])
    noisy = summary_with(tmp_path, "b", [95_000, 108_000, 112_000], throughput=[1.02e6, 1.08e6, 1.0e6])
    worse = summary_with(tmp_path, "c", [150_000, 160_000, 155_000], throughput=[0.5e6, 0.55e6, 0.52e6])
    a = load_summary(base)
    within = compare(a, load_summary(noisy))
    assert {c.verdict for c in within if c.metric in ("P99", "throughput")} == {"within spread"}
    flagged = {(c.metric, c.verdict) for c in compare(a, load_summary(worse))}
    assert ("P99", "regression") in flagged
    assert ("throughput", "regression") in flagged
    assert ("P99", "improvement") in {(c.metric, c.verdict) for c in compare(load_summary(worse), a)}


def test_report_compare_exits_1_on_a_regression(tmp_path, capsys):
    base = summary_with(tmp_path, "a", [100_000, 110_000])
    worse = summary_with(tmp_path, "c", [300_000, 320_000])
    assert main(["report", "compare", str(base), str(base)]) == 0
    assert main(["report", "compare", str(base), str(worse)]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and config_hash(PARAMS) in out
    assert main(["report", "compare", str(base), str(tmp_path / "nowhere")]) == 2
