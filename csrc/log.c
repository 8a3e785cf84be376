/*
 * log.c — the hot loops of the segmented write-ahead log (nanomq/log/).
 *
 * Why C: one append from Python must cost about a microsecond (target ≥ 1 M rec/s one
 * call each), so encoding the 64-byte header, the CRC32C, the copy into the mapped
 * active segment, the offset stamp and the sparse-index entry happen in one cffi call
 * with no system call and no Python object; a batch of 256 is one call too. Recovery and
 * index rebuilds validate every record of a segment (≥ 1 GB/s target): a Python loop over
 * records runs at a few MB/s. The search past a damaged record for the next valid one
 * tries every 8-byte position, which only a C loop can do at disk speed.
 *
 * The segment file (little-endian; docs/FORMAT.md has the byte drawings):
 *
 *   0    +------------------------------------------------------------------+
 *        | magic "NMQSEG01" | version u32 | header_bytes u32 (64)             |
 *   16   | base_offset u64  | created_ns i64 | segment_bytes u64            |
 *   40   | reserved (20 zero bytes)                        | crc32c u32 [0,60) |
 *   64   +------------------------------------------------------------------+
 *        | records in the record format (nanomq.record), offsets base, base+1…|
 *        | then zeros (preallocated space) up to the end of the file          |
 *        +------------------------------------------------------------------+
 *
 * The active segment is preallocated with posix_fallocate (a full disk is ENOSPC at
 * roll time, never SIGBUS) and mapped shared for its whole file length — never past
 * the end of the file. Python never sees the mapping: reads use pread, so unmapping
 * never races a Python view.
 *
 * A sparse index entry {u32 offset - base, u32 position} is made for the first record
 * of a segment and then for the first record at least `interval` bytes after the
 * previous entry.
 *
 * Thread-safety: the writer (nmq_seg) is one per log, lives as long as the log, and
 * holds its mutex in every call, so appends need no Python lock; a roll detaches the
 * old segment and attaches the new one (appends in between get NMQ_ECLOSED and retry
 * under the log's Python lock).
 */
#include "nmq_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* The record format (docs/FORMAT.md, csrc/record.c): what the log needs of it. */
#define REC_HDR ((uint32_t)NMQ_RECORD_HEADER)
#define REC_MAGIC ((uint32_t)NMQ_RECORD_MAGIC)
#define REC_MAX_RAW ((uint32_t)NMQ_RECORD_MAX_VALUE)
#define REC_MAX_KEY ((uint32_t)NMQ_RECORD_MAX_KEY)

struct nmq_seg {
    pthread_mutex_t mu;    /* every call on the writer holds it (uncontended: ~20 ns) */
    int attached;          /* 0: no segment mapped (rolling, closed, failed) */
    int fd;
    int populate;          /* 0 after a failed pre-write: plain faults from then on */
    uint32_t interval;
    uint8_t *map;          /* shared mapping of the whole file */
    uint64_t size;         /* file length == mapping length */
    uint64_t pos;          /* end of the last record */
    uint64_t base_offset;
    uint64_t next_offset;
    int64_t max_timestamp; /* INT64_MIN while empty */
    uint32_t *index;       /* index_count pairs {rel offset, position} */
    uint64_t index_count;
    uint64_t index_cap;
    uint64_t index_pos;    /* position of the last entry */
    uint64_t populated;    /* [pos, populated) was pre-written with zeros */
    uint8_t *scratch;      /* non-NULL (pwrite mode): appends are encoded here and pwrite()n */
};

/* First touch of a page of a fallocated file through the mapping costs ≈ 6-10 µs here
 * (ext4 converts the unwritten extent page by page): 64 KiB appends ran at 0.4-0.67 GB/s,
 * and MADV_POPULATE_WRITE was no faster (0.32 GB/s). pwrite() of zeros over the same range
 * runs at 4.6 GB/s, after which copies into the mapping run at 8-9 GB/s (2.9 GB/s both
 * together). So the writer pre-writes zeros POPULATE_AHEAD bytes ahead of itself: one
 * system call per window, never one per append. The range is past the last record, where
 * the file is zero anyway. */
