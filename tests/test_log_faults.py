"""Damage on disk and a full disk: truncation, trailing garbage, bit flips, stale records.

Each case starts from a real log closed cleanly (two sealed segments and an active one),
damages a copy of its files the way a crash or a disk would, and opens it again. Sizes fit
CI; NANOMQ_SOAK=1 multiplies the iteration counts by 10.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanomq import errors
from nanomq.crc32c import crc32c
from nanomq.log import Log
from nanomq.log.log import MIN_SEGMENT_BYTES
from nanomq.log.segment import ACCEPTED_LOSS_NAME, CHECKPOINT_NAME, SEGMENT_HEADER, read_index
from nanomq.record import iter_records

SOAK = 10 if os.environ.get("NANOMQ_SOAK") == "1" else 1
SEG = MIN_SEGMENT_BYTES


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="nanomq-logf-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def value_for(offset: int, size: int) -> bytes:
    seed = f"<{offset:08d}>".encode()
    return (seed * (size // len(seed) + 1))[:size]


class Template:
    """A cleanly closed log whose files are kept in memory, and where each record lies."""

    def __init__(self, directory: Path, seed: int) -> None:
        rng = random.Random(seed)
        self.dir = directory
        self.sizes: list[int] = []
        with Log.open(directory, segment_bytes=SEG, fsync="never", index_interval_bytes=1024) as log:
            # two sealed segments, then 40 records in the active one
            while not (log.segment_count >= 3 and log.next_offset - self._last_base(log) >= 40):
                size = rng.choice([0, 1, 7, 8, 100, 333, 1000, 4000, 9000])
                log.append(
                    value_for(len(self.sizes), size), key=b"k%d" % len(self.sizes) if size % 2 else None
                )
                self.sizes.append(size)
        self.files = {p.name: p.read_bytes() for p in directory.iterdir() if p.name != "lock"}
        self.segments: list[
            tuple[str, int, list[tuple[int, int, int]]]
        ] = []  # (name, base, [(offset, pos, size)])
        for name in sorted(n for n in self.files if n.endswith(".log")):
            data = self.files[name]
            recs, pos = [], SEGMENT_HEADER
            for rec in iter_records(memoryview(data)[SEGMENT_HEADER:]):
                recs.append((rec.offset, pos, rec.size))
                pos += rec.size
            self.segments.append((name, int(name[:20]), recs))
        self.count = len(self.sizes)
        assert len(self.segments) == 3 and len(self.segments[-1][2]) >= 10

    @staticmethod
    def _last_base(log: Log) -> int:
        return log._segments[-1].base

    def restore(self) -> None:
        for p in self.dir.iterdir():
            if p.name not in self.files and p.name != "lock":
                p.unlink()
        for name, data in self.files.items():
            (self.dir / name).write_bytes(data)

    def expected(self, offsets) -> list[bytes]:
        return [value_for(o, self.sizes[o]) for o in offsets]


def read_checked(log: Log, start: int = 0):
    """(offset, value) of every record from `start`, each one's CRC checked independently."""
    out = []
    for rec in log.read(start):
        raw = bytes(rec.raw)
        assert crc32c(raw[12 : rec.length]) == rec.crc, f"record {rec.offset} returned with a bad CRC"
        out.append((rec.offset, rec.value))
    return out


@pytest.fixture
def template(workdir: Path) -> Template:
    return Template(workdir / "log", seed=1234)


def test_truncating_the_last_segment_keeps_exactly_the_whole_records(template: Template) -> None:
    rng = random.Random(5)
    name, base, recs = template.segments[-1]
    full = template.files[name]
    lengths = [0, 1, 63, 64, len(full)] + [rng.randrange(len(full) + 1) for _ in range(500 * SOAK)]
    for length in lengths:
        template.restore()
        (template.dir / name).write_bytes(full[:length])
        (template.dir / (name[:20] + ".index")).unlink(missing_ok=True)
        kept = [off for off, pos, size in recs if pos + size <= length]
        with Log.open(template.dir, segment_bytes=SEG) as log:
            assert log.next_offset == base + len(kept), length
            got = read_checked(log, base)
            assert [o for o, _ in got] == kept
            assert [v for _, v in got] == template.expected(kept)
            report = log.recovery
            assert report is not None and not report.damaged
            at_boundary = length == SEGMENT_HEADER or any(pos + size == length for _, pos, size in recs)
            if not at_boundary:
                assert report.truncated and report.truncated[0].offset == base + len(kept)
            assert log.append(b"resumed") == base + len(kept)


