"""Validating a segment file: one C scan per run of valid records (csrc/log.c).

A scan starts after the segment header and stops at the first record that is not valid.
Past it, every 8-byte position is tried for a valid record with a later offset: if one
exists the bytes in between are *damage* (never truncated: reported, or skipped with
accept_loss); if none exists what follows the last valid record is the *tail* (a torn
write or unwritten space), which recovery of the active segment clears.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from nanomq._ffi import ffi, lib
from nanomq.log.segment import NO_TIMESTAMP, SEGMENT_HEADER

STATUS_NAMES = {
    lib.NMQ_LOG_SCAN_END: "end",
    lib.NMQ_LOG_SCAN_ZERO: "zero",
    lib.NMQ_LOG_SCAN_SHORT: "short",
    lib.NMQ_LOG_SCAN_BAD_HEADER: "header",
    lib.NMQ_LOG_SCAN_BAD_CRC: "crc",
    lib.NMQ_LOG_SCAN_BAD_OFFSET: "offset",
}


@dataclass(frozen=True, slots=True)
class Damage:
    """Unreadable records first_offset..last_offset (inclusive) at bytes [position, position + nbytes)."""

    path: str
    first_offset: int
    last_offset: int
    position: int
    nbytes: int
    reason: str


@dataclass(frozen=True, slots=True)
class TruncatedTail:
    """A torn or partial write after the last valid record, cleared by recovery."""

    path: str
    offset: int  # the offset the torn record would have had
    position: int
    nbytes: int  # non-zero bytes found there
    reason: str


@dataclass(slots=True)
class SegmentScan:
    end: int = SEGMENT_HEADER
    next_offset: int = 0
    count: int = 0
    max_timestamp: int = NO_TIMESTAMP
    entries: bytes = b""
    damage: list[Damage] = field(default_factory=list)
    gaps: list[tuple[int, int, int, int]] = field(default_factory=list)  # (pos, end, first, next)
    tail_status: int = lib.NMQ_LOG_SCAN_END
    tail_bytes: int = 0


def _nonzero_run(view: memoryview, start: int) -> int:
    """Bytes from `start` up to the first 64 zero bytes (or the end): how much of a torn write is there."""
    chunk = bytes(view[start : start + (1 << 20)])
    i = chunk.find(b"\0" * 64)
    return len(chunk) if i < 0 else i


def scan_file(fd: int, size: int, base: int, interval: int, path: str) -> SegmentScan:
    """Validate every record of a segment file of `size` bytes whose header is valid."""
    out = SegmentScan(next_offset=base)
    if size <= SEGMENT_HEADER:
        out.end = min(size, SEGMENT_HEADER)
        return out
    mem = lib.nmq_log_map(fd, size, 0)
    if mem == ffi.NULL:
        raise OSError(f"cannot map {path}: {ffi.string(lib.nmq_last_error()).decode()}")
    try:
        cap = size // max(interval, 1) + 2
        index = ffi.new("uint32_t[]", 2 * cap)
        res = ffi.new("nmq_log_scan_result *")
        res.max_timestamp = NO_TIMESTAMP
        pos, expect = SEGMENT_HEADER, base
        while True:
            lib.nmq_log_scan(mem, size, pos, expect, 1, base, interval, index, cap, 2**64 - 1, res)
            pos, expect, status = res.end, res.next_offset, res.status
            out.count += res.count
            if status == lib.NMQ_LOG_SCAN_END:
                break
            # The record at pos is bad (even if only its offset is, which the CRC does not cover).
            nxt = lib.nmq_log_find_next(mem, size, pos + 8, expect)
            if nxt < 0:
                # Nothing valid later: a torn write or unwritten space, the tail.
                out.tail_status = status
                if status != lib.NMQ_LOG_SCAN_ZERO:
                    out.tail_bytes = _nonzero_run(memoryview(ffi.buffer(mem, size)), pos)
                break
            first = int.from_bytes(ffi.buffer(mem + nxt, 8)[:], "little")
            reason = STATUS_NAMES.get(status, str(status))
            out.damage.append(Damage(path, expect, first - 1, pos, nxt - pos, reason))
            out.gaps.append((pos, nxt, expect, first))
            pos, expect = nxt, first
        out.end, out.next_offset = pos, expect
        out.max_timestamp = res.max_timestamp
        out.entries = bytes(ffi.buffer(index, 8 * res.index_count))
        return out
    finally:
        lib.nmq_log_unmap(mem, size)


def header_ok(fd: int, base: int) -> bool:
    hdr = os.pread(fd, SEGMENT_HEADER, 0)
    return len(hdr) == SEGMENT_HEADER and lib.nmq_log_segment_header_check(hdr, base) == 0
