"""The plain-text pieces the `nanomq bench log|broker|ring` reports share: tables, figures, verdicts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["fmt_rate", "fmt_us", "judge", "meets", "print_and_save", "ratio", "table", "targets_table"]

Targets = Mapping[str, tuple[float, bool, str]]
"""key: (target, at_least, what) — at_least False means the figure must stay at or below it."""


def fmt_rate(v: float | None) -> str:
    """A rate per second as `1.23 M/s`, `4.56 k/s` or `789 /s`; `—` when not measured."""
    if v is None:
        return "—"
    for scale, suffix in ((1e6, " M/s"), (1e3, " k/s")):
        if v >= scale:
            return f"{v / scale:.2f}{suffix}"
    return f"{v:.0f} /s"


def fmt_us(ns: float | None) -> str:
    """Nanoseconds shown as microseconds with one decimal; `—` when not measured."""
    return "—" if ns is None else f"{ns / 1000:.1f} µs"


def ratio(ours: float | None, theirs: float | None) -> str:
    """`ours / theirs` as `1.23×`; `—` when either is missing or zero."""
    return "—" if not ours or not theirs else f"{ours / theirs:.2f}×"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a left-aligned text table under a blank line and its title."""
    if not rows:
        return ["", title, "(nothing measured)"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = ["", title, line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def meets(value: float, target: float, at_least: bool) -> str:
    """PASS when `value` reaches `target` (at least it, or at most it when not at_least), else MISS."""
    return "PASS" if (value >= target if at_least else value <= target) else "MISS"


def judge(
    targets: Targets, measured: Mapping[str, float | None], failed: Collection[str] = ()
) -> list[dict[str, Any]]:
    """One verdict entry per target, in the targets' order: FAILED (its key in `failed`: the run
    was not valid), n/a (nothing measured), PASS or MISS."""
    out = []
    for key, (target, at_least, what) in targets.items():
        value = measured.get(key)
        if key in failed:
            verdict = "FAILED"
        elif value is None:
            verdict = "n/a"
        else:
            verdict = meets(value, target, at_least)
        out.append(
            {
                "key": key,
                "what": what,
                "measured": value,
                "target": target,
                "at_least": at_least,
                "verdict": verdict,
            }
        )
    return out


def targets_table(
    title: str,
    verdicts: Sequence[Mapping[str, Any]],
    shown: Callable[[str, float], str],
    goal: Callable[[str, float], str],
) -> list[str]:
    """The lines of a judge() result as a table: each target's measured figure (shown(key, value);
    `—` when not measured), its goal (≥ or ≤ goal(key, target)) and its verdict."""
    rows = [
        [
            v["what"],
            "—" if v["measured"] is None else shown(v["key"], v["measured"]),
            ("≥ " if v["at_least"] else "≤ ") + goal(v["key"], v["target"]),
            v["verdict"],
        ]
        for v in verdicts
    ]
    return table(title, ["target", "measured", "goal", "verdict"], rows)


def print_and_save(
    res: dict[str, Any], args: argparse.Namespace, format_report: Callable[[dict[str, Any]], str]
) -> int:
    """A bench command's ending: note --quick in the result, print its report, write --json; exit status 0."""
    res["parameters"]["quick"] = bool(args.quick)
    print(format_report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
