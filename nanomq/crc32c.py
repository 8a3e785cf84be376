"""CRC32C (Castagnoli) over bytes-like data, in C (SSE4.2 when the CPU has it)."""

from nanomq._ffi import ffi, lib

__all__ = ["crc32c", "crc32c_software", "hardware"]


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C of `data`, continuing from `crc` (the result of a previous call) when given."""
    buf = data if type(data) is bytes else ffi.from_buffer(data)
    return lib.nmq_crc32c(crc, buf, len(buf))


def crc32c_software(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The table implementation (same result as crc32c); for tests and comparison."""
    buf = data if type(data) is bytes else ffi.from_buffer(data)
    return lib.nmq_crc32c_sw(crc, buf, len(buf))


def hardware() -> bool:
    """True when crc32c() uses the CPU's CRC32 instruction."""
    return bool(lib.nmq_crc32c_hw())
