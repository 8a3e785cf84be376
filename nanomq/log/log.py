"""The segmented write-ahead log: append, read, sync, recover, retain (docs/ARCHITECTURE.md, docs/FORMAT.md).

The active segment is preallocated (posix_fallocate) and mapped; one append is one C call
that encodes, checksums, copies and stamps the record into the mapping and adds its index
entry (csrc/log.c). Reads use pread on the segment files, so no Python object ever points
into a mapping that a roll or a close unmaps.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, NoReturn

from nanomq import errors
from nanomq._ffi import address, ffi, function_address, lib
from nanomq._logcore import LogCore
from nanomq.log import segment as sg
from nanomq.log.recovery import Damage, SegmentScan, TruncatedTail, header_ok, scan_file
from nanomq.record import MAX_KEY, MAX_PAYLOAD, Record, batch_columns, iter_records, nbytes, validate_batch

__all__ = ["Log", "LogSlice", "LogStats", "RecoveryReport"]

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]
MAX_RECORD = 64 + MAX_KEY + MAX_PAYLOAD + 7
MIN_SEGMENT_BYTES = 2 * MAX_RECORD + sg.SEGMENT_HEADER  # every record fits in an empty segment
MAX_SEGMENT_BYTES = (1 << 32) - 8  # positions in the index are u32
READ_CHUNK = 1 << 20  # > MAX_RECORD: a chunk always holds a whole record
_NULL = ffi.NULL
_append = lib.nmq_seg_append
_APPEND_ADDRESS = function_address("nmq_seg_append")


class LogSlice(NamedTuple):
    """A byte range of one segment file holding whole records, for os.sendfile.

    Keep the slice (its `segment`) alive while using `fd`: the fd stays open until then,
    even if retention deletes the file or the log is closed."""

    fd: int
    position: int
    length: int
    first_offset: int
    next_offset: int
    segment: object = None


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening the log found and did."""

    segments: int
    scanned_segments: int
    scanned_bytes: int
    records_scanned: int
    indexes_rebuilt: int
    truncated: tuple[TruncatedTail, ...]
    damaged: tuple[Damage, ...]  # only non-empty with accept_loss=True (otherwise open raised)
    seconds: float


@dataclass(frozen=True, slots=True)
class LogStats:
    """A snapshot of the log's counters."""

    first_offset: int
    next_offset: int
    durable_offset: int
    segments: int
    size_bytes: int
    syncs: int  # fdatasync rounds (one per group commit)
    rolls: int
    segments_deleted: int
    failed: bool


def _fsync_policy(fsync: str) -> str:
    if fsync not in ("always", "interval", "never"):
        raise ValueError(f"fsync policy {fsync!r} is not one of 'always', 'interval', 'never'")
    return fsync


