"""The one record format of memory, wire and disk (docs/FORMAT.md is the specification).

A record is a 64-byte little-endian header, the key, the value, and zeros up to a
multiple of 8 bytes. The CRC32C covers what the producer wrote (bytes 12 to the end of
the value), not the offset the log assigns, so a log stamps offsets without touching
checksums and a consumer checks the producer's checksum end to end. Encoding and
validating a batch are one C call each (csrc/record.c).
"""

from __future__ import annotations

import enum
import struct
import time
from array import array
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from nanomq import errors
from nanomq._ffi import ffi, function_address, lib, raise_status
from nanomq._reccore import encode_into as _encode_into
from nanomq._reccore import scan as _scan

_ENCODE_ADDRESS = function_address("nmq_record_encode")
SCAN_ADDRESS = function_address("nmq_record_scan")
"""Where nmq_record_scan is, for the C helpers that call it without cffi (nanomq._reccore.scan,
nanomq._msgcore.deliver_messages)."""

__all__ = [
    "HEADER_SIZE",
    "MAX_KEY",
    "MAX_PAYLOAD",
    "BatchColumns",
    "BatchInfo",
    "Codec",
    "Record",
    "ScanResult",
    "ScanStatus",
    "batch_columns",
    "decode_batch",
    "encode",
    "encode_batch",
    "iter_records",
    "record_size",
    "scan",
    "stamp_offsets",
    "validate_batch",
]

HEADER_SIZE: int = lib.NMQ_RECORD_HEADER
MAX_PAYLOAD: int = lib.NMQ_RECORD_MAX_VALUE
MAX_KEY: int = lib.NMQ_RECORD_MAX_KEY
MAGIC = b"NMQ1"
VERSION: int = lib.NMQ_RECORD_VERSION
FLAG_KEY: int = lib.NMQ_RECORD_FLAG_KEY
CODEC_MASK: int = lib.NMQ_RECORD_CODEC_MASK

# offset, crc, length, (magic, version: skipped), flags, key_len, value_len, raw_len,
# timestamp, producer_id, sequence, (reserved: skipped) — the C scan checked the skipped ones.
_HEADER = struct.Struct("<QII5xBHIIqQQ8x")
assert _HEADER.size == HEADER_SIZE


class Codec(enum.IntEnum):
    """Compression of a record's value (flags bits 0-1)."""

    NONE = lib.NMQ_CODEC_NONE
    ZSTD = lib.NMQ_CODEC_ZSTD  # one zstd frame (RFC 8878)
    LZ4 = lib.NMQ_CODEC_LZ4  # one LZ4 block, raw_len bytes when decompressed

    @classmethod
    def parse(cls, codec: Codec | str | int | None) -> Codec:
        """A codec from its name (``"zstd"``, ``"lz4"``, ``"none"``), number or None."""
        if codec is None:
            return cls.NONE
        if isinstance(codec, str):
            try:
                return cls[codec.upper()]
            except KeyError:
                raise ValueError(f"unknown codec {codec!r}: use none, zstd or lz4") from None
        return cls(codec)


class ScanStatus(enum.IntEnum):
    """Why a scan stopped (see `scan`)."""

    END = lib.NMQ_SCAN_END  # the buffer ended exactly after a whole record
    ZERO = lib.NMQ_SCAN_ZERO  # the next header is all zero bytes: unwritten space
    SHORT = lib.NMQ_SCAN_SHORT  # the next record runs past the end of the buffer
    BAD_HEADER = lib.NMQ_SCAN_BAD_HEADER  # magic, version, flags, lengths, reserved or padding
    BAD_CRC = lib.NMQ_SCAN_BAD_CRC
    BAD_OFFSET = lib.NMQ_SCAN_BAD_OFFSET  # not the offset that contiguity requires
    LIMIT = lib.NMQ_SCAN_LIMIT  # max_records reached


class ScanResult(NamedTuple):
    """What `scan` found: `count` whole valid records in the first `nbytes` bytes."""

    count: int
    nbytes: int
    status: ScanStatus


