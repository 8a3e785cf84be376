/*
 * nmq_internal.h — what the C sources share: the system headers the contract
 * needs, the contract itself (nanomq.h, also read by cffi), and small helpers.
 */
#ifndef NMQ_INTERNAL_H
#define NMQ_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stddef.h>
#include <stdint.h>

#include "nanomq.h"

#define NMQ_LIKELY(x) __builtin_expect(!!(x), 1)
#define NMQ_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Set this thread's message for nmq_last_error(); returns `status` for tail calls. */
int nmq_set_error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records (record.c), for the other C files that read or write them (log.c):
 * - nmq_record_check_at: NMQ_SCAN_END when p holds one whole valid record within `left`
 *   bytes (its padded size in *size; its offset is not checked), else the NMQ_SCAN_*
 *   reason (ZERO, SHORT, BAD_HEADER, BAD_CRC);
 * - nmq_record_put: write one record at p (room and lengths already checked by the
 *   caller, e.g. with nmq_record_size and the NMQ_RECORD_MAX_* limits); returns its
 *   padded size. */
int nmq_record_check_at(const uint8_t *p, uint64_t left, uint64_t *size);
uint64_t nmq_record_put(uint8_t *p, const void *key, int32_t key_len, const void *value, uint32_t value_len,
                        uint32_t raw_len, uint32_t codec, int64_t ts, uint64_t producer_id, uint64_t sequence,
                        uint64_t offset);

/* Little-endian fields read and written in place at any alignment (the record format and
 * the benchmark's shared blocks; record.c refuses to build on a big-endian host). */
#include <string.h>
static inline uint16_t nmq_ld16(const void *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint32_t nmq_ld32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t nmq_ld64(const void *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline void nmq_st32(void *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void nmq_st64(void *p, uint64_t v) { memcpy(p, &v, 8); }

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t nmq_now_ns(void);

/* One pause instruction for spin loops. */
static inline void nmq_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
