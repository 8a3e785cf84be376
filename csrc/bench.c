/*
 * bench.c — benchmark support: HDR bucket counting and the C-level ring loops.
 *
 * Why C: the Python hdrhistogram package's record_value costs ≈ 1.1 µs a call, too
 * slow per message at 100 k msg/s and more, so samples are bucketed here (a few ns
 * each) with the package's own index math and the Python histogram is rebuilt from
 * the non-zero buckets afterwards. And the ring's floor — what it costs without any
 * Python in the loop (RTT/2 ≈ 100-300 ns) — can only be measured by loops that make
 * no Python call: cffi alone costs 55-120 ns a call.
 *
 * HDR counts (the layout of hdrh/histogram.py, lowest 1 => unit_magnitude 0):
 *
 *   index:   0 ............ 1023 | 1024 ......... 2047 | 2048 ........ 3071 | ...
 *   values:  0, 1, ..., 1023     | 1024, ..., 2047     | 2048, 2050, ..., 4094
 *            bucket 0 (both halves, step 1)            | bucket 1 (step 2)  | bucket b: step 2^b
 *
 *   counts_index(v) = ((b + 1) << half_mag) + (v >> (b + unit_mag)) - half_count, where
 *   b = 64 - clz(v | sub_bucket_mask) - unit_mag - (half_mag + 1).
 *   A value is recorded if and only if v >= 0 and its index < counts_len; every other
 *   value is counted as dropped (the Python package drops it silently).
 *
 * The loops only use the ring's public API (nanomq.h). Both sides run as two threads
 * or as two forked children; the rings, a control block and the counts live in
 * MAP_SHARED|MAP_ANONYMOUS memory mapped before the fork, so children report through
 * it and _exit() without touching Python. Handles are opened before the fork, so a
 * child never allocates (another thread of the parent may have held malloc's lock).
 */
#include "nmq_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ HDR counts ---- */

int nmq_hdr_layout_init(nmq_hdr_layout *l, int64_t lowest, int64_t highest, int significant_figures) {
    if (lowest < 1 || highest < 2 * lowest || significant_figures < 1 || significant_figures > 5)
        return nmq_set_error(NMQ_EINVAL,
                             "histogram range %lld..%lld with %d significant figures is invalid "
                             "(need lowest >= 1, highest >= 2 * lowest, figures 1..5)",
                             (long long)lowest, (long long)highest, significant_figures);
    memset(l, 0, sizeof *l);
    l->lowest = lowest;
    l->highest = highest;
    l->significant_figures = significant_figures;
    l->unit_magnitude = 63 - __builtin_clzll((uint64_t)lowest);
    /* smallest power of two >= 2 * 10^figures, as ceil(log2(...)) in the package */
    int64_t largest_single_unit = 2;
    for (int i = 0; i < significant_figures; i++) largest_single_unit *= 10;
    int32_t count_mag = 0;
    while ((1LL << count_mag) < largest_single_unit) count_mag++;
    l->sub_bucket_half_count_magnitude = count_mag > 1 ? count_mag - 1 : 0;
    l->sub_bucket_count = 1LL << (l->sub_bucket_half_count_magnitude + 1);
    l->sub_bucket_half_count = l->sub_bucket_count / 2;
    l->sub_bucket_mask = (l->sub_bucket_count - 1) << l->unit_magnitude;
    /* get_bucket_count(): double until the value fits, with the package's overflow guard */
    uint64_t smallest_untrackable = (uint64_t)l->sub_bucket_count << l->unit_magnitude;
    int32_t buckets = 1;
    while (smallest_untrackable <= (uint64_t)highest) {
        if (smallest_untrackable > (uint64_t)INT64_MAX / 2) {
            buckets++;
            break;
        }
        smallest_untrackable <<= 1;
        buckets++;
    }
    l->bucket_count = buckets;
    l->counts_len = (int64_t)(buckets + 1) * l->sub_bucket_half_count;
    return NMQ_OK;
}

static inline int64_t hdr_index(const nmq_hdr_layout *l, int64_t value) {
    if (NMQ_UNLIKELY(value < 0)) return -1;
    int pow2ceiling = 64 - __builtin_clzll((uint64_t)value | (uint64_t)l->sub_bucket_mask);
    int bucket = pow2ceiling - l->unit_magnitude - (l->sub_bucket_half_count_magnitude + 1);
    int64_t sub = value >> (bucket + l->unit_magnitude);
    int64_t index = ((int64_t)(bucket + 1) << l->sub_bucket_half_count_magnitude) + sub - l->sub_bucket_half_count;
    return index < l->counts_len ? index : -1;
}

