"""The segmented log (nanomq.log): appends, reads, rolls, reopen, sync policies, retention, locks.

Real files in real directories; other processes are real subprocesses.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanomq import errors
from nanomq.crc32c import crc32c
from nanomq.log import Log, LogSlice
from nanomq.log.segment import read_index
from nanomq.record import MAX_KEY, MAX_PAYLOAD, Codec, encode, encode_batch

SMALL = 300_000  # a little over the minimum segment size: rolls come quickly


@pytest.fixture
def logdir() -> Iterator[Path]:
    """A fresh directory on tmpfs (fsync is cheap there; the files are still real files)."""
    d = Path(tempfile.mkdtemp(prefix="nanomq-log-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    yield d / "log"
    shutil.rmtree(d, ignore_errors=True)


def value_for(offset: int, size: int = 100) -> bytes:
    seed = f"{offset:012d}".encode()
    return (seed * (size // len(seed) + 1))[:size]


def check_crc(rec) -> None:
    raw = bytes(rec.raw)
    assert crc32c(raw[12 : rec.length]) == rec.crc


def test_append_read_roundtrip_keys_timestamps(logdir: Path) -> None:
    with Log.open(logdir, fsync="never") as log:
        assert (log.first_offset, log.next_offset) == (0, 0)
        assert log.append(b"a") == 0
        assert log.append(b"b", key=b"k", timestamp_ns=123, producer_id=7, sequence=9) == 1
        assert log.append(bytearray(b"c"), key=b"") == 2
        assert log.append(memoryview(b"d"), key=memoryview(b"mk")) == 3
        recs = list(log.read())
        assert [r.value for r in recs] == [b"a", b"b", b"c", b"d"]
        assert [r.key for r in recs] == [None, b"k", b"", b"mk"]
        assert [r.offset for r in recs] == [0, 1, 2, 3]
        assert (recs[1].timestamp, recs[1].producer_id, recs[1].sequence) == (123, 7, 9)
        assert abs(recs[0].timestamp - time.time_ns()) < 60 * 10**9
        for r in recs:
            check_crc(r)


def test_append_matches_the_record_encoder_byte_for_byte(logdir: Path) -> None:
    with Log.open(logdir, fsync="never") as log:
        log.append(b"value", key=b"key", timestamp_ns=42, producer_id=3, sequence=4)
        got = log.read_encoded(0, 1 << 20)
    assert got == encode(b"value", key=b"key", timestamp_ns=42, producer_id=3, sequence=4, offset=0)


def test_append_batch_and_encoded_give_contiguous_offsets(logdir: Path) -> None:
    with Log.open(logdir, fsync="never") as log:
        assert log.append_batch([b"x", b"y", b"z"], keys=[None, b"k1", b""], first_sequence=10) == 0
        assert log.append_batch([b"t1", b"t2"], timestamp_ns=[5, 6]) == 3
        assert log.append_encoded(encode_batch([b"e1", b"e2", b"e3"], first_offset=77)) == (5, 8)
        assert log.append_encoded(b"") == (8, 8)
        assert log.append_batch([]) == 8
        recs = list(log.read())
        assert [r.offset for r in recs] == list(range(8))
        assert [r.value for r in recs] == [b"x", b"y", b"z", b"t1", b"t2", b"e1", b"e2", b"e3"]
        assert [r.sequence for r in recs[:3]] == [10, 11, 12]
        assert [r.key for r in recs[:3]] == [None, b"k1", b""]
        assert [r.timestamp for r in recs[3:5]] == [5, 6]


def test_compressed_records_pass_through_append_encoded(logdir: Path) -> None:
    value = b"compress me " * 500
    with Log.open(logdir, fsync="never") as log:
        log.append_encoded(encode_batch([value, value], codec=Codec.ZSTD))
        assert [r.value for r in log.read()] == [value, value]


def test_corrupt_encoded_batch_is_rejected_and_nothing_is_written(logdir: Path) -> None:
    buf = bytearray(encode_batch([b"a" * 50, b"b" * 50]))
    buf[-20] ^= 1
    with Log.open(logdir, fsync="never") as log:
        with pytest.raises(errors.CorruptRecordError):
            log.append_encoded(bytes(buf))
        assert log.next_offset == 0
        assert log.size_bytes == 64


def test_limits_are_enforced_before_writing(logdir: Path) -> None:
    with Log.open(logdir, fsync="never") as log:
        with pytest.raises(errors.PayloadTooLargeError, match="65537"):
            log.append(b"x" * 65537)
        with pytest.raises(errors.PayloadTooLargeError):
            log.append(b"x", key=b"k" * 65536)
        with pytest.raises(errors.PayloadTooLargeError):
            log.append_batch([b"ok", b"x" * 65537])
        assert log.append(b"x" * 65536) == 0
        with pytest.raises(ValueError, match="keys"):
            log.append_batch([b"a"], keys=[b"1", b"2"])
    with pytest.raises(ValueError, match="segment_bytes"):
        Log.open(logdir, segment_bytes=4096)
    with pytest.raises(ValueError, match="fsync"):
        Log.open(logdir, fsync="sometimes")  # type: ignore[arg-type]


def test_segments_roll_and_are_named_by_base_offset(logdir: Path) -> None:
    with Log.open(logdir, segment_bytes=SMALL, fsync="never") as log:
        for i in range(3000):
            assert log.append(value_for(i, 200)) == i
        assert log.segment_count > 1
        names = sorted(p.name for p in logdir.glob("*.log"))
        assert names[0] == "00000000000000000000.log"
        assert all(len(n) == 24 for n in names)
        assert [r.value for r in log.read()] == [value_for(i, 200) for i in range(3000)]
        assert log.stats().rolls == log.segment_count - 1
    # every sealed segment has a valid index matching its file
    for p in sorted(logdir.glob("*.log")):
        base = int(p.stem)
        assert read_index(str(logdir), base, p.stat().st_size) is not None


def test_reopen_keeps_everything_and_appending_resumes(logdir: Path) -> None:
    with Log.open(logdir, segment_bytes=SMALL, fsync="never") as log:
        log.append_batch([value_for(i) for i in range(2500)])
    with Log.open(logdir, segment_bytes=SMALL, fsync="never") as log:
        assert log.next_offset == 2500
        assert log.recovery is not None and not log.recovery.truncated and not log.recovery.damaged
        assert log.recovery.scanned_segments == 1  # only the active segment: the checkpoint covers the rest
        assert log.append(value_for(2500)) == 2500
    with Log.open(logdir, segment_bytes=SMALL) as log:
        assert [r.value for r in log.read()] == [value_for(i) for i in range(2501)]


def test_read_from_offsets_with_limits(logdir: Path) -> None:
    with Log.open(logdir, segment_bytes=SMALL, index_interval_bytes=256, fsync="never") as log:
        log.append_batch([value_for(i, 300) for i in range(2000)])
        for start in (0, 1, 17, 999, 1000, 1500, 1999):
            recs = list(log.read(start, max_records=5))
            assert [r.offset for r in recs] == list(range(start, min(start + 5, 2000)))
            assert [r.value for r in recs] == [value_for(o, 300) for o in range(start, min(start + 5, 2000))]
        assert list(log.read(2000)) == []
        # max_bytes bounds the total, but one record always comes back
        assert len(list(log.read(10, max_bytes=1))) == 1
        assert len(list(log.read(10, max_bytes=3 * 368))) == 3
        with pytest.raises(errors.OffsetOutOfRangeError, match="next_offset is 2000"):
            log.read(2001)


def test_read_encoded_and_slice_serve_whole_records(logdir: Path) -> None:
    with Log.open(logdir, segment_bytes=SMALL, fsync="never") as log:
        log.append_batch([value_for(i, 500) for i in range(1500)])
        data = log.read_encoded(700, 5000)
        assert 0 < len(data) <= 5000
        recs = list(log.read(700, max_bytes=5000))
        assert data == b"".join(bytes(r.raw) for r in recs)
        sl = log.slice(700, 5000)
        assert isinstance(sl, LogSlice)
        assert (sl.first_offset, sl.next_offset, sl.length) == (700, 700 + len(recs), len(data))
        assert os.pread(sl.fd, sl.length, sl.position) == data
        # sendfile the range into a socket, as the broker does
        a, b = socket.socketpair()
        with a, b:
            sent = os.sendfile(a.fileno(), sl.fd, sl.position, sl.length)
            assert sent == sl.length
            got = b""
            while len(got) < sent:
                got += b.recv(sent - len(got))
        assert got == data
        # a record larger than max_bytes still comes back alone
        assert len(log.read_encoded(5, 1)) == 64 + 504
        end = log.slice(1500, 100)
        assert (end.length, end.first_offset, end.next_offset) == (0, 1500, 1500)
        assert log.read_encoded(1500, 100) == b""


def test_offset_for_timestamp(logdir: Path) -> None:
    with Log.open(logdir, segment_bytes=SMALL, fsync="never") as log:
        for i in range(3000):
            log.append(value_for(i), timestamp_ns=1000 + 10 * i)
        assert log.offset_for_timestamp(0) == 0
        assert log.offset_for_timestamp(1000 + 10 * 1234) == 1234
        assert log.offset_for_timestamp(1000 + 10 * 1234 - 5) == 1234
        assert log.offset_for_timestamp(10**18) == 3000


def test_retention_by_size_and_age_deletes_whole_old_segments(logdir: Path) -> None:
    old = time.time_ns() - 3600 * 10**9
    with Log.open(logdir, segment_bytes=SMALL, fsync="never", retention_bytes=3 * SMALL) as log:
        for i in range(10000):
            log.append(value_for(i, 200), timestamp_ns=old)
        assert log.size_bytes <= 3 * SMALL + SMALL
        first = log.first_offset
        assert first > 0 and log.stats().segments_deleted > 0
        assert next(iter(log.read(first))).offset == first
        with pytest.raises(errors.OffsetOutOfRangeError, match=f"first_offset is {first}"):
            log.read(0)
    with Log.open(logdir, segment_bytes=SMALL, fsync="never") as log:
        assert log.first_offset == first
        assert [r.offset for r in log.read(first)] == list(range(first, 10000))
    with Log.open(logdir, segment_bytes=SMALL, fsync="never", retention_ms=60_000) as log:
        n = log.segment_count
        assert n > 1
        # records stamped an hour ago age out by retention_ms = 1 min; the active segment stays
        assert log.apply_retention() == n - 1
        assert log.segment_count == 1
        log.append(b"new", timestamp_ns=old)
        assert log.next_offset == 10001


LOCK_HOLDER = """
import sys
from nanomq.log import Log
log = Log.open(sys.argv[1], fsync="never")
print("locked", flush=True)
sys.stdin.read()
log.close()
"""


def test_a_second_process_cannot_open_the_log(logdir: Path) -> None:
    Log.open(logdir).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(logdir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
        with pytest.raises(errors.LogLockedError, match=f"process {proc.pid}") as exc:
            Log.open(logdir)
        assert exc.value.pid == proc.pid
    finally:
        proc.communicate(b"", timeout=60)
    with Log.open(logdir) as log:  # released when the holder closed
        assert log.next_offset == 0


def test_the_same_process_cannot_open_it_twice(logdir: Path) -> None:
    with Log.open(logdir), pytest.raises(errors.LogLockedError, match=str(os.getpid())):
        Log.open(logdir)


def test_group_commit_shares_fdatasyncs_between_threads(tmp_path: Path) -> None:
    # On a real disk (not tmpfs) an fdatasync takes long enough for the other threads'
    # appends to pile up behind it and share the next one.
    logdir = tmp_path / "log"
    threads, per_thread = 8, 150
    with Log.open(logdir, fsync="always") as log:
        start = threading.Barrier(threads)
        offsets: list[list[int]] = [[] for _ in range(threads)]

        def work(k: int) -> None:
            start.wait()
            for i in range(per_thread):
                off = log.append(f"{k}-{i}".encode())
                assert log.durable_offset > off  # durable when append returned
                offsets[k].append(off)

        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        total = threads * per_thread
        assert sorted(o for lst in offsets for o in lst) == list(range(total))
        stats = log.stats()
        assert stats.durable_offset == total
        assert 0 < stats.syncs < total, stats
    with Log.open(logdir) as log:
        values = {r.value for r in log.read()}
        assert values == {f"{k}-{i}".encode() for k in range(threads) for i in range(per_thread)}


def test_sync_policies(logdir: Path) -> None:
    with Log.open(logdir, fsync="never") as log:
        log.append(b"a")
        assert log.durable_offset == 0
        log.sync()
        assert log.durable_offset == 1
        assert log.append_encoded(encode_batch([b"x", b"y"]), sync=False) == (1, 3)
        assert log.durable_offset == 1
        log.sync(upto=2)
        assert log.durable_offset >= 2
        log.append_encoded(encode_batch([b"z"]), sync=True)
        assert log.durable_offset == 4
    with Log.open(logdir, fsync="interval", fsync_interval_ms=5) as log:
        log.append(b"b")
        log.sync()  # returns once the record is durable, whether the ticker got there first or not
        assert log.durable_offset == 5


@contextlib.contextmanager
def fd_replaced(fd: int, path: str, flags: int) -> Iterator[None]:
    """Make descriptor `fd` refer to `path` opened with `flags` for a while: the log's next
    system call on it meets a real error from the kernel."""
    other = os.open(path, flags)
    saved = os.dup(fd)
    os.dup2(other, fd)
    os.close(other)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def test_a_failed_sync_stops_appends_and_reports_what_is_not_durable(logdir: Path) -> None:
    log = Log.open(logdir, fsync="never")
    log.append(b"durable")
    log.sync()
    log.append(b"pending")
    # Make the active segment's fd refer to /dev/null: fdatasync then fails with EINVAL, a
    # real error from the kernel.
    active = log._active
    assert active is not None
    try:
        with fd_replaced(active.fd, os.devnull, os.O_RDWR):
            with pytest.raises(errors.LogFailedError, match=r"records 1\.\.1 are not durable") as exc:
                log.sync()
            assert (exc.value.durable_offset, exc.value.next_offset) == (1, 2)
            with pytest.raises(errors.LogFailedError):
                log.append(b"refused")
            with pytest.raises(errors.LogFailedError):
                log.append_batch([b"refused"])
            with pytest.raises(errors.LogFailedError):
                log.sync()
            assert log.stats().failed
    finally:
        log.close()
    with Log.open(logdir) as log:  # the next open recovers what is on disk
        assert [r.value for r in log.read()] == [b"durable", b"pending"]


def test_closed_log_refuses_calls(logdir: Path) -> None:
    log = Log.open(logdir)
    log.append(b"x")
    log.close()
    log.close()  # idempotent
    with pytest.raises(errors.LogClosedError):
        log.append(b"y")
    with pytest.raises(errors.LogClosedError):
        log.read(0)


def test_concurrent_readers_during_appends_and_rolls(logdir: Path) -> None:
    n = 4000
    with Log.open(logdir, segment_bytes=SMALL, fsync="never") as log:
        stop = threading.Event()
        problems: list[str] = []

        def reader() -> None:
            while not stop.is_set():
                seen = 0
                for rec in log.read(0):
                    if rec.offset != seen or rec.value != value_for(rec.offset, 150):
                        problems.append(f"offset {rec.offset} after {seen}")
                        return
                    seen += 1

        t = threading.Thread(target=reader)
        t.start()
        try:
            for i in range(n):
                log.append(value_for(i, 150))
        finally:
            stop.set()
            t.join()
        assert problems == []
        assert log.segment_count >= 3


def test_offsets_beyond_32_bits(logdir: Path) -> None:
    base = 1 << 40
    logdir.mkdir(parents=True)
    (logdir / f"{base:020d}.log").write_bytes(b"")  # a segment whose creation was cut short
    with Log.open(logdir, segment_bytes=SMALL, fsync="never") as log:
        assert (log.first_offset, log.next_offset) == (base, base)
        log.append_batch([value_for(i, 300) for i in range(2000)])
        assert log.segment_count > 1
    with Log.open(logdir, segment_bytes=SMALL, fsync="never") as log:
        assert log.next_offset == base + 2000
        recs = list(log.read(base + 1500, max_records=3))
        assert [r.offset for r in recs] == [base + 1500, base + 1501, base + 1502]
        sl = log.slice(base + 1999, 1 << 20)
        assert (sl.first_offset, sl.next_offset) == (base + 1999, base + 2000)
        assert log.read_encoded(base + 1999, 10)[:8] == (base + 1999).to_bytes(8, "little")


def test_single_appends_and_batches_interleave_over_megabytes(tmp_path: Path) -> None:
    # fsync="always" writes single records with pwrite and batches through the mapping; the
    # zeros the writer lays ahead of itself must never land on records either one wrote.
    logdir = tmp_path / "log"
    expected: list[bytes] = []
    with Log.open(logdir, segment_bytes=8 << 20, fsync="always") as log:
        for round_ in range(6):
            for _ in range(40):
                v = value_for(len(expected), 9000 + round_)
                log.append(v)
                expected.append(v)
            batch = [value_for(len(expected) + i, 5000) for i in range(50)]
            log.append_batch(batch)
            expected.extend(batch)
            log.append_encoded(encode_batch([b"enc%d" % len(expected)]))
            expected.append(b"enc%d" % (len(expected)))
        assert [r.value for r in log.read()] == expected
    with Log.open(logdir, segment_bytes=8 << 20) as log:
        assert [r.value for r in log.read()] == expected


def test_small_reads_of_large_records(logdir: Path) -> None:
    with Log.open(logdir, segment_bytes=4 << 20, fsync="never") as log:
        log.append_batch([value_for(i, 65536 if i % 2 else 30000) for i in range(40)])
        for start in (0, 1, 7, 38, 39):
            got = [r.value for r in log.read(start, max_records=2)]
            assert got == [value_for(o, 65536 if o % 2 else 30000) for o in range(start, min(start + 2, 40))]
            assert [r.offset for r in log.read(start, max_bytes=100)] == [start]
            assert len(log.read_encoded(start, 100)) == 64 + (65536 if start % 2 else 30000)


def test_append_batch_measures_buffers_in_bytes(tmp_path) -> None:
    from array import array

    from nanomq.log import Log

    words = array("I", [1, 2, 3])
    with Log.open(tmp_path / "l", fsync="never") as log:
        first = log.append_batch([words, b"x"], keys=[array("H", [7]), None])
        assert [(r.key, r.value) for r in log.read(first)] == [
            (array("H", [7]).tobytes(), words.tobytes()),
            (None, b"x"),
        ]


@pytest.mark.parametrize("kind", ["append", "append_batch", "append_encoded"])
def test_a_failed_write_stops_appends_and_loses_nothing_acknowledged(logdir: Path, kind: str) -> None:
    # fsync="always" writes with pwrite(); point the segment's fd at a read-only descriptor of
    # the same file, so the kernel refuses the write (EBADF).
    log = Log.open(logdir, fsync="always")
    log.append_batch([b"acked-0", b"acked-1"])
    active = log._active
    assert active is not None
    try:
        with fd_replaced(active.fd, active.path, os.O_RDONLY):
            with pytest.raises(errors.LogFailedError, match=r"pwrite of .* failed") as exc:
                if kind == "append":
                    log.append(b"lost")
                elif kind == "append_batch":
                    log.append_batch([b"lost-a", b"lost-b"])
                else:
                    log.append_encoded(encode_batch([b"lost-a", b"lost-b"]))
            assert exc.value.durable_offset == 2
            assert log.next_offset == 2  # nothing of the failed write is counted
            with pytest.raises(errors.LogFailedError):
                log.append(b"refused")
            assert log.stats().failed
    finally:
        log.close()
    with Log.open(logdir) as log:
        assert [r.value for r in log.read()] == [b"acked-0", b"acked-1"]
        assert log.append(b"again") == 2  # a fresh open appends again


def test_batches_larger_than_the_write_buffer_are_written_whole(logdir: Path) -> None:
    # fsync="always" encodes into a 1 MiB buffer and writes it per MiB: batches of several MiB
    # cross those chunks (and a segment roll) and must come back byte for byte.
    rng = random.Random(7)
    values = [rng.randbytes(rng.randrange(30_000, 65_536)) for _ in range(70)]
    with Log.open(logdir, fsync="always", segment_bytes=3 << 20) as log:
        assert log.append_batch(values[:40], keys=[b"k%d" % i for i in range(40)]) == 0
        assert log.append_encoded(encode_batch(values[40:])) == (40, 70)
        assert log.durable_offset == 70
        assert log.stats().segments >= 2
    with Log.open(logdir) as log:
        recs = list(log.read())
        assert [r.value for r in recs] == values
        assert [r.offset for r in recs] == list(range(70))
        assert [r.key for r in recs[:40]] == [b"k%d" % i for i in range(40)]


@pytest.mark.parametrize("fsync", ["never", "always"])
def test_every_form_of_append_call_gives_the_same_records(logdir: Path, fsync: str) -> None:
    # append() is a C method whose fast path takes bytes with no keyword but key=; every other
    # form goes to the Python implementation. Both must write the same records.
    with Log.open(logdir, fsync=fsync) as log:
        offsets = [
            log.append(b"a"),
            log.append(b"b", b"k"),
            log.append(b"c", key=b"k2"),
            log.append(b"d", None),
            log.append(bytearray(b"e"), key=memoryview(b"k3")),
            log.append(b"f", timestamp_ns=5, producer_id=3, sequence=4),
            log.append(b"", b""),
        ]
        assert offsets == list(range(7))
        with pytest.raises(errors.PayloadTooLargeError, match="65536"):
            log.append(bytes(MAX_PAYLOAD + 1))
        with pytest.raises(errors.PayloadTooLargeError, match="key"):
            log.append(b"x", bytes(MAX_KEY + 1))
        with pytest.raises(TypeError, match=r"Log\.append\(\)"):
            log.append(b"x", bad=1)
    with Log.open(logdir) as log:
        got = [(r.value, r.key, r.producer_id, r.sequence) for r in log.read()]
        assert got == [
            (b"a", None, 0, 0),
            (b"b", b"k", 0, 0),
            (b"c", b"k2", 0, 0),
            (b"d", None, 0, 0),
            (b"e", b"k3", 0, 0),
            (b"f", None, 3, 4),
            (b"", b"", 0, 0),
        ]
        assert [r.timestamp for r in log.read()][5] == 5
    log.close()
    with pytest.raises(errors.LogClosedError):
        log.append(b"after close")


def test_threads_appending_through_rolls_lose_and_repeat_nothing(logdir: Path) -> None:
    threads, per_thread = 4, 3000
    with Log.open(logdir, fsync="never", segment_bytes=SMALL) as log:

        def work(k: int) -> None:
            for i in range(per_thread):
                log.append(b"%d:%d" % (k, i) + bytes(100), b"t%d" % k)

        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert log.next_offset == threads * per_thread
        assert log.stats().rolls > 3
    with Log.open(logdir) as log:
        seen: dict[bytes, list[int]] = {}
        for r in log.read():
            k, i = r.value.split(b"\0", 1)[0].split(b":")
            assert r.key == b"t" + k
            seen.setdefault(k, []).append(int(i))
    assert seen == {b"%d" % k: list(range(per_thread)) for k in range(threads)}