class BatchInfo(NamedTuple):
    """A validated batch: `count` records in `nbytes` bytes."""

    count: int
    nbytes: int


_SCAN_END = int(ScanStatus.END)
_REASON = {
    ScanStatus.SHORT: ("short", "a record runs past the end of the buffer"),
    ScanStatus.ZERO: ("header", "zero bytes where a record header should be"),
    ScanStatus.BAD_HEADER: ("header", "bad header (magic, version, flags, lengths or padding)"),
    ScanStatus.BAD_CRC: ("crc", "CRC32C mismatch"),
    ScanStatus.BAD_OFFSET: ("offset", "offset out of sequence"),
}


class BatchColumns(NamedTuple):
    """A batch laid out for the C encoders: values (and keys) end to end with their lengths."""

    values: bytes
    value_lens: array  # array('I')
    keys: bytes
    key_lens: array | None  # array('i'), -1 for no key; None: no keys at all
    timestamps: array | None  # array('q'), one per record; None: one time for all


def nbytes(buf: bytes | bytearray | memoryview) -> int:
    """Bytes in a buffer (len() of a memoryview or an array counts items, not bytes)."""
    return len(buf) if type(buf) is bytes else memoryview(buf).nbytes


def batch_columns(
    values: Sequence[bytes | bytearray | memoryview],
    keys: Sequence[bytes | bytearray | memoryview | None] | None = None,
    timestamp_ns: int | Sequence[int] | None = None,
) -> BatchColumns:
    """Check a batch against the limits (before anything is allocated for it) and lay it out.

    Raises ValueError when keys or timestamps do not pair up with values and
    PayloadTooLargeError (naming the record) when a value or key is over its limit.
    """
    n = len(values)
    if keys is not None and len(keys) != n:
        raise ValueError(f"{len(keys)} keys for {n} values: give one key (or None) per value")
    stamps = None
    if timestamp_ns is not None and not isinstance(timestamp_ns, int):
        if len(timestamp_ns) != n:
            raise ValueError(f"{len(timestamp_ns)} timestamps for {n} values")
        stamps = array("q", timestamp_ns)
    joined = b"".join(values)
    try:
        sizes = array("I", map(len, values))
    except OverflowError:  # a length of 2**32 or more: measured one by one below
        sizes = array("I")
    if len(sizes) != n or sum(sizes) != len(joined):  # a buffer whose len() is not its bytes
        sizes = [nbytes(v) for v in values]
    if n and max(sizes) > MAX_PAYLOAD:
        big = max(range(n), key=sizes.__getitem__)
        raise errors.PayloadTooLargeError(sizes[big], MAX_PAYLOAD, what=f"payload of record {big}")
    key_lens = None
    key_bytes = b""
    if keys is not None:
        key_lens = array("i", [-1 if k is None else nbytes(k) for k in keys])
        if n and max(key_lens) > MAX_KEY:
            big = max(range(n), key=key_lens.__getitem__)
            raise errors.PayloadTooLargeError(key_lens[big], MAX_KEY, what=f"key of record {big}")
        key_bytes = b"".join(k for k in keys if k is not None)
    if not isinstance(sizes, array):
        sizes = array("I", sizes)
    return BatchColumns(joined, sizes, key_bytes, key_lens, stamps)


def record_size(key_len: int | None, value_len: int) -> int:
    """Bytes a record occupies (padding included); `key_len` None means no key."""
    return lib.nmq_record_size(-1 if key_len is None else key_len, value_len)


def _compressor(codec: Codec):  # -> Callable[[bytes], bytes]
    if codec is Codec.ZSTD:
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress
    import lz4.block

    return lambda data: lz4.block.compress(data, store_size=False)


def _decompress(codec: int, data: memoryview, raw_len: int) -> bytes:
    if codec == Codec.ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=raw_len)
    if codec == Codec.LZ4:
        import lz4.block

        return lz4.block.decompress(data, uncompressed_size=raw_len)
    raise errors.CorruptRecordError(f"unknown codec {codec}", reason="header")


