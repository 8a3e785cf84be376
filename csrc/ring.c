/*
 * ring.c — the single-producer single-consumer shared-memory byte ring.
 *
 * Why C: a push+pop pair must cost well under a microsecond from Python and a
 * batch of 256 records must be one call (≈ 3 ns a record measured here); the
 * index protocol needs C11 acquire/release atomics that Python cannot express.
 *
 * Region layout (little-endian, all offsets in bytes):
 *
 *   0      +----------------------------------------------------------+
 *          | magic "NMQRING1" | version | header_bytes | capacity      |  constants,
 *          | max_payload | flags                                     |  written once
 *   128    | producer slot: token | start time | pid | closed        |  who holds
 *   256    | consumer slot: token | start time | pid | closed        |  each role
 *   384    | head (bytes written) | pushed (records)  <- producer line|
 *   512    | tail (bytes freed)   | popped (records)  <- consumer line|
 *   640    | cons_sleep (futex word the consumer sleeps on)           |
 *   768    | prod_sleep (futex word the producer sleeps on)           |
 *   4096   +----------------------------------------------------------+
 *          | data: `capacity` bytes (a power of two) of records        |
 *          +----------------------------------------------------------+
 *
 * Each hot field sits on its own 128-byte block (two cache lines: the adjacent-
 * line prefetcher pairs them), so producer and consumer never false-share.
 *
 * A record in the data area is an 8-byte header {u32 len, u32 tag} and the payload
 * padded to 8 bytes; a record never wraps. When the next record does not fit before
 * the end of the data area, the producer writes a PAD header covering the rest of
 * it and the record starts again at 0.
 *
 * head and tail are monotonic byte counters (position = counter & (capacity - 1)).
 * The region is valid if and only if: magic and version match, capacity is a power
 * of two within the limits, header_bytes == NMQ_RING_HEADER_BYTES, the mapping is
 * header_bytes + capacity long, both counters are 8-aligned and 0 <= head - tail
 * <= capacity. A record is valid if and only if its tag is DATA or PAD, a DATA
 * record's length is <= max_payload and it ends within both the data area and head,
 * and a PAD record's length reaches exactly to the end of the data area.
 *
 * Memory ordering (acquire/release only; every pair is labelled):
 *   R1/A1  producer publishes head after writing records; consumer acquires head.
 *   R2/A2  consumer publishes tail after it is done reading; producer acquires tail.
 *   W1/W2  sleep handshake: both sides do an acq_rel read-modify-write on the
 *          futex word, so a sleeper's write and a waker's read are totally ordered
 *          and no wake-up is lost (see wake_peer()).
 *   M1/M2  init publishes magic last; open acquires it first.
 *   C1/C2  close publishes `closed` after the final head/tail; peers acquire it.
 */
#include "nmq_internal.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NMQ_RING_MAGIC 0x31474E4952514D4EULL /* "NMQRING1" little-endian */
#define NMQ_TAG_DATA 0x4154414Eu            /* "NATA" */
#define NMQ_TAG_PAD 0x4441504Eu             /* "NPAD" */
#define NMQ_BLOCK 128

/* The index protocol's orders (R1/A1, R2/A2). Only the sanitizer test overrides
 * them (to relaxed) to prove that ThreadSanitizer catches a broken ring. */
#ifndef NMQ_ACQUIRE
#define NMQ_ACQUIRE memory_order_acquire
#endif
#ifndef NMQ_RELEASE
#define NMQ_RELEASE memory_order_release
#endif

/* One role's holder. token identifies the handle (so two handles of one process
 * cannot both produce) and embeds the holder's pid, so one atomic load says who
 * holds the slot; the start time tells a reused pid from the original holder.
 * token = CLAIMING bit | pid << 32 | 32 random bits (never 0). While CLAIMING is set
 * the new holder is still writing starttime/pid; its liveness is judged by pid only. */
#define TOKEN_CLAIMING (1ULL << 63)
#define TOKEN_PID(t) ((int32_t)(((t) >> 32) & 0x7FFFFFFF))
struct nmq_slot {
    _Atomic uint64_t token;     /* 0 = never claimed */
    _Atomic uint64_t starttime; /* /proc/<pid>/stat field 22; 0 = unknown */
    _Atomic int32_t pid;
    _Atomic uint32_t closed;
    uint8_t pad[NMQ_BLOCK - 24];
};

struct nmq_ring_hdr {
    _Atomic uint64_t magic;
    uint32_t version;
    uint32_t header_bytes;
    uint64_t capacity;
    uint32_t max_payload;
    uint32_t flags;
    uint8_t pad0[NMQ_BLOCK - 32];
    struct nmq_slot producer;
    struct nmq_slot consumer;
    _Atomic uint64_t head;   /* written by the producer only */
    _Atomic uint64_t pushed; /* written by the producer only */
    uint8_t pad1[NMQ_BLOCK - 16];
    _Atomic uint64_t tail;   /* written by the consumer only */
    _Atomic uint64_t popped; /* written by the consumer only */
    uint8_t pad2[NMQ_BLOCK - 16];
    _Atomic uint32_t cons_sleep; /* 1 while the consumer may be asleep */
    uint8_t pad3[NMQ_BLOCK - 4];
    _Atomic uint32_t prod_sleep; /* 1 while the producer may be asleep */
    uint8_t pad4[NMQ_RING_HEADER_BYTES - 6 * NMQ_BLOCK - 4];
};

