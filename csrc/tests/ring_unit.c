/*
 * ring_unit.c — single-threaded edge cases of the ring, for the ASan/UBSan build.
 *
 * Why C: these cases reach into the region's bytes (corrupt headers, records and
 * indices) and the limits exactly, where an overflow or an out-of-bounds read in
 * ring.c would show up under AddressSanitizer, which sees only C code.
 *
 * Build (tests/test_sanitizers.py does this under ASan/UBSan):
 *   gcc -std=gnu11 -pthread csrc/tests/ring_unit.c csrc/ring.c csrc/crc32c.c
 *
 * Exit 0 and a one-line summary when every check passes; otherwise each failed
 * check is printed with its line and the values involved, and the exit status is 1.
 * Region offsets used below are the documented layout (see the drawing in ring.c).
 */
#include "../nmq_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 8,
    OFF_HEADER_BYTES = 12,
    OFF_CAPACITY = 16,
    OFF_MAX_PAYLOAD = 24,
    OFF_HEAD = 384,
    OFF_TAIL = 512,
    OFF_DATA = NMQ_RING_HEADER_BYTES
};

static int checks, failures;

#define CHECK(cond, ...)                                                 \
    do {                                                                 \
        checks++;                                                        \
        if (!(cond)) {                                                   \
            failures++;                                                  \
            fprintf(stderr, "ring_unit: FAIL line %d: %s: ", __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                \
            fputc('\n', stderr);                                         \
        }                                                                \
    } while (0)

#define CHECK_RC(expr, want)                                                               \
    do {                                                                                   \
        long long got_ = (long long)(expr);                                                \
        CHECK(got_ == (long long)(want), "got %lld, expected %lld (%s)", got_, (long long)(want), #want); \
    } while (0)

/* nmq_last_error() names the value: check that it contains `needle`. */
#define CHECK_MSG(needle)                                                                     \
    CHECK(strstr(nmq_last_error(), (needle)) != NULL, "message \"%s\" lacks \"%s\"", nmq_last_error(), \
          (needle))

struct region {
    uint8_t *mem;
    uint64_t size;
};

static struct region region_new(uint64_t capacity) {
    struct region g = {NULL, nmq_ring_region_size(capacity)};
    g.mem = aligned_alloc(4096, g.size);
    if (!g.mem || nmq_ring_init(g.mem, g.size, capacity) != NMQ_OK) {
        fprintf(stderr, "ring_unit: cannot make a %" PRIu64 "-byte ring: %s\n", capacity, nmq_last_error());
        exit(1);
    }
    return g;
}

static nmq_ring *open_or_die(struct region g) {
    nmq_ring *r = NULL;
    if (nmq_ring_open(g.mem, g.size, NMQ_WAIT_SPIN, 0, &r) != NMQ_OK) {
        fprintf(stderr, "ring_unit: nmq_ring_open: %s\n", nmq_last_error());
        exit(1);
    }
    return r;
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static void fill(uint8_t *p, uint32_t len, uint32_t salt) {
    for (uint32_t i = 0; i < len; i++) p[i] = (uint8_t)(i * 31 + salt + (i >> 8));
}

static int same(const uint8_t *p, uint32_t len, uint32_t salt) {
    for (uint32_t i = 0; i < len; i++)
        if (p[i] != (uint8_t)(i * 31 + salt + (i >> 8))) return 0;
    return 1;
}

/* ------------------------------------------------------------------- set-up ---- */

static void test_invalid_capacities_are_rejected_with_the_value(void) {
    const uint64_t bad[] = {0, 8, 2048, 4095, 4097, 6144, 12288, 1ULL << 35, UINT64_MAX};
    uint8_t *mem = aligned_alloc(4096, 3 * 4096);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "capacity %llu is invalid", (unsigned long long)bad[i]);
        CHECK_RC(nmq_ring_region_size(bad[i]), 0);
        CHECK_RC(nmq_ring_init(mem, 3 * 4096, bad[i]), NMQ_EINVAL);
        CHECK_MSG(want);
    }
    CHECK_RC(nmq_ring_region_size(4096), 8192);
    CHECK_RC(nmq_ring_region_size(1ULL << 34), (1ULL << 34) + 4096);
    CHECK_RC(nmq_ring_init(mem + 8, 2 * 4096, 4096), NMQ_EINVAL); /* misaligned */
    CHECK_MSG("aligned");
    CHECK_RC(nmq_ring_init(mem, 8191, 4096), NMQ_EINVAL); /* too small */
    CHECK_MSG("8191");
    CHECK_MSG("8192");
    CHECK_RC(nmq_ring_init(mem, 8192, 4096), NMQ_OK);
    nmq_ring *r = (nmq_ring *)1;
    CHECK_RC(nmq_ring_open(mem, 8192, 3, 0, &r), NMQ_EINVAL);
    CHECK(r == NULL, "handle %p left behind on failure", (void *)r);
    CHECK_MSG("wait strategy 3");
    CHECK_RC(nmq_ring_open(mem, 8192, -1, 0, &r), NMQ_EINVAL);
    free(mem);
}

/* Format a fresh ring, damage it with `poke`, and expect nmq_ring_open to refuse it. */
static void expect_open_refused(int line, void (*poke)(uint8_t *), uint64_t size, int want, const char *needle) {
    uint64_t alloc = size > 8192 ? size : 8192;
    uint8_t *mem = aligned_alloc(4096, alloc);
    memset(mem, 0, alloc);
    if (nmq_ring_init(mem, 8192, 4096) != NMQ_OK) exit(1);
    if (poke) poke(mem);
    nmq_ring *r = (nmq_ring *)1;
    int rc = nmq_ring_open(mem, size, NMQ_WAIT_SPIN, 0, &r);
    CHECK(rc == want, "case at line %d: open returned %d, expected %d (%s)", line, rc, want, nmq_last_error());
    CHECK(r == NULL, "case at line %d: handle left behind", line);
    CHECK(strstr(nmq_last_error(), needle) != NULL, "case at line %d: message \"%s\" lacks \"%s\"", line,
          nmq_last_error(), needle);
    if (rc == NMQ_OK) nmq_ring_free(r);
    free(mem);
}

static void poke_magic(uint8_t *m) { m[OFF_MAGIC + 3] ^= 0x20; }
static void poke_version(uint8_t *m) { put_u32(m + OFF_VERSION, 2); }
static void poke_header_bytes(uint8_t *m) { put_u32(m + OFF_HEADER_BYTES, 2048); }
static void poke_capacity_odd(uint8_t *m) { put_u64(m + OFF_CAPACITY, 4097); }
static void poke_capacity_bigger(uint8_t *m) { put_u64(m + OFF_CAPACITY, 8192); }
static void poke_max_payload(uint8_t *m) { put_u32(m + OFF_MAX_PAYLOAD, 4089); }
static void poke_head_misaligned(uint8_t *m) { put_u64(m + OFF_HEAD, 4); }
static void poke_head_beyond(uint8_t *m) { put_u64(m + OFF_HEAD, 4096 + 8); }
static void poke_tail_beyond(uint8_t *m) { put_u64(m + OFF_TAIL, 64); }
static void wipe(uint8_t *m) { memset(m, 0, 4096); }

static void test_corrupt_regions_are_refused_by_open(void) {
    expect_open_refused(__LINE__, poke_magic, 8192, NMQ_EMAGIC, "not a NanoMQ ring");
    expect_open_refused(__LINE__, wipe, 8192, NMQ_EMAGIC, "not a NanoMQ ring");
    expect_open_refused(__LINE__, poke_version, 8192, NMQ_EVERSION, "version 2");
    expect_open_refused(__LINE__, poke_header_bytes, 8192, NMQ_ECORRUPT, "header 2048 bytes");
    expect_open_refused(__LINE__, poke_capacity_odd, 8192, NMQ_ECORRUPT, "capacity 4097");
    expect_open_refused(__LINE__, poke_capacity_bigger, 8192, NMQ_ECORRUPT, "capacity 8192");
    expect_open_refused(__LINE__, poke_max_payload, 8192, NMQ_ECORRUPT, "max payload 4089");
    expect_open_refused(__LINE__, poke_head_misaligned, 8192, NMQ_ECORRUPT, "head 4");
    expect_open_refused(__LINE__, poke_head_beyond, 8192, NMQ_ECORRUPT, "head 4104");
    expect_open_refused(__LINE__, poke_tail_beyond, 8192, NMQ_ECORRUPT, "tail 64");
    expect_open_refused(__LINE__, NULL, 8192 + 4096, NMQ_ECORRUPT, "12288");
    expect_open_refused(__LINE__, NULL, 4095, NMQ_ECORRUPT, "4095");
}

/* ------------------------------------------------------------------ payloads ---- */

static void test_payload_limits(uint64_t capacity, uint32_t want_max) {
    struct region g = region_new(capacity);
    nmq_ring *p = open_or_die(g), *c = open_or_die(g);
    CHECK_RC(nmq_ring_capacity(p), capacity);
    CHECK_RC(nmq_ring_max_payload(p), want_max);
    uint8_t *buf = malloc(want_max + 1), *out = malloc(want_max + 1);
    fill(buf, want_max + 1, 7);

    CHECK_RC(nmq_ring_push(p, buf, want_max + 1), NMQ_ETOOBIG);
    CHECK_RC(nmq_ring_reserve(p, want_max + 1), NMQ_ETOOBIG);
    CHECK_RC(nmq_ring_wait_writable(p, want_max + 1, 0), NMQ_ETOOBIG);
    char want[32];
    snprintf(want, sizeof want, "%u bytes", want_max);
    CHECK_MSG(want);
    uint32_t lens1[1] = {want_max + 1};
    CHECK_RC(nmq_ring_push_batch(p, buf, lens1, 1), NMQ_ETOOBIG);

    /* The largest record, twice: once pushed, once written in place. */
    CHECK_RC(nmq_ring_push(p, buf, want_max), NMQ_OK);
    CHECK_RC(nmq_ring_count(p), 1);
    CHECK_RC(nmq_ring_pop(c, out, want_max - 1), NMQ_EINVAL); /* too small a buffer: kept */
    CHECK_RC(nmq_ring_pop(c, out, want_max), want_max);
    CHECK(same(out, want_max, 7), "largest record (%u bytes) came back different", want_max);
    int64_t at = nmq_ring_reserve(p, want_max);
    CHECK(at >= NMQ_RING_HEADER_BYTES && (uint64_t)at + want_max <= g.size, "reserve returned %" PRId64, at);
    if (at >= NMQ_RING_HEADER_BYTES && (uint64_t)at + want_max <= g.size) {
        fill(g.mem + at, want_max, 9);
        CHECK_RC(nmq_ring_commit(p, want_max), NMQ_OK);
        int64_t ref = nmq_ring_peek(c);
        CHECK_RC(ref & ((1 << NMQ_REF_LEN_BITS) - 1), want_max);
        CHECK_RC(ref >> NMQ_REF_LEN_BITS, at);
        CHECK(same(g.mem + (ref >> NMQ_REF_LEN_BITS), want_max, 9), "reserved record came back different");
        CHECK_RC(nmq_ring_release(c), NMQ_OK);
    }

    /* A 0-byte record is a record: a ref > 0 of length 0, a pop of 0, an empty batch span. */
    CHECK_RC(nmq_ring_push(p, buf, 0), NMQ_OK);
    int64_t ref = nmq_ring_peek(c);
    CHECK(ref > 0 && (ref & ((1 << NMQ_REF_LEN_BITS) - 1)) == 0, "peek of a 0-byte record returned %" PRId64, ref);
    CHECK_RC(nmq_ring_peek(c), NMQ_AGAIN); /* releases the held 0-byte record first */
    CHECK_RC(nmq_ring_push(p, buf, 0), NMQ_OK);
    CHECK_RC(nmq_ring_pop(c, out, 0), 0);
    uint32_t lens3[3] = {0, 0, 0};
    CHECK_RC(nmq_ring_push_batch(p, buf, lens3, 3), 3);
    uint64_t starts[4], ends[4];
    CHECK_RC(nmq_ring_peek_batch(c, starts, ends, 2), 2);
    CHECK(starts[0] == ends[0] && starts[1] == ends[1], "0-byte spans [%" PRIu64 ",%" PRIu64 ")", starts[0], ends[0]);
    uint32_t offsets[4] = {9, 9, 9, 9};
    CHECK_RC(nmq_ring_pop_batch(c, out, 0, offsets, 3), 1);
    CHECK(offsets[0] == 0 && offsets[1] == 0, "offsets %u %u", offsets[0], offsets[1]);
    CHECK_RC(nmq_ring_count(p), 0);
    CHECK_RC(nmq_ring_used_bytes(p), 0);

    nmq_ring_close(p);
    nmq_ring_close(c);
    nmq_ring_free(p);
    nmq_ring_free(c);
    free(buf);
    free(out);
    free(g.mem);
}

/* --------------------------------------------------------- wrap-around, PAD ---- */

static void test_wrap_and_pad(void) {
    struct region g = region_new(4096);
    nmq_ring *p = open_or_die(g), *c = open_or_die(g);
    static uint8_t buf[4096], out[4096];
    fill(buf, sizeof buf, 3);

    /* 3984 bytes (3992 with the header) leave 104 bytes before the end. */
    CHECK_RC(nmq_ring_push(p, buf, 3984), NMQ_OK);
    CHECK_RC(nmq_ring_pop(c, out, sizeof out), 3984);
    /* 100 bytes (112) do not fit in 104: a PAD covers them and the record starts at 0. */
    CHECK_RC(nmq_ring_push(p, buf, 100), NMQ_OK);
    CHECK_RC(nmq_ring_used_bytes(p), 104 + 112);
    int64_t ref = nmq_ring_peek(c);
    CHECK_RC(ref >> NMQ_REF_LEN_BITS, OFF_DATA + NMQ_RING_RECORD_HEADER);
    CHECK(same(g.mem + (ref >> NMQ_REF_LEN_BITS), 100, 3), "record after the PAD came back different");
    CHECK_RC(nmq_ring_release(c), NMQ_OK);
    CHECK_RC(nmq_ring_release(c), NMQ_ESTATE); /* nothing held */
    CHECK_RC(nmq_ring_used_bytes(p), 0);

    /* Now at 112: fill to 3992 again, then a whole-ring record needs a PAD alone first. */
    CHECK_RC(nmq_ring_push(p, buf, 3872), NMQ_OK);
    CHECK_RC(nmq_ring_pop(c, out, sizeof out), 3872);
    CHECK_RC(nmq_ring_push(p, buf, 4088), NMQ_AGAIN); /* PAD published, record waits */
    CHECK_RC(nmq_ring_used_bytes(p), 104);
    CHECK_RC(nmq_ring_count(p), 0); /* a PAD is not a record */
    CHECK_RC(nmq_ring_wait_writable(p, 4088, 0), NMQ_TIMEOUT);
    CHECK_RC(nmq_ring_pop(c, out, sizeof out), NMQ_AGAIN); /* skips the PAD */
    CHECK_RC(nmq_ring_wait_readable(c, 0), NMQ_TIMEOUT);   /* ... and gives it back */
    CHECK_RC(nmq_ring_used_bytes(p), 0);
    CHECK_RC(nmq_ring_wait_writable(p, 4088, 0), NMQ_OK);
    CHECK_RC(nmq_ring_push(p, buf, 4088), NMQ_OK);
    CHECK_RC(nmq_ring_push(p, buf, 0), NMQ_AGAIN); /* full */
    CHECK_RC(nmq_ring_pop(c, out, sizeof out), 4088);
    CHECK(same(out, 4088, 3), "whole-ring record came back different");

    /* A batch goes in as a prefix: the third record does not fit behind the first two. */
    uint32_t lens[3] = {0, 5, 4088};
    CHECK_RC(nmq_ring_push_batch(p, buf, lens, 3), 2);
    uint32_t offsets[4];
    CHECK_RC(nmq_ring_pop_batch(c, out, sizeof out, offsets, 3), 2);
    CHECK(offsets[0] == 0 && offsets[1] == 0 && offsets[2] == 5, "offsets %u %u %u", offsets[0], offsets[1],
          offsets[2]);
    CHECK(same(out, 5, 3), "batched record came back different");

    nmq_ring_close(p);
    nmq_ring_close(c);
    nmq_ring_free(p);
    nmq_ring_free(c);
    free(g.mem);
}

/* ------------------------------------------------------------ corrupt records ---- */

static void test_corrupt_records_are_reported(void) {
    struct region g = region_new(4096);
    nmq_ring *p = open_or_die(g), *c = open_or_die(g);
    static uint8_t buf[256], out[4096];
    fill(buf, sizeof buf, 5);
    CHECK_RC(nmq_ring_push(p, buf, 100), NMQ_OK);
    uint8_t *rec = g.mem + OFF_DATA;
    const uint32_t bad_lens[] = {5000, 4089, 105, 65536, UINT32_MAX}; /* > max payload, or past head */
    for (size_t i = 0; i < sizeof bad_lens / sizeof bad_lens[0]; i++) {
        put_u32(rec, bad_lens[i]);
        CHECK(nmq_ring_peek(c) == NMQ_ECORRUPT, "length %u not reported", bad_lens[i]);
        CHECK(nmq_ring_pop(c, out, sizeof out) == NMQ_ECORRUPT, "length %u not reported by pop", bad_lens[i]);
        uint64_t s[1], e[1];
        CHECK(nmq_ring_peek_batch(c, s, e, 1) == NMQ_ECORRUPT, "length %u not reported by peek_batch",
              bad_lens[i]);
    }
    put_u32(rec, 100);
    put_u32(rec + 4, 0xDEADBEEF); /* neither DATA nor PAD */
    CHECK_RC(nmq_ring_peek(c), NMQ_ECORRUPT);
    put_u32(rec + 4, 0x4441504Eu); /* a PAD that does not reach the end of the data area */
    CHECK_RC(nmq_ring_peek(c), NMQ_ECORRUPT);
    put_u32(rec + 4, 0x4154414Eu); /* repaired: the record reads again */
    CHECK_RC(nmq_ring_pop(c, out, sizeof out), 100);
    CHECK(same(out, 100, 5), "repaired record came back different");

    /* A head that runs past the tail by more than the capacity. */
    put_u64(g.mem + OFF_HEAD, 112 + 8192);
    CHECK_RC(nmq_ring_peek(c), NMQ_ECORRUPT);

    nmq_ring_free(p);
    nmq_ring_free(c);
    free(g.mem);
}

/* ------------------------------------------------------------ call order, roles ---- */

static void test_state_errors_and_roles(void) {
    struct region g = region_new(4096);
    nmq_ring *p = open_or_die(g), *c = open_or_die(g), *p2 = open_or_die(g);
    static uint8_t buf[512], out[512];
    fill(buf, sizeof buf, 11);
    uint32_t lens[NMQ_MAX_BATCH + 1] = {0};
    uint64_t s[NMQ_MAX_BATCH + 1], e[NMQ_MAX_BATCH + 1];
    uint32_t offsets[NMQ_MAX_BATCH + 2];

    CHECK_RC(nmq_ring_commit(p, 0), NMQ_ESTATE);
    CHECK_RC(nmq_ring_release(c), NMQ_ESTATE);
    CHECK_RC(nmq_ring_push_batch(p, buf, lens, NMQ_MAX_BATCH + 1), NMQ_EINVAL);
    CHECK_RC(nmq_ring_peek_batch(c, s, e, NMQ_MAX_BATCH + 1), NMQ_EINVAL);
    CHECK_RC(nmq_ring_pop_batch(c, out, sizeof out, offsets, NMQ_MAX_BATCH + 1), NMQ_EINVAL);
    CHECK_RC(nmq_ring_wait_readable(c, 1000000), NMQ_TIMEOUT);

    int64_t at = nmq_ring_reserve(p, 64);
    CHECK_RC(at, OFF_DATA + NMQ_RING_RECORD_HEADER);
    CHECK_RC(nmq_ring_push(p, buf, 1), NMQ_ESTATE); /* a reservation is open */
    CHECK_RC(nmq_ring_reserve(p, 1), NMQ_ESTATE);
    CHECK_RC(nmq_ring_commit(p, 65), NMQ_EINVAL); /* longer than reserved */
    memcpy(g.mem + at, buf, 64);
    CHECK_RC(nmq_ring_commit(p, 40), NMQ_OK); /* shorter is fine */
    CHECK_RC(nmq_ring_pop(c, out, sizeof out), 40);
    CHECK(memcmp(out, buf, 40) == 0, "committed record came back different");

    /* One producer at a time: a second live handle is refused, a closed one is taken over. */
    CHECK_RC(nmq_ring_push(p2, buf, 1), NMQ_EBUSY);
    CHECK_RC(nmq_ring_claim(p2, NMQ_ROLE_PRODUCER), NMQ_EBUSY);
    CHECK_MSG("live producer");
    CHECK_RC(nmq_ring_claim(p2, 7), NMQ_EINVAL);
    CHECK_RC(nmq_ring_peer_state(c, NMQ_ROLE_PRODUCER), NMQ_PEER_ALIVE);
    CHECK_RC(nmq_ring_push(p, buf, 8), NMQ_OK);
    nmq_ring_close(p);
    CHECK_RC(nmq_ring_push(p, buf, 1), NMQ_ECLOSED);
    CHECK_RC(nmq_ring_peer_state(c, NMQ_ROLE_PRODUCER), NMQ_PEER_CLOSED);
    CHECK_RC(nmq_ring_wait_readable(c, 0), NMQ_OK); /* closed, but not drained yet */
    CHECK_RC(nmq_ring_pop(c, out, sizeof out), 8);
    CHECK_RC(nmq_ring_wait_readable(c, 1000000), NMQ_ECLOSED);
    CHECK_MSG("producer closed");
    CHECK_RC(nmq_ring_push(p2, buf, 3), NMQ_OK); /* takes the closed role over, resumes at head */
    CHECK_RC(nmq_ring_peer_state(c, NMQ_ROLE_PRODUCER), NMQ_PEER_ALIVE);
    CHECK_RC(nmq_ring_pop(c, out, sizeof out), 3);
    CHECK_RC(nmq_ring_count(c), 0);

    nmq_ring_close(c);
    CHECK_RC(nmq_ring_pop(c, out, sizeof out), NMQ_ECLOSED);
    CHECK_RC(nmq_ring_wait_writable(p2, 1, 1000000), NMQ_OK); /* room is room, even with nobody reading */
    nmq_ring_close(p2);
    nmq_ring_free(p);
    nmq_ring_free(c);
    nmq_ring_free(p2);
    free(g.mem);
}

int main(void) {
    CHECK(nmq_last_error()[0] == '\0', "fresh thread has message \"%s\"", nmq_last_error());
    test_invalid_capacities_are_rejected_with_the_value();
    test_corrupt_regions_are_refused_by_open();
    test_payload_limits(4096, 4088);
    test_payload_limits(65536, 65528);
    test_payload_limits(131072, NMQ_MAX_PAYLOAD);
    test_wrap_and_pad();
    test_corrupt_records_are_reported();
    test_state_errors_and_roles();
    if (failures) {
        fprintf(stderr, "ring_unit: %d of %d checks failed\n", failures, checks);
        return 1;
    }
    printf("ring_unit: ok %d checks\n", checks);
    return 0;
}
