"""csrc/log.c under sanitizers: damaged segment bytes never make the scan or the search read
out of bounds (ASan + UBSan), and concurrent appenders and readers of the writer are
race-free (TSan).

The driver program below is compiled with csrc/log.c, csrc/record.c, csrc/crc32c.c and csrc/ring.c (for
nmq_set_error) into a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"
SOURCES = [CSRC / "log.c", CSRC / "record.c", CSRC / "crc32c.c", CSRC / "ring.c"]
GCC = shutil.which("gcc")
COMMON = ["-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", f"-I{CSRC}"]
ASAN_UBSAN = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
TSAN = ["-fsanitize=thread"]
ENV = {
    **os.environ,
    "ASAN_OPTIONS": "halt_on_error=1:detect_leaks=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    "TSAN_OPTIONS": "halt_on_error=1 exitcode=66",
}

pytestmark = pytest.mark.skipif(GCC is None, reason="gcc is not on PATH")

DRIVER = r"""
#include "nmq_internal.h"
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t rng = 88172645463325252ull;
static uint64_t nx(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
#define CHECK(c) \
    do { \
        if (!(c)) { fprintf(stderr, "check failed: %s (line %d)\n", #c, __LINE__); exit(2); } \
    } while (0)

static uint8_t val[70000], key[100];

static int open_segment(const char *dir, uint64_t size, uint64_t base) {
    char path[4096];
    snprintf(path, sizeof path, "%s/seg-%llu", dir, (unsigned long long)base);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    unlink(path);
    CHECK(posix_fallocate(fd, 0, (off_t)size) == 0);
    uint8_t hdr[64];
    nmq_log_segment_header(hdr, base, 0, size);
    CHECK(pwrite(fd, hdr, 64, 0) == 64);
    CHECK(nmq_log_segment_header_check(hdr, base) == NMQ_OK);
    return fd;
}

static int fuzz(const char *dir) {
    uint64_t size = 256 << 10, base = 1000;
    int fd = open_segment(dir, size, base);
    nmq_seg *s;
    CHECK(nmq_seg_new(512, &s) == NMQ_OK);
    CHECK(nmq_seg_attach(s, fd, size, base, 64, base, NULL, 0, INT64_MIN) == NMQ_OK);
    int n = 0;
    for (;;) {
        uint32_t vl = nx() % 3000;
        int32_t kl = (int32_t)(nx() % 20) - 1;
        if (n % 50 == 25) CHECK(nmq_seg_set_pwrite(s, n % 100 == 25) == NMQ_OK);
        int64_t off = nmq_seg_append(s, val, vl, key, kl, 0, 1, 1, (uint64_t)n);
        if (off == NMQ_LOG_FULL) break;
        CHECK(off == (int64_t)base + n);
        n++;
    }
    uint32_t lens[3] = {1, 70000, 3};
    CHECK(nmq_seg_append_values(s, val, lens, NULL, NULL, 3, NULL, 0, 1, 0, 0) == NMQ_ETOOBIG);
    nmq_seg_info info;
    nmq_seg_detach(s, &info);
    CHECK(info.next_offset == base + (uint64_t)n);
    uint8_t *buf = malloc(size);
    CHECK(pread(fd, buf, size, 0) == (ssize_t)size);
    uint64_t cap = size / 512 + 2;
    uint32_t *index = malloc(8 * cap);
    nmq_log_scan_result r;
    memset(&r, 0, sizeof r);
    r.max_timestamp = INT64_MIN;
    nmq_log_scan(buf, info.pos, 64, base, 1, base, 512, index, cap, UINT64_MAX, &r);
    CHECK(r.count == (uint64_t)n && r.end == info.pos && r.status == NMQ_LOG_SCAN_END);
    CHECK(r.index_count == info.index_count);
    uint64_t len = info.pos;
    for (int it = 0; it < 5000; it++) {
        uint8_t *copy = malloc(len);
        memcpy(copy, buf, len);
        int flips = 1 + (int)(nx() % 4);
        for (int k = 0; k < flips; k++) copy[64 + nx() % (len - 64)] ^= (uint8_t)(1u << (nx() % 8));
        uint64_t cut = 64 + nx() % (len - 63);
        nmq_log_scan_result q;
        memset(&q, 0, sizeof q);
        nmq_log_scan(copy, cut, 64, base, 1, base, 512, index, cap, UINT64_MAX, &q);
        CHECK(q.end <= cut);
        int64_t p = nmq_log_find_next(copy, cut, q.end + 8, q.next_offset);
        CHECK(p < (int64_t)cut);
        CHECK(nmq_log_find_timestamp(copy, cut, 64, (int64_t)nx()) < (int64_t)cut);
        uint64_t rel;
        nmq_log_index_floor(index, r.index_count, nx() % (uint64_t)n, &rel);
        free(copy);
    }
    for (int it = 0; it < 1000; it++) {
        uint64_t gl = nx() % 5000;
        uint8_t *g = malloc(gl + 1);
        for (uint64_t i = 0; i < gl; i++) g[i] = (uint8_t)nx();
        nmq_log_scan_result q;
        memset(&q, 0, sizeof q);
        nmq_log_scan(g, gl, 0, 0, 0, 0, 64, NULL, 0, UINT64_MAX, &q);
        nmq_log_find_next(g, gl, 0, 0);
        free(g);
    }
    nmq_seg_free(s);
    free(buf);
    free(index);
    close(fd);
    printf("fuzz ok: %d records\n", n);
    return 0;
}

static nmq_seg *shared;
static void *appender(void *arg) {
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        int64_t off = nmq_seg_append(shared, val, 50, key, 3, 0, 1, 0, 0);
        if (off == NMQ_ECLOSED) { i--; continue; }  /* between detach and attach */
        CHECK(off >= 0);
    }
    return NULL;
}

static int race(const char *dir) {
    uint64_t size = 16 << 20;
    int fd = open_segment(dir, size, 0);
    CHECK(nmq_seg_new(4096, &shared) == NMQ_OK);
    CHECK(nmq_seg_attach(shared, fd, size, 0, 64, 0, NULL, 0, INT64_MIN) == NMQ_OK);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&t[i], NULL, appender, NULL) == 0);
    for (int i = 0; i < 200; i++) {
        nmq_seg_info info;
        nmq_seg_get_info(shared, &info);
        uint64_t rel;
        nmq_seg_index_floor(shared, 0, info.next_offset / 2, &rel);
        if (i % 50 == 0) {  /* a roll in miniature: detach, then attach the same file again */
            nmq_seg_detach(shared, &info);
            CHECK(nmq_seg_attach(shared, fd, size, 0, info.pos, info.next_offset, NULL, info.index_count,
                                 info.max_timestamp) == NMQ_OK);
        }
    }
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    nmq_seg_info info;
    nmq_seg_get_info(shared, &info);
    CHECK(info.next_offset == 40000);
    nmq_seg_free(shared);
    close(fd);
    printf("race ok\n");
    return 0;
}