_Static_assert(sizeof(struct nmq_slot) == NMQ_BLOCK, "slot is one block");
_Static_assert(offsetof(struct nmq_ring_hdr, producer) == 128, "layout");
_Static_assert(offsetof(struct nmq_ring_hdr, consumer) == 256, "layout");
_Static_assert(offsetof(struct nmq_ring_hdr, head) == 384, "layout");
_Static_assert(offsetof(struct nmq_ring_hdr, tail) == 512, "layout");
_Static_assert(offsetof(struct nmq_ring_hdr, cons_sleep) == 640, "layout");
_Static_assert(offsetof(struct nmq_ring_hdr, prod_sleep) == 768, "layout");
_Static_assert(sizeof(struct nmq_ring_hdr) == NMQ_RING_HEADER_BYTES, "header is one page");
_Static_assert(sizeof(_Atomic uint64_t) == 8 && sizeof(_Atomic uint32_t) == 4, "lock-free sizes");

struct nmq_rec {
    uint32_t len;
    uint32_t tag;
};
_Static_assert(sizeof(struct nmq_rec) == NMQ_RING_RECORD_HEADER, "record header");

/* The process-local handle. Producer and consumer state live on separate blocks so
 * two threads sharing one handle (one pushing, one popping) do not false-share. */
struct nmq_ring {
    struct nmq_ring_hdr *hdr;
    uint8_t *data;
    uint64_t cap;
    uint64_t mask;
    uint32_t max_payload;
    int wait;
    uint32_t spin_ns;
    _Atomic int closed;
    uint64_t token;
    int32_t pid;
    uint64_t starttime;

    alignas(NMQ_BLOCK) struct {
        int claimed;
        uint64_t head;       /* own head (== hdr->head except inside reserve/commit) */
        uint64_t tail_cache; /* last tail read from the region */
        uint64_t pushed;
        int64_t reserved;    /* payload length reserved, -1 if none */
    } p;
    alignas(NMQ_BLOCK) struct {
        int claimed;
        uint64_t tail;       /* next unread record */
        uint64_t released;   /* == hdr->tail: everything before it is given back */
        uint64_t head_cache; /* last head read from the region */
        uint64_t popped;     /* records read, including held ones */
    } c;
};

/* ------------------------------------------------------------------ errors ---- */

static _Thread_local char nmq_errbuf[256];

const char *nmq_last_error(void) { return nmq_errbuf; }

int nmq_set_error(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nmq_errbuf, sizeof nmq_errbuf, fmt, ap);
    va_end(ap);
    return status;
}

int64_t nmq_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------- process identity ---- */

/* Start time (field 22) and state (field 3) of a process, from /proc. Returns 0 on
 * success, -1 when the process does not exist (or /proc cannot tell). */
static int proc_stat(int32_t pid, uint64_t *starttime, char *state) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* comm may contain spaces and parentheses */
    if (!p || p[1] != ' ') return -1;
    p += 2;
    *state = *p;
    /* after ')' come fields 3.. ; starttime is field 22, i.e. the 20th from here */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p) return -1;
        p++;
    }
    *starttime = strtoull(p, NULL, 10);
    return 0;
}

static int process_alive(int32_t pid, uint64_t starttime) {
    if (pid <= 0) return 0;
    if (kill(pid, 0) == -1 && errno == ESRCH) return 0;
    uint64_t st;
    char state;
    if (proc_stat(pid, &st, &state) != 0) return kill(pid, 0) == 0 || errno == EPERM;
    if (state == 'Z' || state == 'X') return 0; /* killed, not yet reaped */
    if (starttime != 0 && st != starttime) return 0; /* pid reused */
    return 1;
}

static int slot_state(struct nmq_slot *s) {
    /* acquire: pairs with the final release store of the token in nmq_ring_claim(),
     * so a settled token comes with its holder's closed flag and start time. */
    uint64_t tok = atomic_load_explicit(&s->token, memory_order_acquire);
    if (tok == 0) return NMQ_PEER_NONE;
    if (tok & TOKEN_CLAIMING) return process_alive(TOKEN_PID(tok), 0) ? NMQ_PEER_ALIVE : NMQ_PEER_DEAD;
    /* C2 (acquire): pairs with C1 in nmq_ring_close(); the holder's final head or
     * tail store is visible once `closed` is seen. */
    if (atomic_load_explicit(&s->closed, memory_order_acquire)) return NMQ_PEER_CLOSED;
    uint64_t st = atomic_load_explicit(&s->starttime, memory_order_relaxed);
    return process_alive(TOKEN_PID(tok), st) ? NMQ_PEER_ALIVE : NMQ_PEER_DEAD;
}

