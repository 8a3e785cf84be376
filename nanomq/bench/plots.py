"""Figures of an experiment, from its aggregated results (matplotlib, Agg, PNG + SVG).

Each figure family is drawn by one call, `draw(family, results_dir, out_dir)`, so the
workflow draws them in parallel. A family writes its figures into `out_dir` with a
`figures.json` manifest naming, for every figure, the configurations (config hashes)
and runs that made it — or why the family was skipped (the grid has no variation for it,
or no configuration is OK). Only OK configurations are plotted as results; FAILED and
SKIPPED ones are named in the manifest as excluded.

Families:
  vs_size             P50/P99/P99.9/max against message size, per transport
  vs_rate             P50/P99/P99.9/max against the intended rate, per transport
  spectrum            percentile spectrum of each configuration on a log 1/(1−p) axis
  timeline            per-second P50/P99/max of every run, from its .hlog (stalls show)
  throughput_latency  P50/P99 latency against achieved throughput
  peers               NanoMQ against its peers on the same workload
  batch               effect of the batch size
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanomq.bench import hdr
from nanomq.bench.aggregate import PARAM_COLUMNS
from nanomq.bench.experiment import NANOMQ_TRANSPORTS
from nanomq.bench.records import OK

__all__ = ["FAMILIES", "TRANSPORT_NAMES", "draw", "load_results", "transport_name"]

MANIFEST = "figures.json"
TRANSPORT_NAMES = {
    "ring": "NanoMQ ring (Python API)",
    "ring_c": "NanoMQ ring (C loops)",
    "log": "NanoMQ log",
    "broker": "NanoMQ broker",
    "mp_queue": "multiprocessing.Queue",
    "faster_fifo": "faster_fifo",
    "zmq": "pyzmq (ipc)",
    "nats": "NATS",
    "redis": "Redis pub/sub",
    "stall": "synthetic stall",
}
_ORDER = list(TRANSPORT_NAMES)
_COLORS = {
    "ring": "#1f77b4",
    "ring_c": "#17becf",
    "log": "#2ca02c",
    "broker": "#9467bd",
    "mp_queue": "#d62728",
    "faster_fifo": "#ff7f0e",
    "zmq": "#8c564b",
    "nats": "#e377c2",
    "redis": "#7f7f7f",
    "stall": "#bcbd22",
}
PCTS = (("p50", "P50"), ("p99", "P99"), ("p999", "P99.9"), ("max", "max"))


def transport_name(t: str) -> str:
    return TRANSPORT_NAMES.get(t, t)


def _transport_key(t: str) -> tuple[int, str]:
    return (_ORDER.index(t) if t in _ORDER else len(_ORDER), t)


# ----------------------------------------------------------------- loading ----


def load_results(results_dir: str | Path) -> tuple[Any, Any, dict[str, dict[str, str]]]:
    """(summary, runs, merged histograms) of an experiment's results directory."""
    import pandas as pd

    d = Path(results_dir)
    summary = pd.read_csv(d / "summary.csv", dtype={"config_hash": str, "options": str, "rate": str})
    runs = pd.read_csv(d / "runs.csv", dtype={"config_hash": str, "options": str, "rate": str})
    for df in (summary, runs):
        df["options"] = df["options"].fillna("{}")
        df["rate_num"] = pd.to_numeric(df["rate"], errors="coerce")
    with open(d / "merged.json", encoding="utf-8") as f:
        merged = json.load(f)["histograms"]
    return summary, runs, merged


def _workload_keys(*vary: str) -> list[str]:
    return [c for c in (*PARAM_COLUMNS, "options") if c not in vary and c != "rate"] + (
        [] if "rate" in vary else ["rate"]
    )


def _describe(row: Any, *vary: str) -> str:
    """The fixed parameters of a group, for a title."""
    parts = []
    if "message_size" not in vary:
        parts.append(f"{int(row['message_size'])} B")
    if "rate" not in vary:
        parts.append("closed loop" if row["rate"] == "max" else f"{int(float(row['rate'])):,} msg/s")
    if "batch_size" not in vary and int(row["batch_size"]) != 1:
        parts.append(f"batch {int(row['batch_size'])}")
    if int(row["producers"]) != 1 or int(row["consumers"]) != 1:
        parts.append(f"{int(row['producers'])}p/{int(row['consumers'])}c")
    if row["options"] not in ("{}", ""):
        parts.append(row["options"])
    return ", ".join(parts)


def _slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_")[:120]


# ------------------------------------------------------------------ output ----


