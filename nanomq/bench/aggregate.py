"""Aggregate run records into one table per experiment.

`aggregate(records, out_dir)` writes into results/<experiment>/:
  runs.csv          one row per run (every status), its parameters and its own percentiles
  summary.csv       one row per configuration: percentiles of the histograms MERGED across
                    its OK repetitions (never averaged percentiles), and the spread across
                    repetitions — median, min and max of each per-run percentile
  merged.json       the merged histograms (HdrHistogram base64), per configuration and metric
  sustainable.csv   with an SLO: per workload, the highest rate of a rate sweep that meets it

FAILED and SKIPPED runs stay in runs.csv and are counted in summary.csv, but their
samples never enter a merged histogram or a percentile column.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nanomq.bench import hdr
from nanomq.bench.experiment import PARAMETERS
from nanomq.bench.records import FAILED, OK, RECORD_FILE, SKIPPED, read_record

__all__ = [
    "PCT_COLUMNS",
    "aggregate",
    "find_records",
    "load_records",
    "runs_table",
    "summarize",
    "sustainable",
]

# hdr.percentiles() key -> column stem (no dots, so pandas columns stay plain names)
PCT_COLUMNS = {
    "p50": "p50",
    "p90": "p90",
    "p99": "p99",
    "p99.9": "p999",
    "p99.99": "p9999",
    "max": "max",
}
PARAM_COLUMNS = [p for p in PARAMETERS if p != "options"]


def find_records(paths: Iterable[str | Path]) -> list[Path]:
    """Record files among `paths`; a directory stands for every record.json below it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.rglob(RECORD_FILE)))
        else:
            out.append(p)
    return out


