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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nanomq` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
