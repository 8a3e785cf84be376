"""Experiment files: the schema refuses what it does not know, and grids expand into stable points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from nanomq.bench.experiment import (
    FAN_IN_TRANSPORTS,
    MULTI_TRANSPORTS,
    ExperimentError,
    config_hash,
    load_experiment,
    parse_experiment,
    schema_path,
)

ROOT = Path(__file__).resolve().parents[1]
DEV_TRANSPORTS = {"ring", "ring_c", "log", "broker", "mp_queue", "faster_fifo", "zmq"}
"""The transports that need nothing beyond the dev install."""


def parse(text: str):
    return parse_experiment(yaml.safe_load(text), source="test.yaml")


def error_of(text: str) -> str:
    with pytest.raises(ExperimentError) as info:
        parse(text)
    return str(info.value)


BASE = """
experiment: t
grids:
  - name: g
    transport: [ring, mp_queue]
    rate: [1000, max]
"""


@pytest.mark.parametrize("name", ["default.yaml", "full.yaml"])
def test_shipped_experiments_are_valid_and_expand(name):
    exp = load_experiment(ROOT / "experiments" / name)
    assert exp.name == name.removesuffix(".yaml")
    assert exp.points
    hashes = [p.config_hash for p in exp.points]
    assert len(hashes) == len(set(hashes))
    assert {p.transport for p in exp.points} >= {"ring", "ring_c", "mp_queue", "faster_fifo", "zmq"}


def test_default_experiment_needs_only_the_dev_install():
    exp = load_experiment(ROOT / "experiments" / "default.yaml")
    assert {p.transport for p in exp.points} <= DEV_TRANSPORTS


def test_a_misspelt_key_in_a_grid_is_refused_by_name():
    message = error_of(BASE.replace("rate:", "rat:"))
    assert "'rat'" in message
    assert "grids[0]" in message
    assert "did you mean 'rate'" in message


def test_a_misspelt_key_in_defaults_or_at_the_top_is_refused_by_name():
    assert "'duraton_s'" in error_of("defaults: {duraton_s: 1}\n" + BASE)
    assert "'grid'" in error_of(BASE.replace("grids:", "grid:"))
    assert "'percentil'" in error_of("slo: {percentil: 99, latency_us: 5}\n" + BASE)


def test_the_experiment_file_loader_names_the_unknown_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(BASE.replace("transport:", "transprot:"))
    with pytest.raises(ExperimentError, match=r"typo\.yaml.*'transprot'"):
        load_experiment(path)


def test_wrong_types_and_values_are_refused_with_their_place():
    assert "grids[0].rate" in error_of(BASE.replace("[1000, max]", "fast"))
    assert "grids[0].message_size" in error_of(BASE + "    message_size: '64'\n")
    assert "grids[0].transport" in error_of(BASE.replace("mp_queue", "carrier_pigeon"))
    assert "minimum" in error_of(BASE + "    message_size: 8\n")


def test_empty_experiments_and_grids_are_refused():
    assert "empty" in error_of("")
    assert "grids is empty" in error_of("experiment: t\ngrids: []\n")
    assert "sets no parameter" in error_of("experiment: t\ngrids: [{name: g}]\n")
    assert "grids[0].rate is empty" in error_of(BASE.replace("[1000, max]", "[]"))
    assert "missing required key 'experiment'" in error_of("grids: [{name: g, transport: ring}]\n")


def test_combinations_the_load_generator_cannot_run_are_refused_at_load_time():
    assert "open-loop" in error_of(BASE + "    batch_size: 4\n")
    assert "one message per call or 256" in error_of(
        "experiment: t\ngrids: [{name: g, transport: ring, rate: max, batch_size: 8}]\n"
    )
    # the SPSC ring refuses several producers or consumers, naming the transport and who takes them
    msg = error_of(BASE + "    producers: 2\n")
    assert "single-producer single-consumer" in msg and "transport ring" in msg and "mp_queue" in msg
    assert "one consumer" in error_of("experiment: t\ngrids: [{name: g, transport: zmq, consumers: 2}]\n")
    parse("experiment: t\ngrids: [{name: g, transport: zmq, producers: 3}]\n")  # fan-in
    exp = parse(
        "experiment: t\ngrids: [{name: g, transport: [mp_queue, nats], producers: 2, consumers: [1, 3]}]\n"
    )
    assert {(p.transport, p.parameters["consumers"]) for p in exp.points} == {
        (t, c) for t in ("mp_queue", "nats") for c in (1, 3)
    }
    assert all("2p" in p.label for p in exp.points)
    # ring_c drives any batch size in C
    parse("experiment: t\ngrids: [{name: g, transport: ring_c, rate: max, batch_size: 8}]\n")


def test_a_grid_expands_into_the_product_of_its_axes_over_the_defaults():
    exp = parse("defaults: {repetitions: 2, message_size: 128}\n" + BASE)
    assert len(exp.points) == 4
    assert {(p.transport, p.parameters["rate"]) for p in exp.points} == {
        ("ring", 1000),
        ("ring", "max"),
        ("mp_queue", 1000),
        ("mp_queue", "max"),
    }
    assert all(p.parameters["message_size"] == 128 for p in exp.points)
    assert all(p.repetitions == 2 for p in exp.points)
    assert [p.mode for p in exp.points].count("throughput") == 2
    runs = exp.runs()
    assert len(runs) == 8
    assert len({r.run_id for r in runs}) == 8
    assert len({r.relpath for r in runs}) == 8


def test_the_config_hash_is_stable_and_covers_every_parameter_but_repetitions():
    a = parse(BASE).points
    b = parse("defaults: {repetitions: 7}\n" + BASE).points
    assert [p.config_hash for p in a] == [p.config_hash for p in b]
    c = parse("defaults: {duration_s: 2.5}\n" + BASE).points
    assert not {p.config_hash for p in a} & {p.config_hash for p in c}
    d = parse(BASE + "    options: {capacity: 65536}\n").points
    assert not {p.config_hash for p in a} & {p.config_hash for p in d}
    # key order and numpy scalars (what Snakemake's Paramspace hands out) do not matter
    params = dict(a[0].parameters)
    shuffled = dict(reversed(list(params.items())))
    numpyish = {
        k: (np.int64(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in params.items()
    }
    assert config_hash(shuffled) == config_hash(params) == config_hash(numpyish) == a[0].config_hash


def test_a_point_in_two_grids_is_one_configuration():
    exp = parse(
        BASE
        + """  - name: h
    transport: ring
    rate: 1000
    repetitions: 5