#define POPULATE_AHEAD (1u << 20)
static const uint8_t zeros[POPULATE_AHEAD];

static void populate_to(nmq_seg *s, uint64_t need) {
    /* Never at or before pos: records live there (pwrite mode advances pos on its own). */
    if (s->populated < s->pos) s->populated = s->pos;
    uint64_t to = need + POPULATE_AHEAD;
    if (to > s->size) to = s->size;
    if (!s->populate) {
        s->populated = s->size;
        return;
    }
    while (s->populated < to) {
        uint64_t n = to - s->populated;
        if (n > sizeof zeros) n = sizeof zeros;
        ssize_t w = pwrite(s->fd, zeros, n, (off_t)s->populated);
        if (w <= 0) { /* the mapping still works, through page faults */
            s->populate = 0;
            s->populated = s->size;
            return;
        }
        s->populated += (uint64_t)w;
    }
}

static inline uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

static int64_t realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Check the record at p (avail bytes readable): NMQ_LOG_SCAN_END when valid (its padded
 * size in *size), otherwise the reason it is not a record. Offsets are not checked here.
 * The rules are record.c's (nmq_record_check_at); the NMQ_LOG_SCAN_* codes equal the
 * NMQ_SCAN_* ones (checked below). */
_Static_assert((int)NMQ_LOG_SCAN_ZERO == (int)NMQ_SCAN_ZERO && (int)NMQ_LOG_SCAN_SHORT == (int)NMQ_SCAN_SHORT &&
                   (int)NMQ_LOG_SCAN_BAD_HEADER == (int)NMQ_SCAN_BAD_HEADER &&
                   (int)NMQ_LOG_SCAN_BAD_CRC == (int)NMQ_SCAN_BAD_CRC && (int)NMQ_LOG_SCAN_END == (int)NMQ_SCAN_END,
               "log scan codes are the record scan codes");
static inline int check_record(const uint8_t *p, uint64_t avail, uint64_t *size) {
    return nmq_record_check_at(p, avail, size);
}

static inline void index_add(uint32_t *index, uint64_t cap, uint64_t *count, uint64_t *last_pos,
                             uint64_t rel, uint64_t pos, uint32_t interval) {
    if (*count == 0 || pos >= *last_pos + interval) {
        if (*count < cap && index) {
            index[2 * *count] = (uint32_t)rel;
            index[2 * *count + 1] = (uint32_t)pos;
            (*count)++;
            *last_pos = pos;
        }
    }
}

int nmq_log_scan(const void *buf, uint64_t len, uint64_t pos, uint64_t first_offset, int check_offsets,
                 uint64_t base_offset, uint32_t interval, uint32_t *index, uint64_t index_cap,
                 uint64_t max_records, nmq_log_scan_result *out) {
    const uint8_t *b = buf;
    uint64_t count = 0, next = first_offset, icount = out->index_count, ipos = out->index_pos;
    int64_t max_ts = out->max_timestamp;
    int status = NMQ_LOG_SCAN_END;
    if (interval == 0) interval = 1;
    while (pos < len && count < max_records) {
        uint64_t size = 0;
        status = check_record(b + pos, len - pos, &size);
        if (status != NMQ_LOG_SCAN_END) break;
        uint64_t off = nmq_ld64(b + pos);
        if (check_offsets && off != next) {
            status = NMQ_LOG_SCAN_BAD_OFFSET;
            break;
        }
        if (!check_offsets && count == 0) next = off;
        if (index && (off - base_offset > UINT32_MAX || pos > UINT32_MAX)) { /* not indexable: not ours */
            status = NMQ_LOG_SCAN_BAD_OFFSET;
            break;
        }
        index_add(index, index_cap, &icount, &ipos, off - base_offset, pos, interval);
        int64_t ts = (int64_t)nmq_ld64(b + pos + 32);
        if (ts > max_ts) max_ts = ts;
        next = off + 1;
        pos += size;
        count++;
    }
    out->count = count;
    out->end = pos;
    out->next_offset = next;
    out->max_timestamp = max_ts;
    out->index_count = icount;
    out->index_pos = ipos;
    out->status = status;
    return status;
}

