"""The `nanomq` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `nanomq` and its subcommands."""
    parser = argparse.ArgumentParser(prog="nanomq", description="NanoMQ: microsecond messaging for Python.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser("bench", help="run a benchmark and print NanoMQ beside its peers")
    bench_sub = bench.add_subparsers(dest="target", required=True, metavar="TARGET")
    from nanomq.bench import ring as ring_bench

    ring_bench.add_arguments(bench_sub.add_parser("ring", help="the shared-memory ring against its peers"))
    from nanomq.bench import logbench

    logbench.add_arguments(
        bench_sub.add_parser("log", help="the write-ahead log against write()/fdatasync and SQLite")
    )
    from nanomq.bench import brokerbench

    brokerbench.add_arguments(
        bench_sub.add_parser("broker", help="the broker and its clients against NATS and Redis")
    )
    _add_bench_run(bench_sub)
    _add_bench_list(bench_sub)
    _add_report(sub)
    from nanomq import cli_client

    cli_client.add_commands(sub)
    return parser


# ------------------------------------------------------------------ bench ----


def _add_bench_run(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "run",
        help="run one experiment point and write its record.json and .hlog files",
        description="Run one repetition of one configuration of an experiment (what one workflow job does). "
        "Give the experiment file with --config and --repetition, or the run spec as JSON with --spec.",
    )
    p.add_argument("experiment", nargs="?", help="experiment YAML file (with --config)")
    p.add_argument("--config", metavar="HASH", help="config hash (or <transport>-<hash>) of the point to run")
    p.add_argument("--repetition", type=int, default=0, help="repetition index (default 0)")
    p.add_argument("--spec", metavar="JSON", help="the run spec as JSON (what the Snakefile passes)")
    p.add_argument(
        "--out", metavar="DIR", help="directory for the run's files (default results/<run's relative path>)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_bench_run)


def _bench_run(args: argparse.Namespace) -> int:
    import json

    from nanomq.bench import runner
    from nanomq.bench.experiment import ExperimentError, load_experiment

    if args.spec:
        spec = json.loads(args.spec)
        out = args.out
        if out is None:
            print("nanomq bench run: --out is required with --spec", file=sys.stderr)
            return 2
    else:
        if not args.experiment or not args.config:
            print("nanomq bench run: give EXPERIMENT --config HASH, or --spec JSON", file=sys.stderr)
            return 2
        try:
            exp = load_experiment(args.experiment)
            run = exp.run(args.config, args.repetition)
        except (ExperimentError, KeyError) as exc:
            print(f"nanomq bench run: {exc}", file=sys.stderr)
            return 2
        spec = run.spec(exp.source)
        out = args.out or f"results/{run.relpath}"
    record = runner.run(spec, out, quiet=args.quiet)
    return 0 if record["status"] in ("OK", "FAILED", "SKIPPED") else 1


def _add_bench_list(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("list", help="validate an experiment file and list its configurations")
    p.add_argument("experiment", help="experiment YAML file")
    p.set_defaults(func=_bench_list)


def _bench_list(args: argparse.Namespace) -> int:
    from nanomq.bench.experiment import ExperimentError, load_experiment

    try:
        exp = load_experiment(args.experiment)
    except ExperimentError as exc:
        print(f"nanomq: {exc}", file=sys.stderr)
        return 2
    runs = 0
    seconds = 0.0
    for p in exp.points:
        runs += p.repetitions
        seconds += p.repetitions * (p.parameters["duration_s"] + p.parameters["warmup_s"])
        print(f"{p.dirname:32} x{p.repetitions}  {p.mode:10} {p.label}  grids: {', '.join(p.grids)}")
    print(
        f"{exp.name}: {len(exp.points)} configurations, {runs} runs, "
        f"{seconds / 60:.1f} min of measurement (plus start-up and calibration)"
    )
    return 0


# ----------------------------------------------------------------- report ----


def _add_report(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="aggregate results, draw figures, write and compare reports")
    rsub = report.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = rsub.add_parser(
        "aggregate", help="run records -> runs.csv, summary.csv, merged.json, sustainable.csv"
    )
    p.add_argument("records", nargs="+", help="record.json files, or directories searched for them")
    p.add_argument("--out", required=True, metavar="DIR", help="results/<experiment>/")
    p.add_argument(
        "--slo", metavar="P:US", help="latency objective for the rate sweep, e.g. 99:100 (P99 <= 100 µs)"
    )
    p.set_defaults(func=_report_aggregate)

    p = rsub.add_parser("plot", help="draw one family of figures from aggregated results")
    p.add_argument("family", help="vs_size, vs_rate, spectrum, timeline, throughput_latency, peers, batch")
    p.add_argument("--results", required=True, metavar="DIR", help="results/<experiment>/")
    p.add_argument("--out", required=True, metavar="DIR", help="reports/<experiment>/figures/<family>/")
    p.set_defaults(func=_report_plot)

    p = rsub.add_parser("build", help="write report.md and report.html")
    p.add_argument("--results", required=True, metavar="DIR", help="results/<experiment>/")
    p.add_argument("--figures", required=True, metavar="DIR", help="reports/<experiment>/figures/")
    p.add_argument("--out", required=True, metavar="DIR", help="reports/<experiment>/")
    p.add_argument(
        "--experiment", metavar="FILE", help="the experiment file (its description and hash go in)"
    )
    p.add_argument("--command", help="the command that reproduces the report (default: derived)")
    p.set_defaults(func=_report_build)

    p = rsub.add_parser(
        "compare",
        help="compare two result sets; exit 1 when a change beyond the run-to-run spread is a regression",
    )
    p.add_argument("a", metavar="RESULTS_A", help="baseline: results/<experiment>/ or its summary.csv")
    p.add_argument("b", metavar="RESULTS_B", help="candidate: results/<experiment>/ or its summary.csv")
    p.add_argument(
        "--min-change", type=float, default=0.05, help="ignore relative changes below this (default 0.05)"
    )
    p.add_argument("--all", action="store_true", help="list every metric, not only the flagged ones")
    p.set_defaults(func=_report_compare)


def _report_aggregate(args: argparse.Namespace) -> int:
    from nanomq.bench.aggregate import aggregate

    slo = None
    if args.slo:
        try:
            pct, us = args.slo.split(":")
            slo = {"percentile": float(pct), "latency_us": float(us)}
        except ValueError:
            print(f"nanomq report aggregate: --slo {args.slo!r} is not P:US (e.g. 99:100)", file=sys.stderr)
            return 2
    paths = aggregate(args.records, args.out, slo=slo)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _report_plot(args: argparse.Namespace) -> int:
    from nanomq.bench.plots import draw

    manifest = draw(args.family, args.results, args.out)
    if manifest["figures"]:
        print(f"{args.family}: {len(manifest['figures'])} figures in {args.out}")
    else:
        print(f"{args.family}: skipped ({manifest['skipped']})")
    return 0


def _report_build(args: argparse.Namespace) -> int:
    from nanomq.bench.report import build_report

    paths = build_report(
        args.results, args.figures, args.out, command=args.command, experiment_file=args.experiment
    )
    print(f"wrote {paths['md']} and {paths['html']}")
    return 0


def _report_compare(args: argparse.Namespace) -> int:
    from nanomq.bench.compare import compare, format_changes, load_summary

    try:
        a, b = load_summary(args.a), load_summary(args.b)
    except FileNotFoundError as exc:
        print(f"nanomq report compare: {exc}", file=sys.stderr)
        return 2
    changes = compare(a, b, min_relative_change=args.min_change)
    print(format_changes(changes, show_all=args.all))
    return 1 if any(c.verdict == "regression" for c in changes) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nanomq` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