class _Out:
    """Collects figures and the manifest of one family."""

    def __init__(self, family: str, out_dir: Path) -> None:
        self.family = family
        self.dir = out_dir
        self.figures: list[dict[str, Any]] = []
        self.excluded: list[dict[str, str]] = []

    def save(self, fig: Any, name: str, title: str, caption: str, rows: Any, run_ids: list[str]) -> None:
        import matplotlib.pyplot as plt

        stem = _slug(self.family, name)
        fig.savefig(self.dir / f"{stem}.png", dpi=110)
        fig.savefig(self.dir / f"{stem}.svg")
        plt.close(fig)
        self.figures.append(
            {
                "png": f"{stem}.png",
                "svg": f"{stem}.svg",
                "title": title,
                "caption": caption,
                "config_hashes": sorted(set(rows["config_hash"])),
                "run_ids": sorted(run_ids),
            }
        )

    def manifest(self, skipped: str | None) -> dict[str, Any]:
        return {
            "family": self.family,
            "skipped": skipped if not self.figures else None,
            "figures": self.figures,
            "excluded": self.excluded,
        }


def _run_ids(rows: Any) -> list[str]:
    return [rid for ids in rows["run_ids"] for rid in str(ids).split(";") if rid]


def _ok(summary: Any, out: _Out, mode: str | None = None) -> Any:
    sel = summary if mode is None else summary[summary["mode"] == mode]
    bad = sel[sel["status"] != OK]
    for _, row in bad.iterrows():
        entry = {"config_hash": row["config_hash"], "label": row["label"], "status": row["status"]}
        if entry not in out.excluded:
            out.excluded.append(entry)
    return sel[sel["status"] == OK]


def _us(ns: Any) -> Any:
    return ns / 1000.0


