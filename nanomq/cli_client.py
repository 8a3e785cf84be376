"""The broker-facing commands of `nanomq`: broker, publish, subscribe, topics, groups, stats."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the broker-facing subcommands to the `nanomq` parser."""
    p = sub.add_parser(
        "broker",
        help="run a NanoMQ broker",
        description="Run a NanoMQ broker: topics and partitions over write-ahead logs, served over TCP.",
    )
    from nanomq import broker

    broker.add_arguments(p)
    p.set_defaults(func=broker.run)
