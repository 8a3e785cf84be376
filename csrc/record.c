/*
 * record.c — the record format of memory, wire and disk: encode, validate, stamp.
 *
 * Why C: a batch is validated on every publish, every recovery and every fetch that
 * decodes; in Python, unpacking one header and checking it costs ≈ 1 µs, so a batch of
 * 256 records would cost ≈ 250 µs before any CRC. Here a whole batch is one call, the
 * CRC runs at memory speed (csrc/crc32c.c), and the log stamps offsets with one 8-byte
 * store per record.
 *
 * A record (docs/FORMAT.md is the specification):
 *
 *   0        8       12       16       20  21  22      24       28       32
 *   +--------+-------+--------+--------+---+---+-------+--------+--------+
 *   | offset |  crc  | length | magic  |ver|flg|key_len|val_len |raw_len |
 *   +--------+-------+--------+--------+---+---+-------+--------+--------+
 *   32          40            48           56          64
 *   | timestamp | producer_id | sequence   | reserved=0 | key | value | 0-pad to 8 |
 *
 *   crc = CRC32C(bytes [12, length)); length = 64 + key_len + value_len.
 *
 * A record is valid if and only if: magic = "NMQ1", version = 1, no flag bit above
 * bit 2 is set, codec <= 2, key_len = 0 unless the key flag is set, value_len and
 * raw_len <= 65536, raw_len = value_len when codec = 0, length = 64 + key_len +
 * value_len, reserved = 0, the padding bytes are 0, the whole padded record lies
 * inside the buffer, and crc matches. The offset is checked by contiguity only.
 */
#include "nmq_internal.h"

#include <string.h>

/* The header as stored, little-endian on disk and on the wire; the code reads it with
 * memcpy into this struct, which matches the byte layout on little-endian hosts. */
typedef struct rec_header {
    uint64_t offset;      /*  0: assigned by the log */
    uint32_t crc;         /*  8: CRC32C of [12, length) */
    uint32_t length;      /* 12: 64 + key_len + value_len */
    uint32_t magic;       /* 16: NMQ_RECORD_MAGIC */
    uint8_t version;      /* 20 */
    uint8_t flags;        /* 21: codec in bits 0-1, key present in bit 2 */
    uint16_t key_len;     /* 22 */
    uint32_t value_len;   /* 24: stored bytes */
    uint32_t raw_len;     /* 28: uncompressed bytes */
    int64_t timestamp;    /* 32: ns since the Unix epoch, producer's clock */
    uint64_t producer_id; /* 40 */
    uint64_t sequence;    /* 48 */
    uint64_t reserved;    /* 56: zero */
} rec_header;

_Static_assert(sizeof(rec_header) == NMQ_RECORD_HEADER, "record header is 64 bytes");
_Static_assert(offsetof(rec_header, crc) == 8, "crc at 8");
_Static_assert(offsetof(rec_header, length) == NMQ_RECORD_CRC_START, "the CRC starts at length");
_Static_assert(offsetof(rec_header, magic) == 16, "magic at 16");
_Static_assert(offsetof(rec_header, flags) == 21, "flags at 21");
_Static_assert(offsetof(rec_header, key_len) == 22, "key_len at 22");
_Static_assert(offsetof(rec_header, raw_len) == 28, "raw_len at 28");
_Static_assert(offsetof(rec_header, timestamp) == 32, "timestamp at 32");
_Static_assert(offsetof(rec_header, reserved) == 56, "reserved at 56");
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "record.c reads the little-endian format in place: port it before building on a big-endian host"
#endif

static inline uint64_t align8(uint64_t n) { return (n + (NMQ_RECORD_ALIGN - 1)) & ~(uint64_t)(NMQ_RECORD_ALIGN - 1); }

uint64_t nmq_record_size(int32_t key_len, uint32_t value_len) {
    return align8((uint64_t)NMQ_RECORD_HEADER + (key_len > 0 ? (uint64_t)key_len : 0) + value_len);
}