/* ------------------------------------------------------------------- set-up ---- */

static int capacity_ok(uint64_t capacity) {
    return capacity >= (1ULL << NMQ_RING_MIN_CAPACITY_LOG2) &&
           capacity <= (1ULL << NMQ_RING_MAX_CAPACITY_LOG2) && (capacity & (capacity - 1)) == 0;
}

static uint32_t max_payload_for(uint64_t capacity) {
    uint64_t fit = capacity - NMQ_RING_RECORD_HEADER;
    return fit < NMQ_MAX_PAYLOAD ? (uint32_t)fit : NMQ_MAX_PAYLOAD;
}

uint64_t nmq_ring_region_size(uint64_t capacity) {
    return capacity_ok(capacity) ? NMQ_RING_HEADER_BYTES + capacity : 0;
}

int nmq_ring_init(void *mem, uint64_t mem_size, uint64_t capacity) {
    if (!capacity_ok(capacity))
        return nmq_set_error(NMQ_EINVAL,
                             "ring capacity %llu is invalid: must be a power of two from %llu to %llu bytes",
                             (unsigned long long)capacity, 1ULL << NMQ_RING_MIN_CAPACITY_LOG2,
                             1ULL << NMQ_RING_MAX_CAPACITY_LOG2);
    if (!mem || ((uintptr_t)mem % NMQ_BLOCK) != 0)
        return nmq_set_error(NMQ_EINVAL, "ring region must be %d-byte aligned", NMQ_BLOCK);
    if (mem_size < NMQ_RING_HEADER_BYTES + capacity)
        return nmq_set_error(NMQ_EINVAL, "ring region of %llu bytes is smaller than %llu (header + capacity)",
                             (unsigned long long)mem_size,
                             (unsigned long long)(NMQ_RING_HEADER_BYTES + capacity));
    struct nmq_ring_hdr *h = mem;
    memset(h, 0, sizeof *h);
    h->version = NMQ_RING_LAYOUT_VERSION;
    h->header_bytes = NMQ_RING_HEADER_BYTES;
    h->capacity = capacity;
    h->max_payload = max_payload_for(capacity);
    /* M1 (release): every field above is visible to whoever sees the magic; pairs with M2. */
    atomic_store_explicit(&h->magic, NMQ_RING_MAGIC, memory_order_release);
    return NMQ_OK;
}

int nmq_ring_open(void *mem, uint64_t mem_size, int wait, uint32_t spin_ns, nmq_ring **out) {
    *out = NULL;
    if (wait < NMQ_WAIT_SPIN || wait > NMQ_WAIT_FUTEX)
        return nmq_set_error(NMQ_EINVAL, "wait strategy %d is not one of spin (0), yield (1), futex (2)", wait);
    if (!mem || ((uintptr_t)mem % NMQ_BLOCK) != 0)
        return nmq_set_error(NMQ_EINVAL, "ring region must be %d-byte aligned", NMQ_BLOCK);
    if (mem_size < NMQ_RING_HEADER_BYTES)
        return nmq_set_error(NMQ_ECORRUPT, "region of %llu bytes is smaller than the %d-byte ring header",
                             (unsigned long long)mem_size, NMQ_RING_HEADER_BYTES);
    struct nmq_ring_hdr *h = mem;
    /* M2 (acquire): pairs with M1 in nmq_ring_init(). */
    uint64_t magic = atomic_load_explicit(&h->magic, memory_order_acquire);
    if (magic != NMQ_RING_MAGIC)
        return nmq_set_error(NMQ_EMAGIC, "region is not a NanoMQ ring (magic %016llx, expected %016llx)",
                             (unsigned long long)magic, (unsigned long long)NMQ_RING_MAGIC);
    if (h->version != NMQ_RING_LAYOUT_VERSION)
        return nmq_set_error(NMQ_EVERSION, "ring layout version %u is not supported (this build reads %d)",
                             h->version, NMQ_RING_LAYOUT_VERSION);
    if (h->header_bytes != NMQ_RING_HEADER_BYTES || !capacity_ok(h->capacity) ||
        h->max_payload != max_payload_for(h->capacity))
        return nmq_set_error(NMQ_ECORRUPT, "ring header is corrupt (header %u bytes, capacity %llu, max payload %u)",
                             h->header_bytes, (unsigned long long)h->capacity, h->max_payload);
    if (mem_size != NMQ_RING_HEADER_BYTES + h->capacity)
        return nmq_set_error(NMQ_ECORRUPT, "ring region is %llu bytes but its header says %llu",
                             (unsigned long long)mem_size,
                             (unsigned long long)(NMQ_RING_HEADER_BYTES + h->capacity));
    uint64_t head = atomic_load_explicit(&h->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&h->tail, memory_order_acquire);
    if ((head | tail) % NMQ_RING_ALIGN != 0 || head - tail > h->capacity)
        return nmq_set_error(NMQ_ECORRUPT, "ring indices are corrupt (head %llu, tail %llu, capacity %llu)",
                             (unsigned long long)head, (unsigned long long)tail,
                             (unsigned long long)h->capacity);

    nmq_ring *r = aligned_alloc(NMQ_BLOCK, sizeof *r);
    if (!r) return nmq_set_error(NMQ_ENOMEM, "out of memory allocating a ring handle");
    memset(r, 0, sizeof *r);
    r->hdr = h;
    r->data = (uint8_t *)mem + NMQ_RING_HEADER_BYTES;
    r->cap = h->capacity;
    r->mask = h->capacity - 1;
    r->max_payload = h->max_payload;
    r->wait = wait;
    r->spin_ns = spin_ns;
    r->pid = (int32_t)getpid();
    char state;
    if (proc_stat(r->pid, &r->starttime, &state) != 0) r->starttime = 0;
    /* pid << 32 | 32 random nonzero bits: distinguishes two handles of one process. */
    uint64_t mix = ((uint64_t)nmq_now_ns() * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)(uintptr_t)r * 0xBF58476D1CE4E5B9ULL);
    uint32_t low = (uint32_t)(mix >> 32) ^ (uint32_t)mix;
    r->token = ((uint64_t)(r->pid & 0x7FFFFFFF) << 32) | (low ? low : 1);
    r->p.reserved = -1;
    *out = r;
    return NMQ_OK;
}