int main(int argc, char **argv) {
    memset(val, 'v', sizeof val);
    memset(key, 'k', sizeof key);
    CHECK(argc == 3);
    return strcmp(argv[1], "fuzz") == 0 ? fuzz(argv[2]) : race(argv[2]);
}
"""


def _build(tmp_path: Path, name: str, flags: list[str]) -> Path:
    src = tmp_path / "log_driver.c"
    src.write_text(DRIVER)
    out = tmp_path / name
    cmd = [GCC, *flags, *COMMON, str(src), *map(str, SOURCES), "-o", str(out)]
    built = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        if "cannot find" in built.stderr or "-lasan" in built.stderr or "-ltsan" in built.stderr:
            pytest.skip(f"gcc cannot link {flags[0]}: {built.stderr[-300:]}")
        pytest.fail(f"{' '.join(cmd)} failed:\n{built.stderr}")
    return out


def _run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(binary), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120, check=False)
    if result.returncode != 0 and "FATAL: ThreadSanitizer: unexpected memory mapping" in result.stderr:
        result = subprocess.run(["setarch", "-R", *cmd], capture_output=True, text=True, env=ENV, timeout=120)
    return result


def test_scan_and_search_of_damaged_segments_stay_in_bounds(tmp_path: Path) -> None:
    binary = _build(tmp_path, "log_asan", ASAN_UBSAN)
    result = _run(binary, "fuzz", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fuzz ok" in result.stdout


def test_concurrent_appends_detach_and_reads_are_race_free(tmp_path: Path) -> None:
    binary = _build(tmp_path, "log_tsan", TSAN)
    result = _run(binary, "race", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "race ok" in result.stdout
