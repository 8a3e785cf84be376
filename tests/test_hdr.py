"""HDR recording in C (csrc/bench.c) agrees with the hdrhistogram package bucket for bucket."""

from __future__ import annotations

import random
from array import array

import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from nanomq._ffi import ffi, lib
from nanomq.bench import hdr


def _log_uniform(rng: random.Random, n: int, low: float = 1.0, high: float = 1e10) -> list[int]:
    """n values spread evenly on a log scale from `low` ns to `high` ns (1 ns .. 10 s)."""
    import math

    lo, hi = math.log(low), math.log(high)
    return [int(math.exp(rng.uniform(lo, hi))) for _ in range(n)]


def _package_index_or_none(h: HdrHistogram, value: int) -> int | None:
    """Where record_value would put `value`, or None when it would drop it."""
    if value < 0:
        return None
    index = h._counts_index_for(value)
    return index if 0 <= index < h.counts_len else None


def test_counts_from_c_encode_byte_identical_to_record_value() -> None:
    rng = random.Random(20240611)
    values = [*_log_uniform(rng, 5000), 0, 1, 2, 1023, 1024, 2047, 2048, 2049, 10**9, hdr.HIGHEST]
    direct = hdr.new_histogram()
    for v in values:
        assert direct.record_value(v)
    rebuilt, dropped = hdr.histogram_from_values(array("q", values))
    assert dropped == 0
    assert rebuilt.get_total_count() == len(values)
    assert rebuilt.encode() == direct.encode()
    assert hdr.percentiles(rebuilt) == hdr.percentiles(direct)


def test_out_of_range_values_are_counted_as_dropped_not_recorded() -> None:
    h = hdr.new_histogram()
    last_fit = h.get_highest_equivalent_value(h.get_value_from_index(h.counts_len - 1))
    values = [5, -1, -(2**63), last_fit, last_fit + 1, 2**62, 2**63 - 1, 7]
    expected_dropped = sum(1 for v in values if not hdr.new_histogram().record_value(v))
    assert expected_dropped == 5  # both negatives and the three beyond the last bucket
    rebuilt, dropped = hdr.histogram_from_values(array("q", values))
    assert dropped == expected_dropped
    assert rebuilt.get_total_count() == len(values) - dropped


def test_c_index_equals_package_counts_index_for_many_values() -> None:
    h = hdr.new_histogram()
    layout = hdr.layout()
    rng = random.Random(7)
    values = list(range(0, 5000))
    for shift in range(1, 63):  # every power of two and its neighbours: bucket edges
        for d in (-1, 0, 1):
            values.append((1 << shift) + d)
    values += _log_uniform(rng, 20000, 1, 4e12)
    values += [rng.randrange(0, 2**63) for _ in range(2000)]
    for v in values:
        expected = _package_index_or_none(h, v)
        assert lib.nmq_hdr_index(layout, v) == (-1 if expected is None else expected), v


_H = hdr.new_histogram()


@settings(max_examples=2000, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_c_index_equals_package_for_any_int64(value: int) -> None:
    expected = _package_index_or_none(_H, value)
    assert lib.nmq_hdr_index(hdr.layout(), value) == (-1 if expected is None else expected)


@pytest.mark.parametrize("figures", [1, 2, 3, 4, 5])
@pytest.mark.parametrize(
    "lowest, highest", [(1, 3_600_000_000_000), (1, 2), (1, 10**6), (1000, 10**12), (1, 2**62)]
)
def test_c_layout_matches_the_package(figures: int, lowest: int, highest: int) -> None:
    h = HdrHistogram(lowest, highest, figures)
    layout = ffi.new("nmq_hdr_layout *")
    assert lib.nmq_hdr_layout_init(layout, lowest, highest, figures) == 0
    assert layout.unit_magnitude == h.unit_magnitude
    assert layout.sub_bucket_half_count_magnitude == h.sub_bucket_half_count_magnitude
    assert layout.sub_bucket_count == h.sub_bucket_count
    assert layout.sub_bucket_half_count == h.sub_bucket_half_count
    assert layout.sub_bucket_mask == h.sub_bucket_mask
    assert layout.bucket_count == h.bucket_count
    assert layout.counts_len == h.counts_len


def test_c_layout_refuses_invalid_ranges() -> None:
    layout = ffi.new("nmq_hdr_layout *")
    assert lib.nmq_hdr_layout_init(layout, 0, 100, 3) == lib.NMQ_EINVAL
    assert lib.nmq_hdr_layout_init(layout, 10, 15, 3) == lib.NMQ_EINVAL
    assert lib.nmq_hdr_layout_init(layout, 1, 100, 6) == lib.NMQ_EINVAL


def test_harness_layout_is_the_histograms_layout() -> None:
    h = hdr.new_histogram()
    assert (h.lowest_trackable_value, h.highest_trackable_value, h.significant_figures) == (
        hdr.LOWEST,
        hdr.HIGHEST,
        hdr.SIGNIFICANT_FIGURES,
    )
    assert hdr.layout().counts_len == h.counts_len


def test_counts_to_histogram_takes_c_arrays_and_sequences() -> None:
    counts = hdr.new_counts()
    values = array("q", [3, 3, 1500, 2_000_000])
    assert lib.nmq_hdr_record(hdr.layout(), counts, ffi.from_buffer("int64_t[]", values), len(values)) == 0
    from_c = hdr.counts_to_histogram(counts)
    from_list = hdr.counts_to_histogram(list(counts))
    from_array = hdr.counts_to_histogram(array("Q", list(counts)))
    assert from_c.encode() == from_list.encode() == from_array.encode()
    assert from_c.get_total_count() == 4
    with pytest.raises(ValueError, match="entries"):
        hdr.counts_to_histogram([0] * 10)


def test_histogram_from_values_wants_int64() -> None:
    with pytest.raises(TypeError, match="int64"):
        hdr.histogram_from_values(array("i", [1, 2, 3]))
    h, dropped = hdr.histogram_from_values(array("q"))
    assert (h.get_total_count(), dropped) == (0, 0)


def test_percentiles_are_ordered_and_encoding_round_trips() -> None:
    rng = random.Random(3)
    h, _ = hdr.histogram_from_values(array("q", _log_uniform(rng, 3000, 100, 1e8)))
    p = hdr.percentiles(h)
    assert set(p) == {"p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "count"}
    assert 0 < p["p50"] <= p["p90"] <= p["p99"] <= p["p99.9"] <= p["p99.99"] <= p["max"]
    assert p["count"] == 3000
    back = hdr.decode(hdr.encode(h))
    assert hdr.percentiles(back) == p
    assert hdr.percentiles(hdr.new_histogram())["count"] == 0