def test_random_bytes_after_a_segment_are_cleared_and_the_index_rebuilt(template: Template) -> None:
    rng = random.Random(6)
    everything = template.expected(range(template.count))
    for i in range(100 * SOAK):
        template.restore()
        name, base, _ = template.segments[i % 3]
        garbage = rng.randbytes(rng.randint(1, 1024))
        with open(template.dir / name, "ab") as f:
            f.write(garbage)
        with Log.open(template.dir, segment_bytes=SEG) as log:
            assert [v for _, v in read_checked(log)] == everything
            assert log.next_offset == template.count
            assert log.recovery is not None and not log.recovery.damaged
            if i % 3 < 2:  # a sealed segment: its index no longer matches, so it was rebuilt
                assert log.recovery.indexes_rebuilt >= 1
                size = (template.dir / name).stat().st_size
                assert size == len(template.files[name])
                assert read_index(str(template.dir), base, size) is not None
            assert log.append(b"more") == template.count


def flip(path: Path, position: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ (1 << bit)]))


def test_every_single_bit_flip_is_detected(template: Template) -> None:
    rng = random.Random(7)
    everything = list(range(template.count))
    last_name, _, last_recs = template.segments[-1]
    counts = {"tail": 0, "active": 0, "sealed": 0}
    for i in range(510 * SOAK):
        template.restore()
        kind = ("tail", "active", "sealed")[i % 3]
        if kind == "tail":
            name, (off, pos, size) = last_name, last_recs[-1]
        elif kind == "active":
            name, (off, pos, size) = last_name, rng.choice(last_recs[:-1])
        else:
            name, _, recs = template.segments[rng.randrange(2)]
            off, pos, size = rng.choice(recs)
        flip(template.dir / name, pos + rng.randrange(size), rng.randrange(8))
        counts[kind] += 1
        others = [o for o in everything if o != off]
        if kind == "tail":
            with Log.open(template.dir, segment_bytes=SEG) as log:
                assert log.recovery is not None and log.recovery.truncated[0].offset == off
                assert [o for o, _ in read_checked(log)] == others
                assert log.append(b"resumed") == off
        elif kind == "active":
            with pytest.raises(errors.LogCorruptError, match=f"records {off}\\.\\.{off} ") as exc:
                Log.open(template.dir, segment_bytes=SEG)
            assert (exc.value.first_offset, exc.value.last_offset) == (off, off)
            assert (template.dir / name).stat().st_size == len(template.files[name])  # nothing cut
            with Log.open(template.dir, segment_bytes=SEG, accept_loss=True) as log:
                assert log.recovery is not None
                assert [(d.first_offset, d.last_offset) for d in log.recovery.damaged] == [(off, off)]
                got = read_checked(log)
                assert [o for o, _ in got] == others
                assert [v for _, v in got] == template.expected(others)
                assert log.append(b"resumed") == template.count
        else:
            if i % 2:
                # sealed segments behind the checkpoint are not rescanned on open: reading finds it
                with Log.open(template.dir, segment_bytes=SEG) as log:
                    seen: list[int] = []
                    with pytest.raises(errors.LogCorruptError) as exc:
                        for rec in log.read(0):
                            assert crc32c(bytes(rec.raw)[12 : rec.length]) == rec.crc
                            seen.append(rec.offset)
                    assert (exc.value.first_offset, exc.value.last_offset) == (off, off)
                    assert seen == list(range(off))
            else:
                # without the checkpoint every segment is scanned: opening fails with the range
                os.unlink(template.dir / CHECKPOINT_NAME)
                with pytest.raises(errors.LogCorruptError) as exc:
                    Log.open(template.dir, segment_bytes=SEG)
                assert (exc.value.first_offset, exc.value.last_offset) == (off, off)
            with Log.open(template.dir, segment_bytes=SEG, accept_loss=True) as log:
                got = read_checked(log)
                assert [o for o, _ in got] == others
                assert [v for _, v in got] == template.expected(others)
    assert min(counts.values()) >= 170


