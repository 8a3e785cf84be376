/*
 * msgcore.c — nanomq._msgcore: the Subscriber's messages of a DELIVER, read in C.
 *
 * A DELIVER whose records are all valid, of one size and one key length and uncompressed
 * — what a producer of equal messages makes, and every one-record DELIVER a caught-up
 * subscriber gets — is turned into Message tuples in one call: the fixed fields, the scan
 * (CRC and header checks, through nmq_record_scan's address as nanomq._reccore does), the
 * uniformity check and per record two ints, the key and value bytes and one tuple, with no
 * Python frame, slice or zip in between. Measured: the Python version of the building
 * (strided slices, a list comprehension, map(tuple.__new__)) took ≈ 475 ns a message on the
 * throughput path; at 10k msg/s, one message per DELIVER, the Subscriber's separate steps
 * (parse the fields, validate, copy, check uniformity in Python, build) were ≈ 10 µs a
 * message, and every µs of the subscriber's there adds several to the end-to-end P50 (it
 * is near saturation on a shared vCPU: a 15 µs delay per message measured +60-170 µs).
 *
 * Anything else returns None with nothing raised and the Subscriber reads the records one
 * by one in Python, which drops duplicates and names a corrupt record. Only the header
 * fields read here are trusted to be where docs/FORMAT.md says (offset at byte 0,
 * timestamp at 32, key at 64, value after it), after the scan validated every record.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../nmq_internal.h"
#include "pymodule.h"

/* The messages of n records of `size` bytes each from rec: cls(topic, partition, offset,
 * timestamp, key, value). The caller has checked that the records tile their buffer and
 * that the key and value lengths fit in `size`. A new list, or NULL with an exception. */
