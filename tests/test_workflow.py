"""The workflow as CI runs it: lint, dry runs of the shipped experiments, then a tiny real run.

Every Snakemake call runs in a temporary directory (--directory), so no result, report
or .snakemake/ state lands in the checkout.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nanomq.bench.experiment import load_experiment
from nanomq.bench.records import FAILED, OK, read_hlog, read_record

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
TINY = ROOT / "tests" / "data" / "tiny.yaml"

pytestmark = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import snakemake"], capture_output=True).returncode != 0,
    reason="snakemake is not installed (pip install -e '.[dev]')",
)


def snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        output = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        pytest.fail(f"snakemake {' '.join(args)} exited {proc.returncode}:\n{output}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_the_workflow_lints_clean_but_for_conda(tmp_path):
    proc = snakemake(tmp_path, "--lint", check=False)
    lints = re.findall(r"^    \* (.+)$", proc.stdout + proc.stderr, re.M)
    assert lints, proc.stdout + proc.stderr  # the linter ran on every rule
    # we install with pip into a venv, so the one lint left is the conda/container advice
    assert {lint for lint in lints if not lint.startswith("Specify a conda environment")} == set()


@pytest.mark.parametrize("name", ["default.yaml", "full.yaml"])
def test_dry_run_schedules_every_run_of_the_experiment(tmp_path, name):
    args = ["-n", "--cores", "2"] + (
        [] if name == "default.yaml" else ["--configfile", str(ROOT / "experiments" / name)]
    )
    proc = snakemake(tmp_path, *args)
    counts = job_counts(proc.stdout)
    runs = len(load_experiment(ROOT / "experiments" / name).runs())
    assert counts["measure"] == runs
    assert counts["aggregate"] == 1 and counts["report"] == 1 and counts["plot"] == 7
    assert not list(tmp_path.glob("results/*/runs/*"))  # a dry run measured nothing


def test_the_slurm_profile_submits_each_measurement_to_a_node_of_its_own(tmp_path):
    import yaml

    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert "--exclusive" in profile["set-resources"]["measure"]["slurm_extra"]
    assert profile["set-resources"]["measure"]["cpus_per_task"] >= 2
    # measurements run side by side on separate nodes: the global slot only caps how many
    assert profile["resources"] == [f"bench_slot={profile['jobs']}"]
    if subprocess.run([sys.executable, "-c", "import snakemake_executor_plugin_slurm"]).returncode != 0:
        pytest.skip("snakemake-executor-plugin-slurm is not installed: the profile was read, not dry-run")
    proc = snakemake(tmp_path, "-n", "--workflow-profile", str(ROOT / "profiles" / "slurm"))
    counts = job_counts(proc.stdout)
    assert counts["measure"] == len(load_experiment(ROOT / "experiments" / "default.yaml").runs())
    assert re.search(r"^localrules:\n(    \w+,\n)+", SNAKEFILE.read_text(), re.M)  # light jobs stay home


def test_a_misspelt_key_stops_the_workflow_and_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("duration_s: 1\n", "duraton_s: 1\n", 1))
    proc = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(bad), check=False)
    assert proc.returncode != 0
    assert "duraton_s" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    proc = snakemake(workdir, "--cores", "2", "--resources", "bench_slot=1", "--configfile", str(TINY))
    return workdir, proc.stdout + proc.stderr


def test_a_tiny_experiment_runs_end_to_end(tiny_run):
    workdir, log = tiny_run
    results = workdir / "results" / "tiny"
    records = sorted(results.glob("runs/*/r*/record.json"))
    assert len(records) == 3
    statuses = sorted(read_record(p)["status"] for p in records)
    assert statuses == [FAILED, OK, OK]
    for p in records:
        if read_record(p)["status"] == OK:
            assert sum(iv.histogram.get_total_count() for iv in read_hlog(p.parent / "latency.hlog")) > 0
    summary = pd.read_csv(results / "summary.csv")
    assert len(summary) == 3 and set(summary["status"]) == {OK, FAILED}
    assert len(pd.read_csv(results / "runs.csv")) == 3
    assert "OK:" in log and "FAILED:" in log and "of 13 steps" in log  # progress shows as it runs


def test_the_tiny_report_has_its_figures_and_lists_the_failed_run(tiny_run):
    workdir, _ = tiny_run
    report = workdir / "reports" / "tiny"
    md = (report / "report.md").read_text()
    assert (report / "report.html").exists()
    failed = json.loads(next((workdir / "results" / "tiny").glob("runs/ring-*/r0/record.json")).read_text())
    failed_ids = [
        read_record(p)["run_id"]
        for p in (workdir / "results" / "tiny").glob("runs/*/r0/record.json")
        if read_record(p)["status"] == FAILED
    ]
    assert failed_ids and all(run_id in md for run_id in failed_ids)
    assert "## FAILED and SKIPPED runs" in md and "below 99 %" in md
    assert "make report EXPERIMENT=tests/data/tiny.yaml" in md
    pngs = re.findall(r"\]\((figures/[^)]+\.png)\)", md)
    assert any("/spectrum/" in p for p in pngs) and any("/timeline/" in p for p in pngs)
    assert any("/peers/" in p for p in pngs)  # ring and multiprocessing.Queue ran the same workload
    for rel in pngs:
        assert (report / rel).stat().st_size > 1000
    assert failed["environment"]["node"]


MEASURE_SOURCES = ("nanomq/**/*.py", "csrc/*.c", "csrc/*.h")


def _sources_newer_than(path: Path) -> list[str]:
    """Package and C sources modified after `path` (the measure rule depends on them)."""
    since = path.stat().st_mtime
    return sorted(
        str(p.relative_to(ROOT)) for g in MEASURE_SOURCES for p in ROOT.glob(g) if p.stat().st_mtime > since
    )


def test_a_finished_workflow_is_not_repeated_and_a_new_point_runs_alone(tiny_run, tmp_path):
    workdir, _ = tiny_run
    oldest = min(workdir.glob("results/tiny/runs/*/r*/record.json"), key=lambda p: p.stat().st_mtime)
    changed = _sources_newer_than(oldest)
    if changed:  # a shared working tree where someone edits the package while this runs
        pytest.skip(f"measurement sources changed since the runs, so re-running them is right: {changed[:3]}")
    again = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(TINY))
    assert "Nothing to be done" in again.stdout + again.stderr
    grown = tmp_path / "tiny.yaml"
    grown.write_text(TINY.read_text() + "  - name: more\n    transport: faster_fifo\n    rate: 2000\n")
    shutil.copy(grown, workdir / "tiny.yaml")
    proc = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(workdir / "tiny.yaml"))
    assert job_counts(proc.stdout)["measure"] == 1


def test_snakemake_report_works_on_the_finished_run(tiny_run):
    workdir, _ = tiny_run
    out = workdir / "snakemake-report.html"
    snakemake(workdir, "--cores", "1", "--configfile", str(TINY), "--report", str(out))
    assert out.stat().st_size > 10_000