static int all_zero(const uint8_t *p, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* NMQ_SCAN_* verdict on the header alone (before lengths are checked against the buffer). */
static int header_status(const rec_header *h) {
    uint32_t codec = h->flags & NMQ_RECORD_CODEC_MASK;
    if (h->magic != NMQ_RECORD_MAGIC || h->version != NMQ_RECORD_VERSION) return NMQ_SCAN_BAD_HEADER;
    if (h->flags & ~(uint32_t)(NMQ_RECORD_CODEC_MASK | NMQ_RECORD_FLAG_KEY)) return NMQ_SCAN_BAD_HEADER;
    if (codec > NMQ_CODEC_LZ4) return NMQ_SCAN_BAD_HEADER;
    if (!(h->flags & NMQ_RECORD_FLAG_KEY) && h->key_len != 0) return NMQ_SCAN_BAD_HEADER;
    if (h->value_len > NMQ_RECORD_MAX_VALUE || h->raw_len > NMQ_RECORD_MAX_VALUE) return NMQ_SCAN_BAD_HEADER;
    if (codec == NMQ_CODEC_NONE && h->raw_len != h->value_len) return NMQ_SCAN_BAD_HEADER;
    if (h->length != (uint32_t)NMQ_RECORD_HEADER + h->key_len + h->value_len) return NMQ_SCAN_BAD_HEADER;
    if (h->reserved != 0) return NMQ_SCAN_BAD_HEADER;
    return NMQ_SCAN_END;
}

int nmq_record_check_at(const uint8_t *p, uint64_t left, uint64_t *size) {
    if (left < NMQ_RECORD_HEADER) return all_zero(p, left) ? NMQ_SCAN_ZERO : NMQ_SCAN_SHORT;
    rec_header h;
    memcpy(&h, p, sizeof h);
    int status = header_status(&h);
    if (status != NMQ_SCAN_END) return all_zero(p, NMQ_RECORD_HEADER) ? NMQ_SCAN_ZERO : status;
    uint64_t padded = align8(h.length);
    if (padded > left) return NMQ_SCAN_SHORT;
    if (!all_zero(p + h.length, padded - h.length)) return NMQ_SCAN_BAD_HEADER;
    if (nmq_crc32c(0, p + NMQ_RECORD_CRC_START, h.length - NMQ_RECORD_CRC_START) != h.crc) return NMQ_SCAN_BAD_CRC;
    *size = padded;
    return NMQ_SCAN_END;
}

int nmq_record_scan(const void *buf, uint64_t len, int64_t first_offset, uint64_t max_records,
                    nmq_scan_result *out) {
    if (!out) return NMQ_EINVAL;
    const uint8_t *p = buf;
    uint64_t pos = 0, count = 0;
    int status = NMQ_SCAN_END;
    while (pos < len) {
        if (max_records && count == max_records) {
            status = NMQ_SCAN_LIMIT;
            break;
        }
        uint64_t size = 0, offset;
        status = nmq_record_check_at(p + pos, len - pos, &size);
        if (status != NMQ_SCAN_END) break;
        memcpy(&offset, p + pos, 8);
        if (first_offset >= 0 && offset != (uint64_t)first_offset + count) {
            status = NMQ_SCAN_BAD_OFFSET;
            break;
        }
        pos += size;
        count++;
    }
    out->count = count;
    out->nbytes = pos;
    out->status = status;
    out->reserved = 0;
    return NMQ_OK;
}

static int check_lengths(int32_t key_len, uint32_t value_len, uint32_t raw_len, uint32_t codec) {
    if (key_len > NMQ_RECORD_MAX_KEY || value_len > NMQ_RECORD_MAX_VALUE || raw_len > NMQ_RECORD_MAX_VALUE)
        return NMQ_ETOOBIG;
    if (codec > NMQ_CODEC_LZ4 || (codec == NMQ_CODEC_NONE && raw_len != value_len)) return NMQ_EINVAL;
    return NMQ_OK;
}

uint64_t nmq_record_put(uint8_t *p, const void *key, int32_t key_len, const void *value, uint32_t value_len,
                        uint32_t raw_len, uint32_t codec, int64_t ts, uint64_t producer_id, uint64_t sequence,
                        uint64_t offset) {
    uint32_t klen = key_len > 0 ? (uint32_t)key_len : 0;
    rec_header h = {
        .offset = offset,
        .crc = 0,
        .length = (uint32_t)NMQ_RECORD_HEADER + klen + value_len,
        .magic = NMQ_RECORD_MAGIC,
        .version = NMQ_RECORD_VERSION,
        .flags = (uint8_t)(codec | (key_len >= 0 ? NMQ_RECORD_FLAG_KEY : 0)),
        .key_len = (uint16_t)klen,
        .value_len = value_len,
        .raw_len = raw_len,
        .timestamp = ts,
        .producer_id = producer_id,
        .sequence = sequence,
        .reserved = 0,
    };
    memcpy(p, &h, sizeof h);
    if (klen) memcpy(p + NMQ_RECORD_HEADER, key, klen);
    if (value_len) memcpy(p + NMQ_RECORD_HEADER + klen, value, value_len);
    uint64_t size = align8(h.length);
    memset(p + h.length, 0, size - h.length);
    h.crc = nmq_crc32c(0, p + NMQ_RECORD_CRC_START, h.length - NMQ_RECORD_CRC_START);
    memcpy(p + 8, &h.crc, 4);
    return size;
}

int64_t nmq_record_encode(void *out, uint64_t cap, const void *key, int32_t key_len, const void *value,
                          uint32_t value_len, uint32_t raw_len, uint32_t codec, int64_t timestamp_ns,
                          uint64_t producer_id, uint64_t sequence, uint64_t offset) {
    int rc = check_lengths(key_len, value_len, raw_len, codec);
    if (rc) return rc;
    if (nmq_record_size(key_len, value_len) > cap) return NMQ_EINVAL;
    return (int64_t)nmq_record_put(out, key, key_len, value, value_len, raw_len, codec, timestamp_ns, producer_id,
                                   sequence, offset);
}

int64_t nmq_record_encode_batch(void *out, uint64_t cap, uint32_t n, const void *values,
                                const uint32_t *value_lens, const uint32_t *raw_lens, const void *keys,
                                const int32_t *key_lens, const int64_t *timestamps, int64_t timestamp_ns,
                                uint32_t codec, uint64_t producer_id, uint64_t first_sequence,
                                uint64_t first_offset) {
    if (n && !value_lens) return NMQ_EINVAL;
    /* Check every record and the room first, so nothing is half-written on an error. */
    uint64_t need = 0;
    for (uint32_t i = 0; i < n; i++) {
        int32_t klen = key_lens ? key_lens[i] : -1;
        uint32_t raw = raw_lens ? raw_lens[i] : value_lens[i];
        int rc = check_lengths(klen, value_lens[i], raw, codec);
        if (rc) return rc;
        need += nmq_record_size(klen, value_lens[i]);
    }
    if (need > cap) return NMQ_EINVAL;
    uint8_t *p = out;
    const uint8_t *v = values, *k = keys;
    uint64_t pos = 0;
    for (uint32_t i = 0; i < n; i++) {
        int32_t klen = key_lens ? key_lens[i] : -1;
        uint32_t vlen = value_lens[i];
        pos += nmq_record_put(p + pos, k, klen, v, vlen, raw_lens ? raw_lens[i] : vlen, codec,
                              timestamps ? timestamps[i] : timestamp_ns, producer_id, first_sequence + i,
                              first_offset + i);
        if (klen > 0) k += klen;
        v += vlen;
    }
    return (int64_t)pos;
}

/* The padded size of the record at p, or 0 when its length field cannot be a record or
 * the record would run past `left` bytes. */
static inline uint64_t size_at(const uint8_t *p, uint64_t left) {
    if (left < NMQ_RECORD_HEADER) return 0;
    uint32_t length;
    memcpy(&length, p + NMQ_RECORD_CRC_START, 4);
    uint64_t size = align8(length);
    return length < NMQ_RECORD_HEADER || size > left ? 0 : size;
}

int64_t nmq_record_stamp(void *buf, uint64_t len, uint64_t first_offset) {
    uint8_t *p = buf;
    uint64_t pos = 0, n = 0;
    while (pos < len) { /* a dry walk first: write nothing unless the lengths tile buf */
        uint64_t size = size_at(p + pos, len - pos);
        if (!size) return NMQ_ECORRUPT;
        pos += size;
        n++;
    }
    pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = first_offset + i;
        memcpy(p + pos, &off, 8);
        pos += size_at(p + pos, len - pos);
    }
    return (int64_t)n;
}

int64_t nmq_record_positions(const void *buf, uint64_t len, uint64_t *pos, uint64_t max_n) {
    const uint8_t *p = buf;
    uint64_t at = 0, n = 0;
    while (at < len && n < max_n) {
        uint64_t size = size_at(p + at, len - at);
        if (!size) break;
        pos[n++] = at;
        at += size;
    }
    return (int64_t)n;
}

uint64_t nmq_record_seek(const void *buf, uint64_t len, uint64_t offset) {
    const uint8_t *p = buf;
    uint64_t at = 0;
    while (at < len) {
        uint64_t size = size_at(p + at, len - at), off;
        if (!size) return len;
        memcpy(&off, p + at, 8);
        if (off >= offset) return at;
        at += size;
    }
    return len;
}
