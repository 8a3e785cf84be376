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
