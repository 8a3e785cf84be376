/*
 * crc32c.c — CRC32C (Castagnoli, reflected polynomial 0x82F63B78).
 *
 * Why C: every record is checksummed on write and on read; zlib.crc32 (a different
 * polynomial) runs ≈ 3.7 GB/s here and a pure-Python CRC is ~1000× slower, while
 * the SSE4.2 instruction runs at memory speed. A slicing-by-8 table is the fallback
 * where the instruction is missing (and the oracle the hardware path is tested
 * against, beside the published vectors and the `crc32c` package).
 */
#include "nmq_internal.h"

#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];

__attribute__((constructor)) static void crc32c_init_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++) table[t][n] = (table[t - 1][n] >> 8) ^ table[0][table[t - 1][n] & 0xFF];
}

uint32_t nmq_crc32c_sw(uint32_t crc, const void *data, size_t len) {
    const uint8_t *p = data;
    crc = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8); /* little-endian hosts only: the format is little-endian too */
        w ^= crc;
        crc = table[7][w & 0xFF] ^ table[6][(w >> 8) & 0xFF] ^ table[5][(w >> 16) & 0xFF] ^
              table[4][(w >> 24) & 0xFF] ^ table[3][(w >> 32) & 0xFF] ^ table[2][(w >> 40) & 0xFF] ^
              table[1][(w >> 48) & 0xFF] ^ table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--) crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
    return ~crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *data, size_t len) {
    const uint8_t *p = data;
    uint64_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    /* Three independent streams would hide the instruction's 3-cycle latency; one
     * stream already runs at ~8 bytes a cycle/3, well above what records need. */
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        len -= 8;
    }
    while (len--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

static int hw_ok; /* set once by the constructor below, before any call can run */

__attribute__((constructor)) static void crc32c_detect(void) {
    __builtin_cpu_init();
    hw_ok = __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

static inline int have_hw(void) { return hw_ok; }

int nmq_crc32c_hw(void) { return have_hw(); }

uint32_t nmq_crc32c(uint32_t crc, const void *data, size_t len) {
    return have_hw() ? crc32c_hw(crc, data, len) : nmq_crc32c_sw(crc, data, len);
}
#else
int nmq_crc32c_hw(void) { return 0; }

uint32_t nmq_crc32c(uint32_t crc, const void *data, size_t len) { return nmq_crc32c_sw(crc, data, len); }
#endif
