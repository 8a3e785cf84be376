"""Segment files, their sparse index files and the recovery checkpoint (docs/ARCHITECTURE.md, docs/FORMAT.md).

A segment file is `<base offset, 20 digits>.log`: a 64-byte header, then records in the
record format. The sparse index `<base>.index` is a cache of (offset, position) pairs,
rebuilt from the segment when missing or invalid. `recovery-checkpoint` names the first
segment that recovery must scan; the segments before it were durable and validated.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import struct
from array import array
from dataclasses import dataclass, field

from nanomq._ffi import ffi, lib
from nanomq.crc32c import crc32c

SEGMENT_HEADER: int = lib.NMQ_LOG_SEGMENT_HEADER
SEGMENT_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
CHECKPOINT_NAME = "recovery-checkpoint"
ACCEPTED_LOSS_NAME = "accepted-loss"
LOCK_NAME = "lock"
NO_TIMESTAMP = -(2**63)

# Index file: header {magic, version, entry bytes, base, next offset, segment bytes, max
# timestamp, count, reserved}, count entries {u32 offset - base, u32 position}, CRC32C trailer.
INDEX_MAGIC = b"NMQIDX01"
INDEX_VERSION = 1
_INDEX_HEADER = struct.Struct("<8sIIQQQqQ8x")  # 64 bytes
_INDEX_TRAILER = struct.Struct("<II")  # crc32c of everything before it, reserved 0
assert _INDEX_HEADER.size == 64

# Checkpoint file: magic, version, reserved, recovery point, crc32c of the 24 bytes before, reserved.
CHECKPOINT_MAGIC = b"NMQCKPT1"
CHECKPOINT_VERSION = 1
_CHECKPOINT = struct.Struct("<8sIIQII")
assert _CHECKPOINT.size == 32


def segment_path(directory: str, base: int) -> str:
    return os.path.join(directory, f"{base:020d}{SEGMENT_SUFFIX}")


def index_path(directory: str, base: int) -> str:
    return os.path.join(directory, f"{base:020d}{INDEX_SUFFIX}")


def list_segments(directory: str) -> list[int]:
    """Base offsets of the segment files in `directory`, ascending."""
    bases = []
    for name in os.listdir(directory):
        stem, dot, ext = name.partition(".")
        if dot and "." + ext == SEGMENT_SUFFIX and len(stem) == 20 and stem.isdigit():
            bases.append(int(stem))
    return sorted(bases)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory, so a create, rename or delete in it is durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """temp → (fsync) → rename → (fsync(dir)): a reader sees the old file or the new one.

    The temporary file has a name of its own (`.<name>.<random>.tmp`, so two writers never
    share one); it is removed when anything fails."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                if n <= 0:
                    raise OSError(errno.ENOSPC, f"short write of {tmp}")
                view = view[n:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(head or ".")


def segment_header(base: int, created_ns: int, segment_bytes: int) -> bytes:
    buf = ffi.new("uint8_t[]", SEGMENT_HEADER)
    lib.nmq_log_segment_header(buf, base, created_ns, segment_bytes)
    return bytes(ffi.buffer(buf))


# ---- index files ----


@dataclass(slots=True)
class IndexInfo:
    """What a valid index file says about its sealed segment."""

    next_offset: int
    end: int
    max_timestamp: int
    entries: bytes  # count pairs of u32 {offset - base, position}


def encode_index(base: int, next_offset: int, end: int, max_timestamp: int, entries: bytes) -> bytes:
    head = _INDEX_HEADER.pack(
        INDEX_MAGIC,
        INDEX_VERSION,
        lib.NMQ_LOG_INDEX_ENTRY,
        base,
        next_offset,
        end,
        max_timestamp,
        len(entries) // 8,
    )
    body = head + entries
    return body + _INDEX_TRAILER.pack(crc32c(body), 0)


def read_index(directory: str, base: int, segment_size: int) -> IndexInfo | None:
    """The index of a sealed segment when its file is valid and matches the segment, else None.

    Valid iff: magic, version and entry size match; the length is 64 + 8·count + 8; the CRC32C
    matches; base matches the name; `end` equals the segment file's length; entries rise
    strictly in both offset and position, the first is (0, 64), and every position < end.
    """
    try:
        with open(index_path(directory, base), "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < _INDEX_HEADER.size + _INDEX_TRAILER.size:
        return None
    magic, version, esize, ibase, next_offset, end, max_ts, count = _INDEX_HEADER.unpack_from(data)
    if (
        magic != INDEX_MAGIC
        or version != INDEX_VERSION
        or esize != lib.NMQ_LOG_INDEX_ENTRY
        or len(data) != 64 + 8 * count + 8
        or ibase != base
        or end != segment_size
        or next_offset < base
    ):
        return None
    crc, _ = _INDEX_TRAILER.unpack_from(data, len(data) - 8)
    if crc != crc32c(memoryview(data)[: len(data) - 8]):
        return None
    entries = data[64 : 64 + 8 * count]
    pairs = array("I", entries)
    if count:
        if pairs[0] != 0 or pairs[1] != SEGMENT_HEADER:
            return None
        rels, poss = pairs[0::2], pairs[1::2]
        if any(a >= b for a, b in itertools.pairwise(rels)) or any(
            a >= b for a, b in itertools.pairwise(poss)
        ):
            return None
        if poss[-1] >= end or base + rels[-1] >= next_offset:
            return None
    elif end != SEGMENT_HEADER or next_offset != base:
        return None
    return IndexInfo(next_offset, end, max_ts, entries)


# ---- checkpoint ----


def read_checkpoint(directory: str) -> int | None:
    """The recovery point (base offset of the first segment to scan), or None when the file is
    missing or invalid (then every segment is scanned)."""
    try:
        with open(os.path.join(directory, CHECKPOINT_NAME), "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) != _CHECKPOINT.size:
        return None
    magic, version, _, point, crc, _ = _CHECKPOINT.unpack(data)
    if magic != CHECKPOINT_MAGIC or version != CHECKPOINT_VERSION or crc != crc32c(data[:24]):
        return None
    return point


def write_checkpoint(directory: str, recovery_point: int) -> None:
    head = struct.pack("<8sIIQ", CHECKPOINT_MAGIC, CHECKPOINT_VERSION, 0, recovery_point)
    write_atomic(
        os.path.join(directory, CHECKPOINT_NAME), head + struct.pack("<II", crc32c(head), 0), durable=True
    )


# ---- accepted loss ----


@dataclass(frozen=True, slots=True)
class AcceptedLoss:
    """Damage an opener accepted (accept_loss=True): records first..next-1 are skipped from now on.

    `segment` is the base offset of the segment holding bytes [position, end) that were skipped;
    -1 for offsets missing between two segments (a lost segment file)."""

    segment: int
    position: int
    end: int
    first: int
    next: int
    reason: str


def read_accepted_loss(directory: str) -> list[AcceptedLoss]:
    """The accepted damage recorded in the log directory ([] when none). An unreadable file
    counts as none: the damage is then reported again (and must be accepted again)."""
    try:
        with open(os.path.join(directory, ACCEPTED_LOSS_NAME), "rb") as f:
            doc = json.loads(f.read())
        if doc.get("version") != 1:
            return []
        return [AcceptedLoss(**e) for e in doc["accepted"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []


def write_accepted_loss(directory: str, entries: list[AcceptedLoss]) -> None:
    """Replace the record of accepted damage, durably (temp → fsync → rename → fsync(dir))."""
    path = os.path.join(directory, ACCEPTED_LOSS_NAME)
    if not entries:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            fsync_dir(directory)
        return
    doc = {
        "version": 1,
        "accepted": [
            {f: getattr(e, f) for f in ("segment", "position", "end", "first", "next", "reason")}
            for e in entries
        ],
    }
    write_atomic(path, json.dumps(doc, indent=1).encode() + b"\n", durable=True)


# ---- segments ----


@dataclass(eq=False, slots=True)
class Segment:
    """One segment file. `end` is the byte after its last record and `next_offset` the offset
    after it; while the segment is active the log's C writer holds the live values."""

    base: int
    path: str
    fd: int
    end: int = SEGMENT_HEADER
    next_offset: int = 0
    max_timestamp: int = NO_TIMESTAMP
    entries: bytes = field(default=b"", repr=False)  # sparse index of a sealed segment
    writer: object = field(default=None, repr=False)  # the log's nmq_seg * while this is the active segment
    capacity: int = 0  # file length while active (preallocated)
    gaps: list[tuple[int, int, int, int]] = field(
        default_factory=list
    )  # accepted damage (pos, end, first, next)

    def __del__(self) -> None:
        # Readers and LogSlice holders keep the Segment (so its fd) alive after retention
        # deleted the file or the log closed: the fd is closed only when nobody uses it.
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def info(self, out: object = None) -> tuple[int, int, int]:
        """(end, next_offset, max_timestamp), from the C writer while active. `out`: an
        `nmq_seg_info *` to query it into (the log's, under its lock), instead of a new one."""
        w = self.writer
        if w is not None:
            info = ffi.new("nmq_seg_info *") if out is None else out
            lib.nmq_seg_get_info(w, info)
            if info.attached and info.base_offset == self.base:
                return info.pos, info.next_offset, info.max_timestamp
        return self.end, self.next_offset, self.max_timestamp

    def live(self) -> tuple[int, int]:
        """(end, next_offset), from the C writer while active."""
        end, nxt, _ = self.info()
        return end, nxt

    def index_floor(self, offset: int) -> tuple[int, int]:
        """(offset, position) of the last index entry at or before `offset` (else the first record)."""
        out = ffi.new("uint64_t *")
        w = self.writer
        pos = -2
        if w is not None:
            pos = lib.nmq_seg_index_floor(w, self.base, offset - self.base, out)
        if pos == -2 and self.entries:
            pos = lib.nmq_log_index_floor(
                ffi.from_buffer("uint32_t[]", self.entries), len(self.entries) // 8, offset - self.base, out
            )
        if pos < 0:
            return self.base, SEGMENT_HEADER
        return self.base + out[0], pos
