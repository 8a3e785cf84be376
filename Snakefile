"""NanoMQ's experiment workflow: measure every run of an experiment, aggregate, draw, report.

    make report                                  # experiments/default.yaml, in .venv
    make report EXPERIMENT=experiments/full.yaml
    snakemake --cores 2 [--configfile experiments/full.yaml]   # profiles/default adds the rest
    snakemake -n                                 # what would run
    snakemake --report report.html               # Snakemake's own report of a finished run

Table of contents (each rule is one `nanomq` command; all logic is in nanomq.bench):
    measure    one repetition of one configuration -> results/<exp>/runs/<transport>-<hash>/r<k>/
    aggregate  every record -> results/<exp>/{summary,runs,sustainable}.csv, merged.json
    plot       one figure family -> reports/<exp>/figures/<family>/ (families drawn in parallel)
    report     tables + figures -> reports/<exp>/report.md and report.html

Measurements never overlap: each holds the global resource bench_slot (1 unless
--resources says otherwise). The workflow profile profiles/default (read by Snakemake on
its own) selects the greedy scheduler: the default ILP scheduler solves its job selection
again while a measurement runs, and on 2 cores that solver was the third busy process that
took the ring's P50 at 10k msg/s from ≈ 2 µs to ≈ 380 µs. Incremental: a run's directory is named by the hash of its
parameters, so a changed configuration is a new run and an unchanged one is kept; each
rule also depends on the source files that shape its output, so a run is repeated when
the measurement code changes and a figure is redrawn when the plotting code does.
"""

import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

if not config:
    configfile: os.path.join(workflow.basedir, "experiments", "default.yaml")


from nanomq.bench.experiment import parse_experiment
from nanomq.bench.plots import FAMILIES

ROOT = Path(workflow.basedir)
CONFIG_FILE = Path(workflow.configfiles[-1]).resolve() if workflow.configfiles else None
EXPERIMENT_FILE = (
    (CONFIG_FILE.relative_to(ROOT).as_posix() if CONFIG_FILE.is_relative_to(ROOT) else str(CONFIG_FILE))
    if CONFIG_FILE
    else None
)
# nanomq's check first (it names a misspelt key and suggests the right one), then Snakemake's
EXP = parse_experiment(config, source=EXPERIMENT_FILE)
validate(config, os.path.join(workflow.basedir, "experiments", "schema.yaml"))
NAME = EXP.name
RESULTS = f"results/{NAME}"
REPORTS = f"reports/{NAME}"
RUNS = {run.relpath: run for run in EXP.runs()}
NANOMQ = f"{shlex.quote(sys.executable)} -m nanomq.cli"
SLO = f"--slo {EXP.slo['percentile']}:{EXP.slo['latency_us']}" if EXP.slo else ""
REPRODUCE = (
    "make report"
    if EXPERIMENT_FILE in (None, "experiments/default.yaml")
    else f"make report EXPERIMENT={EXPERIMENT_FILE}"
)

if "bench_slot" not in workflow.global_resources:
    workflow.register_resource("bench_slot", 1)  # measurements stay serial without --resources too


def code(*names):
    """Source files a rule's output depends on (a newer one re-runs the rule)."""
    files = []
    for name in names:
        files += sorted(str(p) for p in ROOT.glob(name))
    return files


MEASURE_CODE = code(
    "nanomq/_ffi.py",
    "nanomq/ring.py",
    "csrc/*.c",
    "csrc/*.h",
    "nanomq/bench/runner.py",
    "nanomq/bench/loadgen.py",
    "nanomq/bench/drivers.py",
    "nanomq/bench/peers_server.py",
    "nanomq/bench/hdr.py",
    "nanomq/bench/records.py",
    "nanomq/bench/envinfo.py",
    "nanomq/bench/group.py",
    "nanomq/bench/nanomq_drivers.py",
    "nanomq/record.py",
    "nanomq/log/*.py",
    "nanomq/protocol.py",
    "nanomq/broker/*.py",
    "nanomq/client/*.py",
)


