"""The server-based peers (NATS, Redis) through the load generator, against real private servers.

Skipped where a server binary or client is missing (the runner records such runs as SKIPPED).
Nothing here asserts a speed: every message is accounted for.
"""

from __future__ import annotations

import pytest

from nanomq.bench import loadgen, peers_server


def _peers() -> list:
    out = []
    for name in ("nats", "redis"):
        why = peers_server.unavailable(name)
        out.append(pytest.param(name, marks=pytest.mark.skipif(why is not None, reason=why or "")))
    return out


@pytest.mark.parametrize("name", _peers())
def test_peer_throughput_accounts_for_every_message(name: str) -> None:
    for mode in ("single", "batch"):
        r = loadgen.run_throughput(
            peers_server.make_driver(name), size=32, count=3000, warmup=256, mode=mode, timeout=60
        )
        assert r.status == "OK", (mode, r.reasons)
        assert (r.sent, r.received, r.seq_errors) == (3256, 3256, 0)


@pytest.mark.parametrize("name", _peers())
def test_peer_latency_accounts_for_every_message(name: str) -> None:
    r = loadgen.run_latency(peers_server.make_driver(name), rate=2000, duration=0.25, warmup=0.05, size=16)
    assert r.sent == r.received == r.planned == 600, r.reasons
    assert r.seq_errors == 0
    assert r.latency is not None and r.latency.get_total_count() == 500


@pytest.mark.skipif(peers_server.unavailable("nats") is not None, reason="nats-py or nats-server missing")
def test_nats_batching_buffer_is_a_driver_option() -> None:
    driver = peers_server.NatsDriver(pending_size=1 << 20)
    assert driver.params()["pending_size"] == 1 << 20
    r = loadgen.run_throughput(driver, size=64, count=2000, warmup=256, mode="batch", timeout=60)
    assert r.status == "OK", r.reasons


def test_a_server_driver_reports_its_server_pid_only_while_it_runs() -> None:
    name = next((n for n in ("nats", "redis") if peers_server.unavailable(n) is None), None)
    if name is None:
        pytest.skip("neither nats nor redis is available")
    import multiprocessing

    import psutil

    driver = peers_server.make_driver(name)
    assert driver.server_pid() is None
    driver.setup(multiprocessing.get_context("fork"), 64)
    try:
        pid = driver.server_pid()
        assert pid is not None and psutil.Process(pid).is_running()
    finally:
        driver.teardown()
    assert driver.server_pid() is None and not psutil.pid_exists(pid)


@pytest.mark.skipif(peers_server.unavailable("nats") is not None, reason="nats-py or nats-server missing")
@pytest.mark.parametrize("sync_always", [True, False])
def test_jetstream_stores_and_delivers_every_message(sync_always: bool) -> None:
    driver = peers_server.NatsJetStreamDriver(sync_always=sync_always)
    r = loadgen.run_throughput(driver, size=64, count=512, warmup=256, mode="batch", timeout=120)
    assert r.status == "OK", r.reasons
    assert (r.sent, r.received, r.seq_errors) == (768, 768, 0)
    assert r.params["sync_interval"] == ("always" if sync_always else "default (2 min)")