int64_t nmq_hdr_index(const nmq_hdr_layout *l, int64_t value) { return hdr_index(l, value); }

uint64_t nmq_hdr_record(const nmq_hdr_layout *l, uint64_t *counts, const int64_t *values, uint64_t n) {
    uint64_t dropped = 0;
    for (uint64_t i = 0; i < n; i++) {
        int64_t index = hdr_index(l, values[i]);
        if (NMQ_LIKELY(index >= 0))
            counts[index]++;
        else
            dropped++;
    }
    return dropped;
}

/* --------------------------------------------------------- shared control ---- */

enum {
    SIDE_PRODUCER = 0,
    SIDE_CONSUMER = 1,
    STAMP_BYTES = 16,          /* send time + sequence number */
    CHECK_EVERY = 1 << 14,     /* idle spins between abort/deadline checks */
    BATCH_BYTES = 2 * NMQ_MAX_PAYLOAD,
    SIDE_BUF = 2 * BATCH_BYTES /* two batch buffers per side */
};

/* Lives in MAP_SHARED memory: the two sides meet here, and report here. */
struct control {
    _Atomic int32_t ready;  /* sides that reached the start line */
    _Atomic int32_t abort;  /* set by a side that failed, timed out, or by the parent */
    int32_t pinned[2];
    int32_t status[2];
    int64_t elapsed_ns;
    uint64_t messages;
    uint64_t received;
    uint64_t seq_errors;
    uint64_t dropped;
    int64_t deadline;       /* CLOCK_MONOTONIC ns */
    int64_t t0;             /* paced streams: when message 0 was due (set by the producer) */
};

struct job {
    const nmq_bench_params *p;
    const nmq_hdr_layout *l;
    struct control *ctl;
    uint64_t *counts;     /* shared counts (counts_len entries) or NULL */
    uint64_t *lag;        /* shared: measured send lag (counts_len entries) or NULL */
    uint64_t *lat_series; /* shared: intervals x counts_len latency counts, or NULL */
    uint64_t *lag_series; /* shared: intervals x counts_len send-lag counts, or NULL */
    uint32_t intervals;
    int64_t interval_ns;
    nmq_ring *tx[2];      /* per side: the handle it pushes on (NULL if none) */
    nmq_ring *rx[2];      /* per side: the handle it pops from */
    uint8_t *buf[2];      /* per side: SIDE_BUF bytes of scratch, mapped before any fork */
    int (*side[2])(struct job *);
};

