/*
 * record_fuzz.c — the record decoder on hostile bytes, under ASan/UBSan.
 *
 * Records arrive from the network and from files that may be torn or damaged, so
 * nmq_record_scan, _positions, _seek and _stamp must stay inside the buffer and
 * defined whatever the bytes say. Each round encodes a random batch, damages a copy
 * (bit flips, random bytes, extreme length fields, truncation), puts it in a heap
 * block of exactly its size (so one byte of overread is an ASan report) and runs every
 * decoder over it, checking what must hold: a scan never claims bytes past the end,
 * the prefix it accepts rescans as the same records, and stamping a validated prefix
 * keeps every CRC valid.
 *
 * usage: record_fuzz ROUNDS SEED      prints "record_fuzz: ok rounds=N accepted=A" on success
 */
#include "../nmq_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

#define FAIL(...)                                 \
    do {                                          \
        fprintf(stderr, "record_fuzz: " __VA_ARGS__); \
        fputc('\n', stderr);                      \
        exit(1);                                  \
    } while (0)

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 10000;
    rng_state = argc > 2 ? (uint64_t)atoll(argv[2]) * 0x9E3779B97F4A7C15ULL + 1 : 1;
    static uint8_t values[8 * 300], keys[8 * 40];
    long accepted = 0;
    for (long round = 0; round < rounds; round++) {
        uint32_t n = (uint32_t)(rnd() % 8);
        uint32_t vlens[8];
        int32_t klens[8];
        for (uint32_t i = 0; i < n; i++) {
            vlens[i] = (uint32_t)(rnd() % 300);
            klens[i] = (int32_t)(rnd() % 41) - 1;
        }
        for (size_t i = 0; i < sizeof values; i++) values[i] = (uint8_t)rnd();
        for (size_t i = 0; i < sizeof keys; i++) keys[i] = (uint8_t)rnd();
        uint64_t cap = 8 * (64 + 40 + 300 + 8);
        uint8_t *enc = malloc(cap);
        int64_t len = nmq_record_encode_batch(enc, cap, n, values, vlens, NULL, keys, klens, NULL,
                                              (int64_t)rnd(), NMQ_CODEC_NONE, rnd(), rnd(), 1000);
        if (len < 0) FAIL("encode_batch failed: %lld", (long long)len);
        nmq_scan_result sr;
        nmq_record_scan(enc, (uint64_t)len, 1000, 0, &sr);
        if (sr.status != NMQ_SCAN_END || sr.count != n || sr.nbytes != (uint64_t)len)
            FAIL("round %ld: a fresh batch does not scan whole", round);

        /* damage a copy */
        uint64_t dlen = (uint64_t)len;
        switch (rnd() % 5) {
        case 0: dlen = len ? rnd() % (uint64_t)len : 0; break;          /* truncate */
        case 1: dlen = (uint64_t)len + rnd() % 100; break;              /* trailing garbage */
        default: break;
        }
        uint8_t *buf = malloc(dlen ? dlen : 1);
        memcpy(buf, enc, dlen < (uint64_t)len ? dlen : (uint64_t)len);
        for (uint64_t i = (uint64_t)len; i < dlen; i++) buf[i] = (uint8_t)rnd();
        int flips = (int)(rnd() % 4);
        for (int f = 0; f < flips && dlen; f++) {
            uint64_t at = rnd() % dlen;
            switch (rnd() % 3) {
            case 0: buf[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
            case 1: buf[at] = (uint8_t)rnd(); break;
            default:
                if (at + 4 <= dlen) { /* an extreme 32-bit field: lengths, crc */
                    uint32_t v = (uint32_t[]){0, 1, 63, 64, 0x7FFFFFFFu, 0xFFFFFFFFu}[rnd() % 6];
                    memcpy(buf + at, &v, 4);
                }
            }
        }

        nmq_record_scan(buf, dlen, rnd() % 2 ? 1000 : -1, rnd() % 3 ? 0 : rnd() % 5, &sr);
        if (sr.nbytes > dlen || sr.nbytes % 8) FAIL("round %ld: scan claims %llu of %llu bytes", round,
                                                     (unsigned long long)sr.nbytes, (unsigned long long)dlen);
        nmq_scan_result again;
        nmq_record_scan(buf, sr.nbytes, -1, 0, &again);
        if (again.count != sr.count || again.status != NMQ_SCAN_END)
            FAIL("round %ld: the accepted prefix does not rescan as itself", round);
        uint64_t pos[16];
        int64_t np = nmq_record_positions(buf, dlen, pos, 16);
        for (int64_t i = 0; i < np; i++)
            if (pos[i] + 64 > dlen) FAIL("round %ld: position past the end", round);
        if (nmq_record_seek(buf, dlen, rnd() % 2000) > dlen) FAIL("round %ld: seek past the end", round);
        int64_t stamped = nmq_record_stamp(buf, dlen, 0); /* on damaged bytes: bounded, maybe refused */
        if (stamped >= 0 && stamped > (int64_t)(dlen / 64)) FAIL("round %ld: stamped too many", round);
        if (sr.count) { /* a validated prefix stamps and still validates */
            accepted++;
            nmq_record_scan(buf, sr.nbytes, -1, 0, &again);
            uint64_t base = rnd() >> 1;
            if (nmq_record_stamp(buf, again.nbytes, base) != (int64_t)again.count)
                FAIL("round %ld: stamp refused a validated prefix", round);
            nmq_record_scan(buf, again.nbytes, (int64_t)base, 0, &sr);
            if (sr.status != NMQ_SCAN_END || sr.count != again.count)
                FAIL("round %ld: stamping broke a record", round);
        }
        free(buf);
        free(enc);
    }
    printf("record_fuzz: ok rounds=%ld accepted=%ld\n", rounds, accepted);
    return 0;
}
