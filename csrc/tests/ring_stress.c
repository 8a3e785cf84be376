/*
 * ring_stress.c — two threads hammer one small ring; every byte is checked.
 *
 * Why C: the point is to run the ring's index protocol (R1/A1, R2/A2) and the
 * futex sleep handshake (W1/W2) under ThreadSanitizer, which only sees C code;
 * Python in between would serialise the threads on the GIL and hide races.
 *
 * Build (tests/test_sanitizers.py does this under TSan and ASan/UBSan):
 *   gcc -std=gnu11 -pthread csrc/tests/ring_stress.c csrc/ring.c csrc/crc32c.c
 *
 * Usage: ring_stress [records [wait [seed [capacity]]]]
 *   records   records to send (default 200000)
 *   wait      NMQ_WAIT_*: 0 spin, 1 yield, 2 futex (default 2)
 *   seed      pseudo-random seed for sizes, contents and the call mix (default 1)
 *   capacity  data bytes of the ring, a power of two (default 4096)
 *
 * The producer sends records whose length and bytes are functions of their
 * sequence number, mixing push, push_batch and reserve/commit; the consumer mixes
 * peek (+ release), peek_batch (+ release), pop and pop_batch and checks each
 * record's length and every byte against the same functions. A small ring makes
 * wrap-around and PAD records constant. Then the producer closes and the consumer
 * must see NMQ_ECLOSED once drained. Exit 0 and a one-line summary on success;
 * exit 1 and the first mismatch otherwise.
 */
#include "../nmq_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    WAIT_SLICE_NS = 100000000, /* one wait_* call: 100 ms */
    STUCK_SLICES = 200,        /* 20 s without progress is a hang, not a slow machine */
    SLOW_WAIT_NS = 1000000,    /* waits longer than 1 ms are counted */
    SMALL_MAX = 600            /* most records are 0..600 bytes */
};

struct config {
    uint64_t records;
    uint64_t seed;
    uint64_t capacity;
    int wait;
    uint32_t spin_ns;
    uint8_t *region;
    uint32_t max_payload;
};

struct stats {
    uint64_t calls[4]; /* producer: push, push_batch, reserve; consumer: peek, peek_batch, pop, pop_batch */
    uint64_t again;    /* calls that moved nothing (NMQ_AGAIN or a 0 count) */
    uint64_t waits;    /* wait_* calls */
    uint64_t slow;     /* waits longer than SLOW_WAIT_NS */
    uint64_t timeouts; /* wait_* calls that returned NMQ_TIMEOUT */
    uint64_t bytes;
    uint64_t max_wait_ns;
};

static struct config cfg;
static atomic_int failed; /* set by whichever thread fails first; the other gives up */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* The content of record `seq` is a function of (seed, seq) alone. */
static uint64_t rec_key(uint64_t seq) { return splitmix64(seq ^ (cfg.seed << 32) ^ 0x5EEDULL); }

static uint32_t rec_len(uint64_t seq) {
    uint64_t k = rec_key(seq);
    /* One record in 256 is large (up to the ring's limit) so the PAD-only path runs. */
    if ((k >> 56) == 0xA5) return (uint32_t)((k >> 8) % ((uint64_t)cfg.max_payload + 1));
    return (uint32_t)((k >> 8) % (SMALL_MAX + 1));
}

/* Byte j of record `seq` is byte (j % 8) of its key XOR (j / 8) % 256, written a word at
 * a time: an 8-byte memcpy is one store, which keeps TSan's per-access cost down. */
static void rec_fill(uint64_t seq, uint8_t *dst, uint32_t len) {
    uint64_t k = rec_key(seq);
    uint32_t j = 0;
    for (; j + 8 <= len; j += 8) {
        uint64_t w = k ^ (((j >> 3) & 0xFF) * 0x0101010101010101ULL);
        memcpy(dst + j, &w, 8);
    }
    for (; j < len; j++) dst[j] = (uint8_t)(k >> ((j & 7) * 8)) ^ (uint8_t)(j >> 3);
}