def _check_sizes(value_len: int, key_len: int) -> None:
    if value_len > MAX_PAYLOAD:
        raise errors.PayloadTooLargeError(value_len, MAX_PAYLOAD)
    if key_len > MAX_KEY:
        raise errors.PayloadTooLargeError(key_len, MAX_KEY, what="key")


def _now_ns() -> int:
    return time.time_ns()


def encode(
    value: bytes | bytearray | memoryview,
    key: bytes | bytearray | memoryview | None = None,
    *,
    timestamp_ns: int | None = None,
    producer_id: int = 0,
    sequence: int = 0,
    codec: Codec | str | None = Codec.NONE,
    offset: int = 0,
) -> bytes:
    """One record. The value is compressed when a codec is given and that makes it smaller
    (otherwise it is stored as is, flagged uncompressed)."""
    return _encode_one(
        value,
        key,
        _now_ns() if timestamp_ns is None else timestamp_ns,
        producer_id,
        sequence,
        Codec.parse(codec),
        offset,
    )


def _encode_one(value, key, ts: int, producer_id: int, sequence: int, codec: Codec, offset: int) -> bytes:
    raw_len = len(value)
    klen = -1 if key is None else len(key)
    _check_sizes(raw_len, klen)
    stored, used = value, Codec.NONE
    if codec is not Codec.NONE and raw_len:
        packed = _compressor(codec)(value)
        if len(packed) < raw_len:
            stored, used = packed, codec
    out = bytearray(lib.nmq_record_size(klen, len(stored)))
    rc = lib.nmq_record_encode(
        ffi.from_buffer(out),
        len(out),
        ffi.NULL if key is None else ffi.from_buffer(key),
        klen,
        ffi.from_buffer(stored),
        len(stored),
        raw_len,
        used,
        ts,
        producer_id,
        sequence,
        offset,
    )
    if rc < 0:
        raise_status(rc, "encode")
    return bytes(out)


def encode_batch(
    values: Sequence[bytes | bytearray | memoryview],
    keys: Sequence[bytes | bytearray | memoryview | None] | None = None,
    *,
    timestamp_ns: int | Sequence[int] | None = None,
    producer_id: int = 0,
    first_sequence: int = 0,
    codec: Codec | str | None = Codec.NONE,
    first_offset: int = 0,
) -> bytes:
    """Records for `values` (and `keys`, None for no key) laid end to end, in one C call.

    Record i gets sequence ``first_sequence + i`` and offset ``first_offset + i``;
    `timestamp_ns` is one time for all (default now) or one per record.
    """
    return bytes(
        encode_batch_after(
            b"",
            values,
            keys,
            timestamp_ns=timestamp_ns,
            producer_id=producer_id,
            first_sequence=first_sequence,
            codec=codec,
            first_offset=first_offset,
        )
    )