def run_spec(wildcards):
    """The measurement's whole input, as JSON: only what defines the run. A new grid, a
    reworded description or another path to the experiment file must not re-run it."""
    run = RUNS[f"{wildcards.experiment}/runs/{wildcards.point}/r{wildcards.rep}"]
    return json.dumps(run.spec(), sort_keys=True)


wildcard_constraints:
    experiment=NAME,
    point=r"[A-Za-z0-9_]+-[0-9a-f]{12}",
    rep=r"\d+",


# Light jobs stay on the submitting host under a cluster executor (profiles/slurm): only
# measurements are worth a node of their own.
localrules:
    all,
    aggregate,
    plot,
    report,


rule all:
    default_target: True
    input:
        f"{REPORTS}/report.md",
        f"{REPORTS}/report.html",


rule measure:
    message:
        "measure {wildcards.point} repetition {wildcards.rep}"
    input:
        MEASURE_CODE,
    output:
        record="results/{experiment}/runs/{point}/r{rep}/record.json",
    log:
        "results/{experiment}/runs/{point}/r{rep}/run.log",
    params:
        nanomq=NANOMQ,
        spec=run_spec,
        out=lambda wildcards, output: os.path.dirname(output.record),
    resources:
        bench_slot=1,
    shell:
        "{params.nanomq} bench run --spec {params.spec:q} --out {params.out} 2>&1 | tee {log}"


rule aggregate:
    input:
        records=[f"results/{path}/record.json" for path in RUNS],
        code=code("nanomq/bench/aggregate.py", "nanomq/bench/hdr.py"),
    output:
        summary=report(f"{RESULTS}/summary.csv", category="Tables", labels={"table": "per configuration"}),
        runs=report(f"{RESULTS}/runs.csv", category="Tables", labels={"table": "per run"}),
        sustainable=f"{RESULTS}/sustainable.csv",
        merged=f"{RESULTS}/merged.json",
    log:
        f"{RESULTS}/aggregate.log",
    params:
        nanomq=NANOMQ,
        out=lambda wildcards, output: os.path.dirname(output.summary),
        slo=SLO,
    shell:
        "{params.nanomq} report aggregate {input.records:q} --out {params.out} {params.slo} > {log} 2>&1"


rule plot:
    input:
        rules.aggregate.output.summary,
        rules.aggregate.output.runs,
        rules.aggregate.output.merged,
        code("nanomq/bench/plots.py"),
    output:
        report(
            directory(f"{REPORTS}/figures/{{family}}"),
            patterns=["{name}.png"],
            category="Figures",
            subcategory="{family}",
            labels={"figure": "{name}"},
        ),
    log:
        f"{REPORTS}/logs/plot-{{family}}.log",
    params:
        nanomq=NANOMQ,
        results=lambda wildcards, input: os.path.dirname(input[0]),
    wildcard_constraints:
        family="|".join(FAMILIES),
    shell:
        "{params.nanomq} report plot {wildcards.family} --results {params.results} --out {output} > {log} 2>&1"


rule report:
    input:
        tables=rules.aggregate.output,
        figures=expand(f"{REPORTS}/figures/{{family}}", family=FAMILIES),
        code=code("nanomq/bench/report.py"),
    output:
        md=f"{REPORTS}/report.md",
        html=report(f"{REPORTS}/report.html", category="Report", labels={"file": "report.html"}),
    log:
        f"{REPORTS}/logs/report.log",
    params:
        nanomq=NANOMQ,
        results=lambda wildcards, input: os.path.dirname(input.tables[0]),
        figures=lambda wildcards, input: os.path.dirname(input.figures[0]),
        out=lambda wildcards, output: os.path.dirname(output.md),
        experiment=f"--experiment {shlex.quote(str(CONFIG_FILE))}" if CONFIG_FILE else "",
        command=REPRODUCE,
    shell:
        "{params.nanomq} report build --results {params.results} --figures {params.figures} "
        "--out {params.out} {params.experiment} --command {params.command:q} > {log} 2>&1"
