"""The NanoMQ broker (being built): `add_arguments(parser)` and `run(args)` back `nanomq broker`."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the broker's options to `parser`."""


def run(args: argparse.Namespace) -> int:
    """Run the broker until SIGINT/SIGTERM; returns the exit code."""
    print("nanomq broker: not available in this build yet", file=sys.stderr)
    return 2