"""
    )
    assert len(exp.points) == 4
    shared = exp.point(next(p.config_hash for p in exp.points if p.grids == ("g", "h")))
    assert shared.repetitions == 5


def test_run_specs_do_not_carry_what_must_not_invalidate_a_run():
    exp = parse(BASE)
    spec = exp.runs()[0].spec("experiments/x.yaml")
    assert set(spec) == {"experiment", "experiment_file", "config_hash", "run_id", "repetition", "parameters"}


def test_the_schema_lists_exactly_the_transports_the_runner_drives():
    from nanomq.bench import runner

    schema = yaml.safe_load(schema_path().read_text())
    listed = set(schema["$defs"]["transport"]["enum"])
    assert listed == DEV_TRANSPORTS | {"nats", "redis", "stall"}
    for transport in listed - {"ring_c"}:
        params = {"transport": transport, "wait": "spin", "options": {}, "pin": True}
        try:
            driver = runner.make_driver(params)
        except runner.TransportUnavailable:
            continue  # an optional peer not installed here: the runner knows it, which is the point
        assert hasattr(driver, "producer") and hasattr(driver, "consumer")
        # the experiment check and the drivers agree on who takes several producers and consumers
        assert (driver.max_producers > 1 and driver.max_consumers > 1) == (transport in MULTI_TRANSPORTS)
        assert (driver.max_producers > 1 and driver.max_consumers == 1) == (transport in FAN_IN_TRANSPORTS)
