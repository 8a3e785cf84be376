"""The harness's drivers for NanoMQ's log and broker, run for real (a real log directory, a real
broker subprocess on port 0). Nothing here asserts a speed."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanomq.bench import group, loadgen, nanomq_drivers, runner
from nanomq.bench.experiment import parse_experiment

needs_log = pytest.mark.skipif(
    nanomq_drivers.log_unavailable() is not None, reason="nanomq.log not built yet"
)
needs_broker = pytest.mark.skipif(
    nanomq_drivers.broker_unavailable() is not None, reason="the broker or its clients are not built yet"
)


@needs_log
@pytest.mark.parametrize("fsync", ["never", "always"])
def test_log_driver_logs_and_hands_on_every_message(fsync: str) -> None:
    driver = nanomq_drivers.LogDriver(fsync=fsync)
    for mode in ("single", "batch"):
        r = loadgen.run_throughput(driver, size=32, count=2000, warmup=300, mode=mode, timeout=60)
        assert r.status == "OK", (mode, r.reasons)
        assert (r.sent, r.received, r.seq_errors) == (2300, 2300, 0)
    assert r.params["fsync"] == fsync


@needs_log
def test_log_driver_latency_counts_every_message() -> None:
    r = loadgen.run_latency(
        nanomq_drivers.LogDriver(fsync="never"), rate=5000, duration=0.2, warmup=0.05, size=16
    )
    assert r.sent == r.received == r.planned == 1250, r.reasons
    assert r.latency is not None and r.latency.get_total_count() == 1000


@needs_log
def test_a_log_point_runs_through_the_runner_and_refuses_two_writers(tmp_path: Path) -> None:
    grid = {
        "name": "g",
        "transport": "log",
        "fsync": "always",
        "rate": 500,
        "message_size": 16,
        "duration_s": 0.2,
        "warmup_s": 0.05,
        "repetitions": 1,
    }
    (run,) = parse_experiment({"experiment": "l", "grids": [grid]}).runs()
    record = runner.run(run.spec(), tmp_path, quiet=True)
    assert record["counts"]["lost"] == 0 and record["counts"]["received"] == 125
    assert record["loadgen"]["fsync"] == "always" and not record["notes"]
    with pytest.raises(ValueError, match="one writer"):
        parse_experiment({"experiment": "l", "grids": [{**grid, "producers": 2}]})


def test_bad_driver_settings_name_the_value() -> None:
    with pytest.raises(ValueError, match="'sometimes'"):
        nanomq_drivers.LogDriver(fsync="sometimes")
    with pytest.raises(ValueError, match="acks '2'"):
        nanomq_drivers.BrokerDriver(acks="2")


def test_an_unavailable_transport_is_skipped_with_the_reason(tmp_path: Path) -> None:
    missing = nanomq_drivers.broker_unavailable()
    if missing is None:
        pytest.skip("the broker is available here")
    (run,) = parse_experiment(
        {"experiment": "b", "grids": [{"name": "g", "transport": "broker", "repetitions": 1}]}
    ).runs()
    record = runner.run(run.spec(), tmp_path, quiet=True)
    assert record["status"] == "SKIPPED" and record["reason"] == missing


@needs_broker
@pytest.mark.parametrize("acks", [1, "all"])
def test_broker_driver_delivers_every_message(acks) -> None:
    driver = nanomq_drivers.BrokerDriver(acks=acks)
    for mode in ("single", "batch"):
        r = loadgen.run_throughput(driver, size=32, count=2000, warmup=300, mode=mode, timeout=120)
        assert r.status == "OK", (mode, r.reasons)
        assert (r.sent, r.received, r.seq_errors) == (2300, 2300, 0)


@needs_broker
def test_broker_driver_fans_out_to_two_subscribers() -> None:
    r = group.run_throughput_group(
        nanomq_drivers.BrokerDriver(), producers=2, consumers=2, size=32, count=1000, warmup=100, timeout=120
    )
    assert r.status == "OK", r.reasons
    assert r.received == 2 * r.sent and r.seq_errors == 0