def test_a_stale_record_past_the_end_is_never_resurrected(workdir: Path) -> None:
    d = workdir / "log"
    with Log.open(d, fsync="never") as log:
        for i in range(10):
            log.append(value_for(i, 200))
    seg = d / "00000000000000000000.log"
    data = seg.read_bytes()
    size = 64 + 200 + 8  # every record is 272 bytes
    # Records 0..5, a torn record 6 (half of it), then bytes of records 2..4 from an
    # earlier epoch (offsets behind the end), then records 7..9 with their offsets zeroed.
    torn = data[SEGMENT_HEADER + 6 * size : SEGMENT_HEADER + 6 * size + size // 2]
    stale = data[SEGMENT_HEADER + 2 * size : SEGMENT_HEADER + 5 * size]
    image = data[: SEGMENT_HEADER + 6 * size] + torn + bytes(size // 2) + stale
    seg.write_bytes(image)
    with Log.open(d, fsync="never") as log:
        assert log.next_offset == 6
        assert log.recovery is not None and log.recovery.truncated[0].offset == 6
        end = SEGMENT_HEADER + 6 * size
        tail = os.pread(os.open(seg, os.O_RDONLY), len(image) - end, end)
        assert tail == bytes(len(tail)), "recovery must clear everything past the recovered end"
        # new records of the same size land exactly where the stale ones were
        for i in range(3):
            assert log.append(b"new-%d" % i + bytes(194)) == 6 + i
    with Log.open(d, fsync="never") as log:
        got = read_checked(log)
        assert [o for o, _ in got] == list(range(9))
        assert [v[:5] for _, v in got[6:]] == [b"new-0", b"new-1", b"new-2"]


@pytest.fixture
def small_disk(workdir: Path) -> Iterator[Path]:
    mnt = workdir / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_full_disk_is_a_clean_error_and_loses_nothing_acknowledged(small_disk: Path) -> None:
    d = small_disk / "log"
    acked: list[int] = []
    with Log.open(d, segment_bytes=SEG, fsync="always") as log:
        with pytest.raises(errors.DiskFullError, match="no space") as exc:
            for i in range(10_000):
                acked.append(log.append(value_for(i, 4000)))
        assert exc.value.errno == errno.ENOSPC
        assert acked == list(range(len(acked))) and len(acked) > 100
        # the log is still usable: reads work, and the next append fails the same clean way
        assert [o for o, _ in read_checked(log)] == acked
        with pytest.raises(errors.DiskFullError):
            log.append(value_for(len(acked), 4000))
        with pytest.raises(errors.DiskFullError):
            log.append_batch([value_for(len(acked), 4000)] * 10)  # not split: nothing written
        assert log.next_offset == len(acked)
    with Log.open(d, segment_bytes=SEG, fsync="always") as log:
        got = read_checked(log)
        assert [o for o, _ in got] == acked
        assert [v for _, v in got] == [value_for(o, 4000) for o in acked]
        assert log.durable_offset == len(acked)


def test_a_damaged_segment_header_is_reported_and_accept_loss_keeps_the_records(template: Template) -> None:
    everything = template.expected(range(template.count))
    for name, base, _ in template.segments:
        template.restore()
        os.unlink(template.dir / CHECKPOINT_NAME)  # make recovery look at every header
        flip(template.dir / name, 20, 0)  # base_offset, under the header CRC
        with pytest.raises(errors.LogCorruptError, match="segment header") as exc:
            Log.open(template.dir, segment_bytes=SEG)
        assert exc.value.first_offset == base
        with Log.open(template.dir, segment_bytes=SEG, accept_loss=True) as log:
            assert [v for _, v in read_checked(log)] == everything
        with Log.open(template.dir, segment_bytes=SEG) as log:  # the header was written again
            assert log.next_offset == template.count


def test_a_segment_whose_creation_was_cut_short_is_started_again(template: Template) -> None:
    template.restore()
    nxt = template.count
    for cut in (0, 10, 64):
        path = template.dir / f"{nxt:020d}.log"
        path.write_bytes(bytes(cut))
        with Log.open(template.dir, segment_bytes=SEG) as log:
            assert log.next_offset == nxt
            assert log.segment_count == 4
            assert [v for _, v in read_checked(log)] == template.expected(range(nxt))
            assert log.append(b"x") == nxt
        template.restore()


def test_a_missing_or_damaged_index_is_rebuilt(template: Template) -> None:
    everything = template.expected(range(template.count))
    for damage in ("missing", "flipped", "short"):
        template.restore()
        name = template.segments[0][0][:20] + ".index"
        path = template.dir / name
        if damage == "missing":
            path.unlink()
        elif damage == "flipped":
            flip(path, 70, 3)
        else:
            path.write_bytes(template.files[name][:40])
        with Log.open(template.dir, segment_bytes=SEG) as log:
            assert log.recovery is not None and log.recovery.indexes_rebuilt == 1
            assert [v for _, v in read_checked(log)] == everything
            assert [o for o, _ in read_checked(log, 5)][:1] == [5]
        size = (template.dir / (name[:20] + ".log")).stat().st_size
        assert read_index(str(template.dir), template.segments[0][1], size) is not None


def test_a_missing_segment_is_reported_with_its_offsets(template: Template) -> None:
    template.restore()
    name, _, recs = template.segments[1]
    (template.dir / name).unlink()
    (template.dir / (name[:20] + ".index")).unlink()
    lost = [off for off, _, _ in recs]
    with pytest.raises(errors.LogCorruptError, match="missing records") as exc:
        Log.open(template.dir, segment_bytes=SEG)
    assert (exc.value.first_offset, exc.value.last_offset) == (lost[0], lost[-1])
    with Log.open(template.dir, segment_bytes=SEG, accept_loss=True) as log:
        kept = [o for o in range(template.count) if o not in lost]
        got = read_checked(log)
        assert [o for o, _ in got] == kept
        assert [v for _, v in got] == template.expected(kept)
        assert [r.offset for r in log.read(lost[0], max_records=1)] == [lost[-1] + 1]


def test_accepted_loss_is_remembered_and_new_damage_is_still_refused(template: Template) -> None:
    template.restore()
    last_name, _, last_recs = template.segments[-1]
    sealed_name, _, sealed_recs = template.segments[0]
    off_a, pos_a, size_a = last_recs[3]  # the active segment: rescanned on every open
    off_s, pos_s, size_s = sealed_recs[5]  # behind the checkpoint: found only when read
    flip(template.dir / last_name, pos_a + size_a // 2, 3)
    flip(template.dir / sealed_name, pos_s + size_s // 2, 5)
    with pytest.raises(errors.LogCorruptError, match=f"records {off_a}\\.\\.{off_a} "):
        Log.open(template.dir, segment_bytes=SEG)
    with Log.open(template.dir, segment_bytes=SEG, accept_loss=True) as log:
        assert [(d.first_offset, d.last_offset) for d in log.recovery.damaged] == [(off_a, off_a)]
        both = [o for o in range(template.count) if o not in (off_a, off_s)]
        assert [o for o, _ in read_checked(log)] == both  # the sealed damage found and accepted here
    ledger = json.loads((template.dir / ACCEPTED_LOSS_NAME).read_text())["accepted"]
    assert sorted((e["first"], e["next"]) for e in ledger) == sorted([(off_a, off_a + 1), (off_s, off_s + 1)])

    # Opened again without accept_loss (a broker restart): the accepted ranges stay skipped.
    with Log.open(template.dir, segment_bytes=SEG) as log:
        assert log.recovery.damaged == ()
        got = read_checked(log)
        assert [o for o, _ in got] == both
        assert [v for _, v in got] == template.expected(both)
        assert log.append(b"resumed") == template.count

    # New damage elsewhere is refused as before, naming only itself.
    off_b, pos_b, size_b = last_recs[7]
    flip(template.dir / last_name, pos_b + size_b // 2, 1)
    with pytest.raises(errors.LogCorruptError) as exc:
        Log.open(template.dir, segment_bytes=SEG)
    assert (exc.value.first_offset, exc.value.last_offset) == (off_b, off_b)


def test_an_accepted_missing_segment_is_remembered(template: Template) -> None:
    template.restore()
    name, _, recs = template.segments[1]
    (template.dir / name).unlink()
    (template.dir / (name[:20] + ".index")).unlink()
    lost = {off for off, _, _ in recs}
    with Log.open(template.dir, segment_bytes=SEG, accept_loss=True):
        pass
    with Log.open(template.dir, segment_bytes=SEG) as log:
        assert log.recovery.damaged == ()
        assert [o for o, _ in read_checked(log)] == [o for o in range(template.count) if o not in lost]
    (template.dir / ACCEPTED_LOSS_NAME).write_text("not json")  # unreadable: the loss is reported again
    with pytest.raises(errors.LogCorruptError, match="missing records"):
        Log.open(template.dir, segment_bytes=SEG)