int64_t nmq_log_find_next(const void *buf, uint64_t len, uint64_t from, uint64_t min_offset) {
    static const uint8_t zero[REC_HDR];
    const uint8_t *b = buf;
    for (uint64_t pos = align8(from); pos + REC_HDR <= len; pos += 8) {
        if (nmq_ld32(b + pos + 16) != REC_MAGIC) continue;
        uint64_t size, size2;
        if (check_record(b + pos, len - pos, &size) != NMQ_LOG_SCAN_END) continue;
        uint64_t off = nmq_ld64(b + pos);
        if (off < min_offset) continue;
        /* A record whose offset field was damaged (it is not under the CRC) is valid on its
         * own: accept a candidate only if the record after it, when there is one, carries
         * the next offset. */
        uint64_t nxt = pos + size;
        if (nxt + REC_HDR <= len && memcmp(b + nxt, zero, REC_HDR) != 0 &&
            (check_record(b + nxt, len - nxt, &size2) != NMQ_LOG_SCAN_END || nmq_ld64(b + nxt) != off + 1))
            continue;
        return (int64_t)pos;
    }
    return -1;
}

int64_t nmq_log_find_timestamp(const void *buf, uint64_t len, uint64_t pos, int64_t timestamp) {
    const uint8_t *b = buf;
    while (pos + REC_HDR <= len) {
        uint64_t size;
        if (check_record(b + pos, len - pos, &size) != NMQ_LOG_SCAN_END) return -1;
        if ((int64_t)nmq_ld64(b + pos + 32) >= timestamp) return (int64_t)pos;
        pos += size;
    }
    return -1;
}

int64_t nmq_log_index_floor(const uint32_t *index, uint64_t count, uint64_t rel, uint64_t *rel_out) {
    if (count == 0 || index[0] > rel) return -1;
    uint64_t lo = 0, hi = count; /* index[2*lo] <= rel < index[2*hi] */
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (index[2 * mid] <= rel)
            lo = mid;
        else
            hi = mid;
    }
    *rel_out = index[2 * lo];
    return index[2 * lo + 1];
}

void *nmq_log_map(int fd, uint64_t size, int writable) {
    if (size == 0) return NULL;
    void *p = mmap(NULL, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        nmq_set_error(NMQ_EINVAL, "mmap of %llu bytes failed: %s", (unsigned long long)size, strerror(errno));
        return NULL;
    }
    return p;
}

void nmq_log_unmap(void *p, uint64_t size) {
    if (p) munmap(p, size);
}

/* ---- the writer: the active segment ---- */

int nmq_seg_new(uint32_t interval, nmq_seg **out) {
    *out = NULL;
    if (interval == 0) return nmq_set_error(NMQ_EINVAL, "index interval must be > 0 bytes");
    nmq_seg *s = calloc(1, sizeof *s);
    if (!s) return nmq_set_error(NMQ_ENOMEM, "out of memory for a log writer");
    pthread_mutex_init(&s->mu, NULL);
    s->interval = interval;
    s->fd = -1;
    *out = s;
    return NMQ_OK;
}

void nmq_seg_free(nmq_seg *s) {
    if (!s) return;
    if (s->attached) nmq_log_unmap(s->map, s->size);
    pthread_mutex_destroy(&s->mu);
    free(s->scratch);
    free(s->index);
    free(s);
}

