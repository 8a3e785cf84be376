"""`nanomq bench log`: a tiny run for real, asserting the output's structure (never a speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanomq.bench import logbench
from nanomq.cli import main

TINY = logbench.Sizes(
    big_bytes=2 << 20,
    batch_records=4096,
    single_records=2000,
    sync_appends=10,
    sync_batches=3,
    threads=2,
    thread_appends=10,
    sqlite_records=2048,
)


def test_framed_size_matches_the_record_format() -> None:
    assert logbench.framed_size(100) == 168  # 64-byte header + 100, padded to 8
    assert logbench.framed_size(0) == 64
    assert logbench.framed_size(65536) == 65600
    record = pytest.importorskip("nanomq.record")
    for n in (0, 1, 100, 65536):
        assert logbench.framed_size(n) == record.record_size(None, n)


def test_filesystem_names_the_mount_and_its_type(tmp_path: Path) -> None:
    fs = logbench.filesystem(tmp_path)
    assert fs["path"] == str(tmp_path.resolve())
    assert fs["type"] and fs["type"] != "?" and fs["free_bytes"] > 0
    if Path("/dev/shm").is_dir():
        shm = logbench.filesystem("/dev/shm")
        assert shm["type"] == "tmpfs" and shm["volatile"]


def test_a_tiny_run_measures_every_case_and_judges_every_target(tmp_path: Path) -> None:
    res = logbench.measure(tmp_path, TINY)
    assert list(tmp_path.iterdir()) == []  # its working directory is gone
    assert res["filesystem"]["path"].startswith(str(tmp_path.resolve()))
    base = res["baseline"]
    for key in ("write_64k", "read_64k"):
        assert base[key]["gb_s"] > 0
    assert base["write_64k"]["bytes"] == (2 << 20) // logbench.framed_size(65536) * 65600
    for key in ("write_batch", "write_single", "fdatasync_batch"):
        assert base[key]["rec_s"] > 0
    for key in ("fdatasync_single_append", "fdatasync_single_prealloc"):
        lat = base[key]
        assert lat["count"] == TINY.sync_appends and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert res["sqlite"]["durable"]["records"] == 3 * 256
    assert res["sqlite"]["durable"]["synchronous"] == "FULL"
    for key, sync in (("nondurable", "NORMAL"), ("nondurable_off", "OFF")):
        lite = res["sqlite"][key]
        assert lite["records"] == 2048 and lite["rec_s"] > 0 and lite["synchronous"] == sync
    assert [t["key"] for t in res["targets"]] == list(logbench.TARGETS)
    if res["nanomq"] is None:
        assert "nanomq.log" in res["nanomq_missing"]
        assert {t["verdict"] for t in res["targets"]} == {"n/a"}
    else:
        nano = res["nanomq"]
        assert {t["verdict"] for t in res["targets"]} <= {"PASS", "MISS"}
        assert nano["reopen"]["records"] == nano["never_64k"]["records"] == nano["read_records"]["records"]
        assert nano["read_encoded"]["bytes"] == nano["never_64k"]["bytes"]
        assert nano["always_single"]["count"] == nano["always_single_bare"]["count"] == TINY.sync_appends
        ratio = next(t for t in res["targets"] if t["key"] == "always_p50_ratio")["measured"]
        assert ratio == nano["always_single"]["p50"] / nano["always_single_bare"]["p50"]
        threads = nano["always_threads"]
        assert threads["errors"] == [] and threads["records"] == threads["durable_offset"] == 20
    json.dumps(res)


def test_the_command_prints_the_tables_and_writes_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "log.json"
    work = tmp_path / "work"
    work.mkdir()
    assert main(["bench", "log", "--quick", "--dir", str(work), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "against the physical limit and SQLite" in printed and "targets (issue 3)" in printed
    assert f"({logbench.filesystem(work)['type']}," in printed
    record = json.loads(out.read_text())
    assert record["parameters"]["quick"] is True
    assert record["environment"]["python"]


def test_a_missing_directory_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["bench", "log", "--quick", "--dir", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="nope"):
        logbench.measure(tmp_path / "nope", TINY)