void nmq_ring_free(nmq_ring *r) { free(r); }

int nmq_ring_claim(nmq_ring *r, int role) {
    if (atomic_load_explicit(&r->closed, memory_order_relaxed))
        return nmq_set_error(NMQ_ECLOSED, "ring handle is closed");
    if (role != NMQ_ROLE_PRODUCER && role != NMQ_ROLE_CONSUMER)
        return nmq_set_error(NMQ_EINVAL, "role %d is not producer (1) or consumer (2)", role);
    struct nmq_slot *s = role == NMQ_ROLE_PRODUCER ? &r->hdr->producer : &r->hdr->consumer;
    const char *name = role == NMQ_ROLE_PRODUCER ? "producer" : "consumer";
    uint64_t cur = atomic_load_explicit(&s->token, memory_order_acquire);
    if (cur != r->token) {
        if (cur != 0 && slot_state(s) == NMQ_PEER_ALIVE)
            return nmq_set_error(NMQ_EBUSY, "ring already has a live %s (pid %d); a ring has one of each",
                                 name, (int)TOKEN_PID(cur));
        /* Free, closed or dead: take it over. The CAS makes one of two racing claimers
         * win; the CLAIMING bit keeps the slot "alive" (judged by our pid alone) while
         * the closed flag and start time below are still the previous holder's. */
        if (!atomic_compare_exchange_strong_explicit(&s->token, &cur, r->token | TOKEN_CLAIMING,
                                                     memory_order_acq_rel, memory_order_acquire))
            return nmq_set_error(NMQ_EBUSY, "another %s claimed the ring at the same time", name);
        atomic_store_explicit(&s->starttime, r->starttime, memory_order_relaxed);
        atomic_store_explicit(&s->closed, 0, memory_order_relaxed);
        atomic_store_explicit(&s->pid, r->pid, memory_order_relaxed);
        /* release: the three stores above are visible with the settled token; pairs with
         * the acquire in slot_state(). */
        atomic_store_explicit(&s->token, r->token, memory_order_release);
    }
    struct nmq_ring_hdr *h = r->hdr;
    if (role == NMQ_ROLE_PRODUCER) {
        /* A1-like (acquire): resume from the previous producer's published head. */
        r->p.head = atomic_load_explicit(&h->head, memory_order_acquire);
        r->p.pushed = atomic_load_explicit(&h->pushed, memory_order_relaxed);
        r->p.tail_cache = atomic_load_explicit(&h->tail, memory_order_acquire);
        r->p.reserved = -1;
        r->p.claimed = 1;
    } else {
        r->c.tail = r->c.released = atomic_load_explicit(&h->tail, memory_order_acquire);
        r->c.popped = atomic_load_explicit(&h->popped, memory_order_relaxed);
        r->c.head_cache = atomic_load_explicit(&h->head, memory_order_acquire);
        r->c.claimed = 1;
    }
    return NMQ_OK;
}

