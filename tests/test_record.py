"""The record format (docs/FORMAT.md): golden bytes, round trips, every way a record can be bad."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanomq import record
from nanomq._ffi import ffi, lib
from nanomq.errors import CorruptRecordError, PayloadTooLargeError
from nanomq.record import Codec, ScanStatus

GOLDEN = json.loads((Path(__file__).parent / "data" / "record_golden.json").read_text())


def reference_encode(
    value: bytes, key: bytes | None, ts: int, producer_id: int, sequence: int, offset: int
) -> bytes:
    """docs/FORMAT.md written out with struct and the `crc32c` package: an independent encoder."""
    klen = 0 if key is None else len(key)
    length = 64 + klen + len(value)
    flags = 0 if key is None else 4
    body = struct.pack(
        "<I4sBBHIIqQQQ", length, b"NMQ1", 1, flags, klen, len(value), len(value), ts, producer_id, sequence, 0
    )
    body += (key or b"") + value
    out = struct.pack("<QI", offset, crc32c.crc32c(body)) + body
    return out + bytes(-len(out) % 8)


def test_golden_records_match_the_specification_and_the_encoder() -> None:
    g = GOLDEN["records"]
    f = g[0]["fields"]
    spec = reference_encode(
        f["value"].encode(),
        f["key"].encode(),
        f["timestamp_ns"],
        f["producer_id"],
        f["sequence"],
        f["offset"],
    )
    assert spec.hex() == g[0]["hex"]
    assert (
        record.encode(
            b"hello", key=b"k", timestamp_ns=f["timestamp_ns"], producer_id=7, sequence=42, offset=5
        ).hex()
        == g[0]["hex"]
    )
    assert reference_encode(b"", None, -1, 0, 0, 0).hex() == g[1]["hex"]
    assert record.encode(b"", timestamp_ns=-1).hex() == g[1]["hex"]
    batch = reference_encode(b"ab", None, 1, 2**64 - 1, 9, 2**63) + reference_encode(
        b"cde", b"", 2, 2**64 - 1, 10, 2**63 + 1
    )
    assert batch.hex() == g[2]["hex"]
    got = record.encode_batch(
        [b"ab", b"cde"],
        keys=[None, b""],
        timestamp_ns=[1, 2],
        producer_id=2**64 - 1,
        first_sequence=9,
        first_offset=2**63,
    )
    assert got.hex() == g[2]["hex"]


def test_header_is_64_bytes_and_records_are_8_aligned() -> None:
    assert record.HEADER_SIZE == 64
    for klen in (None, 0, 1, 7, 8):
        for vlen in range(0, 20):
            size = record.record_size(klen, vlen)
            assert size % 8 == 0 and size - 8 < 64 + (klen or 0) + vlen <= size


def test_decoded_fields_round_trip() -> None:
    values = [b"a", b"", bytes(range(256)) * 4, b"x" * record.MAX_PAYLOAD]
    keys = [None, b"", b"key", b"k" * record.MAX_KEY]
    buf = record.encode_batch(
        values, keys, timestamp_ns=123, producer_id=77, first_sequence=5, first_offset=40
    )
    recs = record.decode_batch(buf, first_offset=40)
    assert [r.value for r in recs] == values
    assert [r.key for r in recs] == keys
    assert [r.offset for r in recs] == [40, 41, 42, 43]
    assert [r.sequence for r in recs] == [5, 6, 7, 8]
    assert {r.timestamp for r in recs} == {123} and {r.producer_id for r in recs} == {77}
    assert sum(r.size for r in recs) == len(buf)
    assert bytes(recs[2].raw) == buf[recs[0].size + recs[1].size :][: recs[2].size]


@pytest.mark.parametrize("codec", [Codec.ZSTD, Codec.LZ4, "zstd", "lz4"])
def test_compressed_values_round_trip_and_incompressible_ones_are_stored_plain(codec) -> None:
    compressible = b"abcd" * 10_000
    noise = random.Random(1).randbytes(5000)
    buf = record.encode_batch([compressible, noise, b""], keys=[b"k", None, None], codec=codec)
    recs = record.decode_batch(buf)
    assert [r.value for r in recs] == [compressible, noise, b""]
    assert recs[0].codec == Codec.parse(codec) and len(recs[0].value_view) < len(compressible) // 10
    assert recs[1].codec == Codec.NONE and recs[2].codec == Codec.NONE
    assert recs[0].key == b"k"


def test_payload_and_key_limits_are_enforced_with_the_limit_named() -> None:
    with pytest.raises(PayloadTooLargeError, match="65537 bytes exceeds the limit of 65536"):
        record.encode(b"x" * (record.MAX_PAYLOAD + 1))
    with pytest.raises(PayloadTooLargeError, match="key of 65536 bytes exceeds the limit of 65535"):
        record.encode(b"x", key=b"k" * (record.MAX_KEY + 1))
    with pytest.raises(PayloadTooLargeError, match="record 1"):
        record.encode_batch([b"ok", b"x" * (record.MAX_PAYLOAD + 1)])
    with pytest.raises(PayloadTooLargeError, match="key of record 0"):
        record.encode_batch([b"ok"], keys=[b"k" * (record.MAX_KEY + 1)])
    with pytest.raises(ValueError, match="2 keys for 1 values"):
        record.encode_batch([b"ok"], keys=[b"a", b"b"])


def test_c_encoder_refuses_a_small_buffer_and_bad_codec_lengths() -> None:
    out = bytearray(64)
    assert (
        lib.nmq_record_encode(ffi.from_buffer(out), 64, ffi.NULL, -1, b"x", 1, 1, 0, 0, 0, 0, 0)
        == lib.NMQ_EINVAL
    )
    assert out == bytearray(64)
    out = bytearray(80)
    assert (
        lib.nmq_record_encode(ffi.from_buffer(out), 80, ffi.NULL, -1, b"x", 1, 2, 0, 0, 0, 0, 0)
        == lib.NMQ_EINVAL
    )
    assert (
        lib.nmq_record_encode(ffi.from_buffer(out), 80, ffi.NULL, -1, b"x", 1, 1, 3, 0, 0, 0, 0)
        == lib.NMQ_EINVAL
    )
    big = 70000
    assert (
        lib.nmq_record_encode(ffi.from_buffer(out), 80, ffi.NULL, -1, b"x", big, big, 0, 0, 0, 0, 0)
        == lib.NMQ_ETOOBIG
    )


def test_every_single_bit_flip_is_detected() -> None:
    buf = record.encode_batch([b"hello", b"world!!"], keys=[b"key", None], first_offset=7)
    for bit in range(len(buf) * 8):
        bad = bytearray(buf)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptRecordError) as err:
            record.validate_batch(bad, first_offset=7)
        assert err.value.position in (0, record.record_size(3, 5))


def test_scan_reads_any_contiguous_buffer_and_names_what_it_cannot() -> None:
    big = record.encode_batch([b"v" * 1000] * 100)  # over 64 KiB: scanned with the GIL released
    small = record.encode_batch([b"v" * 10] * 3)
    for data, n in ((big, 100), (small, 3)):
        for buf in (data, bytearray(data), memoryview(data), memoryview(bytearray(data))[: len(data)]):
            assert record.scan(buf) == (n, len(data), ScanStatus.END)
        bad = bytearray(data)
        bad[len(data) - len(data) // n + record.HEADER_SIZE] ^= 1  # the last record's first value byte
        assert record.scan(bad) == (n - 1, len(data) - len(data) // n, ScanStatus.BAD_CRC)
    with pytest.raises(TypeError, match="bytes-like object is required, not 'str'"):
        record.scan("records")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not 'memoryview'"):
        record.scan(memoryview(big)[::2])  # not contiguous
    with pytest.raises(OverflowError):
        record.scan(small, 2**63)
    with pytest.raises(CorruptRecordError, match="record 2 at byte 160: a record runs past the end"):
        record.validate_batch(small[: len(small) - 8])


def test_scan_reports_where_and_why_it_stopped() -> None:
    one = record.encode(b"payload", offset=0)
    two = record.encode(b"payload", offset=1)
    assert record.scan(one + two, 0) == (2, len(one) * 2, ScanStatus.END)
    assert record.scan(one + two + bytes(200), 0) == (2, len(one) * 2, ScanStatus.ZERO)
    assert record.scan(one + two[:-8], 0) == (1, len(one), ScanStatus.SHORT)
    assert record.scan(one + one, 0) == (1, len(one), ScanStatus.BAD_OFFSET)
    assert record.scan(one + one) == (2, 2 * len(one), ScanStatus.END)  # offsets unchecked
    assert record.scan(one + two, 0, max_records=1) == (1, len(one), ScanStatus.LIMIT)
    assert record.scan(b"") == (0, 0, ScanStatus.END)
    assert record.scan(bytes(10)) == (0, 0, ScanStatus.ZERO)
    assert record.scan(b"\x01" + bytes(9)) == (0, 0, ScanStatus.SHORT)
    bad_crc = bytearray(one)
    bad_crc[-2] ^= 0xFF  # the last value byte
    assert record.scan(bad_crc)[2] is ScanStatus.BAD_CRC
    bad_pad = bytearray(one)
    bad_pad[-1] = 1  # padding: "payload" is 7 bytes, so the record ends in one zero byte
    assert record.scan(bad_pad)[2] is ScanStatus.BAD_HEADER


def test_truncation_at_every_length_keeps_exactly_the_whole_records() -> None:
    recs = [record.encode(bytes(n), offset=i) for i, n in enumerate([0, 1, 9, 64, 100])]
    buf = b"".join(recs)
    ends = [sum(len(r) for r in recs[:i]) for i in range(len(recs) + 1)]
    for cut in range(len(buf) + 1):
        count, nbytes, status = record.scan(buf[:cut], 0)
        whole = max(i for i, e in enumerate(ends) if e <= cut)
        assert (count, nbytes) == (whole, ends[whole])
        rest = buf[ends[whole] : cut]
        if not rest:
            assert status is ScanStatus.END
        else:  # a torn header that is still all zeros (offset 0) reads as unwritten space
            assert status is (ScanStatus.ZERO if rest.count(0) == len(rest) else ScanStatus.SHORT)


def test_stamping_offsets_keeps_checksums_valid() -> None:
    buf = bytearray(record.encode_batch([b"a", b"bb", b"ccc"]))
    assert record.stamp_offsets(buf, 1000) == 3
    assert [r.offset for r in record.decode_batch(buf, first_offset=1000)] == [1000, 1001, 1002]
    assert record.stamp_offsets(memoryview(buf), 5) == 3
    assert record.validate_batch(buf, 5) == (3, len(buf))
    torn = bytearray(buf[:-8])
    with pytest.raises(CorruptRecordError, match="validate it first"):
        record.stamp_offsets(torn, 0)
    assert torn == buf[:-8]  # nothing was written


def test_validation_error_names_the_position_offset_and_reason() -> None:
    buf = bytearray(record.encode_batch([b"a", b"b"], first_offset=3))
    buf[record.record_size(None, 1) + 30] ^= 1  # raw_len of record 1
    with pytest.raises(CorruptRecordError, match=r"record 1 at byte 72 \(offset 4\)") as err:
        record.validate_batch(buf, first_offset=3)
    assert (err.value.position, err.value.offset, err.value.reason) == (72, 4, "header")


def test_record_is_a_view_until_a_field_is_read() -> None:
    buf = bytearray(record.encode(b"value", key=b"key"))
    rec = record.decode_batch(buf)[0]
    view = rec.value_view
    assert isinstance(view, memoryview) and view.obj is buf
    buf[64 + 3] = ord("V")  # the view sees the buffer, not a copy
    assert bytes(rec.value_view) == b"Value"
    assert "value=<5 bytes>" in repr(rec)


values_strategy = st.lists(st.binary(max_size=300), max_size=20)
keys_strategy = st.one_of(st.none(), st.binary(max_size=40))


@settings(max_examples=150, deadline=None)
@given(values=values_strategy, data=st.data())
def test_any_batch_round_trips_and_scans_whole(values, data) -> None:
    keys = data.draw(st.lists(keys_strategy, min_size=len(values), max_size=len(values)))
    first = data.draw(st.integers(0, 2**62))
    buf = record.encode_batch(values, keys, first_offset=first, first_sequence=3)
    recs = record.decode_batch(buf, first_offset=first)
    assert [(r.key, r.value) for r in recs] == list(zip(keys, values, strict=True))
    expected = b"".join(
        reference_encode(v, k, recs[i].timestamp, 0, 3 + i, first + i)
        for i, (v, k) in enumerate(zip(values, keys, strict=True))
    )
    assert buf == expected


@settings(max_examples=150, deadline=None)
@given(values=values_strategy, garbage=st.binary(min_size=1, max_size=200))
def test_garbage_after_a_batch_never_adds_a_record(values, garbage) -> None:
    buf = record.encode_batch(values, first_offset=0)
    count, nbytes, status = record.scan(buf + garbage, 0)
    assert (count, nbytes) == (len(values), len(buf))
    assert status in (ScanStatus.ZERO, ScanStatus.SHORT, ScanStatus.BAD_HEADER)


def test_buffers_are_measured_in_bytes_not_items() -> None:
    from array import array

    words = array("I", [1, 2, 3])  # len() is 3, the buffer is 12 bytes
    buf = record.encode_batch([words, memoryview(b"abc")], keys=[memoryview(array("H", [7])), None])
    recs = record.decode_batch(buf)
    assert [r.value for r in recs] == [words.tobytes(), b"abc"]
    assert recs[0].key == array("H", [7]).tobytes()


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.binary(max_size=300), max_size=40),
    keyed=st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=40),
    one_stamp=st.booleans(),
    first_offset=st.integers(0, 2**40),
)
def test_encoding_into_a_buffer_from_the_lists_matches_encode_batch(
    values: list[bytes], keyed: list[bytes | None], one_stamp: bool, first_offset: int
) -> None:
    n = len(values)
    keys = (keyed + [None] * n)[:n] if keyed else None
    stamps: int | list[int] = 77 if one_stamp else list(range(1000, 1000 + n))
    kw = {"timestamp_ns": stamps, "producer_id": 9, "first_sequence": 3, "first_offset": first_offset}
    want = record.encode_batch(values, keys, **kw)
    views = [memoryview(bytearray(v)) for v in values]  # buffers other than bytes too
    got = record.encode_batch_after(b"HEAD", views, keys, into=bytearray(64 * 1024), **kw)
    assert isinstance(got, memoryview) and bytes(got) == b"HEAD" + want


def test_encoding_into_a_buffer_reports_bad_batches_as_the_general_path_does() -> None:
    buf = bytearray(1 << 20)
    over = b"x" * (record.MAX_PAYLOAD + 1)
    with pytest.raises(PayloadTooLargeError, match="record 1"):
        record.encode_batch_after(b"", [b"ok", over], into=buf)
    with pytest.raises(ValueError, match="2 keys for 1 values"):
        record.encode_batch_after(b"", [b"a"], [b"k", b"l"], into=buf)
    with pytest.raises(ValueError, match="timestamps"):
        record.encode_batch_after(b"", [b"a"], timestamp_ns=[1, 2], into=buf)
    with pytest.raises(TypeError):
        record.encode_batch_after(b"", [b"a", 5], into=buf)  # type: ignore[list-item]
    small = bytearray(100)  # room for the prefix, not the record: a new buffer, the same bytes
    got = record.encode_batch_after(b"P", [b"v" * 200], timestamp_ns=1, into=small)
    assert got is not small and bytes(got) == b"P" + record.encode_batch([b"v" * 200], timestamp_ns=1)


def test_encoding_into_a_buffer_refuses_out_of_range_ids_as_the_general_path_does() -> None:
    buf = bytearray(4096)
    for kw in ({"producer_id": -1}, {"first_sequence": 2**64}, {"first_offset": -5}):
        with pytest.raises(OverflowError):
            record.encode_batch([b"a"], **kw)
        with pytest.raises(OverflowError):
            record.encode_batch_after(b"", [b"a"], into=buf, **kw)