static void pin(struct control *ctl, int side, int cpu) {
    if (cpu < 0) {
        ctl->pinned[side] = 1; /* nothing asked */
        return;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ctl->pinned[side] = sched_setaffinity(0, sizeof set, &set) == 0;
}

/* Both sides wait for each other here, so neither measures the other's start-up. */
static int start_line(struct control *ctl) {
    atomic_fetch_add_explicit(&ctl->ready, 1, memory_order_acq_rel);
    while (atomic_load_explicit(&ctl->ready, memory_order_acquire) < 2) {
        if (atomic_load_explicit(&ctl->abort, memory_order_relaxed)) return NMQ_ECLOSED;
        if (nmq_now_ns() > ctl->deadline) return NMQ_TIMEOUT;
        nmq_cpu_relax();
    }
    return NMQ_OK;
}

/* Called every CHECK_EVERY idle spins: the peer failed, or time is up? */
static int keep_waiting(struct control *ctl) {
    if (atomic_load_explicit(&ctl->abort, memory_order_relaxed)) return NMQ_ECLOSED;
    if (nmq_now_ns() > ctl->deadline) return NMQ_TIMEOUT;
    return NMQ_OK;
}

static int push_spin(struct control *ctl, nmq_ring *r, const void *data, uint32_t len) {
    for (uint32_t spins = 0;; spins++) {
        int rc = nmq_ring_push(r, data, len);
        if (NMQ_LIKELY(rc != NMQ_AGAIN)) return rc;
        if ((spins & (CHECK_EVERY - 1)) == CHECK_EVERY - 1 && (rc = keep_waiting(ctl)) != NMQ_OK) return rc;
        nmq_cpu_relax();
    }
}

static int pop_spin(struct control *ctl, nmq_ring *r, void *out, uint32_t cap) {
    for (uint32_t spins = 0;; spins++) {
        int rc = nmq_ring_pop(r, out, cap);
        if (NMQ_LIKELY(rc != NMQ_AGAIN)) return rc;
        if ((spins & (CHECK_EVERY - 1)) == CHECK_EVERY - 1 && (rc = keep_waiting(ctl)) != NMQ_OK) return rc;
        nmq_cpu_relax();
    }
}

static inline void record(const nmq_hdr_layout *l, uint64_t *counts, int64_t v, uint64_t *dropped) {
    int64_t index = hdr_index(l, v);
    if (NMQ_LIKELY(index >= 0))
        counts[index]++;
    else
        (*dropped)++;
}

/* --------------------------------------------------------------- ping-pong ---- */

/* Producer side: push seq i on A, wait for it back on B, record RTT/2. */
static int pingpong_initiator(struct job *j) {
    const nmq_bench_params *p = j->p;
    struct control *ctl = j->ctl;
    uint8_t *out = j->buf[SIDE_PRODUCER], *in = out + BATCH_BYTES;
    memset(out, 0xA5, p->size);
    uint64_t total = p->warmup + p->count, errors = 0, dropped = 0;
    int64_t begin = 0;
    int rc = start_line(ctl);
    if (rc) return rc;
    begin = nmq_now_ns();
    for (uint64_t i = 0; i < total; i++) {
        if (i == p->warmup) begin = nmq_now_ns();
        if (p->size >= STAMP_BYTES) nmq_st64(out + 8, i);
        int64_t t0 = nmq_now_ns();
        if ((rc = push_spin(ctl, j->tx[SIDE_PRODUCER], out, p->size)) < 0) return rc;
        if ((rc = pop_spin(ctl, j->rx[SIDE_PRODUCER], in, BATCH_BYTES)) < 0) return rc;
        int64_t t1 = nmq_now_ns();
        if ((uint32_t)rc != p->size || (p->size >= STAMP_BYTES && nmq_ld64(in + 8) != i)) errors++;
        if (i >= p->warmup && j->counts) record(j->l, j->counts, (t1 - t0) / 2, &dropped);
    }
    ctl->elapsed_ns = nmq_now_ns() - begin;
    ctl->messages = p->count;
    ctl->received = total;
    ctl->seq_errors = errors;
    ctl->dropped = dropped;
    return NMQ_OK;
}

/* Consumer side: pop from A, push the same bytes back on B. */
static int pingpong_echo(struct job *j) {
    const nmq_bench_params *p = j->p;
    struct control *ctl = j->ctl;
    uint8_t *buf = j->buf[SIDE_CONSUMER];
    uint64_t total = p->warmup + p->count;
    int rc = start_line(ctl);
    if (rc) return rc;
    for (uint64_t i = 0; i < total; i++) {
        int n = pop_spin(ctl, j->rx[SIDE_CONSUMER], buf, BATCH_BYTES);
        if (n < 0) return n;
        if ((rc = push_spin(ctl, j->tx[SIDE_CONSUMER], buf, (uint32_t)n)) < 0) return rc;
    }
    return NMQ_OK;
}

/* --------------------------------------------------------------- streaming ---- */

/* The interval of message i of a paced schedule (the last one takes any later message). */
static inline size_t series_slot(const struct job *j, uint64_t i, double interval) {
    uint64_t k = (uint64_t)((int64_t)((double)i * interval) / j->interval_ns);
    if (k >= j->intervals) k = j->intervals - 1;
    return (size_t)k * (size_t)j->l->counts_len;
}


static int stream_producer(struct job *j) {
    const nmq_bench_params *p = j->p;
    struct control *ctl = j->ctl;
    nmq_ring *r = j->tx[SIDE_PRODUCER];
    uint8_t *buf = j->buf[SIDE_PRODUCER]; /* batch * size <= BATCH_BYTES (checked) */
    uint32_t lens[NMQ_MAX_BATCH];
    uint32_t batch = p->batch ? p->batch : 1;
    uint64_t total = p->warmup + p->count;
    int stamp = p->size >= STAMP_BYTES;
    memset(buf, 0x5A, (size_t)batch * p->size);
    for (uint32_t k = 0; k < batch; k++) lens[k] = p->size;
    int rc = start_line(ctl);
    if (rc) return rc;
    int64_t t0 = nmq_now_ns() + 1000000; /* paced: the first intended send is 1 ms after the start */
    double interval = p->rate > 0 ? 1e9 / p->rate : 0;
    uint64_t dropped = 0;
    ctl->t0 = t0; /* read by the parent after both sides ended */
    for (uint64_t i = 0; i < total;) {
        uint32_t n = total - i < batch ? (uint32_t)(total - i) : batch;
        if (interval > 0) {
            int64_t intended = t0 + (int64_t)((double)i * interval);
            int64_t now;
            while ((now = nmq_now_ns()) < intended) nmq_cpu_relax();
            if (stamp) nmq_st64(buf, (uint64_t)intended);
            if (j->lag && i >= p->warmup) record(j->l, j->lag, now - intended, &dropped);
            if (j->lag_series) record(j->l, j->lag_series + series_slot(j, i, interval), now - intended, &dropped);
        } else if (stamp && p->record_latency) {
            nmq_st64(buf, (uint64_t)nmq_now_ns());
        }
        if (stamp) {
            for (uint32_t k = 0; k < n; k++) {
                uint8_t *rec = buf + (size_t)k * p->size;
                if (k) memcpy(rec, buf, 8); /* one send time for the whole batch */
                nmq_st64(rec + 8, i + k);
            }
        }
        if (batch == 1) {
            if ((rc = push_spin(ctl, r, buf, p->size)) < 0) return rc;
        } else {
            uint32_t done = 0;
            for (uint32_t spins = 0; done < n; spins++) {
                rc = nmq_ring_push_batch(r, buf + (size_t)done * p->size, lens, n - done);
                if (rc < 0) return rc;
                done += (uint32_t)rc;
                if (rc == 0) {
                    if ((spins & (CHECK_EVERY - 1)) == CHECK_EVERY - 1 && (rc = keep_waiting(ctl)) != NMQ_OK)
                        return rc;
                    nmq_cpu_relax();
                }
            }
        }
        i += n;
    }
    return NMQ_OK;
}

static int stream_consumer(struct job *j) {
    const nmq_bench_params *p = j->p;
    struct control *ctl = j->ctl;
    nmq_ring *r = j->rx[SIDE_CONSUMER];
    uint8_t *buf = j->buf[SIDE_CONSUMER];
    uint32_t offsets[NMQ_MAX_BATCH + 1];
    uint32_t batch = p->batch ? p->batch : 1;
    uint64_t total = p->warmup + p->count, got = 0, errors = 0, dropped = 0, at_begin = 0;
    int stamp = p->size >= STAMP_BYTES;
    int latency = stamp && p->record_latency && j->counts;
    int series = stamp && p->rate > 0 && j->lat_series; /* counted apart: `dropped` is the result's */
    double interval = p->rate > 0 ? 1e9 / p->rate : 0;
    uint64_t series_dropped = 0;
    int rc = start_line(ctl);
    if (rc) return rc;
    int64_t begin = nmq_now_ns(), now = begin;
    while (got < total) {
        uint32_t n;
        if (batch == 1) {
            rc = pop_spin(ctl, r, buf, BATCH_BYTES);
            if (rc < 0) return rc;
            offsets[0] = 0;
            offsets[1] = (uint32_t)rc;
            n = 1;
        } else {
            for (uint32_t spins = 0;; spins++) {
                rc = nmq_ring_pop_batch(r, buf, BATCH_BYTES, offsets, batch);
                if (rc != 0) break;
                if ((spins & (CHECK_EVERY - 1)) == CHECK_EVERY - 1 && (rc = keep_waiting(ctl)) != NMQ_OK) break;
                nmq_cpu_relax();
            }
            if (rc < 0) return rc;
            n = (uint32_t)rc;
        }
        if (latency || series || got + n >= total || (got < p->warmup && got + n >= p->warmup)) now = nmq_now_ns();
        for (uint32_t k = 0; k < n; k++) {
            const uint8_t *rec = buf + offsets[k];
            uint64_t seq = got + k;
            if (offsets[k + 1] - offsets[k] != p->size || (stamp && nmq_ld64(rec + 8) != seq)) {
                errors++;
                continue;
            }
            if (latency && seq >= p->warmup) record(j->l, j->counts, now - (int64_t)nmq_ld64(rec), &dropped);
            if (series) record(j->l, j->lat_series + series_slot(j, seq, interval), now - (int64_t)nmq_ld64(rec),
                               &series_dropped);
        }
        if (got < p->warmup && got + n >= p->warmup) {
            begin = now; /* the window starts after the last warm-up message */
            at_begin = got + n;
        }
        got += n;
    }
    ctl->elapsed_ns = now - begin;
    ctl->messages = got - at_begin;
    ctl->received = got;
    ctl->seq_errors = errors;
    ctl->dropped = dropped;
    return NMQ_OK;
}

/* ------------------------------------------------------------------ runner ---- */

struct thread_arg {
    struct job *job;
    int side;
};

static int run_side(struct job *j, int side) {
    pin(j->ctl, side, side == SIDE_PRODUCER ? j->p->cpu_producer : j->p->cpu_consumer);
    int rc = j->side[side](j);
    j->ctl->status[side] = rc;
    if (rc < 0) atomic_store_explicit(&j->ctl->abort, 1, memory_order_relaxed);
    return rc;
}

static void *thread_main(void *arg) {
    struct thread_arg *a = arg;
    run_side(a->job, a->side);
    return NULL;
}

static int pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* Wait for both children; when one dies abnormally, tell the other to stop. */
static void reap(struct control *ctl, pid_t pids[2]) {
    int fds[2] = {pidfd_open(pids[0]), pidfd_open(pids[1])};
    int left = 2;
    while (left > 0) {
        pid_t which = -1;
        if (fds[0] >= 0 && fds[1] >= 0) {
            struct pollfd pfd[2] = {{.fd = pids[0] ? fds[0] : -1, .events = POLLIN},
                                    {.fd = pids[1] ? fds[1] : -1, .events = POLLIN}};
            if (poll(pfd, 2, -1) < 0 && errno != EINTR) break;
            for (int s = 0; s < 2; s++)
                if (pids[s] && (pfd[s].revents & (POLLIN | POLLHUP))) which = s;
        } else {
            which = pids[0] ? 0 : 1; /* no pidfd: wait in order; the survivor times out if needed */
        }
        if (which < 0) continue;
        int wstatus = 0;
        while (waitpid(pids[which], &wstatus, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
            if (ctl->status[which] == 0) ctl->status[which] = NMQ_EPEERDEAD;
            atomic_store_explicit(&ctl->abort, 1, memory_order_relaxed);
        }
        pids[which] = 0;
        left--;
    }
    for (int s = 0; s < 2; s++)
        if (fds[s] >= 0) close(fds[s]);
}

static int run_job(struct job *j) {
    struct control *ctl = j->ctl;
    if (j->p->mode == NMQ_BENCH_THREADS) {
        pthread_t th[2];
        struct thread_arg args[2] = {{j, SIDE_PRODUCER}, {j, SIDE_CONSUMER}};
        int started = 0;
        for (; started < 2; started++)
            if (pthread_create(&th[started], NULL, thread_main, &args[started]) != 0) break;
        if (started < 2) {
            ctl->status[started] = nmq_set_error(NMQ_ENOMEM, "pthread_create failed: %s", strerror(errno));
            atomic_store_explicit(&ctl->abort, 1, memory_order_relaxed);
        }
        for (int s = 0; s < started; s++) pthread_join(th[s], NULL);
    } else {
        pid_t pids[2] = {0, 0};
        int started = 0;
        for (; started < 2; started++) {
            pid_t pid = fork();
            if (pid == 0) { /* child: C only, no atexit, no Python; Ctrl-C ends it (Python's handler would not) */
                signal(SIGINT, SIG_DFL);
                _exit(run_side(j, started) < 0 ? 1 : 0);
            }
            if (pid < 0) break;
            pids[started] = pid;
        }
        if (started < 2) {
            ctl->status[started] = nmq_set_error(NMQ_ENOMEM, "fork failed: %s", strerror(errno));
            atomic_store_explicit(&ctl->abort, 1, memory_order_relaxed);
        }
        reap(ctl, pids);
    }
    /* the first failure is the cause; the other side's ECLOSED is its echo */
    for (int s = 0; s < 2; s++)
        if (ctl->status[s] < 0 && ctl->status[s] != NMQ_ECLOSED) return ctl->status[s];
    return ctl->status[0] < 0 ? ctl->status[0] : ctl->status[1];
}

static void *map_shared(size_t size) {
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? NULL : m;
}

/* A ring in its own shared mapping with a producer and a consumer handle. */
struct bench_ring {
    void *mem;
    uint64_t size;
    nmq_ring *prod, *cons;
};

static int ring_make(struct bench_ring *br, uint64_t capacity) {
    memset(br, 0, sizeof *br);
    br->size = nmq_ring_region_size(capacity);
    if (br->size == 0)
        return nmq_set_error(NMQ_EINVAL, "ring capacity %llu is not a power of two in range",
                             (unsigned long long)capacity);
    if (!(br->mem = map_shared(br->size)))
        return nmq_set_error(NMQ_ENOMEM, "mmap of %llu bytes failed: %s", (unsigned long long)br->size,
                             strerror(errno));
    int rc = nmq_ring_init(br->mem, br->size, capacity);
    if (!rc) rc = nmq_ring_open(br->mem, br->size, NMQ_WAIT_SPIN, 0, &br->prod);
    if (!rc) rc = nmq_ring_open(br->mem, br->size, NMQ_WAIT_SPIN, 0, &br->cons);
    return rc;
}

static void ring_drop(struct bench_ring *br) {
    if (br->prod) nmq_ring_free(br->prod);
    if (br->cons) nmq_ring_free(br->cons);
    if (br->mem) munmap(br->mem, br->size);
}

struct series_out {
    uint64_t *lag, *lat_series, *lag_series;
    uint32_t intervals;
    int64_t interval_ns;
    int64_t *t0_out;
};

static int bench_run(const nmq_bench_params *p, const nmq_hdr_layout *l, uint64_t *counts,
                     nmq_bench_result *res, int pingpong, const struct series_out *so) {
    memset(res, 0, sizeof *res);
    if (p->mode != NMQ_BENCH_THREADS && p->mode != NMQ_BENCH_PROCESSES)
        return res->status = nmq_set_error(NMQ_EINVAL, "mode %d is not threads (0) or processes (1)", p->mode);
    if (p->size > NMQ_MAX_PAYLOAD)
        return res->status = nmq_set_error(NMQ_EINVAL, "size %u exceeds %d bytes", p->size, NMQ_MAX_PAYLOAD);
    uint32_t batch = p->batch ? p->batch : 1;
    if (batch > NMQ_MAX_BATCH || (uint64_t)batch * p->size > BATCH_BYTES ||
        (pingpong && batch != 1) || (p->rate > 0 && batch != 1) || p->rate < 0)
        return res->status = nmq_set_error(NMQ_EINVAL,
                                           "batch %u of %u-byte records is invalid (1..%d records, at most "
                                           "%d bytes a batch; 1 for ping-pong and paced runs)",
                                           batch, p->size, NMQ_MAX_BATCH, BATCH_BYTES);
    int want_series = so && (so->lag || so->lat_series || so->lag_series);
    if ((counts || want_series) && (!l || l->counts_len <= 0))
        return res->status = nmq_set_error(NMQ_EINVAL, "counts given without a histogram layout");
    if (want_series && (p->rate <= 0 || so->intervals == 0 || so->intervals > 100000 || so->interval_ns <= 0))
        return res->status = nmq_set_error(NMQ_EINVAL,
                                           "series need a paced run (rate %g) and 1..100000 intervals "
                                           "(%u) of a positive length (%lld ns)",
                                           p->rate, so->intervals, (long long)so->interval_ns);
    uint64_t capacity = p->capacity ? p->capacity : 1ULL << 20;

    size_t ncounts = counts ? (size_t)l->counts_len : 0;
    size_t clen = want_series ? (size_t)l->counts_len : 0;
    size_t nlag = want_series && so->lag ? clen : 0;
    size_t nlat = want_series && so->lat_series ? clen * so->intervals : 0;
    size_t nlags = want_series && so->lag_series ? clen * so->intervals : 0;
    size_t ctl_bytes = (sizeof(struct control) + 63) & ~(size_t)63;
    size_t shared_bytes =
        ctl_bytes + 2 * (size_t)SIDE_BUF + (ncounts + nlag + nlat + nlags) * sizeof(uint64_t);
    uint8_t *shared = map_shared(shared_bytes);
    if (!shared)
        return res->status = nmq_set_error(NMQ_ENOMEM, "mmap of %zu bytes failed: %s", shared_bytes,
                                           strerror(errno));
    struct control *ctl = (struct control *)shared; /* zero-filled by mmap */
    int64_t timeout = p->timeout_ns > 0 ? p->timeout_ns : 60LL * 1000000000;
    ctl->deadline = nmq_now_ns() + timeout;

    struct bench_ring a, b;
    int rc = ring_make(&a, capacity);
    if (!rc && pingpong) rc = ring_make(&b, capacity);
    else memset(&b, 0, sizeof b);
    if (!rc) {
        uint8_t *bufs = shared + ctl_bytes;
        struct job j = {.p = p, .l = l, .ctl = ctl, .buf = {bufs, bufs + SIDE_BUF}};
        uint64_t *arrays = (uint64_t *)(bufs + 2 * (size_t)SIDE_BUF);
        j.counts = counts ? arrays : NULL;
        j.lag = nlag ? arrays + ncounts : NULL;
        j.lat_series = nlat ? arrays + ncounts + nlag : NULL;
        j.lag_series = nlags ? arrays + ncounts + nlag + nlat : NULL;
        if (want_series) {
            j.intervals = so->intervals;
            j.interval_ns = so->interval_ns;
        }
        j.tx[SIDE_PRODUCER] = a.prod;
        j.rx[SIDE_CONSUMER] = a.cons;
        if (pingpong) {
            j.tx[SIDE_CONSUMER] = b.prod;
            j.rx[SIDE_PRODUCER] = b.cons;
            j.side[SIDE_PRODUCER] = pingpong_initiator;
            j.side[SIDE_CONSUMER] = pingpong_echo;
        } else {
            j.side[SIDE_PRODUCER] = stream_producer;
            j.side[SIDE_CONSUMER] = stream_consumer;
        }
        rc = run_job(&j);
        res->elapsed_ns = ctl->elapsed_ns;
        res->messages = ctl->messages;
        res->received = ctl->received;
        res->seq_errors = ctl->seq_errors;
        res->dropped = ctl->dropped;
        res->pinned = ctl->pinned[0] && ctl->pinned[1];
        if (counts)
            for (size_t i = 0; i < ncounts; i++) counts[i] += j.counts[i];
        for (size_t i = 0; i < nlag; i++) so->lag[i] += j.lag[i];
        for (size_t i = 0; i < nlat; i++) so->lat_series[i] += j.lat_series[i];
        for (size_t i = 0; i < nlags; i++) so->lag_series[i] += j.lag_series[i];
        if (so && so->t0_out) *so->t0_out = ctl->t0;
        if (rc == NMQ_TIMEOUT)
            nmq_set_error(rc, "benchmark timed out after %lld ms", (long long)(timeout / 1000000));
        else if (rc == NMQ_EPEERDEAD)
            nmq_set_error(rc, "a benchmark child process died");
    }
    ring_drop(&a);
    ring_drop(&b);
    munmap(shared, shared_bytes);
    return res->status = rc;
}

int nmq_bench_pingpong(const nmq_bench_params *p, const nmq_hdr_layout *l, uint64_t *counts,
                       nmq_bench_result *res) {
    return bench_run(p, l, counts, res, 1, NULL);
}

int nmq_bench_stream(const nmq_bench_params *p, const nmq_hdr_layout *l, uint64_t *counts,
                     nmq_bench_result *res) {
    return bench_run(p, l, counts, res, 0, NULL);
}

int nmq_bench_stream_series(const nmq_bench_params *p, const nmq_hdr_layout *l, uint64_t *counts,
                            uint64_t *lag, uint64_t *lat_series, uint64_t *lag_series, uint32_t intervals,
                            int64_t interval_ns, int64_t *t0_out, nmq_bench_result *res) {
    struct series_out so = {lag, lat_series, lag_series, intervals, interval_ns, t0_out};
    return bench_run(p, l, counts, res, 0, &so);
}

int64_t nmq_bench_spin_until(int64_t due_ns) {
    int64_t now;
    while ((now = nmq_now_ns()) < due_ns) sched_yield(); /* any runnable task of this CPU goes first */
    return now;
}
