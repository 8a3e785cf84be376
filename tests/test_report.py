"""Figures and the report: every figure is drawn or skipped with a reason, and the report hides nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_aggregate import PARAMS, lognormal, write_run

from nanomq.bench import hdr
from nanomq.bench.aggregate import aggregate
from nanomq.bench.experiment import config_hash
from nanomq.bench.plots import FAMILIES, draw, spectrum_points
from nanomq.bench.records import FAILED, SKIPPED, HlogInterval, write_hlog
from nanomq.bench.report import build_report, reproduce_command


def histogram_of(values):
    h = hdr.new_histogram()
    for v in values:
        h.record_value(int(v))
    return h


def latency_run(root, params, rep, seed, hlog=True):
    values = lognormal(seed, 400, 9 + params["message_size"] / 8192 + params["rate"] / 20_000, 0.5)
    record = write_run(root, params, rep, values)
    if not hlog:
        return record
    run_dir = root / "runs" / f"{params['transport']}-{config_hash(params)}" / f"r{rep}"
    intervals = [
        HlogInterval(float(k), float(k + 1), histogram_of(values[k * 200 : (k + 1) * 200])) for k in range(2)
    ]
    write_hlog(run_dir / "latency.hlog", intervals, start_time=1.7e9, metric="latency", warmup_s=0.5)
    return record


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Results with variation along every axis a figure needs, one FAILED and one SKIPPED configuration."""
    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "results" / "t"
    seed = 0
    for transport in ("ring", "mp_queue"):
        for rate, size in ((1_000, 64), (10_000, 64), (10_000, 1024)):
            for rep in range(2):
                seed += 1
                params = {**PARAMS, "transport": transport, "rate": rate, "message_size": size}
                # .hlog files for the ring's runs only: enough timelines, fewer seconds drawing them
                latency_run(root, params, rep, seed, hlog=transport == "ring")
        for batch in (1, 256):
            for rep in range(2):
                params = {**PARAMS, "transport": transport, "rate": "max", "batch_size": batch}
                write_run(
                    root,
                    params,
                    rep,
                    values=None,
                    achieved=(3e5 if transport == "ring" else 8e4) * batch**0.5,
                )
    failed = {**PARAMS, "rate": 50_000}
    write_run(
        root,
        failed,
        0,
        values=[5_000] * 10,
        status=FAILED,
        reason="achieved 31,000 msg/s, more than 1% below",
    )
    skipped = {**PARAMS, "transport": "redis"}
    write_run(root, skipped, 0, values=None, status=SKIPPED, reason="redis-server is not on PATH")
    aggregate([root], root, slo={"percentile": 99, "latency_us": 500})
    figures = tmp / "reports" / "t" / "figures"
    manifests = {family: draw(family, root, figures / family) for family in FAMILIES}
    paths = build_report(root, figures, tmp / "reports" / "t", command="make report")
    return {
        "root": root,
        "figures": figures,
        "manifests": manifests,
        "paths": paths,
        "failed": config_hash(failed),
        "skipped": config_hash(skipped),
    }


def test_every_family_draws_png_and_svg_tied_to_its_runs(experiment):
    for family, manifest in experiment["manifests"].items():
        assert manifest["figures"], f"{family}: {manifest['skipped']}"
        for fig in manifest["figures"]:
            for key in ("png", "svg"):
                path = experiment["figures"] / family / fig[key]
                assert path.stat().st_size > 1000, path
            assert fig["config_hashes"] and fig["run_ids"]
        on_disk = json.loads((experiment["figures"] / family / "figures.json").read_text())
        assert on_disk == manifest


def test_failed_and_skipped_configurations_are_never_plotted_as_results(experiment):
    for family, manifest in experiment["manifests"].items():
        plotted = {h for fig in manifest["figures"] for h in fig["config_hashes"]}
        assert experiment["skipped"] not in plotted
        if family != "timeline":  # the timeline shows a failed run's stalls, marked FAILED
            assert experiment["failed"] not in plotted, family
            assert experiment["failed"] in {e["config_hash"] for e in manifest["excluded"]}


def test_a_family_without_variation_is_skipped_with_the_reason(tmp_path):
    root = tmp_path / "t"
    latency_run(root, PARAMS, 0, 1)
    aggregate([root], root)
    for family, reason in (
        ("vs_size", "varies the message size"),
        ("vs_rate", "varies the rate"),
        ("batch", "varies the batch size"),
        ("peers", "both a NanoMQ transport and a peer"),
    ):
        manifest = draw(family, root, tmp_path / family)
        assert manifest["figures"] == [] and reason in manifest["skipped"]
        assert not list((tmp_path / family).glob("*.png"))
    assert draw("spectrum", root, tmp_path / "spectrum")["figures"]


def test_the_spectrum_reaches_the_max_on_a_log_axis():
    h = histogram_of(range(1, 10_001))
    xs, ys = spectrum_points(h)
    assert xs[0] == 1.0 and xs == sorted(xs)
    assert ys == sorted(ys)
    assert ys[-1] == h.get_max_value()
    assert xs[-2] == pytest.approx(10_000)  # 1/(1-p) at p = 1 - 1/count


def test_the_report_lists_environment_results_failures_and_every_figure(experiment):
    md = experiment["paths"]["md"].read_text()
    report_dir = experiment["paths"]["md"].parent
    for heading in (
        "## Reproduce",
        "## Environment",
        "## Results",
        "## FAILED and SKIPPED runs",
        "## Figures",
    ):
        assert heading in md
    assert "make report" in md
    assert "test-node" in md
    # every configuration appears with its hash; the failed and skipped ones with their reasons
    summary_hashes = set(re.findall(r"\| ([0-9a-f]{12}) \|", md))
    assert experiment["failed"] in summary_hashes and experiment["skipped"] in summary_hashes
    assert f"ring-{experiment['failed']}-r0" in md and "achieved 31,000 msg/s" in md
    assert "redis-server is not on PATH" in md and "SKIPPED" in md
    # every figure is embedded, exists, and names the runs that made it
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    expected = sum(len(m["figures"]) for m in experiment["manifests"].values())
    assert len(images) == expected
    for rel in images:
        assert (report_dir / rel).exists(), rel
    for manifest in experiment["manifests"].values():
        for fig in manifest["figures"]:
            assert ", ".join(fig["run_ids"]) in md
    assert "## Sustainable throughput" in md


def test_the_html_report_says_the_same(experiment):
    html = experiment["paths"]["html"].read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert f'class="{FAILED}"' in html and f'class="{SKIPPED}"' in html
    assert len(re.findall(r'<img src="figures/', html)) == len(
        re.findall(r"!\[", experiment["paths"]["md"].read_text())
    )


def test_the_reproduce_command_is_make_report_for_the_default_experiment():
    assert reproduce_command("experiments/default.yaml") == "make report"
    assert reproduce_command("experiments/full.yaml") == "make report EXPERIMENT=experiments/full.yaml"


def test_report_build_from_the_command_line(experiment, tmp_path):
    from nanomq.cli import main

    out = tmp_path / "r"
    assert (
        main(
            [
                "report",
                "build",
                "--results",
                str(experiment["root"]),
                "--figures",
                str(experiment["figures"]),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "report.md").exists() and (out / "report.html").exists()
    assert Path(out / "report.md").read_text().count("![") == sum(
        len(m["figures"]) for m in experiment["manifests"].values()
    )