void nmq_ring_close(nmq_ring *r) {
    if (atomic_exchange_explicit(&r->closed, 1, memory_order_acq_rel)) return;
    struct nmq_ring_hdr *h = r->hdr;
    if (r->c.claimed && r->c.tail != r->c.released) nmq_ring_release(r);
    struct nmq_slot *slots[2] = {r->p.claimed ? &h->producer : NULL, r->c.claimed ? &h->consumer : NULL};
    _Atomic uint32_t *words[2] = {&h->cons_sleep, &h->prod_sleep};
    for (int i = 0; i < 2; i++) {
        if (!slots[i] || atomic_load_explicit(&slots[i]->token, memory_order_acquire) != r->token) continue;
        /* C1 (release): our final head/tail stores happen-before a peer that sees closed; pairs with C2. */
        atomic_store_explicit(&slots[i]->closed, 1, memory_order_release);
        /* Wake the peer so a sleeper learns about the close now, not at its next check. */
        atomic_store_explicit(words[i], 0, memory_order_release);
        syscall(SYS_futex, words[i], FUTEX_WAKE, 1, NULL, NULL, 0);
    }
}

int nmq_ring_peer_state(nmq_ring *r, int role) {
    return slot_state(role == NMQ_ROLE_PRODUCER ? &r->hdr->producer : &r->hdr->consumer);
}

int32_t nmq_ring_peer_pid(nmq_ring *r, int role) {
    struct nmq_slot *s = role == NMQ_ROLE_PRODUCER ? &r->hdr->producer : &r->hdr->consumer;
    return atomic_load_explicit(&s->pid, memory_order_acquire);
}

/* ----------------------------------------------------------------- wake-ups ---- */

/* Wake the peer if it said it may sleep on `word`.
 * W1 (acq_rel RMW): the sleeper does W2 = exchange(word, 1) and then re-reads our
 * index. Both are RMWs on one location, so one comes first in its modification
 * order: if W2 is first we read 1 and wake; if W1 is first, W2 reads our write,
 * synchronises with it, and the sleeper's re-read sees the index we published
 * before W1. Either way no wake-up is lost — without a seq_cst fence. */