static void fail(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(const char *who, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ring_stress: FAIL (%s): ", who);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    atomic_store(&failed, 1);
}

/* Check one received record against the expected one; 0 when it matches. */
static int verify(uint64_t seq, const uint8_t *got, uint32_t len, const char *how, uint8_t *scratch) {
    if (seq >= cfg.records) {
        fail("consumer", "%s returned a record (length %u) after all %" PRIu64 " were received", how, len,
             cfg.records);
        return -1;
    }
    uint32_t want = rec_len(seq);
    if (len != want) {
        fail("consumer", "%s: record %" PRIu64 " has length %u, expected %u", how, seq, len, want);
        return -1;
    }
    rec_fill(seq, scratch, len);
    if (len && memcmp(got, scratch, len) != 0) {
        uint32_t j = 0;
        while (got[j] == scratch[j]) j++;
        fail("consumer", "%s: record %" PRIu64 " (length %u) differs at byte %u: got 0x%02x, expected 0x%02x", how,
             seq, len, j, got[j], scratch[j]);
        return -1;
    }
    return 0;
}

static void note_wait(struct stats *st, int64_t t0, int rc) {
    int64_t dt = nmq_now_ns() - t0;
    st->waits++;
    if (dt > SLOW_WAIT_NS) st->slow++;
    if ((uint64_t)dt > st->max_wait_ns) st->max_wait_ns = (uint64_t)dt;
    if (rc == NMQ_TIMEOUT) st->timeouts++;
}

/* ------------------------------------------------------------------ producer ---- */

struct side {
    nmq_ring *ring;
    struct stats st;
    uint64_t rng;
};

static uint64_t next_rand(struct side *s) { return s->rng = splitmix64(s->rng); }

/* After NMQ_AGAIN for a record of `len` bytes: usually block with the handle's
 * strategy, sometimes just retry at once. Returns 0 to go on, -1 to stop. */
static int producer_backoff(struct side *s, uint32_t len, int *stuck) {
    s->st.again++;
    if (next_rand(s) % 4 == 0) {
        nmq_cpu_relax();
        return 0;
    }
    int64_t t0 = nmq_now_ns();
    int rc = nmq_ring_wait_writable(s->ring, len, WAIT_SLICE_NS);
    note_wait(&s->st, t0, rc);
    if (rc == NMQ_OK) {
        *stuck = 0;
        return 0;
    }
    if (rc == NMQ_TIMEOUT && ++*stuck < STUCK_SLICES) return 0;
    fail("producer", "nmq_ring_wait_writable(%u) returned %d after %d slices: %s", len, rc, *stuck,
         nmq_last_error());
    return -1;
}

static void *producer(void *arg) {
    struct side *s = arg;
    uint8_t *buf = malloc((size_t)NMQ_MAX_BATCH * cfg.max_payload); /* the staged batch */
    uint8_t *one = malloc(cfg.max_payload);                            /* a single push */
    uint32_t lens[NMQ_MAX_BATCH];
    uint64_t offs[NMQ_MAX_BATCH + 1] = {0};
    uint64_t staged_seq = 0; /* records [staged_seq, staged_seq + staged_n) are in buf */
    uint32_t staged_n = 0;
    if (!buf || !one) {
        fail("producer", "out of memory");
        goto out;
    }
    /* Claimed up front (not by the first push) so that even 0 records end in a close the consumer sees. */
    int claimed = nmq_ring_claim(s->ring, NMQ_ROLE_PRODUCER);
    if (claimed != NMQ_OK) {
        fail("producer", "nmq_ring_claim returned %d: %s", claimed, nmq_last_error());
        goto out;
    }
    uint64_t seq = 0;
    int stuck = 0;
    while (seq < cfg.records && !atomic_load_explicit(&failed, memory_order_relaxed)) {
        uint64_t pick = next_rand(s);
        uint32_t len = rec_len(seq);
        switch (pick % 3) {
        case 0: { /* push */
            s->st.calls[0]++;
            rec_fill(seq, one, len);
            int rc = nmq_ring_push(s->ring, one, len);
            if (rc == NMQ_OK) {
                seq++;
                s->st.bytes += len;
            } else if (rc != NMQ_AGAIN) {
                fail("producer", "nmq_ring_push(record %" PRIu64 ", %u bytes) returned %d", seq, len, rc);
            } else if (producer_backoff(s, len, &stuck)) {
                goto out;
            }
            break;
        }
        case 1: { /* push_batch of 1..256 records */
            s->st.calls[1]++;
            /* A batch usually goes in part (the ring holds ~13 average records): keep the
             * staged rest and resend from it, rather than generating it again each time. */
            if (seq < staged_seq || seq >= staged_seq + staged_n) {
                uint64_t n = 1 + (pick >> 8) % NMQ_MAX_BATCH;
                if (n > cfg.records - seq) n = cfg.records - seq;
                staged_seq = seq;
                staged_n = (uint32_t)n;
                for (uint32_t i = 0; i < staged_n; i++) {
                    lens[i] = rec_len(seq + i);
                    rec_fill(seq + i, buf + offs[i], lens[i]);
                    offs[i + 1] = offs[i] + lens[i];
                }
            }
            uint32_t i0 = (uint32_t)(seq - staged_seq), n = staged_n - i0;
            int rc = nmq_ring_push_batch(s->ring, buf + offs[i0], lens + i0, n);
            if (rc < 0 || (uint32_t)rc > n) {
                fail("producer", "nmq_ring_push_batch(records %" PRIu64 "+%u) returned %d", seq, n, rc);
                break;
            }
            s->st.bytes += offs[i0 + (uint32_t)rc] - offs[i0];
            seq += (uint64_t)rc;
            if ((uint32_t)rc < n && producer_backoff(s, lens[i0 + (uint32_t)rc], &stuck)) goto out;
            break;
        }
        default: { /* reserve a little more than needed, write in place, commit the real length */
            s->st.calls[2]++;
            uint32_t extra = (pick >> 16) % 4 == 0 ? (uint32_t)((pick >> 24) % 64) : 0;
            uint32_t reserve = len + extra > cfg.max_payload ? cfg.max_payload : len + extra;
            int64_t at = nmq_ring_reserve(s->ring, reserve);
            if (at == NMQ_AGAIN) {
                if (producer_backoff(s, reserve, &stuck)) goto out;
                break;
            }
            if (at < NMQ_RING_HEADER_BYTES || (uint64_t)at + reserve > NMQ_RING_HEADER_BYTES + cfg.capacity) {
                fail("producer", "nmq_ring_reserve(%u) returned %" PRId64, reserve, at);
                break;
            }
            rec_fill(seq, cfg.region + at, len);
            int rc = nmq_ring_commit(s->ring, len);
            if (rc != NMQ_OK) {
                fail("producer", "nmq_ring_commit(%u) after reserve(%u) returned %d", len, reserve, rc);
                break;
            }
            seq++;
            s->st.bytes += len;
            break;
        }
        }
    }
out:
    free(buf);
    free(one);
    /* The close publishes the final head (C1); the consumer must drain, then see NMQ_ECLOSED. */
    nmq_ring_close(s->ring);
    return NULL;
}

/* ------------------------------------------------------------------ consumer ---- */

static void *consumer(void *arg) {
    struct side *s = arg;
    uint64_t out_max = (uint64_t)NMQ_MAX_BATCH * cfg.max_payload;
    uint8_t *out = malloc(out_max);
    uint8_t *scratch = malloc(cfg.max_payload + 1);
    uint64_t starts[NMQ_MAX_BATCH], ends[NMQ_MAX_BATCH];
    uint32_t offsets[NMQ_MAX_BATCH + 1];
    if (!out || !scratch) {
        fail("consumer", "out of memory");
        goto done;
    }
    uint64_t seq = 0;
    int stuck = 0;
    const int64_t len_mask = (1LL << NMQ_REF_LEN_BITS) - 1;
    while (seq < cfg.records && !atomic_load_explicit(&failed, memory_order_relaxed)) {
        uint64_t pick = next_rand(s);
        int got = 0; /* records taken by this call */
        switch (pick % 4) {
        case 0: { /* peek, read in place, release (explicitly or by the next call) */
            s->st.calls[0]++;
            int64_t ref = nmq_ring_peek(s->ring);
            if (ref > 0) {
                uint32_t len = (uint32_t)(ref & len_mask);
                uint64_t at = (uint64_t)(ref >> NMQ_REF_LEN_BITS);
                if (at < NMQ_RING_HEADER_BYTES || at + len > NMQ_RING_HEADER_BYTES + cfg.capacity) {
                    fail("consumer", "nmq_ring_peek returned ref %" PRId64 " outside the data area", ref);
                    goto done;
                }
                if (verify(seq, cfg.region + at, len, "peek", scratch)) goto done;
                seq++;
                s->st.bytes += len;
                got = 1;
                if (pick & 0x100) {
                    int rc = nmq_ring_release(s->ring);
                    if (rc != NMQ_OK) {
                        fail("consumer", "nmq_ring_release after peek returned %d", rc);
                        goto done;
                    }
                }
            } else if (ref != NMQ_AGAIN) {
                fail("consumer", "nmq_ring_peek returned %" PRId64 " at record %" PRIu64, ref, seq);
                goto done;
            }
            break;
        }
        case 1: { /* peek_batch, read in place, release */
            s->st.calls[1]++;
            uint32_t max_n = 1 + (uint32_t)((pick >> 8) % NMQ_MAX_BATCH);
            int n = nmq_ring_peek_batch(s->ring, starts, ends, max_n);
            if (n < 0 || (uint32_t)n > max_n) {
                fail("consumer", "nmq_ring_peek_batch(%u) returned %d at record %" PRIu64, max_n, n, seq);
                goto done;
            }
            for (int i = 0; i < n; i++) {
                if (starts[i] < NMQ_RING_HEADER_BYTES || ends[i] < starts[i] ||
                    ends[i] > NMQ_RING_HEADER_BYTES + cfg.capacity) {
                    fail("consumer", "nmq_ring_peek_batch span [%" PRIu64 ", %" PRIu64 ") is outside the data area",
                         starts[i], ends[i]);
                    goto done;
                }
                uint32_t len = (uint32_t)(ends[i] - starts[i]);
                if (verify(seq, cfg.region + starts[i], len, "peek_batch", scratch)) goto done;
                seq++;
                s->st.bytes += len;
            }
            got = n;
            if (n > 0 && (pick & 0x100)) {
                int rc = nmq_ring_release(s->ring);
                if (rc != NMQ_OK) {
                    fail("consumer", "nmq_ring_release after peek_batch returned %d", rc);
                    goto done;
                }
            }
            break;
        }
        case 2: { /* pop into a buffer; now and then one too small for the record */
            s->st.calls[2]++;
            uint32_t cap = (pick >> 8) % 8 == 0 ? (uint32_t)((pick >> 16) % 64) : cfg.max_payload;
            int rc = nmq_ring_pop(s->ring, out, cap);
            if (rc >= 0) {
                if (verify(seq, out, (uint32_t)rc, "pop", scratch)) goto done;
                seq++;
                s->st.bytes += (uint32_t)rc;
                got = 1;
            } else if (rc == NMQ_EINVAL && seq < cfg.records && rec_len(seq) > cap) {
                got = 1; /* refused without consuming: the next call must return the same record */
            } else if (rc != NMQ_AGAIN) {
                fail("consumer", "nmq_ring_pop(cap %u) returned %d at record %" PRIu64, cap, rc, seq);
                goto done;
            }
            break;
        }
        default: { /* pop_batch into a buffer of varying size (always room for one record) */
            s->st.calls[3]++;
            uint32_t max_n = 1 + (uint32_t)((pick >> 8) % NMQ_MAX_BATCH);
            uint64_t cap = cfg.max_payload + (pick >> 24) % (out_max - cfg.max_payload + 1);
            int n = nmq_ring_pop_batch(s->ring, out, cap, offsets, max_n);
            if (n < 0 || (uint32_t)n > max_n) {
                fail("consumer", "nmq_ring_pop_batch(%u) returned %d at record %" PRIu64, max_n, n, seq);
                goto done;
            }
            if (offsets[0] != 0 || offsets[n] > cap) {
                fail("consumer", "nmq_ring_pop_batch offsets [0]=%u [%d]=%u for a %" PRIu64 "-byte buffer",
                     offsets[0], n, offsets[n], cap);
                goto done;
            }
            for (int i = 0; i < n; i++) {
                uint32_t len = offsets[i + 1] - offsets[i];
                if (offsets[i + 1] < offsets[i] || verify(seq, out + offsets[i], len, "pop_batch", scratch))
                    goto done;
                seq++;
                s->st.bytes += len;
            }
            got = n;
            break;
        }
        }
        if (got) {
            stuck = 0;
            continue;
        }
        s->st.again++;
        int64_t t0 = nmq_now_ns();
        int rc = nmq_ring_wait_readable(s->ring, WAIT_SLICE_NS);
        note_wait(&s->st, t0, rc);
        if (rc == NMQ_OK) {
            stuck = 0;
        } else if (rc != NMQ_TIMEOUT || ++stuck >= STUCK_SLICES) {
            fail("consumer", "nmq_ring_wait_readable returned %d at record %" PRIu64 " of %" PRIu64 ": %s", rc,
                 seq, cfg.records, nmq_last_error());
            goto done;
        }
    }
    if (atomic_load(&failed)) goto done;

    /* Drained: the producer's close must now be reported, and nothing else may arrive. */
    int rc;
    int slices = 0;
    while ((rc = nmq_ring_wait_readable(s->ring, WAIT_SLICE_NS)) == NMQ_TIMEOUT && ++slices < STUCK_SLICES) {
    }
    if (rc != NMQ_ECLOSED) {
        int64_t extra = rc == NMQ_OK ? nmq_ring_peek(s->ring) : 0;
        fail("consumer", "after %" PRIu64 " records nmq_ring_wait_readable returned %d (peek %" PRId64
             "), expected NMQ_ECLOSED (%d)", seq, rc, extra, NMQ_ECLOSED);
        goto done;
    }
    if (nmq_ring_peer_state(s->ring, NMQ_ROLE_PRODUCER) != NMQ_PEER_CLOSED) {
        fail("consumer", "producer state is %d after close, expected NMQ_PEER_CLOSED",
             nmq_ring_peer_state(s->ring, NMQ_ROLE_PRODUCER));
        goto done;
    }
    if (nmq_ring_count(s->ring) != 0 || nmq_ring_used_bytes(s->ring) != 0) {
        fail("consumer", "drained ring reports count %" PRIu64 ", used bytes %" PRIu64, nmq_ring_count(s->ring),
             nmq_ring_used_bytes(s->ring));
        goto done;
    }
done:
    free(out);
    free(scratch);
    nmq_ring_close(s->ring);
    return NULL;
}

/* ---------------------------------------------------------------------- main ---- */

static uint64_t arg_u64(int argc, char **argv, int i, uint64_t dflt) {
    if (argc <= i) return dflt;
    char *end;
    unsigned long long v = strtoull(argv[i], &end, 0);
    if (*argv[i] == '\0' || *end != '\0') {
        fprintf(stderr, "ring_stress: argument %d (%s) is not a number\n", i, argv[i]);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc > 5) {
        fprintf(stderr, "usage: %s [records [wait 0|1|2 [seed [capacity]]]]\n", argv[0]);
        return 2;
    }
    cfg.records = arg_u64(argc, argv, 1, 200000);
    cfg.wait = (int)arg_u64(argc, argv, 2, NMQ_WAIT_FUTEX);
    cfg.seed = arg_u64(argc, argv, 3, 1);
    cfg.capacity = arg_u64(argc, argv, 4, 4096);
    /* Futex: no spinning, so nearly every wait runs the W1/W2 sleep handshake. */
    cfg.spin_ns = cfg.wait == NMQ_WAIT_FUTEX ? 0 : 20000;

    uint64_t size = nmq_ring_region_size(cfg.capacity);
    if (size == 0) {
        fprintf(stderr, "ring_stress: capacity %" PRIu64 " is invalid\n", cfg.capacity);
        return 2;
    }
    cfg.region = aligned_alloc(4096, size);
    if (!cfg.region) {
        fprintf(stderr, "ring_stress: out of memory for a %" PRIu64 "-byte region\n", size);
        return 1;
    }
    int rc = nmq_ring_init(cfg.region, size, cfg.capacity);
    if (rc != NMQ_OK) {
        fprintf(stderr, "ring_stress: nmq_ring_init: %d %s\n", rc, nmq_last_error());
        return 1;
    }
    struct side prod = {.rng = splitmix64(cfg.seed * 2 + 1)}, cons = {.rng = splitmix64(cfg.seed * 2 + 2)};
    if ((rc = nmq_ring_open(cfg.region, size, cfg.wait, cfg.spin_ns, &prod.ring)) != NMQ_OK ||
        (rc = nmq_ring_open(cfg.region, size, cfg.wait, cfg.spin_ns, &cons.ring)) != NMQ_OK) {
        fprintf(stderr, "ring_stress: nmq_ring_open: %d %s\n", rc, nmq_last_error());
        return 1;
    }
    cfg.max_payload = nmq_ring_max_payload(prod.ring);

    int64_t t0 = nmq_now_ns();
    pthread_t tp, tc;
    if (pthread_create(&tc, NULL, consumer, &cons) != 0 || pthread_create(&tp, NULL, producer, &prod) != 0) {
        fprintf(stderr, "ring_stress: pthread_create failed\n");
        return 1;
    }
    pthread_join(tp, NULL);
    pthread_join(tc, NULL);
    double secs = (double)(nmq_now_ns() - t0) / 1e9;

    nmq_ring_free(prod.ring);
    nmq_ring_free(cons.ring);
    free(cfg.region);
    if (atomic_load(&failed)) return 1;
    if (prod.st.bytes != cons.st.bytes) {
        fprintf(stderr, "ring_stress: FAIL: producer sent %" PRIu64 " bytes, consumer got %" PRIu64 "\n",
                prod.st.bytes, cons.st.bytes);
        return 1;
    }
    printf("ring_stress: ok records=%" PRIu64 " bytes=%" PRIu64 " capacity=%" PRIu64 " wait=%d seed=%" PRIu64
           " secs=%.2f producer[push=%" PRIu64 " batch=%" PRIu64 " reserve=%" PRIu64 " again=%" PRIu64
           " waits=%" PRIu64 " slow=%" PRIu64 " timeouts=%" PRIu64 " max_wait_us=%" PRIu64 "] consumer[peek=%" PRIu64
           " peek_batch=%" PRIu64 " pop=%" PRIu64 " pop_batch=%" PRIu64 " again=%" PRIu64 " waits=%" PRIu64
           " slow=%" PRIu64 " timeouts=%" PRIu64 " max_wait_us=%" PRIu64 "]\n",
           cfg.records, cons.st.bytes, cfg.capacity, cfg.wait, cfg.seed, secs, prod.st.calls[0], prod.st.calls[1],
           prod.st.calls[2], prod.st.again, prod.st.waits, prod.st.slow, prod.st.timeouts, prod.st.max_wait_ns / 1000,
           cons.st.calls[0], cons.st.calls[1], cons.st.calls[2], cons.st.calls[3], cons.st.again, cons.st.waits,
           cons.st.slow, cons.st.timeouts, cons.st.max_wait_ns / 1000);
    return 0;
}