def _num_label(v: float, _pos: Any = None) -> str:
    """1500 -> 1.5k, 2e6 -> 2M, 0.25 -> 0.25: tick labels people read without exponents."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _log(ax: Any, axis: str = "y", base: int = 10) -> None:
    """Log scale with plain-number tick labels (minor ones too when the range is under a decade)."""
    from matplotlib import ticker

    getattr(ax, f"set_{axis}scale")("log", base=base)
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(ticker.FuncFormatter(_num_label))
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    if base == 10 and lo > 0 and hi / lo < 10:
        target.set_minor_formatter(ticker.FuncFormatter(_num_label))
    else:
        target.set_minor_formatter(ticker.NullFormatter())


# ---------------------------------------------------------------- families ----


def _percentiles_against(axis: str, summary: Any, out: _Out) -> str | None:
    import matplotlib.pyplot as plt

    ok = _ok(summary, out, "latency")
    if ok.empty:
        return "no OK latency configuration"
    xcol = "message_size" if axis == "message_size" else "rate_num"
    keys = [k for k in _workload_keys(axis) if k != "transport"]
    drawn = 0
    for _, group in ok.groupby(keys, dropna=False, sort=False):
        if group[xcol].nunique() < 2:
            continue
        fig, axes = plt.subplots(
            1, len(PCTS), figsize=(4.2 * len(PCTS), 3.8), sharex=True, layout="constrained"
        )
        for ax, (stem, name) in zip(axes, PCTS, strict=True):
            for t in sorted(group["transport"].unique(), key=_transport_key):
                rows = group[group["transport"] == t].sort_values(xcol)
                y = _us(rows[f"{stem}_ns"])
                lo = y - _us(rows[f"{stem}_ns_min"])
                hi = _us(rows[f"{stem}_ns_max"]) - y
                ax.errorbar(
                    rows[xcol],
                    y,
                    yerr=[lo.clip(lower=0), hi.clip(lower=0)],
                    marker="o",
                    capsize=3,
                    label=transport_name(t),
                    color=_COLORS.get(t),
                )
            _log(ax, "x", 2 if axis == "message_size" else 10)
            _log(ax, "y")
            ax.set_title(name)
            ax.set_xlabel("message size (bytes)" if axis == "message_size" else "intended rate (msg/s)")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("latency (µs)")
        axes[-1].legend(fontsize=8)
        fixed = _describe(group.iloc[0], axis, "transport")
        what = "message size" if axis == "message_size" else "rate"
        title = f"Latency percentiles against {what} ({fixed})"
        fig.suptitle(title)
        caption = (
            "Points: percentiles of the histogram merged over the repetitions; bars: min–max of "
            "the per-repetition percentiles. Open-loop, from the intended send time."
        )
        out.save(fig, _slug(fixed), title, caption, group, _run_ids(group))
        drawn += 1
    if not drawn:
        return f"no latency workload varies the {'message size' if axis == 'message_size' else 'rate'}"
    return None


def _vs_size(summary: Any, runs: Any, merged: dict, results: Path, out: _Out) -> str | None:
    return _percentiles_against("message_size", summary, out)


def _vs_rate(summary: Any, runs: Any, merged: dict, results: Path, out: _Out) -> str | None:
    return _percentiles_against("rate", summary, out)


def spectrum_points(h: Any) -> tuple[list[float], list[float]]:
    """(x = 1/(1−p), latency ns) from P0 up to the max, for a log-axis percentile plot."""
    count = h.get_total_count()
    if not count:
        return [], []
    xs, ys = [], []
    top = math.log10(count) if count > 1 else 1.0
    steps = max(2, int(top * 20))
    for i in range(steps + 1):
        k = top * i / steps
        p = 100.0 * (1.0 - 10.0**-k)
        xs.append(10.0**k)
        ys.append(float(h.get_value_at_percentile(p)))
    xs.append(10.0**top * 1.5)  # the max, just past the last percentile the samples resolve
    ys.append(float(h.get_max_value()))
    return xs, ys


def _pct_axis(ax: Any, top: float) -> None:
    ticks = [1, 2, 10, 100, 1_000, 10_000, 100_000, 1_000_000]
    labels = ["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
    keep = [(t, lab) for t, lab in zip(ticks, labels, strict=True) if t <= top * 1.6]
    ax.set_xscale("log")
    ax.set_xticks([t for t, _ in keep], [lab for _, lab in keep])
    ax.minorticks_off()
    ax.set_xlabel("percentile (axis: 1/(1−p), log)")


def _spectrum(summary: Any, runs: Any, merged: dict, results: Path, out: _Out) -> str | None:
    import matplotlib.pyplot as plt

    ok = _ok(summary, out, "latency")
    ok = ok[ok["config_hash"].isin([h for h, m in merged.items() if "latency" in m])]
    if ok.empty:
        return "no OK latency configuration"
    keys = [k for k in _workload_keys("transport") if k != "transport"]
    for _, group in ok.groupby(keys, dropna=False, sort=False):
        fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
        top = 1.0
        for _, row in group.sort_values("transport", key=lambda s: s.map(_transport_key)).iterrows():
            h = hdr.decode(merged[row["config_hash"]]["latency"])
            xs, ys = spectrum_points(h)
            top = max(top, xs[-1] if xs else 1)
            ax.plot(
                xs,
                [y / 1000 for y in ys],
                label=f"{transport_name(row['transport'])} (n={h.get_total_count():,})",
                color=_COLORS.get(row["transport"]),
            )
        _pct_axis(ax, top)
        _log(ax, "y")
        ax.set_ylabel("latency (µs)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
        fixed = _describe(group.iloc[0], "transport")
        title = f"Latency by percentile ({fixed})"
        ax.set_title(title)
        caption = "Percentile spectrum of the merged histogram of each configuration, up to the max."
        out.save(fig, _slug(fixed), title, caption, group, _run_ids(group))
    return None


def hlog_series(path: Path) -> dict[str, list[float]]:
    """Per-interval start (s), P50, P99 and max (µs) of a .hlog."""
    from nanomq.bench.records import read_hlog

    series: dict[str, list[float]] = {"t": [], "t_end": [], "p50": [], "p99": [], "max": [], "count": []}
    for iv in read_hlog(path):
        h = iv.histogram
        n = h.get_total_count()
        series["t"].append(iv.start_s)
        series["t_end"].append(iv.end_s)
        series["count"].append(n)
        series["p50"].append(h.get_value_at_percentile(50) / 1000 if n else math.nan)
        series["p99"].append(h.get_value_at_percentile(99) / 1000 if n else math.nan)
        series["max"].append(h.get_max_value() / 1000 if n else math.nan)
    return series


def _timeline(summary: Any, runs: Any, merged: dict, results: Path, out: _Out) -> str | None:
    import matplotlib.pyplot as plt

    have = runs[runs["status"] != "SKIPPED"]
    have = have[[(results / d / "latency.hlog").exists() for d in have["run_dir"]]]
    if have.empty:
        return "no run left a latency .hlog"
    for h, group in have.groupby("config_hash", sort=False):
        group = group.sort_values("repetition")
        n = len(group)
        fig, axes = plt.subplots(
            1, n, figsize=(max(4.5, 3.8 * n), 3.6), sharey=True, squeeze=False, layout="constrained"
        )
        for ax, (_, run) in zip(axes[0], group.iterrows(), strict=True):
            s = hlog_series(results / run["run_dir"] / "latency.hlog")
            if s["t"]:
                # each interval is a flat segment from its start to its end
                xs = [*s["t"], s["t_end"][-1]]
                for key, name, colour in (
                    ("max", "max", "#999999"),
                    ("p99", "P99", "#d62728"),
                    ("p50", "P50", "#1f77b4"),
                ):
                    ax.step(xs, [*s[key], s[key][-1]], where="post", label=name, color=colour)
            if len(s["t"]) == 1:
                ax.text(
                    0.5,
                    0.02,
                    "one interval: no per-second data",
                    transform=ax.transAxes,
                    ha="center",
                    fontsize=7,
                )
            ax.axvspan(0, float(run["warmup_s"]), color="#dddddd", alpha=0.6, lw=0, label="warm-up")
            _log(ax, "y")
            ax.set_xlabel("time since start (s)")
            colour = "black" if run["status"] == OK else "#d62728"
            ax.set_title(f"rep {int(run['repetition'])}: {run['status']}", color=colour, fontsize=9)
            ax.grid(True, which="major", alpha=0.3)
        axes[0][0].set_ylabel("latency (µs)")
        axes[0][-1].legend(fontsize=7)
        label = group.iloc[0]["label"]
        title = f"Latency over time: {label}"
        fig.suptitle(title, fontsize=10)
        caption = "Per-second P50, P99 and max of each repetition (interval histograms of its .hlog)."
        out.save(fig, f"{label}-{h}", title, caption, group, list(group["run_id"]))
    return None


def _throughput_latency(summary: Any, runs: Any, merged: dict, results: Path, out: _Out) -> str | None:
    import matplotlib.pyplot as plt

    lat = _ok(summary, out, "latency")
    thr = _ok(summary, out, "throughput")
    if lat.empty:
        return "no OK latency configuration"
    keys = [k for k in _workload_keys("rate", "transport") if k not in ("rate", "transport")]
    for _, group in lat.groupby(keys, dropna=False, sort=False):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, layout="constrained")
        used = [group]
        for ax, (stem, name) in zip(axes, (("p50", "P50"), ("p99", "P99")), strict=True):
            for t in sorted(group["transport"].unique(), key=_transport_key):
                rows = group[group["transport"] == t].sort_values("achieved_rate_median")
                ax.plot(
                    rows["achieved_rate_median"],
                    _us(rows[f"{stem}_ns"]),
                    marker="o",
                    label=transport_name(t),
                    color=_COLORS.get(t),
                )
                first = group.iloc[0]
                same = thr[
                    (thr["transport"] == t)
                    & (thr["message_size"] == first["message_size"])
                    & (thr["batch_size"] == first["batch_size"])
                ]
                for _, trow in same.iterrows():
                    ax.axvline(trow["achieved_rate_median"], color=_COLORS.get(t), ls=":", lw=1)
                    used.append(same)
            _log(ax, "x")
            _log(ax, "y")
            ax.set_xlabel("achieved throughput (msg/s)")
            ax.set_title(name)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("latency (µs)")
        axes[-1].legend(fontsize=8)
        fixed = _describe(group.iloc[0], "rate", "transport")
        title = f"Latency against throughput ({fixed})"
        fig.suptitle(title)
        caption = (
            "Points: open-loop runs at their achieved rate; dotted lines: the closed-loop maximum "
            "throughput of the same transport and message size."
        )
        import pandas as pd

        rows_used = pd.concat(used).drop_duplicates("config_hash")
        out.save(fig, _slug(fixed), title, caption, rows_used, _run_ids(rows_used))
    return None


def _peers(summary: Any, runs: Any, merged: dict, results: Path, out: _Out) -> str | None:
    import matplotlib.pyplot as plt
    import numpy as np

    ok = _ok(summary, out)
    if ok.empty:
        return "no OK configuration"
    keys = [k for k in _workload_keys("transport") if k != "transport"]
    drawn = 0
    for _, group in ok.groupby(keys, dropna=False, sort=False):
        ts = sorted(group["transport"].unique(), key=_transport_key)
        if not any(t in NANOMQ_TRANSPORTS for t in ts) or all(t in NANOMQ_TRANSPORTS for t in ts):
            continue
        group = group.sort_values("transport", key=lambda s: s.map(_transport_key))
        fixed = _describe(group.iloc[0], "transport")
        if group.iloc[0]["mode"] == "throughput":
            fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
            y = group["achieved_rate_median"]
            err = [y - group["achieved_rate_min"], group["achieved_rate_max"] - y]
            ax.bar(
                [transport_name(t) for t in group["transport"]],
                y,
                yerr=err,
                capsize=4,
                color=[_COLORS.get(t) for t in group["transport"]],
            )
            ax.set_ylabel("throughput (msg/s)")
            _log(ax, "y")
            ax.tick_params(axis="x", rotation=20)
            title = f"Throughput, NanoMQ and peers ({fixed})"
            caption = "Closed loop; bar: median of the repetitions, whiskers: min–max."
        else:
            fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
            width = 0.8 / len(group)
            xs = np.arange(len(PCTS))
            for i, (_, row) in enumerate(group.iterrows()):
                y = np.array([row[f"{s}_ns"] / 1000 for s, _ in PCTS], dtype=float)
                lo = y - np.array([row[f"{s}_ns_min"] / 1000 for s, _ in PCTS], dtype=float)
                hi = np.array([row[f"{s}_ns_max"] / 1000 for s, _ in PCTS], dtype=float) - y
                ax.bar(
                    xs + i * width - 0.4 + width / 2,
                    y,
                    width,
                    yerr=[np.clip(lo, 0, None), np.clip(hi, 0, None)],
                    capsize=2,
                    label=transport_name(row["transport"]),
                    color=_COLORS.get(row["transport"]),
                )
            ax.set_xticks(xs, [name for _, name in PCTS])
            _log(ax, "y")
            ax.set_ylabel("latency (µs)")
            ax.legend(fontsize=8)
            title = f"Latency, NanoMQ and peers ({fixed})"
            caption = "Merged-histogram percentiles; whiskers: min–max of the per-repetition percentiles."
        ax.set_title(title)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        out.save(fig, _slug(fixed), title, caption, group, _run_ids(group))
        drawn += 1
    if not drawn:
        return "no workload was run with both a NanoMQ transport and a peer"
    return None


def _batch(summary: Any, runs: Any, merged: dict, results: Path, out: _Out) -> str | None:
    import matplotlib.pyplot as plt

    ok = _ok(summary, out)
    if ok.empty:
        return "no OK configuration"
    keys = [k for k in _workload_keys("batch_size", "transport") if k not in ("batch_size", "transport")]
    drawn = 0
    for _, group in ok.groupby(keys, dropna=False, sort=False):
        if group["batch_size"].nunique() < 2:
            continue
        throughput = group.iloc[0]["mode"] == "throughput"
        fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
        for t in sorted(group["transport"].unique(), key=_transport_key):
            rows = group[group["transport"] == t].sort_values("batch_size")
            if throughput:
                y = rows["achieved_rate_median"]
                err = [y - rows["achieved_rate_min"], rows["achieved_rate_max"] - y]
            else:
                y = _us(rows["p99_ns"])
                err = [
                    (y - _us(rows["p99_ns_min"])).clip(lower=0),
                    (_us(rows["p99_ns_max"]) - y).clip(lower=0),
                ]
            ax.errorbar(
                rows["batch_size"],
                y,
                yerr=err,
                marker="o",
                capsize=3,
                label=transport_name(t),
                color=_COLORS.get(t),
            )
        _log(ax, "x", 2)
        _log(ax, "y")
        ax.set_xlabel("batch size (messages per call)")
        ax.set_ylabel("throughput (msg/s)" if throughput else "P99 latency (µs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fixed = _describe(group.iloc[0], "batch_size", "transport")
        title = f"Effect of batch size ({fixed})"
        ax.set_title(title)
        caption = (
            "Median of the repetitions, whiskers min–max." if throughput else "P99 of the merged histogram."
        )
        out.save(fig, _slug(fixed), title, caption, group, _run_ids(group))
        drawn += 1
    if not drawn:
        return "no workload varies the batch size"
    return None


FAMILIES: dict[str, Callable[..., str | None]] = {
    "vs_size": _vs_size,
    "vs_rate": _vs_rate,
    "spectrum": _spectrum,
    "timeline": _timeline,
    "throughput_latency": _throughput_latency,
    "peers": _peers,
    "batch": _batch,
}


def draw(family: str, results_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Draw one family of figures into `out_dir` and write its figures.json; returns the manifest."""
    import matplotlib

    matplotlib.use("Agg")
    if family not in FAMILIES:
        raise ValueError(f"unknown figure family {family!r}; known: {', '.join(FAMILIES)}")
    results = Path(results_dir)
    out_path = Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    for old in out_path.glob("*"):  # a re-run must not leave figures of configurations now gone
        if old.suffix in (".png", ".svg", ".json"):
            old.unlink()
    summary, runs, merged = load_results(results)
    out = _Out(family, out_path)
    skipped = FAMILIES[family](summary, runs, merged, results, out)
    manifest = out.manifest(skipped)
    with open(out_path / MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest
