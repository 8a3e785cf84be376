"""`nanomq bench broker`: a tiny run for real, asserting the output's structure (never a speed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nanomq.bench import brokerbench, peers_server
from nanomq.bench.drivers import Driver
from nanomq.cli import main


def test_a_tiny_run_covers_every_available_system_and_names_the_missing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "broker.json"
    args = ["bench", "broker", "--quick", "--count", "1500", "--duration", "0.2", "--json", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "targets (issue 4)" in printed
    res = json.loads(out.read_text())
    assert set(res["sections"]) == set(brokerbench.SECTIONS)
    live = [s for s in brokerbench.SYSTEMS if s not in res["unavailable"]]
    for system, why in res["unavailable"].items():
        assert f"SKIPPED — {why}" in printed
        assert all(system not in section for section in res["sections"].values())
    for system in live:
        tp = res["sections"]["throughput"][system]
        if tp["status"] == "OK":
            assert tp["sent"] == tp["received"] and tp["msgs_per_s"] > 0
        lat = res["sections"]["latency"][system]
        assert lat["sent"] == lat["received"], lat["reasons"]
        assert lat["latency_ns"]["count"] > 0
        assert res["sections"]["idle"][system]["rss_bytes"] > 1 << 20
        cpu = res["sections"]["cpu"][system]
        assert cpu["server_cpu_s"] is None or cpu["server_cpu_s"] >= 0
    assert ("nanomq" in res["sections"]["durable"]) == ("nanomq" in live)
    for key in ("latency", "latency_1k"):  # NanoMQ's fire-and-forget row beside its acks=1 row
        assert (brokerbench.ACKS0 in res["sections"][key]) == ("nanomq" in live)
    if "nanomq" in live:
        acks0 = res["sections"]["latency"][brokerbench.ACKS0]
        assert acks0["parameters"]["acks"] == 0 and acks0["sent"] == acks0["received"], acks0["reasons"]
        assert "NanoMQ broker, acks=0" in printed
    for key in ("latency", "latency_1k"):  # the floor: the same messages through a relay that parses nothing
        floor = res["sections"][key][brokerbench.RELAY]
        # OK: every message arrived, in order (no sequence errors), at the rate asked
        assert floor["status"] == "OK" and floor["sent"] == floor["received"] > 0, floor["reasons"]
        assert floor["latency_ns"]["count"] > 0 and floor["parameters"]["driver"] == "relay"
    assert "floor: relay, no parsing" in printed
    assert [t["key"] for t in res["targets"]] == list(brokerbench.TARGETS)
    assert {t["verdict"] for t in res["targets"]} <= {"PASS", "MISS", "FAILED", "n/a"}
    if "nanomq" not in live:
        assert {t["verdict"] for t in res["targets"]} == {"n/a"}


def test_bad_options_are_refused_with_the_choices(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "broker", "--systems", "kafka"])
    assert "choose from nanomq, nats, redis" in capsys.readouterr().err
    assert main(["bench", "broker", "--count", "0"]) == 2


@pytest.mark.skipif(peers_server.unavailable("nats") is not None, reason="nats-py or nats-server missing")
def test_the_server_sampler_sees_cpu_time_of_a_busy_server() -> None:
    from nanomq.bench.loadgen import run_throughput

    driver: Driver = peers_server.NatsDriver(pending_size=1 << 20)
    with brokerbench.ServerSampler(driver, interval=0.01) as sampler:
        t0 = time.perf_counter_ns()
        r = run_throughput(driver, size=64, count=20_000, mode="batch", timeout=60)
        t1 = time.perf_counter_ns()
    assert r.status == "OK", r.reasons
    assert len(sampler.points) >= 2 and sampler.max_rss() > 0
    first, last = sampler.points[0][0], sampler.points[-1][0]
    assert t0 <= first <= last <= t1
    spent = sampler.cpu_between(first, last)
    assert spent is not None and spent >= 0
    assert sampler.cpu_between(t0 - 10**12, last) is None  # outside what was sampled
