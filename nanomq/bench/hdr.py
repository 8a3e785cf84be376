"""HDR histograms for the harness: samples are bucketed in C, the histogram is rebuilt in Python.

The `hdrhistogram` package's `record_value` costs about a microsecond a call, too slow
per message. csrc/bench.c counts samples into an array laid out exactly like the
package's counts (same index math), and `counts_to_histogram` rebuilds the Python
histogram from the non-zero buckets — its `encode()` is byte-identical to recording the
values one by one. Values are nanoseconds; out-of-range samples are counted, never lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hdrh.histogram import HdrHistogram

from nanomq._ffi import ffi, lib

__all__ = [
    "HIGHEST",
    "LOWEST",
    "PERCENTILES",
    "SIGNIFICANT_FIGURES",
    "counts_to_histogram",
    "decode",
    "encode",
    "histogram_from_values",
    "layout",
    "merge",
    "new_counts",
    "new_histogram",
    "percentiles",
]

LOWEST = 1
"""Lowest discernible value: 1 ns."""
HIGHEST = 3_600_000_000_000
"""Highest trackable value: one hour in nanoseconds."""
SIGNIFICANT_FIGURES = 3
"""Value precision: 0.1 % of the value."""
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)
"""The percentiles `percentiles()` reports, besides max, mean and count."""

_LAYOUT = ffi.new("nmq_hdr_layout *")
if lib.nmq_hdr_layout_init(_LAYOUT, LOWEST, HIGHEST, SIGNIFICANT_FIGURES) != 0:  # pragma: no cover
    raise RuntimeError("nmq_hdr_layout_init refused the harness's histogram range")


def new_histogram() -> HdrHistogram:
    """An empty histogram with the harness's range (1 ns to 1 hour, 3 significant figures)."""
    return HdrHistogram(LOWEST, HIGHEST, SIGNIFICANT_FIGURES)


def layout() -> Any:
    """The C layout (`nmq_hdr_layout *`) of `new_histogram()`'s counts, for the C calls."""
    return _LAYOUT


def new_counts() -> Any:
    """A zeroed C counts array (`uint64_t[counts_len]`) for the C recorders."""
    return ffi.new("uint64_t[]", _LAYOUT.counts_len)


def counts_to_histogram(counts: Any) -> HdrHistogram:
    """Rebuild a histogram from bucket counts in `new_histogram()`'s layout.

    `counts` is any sequence or buffer of unsigned 64-bit counts (a cffi `uint64_t[]`,
    an `array('Q')`, a list) of exactly `counts_len` entries.
    """
    n = _LAYOUT.counts_len
    if isinstance(counts, ffi.CData):
        counts = ffi.unpack(counts, len(counts))
    elif not isinstance(counts, list):
        counts = list(counts)
    if len(counts) != n:
        raise ValueError(f"counts array has {len(counts)} entries, the histogram layout has {n}")
    h = new_histogram()
    value_of, record = h.get_value_from_index, h.record_value
    for index, count in enumerate(counts):
        if count:
            record(value_of(index), int(count))
    return h


def histogram_from_values(values: Any) -> tuple[HdrHistogram, int]:
    """Histogram of int64 nanosecond samples (an `array('q')` or any int64 buffer), and how
    many samples were out of range (negative or beyond HIGHEST) and so not recorded.

    Counting is one C call; only the non-zero buckets cost a Python call.
    """
    if isinstance(values, ffi.CData):
        data, n = ffi.cast("int64_t *", values), len(values)
    else:
        view = memoryview(values)
        if view.format.lstrip("<=@") not in ("q", "l") or view.itemsize != 8:
            raise TypeError(f"values must be int64 (array('q')), not format {view.format!r}")
        n = view.nbytes // 8
        data = ffi.cast("int64_t *", ffi.from_buffer(view)) if n else ffi.NULL
    counts = new_counts()
    dropped = lib.nmq_hdr_record(_LAYOUT, counts, data, n) if n else 0
    return counts_to_histogram(counts), int(dropped)


def percentiles(h: HdrHistogram) -> dict[str, float | int]:
    """p50, p90, p99, p99.9, p99.99, max (ns, highest equivalent values), mean (ns), count.

    The mean comes from the non-zero buckets only: hdrhistogram's get_mean_value() walks
    every sub-bucket in Python (about 0.4 s for this module's 1 ns – 1 h range).
    """
    import numpy as np

    count = h.get_total_count()
    values = h.get_percentile_to_value_dict(list(PERCENTILES)) if count else {}
    out: dict[str, float | int] = {f"p{p:g}": int(values.get(p, 0)) for p in PERCENTILES}
    out["max"] = int(h.get_max_value()) if count else 0
    total = 0
    if count:
        # HdrHistogram's index math (get_value_from_index), vectorised over the non-zero buckets
        counts = np.ctypeslib.as_array(h.counts)
        index = np.flatnonzero(counts).astype(np.int64)
        half, unit = h.sub_bucket_half_count, h.unit_magnitude
        bucket = (index >> h.sub_bucket_half_count_magnitude) - 1
        sub = (index & (half - 1)) + half
        first = bucket < 0
        sub[first] -= half
        bucket[first] = 0
        lowest = sub << (bucket + unit)
        median = lowest + ((np.int64(1) << (bucket + unit)) >> 1)
        total = sum(c * m for c, m in zip(counts[index].tolist(), median.tolist(), strict=True))
    out["mean"] = total / count if count else 0.0
    out["count"] = int(count)
    return out


def encode(h: HdrHistogram) -> str:
    """The histogram as HdrHistogram's compressed V2 base64 text (what `decode` reads back)."""
    blob = h.encode()
    return blob.decode("ascii") if isinstance(blob, bytes) else str(blob)


def decode(text: str | bytes) -> HdrHistogram:
    """A histogram from `encode()`'s text (or any V2 base64 histoblob)."""
    return HdrHistogram.decode(text.encode("ascii") if isinstance(text, str) else text)


def merge(histograms: Iterable[HdrHistogram]) -> HdrHistogram:
    """One histogram holding the counts of all of `histograms`."""
    out = new_histogram()
    for h in histograms:
        out.add(h)
    return out
