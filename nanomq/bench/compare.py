"""Compare two result sets configuration by configuration (regression detection).

`compare(a, b)` pairs the configurations of two aggregated results (summary.csv of
results/<experiment>/, e.g. before and after a change) by config hash — the hash covers
every parameter, so a pair is the same workload. For each metric it flags a change only
when it is larger than the run-to-run spread: the two min–max ranges across repetitions
do not overlap, the difference of the medians exceeds the wider of the two ranges, and
the relative change reaches `min_relative_change` (default 5 %, so single-repetition
results are not flagged for noise). Latency up or throughput down is a regression.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Change", "compare", "format_changes", "load_summary"]

DEFAULT_MIN_RELATIVE = 0.05
# metric stem -> (column stem in summary.csv, higher is better)
METRICS = {
    "P50": ("p50_ns", False),
    "P99": ("p99_ns", False),
    "P99.9": ("p999_ns", False),
    "max": ("max_ns", False),
    "throughput": ("achieved_rate", True),
}


@dataclass(frozen=True, slots=True)
class Change:
    """One metric of one configuration in both result sets."""

    config_hash: str
    label: str
    metric: str
    a: float | None
    b: float | None
    a_range: tuple[float, float] | None
    b_range: tuple[float, float] | None
    verdict: str  # "regression", "improvement", "within spread", "missing", "not comparable"

    @property
    def relative(self) -> float | None:
        if self.a in (None, 0) or self.b is None:
            return None
        return (self.b - self.a) / self.a


def load_summary(path: str | Path) -> Any:
    """summary.csv of a results directory (results/<experiment>/) or the file itself."""
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        p = p / "summary.csv"
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist: give results/<experiment>/ or its summary.csv")
    return pd.read_csv(p, dtype={"config_hash": str, "rate": str, "options": str})


def _nan(x: Any) -> float | None:
    return None if x is None or x != x else float(x)


def _values(row: Any, column: str) -> tuple[float | None, tuple[float, float] | None]:
    if column == "achieved_rate":
        med = _nan(row.get("achieved_rate_median"))
        lo, hi = _nan(row.get("achieved_rate_min")), _nan(row.get("achieved_rate_max"))
    else:
        med = _nan(row.get(f"{column}_median"))
        lo, hi = _nan(row.get(f"{column}_min")), _nan(row.get(f"{column}_max"))
    return med, (lo, hi) if lo is not None and hi is not None else None


def compare(a: Any, b: Any, *, min_relative_change: float = DEFAULT_MIN_RELATIVE) -> list[Change]:
    """Changes between summary tables `a` (baseline) and `b`, one per configuration and metric."""
    out: list[Change] = []
    a_rows = {r["config_hash"]: r for _, r in a.iterrows()}
    b_rows = {r["config_hash"]: r for _, r in b.iterrows()}
    for h in list(a_rows) + [h for h in b_rows if h not in a_rows]:
        ra, rb = a_rows.get(h), b_rows.get(h)
        label = (ra if ra is not None else rb)["label"]
        if ra is None or rb is None:
            out.append(Change(h, label, "configuration", None, None, None, None, "missing"))
            continue
        mode = ra["mode"]
        for metric, (column, higher_better) in METRICS.items():
            if mode == "throughput" and metric != "throughput":
                continue
            if mode == "latency" and metric == "throughput":
                continue
            va, range_a = _values(ra, column)
            vb, range_b = _values(rb, column)
            if ra["status"] != "OK" or rb["status"] != "OK" or va is None or vb is None:
                verdict = "not comparable"
            else:
                verdict = _verdict(va, vb, range_a, range_b, higher_better, min_relative_change)
            out.append(Change(h, label, metric, va, vb, range_a, range_b, verdict))
    return out


def _verdict(
    va: float,
    vb: float,
    range_a: tuple[float, float] | None,
    range_b: tuple[float, float] | None,
    higher_better: bool,
    min_relative: float,
) -> str:
    ra = range_a or (va, va)
    rb = range_b or (vb, vb)
    overlap = ra[0] <= rb[1] and rb[0] <= ra[1]
    spread = max(ra[1] - ra[0], rb[1] - rb[0])
    relative = abs(vb - va) / va if va else float("inf")
    if overlap or abs(vb - va) <= spread or relative < min_relative:
        return "within spread"
    worse = vb < va if higher_better else vb > va
    return "regression" if worse else "improvement"


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "–"
    if metric == "throughput":
        return f"{v:,.0f}/s"
    return f"{v / 1000:.2f} µs"


def format_changes(changes: list[Change], *, show_all: bool = False) -> str:
    """A Markdown table of the flagged changes (all rows with show_all) and a one-line verdict."""
    rows = [c for c in changes if show_all or c.verdict in ("regression", "improvement", "missing")]
    lines = []
    if rows:
        lines.append(
            "| configuration | config hash | metric | A | B | change | A range | B range | verdict |"
        )
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for c in rows:
            rel = "–" if c.relative is None else f"{c.relative:+.1%}"
            ar = (
                "–" if c.a_range is None else f"{_fmt(c.metric, c.a_range[0])}–{_fmt(c.metric, c.a_range[1])}"
            )
            br = (
                "–" if c.b_range is None else f"{_fmt(c.metric, c.b_range[0])}–{_fmt(c.metric, c.b_range[1])}"
            )
            lines.append(
                f"| {c.label} | {c.config_hash} | {c.metric} | {_fmt(c.metric, c.a)} | {_fmt(c.metric, c.b)} "
                f"| {rel} | {ar} | {br} | {c.verdict} |"
            )
    n_reg = sum(c.verdict == "regression" for c in changes)
    n_imp = sum(c.verdict == "improvement" for c in changes)
    n_cfg = len({c.config_hash for c in changes})
    lines.append(
        f"{n_cfg} configurations compared: {n_reg} regressions, {n_imp} improvements beyond the "
        "run-to-run spread (medians; A is the baseline)."
    )
    return "\n".join(lines)