static PyObject *build_messages(const char *rec, Py_ssize_t n, Py_ssize_t size, Py_ssize_t key_len,
                                Py_ssize_t value_len, int has_key, PyObject *topic, PyObject *partition,
                                PyTypeObject *cls) {
    /* A message holds a str, ints and bytes only, and (with no instance dict) can be given
     * nothing else: it can never be part of a reference cycle, so the cyclic GC need not
     * track it. Tracked, a batch of 256 kept the GC busy: gen-0 collections walking every
     * live message were ≈ 20 % of the subscriber's CPU on the throughput path. */
    const int untrack = cls->tp_dictoffset == 0;
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++, rec += size) {
        PyObject *msg = cls->tp_alloc(cls, 6);
        if (!msg) goto fail;
        PyList_SET_ITEM(out, i, msg); /* owned by the list from here: freed with it on failure */
        PyObject *off = PyLong_FromUnsignedLongLong(nmq_ld64(rec));
        PyObject *ts = PyLong_FromLongLong((long long)nmq_ld64(rec + 32));
        PyObject *key = has_key ? PyBytes_FromStringAndSize(rec + NMQ_RECORD_HEADER, key_len) : Py_NewRef(Py_None);
        PyObject *value = PyBytes_FromStringAndSize(rec + NMQ_RECORD_HEADER + key_len, value_len);
        PyTuple_SET_ITEM(msg, 0, Py_NewRef(topic));
        PyTuple_SET_ITEM(msg, 1, Py_NewRef(partition));
        PyTuple_SET_ITEM(msg, 2, off);
        PyTuple_SET_ITEM(msg, 3, ts);
        PyTuple_SET_ITEM(msg, 4, key);
        PyTuple_SET_ITEM(msg, 5, value);
        if (!off || !ts || !key || !value) goto fail; /* a NULL item is fine for the tuple's dealloc */
        if (untrack) PyObject_GC_UnTrack(msg);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* A DELIVER body: u32 subscription, i32 partition, u64 first, next and end offsets, records. */
enum { DELIVER_FIELDS = 32, OFF_LENGTH = 12, OFF_FLAGS = 21, OFF_KEY_LEN = 22, OFF_VALUE_LEN = 24 };

PyDoc_STRVAR(deliver_doc,
             "deliver_messages(body, topic, part_of, cls, scan) -> (subscription, partition, end_offset,\n"
             " messages, size) | None\n--\n\n"
             "The messages of a DELIVER body (bytes) whose records are all valid (nmq_record_scan,\n"
             "called through its address `scan`), of one size and one key length, uncompressed, for\n"
             "a subscription that part_of (dict: subscription -> partition) knows: cls(topic,\n"
             "partition, offset, timestamp, key, value) each (cls a tuple subclass with six fields,\n"
             "nanomq.Message), with `size` the bytes each record takes. None for any other body\n"
             "(nothing raised): the caller reads it record by record, which names what is wrong.");

static PyObject *deliver_messages(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "deliver_messages() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *body = args[0], *topic = args[1], *part_of = args[2];
    PyTypeObject *cls = (PyTypeObject *)args[3];
    if (!PyUnicode_Check(topic) || !PyDict_Check(part_of) || !PyType_Check(args[3]) ||
        !PyType_IsSubtype(cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "deliver_messages(body, topic: str, part_of: dict, cls: tuple subclass, scan)");
        return NULL;
    }
    nmq_scan_fn scan = (nmq_scan_fn)PyLong_AsVoidPtr(args[4]);
    if (!scan) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "deliver_messages: no scanner address");
        return NULL;
    }
    if (!PyBytes_CheckExact(body) || PyBytes_GET_SIZE(body) <= DELIVER_FIELDS) Py_RETURN_NONE;
    const char *p = PyBytes_AS_STRING(body);
    const char *recs = p + DELIVER_FIELDS;
    const Py_ssize_t len = PyBytes_GET_SIZE(body) - DELIVER_FIELDS;
    PyObject *sub = PyLong_FromUnsignedLong(nmq_ld32(p));
    if (!sub) return NULL;
    PyObject *partition = PyDict_GetItemWithError(part_of, sub); /* borrowed */
    if (!partition) {
        Py_DECREF(sub);
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE; /* a cancelled subscription: the caller drops what it sent */
    }
    Py_INCREF(partition);
    PyObject *result = NULL;
    nmq_scan_result res;
    if (scan(recs, (uint64_t)len, -1, 0, &res) != 0 || res.status != NMQ_SCAN_END || res.nbytes != (uint64_t)len)
        goto decline;
    /* valid records: each length is within the buffer and matches its key and value lengths */
    const uint32_t length = nmq_ld32(recs + OFF_LENGTH);
    const uint8_t flags = (uint8_t)recs[OFF_FLAGS];
    const uint16_t key_len = nmq_ld16(recs + OFF_KEY_LEN);
    const Py_ssize_t size = (Py_ssize_t)((length + 7u) & ~7u);
    if ((flags & NMQ_RECORD_CODEC_MASK) != NMQ_CODEC_NONE || len % size) goto decline;
    const Py_ssize_t n = len / size;
    for (Py_ssize_t i = 1; i < n; i++) {
        const char *r = recs + i * size;
        if (nmq_ld32(r + OFF_LENGTH) != length || (uint8_t)r[OFF_FLAGS] != flags || nmq_ld16(r + OFF_KEY_LEN) != key_len)
            goto decline;
    }
    const Py_ssize_t value_len = (Py_ssize_t)nmq_ld32(recs + OFF_VALUE_LEN);
    if (NMQ_RECORD_HEADER + key_len + value_len != (Py_ssize_t)length) goto decline;
    PyObject *msgs =
        build_messages(recs, n, size, key_len, value_len, (flags & NMQ_RECORD_FLAG_KEY) != 0, topic, partition, cls);
    if (msgs)
        result = Py_BuildValue("(OOKNn)", sub, partition, (unsigned long long)nmq_ld64(p + 24), msgs, size);
    goto done;
decline:
    result = Py_NewRef(Py_None);
done:
    Py_DECREF(sub);
    Py_DECREF(partition);
    return result;
}

static PyMethodDef methods[] = {
    {"deliver_messages", (PyCFunction)(void (*)(void))deliver_messages, METH_FASTCALL, deliver_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nanomq._msgcore",
    .m_doc = "The Subscriber's message building in C (see csrc/py/msgcore.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__msgcore(void) { return PyModule_Create(&module); }