def load_records(paths: Iterable[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(path, record) for every record file among `paths`, all of one experiment."""
    loaded = [(p, read_record(p)) for p in find_records(paths)]
    names = {r["experiment"] for _, r in loaded}
    if len(names) > 1:
        raise ValueError(f"records of several experiments mixed: {', '.join(sorted(names))}")
    return loaded


def _options_text(options: Any) -> str:
    return json.dumps(options or {}, sort_keys=True, separators=(",", ":"))


def _label(params: dict[str, Any]) -> str:
    from nanomq.bench.experiment import _si

    rate = "max" if params["rate"] == "max" else _si(params["rate"]) + "/s"
    parts = [params["transport"], f"{params['message_size']} B", rate]
    if params.get("batch_size", 1) != 1:
        parts.append(f"batch {params['batch_size']}")
    if params.get("producers", 1) != 1 or params.get("consumers", 1) != 1:
        parts.append(f"{params['producers']}p{params['consumers']}c")
    if params["transport"] in ("log", "broker"):
        parts.append(f"fsync={params.get('fsync', 'never')}")
    elif params["transport"] == "ring" and params.get("wait", "spin") != "spin":
        parts.append(str(params["wait"]))
    options = params.get("options")
    if isinstance(options, str):  # a table row holds the options as JSON text
        options = json.loads(options or "{}")
    if options:
        parts.append(_options_text(options))
    return " ".join(parts)


def runs_table(loaded: Sequence[tuple[Path, dict[str, Any]]], root: Path | None = None) -> Any:
    """One row per run; `run_dir` is relative to `root` (the experiment's results directory)."""
    import pandas as pd

    rows = []
    for path, r in loaded:
        params = r["parameters"]
        lat = r.get("latency") or {}
        lag = r.get("send_lag") or {}
        counts = r.get("counts") or {}
        procs = r.get("processes") or []
        run_dir = path.parent
        if root is not None:
            try:
                run_dir = run_dir.resolve().relative_to(root.resolve())
            except ValueError:
                run_dir = run_dir.resolve()
        row: dict[str, Any] = {
            "run_id": r["run_id"],
            "config_hash": r["config_hash"],
            "repetition": r["repetition"],
            "label": _label(params),
            "status": r["status"],
            "reason": r["reason"] or "",
            "mode": r["mode"],
            **{k: params.get(k) for k in PARAM_COLUMNS},
            "options": _options_text(params.get("options")),
            "target_rate": r["target_rate"],
            "achieved_rate": r["achieved_rate"],
            "sent": counts.get("sent"),
            "received": counts.get("received"),
            "lost": counts.get("lost"),
            "duplicated": counts.get("duplicated"),
            "samples": lat.get("count"),
            "cpu_s": round(sum(p.get("cpu_user_s", 0) + p.get("cpu_system_s", 0) for p in procs), 4),
            "peak_rss_bytes": max((p.get("peak_rss_bytes", 0) for p in procs), default=0),
            "node": (r.get("environment") or {}).get("node"),
            "git_sha": ((r.get("environment") or {}).get("git") or {}).get("sha"),
            "run_dir": str(run_dir),
        }
        for key, stem in PCT_COLUMNS.items():
            row[f"{stem}_ns"] = lat.get(key) if r["status"] == OK else None
        row["send_lag_p99_ns"] = lag.get("p99") if r["status"] == OK else None
        row["send_lag_max_ns"] = lag.get("max") if r["status"] == OK else None
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["config_hash", "repetition"], kind="stable").reset_index(drop=True)
    return df


def _spread(values: list[float]) -> tuple[float | None, float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def summarize(loaded: Sequence[tuple[Path, dict[str, Any]]]) -> tuple[Any, dict[str, dict[str, str]]]:
    """The per-configuration table and the merged histograms {config_hash: {metric: base64}}."""
    import pandas as pd

    by_config: dict[str, list[dict[str, Any]]] = {}
    for _, r in loaded:
        by_config.setdefault(r["config_hash"], []).append(r)
    rows = []
    merged_out: dict[str, dict[str, str]] = {}
    for h, recs in by_config.items():
        recs.sort(key=lambda r: r["repetition"])
        params = recs[0]["parameters"]
        ok = [r for r in recs if r["status"] == OK]
        failed = [r for r in recs if r["status"] == FAILED]
        skipped = [r for r in recs if r["status"] == SKIPPED]
        if failed:
            status = FAILED
        elif ok:
            status = OK
        else:
            status = SKIPPED
        row: dict[str, Any] = {
            "config_hash": h,
            "label": _label(params),
            "mode": recs[0]["mode"],
            **{k: params.get(k) for k in PARAM_COLUMNS},
            "options": _options_text(params.get("options")),
            "status": status,
            "runs": len(recs),
            "runs_ok": len(ok),
            "runs_failed": len(failed),
            "runs_skipped": len(skipped),
            "reasons": " | ".join(sorted({r["reason"] for r in recs if r["status"] != OK and r["reason"]})),
            "run_ids": ";".join(r["run_id"] for r in recs),
            "target_rate": recs[0]["target_rate"],
        }
        lat_ok = [r["latency"]["histogram"] for r in ok if (r.get("latency") or {}).get("histogram")]
        merged_lat = hdr.merge(hdr.decode(x) for x in lat_ok) if lat_ok else None
        merged: dict[str, str] = {}
        if merged_lat is not None:
            pct = hdr.percentiles(merged_lat)
            merged["latency"] = hdr.encode(merged_lat)
            row["samples"] = pct["count"]
            row["mean_ns"] = pct["mean"]
            for key, stem in PCT_COLUMNS.items():
                row[f"{stem}_ns"] = pct[key]
        else:
            row["samples"] = 0
            row["mean_ns"] = None
            for stem in PCT_COLUMNS.values():
                row[f"{stem}_ns"] = None
        lags = [r["send_lag"]["histogram"] for r in ok if (r.get("send_lag") or {}).get("histogram")]
        if lags:
            lag = hdr.merge(hdr.decode(x) for x in lags)
            merged["send_lag"] = hdr.encode(lag)
            row["send_lag_p99_ns"] = int(lag.get_value_at_percentile(99))
            row["send_lag_max_ns"] = int(lag.get_max_value())
        else:
            row["send_lag_p99_ns"] = row["send_lag_max_ns"] = None
        for key, stem in PCT_COLUMNS.items():
            med, lo, hi = _spread([(r.get("latency") or {}).get(key) for r in ok])
            row[f"{stem}_ns_median"], row[f"{stem}_ns_min"], row[f"{stem}_ns_max"] = med, lo, hi
        med, lo, hi = _spread([r["achieved_rate"] for r in ok])
        row["achieved_rate_median"], row["achieved_rate_min"], row["achieved_rate_max"] = med, lo, hi
        size = params.get("message_size") or 0
        row["mbytes_per_s_median"] = None if med is None else med * size / 1e6
        cpu = [sum(p.get("cpu_user_s", 0) + p.get("cpu_system_s", 0) for p in r["processes"]) for r in ok]
        row["cpu_s_median"] = _spread(cpu)[0]
        rss = [max((p.get("peak_rss_bytes", 0) for p in r["processes"]), default=0) for r in ok]
        row["peak_rss_bytes_max"] = max(rss) if rss else None
        rows.append(row)
        if merged:
            merged_out[h] = merged
    return pd.DataFrame(rows), merged_out


def sustainable(summary: Any, merged: dict[str, dict[str, str]], slo: dict[str, float] | None) -> Any:
    """Per workload (every parameter but the rate), the highest swept rate meeting the SLO.

    The rate sweep is the search: a rate qualifies when its configuration is OK (every
    repetition reached its rate without loss) and the merged histogram's SLO percentile is
    within the bound. Workloads swept at fewer than two rates are left out.
    """
    import pandas as pd

    columns = ["workload", "transport", "slo", "sustainable_rate", "rates_tested", "rates_meeting_slo"]
    if not slo or summary.empty:
        return pd.DataFrame(columns=columns)
    percentile, bound_ns = float(slo["percentile"]), float(slo["latency_us"]) * 1000
    lat = summary[summary["mode"] == "latency"].copy()
    if lat.empty:
        return pd.DataFrame(columns=columns)
    keys = [c for c in (*PARAM_COLUMNS, "options") if c != "rate"]
    rows = []
    for _, group in lat.groupby(keys, dropna=False, sort=False):
        if group["rate"].nunique() < 2:
            continue
        meeting = []
        for _, row in group.iterrows():
            # The SLO percentile need not be a stored column: read it from the merged histogram.
            value = _percentile_of(row, percentile, merged)
            if row["status"] == OK and value is not None and value <= bound_ns:
                meeting.append(int(row["rate"]))
        first = group.iloc[0]
        rows.append(
            {
                "workload": _label({**first.to_dict(), "rate": "max"}).replace(" max", ""),
                "transport": first["transport"],
                "slo": f"P{percentile:g} <= {slo['latency_us']:g} us",
                "sustainable_rate": max(meeting) if meeting else None,
                "rates_tested": ";".join(str(int(x)) for x in sorted(group["rate"])),
                "rates_meeting_slo": ";".join(str(x) for x in sorted(meeting)),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _percentile_of(row: Any, percentile: float, merged: dict[str, dict[str, str]]) -> float | None:
    enc = merged.get(row["config_hash"], {}).get("latency")
    if not enc:
        return None
    return float(hdr.decode(enc).get_value_at_percentile(percentile))


def aggregate(
    records: Iterable[str | Path], out_dir: str | Path, slo: dict[str, float] | None = None
) -> dict[str, Path]:
    """Write runs.csv, summary.csv, merged.json and sustainable.csv into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_records(records)
    if not loaded:
        raise ValueError("no run records to aggregate")
    runs = runs_table(loaded, root=out)
    summary, merged = summarize(loaded)
    sustain = sustainable(summary, merged, slo)
    paths = {
        "runs": out / "runs.csv",
        "summary": out / "summary.csv",
        "merged": out / "merged.json",
        "sustainable": out / "sustainable.csv",
    }
    runs.to_csv(paths["runs"], index=False)
    summary.to_csv(paths["summary"], index=False)
    sustain.to_csv(paths["sustainable"], index=False)
    with open(paths["merged"], "w", encoding="utf-8") as f:
        json.dump({"experiment": loaded[0][1]["experiment"], "slo": slo, "histograms": merged}, f, indent=1)
        f.write("\n")
    return paths
