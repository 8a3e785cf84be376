"""CRC32C: the published vectors, hardware against software against the `crc32c` package,
at every alignment, continued over pieces, over every bytes-like type."""

from __future__ import annotations

import json
import platform
import random
from array import array
from pathlib import Path

import crc32c as reference
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nanomq
from nanomq.crc32c import crc32c, crc32c_software, hardware

VECTORS = json.loads((Path(__file__).parent / "data" / "crc32c_vectors.json").read_text())["vectors"]
IMPLEMENTATIONS = {"nanomq.crc32c": crc32c, "nanomq.crc32c_software": crc32c_software}


def reference_crc(data: bytes, crc: int = 0) -> int:
    return reference.crc32c(bytes(data), crc)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_published_vector(vector: dict[str, str], impl: str) -> None:
    data = bytes.fromhex(vector["hex"])
    assert IMPLEMENTATIONS[impl](data) == int(vector["crc"], 16)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_rfc_3720_vectors_written_out(impl: str) -> None:
    f = IMPLEMENTATIONS[impl]
    assert f(bytes(32)) == 0x8A9136AA
    assert f(b"\xff" * 32) == 0x62A8AB43
    assert f(bytes(range(32))) == 0x46DD794E
    assert f(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert f(b"123456789") == 0xE3069283


def test_vectors_file_agrees_with_the_reference_package() -> None:
    for vector in VECTORS:
        assert reference_crc(bytes.fromhex(vector["hex"])) == int(vector["crc"], 16), vector["name"]


def test_package_exports_the_hardware_path() -> None:
    assert nanomq.crc32c is crc32c


def test_hardware_is_used_when_the_cpu_has_sse4_2() -> None:
    assert isinstance(hardware(), bool)
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the CPU check below reads x86 flags")
    flags = Path("/proc/cpuinfo").read_text()
    assert hardware() == (" sse4_2" in flags)


def test_hardware_software_and_reference_agree_on_every_length_and_alignment() -> None:
    rng = random.Random(3720)
    backing = bytearray(rng.randbytes(5000 + 64))
    view = memoryview(backing)
    lengths = [*range(0, 80), *(rng.randrange(80, 5001) for _ in range(120)), 4095, 4096, 4097, 5000]
    for length in lengths:
        for start in range(9):  # every 8-byte alignment, and one past it
            piece = view[start : start + length]
            want = reference_crc(piece)
            assert crc32c(piece) == want, (length, start)
            assert crc32c_software(piece) == want, (length, start)


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.binary(max_size=5000), start=st.integers(0, 31), crc=st.integers(0, 0xFFFFFFFF))
def test_paths_agree_on_random_data_at_random_alignment_and_start_value(
    data: bytes, start: int, crc: int
) -> None:
    piece = memoryview(bytearray(start) + data)[start:]
    want = reference_crc(data, crc)
    assert crc32c(piece, crc) == want
    assert crc32c_software(piece, crc) == want


@settings(max_examples=200, deadline=None, database=None)
@given(a=st.binary(max_size=3000), b=st.binary(max_size=3000))
def test_continuing_over_pieces_equals_the_crc_of_the_whole(a: bytes, b: bytes) -> None:
    whole = crc32c(a + b)
    assert crc32c(b, crc32c(a)) == whole
    assert crc32c_software(b, crc32c_software(a)) == whole
    assert crc32c(b, crc32c_software(a)) == whole
    assert reference_crc(b, reference_crc(a)) == whole


def test_continuing_over_many_random_pieces_equals_the_crc_of_the_whole() -> None:
    rng = random.Random(7)
    data = rng.randbytes(1 << 20)
    cuts = sorted(rng.sample(range(1, len(data)), 300))
    crc = crc_sw = 0
    for lo, hi in zip([0, *cuts], [*cuts, len(data)], strict=True):
        crc = crc32c(data[lo:hi], crc)
        crc_sw = crc32c_software(memoryview(data)[lo:hi], crc_sw)
    assert crc == crc_sw == crc32c(data) == reference_crc(data)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_accepts_bytes_bytearray_and_memoryview(impl: str) -> None:
    f = IMPLEMENTATIONS[impl]
    data = bytes(range(256)) * 5
    want = reference_crc(data)
    assert f(data) == want
    assert f(bytearray(data)) == want
    assert f(memoryview(data)) == want
    assert f(memoryview(bytearray(data)).toreadonly()) == want
    assert f(memoryview(b"xx" + data)[2:]) == want
    words = array("I", data[:1024])  # a typed buffer counts bytes, not items
    assert f(memoryview(words)) == reference_crc(words.tobytes())
    assert f(b"") == f(bytearray()) == f(memoryview(b"")) == 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_rejects_text(impl: str) -> None:
    with pytest.raises(TypeError):
        IMPLEMENTATIONS[impl]("123456789")  # type: ignore[arg-type]
