/*
 * nanomq.h — the C contract of NanoMQ.
 *
 * DECLARATIONS ONLY. cffi's cdef() reads this file verbatim (it cannot parse
 * #include, #ifdef, attributes or static asserts), and the C sources include it
 * through nmq_internal.h, so every declaration exists once and the compiler checks
 * both sides. Constants are enums with explicit values.
 *
 * Conventions
 *   - Names are nmq_<noun>_<verb>; handles are opaque.
 *   - Hot-path calls (push/pop/batch/crc) return a status or a count and never
 *     format a message. Slow-path calls (init/open/claim/wait) also leave a
 *     message for this thread in nmq_last_error(), naming the value and the limit.
 *   - Every hot entry point has a batch form; the single call is a batch of one.
 */

/* ---- status codes: 0 or a count on success, negative on failure ---- */
enum nmq_status {
    NMQ_OK = 0,
    NMQ_AGAIN = -1,      /* ring full (producer) or empty (consumer): try again later */
    NMQ_TIMEOUT = -2,    /* a blocking call's timeout expired */
    NMQ_ETOOBIG = -3,    /* payload longer than the ring's max payload */
    NMQ_EINVAL = -4,     /* bad argument (size, alignment, count, wait strategy) */
    NMQ_ECORRUPT = -5,   /* region or record fails validation */
    NMQ_EPEERDEAD = -6,  /* the other side's process has died */
    NMQ_ECLOSED = -7,    /* the other side closed the ring, or this handle is closed */
    NMQ_EBUSY = -8,      /* the role is held by another live handle */
    NMQ_ESTATE = -9,     /* call out of order: commit without reserve, release without peek */
    NMQ_ENOMEM = -10,    /* allocation of a handle failed */
    NMQ_EVERSION = -11,  /* region layout version this build does not read */
    NMQ_EMAGIC = -12     /* region does not start with the ring magic */
};

/* ---- limits and layout constants ---- */
enum nmq_limits {
    NMQ_MAX_PAYLOAD = 65536,           /* bytes of payload in one record */
    NMQ_MAX_BATCH = 256,               /* records in one batch call */
    NMQ_RING_HEADER_BYTES = 4096,      /* region header; the data area follows */
    NMQ_RING_RECORD_HEADER = 8,        /* per-record header in the ring */
    NMQ_RING_ALIGN = 8,                /* records start on 8-byte boundaries */
    NMQ_RING_MIN_CAPACITY_LOG2 = 12,   /* 4 KiB */
    NMQ_RING_MAX_CAPACITY_LOG2 = 34,   /* 16 GiB */
    NMQ_RING_LAYOUT_VERSION = 1,
    NMQ_REF_LEN_BITS = 17              /* a record ref is (offset << 17) | length */
};

enum nmq_wait {
    NMQ_WAIT_SPIN = 0,   /* busy-spin with a pause instruction */
    NMQ_WAIT_YIELD = 1,  /* spin, then sched_yield() */
    NMQ_WAIT_FUTEX = 2   /* spin, then sleep on a futex in the shared region */
};

enum nmq_role {
    NMQ_ROLE_PRODUCER = 1,
    NMQ_ROLE_CONSUMER = 2
};

enum nmq_peer_state {
    NMQ_PEER_NONE = 0,    /* nobody has claimed the role yet */
    NMQ_PEER_ALIVE = 1,
    NMQ_PEER_CLOSED = 2,  /* the holder closed its side cleanly */
    NMQ_PEER_DEAD = 3     /* the holder's process is gone (or a zombie) */
};

typedef struct nmq_ring nmq_ring;

/* Message for the last failed slow-path call on this thread ("" if none). */
const char *nmq_last_error(void);

/* ---- ring: set-up (slow path) ---- */
/* Bytes of region needed for a ring of `capacity` data bytes (0 if capacity is invalid). */
uint64_t nmq_ring_region_size(uint64_t capacity);
/* Format a region of `mem_size` bytes (page-aligned memory) as an empty ring. */
int nmq_ring_init(void *mem, uint64_t mem_size, uint64_t capacity);
/* Validate a formatted region and make a process-local handle for it. */
int nmq_ring_open(void *mem, uint64_t mem_size, int wait, uint32_t spin_ns, nmq_ring **out);
/* Free the handle only; the region is the caller's to unmap. */
void nmq_ring_free(nmq_ring *r);
/* Take a role for this handle (done implicitly by the first push or pop). */
int nmq_ring_claim(nmq_ring *r, int role);
/* Mark this handle's roles closed in the region and refuse further calls on it. */
void nmq_ring_close(nmq_ring *r);
/* NMQ_PEER_* of the process holding `role`. */
int nmq_ring_peer_state(nmq_ring *r, int role);
int32_t nmq_ring_peer_pid(nmq_ring *r, int role);

/* ---- ring: producer (hot path) ---- */
/* 0, NMQ_AGAIN when there is no room, or a negative status. */
int nmq_ring_push(nmq_ring *r, const void *data, uint32_t len);
/* Push up to n records laid end to end in `data` with lengths `lens`; returns the
 * number pushed (a prefix, possibly 0) or a negative status. n <= NMQ_MAX_BATCH. */
int nmq_ring_push_batch(nmq_ring *r, const void *data, const uint32_t *lens, uint32_t n);
/* Reserve room for a record of up to `len` bytes; returns the byte offset of its
 * payload in the region, NMQ_AGAIN, or a negative status. */
int64_t nmq_ring_reserve(nmq_ring *r, uint32_t len);
/* Publish the reserved record with its final length (<= the reserved length). */
int nmq_ring_commit(nmq_ring *r, uint32_t len);

/* ---- ring: consumer (hot path) ---- */
/* A ref is (offset of the payload in the region << NMQ_REF_LEN_BITS) | length; it
 * is > 0 for a record, otherwise a status. Records stay held (not overwritten)
 * until nmq_ring_release() or the next consumer call, which releases them first. */
int64_t nmq_ring_peek(nmq_ring *r);
/* Hold up to max_n records; their payloads span [starts[i], ends[i]) of the region.
 * Returns the count held (0 when empty) or a negative status. */
int nmq_ring_peek_batch(nmq_ring *r, uint64_t *starts, uint64_t *ends, uint32_t max_n);
/* Give held records back to the producer. */
int nmq_ring_release(nmq_ring *r);
/* Copy one record into out; returns its length, NMQ_AGAIN, or a negative status. */
int nmq_ring_pop(nmq_ring *r, void *out, uint32_t out_cap);
/* Copy up to max_n whole records end to end into out (at most out_cap bytes);
 * offsets[0] = 0 and offsets[i + 1] = end of record i. Returns the count. */
int nmq_ring_pop_batch(nmq_ring *r, void *out, uint64_t out_cap, uint32_t *offsets, uint32_t max_n);

/* ---- ring: blocking (waits with the handle's strategy; GIL released by cffi) ---- */
/* Until a record can be read: 0, NMQ_TIMEOUT, NMQ_ECLOSED (producer closed, ring
 * drained), NMQ_EPEERDEAD (producer died, ring drained). timeout_ns < 0: forever. */
int nmq_ring_wait_readable(nmq_ring *r, int64_t timeout_ns);
/* Until `len` payload bytes fit: 0, NMQ_TIMEOUT, NMQ_ECLOSED, NMQ_EPEERDEAD. */
int nmq_ring_wait_writable(nmq_ring *r, uint32_t len, int64_t timeout_ns);

/* ---- ring: state (snapshots) ---- */
uint64_t nmq_ring_capacity(const nmq_ring *r);
uint32_t nmq_ring_max_payload(const nmq_ring *r);
uint64_t nmq_ring_count(const nmq_ring *r);       /* records pushed and not yet released */
uint64_t nmq_ring_used_bytes(const nmq_ring *r);
int nmq_ring_wait_strategy(const nmq_ring *r);   /* NMQ_WAIT_* of this handle */
uint32_t nmq_ring_spin_ns(const nmq_ring *r);    /* spin before yield/sleep, ns */

/* ---- CRC32C (Castagnoli), hardware when the CPU has it ---- */
/* Continue `crc` (0 to start) over len bytes; returns the finished CRC. */
uint32_t nmq_crc32c(uint32_t crc, const void *data, size_t len);
/* The portable table implementation, always available (for tests). */
uint32_t nmq_crc32c_sw(uint32_t crc, const void *data, size_t len);
/* 1 when nmq_crc32c uses the hardware instruction. */
int nmq_crc32c_hw(void);

/* ---- records (csrc/record.c): the one format of memory, wire and disk ----
 * A record is a 64-byte little-endian header, the key, the value, then zeros up to
 * a multiple of 8 bytes (docs/FORMAT.md draws every byte). The CRC32C covers bytes
 * [12, length): everything the producer wrote, not the offset the log assigns. */
enum nmq_record_layout {
    NMQ_RECORD_HEADER = 64,
    NMQ_RECORD_ALIGN = 8,
    NMQ_RECORD_MAGIC = 0x31514D4E,    /* the bytes "NMQ1" */
    NMQ_RECORD_VERSION = 1,
    NMQ_RECORD_MAX_KEY = 65535,
    NMQ_RECORD_MAX_VALUE = 65536,     /* stored and uncompressed value bytes alike */
    NMQ_RECORD_CRC_START = 12,        /* the CRC covers [12, length) */
    NMQ_RECORD_CODEC_MASK = 3,        /* flags bits 0-1: NMQ_CODEC_* */
    NMQ_RECORD_FLAG_KEY = 4           /* flags bit 2: a key is present (it may be empty) */
};

enum nmq_codec {
    NMQ_CODEC_NONE = 0,
    NMQ_CODEC_ZSTD = 1,
    NMQ_CODEC_LZ4 = 2
};

/* Why a scan stopped. */
enum nmq_scan_status {
    NMQ_SCAN_END = 0,         /* the buffer ended exactly after a whole record */
    NMQ_SCAN_ZERO = 1,        /* the next header is all zero bytes: unwritten space */
    NMQ_SCAN_SHORT = 2,       /* the next record runs past the end of the buffer */
    NMQ_SCAN_BAD_HEADER = 3,  /* magic, version, flags, lengths, reserved or padding wrong */
    NMQ_SCAN_BAD_CRC = 4,     /* the checksum does not match */
    NMQ_SCAN_BAD_OFFSET = 5,  /* not the offset that contiguity requires */
    NMQ_SCAN_LIMIT = 6        /* max_records reached */
};

typedef struct nmq_scan_result {
    uint64_t count;        /* whole valid records from the start of the buffer */
    uint64_t nbytes;       /* bytes they occupy (padding included) */
    int32_t status;        /* NMQ_SCAN_*: what stopped the scan at byte nbytes */
    uint32_t reserved;
} nmq_scan_result;

/* Validate records from the start of buf: header fields, zero padding, CRC32C, and
 * (first_offset >= 0) offsets first_offset, first_offset + 1, ... Stops at the first
 * record that is not valid, at the end, or after max_records (0: no limit). Hot path:
 * no message; returns 0, or NMQ_EINVAL for a NULL result. */
int nmq_record_scan(const void *buf, uint64_t len, int64_t first_offset, uint64_t max_records,
                    nmq_scan_result *out);

/* Encode one record into out (cap bytes). key_len < 0: no key. The value is stored as
 * given (already compressed when codec != NMQ_CODEC_NONE; raw_len is then its
 * uncompressed length, else raw_len must equal value_len). Returns the bytes written
 * (padded), NMQ_ETOOBIG (key or value over its limit), or NMQ_EINVAL (cap too small,
 * bad codec or lengths). */
int64_t nmq_record_encode(void *out, uint64_t cap, const void *key, int32_t key_len, const void *value,
                          uint32_t value_len, uint32_t raw_len, uint32_t codec, int64_t timestamp_ns,
                          uint64_t producer_id, uint64_t sequence, uint64_t offset);

/* Encode n records laid end to end: values concatenated in `values` with value_lens[i];
 * raw_lens NULL unless compressed; keys concatenated in `keys` with key_lens[i] (-1: no
 * key) or key_lens NULL for no keys; timestamps NULL for timestamp_ns on every record.
 * Record i gets sequence first_sequence + i and offset first_offset + i. Returns bytes
 * written, or a negative status (nothing usable written). */
int64_t nmq_record_encode_batch(void *out, uint64_t cap, uint32_t n, const void *values,
                                const uint32_t *value_lens, const uint32_t *raw_lens, const void *keys,
                                const int32_t *key_lens, const int64_t *timestamps, int64_t timestamp_ns,
                                uint32_t codec, uint64_t producer_id, uint64_t first_sequence,
                                uint64_t first_offset);

/* Bytes a record with these key and value lengths occupies (key_len < 0: no key). */
uint64_t nmq_record_size(int32_t key_len, uint32_t value_len);

/* Write offsets first_offset, first_offset + 1, ... into the records of buf (already
 * validated; only their lengths are read). One 8-byte store per record; the CRCs stay
 * valid because they do not cover the offset. Returns the count, or NMQ_ECORRUPT when
 * the lengths do not tile buf exactly (nothing is written then). */
int64_t nmq_record_stamp(void *buf, uint64_t len, uint64_t first_offset);

/* Start positions of up to max_n records of buf (validated) into pos; returns the count. */
int64_t nmq_record_positions(const void *buf, uint64_t len, uint64_t *pos, uint64_t max_n);

/* Position in buf (validated records with contiguous offsets) of the first record whose
 * offset is >= `offset`; len when there is none. */
uint64_t nmq_record_seek(const void *buf, uint64_t len, uint64_t offset);

/* ---- benchmark support (csrc/bench.c): HDR bucket counting and C-level ring loops ---- */

/* The counts-array layout of an HdrHistogram, with the field names and the index math
 * of the Python `hdrhistogram` package (counts_index_for), so counts made here rebuild a
 * Python histogram bucket for bucket. */
typedef struct nmq_hdr_layout {
    int64_t lowest;                           /* lowest discernible value (>= 1) */
    int64_t highest;                          /* highest trackable value */
    int32_t significant_figures;              /* 1..5 */
    int32_t unit_magnitude;                   /* floor(log2(lowest)) */
    int32_t sub_bucket_half_count_magnitude;
    int32_t bucket_count;
    int64_t sub_bucket_count;
    int64_t sub_bucket_half_count;
    int64_t sub_bucket_mask;
    int64_t counts_len;                       /* entries of the counts array */
} nmq_hdr_layout;

/* Fill `l` as HdrHistogram(lowest, highest, significant_figures) lays out its counts. */
int nmq_hdr_layout_init(nmq_hdr_layout *l, int64_t lowest, int64_t highest, int significant_figures);
/* Index in the counts array of `value`, or -1 when the histogram cannot hold it. */
int64_t nmq_hdr_index(const nmq_hdr_layout *l, int64_t value);
/* Add n values to counts (counts_len entries); returns how many were out of range
 * (negative or past the last bucket): those are counted here, never recorded. */
uint64_t nmq_hdr_record(const nmq_hdr_layout *l, uint64_t *counts, const int64_t *values, uint64_t n);

enum nmq_bench_mode {
    NMQ_BENCH_THREADS = 0,    /* two threads of this process */
    NMQ_BENCH_PROCESSES = 1   /* two forked children that only run C and _exit() */
};

/* Parameters of nmq_bench_pingpong() and nmq_bench_stream(). Payload bytes 0..7 carry
 * the send time (CLOCK_MONOTONIC ns; the intended time when paced) and bytes 8..15
 * the sequence number, when the payload is that long. */
typedef struct nmq_bench_params {
    int32_t mode;            /* NMQ_BENCH_THREADS or NMQ_BENCH_PROCESSES */
    int32_t cpu_producer;    /* CPU of the producer (ping-pong: the side that measures); -1: no pin */
    int32_t cpu_consumer;    /* CPU of the consumer (ping-pong: the echo side); -1: no pin */
    uint32_t size;           /* payload bytes, 0..65536; >= 16 to record stream latency */
    uint32_t batch;          /* stream: records per push/pop call, 1..NMQ_MAX_BATCH (ping-pong: 1) */
    int32_t record_latency;  /* stream: record one-way latency (receive - send stamp) into counts */
    uint64_t count;          /* measured messages (ping-pong: round trips) */
    uint64_t warmup;         /* messages (round trips) before the measured ones */
    uint64_t capacity;       /* ring data bytes (power of two); 0: 1 MiB */
    double rate;             /* stream: 0 = as fast as possible, else paced messages/s (batch 1) */
    int64_t timeout_ns;      /* give up with NMQ_TIMEOUT after this long; <= 0: 60 s */
} nmq_bench_params;

typedef struct nmq_bench_result {
    int64_t elapsed_ns;      /* consumer's time over the measured messages (ping-pong: initiator's) */
    uint64_t messages;       /* messages in the measured window (ping-pong: round trips) */
    uint64_t received;       /* every message received, warm-up included */
    uint64_t seq_errors;     /* records with a wrong sequence number or length */
    uint64_t dropped;        /* latency samples outside the histogram's range */
    int32_t pinned;          /* 1 when both sides run on the CPUs asked for */
    int32_t status;          /* NMQ_OK or the first negative status of either side */
} nmq_bench_result;

/* Bounce one message over two rings (A->B, B->A); records RTT/2 (ns) of every measured
 * round trip into counts (NULL: none). Returns res->status. Blocks; cffi drops the GIL. */
int nmq_bench_pingpong(const nmq_bench_params *p, const nmq_hdr_layout *l, uint64_t *counts,
                       nmq_bench_result *res);
/* Producer pushes warmup + count messages of `size` bytes, consumer pops and checks them;
 * with record_latency, one-way latency of each measured message goes into counts. */
int nmq_bench_stream(const nmq_bench_params *p, const nmq_hdr_layout *l, uint64_t *counts,
                     nmq_bench_result *res);
/* Paced streaming (rate > 0, batch 1) as nmq_bench_stream, and per second of the schedule:
 * message i (intended at t0 + i / rate) belongs to interval k = (i * 1e9 / rate) / interval_ns,
 * warm-up included (messages past the last interval go to the last). The consumer adds its
 * one-way latency to lat_series[k * counts_len ...]; the producer adds its send lag (time of
 * the push - intended time) to lag_series[k * counts_len ...], and the measured messages' lag
 * to lag (counts_len entries). *t0_out receives t0 (CLOCK_MONOTONIC ns). Any array may be NULL. */
int nmq_bench_stream_series(const nmq_bench_params *p, const nmq_hdr_layout *l, uint64_t *counts,
                            uint64_t *lag, uint64_t *lat_series, uint64_t *lag_series, uint32_t intervals,
                            int64_t interval_ns, int64_t *t0_out, nmq_bench_result *res);

/* Busy-wait until CLOCK_MONOTONIC reaches due_ns; returns the time it saw then. It yields the
 * CPU at every look (sched_yield), so a task of the system under test that is runnable on this
 * CPU runs at once instead of after the spinner's time slice. Called through cffi, which releases
 * the GIL: the client's own threads run meanwhile (a Python spin holds it for the switch interval). */
int64_t nmq_bench_spin_until(int64_t due_ns);

/* ---- log (csrc/log.c) ---- */
/* The segmented write-ahead log's hot loops; nanomq/log/ owns files, locks and policy. */

enum nmq_log_status {
    NMQ_LOG_FULL = -40,         /* the active segment has no room for the record: roll */
    NMQ_LOG_EIO = -41           /* a write to the segment file failed (message set) */
};

enum nmq_log_layout {
    NMQ_LOG_SEGMENT_HEADER = 64,  /* segment header bytes; records start here */
    NMQ_LOG_SEGMENT_VERSION = 1,
    NMQ_LOG_INDEX_ENTRY = 8       /* {u32 offset - base, u32 position} */
};

/* Why a scan stopped (nmq_log_scan_result.status). */
enum nmq_log_scan_status {
    NMQ_LOG_SCAN_END = 0,         /* the buffer (or max_records) ended after a whole record */
    NMQ_LOG_SCAN_ZERO = 1,        /* the next 64 bytes (or the rest) are zero: unwritten space */
    NMQ_LOG_SCAN_SHORT = 2,       /* a record runs past the end of the buffer */
    NMQ_LOG_SCAN_BAD_HEADER = 3,  /* magic, version, flags, lengths, reserved or padding */
    NMQ_LOG_SCAN_BAD_CRC = 4,
    NMQ_LOG_SCAN_BAD_OFFSET = 5   /* offset not contiguous (or not indexable in this segment) */
};

typedef struct nmq_log_scan_result {
    uint64_t count;           /* out: valid records scanned */
    uint64_t end;             /* out: position after the last valid record */
    uint64_t next_offset;     /* out: offset after the last valid record */
    int64_t max_timestamp;    /* in/out: largest record timestamp seen */
    uint64_t index_count;     /* in/out: index entries in the index array */
    uint64_t index_pos;       /* in/out: position of the last index entry */
    int32_t status;           /* out: NMQ_LOG_SCAN_* where the scan stopped */
    int32_t pad;
} nmq_log_scan_result;

typedef struct nmq_seg nmq_seg;

/* Validate records of buf[pos, len) (CRC, header, zero padding, offsets from first_offset
 * when check_offsets, else from the first record's), adding sparse-index entries
 * {offset - base_offset, position} to index (index_cap entries; NULL: none) every
 * `interval` bytes. Stops at the first invalid record or after max_records. Returns the status. */
int nmq_log_scan(const void *buf, uint64_t len, uint64_t pos, uint64_t first_offset, int check_offsets,
                 uint64_t base_offset, uint32_t interval, uint32_t *index, uint64_t index_cap,
                 uint64_t max_records, nmq_log_scan_result *out);
/* First 8-aligned position >= from holding a valid record whose offset is >= min_offset and
 * followed by the record with the next offset (or by zeros or the end); -1 if none. */
int64_t nmq_log_find_next(const void *buf, uint64_t len, uint64_t from, uint64_t min_offset);
/* Position of the first record from `pos` whose timestamp >= timestamp; -1 if none (or a bad record). */
int64_t nmq_log_find_timestamp(const void *buf, uint64_t len, uint64_t pos, int64_t timestamp);
/* Position of the last index entry whose offset - base <= rel (its rel in *rel_out); -1 if none. */
int64_t nmq_log_index_floor(const uint32_t *index, uint64_t count, uint64_t rel, uint64_t *rel_out);
/* mmap(MAP_SHARED) the first `size` bytes of fd (which must be at least that long); NULL on failure. */
void *nmq_log_map(int fd, uint64_t size, int writable);
void nmq_log_unmap(void *p, uint64_t size);
/* Write a 64-byte segment header to out. */
void nmq_log_segment_header(void *out, uint64_t base_offset, int64_t created_ns, uint64_t segment_bytes);
/* NMQ_OK when hdr is a valid segment header for base_offset (slow path: sets the message). */
int nmq_log_segment_header_check(const void *hdr, uint64_t base_offset);

/* The log's writer: the active segment mapped shared; every call holds its mutex. */
typedef struct nmq_seg_info {
    int32_t attached;
    int32_t pad;
    uint64_t base_offset;
    uint64_t pos;            /* end of the last record */
    uint64_t next_offset;
    int64_t max_timestamp;
    uint64_t index_count;
} nmq_seg_info;

int nmq_seg_new(uint32_t index_interval, nmq_seg **out);
void nmq_seg_free(nmq_seg *s);
/* Map fd's first `size` bytes (records up to pos) as the active segment; NMQ_ESTATE if one is
 * attached. index NULL with index_count > 0 keeps the entries the writer holds (re-attach). */
int nmq_seg_attach(nmq_seg *s, int fd, uint64_t size, uint64_t base_offset, uint64_t pos, uint64_t next_offset,
                   const uint32_t *index, uint64_t index_count, int64_t max_timestamp);
/* Unmap the active segment and report its final state (its index stays readable until the next attach). */
int nmq_seg_detach(nmq_seg *s, nmq_seg_info *info);
void nmq_seg_get_info(nmq_seg *s, nmq_seg_info *info);
/* Copy up to max_entries index entries; returns how many. */
uint64_t nmq_seg_copy_index(nmq_seg *s, uint32_t *out, uint64_t max_entries);
/* nmq_log_index_floor() on the writer's index; -2 when its segment is not base_offset's. */
int64_t nmq_seg_index_floor(nmq_seg *s, uint64_t base_offset, uint64_t rel, uint64_t *rel_out);
/* on (before the first attach): appends of every kind are encoded into a 1 MiB buffer and
 * written with one pwrite() per buffer instead of stores into the mapping, and nothing is
 * pre-written ahead of the records (for fsync="always": no write fault per append after each
 * fdatasync, and no zeros for each fdatasync to flush). */
int nmq_seg_set_pwrite(nmq_seg *s, int on);
/* Encode one record (klen -1: no key; ts_now: stamp CLOCK_REALTIME) with the next offset
 * into the segment. Returns the offset, NMQ_LOG_FULL (nothing written), NMQ_ECLOSED (no
 * segment attached), NMQ_LOG_EIO (pwrite mode) or NMQ_ETOOBIG. */
int64_t nmq_seg_append(nmq_seg *s, const void *value, uint32_t vlen, const void *key, int32_t klen, int64_t ts,
                       int32_t ts_now, uint64_t producer_id, uint64_t sequence);
/* n records: values end to end with lengths vlens, keys end to end with klens (-1: none;
 * klens NULL: no keys), timestamps per record (NULL: ts or now). All lengths are checked
 * first (NMQ_ETOOBIG, nothing written). A batch that fits in an empty segment but not in
 * the room left gets NMQ_LOG_FULL (nothing written: it is never split); a larger one is
 * written as far as it fits. Returns how many records were written (a prefix), or
 * NMQ_LOG_EIO (pwrite mode) when a write failed: the records before the failed 1 MiB
 * chunk are written, the rest not (the caller treats the log as failed). */
int64_t nmq_seg_append_values(nmq_seg *s, const void *values, const uint32_t *vlens, const void *keys,
                              const int32_t *klens, uint32_t n, const int64_t *timestamps, int64_t ts,
                              int32_t ts_now, uint64_t producer_id, uint64_t first_sequence);
/* Copy the prefix of whole records of buf (validated by nmq_record_scan) that fits,
 * stamping offsets; *consumed = its bytes. Returns the record count, NMQ_ECLOSED,
 * NMQ_LOG_FULL when buf fits in an empty segment but not in the room left, or NMQ_LOG_EIO
 * (pwrite mode: *consumed = the bytes written before the failed chunk). */
int64_t nmq_seg_append_encoded(nmq_seg *s, const void *buf, uint64_t len, uint64_t *consumed);
