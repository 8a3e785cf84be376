"""The report of an experiment: reports/<experiment>/report.md and report.html.

Built from the aggregated tables (results/<experiment>/summary.csv, runs.csv,
sustainable.csv), the run records (for the environment) and the figure manifests
(reports/<experiment>/figures/<family>/figures.json). Both files come from one list of
blocks, so the Markdown and the HTML always say the same thing. Latencies are shown in
microseconds; a spread is the min–max of the per-repetition values.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nanomq.bench.aggregate import find_records
from nanomq.bench.plots import MANIFEST, load_results, transport_name
from nanomq.bench.records import FAILED, OK, SKIPPED, read_record

__all__ = ["build_report", "reproduce_command"]

FAMILY_TITLES = {
    "peers": "NanoMQ against its peers",
    "vs_size": "Latency against message size",
    "vs_rate": "Latency against rate",
    "spectrum": "Percentile spectra",
    "throughput_latency": "Throughput against latency",
    "batch": "Effect of batch size",
    "timeline": "Latency over time, every run",
}

Block = tuple[Any, ...]


def reproduce_command(experiment_file: str | None) -> str:
    """The one command that re-runs the workflow for this experiment file."""
    if not experiment_file or Path(experiment_file).as_posix().endswith("experiments/default.yaml"):
        return "make report"
    return f"make report EXPERIMENT={Path(experiment_file).as_posix()}"


# --------------------------------------------------------------- formatting ----


def _us(ns: Any) -> str:
    if ns is None or ns != ns:  # None or NaN
        return "–"
    us = float(ns) / 1000
    if us >= 100:
        return f"{us:,.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def _with_spread(row: Any, stem: str) -> str:
    value = _us(row.get(f"{stem}_ns"))
    lo, hi = row.get(f"{stem}_ns_min"), row.get(f"{stem}_ns_max")
    if value == "–" or lo is None or lo != lo or int(row.get("runs_ok", 0)) < 2:
        return value
    return f"{value} ({_us(lo)}–{_us(hi)})"


def _rate(x: Any) -> str:
    if x is None or x != x:
        return "–"
    x = float(x)
    if x >= 999_500:
        return f"{x / 1e6:.2f} M"
    if x >= 999.5:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def _rate_spread(row: Any) -> str:
    med = row.get("achieved_rate_median")
    if med is None or med != med:
        return "–"
    if int(row.get("runs_ok", 0)) < 2:
        return _rate(med)
    return f"{_rate(med)} ({_rate(row['achieved_rate_min'])}–{_rate(row['achieved_rate_max'])})"


def _mib(b: Any) -> str:
    return "–" if b is None or b != b else f"{float(b) / 2**20:.0f}"


def _num(x: Any) -> str:
    return "–" if x is None or x != x else f"{float(x):.2f}"


# ------------------------------------------------------------------ content ----


def _environment(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    envs = [r.get("environment") or {} for r in records]
    first = envs[0] if envs else {}

    def distinct(get: Any) -> str:
        vals = []
        for e in envs:
            v = get(e)
            if v not in vals:
                vals.append(v)
        return ", ".join("–" if v is None else str(v) for v in vals) or "–"

    loads = [e["load_average"][0] for e in envs if e.get("load_average")]
    git = first.get("git") or {}
    sha = distinct(lambda e: (e.get("git") or {}).get("sha"))
    dirty = any((e.get("git") or {}).get("dirty") for e in envs)
    pk = first.get("packages") or {}
    packages = ", ".join(f"{k} {v}" for k, v in pk.items() if v)
    return [
        ("node(s)", distinct(lambda e: e.get("node"))),
        ("CPU", distinct(lambda e: e.get("cpu_model"))),
        (
            "cores (affinity)",
            distinct(lambda e: f"{e.get('cpu_count')} ({len(e.get('cpu_affinity') or [])})"),
        ),
        ("governor", distinct(lambda e: e.get("governor") or "not visible")),
        ("kernel", distinct(lambda e: e.get("kernel"))),
        ("load average at run start (1 min)", f"{min(loads):.2f}–{max(loads):.2f}" if loads else "–"),
        ("Python", distinct(lambda e: e.get("python"))),
        ("packages", packages or "–"),
        ("git", (sha if git else "–") + (" (working tree had uncommitted changes)" if dirty else "")),
    ]


def _result_tables(summary: Any) -> list[Block]:
    blocks: list[Block] = []
    lat = summary[summary["mode"] == "latency"]
    thr = summary[summary["mode"] == "throughput"]
    if not lat.empty:
        rows = []
        for _, r in lat.iterrows():
            rows.append(
                [
                    r["label"],
                    r["status"],
                    f"{int(r['runs_ok'])}/{int(r['runs'])}",
                    _with_spread(r, "p50"),
                    _with_spread(r, "p99"),
                    _with_spread(r, "p999"),
                    _with_spread(r, "max"),
                    _rate_spread(r),
                    _us(r.get("send_lag_p99_ns")),
                    _num(r.get("cpu_s_median")),
                    _mib(r.get("peak_rss_bytes_max")),
                    r["config_hash"],
                ]
            )
        blocks.append(("h3", "Latency (open loop, from the intended send time), µs"))
        blocks.append(
            (
                "table",
                [
                    "configuration",
                    "status",
                    "OK runs",
                    "P50",
                    "P99",
                    "P99.9",
                    "max",
                    "achieved msg/s",
                    "send lag P99",
                    "CPU s",
                    "peak RSS MiB",
                    "config hash",
                ],
                rows,
            )
        )
    if not thr.empty:
        rows = []
        for _, r in thr.iterrows():
            mb = r.get("mbytes_per_s_median")
            rows.append(
                [
                    r["label"],
                    r["status"],
                    f"{int(r['runs_ok'])}/{int(r['runs'])}",
                    _rate_spread(r),
                    "–" if mb is None or mb != mb else f"{mb:,.1f}",
                    _with_spread(r, "p50"),
                    _with_spread(r, "p99"),
                    _with_spread(r, "max"),
                    _num(r.get("cpu_s_median")),
                    _mib(r.get("peak_rss_bytes_max")),
                    r["config_hash"],
                ]
            )
        blocks.append(("h3", "Throughput (closed loop)"))
        blocks.append(
            (
                "table",
                [
                    "configuration",
                    "status",
                    "OK runs",
                    "msg/s",
                    "MB/s",
                    "P50 µs",
                    "P99 µs",
                    "max µs",
                    "CPU s",
                    "peak RSS MiB",
                    "config hash",
                ],
                rows,
            )
        )
    blocks.append(
        (
            "p",
            "Percentiles are those of the histogram merged over a configuration's OK repetitions "
            "(never averaged percentiles); in brackets, the min–max of the per-repetition values. "
            "A configuration is FAILED when any repetition missed its rate by more than 1 % or "
            "lost or duplicated a message; its failed runs never enter a percentile or a figure.",
        )
    )
    return blocks


def _figure_blocks(figures_dir: Path, report_dir: Path, families: Sequence[str]) -> list[Block]:
    blocks: list[Block] = []
    excluded: dict[str, str] = {}
    for family in families:
        path = figures_dir / family / MANIFEST
        blocks.append(("h3", FAMILY_TITLES.get(family, family)))
        if not path.exists():
            blocks.append(("p", f"Not drawn: {path} is missing."))
            continue
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        if not manifest["figures"]:
            blocks.append(("p", f"Skipped: {manifest['skipped']}."))
        for fig in manifest["figures"]:
            rel = Path(os.path.relpath(figures_dir / family / fig["png"], report_dir)).as_posix()
            svg = Path(os.path.relpath(figures_dir / family / fig["svg"], report_dir)).as_posix()
            blocks.append(("img", rel, fig["title"], svg))
            blocks.append(
                (
                    "p",
                    f"{fig['caption']} Configurations: {', '.join(fig['config_hashes'])}. "
                    f"Runs: {', '.join(fig['run_ids'])}.",
                )
            )
        for entry in manifest.get("excluded", []):
            excluded.setdefault(entry["config_hash"], f"{entry['label']} ({entry['status']})")
    if excluded:
        blocks.insert(
            0,
            (
                "p",
                "Only OK configurations are plotted as results (the timelines also show failed runs, "
                f"marked). Not plotted: {'; '.join(excluded.values())}.",
            ),
        )
    return blocks


def _problem_runs(runs: Any) -> list[Block]:
    bad = runs[runs["status"] != OK]
    blocks: list[Block] = [("h2", "FAILED and SKIPPED runs")]
    if bad.empty:
        blocks.append(("p", "None: every run reached its target rate with no message lost or duplicated."))
        return blocks
    rows = [[r["run_id"], r["label"], r["status"], str(r["reason"])] for _, r in bad.iterrows()]
    blocks.append(("table", ["run", "configuration", "status", "reason"], rows))
    skipped = bad[bad["status"] == SKIPPED]
    if not skipped.empty:
        names = sorted({transport_name(t) for t in skipped["transport"]})
        blocks.append(("p", f"Note: {', '.join(names)} could not run here and were SKIPPED (reasons above)."))
    return blocks


def _display_path(path: Path) -> str:
    """A path relative to this checkout when it is inside it (what a reader can type)."""
    root = Path(__file__).resolve().parents[2]
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _busy_warning(records: list[dict[str, Any]]) -> str | None:
    """A caveat when other work shared the machine.

    Runs follow each other, and a run's producer and consumer keep up to two CPUs busy, so
    the 1-minute load average at a run's start includes the sweep's own previous runs: only
    a load above the CPU count plus one means something else was running too.
    """
    worst, cores = 0.0, 0
    for r in records:
        env = r.get("environment") or {}
        load = env.get("load_average")
        if load:
            worst = max(worst, float(load[0]))
            cores = max(cores, int(env.get("cpu_count") or 0))
    if cores and worst > cores + 1:
        return (
            f"Caution: the machine was busy during these runs (1-minute load average up to {worst:.2f} "
            f"on {cores} CPUs at a run's start, more than this sweep's own runs explain), so other "
            "work competed for the CPUs and the tails (P99 and beyond) are inflated. Re-run on an "
            "idle machine before drawing conclusions."
        )
    return None


def _notes(records: list[dict[str, Any]]) -> list[Block]:
    """What the runs themselves noted (a parameter a transport ignores, a driver left unpinned)."""
    counts: dict[str, int] = {}
    for r in records:
        for note in r.get("notes") or []:
            counts[note] = counts.get(note, 0) + 1
    if not counts:
        return []
    return [
        ("h3", "Notes from the runs"),
        ("ul", [f"{note} ({n} runs)" for note, n in sorted(counts.items())]),
    ]


def _sustainable(results: Path) -> list[Block]:
    import pandas as pd

    path = results / "sustainable.csv"
    if not path.exists() or path.stat().st_size == 0:
        return []
    df = pd.read_csv(path)
    if df.empty:
        return []
    rows = [
        [
            r["workload"],
            r["slo"],
            "none met the SLO"
            if r["sustainable_rate"] != r["sustainable_rate"]
            else f"{r['sustainable_rate']:,.0f}",
            str(r["rates_tested"]).replace(";", ", "),
        ]
        for _, r in df.iterrows()
    ]
    return [
        ("h2", "Sustainable throughput"),
        ("p", "Highest rate of the sweep whose merged histogram meets the latency objective (OK runs only)."),
        ("table", ["workload", "objective", "sustainable msg/s", "rates tested"], rows),
    ]


def build_report(
    results_dir: str | Path,
    figures_dir: str | Path,
    out_dir: str | Path,
    *,
    command: str | None = None,
    experiment_file: str | Path | None = None,
    families: Sequence[str] = tuple(FAMILY_TITLES),
) -> dict[str, Path]:
    """Write report.md and report.html for the experiment whose results are in `results_dir`."""
    results, figures, out = Path(results_dir), Path(figures_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary, runs, _ = load_results(results)
    run_dirs = [results / d for d in runs["run_dir"]]
    records = [read_record(p) for p in find_records(run_dirs)]
    records.sort(key=lambda r: r.get("started_at") or "")
    first = records[0] if records else {}
    name = first.get("experiment", results.name)
    exp_file = first.get("experiment_file")
    description, sha = "", None
    if experiment_file is not None and not exp_file:
        exp_file = _display_path(Path(experiment_file))
    if experiment_file is not None and Path(experiment_file).exists():
        import hashlib

        import yaml

        text = Path(experiment_file).read_text(encoding="utf-8")
        sha = hashlib.sha256(text.encode()).hexdigest()
        description = str((yaml.safe_load(text) or {}).get("description", "")).strip()
    command = command or reproduce_command(exp_file)
    counts = {s: int((runs["status"] == s).sum()) for s in (OK, FAILED, SKIPPED)}
    blocks: list[Block] = [
        ("h1", f"NanoMQ experiment “{name}”"),
        (
            "p",
            f"{len(summary)} configurations, {len(runs)} runs: {counts[OK]} OK, {counts[FAILED]} FAILED, "
            f"{counts[SKIPPED]} SKIPPED. Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} "
            "by the workflow from the run records; do not edit by hand.",
        ),
    ]
    if description:
        blocks.append(("p", description))
    busy = _busy_warning(records)
    if busy:
        blocks.append(("p", busy))
    blocks += [
        ("h2", "Reproduce"),
        ("code", command),
        (
            "p",
            f"Experiment file: {exp_file or '–'}" + (f" (sha256 {sha[:16]}…)" if sha else "") + ". "
            "Raw results: results/<experiment>/runs/<transport>-<config hash>/r<repetition>/ "
            "(record.json, latency.hlog, send_lag.hlog).",
        ),
        ("h2", "Environment"),
        ("table", ["", ""], [[k, v] for k, v in _environment(records)]),
        ("h2", "Results"),
        *_result_tables(summary),
        *_sustainable(results),
        *_problem_runs(runs),
        *_notes(records),
        ("h2", "Figures"),
        *_figure_blocks(figures, out, families),
        ("h2", "Method"),
        (
            "p",
            "Latency runs are open loop: the producer sends at a constant intended rate and each "
            "message's latency is measured from its intended send time, so a stall delays every "
            "message scheduled behind it (coordinated omission corrected); the send lag (actual − "
            "intended send time) is a metric of its own. Throughput runs are closed loop. The "
            "warm-up is recorded in each run's .hlog and excluded from its result. CPU time and "
            "peak RSS of every process of a run are sampled with psutil.",
        ),
    ]
    paths = {"md": out / "report.md", "html": out / "report.html"}
    paths["md"].write_text(_markdown(blocks), encoding="utf-8")
    paths["html"].write_text(_html(blocks, f"NanoMQ experiment {name}"), encoding="utf-8")
    return paths


# ---------------------------------------------------------------- rendering ----


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "code":
            out.append(f"```sh\n{block[1]}\n```")
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})  \n[SVG]({block[3]})")
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
            lines.append("|" + "|".join(" --- " for _ in headers) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
body { color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.FAILED { color: #b00; font-weight: bold; } td.SKIPPED { color: #a60; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 0.6rem; }
"""


def _html(blocks: list[Block], title: str) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{esc(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{esc(block[1])}</p>")
        elif kind == "code":
            out.append(f"<pre><code>{esc(block[1])}</code></pre>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "img":
            out.append(
                f'<figure><a href="{esc(block[3])}"><img src="{esc(block[1])}" alt="{esc(block[2])}"></a>'
                f"<figcaption>{esc(block[2])}</figcaption></figure>"
            )
        elif kind == "table":
            headers, rows = block[1], block[2]
            out.append(
                "<table><thead><tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in headers) + "</tr></thead>"
            )
            body = []
            for row in rows:
                cells = "".join(
                    f'<td class="{esc(str(c))}">{esc(str(c))}</td>'
                    if c in (FAILED, SKIPPED)
                    else f"<td>{esc(str(c))}</td>"
                    for c in row
                )
                body.append(f"<tr>{cells}</tr>")
            out.append("<tbody>" + "".join(body) + "</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
