"""Several producers and consumers (nanomq.bench.group): every message accounted for, for real.

Work queues (multiprocessing.Queue, faster_fifo) deliver each message to one consumer;
pub/sub peers (NATS) deliver every message to every consumer. Nothing here asserts a speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nanomq.bench import drivers, group, peers_server, runner
from nanomq.bench.experiment import parse_experiment


def _work_queues() -> list[drivers.Driver]:
    out: list[drivers.Driver] = [drivers.MpQueueDriver()]
    if drivers.faster_fifo_available():
        out.append(drivers.FasterFifoDriver())
    return out


@pytest.mark.parametrize("driver", _work_queues(), ids=lambda d: d.name)
@pytest.mark.parametrize(("producers", "consumers"), [(2, 1), (1, 3), (3, 2)])
@pytest.mark.parametrize("mode", ["single", "batch"])
def test_a_work_queue_delivers_every_message_once(driver, producers: int, consumers: int, mode: str) -> None:
    r = group.run_throughput_group(
        driver,
        producers=producers,
        consumers=consumers,
        size=24,
        count=3000,
        warmup=300,
        mode=mode,
        timeout=60,
    )
    assert r.status == "OK", r.reasons
    assert r.sent == r.received == r.params["expected"] >= 3300
    assert r.seq_errors == 0 and r.rate > 0
    assert r.params["delivery"] == ("work queue" if consumers > 1 else "fan-in")
    assert (r.params["producers"], r.params["consumers"]) == (producers, consumers)


def test_latency_with_two_producers_shares_one_schedule() -> None:
    r = group.run_latency_group(
        drivers.MpQueueDriver(), producers=2, consumers=2, rate=4000, duration=0.25, warmup=0.05, size=16
    )
    assert r.sent == r.received == r.planned == 200 + 1000, r.reasons
    assert r.seq_errors == 0
    assert r.latency is not None and r.latency.get_total_count() == 1000
    assert r.lag is not None and r.lag.get_total_count() == 1000
    assert r.latency_intervals and sum(h.get_total_count() for h in r.latency_intervals) == r.planned
    assert r.start_ns


@pytest.mark.skipif(peers_server.unavailable("nats") is not None, reason="nats-py or nats-server missing")
def test_nats_fans_out_every_message_to_every_consumer() -> None:
    driver = peers_server.NatsDriver()
    r = group.run_throughput_group(
        driver, producers=2, consumers=2, size=32, count=2000, warmup=200, timeout=60
    )
    assert r.status == "OK", r.reasons
    assert r.params["delivery"] == "fan-out"
    assert r.received == 2 * r.sent == r.params["expected"]
    assert r.seq_errors == 0


@pytest.mark.skipif(not drivers.zmq_available(), reason="pyzmq is not installed")
@pytest.mark.parametrize("mode", ["single", "batch"])
def test_zmq_fans_in_from_three_producers_and_confirms_each_close(mode: str) -> None:
    r = group.run_throughput_group(
        drivers.ZmqDriver(), producers=3, consumers=1, size=24, count=3000, warmup=300, mode=mode, timeout=60
    )
    assert r.status == "OK", r.reasons
    assert r.sent == r.received == r.params["expected"] >= 3300
    assert r.seq_errors == 0 and r.params["delivery"] == "fan-in"


def test_zmq_still_runs_one_pair_and_refuses_a_second_consumer() -> None:
    from nanomq.bench import loadgen

    r = loadgen.run_throughput(drivers.ZmqDriver(), size=24, count=2000, warmup=200, timeout=60)
    assert r.status == "OK" and r.received == 2200, r.reasons
    with pytest.raises(ValueError, match="at most 64 producers and 1 consumers, not 1 and 2"):
        group.check_group(drivers.ZmqDriver(), 1, 2)


def test_the_ring_refuses_a_second_producer_with_the_limit() -> None:
    with pytest.raises(ValueError, match="at most 1 producers and 1 consumers, not 2 and 1"):
        group.run_throughput_group(drivers.RingDriver("spin"), producers=2, consumers=1, count=10)
    with pytest.raises(ValueError, match="at most 64"):
        group.check_group(drivers.MpQueueDriver(), 65, 1)


def test_a_point_with_two_producers_runs_through_the_runner(tmp_path: Path) -> None:
    exp = parse_experiment(
        {
            "experiment": "g",
            "grids": [
                {
                    "name": "g",
                    "transport": "mp_queue",
                    "producers": 2,
                    "consumers": 2,
                    "rate": 2000,
                    "message_size": 16,
                    "duration_s": 0.3,
                    "warmup_s": 0.1,
                    "repetitions": 1,
                }
            ],
        }
    )
    (run,) = exp.runs()
    record = runner.run(run.spec(), tmp_path, quiet=True)
    counts = record["counts"]
    assert counts["sent"] == counts["received"] == counts["expected"] == 800
    assert counts["lost"] == counts["duplicated"] == counts["seq_errors"] == 0
    assert record["loadgen"]["producers"] == 2 and record["loadgen"]["delivery"] == "work queue"
    assert record["latency"]["count"] == 600
    assert (tmp_path / "latency.hlog").exists()