def encode_batch_after(
    prefix: bytes,
    values: Sequence[bytes | bytearray | memoryview],
    keys: Sequence[bytes | bytearray | memoryview | None] | None = None,
    *,
    timestamp_ns: int | Sequence[int] | None = None,
    producer_id: int = 0,
    first_sequence: int = 0,
    codec: Codec | str | None = Codec.NONE,
    first_offset: int = 0,
    into: bytearray | None = None,
) -> bytearray | memoryview:
    """`prefix` followed by the records `encode_batch` makes, built in one buffer.

    For a frame: its header goes first and the records are encoded behind it, so a batch is
    written once and never copied to join the two (on the publisher's path each extra copy
    of a megabyte frame was also a fresh allocation, paid in page faults). With `into`, an
    uncompressed batch that fits is built at the start of that buffer and returned as a view
    of it, valid until the buffer is used again: a sender that writes each frame before
    building the next needs no allocation per frame. `into` is never resized (a view of an
    earlier frame may still be held), so otherwise a new buffer is returned, as without it.
    """
    n = len(values)
    codec = Codec.parse(codec)
    head = len(prefix)
    if into is not None and codec is Codec.NONE and len(into) >= head:
        # straight from the lists, in C; -1: a limit, the room or the types: the general path below
        into[:head] = prefix
        stamp = _now_ns() if timestamp_ns is None else timestamp_ns
        rc = _encode_into(
            into, head, values, keys, stamp, producer_id, first_sequence, first_offset, _ENCODE_ADDRESS
        )
        if rc >= 0:
            return memoryview(into)[: head + rc]
    if codec is not Codec.NONE:
        batch_columns(values, keys, timestamp_ns)  # the limits and the pairing, checked first
        stamps = [timestamp_ns] * n if isinstance(timestamp_ns, int) or timestamp_ns is None else timestamp_ns
        now = _now_ns()
        out = bytearray(prefix)
        for i, v in enumerate(values):
            out += _encode_one(
                v,
                None if keys is None else keys[i],
                now if stamps[i] is None else stamps[i],
                producer_id,
                first_sequence + i,
                codec,
                first_offset + i,
            )
        return out
    cols = batch_columns(values, keys, timestamp_ns)
    lens, key_lens = cols.value_lens, cols.key_lens
    if key_lens is not None:
        size = sum(-(-(HEADER_SIZE + max(k, 0) + v) // 8) * 8 for k, v in zip(key_lens, lens, strict=True))
    else:
        size = sum(lens) + n * (HEADER_SIZE + 7)  # an upper bound; the exact size comes back
    joined, key_bytes, stamps = cols.values, cols.keys, cols.timestamps
    out = into if into is not None and len(into) >= head + size else bytearray(head + size)
    out[:head] = prefix
    rc = lib.nmq_record_encode_batch(
        ffi.from_buffer(out) + head,
        size,
        n,
        ffi.from_buffer(joined),
        ffi.from_buffer("uint32_t[]", lens),
        ffi.NULL,
        ffi.from_buffer(key_bytes) if keys is not None else ffi.NULL,
        ffi.from_buffer("int32_t[]", key_lens) if key_lens is not None else ffi.NULL,
        ffi.from_buffer("int64_t[]", stamps) if stamps is not None else ffi.NULL,
        _now_ns() if timestamp_ns is None or stamps is not None else timestamp_ns,
        Codec.NONE,
        producer_id,
        first_sequence,
        first_offset,
    )
    if rc < 0:
        raise_status(rc, "encode_batch")
    if out is into:
        return memoryview(out)[: head + rc]
    if rc != size:
        del out[head + rc :]
    return out


def scan(
    buf: bytes | bytearray | memoryview, first_offset: int | None = None, max_records: int | None = None
) -> ScanResult:
    """Validate records from the start of `buf` until the first one that is not valid.

    Checks every header field, the zero padding, the CRC32C and — with `first_offset` —
    that offsets run first_offset, first_offset + 1, ... Never raises for bad data.
    """
    first = -1 if first_offset is None else first_offset
    count, size, status = _scan(buf, first, max_records or 0, SCAN_ADDRESS)
    return ScanResult(count, size, ScanStatus(status))


def validate_batch(buf: bytes | bytearray | memoryview, first_offset: int | None = None) -> BatchInfo:
    """Check that `buf` is exactly a run of whole valid records (see `scan`).

    Raises CorruptRecordError naming the byte position, the expected offset and the reason.
    """
    count, size, status = _scan(buf, -1 if first_offset is None else first_offset, 0, SCAN_ADDRESS)
    if status != _SCAN_END:
        status = ScanStatus(status)
        reason, text = _REASON[status]
        expected = None if first_offset is None else first_offset + count
        where = f"record {count} at byte {size}" + ("" if expected is None else f" (offset {expected})")
        raise errors.CorruptRecordError(f"{where}: {text}", position=size, offset=expected, reason=reason)
    return BatchInfo(count, size)


def stamp_offsets(buf: bytearray | memoryview, first_offset: int) -> int:
    """Write offsets first_offset, first_offset + 1, ... into the validated records of a
    writable buffer (one 8-byte store each; checksums stay valid). Returns the count."""
    rc = lib.nmq_record_stamp(ffi.from_buffer(buf, require_writable=True), nbytes(buf), first_offset)
    if rc < 0:
        raise errors.CorruptRecordError(
            "record lengths do not tile the buffer: validate it first", reason="short"
        )
    return rc


class Record:
    """One record, a view over the bytes it was read from: nothing is copied until a field
    that needs it (`key`, `value`) is read."""

    __slots__ = ("_buf", "_h", "_pos")

    def __init__(self, buf: memoryview, pos: int = 0) -> None:
        self._h = _HEADER.unpack_from(buf, pos)
        self._buf = buf
        self._pos = pos

    # The header tuple (_HEADER): offset, crc, length, flags, key_len, value_len, raw_len,
    # timestamp, producer_id, sequence.
    @property
    def offset(self) -> int:
        """The offset the log assigned (0 before the record was appended)."""
        return self._h[0]

    @property
    def crc(self) -> int:
        """The producer's CRC32C of bytes 12 to the end of the value."""
        return self._h[1]

    @property
    def length(self) -> int:
        """Header, key and value bytes (without padding)."""
        return self._h[2]

    @property
    def timestamp(self) -> int:
        """The producer's time, ns since the Unix epoch."""
        return self._h[7]

    @property
    def producer_id(self) -> int:
        """The producer's id (0: none)."""
        return self._h[8]

    @property
    def sequence(self) -> int:
        """The producer's sequence number of this record."""
        return self._h[9]

    @property
    def codec(self) -> Codec:
        """How the stored value is compressed."""
        return Codec(self._h[3] & CODEC_MASK)

    @property
    def size(self) -> int:
        """Bytes the record occupies, padding included."""
        return (self._h[2] + 7) & ~7

    @property
    def raw(self) -> memoryview:
        """The record's bytes (padding included), as stored."""
        return self._buf[self._pos : self._pos + self.size]

    @property
    def key(self) -> bytes | None:
        """The key, or None when the record has none."""
        if not self._h[3] & FLAG_KEY:
            return None
        start = self._pos + HEADER_SIZE
        return bytes(self._buf[start : start + self._h[4]])

    @property
    def value_view(self) -> memoryview:
        """The stored value without a copy (compressed when `codec` is not NONE)."""
        start = self._pos + HEADER_SIZE + self._h[4]
        return self._buf[start : start + self._h[5]]

    @property
    def value(self) -> bytes:
        """The value, decompressed."""
        view = self.value_view
        if self._h[3] & CODEC_MASK:
            return _decompress(self._h[3] & CODEC_MASK, view, self._h[6])
        return bytes(view)

    def __repr__(self) -> str:
        return (
            f"Record(offset={self.offset}, timestamp={self.timestamp}, key={self.key!r}, "
            f"value=<{self._h[6]} bytes>, producer_id={self.producer_id}, sequence={self.sequence})"
        )


def iter_records(buf: bytes | bytearray | memoryview) -> Iterator[Record]:
    """Record views over a buffer of validated records, in order."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    end = view.nbytes
    pos = 0
    while pos < end:
        rec = Record(view, pos)
        yield rec
        pos += (rec._h[2] + 7) & ~7


def decode_batch(buf: bytes | bytearray | memoryview, first_offset: int | None = None) -> list[Record]:
    """Validate `buf` (see `validate_batch`) and return views of its records."""
    count, _ = validate_batch(buf, first_offset)
    if not count:
        return []
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    pos = array("Q", bytes(8 * count))
    lib.nmq_record_positions(ffi.from_buffer(view), view.nbytes, ffi.from_buffer("uint64_t[]", pos), count)
    return [Record(view, p) for p in pos]