int nmq_seg_attach(nmq_seg *s, int fd, uint64_t size, uint64_t base_offset, uint64_t pos, uint64_t next_offset,
                   const uint32_t *index, uint64_t index_count, int64_t max_timestamp) {
    if (size < NMQ_LOG_SEGMENT_HEADER || size > UINT32_MAX || pos < NMQ_LOG_SEGMENT_HEADER || pos > size ||
        (pos & 7))
        return nmq_set_error(NMQ_EINVAL,
                             "segment of %llu bytes (write position %llu) is invalid: size must be %d to %llu "
                             "bytes and the position 8-aligned within it",
                             (unsigned long long)size, (unsigned long long)pos, NMQ_LOG_SEGMENT_HEADER,
                             (unsigned long long)UINT32_MAX);
    pthread_mutex_lock(&s->mu);
    int rc = NMQ_OK;
    uint64_t cap = size / s->interval + 2;
    if (s->attached) {
        rc = nmq_set_error(NMQ_ESTATE, "the log writer already has a segment attached");
        goto out;
    }
    if (cap > s->index_cap) {
        uint32_t *idx = realloc(s->index, cap * 8);
        if (!idx) {
            rc = nmq_set_error(NMQ_ENOMEM, "out of memory for a segment index of %llu entries",
                               (unsigned long long)cap);
            goto out;
        }
        s->index = idx;
        s->index_cap = cap;
    }
    if (index_count > s->index_cap) index_count = s->index_cap;
    uint8_t *map = nmq_log_map(fd, size, 1);
    if (!map) {
        rc = NMQ_EINVAL;
        goto out;
    }
    if (index_count && index) memcpy(s->index, index, index_count * 8); /* NULL: keep the entries */
    s->index_count = index_count;
    s->index_pos = index_count ? s->index[2 * (index_count - 1) + 1] : 0;
    s->map = map;
    s->fd = fd;
    s->size = size;
    s->pos = pos;
    s->base_offset = base_offset;
    s->next_offset = next_offset;
    s->max_timestamp = max_timestamp;
    s->populate = !s->scratch; /* pwrite mode never stores through the mapping */
    s->populated = pos;         /* never before pos: the records there are live */
    populate_to(s, pos);
    s->attached = 1;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void fill_info(const nmq_seg *s, nmq_seg_info *info) {
    info->attached = s->attached;
    info->base_offset = s->base_offset;
    info->pos = s->pos;
    info->next_offset = s->next_offset;
    info->max_timestamp = s->max_timestamp;
    info->index_count = s->index_count;
}

int nmq_seg_detach(nmq_seg *s, nmq_seg_info *info) {
    pthread_mutex_lock(&s->mu);
    fill_info(s, info);
    if (s->attached) nmq_log_unmap(s->map, s->size);
    s->attached = 0;
    s->map = NULL;
    pthread_mutex_unlock(&s->mu);
    return NMQ_OK;
}

void nmq_seg_get_info(nmq_seg *s, nmq_seg_info *info) {
    pthread_mutex_lock(&s->mu);
    fill_info(s, info);
    pthread_mutex_unlock(&s->mu);
}

uint64_t nmq_seg_copy_index(nmq_seg *s, uint32_t *out, uint64_t max_entries) {
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->index_count < max_entries ? s->index_count : max_entries;
    if (n) memcpy(out, s->index, n * 8);
    pthread_mutex_unlock(&s->mu);
    return n;
}

int64_t nmq_seg_index_floor(nmq_seg *s, uint64_t base_offset, uint64_t rel, uint64_t *rel_out) {
    pthread_mutex_lock(&s->mu);
    int64_t pos = s->base_offset != base_offset ? -2 : nmq_log_index_floor(s->index, s->index_count, rel, rel_out);
    pthread_mutex_unlock(&s->mu);
    return pos;
}

/* Encode one record at the write position (room already checked): record.c's writer. */
static inline void encode_at(nmq_seg *s, uint8_t *p, const uint8_t *value, uint32_t vlen, const uint8_t *key,
                             int32_t klen, int64_t ts, uint64_t producer_id, uint64_t sequence) {
    nmq_record_put(p, key, klen, value, vlen, vlen, NMQ_CODEC_NONE, ts, producer_id, sequence, s->next_offset);
}

/* The record is at s->pos now: index it and advance. */
static inline void advance(nmq_seg *s, uint64_t size, int64_t ts) {
    index_add(s->index, s->index_cap, &s->index_count, &s->index_pos, s->next_offset - s->base_offset, s->pos,
              s->interval);
    if (ts > s->max_timestamp) s->max_timestamp = ts;
    s->pos += size;
    s->next_offset++;
}

static inline void put_record(nmq_seg *s, const uint8_t *value, uint32_t vlen, const uint8_t *key, int32_t klen,
                              int64_t ts, uint64_t producer_id, uint64_t sequence) {
    uint32_t kl = klen < 0 ? 0 : (uint32_t)klen;
    encode_at(s, s->map + s->pos, value, vlen, key, klen, ts, producer_id, sequence);
    advance(s, align8(REC_HDR + kl + vlen), ts);
}

/* pwrite mode: the whole of [buf, buf + len) at file position at, or NMQ_LOG_EIO. */
static int pwrite_all(nmq_seg *s, const uint8_t *buf, uint64_t len, uint64_t at) {
    while (len) {
        ssize_t w = pwrite(s->fd, buf, len, (off_t)at);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return nmq_set_error(NMQ_LOG_EIO, "pwrite of %llu bytes at %llu failed: %s", (unsigned long long)len,
                                 (unsigned long long)at, w < 0 ? strerror(errno) : "no progress");
        buf += w;
        len -= (uint64_t)w;
        at += (uint64_t)w;
    }
    return NMQ_OK;
}

/* pwrite mode encodes a batch into scratch, SCRATCH_BYTES at a time (one record always
 * fits), and writes each chunk with one pwrite. Until a chunk is written its records are
 * only counted; a failed write takes the count back to the chunk's start. */
#define SCRATCH_BYTES (1u << 20)
_Static_assert(SCRATCH_BYTES >= ((REC_HDR + REC_MAX_KEY + REC_MAX_RAW + 7) & ~7u), "a record fits in scratch");

typedef struct {
    uint64_t pos, next_offset, index_count, index_pos;
    int64_t max_timestamp;
} seg_mark;

static inline seg_mark seg_save(const nmq_seg *s) {
    return (seg_mark){s->pos, s->next_offset, s->index_count, s->index_pos, s->max_timestamp};
}

/* Write the chunk begun at mark m (used bytes of scratch); on failure undo its records. */
static int flush_chunk(nmq_seg *s, const seg_mark *m, uint64_t used) {
    if (!used) return NMQ_OK;
    int rc = pwrite_all(s, s->scratch, used, m->pos);
    if (rc != NMQ_OK) {
        s->pos = m->pos;
        s->next_offset = m->next_offset;
        s->index_count = m->index_count;
        s->index_pos = m->index_pos;
        s->max_timestamp = m->max_timestamp;
    }
    return rc;
}

int64_t nmq_seg_append(nmq_seg *s, const void *value, uint32_t vlen, const void *key, int32_t klen, int64_t ts,
                       int32_t ts_now, uint64_t producer_id, uint64_t sequence) {
    if (NMQ_UNLIKELY(vlen > REC_MAX_RAW || klen > (int32_t)REC_MAX_KEY)) return NMQ_ETOOBIG;
    uint64_t size = align8(REC_HDR + (klen < 0 ? 0 : (uint32_t)klen) + vlen);
    if (ts_now) ts = realtime_ns();
    pthread_mutex_lock(&s->mu);
    int64_t rc;
    if (NMQ_UNLIKELY(!s->attached)) {
        rc = NMQ_ECLOSED;
    } else if (NMQ_UNLIKELY(s->pos + size > s->size)) {
        rc = NMQ_LOG_FULL;
    } else if (s->scratch) {
        /* pwrite mode (fsync="always"): a store through the mapping after each fdatasync
         * write-protected the page would take a write fault per append; a pwrite of the
         * encoded record costs less beside the fdatasync that follows anyway. */
        encode_at(s, s->scratch, value, vlen, key, klen, ts, producer_id, sequence);
        rc = pwrite_all(s, s->scratch, size, s->pos);
        if (rc == NMQ_OK) {
            rc = (int64_t)s->next_offset;
            advance(s, size, ts);
        }
    } else {
        if (NMQ_UNLIKELY(s->pos + size > s->populated)) populate_to(s, s->pos + size);
        rc = (int64_t)s->next_offset;
        put_record(s, value, vlen, key, klen, ts, producer_id, sequence);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int nmq_seg_set_pwrite(nmq_seg *s, int on) {
    pthread_mutex_lock(&s->mu);
    int rc = NMQ_OK;
    if (on && !s->scratch) {
        s->scratch = malloc(SCRATCH_BYTES);
        if (!s->scratch) rc = nmq_set_error(NMQ_ENOMEM, "out of memory for the pwrite buffer");
    } else if (!on) {
        free(s->scratch);
        s->scratch = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int64_t nmq_seg_append_values(nmq_seg *s, const void *values, const uint32_t *vlens, const void *keys,
                              const int32_t *klens, uint32_t n, const int64_t *timestamps, int64_t ts,
                              int32_t ts_now, uint64_t producer_id, uint64_t first_sequence) {
    for (uint32_t i = 0; i < n; i++)
        if (vlens[i] > REC_MAX_RAW || (klens && klens[i] > (int32_t)REC_MAX_KEY)) return NMQ_ETOOBIG;
    if (ts_now) ts = realtime_ns();
    const uint8_t *v = values, *k = keys;
    pthread_mutex_lock(&s->mu);
    if (!s->attached) {
        pthread_mutex_unlock(&s->mu);
        return NMQ_ECLOSED;
    }
    /* A batch that fits in an empty segment is never split: NMQ_LOG_FULL, nothing written. */
    uint64_t total = 0;
    for (uint32_t j = 0; j < n; j++)
        total += align8(REC_HDR + (klens && klens[j] > 0 ? (uint32_t)klens[j] : 0) + vlens[j]);
    if (s->pos + total > s->size && total <= s->size - NMQ_LOG_SEGMENT_HEADER) {
        pthread_mutex_unlock(&s->mu);
        return NMQ_LOG_FULL;
    }
    uint32_t i = 0;
    int64_t rc = 0;
    seg_mark mark = seg_save(s);
    uint64_t used = 0;
    for (; i < n; i++) {
        int32_t kl = klens ? klens[i] : -1;
        uint64_t size = align8(REC_HDR + (kl < 0 ? 0 : (uint32_t)kl) + vlens[i]);
        if (s->pos + size > s->size) break;
        int64_t rts = timestamps ? timestamps[i] : ts;
        if (s->scratch) {
            if (used + size > SCRATCH_BYTES) {
                if ((rc = flush_chunk(s, &mark, used)) != NMQ_OK) break;
                mark = seg_save(s);
                used = 0;
            }
            encode_at(s, s->scratch + used, v, vlens[i], k, kl, rts, producer_id, first_sequence + i);
            advance(s, size, rts);
            used += size;
        } else {
            if (NMQ_UNLIKELY(s->pos + size > s->populated)) populate_to(s, s->pos + size);
            put_record(s, v, vlens[i], k, kl, rts, producer_id, first_sequence + i);
        }
        v += vlens[i];
        if (kl > 0) k += kl;
    }
    if (s->scratch && rc == NMQ_OK) rc = flush_chunk(s, &mark, used);
    pthread_mutex_unlock(&s->mu);
    return rc != NMQ_OK ? rc : i; /* NMQ_LOG_EIO: the records before the failed chunk are written */
}

int64_t nmq_seg_append_encoded(nmq_seg *s, const void *buf, uint64_t len, uint64_t *consumed) {
    const uint8_t *b = buf;
    uint64_t pos = 0, n = 0;
    *consumed = 0;
    pthread_mutex_lock(&s->mu);
    if (!s->attached) {
        pthread_mutex_unlock(&s->mu);
        return NMQ_ECLOSED;
    }
    uint64_t room = s->size - s->pos;
    if (len > room && len <= s->size - NMQ_LOG_SEGMENT_HEADER) { /* fits whole in the next segment */
        pthread_mutex_unlock(&s->mu);
        return NMQ_LOG_FULL;
    }
    /* Records were validated by nmq_record_scan(); find the prefix of whole records that fits. */
    while (pos < len) {
        uint64_t size = align8(nmq_ld32(b + pos + 12));
        if (pos + size > room) break;
        pos += size;
    }
    uint64_t start = s->pos;
    seg_mark mark = seg_save(s);
    uint8_t *dst = s->map + s->pos; /* where the next record's copy is stamped */
    if (!s->scratch) {
        if (s->pos + pos > s->populated) populate_to(s, s->pos + pos);
        if (pos) memcpy(dst, b, pos);
    }
    int rc = NMQ_OK;
    uint64_t used = 0;
    for (uint64_t p = 0; p < pos;) {
        uint64_t size = align8(nmq_ld32(b + p + 12));
        if (s->scratch) { /* pwrite mode: copy and stamp up to SCRATCH_BYTES, then write them */
            if (used + size > SCRATCH_BYTES) {
                if ((rc = flush_chunk(s, &mark, used)) != NMQ_OK) break;
                mark = seg_save(s);
                used = 0;
            }
            dst = s->scratch + used;
            memcpy(dst, b + p, size);
            used += size;
        }
        nmq_st64(dst, s->next_offset);
        index_add(s->index, s->index_cap, &s->index_count, &s->index_pos, s->next_offset - s->base_offset, s->pos,
                  s->interval);
        int64_t ts = (int64_t)nmq_ld64(dst + 32);
        if (ts > s->max_timestamp) s->max_timestamp = ts;
        s->pos += size;
        s->next_offset++;
        dst += size;
        p += size;
        n++;
    }
    if (s->scratch && rc == NMQ_OK) rc = flush_chunk(s, &mark, used);
    *consumed = s->pos - start; /* NMQ_LOG_EIO: the records before the failed chunk are written */
    pthread_mutex_unlock(&s->mu);
    return rc != NMQ_OK ? rc : (int64_t)n;
}

/* ---- segment header ---- */

static const char SEG_MAGIC[8] = {'N', 'M', 'Q', 'S', 'E', 'G', '0', '1'};

void nmq_log_segment_header(void *out, uint64_t base_offset, int64_t created_ns, uint64_t segment_bytes) {
    uint8_t *p = out;
    memset(p, 0, NMQ_LOG_SEGMENT_HEADER);
    memcpy(p, SEG_MAGIC, 8);
    nmq_st32(p + 8, NMQ_LOG_SEGMENT_VERSION);
    nmq_st32(p + 12, NMQ_LOG_SEGMENT_HEADER);
    nmq_st64(p + 16, base_offset);
    nmq_st64(p + 24, (uint64_t)created_ns);
    nmq_st64(p + 32, segment_bytes);
    nmq_st32(p + 60, nmq_crc32c(0, p, 60));
}

int nmq_log_segment_header_check(const void *hdr, uint64_t base_offset) {
    const uint8_t *p = hdr;
    if (memcmp(p, SEG_MAGIC, 8) != 0) return nmq_set_error(NMQ_EMAGIC, "segment does not start with NMQSEG01");
    if (nmq_crc32c(0, p, 60) != nmq_ld32(p + 60))
        return nmq_set_error(NMQ_ECORRUPT, "segment header CRC 0x%08x does not match the stored 0x%08x",
                             nmq_crc32c(0, p, 60), nmq_ld32(p + 60));
    if (nmq_ld32(p + 8) != NMQ_LOG_SEGMENT_VERSION)
        return nmq_set_error(NMQ_EVERSION, "segment version %u is not %d", nmq_ld32(p + 8), NMQ_LOG_SEGMENT_VERSION);
    if (nmq_ld32(p + 12) != NMQ_LOG_SEGMENT_HEADER || nmq_ld64(p + 16) != base_offset)
        return nmq_set_error(NMQ_ECORRUPT, "segment header says base offset %llu (header %u bytes), its name %llu",
                             (unsigned long long)nmq_ld64(p + 16), nmq_ld32(p + 12), (unsigned long long)base_offset);
    return NMQ_OK;
}