class Log(LogCore):
    """A segmented, crash-safe append-only log of records in one directory.

    Open it with `Log.open`. Appends may come from several threads (they are serialised);
    sync, read and the properties are safe from any thread.
    """

    # ---- opening ----

    def __init__(self, path: str, **options: object) -> None:  # use Log.open
        self.path = os.path.abspath(path)
        self.segment_bytes: int = options["segment_bytes"]  # type: ignore[assignment]
        self.fsync: str = options["fsync"]  # type: ignore[assignment]
        self.fsync_interval_ms: int = options["fsync_interval_ms"]  # type: ignore[assignment]
        self.index_interval_bytes: int = options["index_interval_bytes"]  # type: ignore[assignment]
        self.retention_bytes: int | None = options["retention_bytes"]  # type: ignore[assignment]
        self.retention_ms: int | None = options["retention_ms"]  # type: ignore[assignment]
        self.accept_loss: bool = options["accept_loss"]  # type: ignore[assignment]
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._segments: list[sg.Segment] = []
        self._active: sg.Segment | None = None
        out = ffi.new("nmq_seg **")
        if lib.nmq_seg_new(self.index_interval_bytes, out) != 0:
            raise MemoryError(ffi.string(lib.nmq_last_error()).decode())
        # The writer lives as long as this object (threads inside append hold a reference).
        self._w = ffi.gc(out[0], lib.nmq_seg_free)
        # out-parameters of append_encoded and _next_locked, used under _lock
        self._consumed = ffi.new("uint64_t *")
        self._info = ffi.new("nmq_seg_info *")
        self._always = self.fsync == "always"
        if self._always and lib.nmq_seg_set_pwrite(self._w, 1) != 0:
            raise MemoryError(ffi.string(lib.nmq_last_error()).decode())
        # append() is LogCore's C method (csrc/py/logcore.c): with bytes and no keyword, and
        # unless every append must sync, it calls the writer through these addresses; any
        # other call, and any failure, comes back to _append_py.
        self._bind(address(self._w), _APPEND_ADDRESS, not self._always, self._w)
        self._durable = 0
        self._syncing = False
        self._syncs = 0
        self._rolls = 0
        self._deleted = 0
        self._unsynced: list[sg.Segment] = []  # sealed segments not yet fdatasync'ed
        self._failed: BaseException | None = None
        self._closed = False
        self._lock_fd = -1
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self._gaps: list[tuple[int, int]] = []  # accepted missing offset ranges between segments
        self._accepted: list[sg.AcceptedLoss] = []  # accepted damage, kept in the directory
        self.recovery: RecoveryReport | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        segment_bytes: int = 100 << 20,
        fsync: FsyncPolicy = "always",
        fsync_interval_ms: int = 100,
        index_interval_bytes: int = 4096,
        retention_bytes: int | None = None,
        retention_ms: int | None = None,
        accept_loss: bool = False,
    ) -> Log:
        """Open (creating the directory if needed) and recover the log at `path`.

        Takes an exclusive lock on the directory (LogLockedError names the holder's pid).
        Recovery validates the segments written since the last checkpoint: a torn tail is
        truncated and reported in `log.recovery`; damage with valid records after it raises
        LogCorruptError naming the offset range, unless accept_loss=True (then it is skipped,
        logged and listed in `log.recovery.damaged`). Accepted damage is recorded in the
        directory (file `accepted-loss`): later opens skip that same range without asking
        again, and still refuse any new damage.
        """
        if not MIN_SEGMENT_BYTES <= segment_bytes <= MAX_SEGMENT_BYTES:
            raise ValueError(
                f"segment_bytes {segment_bytes} is outside {MIN_SEGMENT_BYTES}..{MAX_SEGMENT_BYTES} "
                "(an empty segment must hold the largest record; positions are 32-bit)"
            )
        if not 64 <= index_interval_bytes <= segment_bytes:
            raise ValueError(f"index_interval_bytes {index_interval_bytes} is outside 64..{segment_bytes}")
        if fsync_interval_ms <= 0:
            raise ValueError(f"fsync_interval_ms {fsync_interval_ms} must be > 0")
        for name, value in (("retention_bytes", retention_bytes), ("retention_ms", retention_ms)):
            if value is not None and value < 0:
                raise ValueError(f"{name} {value} must be >= 0 (or None: no limit)")
        self = cls(
            os.fspath(path),
            segment_bytes=segment_bytes,
            fsync=_fsync_policy(fsync),
            fsync_interval_ms=fsync_interval_ms,
            index_interval_bytes=index_interval_bytes,
            retention_bytes=retention_bytes,
            retention_ms=retention_ms,
            accept_loss=accept_loss,
        )
        os.makedirs(self.path, exist_ok=True)
        self._take_lock()
        try:
            self._recover()
        except BaseException:
            self._release()
            raise
        if self.fsync == "interval":
            self._ticker = threading.Thread(
                target=self._tick, name=f"nanomq-log-sync {self.path}", daemon=True
            )
            self._ticker.start()
        return self

    def _take_lock(self) -> None:
        lock_path = os.path.join(self.path, sg.LOCK_NAME)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = int(os.pread(fd, 32, 0).split()[0])
            except (ValueError, IndexError):
                pid = None
            os.close(fd)
            raise errors.LogLockedError(self.path, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release(self) -> None:
        if self._active is not None and self._active.writer is not None:
            self._detach(self._active)
        self._segments = []
        self._active = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # drops the flock
            self._lock_fd = -1

    def _recover(self) -> None:
        t0 = time.perf_counter()
        directory = self.path
        for name in os.listdir(directory):
            if name.endswith(".tmp"):
                os.unlink(os.path.join(directory, name))
        bases = sg.list_segments(directory)
        point = sg.read_checkpoint(directory)
        scanned = scanned_bytes = records = rebuilt = 0
        truncated: list[TruncatedTail] = []
        damaged: list[Damage] = []
        self._accepted = sg.read_accepted_loss(directory)
        accepted_in = {(a.segment, a.position, a.first) for a in self._accepted if a.segment >= 0}
        accepted_missing = {(a.first, a.next) for a in self._accepted if a.segment < 0}
        new_loss: list[sg.AcceptedLoss] = []
        if not bases:
            self._create_segment(0)
            bases = [0]
        segs: list[sg.Segment] = []
        for i, base in enumerate(bases):
            path = sg.segment_path(directory, base)
            fd = os.open(path, os.O_RDWR)
            seg = sg.Segment(base, path, fd, next_offset=base)
            segs.append(seg)
            size = os.fstat(fd).st_size
            last = i == len(bases) - 1
            if not header_ok(fd, base):
                scan = (
                    scan_file(fd, size, base, self.index_interval_bytes, path) if size > 64 else SegmentScan()
                )
                if last and scan.count == 0:
                    # A segment whose creation was cut short: start it again.
                    truncated.append(TruncatedTail(path, base, 0, min(size, 64), "segment header"))
                    os.ftruncate(fd, 0)
                    size = 0
                else:
                    d = Damage(
                        path, base, max(base, scan.next_offset - 1), 0, sg.SEGMENT_HEADER, "segment header"
                    )
                    self._damage(d)  # raises unless accept_loss
                    damaged.append(d)
                # The name says the base offset: write the header again (with accept_loss the
                # records after it are kept, not dropped).
                os.pwrite(fd, sg.segment_header(base, time.time_ns(), self.segment_bytes), 0)
                os.fsync(fd)
                size = max(size, sg.SEGMENT_HEADER)
                point = None if point is None else min(point, base)  # scan it below
            info = None
            if not last and point is not None and base < point:
                info = sg.read_index(directory, base, size)
            if info is not None:
                seg.end, seg.next_offset, seg.max_timestamp, seg.entries = (
                    info.end,
                    info.next_offset,
                    info.max_timestamp,
                    info.entries,
                )
                seg.gaps = [(a.position, a.end, a.first, a.next) for a in self._accepted if a.segment == base]
                continue
            scan = scan_file(fd, size, base, self.index_interval_bytes, path)
            scanned += 1
            scanned_bytes += size
            records += scan.count
            for d, gap in zip(scan.damage, scan.gaps, strict=True):
                if (base, d.position, d.first_offset) in accepted_in:
                    log.info(
                        "log %s: records %d..%d stay skipped (loss accepted earlier)",
                        self.path,
                        d.first_offset,
                        d.last_offset,
                    )
                    continue
                self._damage(d)
                damaged.append(d)
                new_loss.append(sg.AcceptedLoss(base, *gap, d.reason))
            seg.end, seg.next_offset, seg.max_timestamp, seg.entries = (
                scan.end,
                scan.next_offset,
                scan.max_timestamp,
                scan.entries,
            )
            seg.gaps = scan.gaps
            if scan.tail_status not in (lib.NMQ_LOG_SCAN_END, lib.NMQ_LOG_SCAN_ZERO) or (
                scan.tail_bytes and size > scan.end
            ):
                t = TruncatedTail(
                    path, scan.next_offset, scan.end, scan.tail_bytes, _status_name(scan.tail_status)
                )
                truncated.append(t)
                log.warning(
                    "log %s: truncated a torn write at offset %d (byte %d of %s, %d bytes, %s)",
                    self.path,
                    t.offset,
                    t.position,
                    path,
                    t.nbytes,
                    t.reason,
                )
            if size > scan.end:
                # Clear everything past the recovered end so no stale record can ever be
                # read as current (nothing is mapped now).
                os.ftruncate(fd, scan.end)
                os.fsync(fd)
            if not last:
                os.fsync(fd)  # recovered: durable before the checkpoint moves past it
                rebuilt += 1
                self._write_index(seg)
        # Offsets must run on from one segment to the next.
        for prev, seg in itertools.pairwise(segs):
            if prev.next_offset < seg.base:
                if (prev.next_offset, seg.base) not in accepted_missing:
                    d = Damage(prev.path, prev.next_offset, seg.base - 1, prev.end, 0, "missing records")
                    self._damage(d)
                    damaged.append(d)
                    new_loss.append(sg.AcceptedLoss(-1, 0, 0, prev.next_offset, seg.base, d.reason))
                self._gaps.append((prev.next_offset, seg.base))
            elif prev.next_offset > seg.base:
                raise errors.LogCorruptError(
                    f"log {self.path}: segment {seg.path} starts at offset {seg.base} but the one before "
                    f"runs to {prev.next_offset - 1}",
                    path=seg.path,
                    first_offset=seg.base,
                    last_offset=prev.next_offset - 1,
                )
        if new_loss:  # before the checkpoint moves past the segments holding it
            self._accepted += new_loss
            sg.write_accepted_loss(directory, self._accepted)
        self._segments = segs
        active = segs[-1]
        idx = sg.index_path(directory, active.base)
        if os.path.exists(idx):
            os.unlink(idx)  # the active segment's index lives in memory until it is sealed
        self._activate(active)
        os.fdatasync(active.fd)  # what recovery kept may still be only in the page cache
        self._durable = active.next_offset
        self._unsynced = []
        self._checkpoint(active.base)
        self.recovery = RecoveryReport(
            segments=len(segs),
            scanned_segments=scanned,
            scanned_bytes=scanned_bytes,
            records_scanned=records,
            indexes_rebuilt=rebuilt,
            truncated=tuple(truncated),
            damaged=tuple(damaged),
            seconds=time.perf_counter() - t0,
        )
        if truncated or damaged or rebuilt:
            log.info("log %s recovered: %s", self.path, self.recovery)

    def _damage(self, d: Damage) -> None:
        text = (
            f"log {self.path}: records {d.first_offset}..{d.last_offset} of {d.path} "
            f"(bytes {d.position}..{d.position + d.nbytes}) are damaged ({d.reason}) "
            "and valid records follow them"
        )
        if not self.accept_loss:
            raise errors.LogCorruptError(
                text + "; open with accept_loss=True to skip them",
                path=d.path,
                first_offset=d.first_offset,
                last_offset=d.last_offset,
            )
        log.error("%s: skipped (accept_loss=True)", text)

    def _activate(self, seg: sg.Segment) -> None:
        """Extend `seg` to the segment size and attach it to the writer (lock held)."""
        size = max(self.segment_bytes, seg.end)
        try:
            os.posix_fallocate(seg.fd, 0, size)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise errors.DiskFullError(
                    f"no space to preallocate {size} bytes for {seg.path}: {e.strerror}", errno.ENOSPC
                ) from e
            raise
        idx = seg.entries
        rc = lib.nmq_seg_attach(
            self._w,
            seg.fd,
            size,
            seg.base,
            seg.end,
            seg.next_offset,
            ffi.from_buffer("uint32_t[]", idx) if idx else _NULL,
            len(idx) // 8,
            seg.max_timestamp,
        )
        if rc != 0:
            raise OSError(f"cannot map {seg.path}: {ffi.string(lib.nmq_last_error()).decode()}")
        seg.capacity = size
        seg.writer = self._w
        self._active = seg

    def _detach(self, seg: sg.Segment) -> None:
        """Unmap the active segment and keep its final state in `seg` (lock held)."""
        info = ffi.new("nmq_seg_info *")
        lib.nmq_seg_detach(self._w, info)
        seg.end, seg.next_offset, seg.max_timestamp = info.pos, info.next_offset, info.max_timestamp
        idx = ffi.new("uint32_t[]", 2 * info.index_count + 2)
        n = lib.nmq_seg_copy_index(self._w, idx, info.index_count)
        seg.entries = bytes(ffi.buffer(idx, 8 * n))
        seg.writer = None

    def _create_segment(self, base: int) -> sg.Segment:
        """Create, preallocate and fsync a new segment file (and the directory)."""
        path = sg.segment_path(self.path, base)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.posix_fallocate(fd, 0, self.segment_bytes)
            os.pwrite(fd, sg.segment_header(base, time.time_ns(), self.segment_bytes), 0)
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            os.unlink(path)
            if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise errors.DiskFullError(
                    f"no space for a new segment of {self.segment_bytes} bytes in {self.path} "
                    f"({e.strerror}); the log is unchanged",
                    e.errno,
                ) from e
            raise
        sg.fsync_dir(self.path)
        return sg.Segment(base, path, fd, next_offset=base)

    def _write_index(self, seg: sg.Segment) -> None:
        """Best effort: the index is a cache that recovery rebuilds when it is missing."""
        data = sg.encode_index(seg.base, seg.next_offset, seg.end, seg.max_timestamp, seg.entries)
        try:
            sg.write_atomic(sg.index_path(self.path, seg.base), data, durable=False)
        except OSError as e:
            log.warning(
                "log %s: cannot write the index of %s (%s); it is rebuilt on open", self.path, seg.path, e
            )

    def _checkpoint(self, point: int) -> None:
        """Best effort: without it the next open scans from an earlier segment."""
        try:
            sg.write_checkpoint(self.path, point)
        except OSError as e:
            log.warning("log %s: cannot write the recovery checkpoint (%s)", self.path, e)

    # ---- appending ----

    def _check_open(self) -> None:
        """Raise if the log is failed or closed (lock held)."""
        if self._failed is not None:
            raise errors.LogFailedError(
                f"log {self.path} refuses appends after a failed write or sync ({self._failed}); records "
                f"{self._durable}..{self._next_locked() - 1} are not durable",
                durable_offset=self._durable,
                next_offset=self._next_locked(),
            )
        if self._closed:
            raise errors.LogClosedError(f"log {self.path} is closed")

    def _append_py(
        self,
        value: bytes | bytearray | memoryview,
        key: bytes | bytearray | memoryview | None = None,
        *,
        timestamp_ns: int | None = None,
        producer_id: int = 0,
        sequence: int = 0,
    ) -> int:
        """Append one record; returns its offset, durable per the fsync policy when it returns.

        (`append` is LogCore's C method, which takes the common calls itself and hands every
        other call, and every failure, to this Python body; see __init__.)"""
        if type(value) is not bytes:
            value = bytes(value)
        if key is None:
            kp, kl = _NULL, -1
        else:
            kp = key if type(key) is bytes else bytes(key)
            kl = len(kp)
        if timestamp_ns is None:
            off = _append(self._w, value, len(value), kp, kl, 0, 1, producer_id, sequence)
        else:
            off = _append(self._w, value, len(value), kp, kl, timestamp_ns, 0, producer_id, sequence)
        if off < 0:
            off = self._append_slow(off, value, kp, kl, timestamp_ns, producer_id, sequence)
        if self._always:
            self.sync(off + 1)
        return off

    _append_py.__name__, _append_py.__qualname__ = "append", "Log.append"  # what a TypeError names
    if TYPE_CHECKING:  # at run time `append` is LogCore's C method, with this signature
        append = _append_py

    def _append_slow(self, rc: int, value: bytes, kp, kl: int, ts: int | None, pid: int, seq: int) -> int:
        if rc == lib.NMQ_ETOOBIG:
            if len(value) > MAX_PAYLOAD:
                raise errors.PayloadTooLargeError(len(value), MAX_PAYLOAD)
            raise errors.PayloadTooLargeError(kl, MAX_KEY, what="key")
        with self._lock:
            while True:
                off = _append(self._w, value, len(value), kp, kl, ts or 0, ts is None, pid, seq)
                if off >= 0:
                    return off
                if off == lib.NMQ_LOG_FULL:
                    if self._room_empty():
                        raise errors.NanoMQError("a record does not fit in an empty segment")
                    self._roll()
                elif off == lib.NMQ_ECLOSED:
                    self._check_open()
                    raise errors.LogClosedError(f"log {self.path} has no active segment")
                elif off == lib.NMQ_LOG_EIO:
                    self._write_failed()
                else:
                    raise errors.NanoMQError(f"append failed with status {off}")

    def _room_empty(self) -> bool:
        info = ffi.new("nmq_seg_info *")
        lib.nmq_seg_get_info(self._w, info)
        return info.pos == sg.SEGMENT_HEADER

    def append_batch(
        self,
        values: Sequence[bytes | bytearray | memoryview],
        keys: Sequence[bytes | bytearray | memoryview | None] | None = None,
        *,
        timestamp_ns: int | Sequence[int] | None = None,
        producer_id: int = 0,
        first_sequence: int = 0,
    ) -> int:
        """Append records (record i gets sequence first_sequence + i); returns the first offset.

        One write and one sync for the batch (a batch larger than the room left in the
        segment continues in the next one)."""
        n = len(values)
        data, lens, kdata, klens, tss = batch_columns(values, keys, timestamp_ns)
        if n == 0:
            return self.next_offset
        ts = timestamp_ns if isinstance(timestamp_ns, int) else 0
        vp = ffi.from_buffer(data)
        kp = ffi.from_buffer(kdata)
        lp = ffi.from_buffer("uint32_t[]", lens)
        klp = ffi.from_buffer("int32_t[]", klens) if klens is not None else _NULL
        tp = ffi.from_buffer("int64_t[]", tss) if tss is not None else _NULL
        now = timestamp_ns is None
        if now:
            ts = time.time_ns()  # one timestamp for the whole batch, even across a roll
        with self._lock:
            first = self._next_locked()
            done = 0
            vpos = kpos = 0
            while True:
                rc = lib.nmq_seg_append_values(
                    self._w,
                    vp + vpos,
                    lp + done,
                    kp + kpos,
                    klp + done if klens is not None else _NULL,
                    n - done,
                    tp + done if tss is not None else _NULL,
                    ts,
                    0,
                    producer_id,
                    first_sequence + done,
                )
                if self._rolled_for(rc):
                    continue
                if rc:
                    vpos += sum(lens[done : done + rc])
                    if klens is not None:
                        kpos += sum(k for k in klens[done : done + rc] if k > 0)
                    done += rc
                if done == n:
                    break
                self._roll_for_rest(rc)
            last = self._next_locked()
        if self._always:
            self.sync(last)
        return first

    def append_encoded(
        self, buf: bytes | bytearray | memoryview, *, sync: bool | None = None, validated: bool = False
    ) -> tuple[int, int]:
        """Append a batch already in the record format; returns (first_offset, next_offset).

        The whole batch is validated first in one C call (CorruptRecordError, nothing
        written), then copied with offsets stamped. sync=None syncs per the policy, False
        not now (call sync() later), True before returning. validated=True skips the
        validation for a caller that has just run `record.validate_batch` on these very
        bytes (the broker does, to enforce its own limits): each CRC is checked once."""
        size = nbytes(buf)
        if not validated:
            validate_batch(buf)
        src = ffi.from_buffer(buf)
        with self._lock:
            consumed = self._consumed
            last = first = self._next_locked()
            pos = 0
            while pos < size:
                rc = lib.nmq_seg_append_encoded(self._w, src + pos, size - pos, consumed)
                if self._rolled_for(rc):
                    continue
                pos += consumed[0]
                last += rc
                if pos < size:
                    self._roll_for_rest(rc)
        if sync or (sync is None and self._always):
            self.sync(last)
        return first, last

    def _rolled_for(self, rc: int) -> bool:
        """Act on a batch append's status (lock held): True after rolling to a new segment for a
        batch that fits whole in one (call again), False when records were written (rc ≥ 0);
        raises for a closed or failed log and any other error."""
        if rc == lib.NMQ_LOG_FULL:
            self._roll()
            return True
        if rc == lib.NMQ_ECLOSED:
            self._check_open()
        if rc == lib.NMQ_LOG_EIO:
            self._write_failed()
        if rc < 0:
            raise errors.NanoMQError(f"append failed with status {rc}")
        return False

    def _roll_for_rest(self, wrote: int) -> None:
        """The segment took only part of a batch (lock held): go on in a new one, unless the next
        record fits not even in an empty segment."""
        if wrote == 0 and self._room_empty():
            raise errors.NanoMQError("a record does not fit in an empty segment")
        self._roll()

    def _seal(self, seg: sg.Segment) -> None:
        """Detach the active segment and cut it to its records (lock held)."""
        self._detach(seg)  # unmapped before the truncate: never truncate a mapped file
        os.ftruncate(seg.fd, seg.end)

    def _roll(self) -> None:
        """Seal the active segment and start a new one (lock held)."""
        old = self._active
        assert old is not None and old.writer is not None
        self._check_open()
        self._detach(old)  # appends wait on the lock from here until the new segment is attached
        try:
            new = self._create_segment(old.next_offset)
        except BaseException:
            # DiskFullError: the log stays as it was, the old segment active again.
            self._activate(old)
            raise
        os.ftruncate(old.fd, old.end)
        if self.fsync != "never":
            try:
                os.fdatasync(old.fd)
            except OSError as e:
                self._fail(e)
                self._check_open()
        else:
            self._unsynced.append(old)
        self._write_index(old)
        self._segments.append(new)
        try:
            self._activate(new)
        except BaseException:
            self._segments.pop()
            raise
        self._rolls += 1
        if self.fsync != "never" and not self._unsynced:
            self._durable = max(self._durable, old.next_offset)
            self._checkpoint(new.base)
        if self.retention_bytes is not None or self.retention_ms is not None:
            self._retain()

    def _write_failed(self) -> NoReturn:
        """The C writer's pwrite failed: fail the log and raise LogFailedError (lock held)."""
        self._fail(OSError(ffi.string(lib.nmq_last_error()).decode()))
        self._check_open()
        raise AssertionError("unreachable: the log is failed")  # pragma: no cover

    def _fail(self, e: BaseException) -> None:
        """A sync failed: refuse appends from now on (lock held)."""
        self._failed = e
        if self._active is not None and self._active.writer is not None:
            self._detach(self._active)

    # ---- durability ----

    def sync(self, upto: int | None = None) -> None:
        """Return once every record below `upto` (default: all appended) is durable.

        Concurrent callers share one fdatasync (group commit); the GIL is released during it.
        After a failed sync the log refuses appends and this raises LogFailedError."""
        with self._cond:
            if upto is None:
                upto = self._next_locked()
            while True:
                if self._failed is not None:
                    self._check_open()
                if self._durable >= upto:
                    return
                if not self._syncing:
                    break
                self._cond.wait()
            if self._active is None:
                self._check_open()
            self._syncing = True
            target = self._next_locked()
            segs = [*self._unsynced, self._active]
        try:
            for seg in segs:
                os.fdatasync(seg.fd)
        except OSError as e:
            with self._cond:
                self._syncing = False
                self._fail(e)
                self._cond.notify_all()
            log.error(
                "log %s: fdatasync failed (%s): no more appends; %d..%d not durable",
                self.path,
                e,
                self._durable,
                target - 1,
            )
            self._check_open()
        with self._cond:
            self._syncing = False
            self._syncs += 1
            if target > self._durable:
                self._durable = target
            for seg in segs[:-1]:
                if seg in self._unsynced:
                    self._unsynced.remove(seg)
            self._cond.notify_all()

    def _next_locked(self) -> int:
        if self._segments:  # into the log's own info struct: no allocation per append
            return self._segments[-1].info(self._info)[1]
        return 0

    def _tick(self) -> None:
        period = self.fsync_interval_ms / 1000
        while not self._stop.wait(period):
            try:
                self.sync()
            except (errors.LogFailedError, errors.LogClosedError):
                return
            except Exception:  # pragma: no cover - logged, the next append reports the failure
                log.exception("log %s: interval sync failed", self.path)
                return

    # ---- reading ----

    def _find(self, offset: int) -> tuple[list[tuple[sg.Segment, int, int]], int, int]:
        """Snapshot [(segment, end, next_offset)] from the one holding `offset` (lock taken)."""
        with self._lock:
            if self._closed:
                raise errors.LogClosedError(f"log {self.path} is closed")
            segs = self._segments
            first = segs[0].base if segs else 0
            nxt = self._next_locked()
            if offset < first or offset > nxt:
                raise errors.OffsetOutOfRangeError(offset, first, nxt)
            lo = 0
            for i in range(len(segs) - 1, -1, -1):
                if segs[i].base <= offset:
                    lo = i
                    break
            return [(s, *s.live()) for s in segs[lo:]], first, nxt

    def _records_from(
        self, seg: sg.Segment, end: int, seg_next: int, offset: int, want: int = READ_CHUNK
    ) -> Iterator[tuple[bytes, int, int, int]]:
        """(chunk, start, stop, file position of chunk) of validated records of `seg` from
        `offset`: chunk[start:stop] holds whole records, the first with offset >= `offset`.
        Chunks are `want` bytes (grown to READ_CHUNK when a record is larger)."""
        expect, pos = seg.index_floor(offset) if offset > seg.base else (seg.base, sg.SEGMENT_HEADER)
        res = ffi.new("nmq_log_scan_result *")
        while pos < end and expect < seg_next:
            chunk = os.pread(seg.fd, min(want, end - pos), pos)
            lib.nmq_log_scan(chunk, len(chunk), 0, expect, 1, 0, 1, _NULL, 0, 2**64 - 1, res)
            good, status, nxt = res.end, res.status, res.next_offset
            start = 0
            if offset > expect and res.count:
                skip = min(offset - expect, res.count)
                lib.nmq_log_scan(chunk, good, 0, expect, 1, 0, 1, _NULL, 0, skip, res)
                start = res.end
            if good > start:
                yield chunk, start, good, pos
            pos += good
            expect = nxt
            if pos >= end:
                return
            if status == lib.NMQ_LOG_SCAN_SHORT and pos + len(chunk) - good < end:
                if good == 0:  # a record longer than the chunk: read it whole
                    if want >= READ_CHUNK:
                        pos, expect = self._read_damage(seg, pos, expect, end, seg_next, status)
                        continue
                    want = READ_CHUNK
                continue  # the next record starts the next chunk
            pos, expect = self._read_damage(seg, pos, expect, end, seg_next, status)

    def _read_damage(self, seg: sg.Segment, pos: int, expect: int, end: int, seg_next: int, status: int):
        """Damage found while reading: where the next valid record is (accept_loss) or raise."""
        for gpos, gend, gfirst, gnext in seg.gaps:  # found (and accepted) at open
            if gpos == pos and gfirst == expect:
                return gend, gnext
        mem = lib.nmq_log_map(seg.fd, end, 0)
        if mem == _NULL:
            raise OSError(f"cannot map {seg.path}: {ffi.string(lib.nmq_last_error()).decode()}")
        try:
            nxt = lib.nmq_log_find_next(mem, end, pos + 8, expect)
            first = int.from_bytes(ffi.buffer(mem + nxt, 8)[:], "little") if nxt >= 0 else seg_next
        finally:
            lib.nmq_log_unmap(mem, end)
        last = first - 1
        from nanomq.log.recovery import STATUS_NAMES

        text = (
            f"log {self.path}: records {expect}..{last} of {seg.path} "
            f"(bytes {pos}..{nxt if nxt >= 0 else end}) "
            f"fail validation ({STATUS_NAMES.get(status, status)})"
        )
        if not self.accept_loss:
            raise errors.LogCorruptError(
                text + "; open with accept_loss=True to skip them",
                path=seg.path,
                first_offset=expect,
                last_offset=last,
            )
        log.error("%s: skipped (accept_loss=True)", text)
        gap = (pos, nxt, expect, first) if nxt >= 0 else (pos, end, expect, seg_next)
        with self._lock:
            if gap not in seg.gaps:
                seg.gaps.append(gap)
                self._accepted.append(sg.AcceptedLoss(seg.base, *gap, STATUS_NAMES.get(status, str(status))))
                sg.write_accepted_loss(self.path, self._accepted)
        return gap[1], gap[3]

    def read(
        self, from_offset: int = 0, *, max_records: int | None = None, max_bytes: int | None = None
    ) -> Iterator[Record]:
        """Records from `from_offset` on (as the log is when the iteration starts).

        Views over the bytes read, no payload copied; every record's CRC and offset were
        checked. max_bytes bounds the records' total size (at least one record is returned).
        OffsetOutOfRangeError for an offset before first_offset (deleted) or past next_offset."""
        snap, _, nxt = self._find(from_offset)
        return self._iter(snap, from_offset, nxt, max_records, max_bytes)

    def _iter(self, snap, from_offset: int, nxt: int, max_records: int | None, max_bytes: int | None):
        left = max_records if max_records is not None else -1
        budget = max_bytes if max_bytes is not None else -1
        started = False
        offset = from_offset
        # A small read (a consumer's poll) should not pread a whole MiB.
        want = READ_CHUNK
        if max_records is not None or max_bytes is not None:
            want = min(READ_CHUNK, (max_bytes or 0) + (64 << 10) + self.index_interval_bytes)
        for seg, end, seg_next in snap:
            if offset >= nxt or left == 0:
                return
            offset = max(offset, seg.base)
            for gap_first, gap_next in self._gaps:
                if gap_first <= offset < gap_next:
                    offset = gap_next
            for chunk, start, stop, _ in self._records_from(seg, end, seg_next, offset, want):
                view = memoryview(chunk)[start:stop]
                for rec in iter_records(view):
                    if left == 0:
                        return
                    if budget >= 0:
                        if started and rec.size > budget:
                            return
                        budget = max(0, budget - rec.size)
                    started = True
                    left -= 1
                    offset = rec.offset + 1
                    yield rec
            offset = max(offset, seg_next)

    def read_encoded(self, offset: int, max_bytes: int) -> bytes:
        """Whole records from `offset` in the record format, from one segment: at most
        max_bytes unless the first record alone is larger; b"" at the end of the log."""
        sl = self._slice(offset, max_bytes, with_data=True)
        return sl if isinstance(sl, bytes) else b""

    def slice(self, offset: int, max_bytes: int) -> LogSlice:
        """The byte range of one segment file holding whole records from `offset` (length 0 at
        the end of the log), for os.sendfile; the records were validated."""
        return self._slice(offset, max_bytes, with_data=False)  # type: ignore[return-value]

    def _slice(self, offset: int, max_bytes: int, *, with_data: bool) -> LogSlice | bytes:
        snap, _, nxt = self._find(offset)
        for gap_first, gap_next in self._gaps:
            if gap_first <= offset < gap_next:
                offset = gap_next
        for seg, end, seg_next in snap:
            if offset >= nxt:
                break
            if offset >= seg_next:
                continue
            want = min(READ_CHUNK, max_bytes + self.index_interval_bytes + MAX_RECORD)
            for chunk, start, stop, cpos in self._records_from(
                seg, end, seg_next, max(offset, seg.base), want
            ):
                # Whole records of chunk[start:stop] within max_bytes (at least one).
                res = ffi.new("nmq_log_scan_result *")
                view = memoryview(chunk)[start:stop]  # no copy
                ptr = ffi.from_buffer(view)
                limit = max(0, min(max_bytes, len(view)))
                lib.nmq_log_scan(ptr, limit, 0, 0, 0, 0, 1, _NULL, 0, 2**64 - 1, res)
                n, size = res.count, res.end
                if n == 0:
                    lib.nmq_log_scan(ptr, len(view), 0, 0, 0, 0, 1, _NULL, 0, 1, res)
                    n, size = res.count, res.end
                first = int.from_bytes(view[:8], "little")
                if with_data:
                    return chunk if start == 0 and size == len(chunk) else bytes(view[:size])
                return LogSlice(seg.fd, cpos + start, size, first, first + n, seg)
        if with_data:
            return b""
        return LogSlice(-1, 0, 0, nxt, nxt, None)

    def offset_for_timestamp(self, ts_ns: int) -> int:
        """The first offset whose record timestamp is >= ts_ns (next_offset if none)."""
        with self._lock:
            if self._closed:
                raise errors.LogClosedError(f"log {self.path} is closed")
            snap = [(s, *s.info()) for s in self._segments]
            result = self._next_locked()
        for seg, end, _, mts in snap:
            if mts < ts_ns or end <= sg.SEGMENT_HEADER:
                continue
            mem = lib.nmq_log_map(seg.fd, end, 0)
            if mem == _NULL:
                continue
            try:
                pos = lib.nmq_log_find_timestamp(mem, end, sg.SEGMENT_HEADER, ts_ns)
                if pos >= 0:
                    return int.from_bytes(ffi.buffer(mem + pos, 8)[:], "little")
            finally:
                lib.nmq_log_unmap(mem, end)
        return result

    # ---- retention ----

    def apply_retention(self) -> int:
        """Delete whole old segments beyond retention_bytes / retention_ms (never the active
        one); returns how many were deleted."""
        with self._lock:
            if self._closed:
                raise errors.LogClosedError(f"log {self.path} is closed")
            return self._retain()

    def _retain(self) -> int:
        deleted = 0
        now_ns = time.time_ns()
        while len(self._segments) > 1:
            old = self._segments[0]
            total = sum(s.live()[0] for s in self._segments)
            by_size = self.retention_bytes is not None and total > self.retention_bytes
            by_age = (
                self.retention_ms is not None and old.max_timestamp < now_ns - self.retention_ms * 1_000_000
            )
            if not (by_size or by_age):
                break
            self._segments.pop(0)
            if old in self._unsynced:
                self._unsynced.remove(old)  # deleted: nothing left to make durable
            for p in (old.path, sg.index_path(self.path, old.base)):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
            deleted += 1
        if deleted:
            sg.fsync_dir(self.path)
            self._deleted += deleted
            first = self._segments[0].base
            self._gaps = [g for g in self._gaps if g[1] > first]
            kept = [a for a in self._accepted if a.segment >= first or (a.segment < 0 and a.next > first)]
            if len(kept) != len(self._accepted):
                self._accepted = kept
                sg.write_accepted_loss(self.path, kept)
            log.info(
                "log %s: retention deleted %d segment(s); first offset now %d",
                self.path,
                deleted,
                self._segments[0].base,
            )
        return deleted

    # ---- state ----

    @property
    def first_offset(self) -> int:
        """The oldest offset still in the log."""
        with self._lock:
            return self._segments[0].base if self._segments else 0

    @property
    def next_offset(self) -> int:
        """The offset the next append gets."""
        with self._lock:
            return self._next_locked()

    @property
    def durable_offset(self) -> int:
        """Every record below this offset is durable (fdatasync'ed)."""
        with self._lock:
            return self._durable

    @property
    def size_bytes(self) -> int:
        """Bytes of the segment files up to their last records (headers included)."""
        with self._lock:
            return sum(s.live()[0] for s in self._segments)

    @property
    def segment_count(self) -> int:
        with self._lock:
            return len(self._segments)

    def stats(self) -> LogStats:
        """A snapshot of the counters (syncs counts fdatasync rounds: group commits)."""
        with self._lock:
            return LogStats(
                first_offset=self._segments[0].base if self._segments else 0,
                next_offset=self._next_locked(),
                durable_offset=self._durable,
                segments=len(self._segments),
                size_bytes=sum(s.live()[0] for s in self._segments),
                syncs=self._syncs,
                rolls=self._rolls,
                segments_deleted=self._deleted,
                failed=self._failed is not None,
            )

    # ---- closing ----

    def close(self) -> None:
        """Sync, cut the active segment to its records, checkpoint and release the lock.

        After a failed sync nothing more is synced or checkpointed (the next open recovers)."""
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join()
        with self._cond:
            if self._closed:
                return
            while self._syncing:
                self._cond.wait()
            self._closed = True
            try:
                if self._failed is None and self._active is not None and self._active.writer is not None:
                    active = self._active
                    for seg in self._unsynced:
                        os.fdatasync(seg.fd)
                    self._unsynced = []
                    self._seal(active)
                    os.fdatasync(active.fd)
                    self._durable = active.next_offset
                    self._write_index(active)
                    self._checkpoint(active.base)
            finally:
                self._release()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self._failed else "open")
        return f"<Log {self.path} {state} fsync={self.fsync}>"


def _status_name(status: int) -> str:
    from nanomq.log.recovery import STATUS_NAMES

    return STATUS_NAMES.get(status, str(status))