static inline void wake_peer(_Atomic uint32_t *word) {
    if (NMQ_UNLIKELY(atomic_exchange_explicit(word, 0, memory_order_acq_rel)))
        syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* ----------------------------------------------------------------- producer ---- */

static inline uint64_t rec_total(uint32_t len) {
    return NMQ_RING_RECORD_HEADER + (((uint64_t)len + NMQ_RING_ALIGN - 1) & ~(uint64_t)(NMQ_RING_ALIGN - 1));
}

static int producer_ready(nmq_ring *r) {
    if (NMQ_UNLIKELY(atomic_load_explicit(&r->closed, memory_order_relaxed)))
        return nmq_set_error(NMQ_ECLOSED, "ring handle is closed");
    if (!r->p.claimed) return nmq_ring_claim(r, NMQ_ROLE_PRODUCER);
    return NMQ_OK;
}

/* Make room for a record of `total` bytes at r->p.head, writing a PAD record first
 * if it would cross the end. Returns NMQ_OK or NMQ_AGAIN. A PAD that fits while the
 * record does not is kept (head moves past it), so a record as large as the whole
 * ring fits once the consumer has drained it. */
static inline int make_room(nmq_ring *r, uint64_t total) {
    uint64_t head = r->p.head;
    uint64_t pos = head & r->mask;
    uint64_t to_end = r->cap - pos;
    uint64_t need = to_end < total ? to_end + total : total;
    if (head + need - r->p.tail_cache > r->cap) {
        /* A2 (acquire): pairs with R2; the consumer has finished reading the bytes it freed. */
        r->p.tail_cache = atomic_load_explicit(&r->hdr->tail, NMQ_ACQUIRE);
        if (head + need - r->p.tail_cache > r->cap) {
            if (to_end < total && head + to_end - r->p.tail_cache <= r->cap) {
                struct nmq_rec *pad = (struct nmq_rec *)(r->data + pos);
                pad->len = (uint32_t)(to_end - NMQ_RING_RECORD_HEADER);
                pad->tag = NMQ_TAG_PAD;
                r->p.head = head + to_end;
                /* R1 (release): the PAD header is visible with the new head; pairs with A1. */
                atomic_store_explicit(&r->hdr->head, r->p.head, NMQ_RELEASE);
                wake_peer(&r->hdr->cons_sleep); /* W1: only the consumer skipping the PAD frees the room */
            }
            return NMQ_AGAIN;
        }
    }
    if (to_end < total) {
        struct nmq_rec *pad = (struct nmq_rec *)(r->data + pos);
        pad->len = (uint32_t)(to_end - NMQ_RING_RECORD_HEADER);
        pad->tag = NMQ_TAG_PAD;
        r->p.head = head + to_end; /* published with the record that follows (R1) */
    }
    return NMQ_OK;
}

static inline void write_record(nmq_ring *r, const void *data, uint32_t len) {
    struct nmq_rec *rec = (struct nmq_rec *)(r->data + (r->p.head & r->mask));
    rec->len = len;
    rec->tag = NMQ_TAG_DATA;
    if (len) memcpy(rec + 1, data, len);
    r->p.head += rec_total(len);
    r->p.pushed++;
}

static inline void publish_head(nmq_ring *r) {
    atomic_store_explicit(&r->hdr->pushed, r->p.pushed, memory_order_relaxed);
    /* R1 (release): the records written above are visible to a consumer that
     * acquires this head; pairs with A1. */
    atomic_store_explicit(&r->hdr->head, r->p.head, NMQ_RELEASE);
    wake_peer(&r->hdr->cons_sleep); /* W1 */
}

int nmq_ring_push(nmq_ring *r, const void *data, uint32_t len) {
    if (NMQ_UNLIKELY(!r->p.claimed || r->p.reserved >= 0 ||
                     atomic_load_explicit(&r->closed, memory_order_relaxed))) {
        int rc = producer_ready(r);
        if (rc) return rc;
        if (r->p.reserved >= 0) return NMQ_ESTATE;
    }
    if (NMQ_UNLIKELY(len > r->max_payload)) return NMQ_ETOOBIG;
    if (make_room(r, rec_total(len)) != NMQ_OK) return NMQ_AGAIN;
    write_record(r, data, len);
    publish_head(r);
    return NMQ_OK;
}

int nmq_ring_push_batch(nmq_ring *r, const void *data, const uint32_t *lens, uint32_t n) {
    if (NMQ_UNLIKELY(!r->p.claimed || r->p.reserved >= 0 ||
                     atomic_load_explicit(&r->closed, memory_order_relaxed))) {
        int rc = producer_ready(r);
        if (rc) return rc;
        if (r->p.reserved >= 0) return NMQ_ESTATE;
    }
    if (NMQ_UNLIKELY(n > NMQ_MAX_BATCH)) return NMQ_EINVAL;
    for (uint32_t i = 0; i < n; i++) /* every limit before any byte moves */
        if (NMQ_UNLIKELY(lens[i] > r->max_payload)) return NMQ_ETOOBIG;
    const uint8_t *src = data;
    uint32_t done = 0;
    for (; done < n; done++) {
        if (make_room(r, rec_total(lens[done])) != NMQ_OK) break;
        write_record(r, src, lens[done]);
        src += lens[done];
    }
    if (done) publish_head(r);
    return (int)done;
}

int64_t nmq_ring_reserve(nmq_ring *r, uint32_t len) {
    if (NMQ_UNLIKELY(!r->p.claimed || r->p.reserved >= 0 ||
                     atomic_load_explicit(&r->closed, memory_order_relaxed))) {
        int rc = producer_ready(r);
        if (rc) return rc;
        if (r->p.reserved >= 0) return NMQ_ESTATE;
    }
    if (NMQ_UNLIKELY(len > r->max_payload)) return NMQ_ETOOBIG;
    if (make_room(r, rec_total(len)) != NMQ_OK) return NMQ_AGAIN;
    r->p.reserved = len;
    return (int64_t)(NMQ_RING_HEADER_BYTES + (r->p.head & r->mask) + NMQ_RING_RECORD_HEADER);
}

int nmq_ring_commit(nmq_ring *r, uint32_t len) {
    if (NMQ_UNLIKELY(r->p.reserved < 0)) return NMQ_ESTATE;
    if (NMQ_UNLIKELY(len > (uint64_t)r->p.reserved)) return NMQ_EINVAL;
    struct nmq_rec *rec = (struct nmq_rec *)(r->data + (r->p.head & r->mask));
    rec->len = len;
    rec->tag = NMQ_TAG_DATA;
    r->p.head += rec_total(len);
    r->p.pushed++;
    r->p.reserved = -1;
    publish_head(r);
    return NMQ_OK;
}

/* ----------------------------------------------------------------- consumer ---- */

static int consumer_ready(nmq_ring *r) {
    if (NMQ_UNLIKELY(atomic_load_explicit(&r->closed, memory_order_relaxed)))
        return nmq_set_error(NMQ_ECLOSED, "ring handle is closed");
    if (!r->c.claimed) return nmq_ring_claim(r, NMQ_ROLE_CONSUMER);
    return NMQ_OK;
}

int nmq_ring_release(nmq_ring *r) {
    if (r->c.tail == r->c.released) return NMQ_ESTATE;
    r->c.released = r->c.tail;
    /* R2 (release): our reads of the freed bytes happen-before the producer's
     * reuse of them, which follows its A2 acquire of this tail. */
    atomic_store_explicit(&r->hdr->tail, r->c.tail, NMQ_RELEASE);
    wake_peer(&r->hdr->prod_sleep); /* W1 */
    return NMQ_OK;
}

/* Examine the record at c.tail, skipping PADs. Returns a ref (> 0), NMQ_AGAIN, or
 * NMQ_ECORRUPT; does not consume. */
static inline int64_t next_record(nmq_ring *r) {
    for (;;) {
        uint64_t tail = r->c.tail;
        if (tail == r->c.head_cache) {
            /* A1 (acquire): pairs with R1; the records before head are fully written. */
            r->c.head_cache = atomic_load_explicit(&r->hdr->head, NMQ_ACQUIRE);
            if (tail == r->c.head_cache) return NMQ_AGAIN;
            if (NMQ_UNLIKELY(r->c.head_cache - tail > r->cap || (r->c.head_cache & 7))) return NMQ_ECORRUPT;
        }
        uint64_t pos = tail & r->mask;
        uint64_t avail = r->c.head_cache - tail;
        const struct nmq_rec *rec = (const struct nmq_rec *)(r->data + pos);
        uint32_t len = rec->len, tag = rec->tag;
        if (tag == NMQ_TAG_PAD) {
            if (NMQ_UNLIKELY(len != r->cap - pos - NMQ_RING_RECORD_HEADER || r->cap - pos > avail))
                return NMQ_ECORRUPT;
            r->c.tail = tail + (r->cap - pos);
            continue;
        }
        uint64_t total = rec_total(len);
        if (NMQ_UNLIKELY(tag != NMQ_TAG_DATA || len > r->max_payload || pos + total > r->cap || total > avail))
            return NMQ_ECORRUPT;
        return (int64_t)(((NMQ_RING_HEADER_BYTES + pos + NMQ_RING_RECORD_HEADER) << NMQ_REF_LEN_BITS) | len);
    }
}

/* Take the record at c.tail: it is held (its bytes stay ours) until release, but
 * already counts as popped for nmq_ring_count(). */
static inline void consume(nmq_ring *r, uint32_t len) {
    r->c.tail += rec_total(len);
    atomic_store_explicit(&r->hdr->popped, ++r->c.popped, memory_order_relaxed);
}

#define CONSUMER_ENTER(r)                                    \
    do {                                                     \
        if (NMQ_UNLIKELY(!(r)->c.claimed ||                  \
                         atomic_load_explicit(&(r)->closed, memory_order_relaxed))) { \
            int rc_ = consumer_ready(r);                     \
            if (rc_) return rc_;                             \
        }                                                    \
        if ((r)->c.tail != (r)->c.released) nmq_ring_release(r); \
    } while (0)

#define REF_MASK ((1LL << NMQ_REF_LEN_BITS) - 1)

int64_t nmq_ring_peek(nmq_ring *r) {
    CONSUMER_ENTER(r);
    int64_t ref = next_record(r);
    if (ref > 0) consume(r, (uint32_t)(ref & REF_MASK));
    return ref;
}

int nmq_ring_peek_batch(nmq_ring *r, uint64_t *starts, uint64_t *ends, uint32_t max_n) {
    CONSUMER_ENTER(r);
    if (max_n > NMQ_MAX_BATCH) return NMQ_EINVAL;
    uint32_t n = 0;
    while (n < max_n) {
        int64_t ref = next_record(r);
        if (ref <= 0) {
            if (ref == NMQ_AGAIN || n) break;
            return (int)ref;
        }
        uint32_t len = (uint32_t)(ref & REF_MASK);
        starts[n] = (uint64_t)(ref >> NMQ_REF_LEN_BITS);
        ends[n] = starts[n] + len;
        consume(r, len);
        n++;
    }
    return (int)n;
}

int nmq_ring_pop(nmq_ring *r, void *out, uint32_t out_cap) {
    CONSUMER_ENTER(r);
    int64_t ref = next_record(r);
    if (ref <= 0) return (int)ref;
    uint32_t len = (uint32_t)(ref & REF_MASK);
    if (len > out_cap) return NMQ_EINVAL;
    if (len) memcpy(out, (uint8_t *)r->hdr + (ref >> NMQ_REF_LEN_BITS), len); /* out may be NULL */
    consume(r, len);
    nmq_ring_release(r);
    return (int)len;
}

int nmq_ring_pop_batch(nmq_ring *r, void *out, uint64_t out_cap, uint32_t *offsets, uint32_t max_n) {
    CONSUMER_ENTER(r);
    if (max_n > NMQ_MAX_BATCH) return NMQ_EINVAL;
    uint8_t *dst = out;
    uint64_t used = 0;
    uint32_t n = 0;
    offsets[0] = 0;
    while (n < max_n) {
        int64_t ref = next_record(r);
        if (ref <= 0) {
            if (ref == NMQ_AGAIN || n) break;
            return (int)ref;
        }
        uint32_t len = (uint32_t)(ref & REF_MASK);
        if (used + len > out_cap || used + len > UINT32_MAX) {
            if (n == 0) return NMQ_EINVAL;
            break;
        }
        if (len) memcpy(dst + used, (uint8_t *)r->hdr + (ref >> NMQ_REF_LEN_BITS), len);
        used += len;
        consume(r, len);
        offsets[++n] = (uint32_t)used;
    }
    if (n) nmq_ring_release(r);
    return (int)n;
}

/* ----------------------------------------------------------------- blocking ---- */

enum { CHECK_EVERY_NS = 2000000 }; /* peer liveness and clock checks while waiting */

static int readable(nmq_ring *r) {
    /* A1 (acquire): pairs with R1. */
    return atomic_load_explicit(&r->hdr->head, NMQ_ACQUIRE) != r->c.tail;
}

static int writable(nmq_ring *r, uint64_t total) {
    uint64_t pos = r->p.head & r->mask;
    uint64_t to_end = r->cap - pos;
    /* Progress is possible when the record fits, or when a PAD to the end fits. */
    uint64_t need = to_end < total ? to_end : total;
    /* A2 (acquire): pairs with R2. */
    uint64_t tail = atomic_load_explicit(&r->hdr->tail, NMQ_ACQUIRE);
    return r->p.head + need - tail <= r->cap;
}

static void futex_sleep(_Atomic uint32_t *word, int64_t ns) {
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    syscall(SYS_futex, word, FUTEX_WAIT, 1, &ts, NULL, 0);
}

/* Wait until ready(r, arg), with the handle's strategy. The peer's slot is checked
 * every CHECK_EVERY_NS: closed → NMQ_ECLOSED, dead → NMQ_EPEERDEAD (after one last
 * readiness check, so the consumer drains what the peer published first). */
static int wait_for(nmq_ring *r, int consumer, uint64_t total, int64_t timeout_ns) {
    struct nmq_slot *peer = consumer ? &r->hdr->producer : &r->hdr->consumer;
    _Atomic uint32_t *word = consumer ? &r->hdr->cons_sleep : &r->hdr->prod_sleep;
    int64_t start = nmq_now_ns();
    int64_t deadline = timeout_ns < 0 ? INT64_MAX : start + timeout_ns;
    int64_t next_check = start; /* check the peer at once: a dead peer must not cost a timeout */
    int64_t spin_until = start + (int64_t)r->spin_ns;
    for (unsigned iter = 0;; iter++) {
        if (consumer ? readable(r) : writable(r, total)) return NMQ_OK;
        if ((iter & 63) != 0 && r->wait == NMQ_WAIT_SPIN) {
            nmq_cpu_relax();
            continue;
        }
        int64_t now = nmq_now_ns();
        if (now >= next_check) {
            int st = slot_state(peer);
            if (st == NMQ_PEER_CLOSED || st == NMQ_PEER_DEAD) {
                if (consumer ? readable(r) : 0) return NMQ_OK;
                return st == NMQ_PEER_CLOSED
                           ? nmq_set_error(NMQ_ECLOSED, "the %s closed the ring", consumer ? "producer" : "consumer")
                           : nmq_set_error(NMQ_EPEERDEAD, "the %s (pid %d) died", consumer ? "producer" : "consumer",
                                           (int)atomic_load_explicit(&peer->pid, memory_order_relaxed));
            }
            next_check = now + CHECK_EVERY_NS;
        }
        if (now >= deadline) return NMQ_TIMEOUT;
        if (r->wait == NMQ_WAIT_SPIN || now < spin_until) {
            nmq_cpu_relax();
        } else if (r->wait == NMQ_WAIT_YIELD) {
            sched_yield();
        } else {
            /* W2 (acq_rel RMW): announce the sleep, then re-check; pairs with W1 in wake_peer(). */
            atomic_exchange_explicit(word, 1, memory_order_acq_rel);
            if (consumer ? readable(r) : writable(r, total)) {
                atomic_store_explicit(word, 0, memory_order_relaxed);
                return NMQ_OK;
            }
            int64_t slice = next_check - now;
            if (deadline - now < slice) slice = deadline - now;
            if (slice > 0) futex_sleep(word, slice);
        }
    }
}

int nmq_ring_wait_readable(nmq_ring *r, int64_t timeout_ns) {
    CONSUMER_ENTER(r);
    return wait_for(r, 1, 0, timeout_ns);
}

int nmq_ring_wait_writable(nmq_ring *r, uint32_t len, int64_t timeout_ns) {
    int rc = producer_ready(r);
    if (rc) return rc;
    if (len > r->max_payload)
        return nmq_set_error(NMQ_ETOOBIG, "payload of %u bytes exceeds the ring's limit of %u bytes", len,
                             r->max_payload);
    return wait_for(r, 0, rec_total(len), timeout_ns);
}

/* ------------------------------------------------------------------- state ---- */

uint64_t nmq_ring_capacity(const nmq_ring *r) { return r->cap; }
uint32_t nmq_ring_max_payload(const nmq_ring *r) { return r->max_payload; }

uint64_t nmq_ring_count(const nmq_ring *r) {
    uint64_t popped = atomic_load_explicit(&r->hdr->popped, memory_order_relaxed);
    uint64_t pushed = atomic_load_explicit(&r->hdr->pushed, memory_order_relaxed);
    return pushed > popped ? pushed - popped : 0;
}

uint64_t nmq_ring_used_bytes(const nmq_ring *r) {
    uint64_t tail = atomic_load_explicit(&r->hdr->tail, memory_order_acquire);
    uint64_t head = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
    return head - tail;
}

int nmq_ring_wait_strategy(const nmq_ring *r) { return r->wait; }
uint32_t nmq_ring_spin_ns(const nmq_ring *r) { return r->spin_ns; }
