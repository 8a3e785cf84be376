/*
 * reccore.c — nanomq._reccore: a batch of records encoded straight from Python lists; the scan.
 *
 * record.encode_batch lays the values end to end (b"".join), their lengths and the
 * timestamps into arrays, checks the limits in Python, and then makes one C call: ≈ 107 ns a
 * record before the C encoder runs, on the publisher's busiest path. Here the lists are
 * walked in C and each record goes through the one record writer, nmq_record_encode
 * (csrc/record.c, reached through the address nanomq._ffi gives, as the log's and the
 * ring's C methods are), straight from each value's own buffer.
 *
 * Anything this does not take on — a length over its limit, a buffer too small, lists that
 * do not pair up, a timestamp that is not an int — returns -1 with nothing raised, and the
 * caller takes the general path, which names the problem. So the checks and their messages
 * live in one place (nanomq/record.py).
 *
 * scan() is nmq_record_scan for record.scan, which the broker runs on every PUBLISH.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "../nanomq.h"
#include "pymodule.h"

typedef int64_t (*encode_fn)(void *out, uint64_t cap, const void *key, int32_t key_len, const void *value,
                             uint32_t value_len, uint32_t raw_len, uint32_t codec, int64_t timestamp_ns,
                             uint64_t producer_id, uint64_t sequence, uint64_t offset);

/* A view of obj's bytes: bytes objects directly (no buffer to release), others through the
 * buffer protocol (*held set: release it). 0, or -1 for an object that is not a buffer
 * (no exception left set). */
static int bytes_of(PyObject *obj, Py_buffer *view, int *held, const char **p, Py_ssize_t *len) {
    *held = 0;
    if (PyBytes_CheckExact(obj)) {
        *p = PyBytes_AS_STRING(obj);
        *len = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_CONTIG_RO) < 0) {
        PyErr_Clear();
        return -1;
    }
    *held = 1;
    *p = view->buf;
    *len = view->len;
    return 0;
}

PyDoc_STRVAR(encode_into_doc,
             "encode_into(out, at, values, keys, timestamps, producer_id, first_sequence, first_offset, encode)\n"
             " -> int\n--\n\n"
             "Uncompressed records for `values` (and `keys`: None, or one key or None per value) written\n"
             "into `out` from byte `at`, record i with sequence first_sequence + i and offset\n"
             "first_offset + i;\n"
             "`timestamps` one int for all or one per value; `encode` the address of\n"
             "nmq_record_encode. Returns the bytes written, or -1 when the batch must take the\n"
             "general path (a limit, the room, pairing or types): nothing raised then.");

static PyObject *encode_into(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer out;
    Py_ssize_t at;
    PyObject *values, *keys, *stamps;
    PyObject *pid_obj, *seq_obj, *off_obj, *fn_addr;
    if (!PyArg_ParseTuple(args, "w*nOOOO!O!O!O!:encode_into", &out, &at, &values, &keys, &stamps, &PyLong_Type,
                          &pid_obj, &PyLong_Type, &seq_obj, &PyLong_Type, &off_obj, &PyLong_Type, &fn_addr))
        return NULL;
    /* Checked, not wrapped ("K" would take -1 as 2**64 - 1): out of range goes the general way. */
    unsigned long long producer_id = PyLong_AsUnsignedLongLong(pid_obj);
    unsigned long long first_sequence = PyLong_AsUnsignedLongLong(seq_obj);
    unsigned long long first_offset = PyLong_AsUnsignedLongLong(off_obj);
    PyObject *vals = NULL, *ks = NULL, *ts = NULL;
    int64_t result = -1;
    encode_fn encode = (encode_fn)PyLong_AsVoidPtr(fn_addr);
    if (!encode) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "encode_into: no encoder address");
        PyBuffer_Release(&out);
        return NULL;
    }
    if (PyErr_Occurred()) {
        PyErr_Clear();
        goto done;
    }
    if (at < 0 || at > out.len) goto done;
    vals = PySequence_Fast(values, "encode_into: values must be a sequence");
    if (!vals) goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(vals);
    if (keys != Py_None) {
        ks = PySequence_Fast(keys, "encode_into: keys must be a sequence or None");
        if (!ks) goto fail;
        if (PySequence_Fast_GET_SIZE(ks) != n) goto done;
    }
    int64_t one_stamp = 0;
    if (PyLong_Check(stamps)) {
        one_stamp = PyLong_AsLongLong(stamps);
        if (one_stamp == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            goto done;
        }
    } else {
        ts = PySequence_Fast(stamps, "encode_into: timestamps must be an int or a sequence");
        if (!ts) goto fail;
        if (PySequence_Fast_GET_SIZE(ts) != n) goto done;
    }
    uint8_t *base = (uint8_t *)out.buf + at;
    uint64_t cap = (uint64_t)(out.len - at), pos = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t stamp = one_stamp;
        if (ts) {
            stamp = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(ts, i));
            if (stamp == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                goto done;
            }
        }
        Py_buffer vview, kview;
        int vheld, kheld = 0;
        const char *v, *k = NULL;
        Py_ssize_t vlen, klen = -1;
        if (bytes_of(PySequence_Fast_GET_ITEM(vals, i), &vview, &vheld, &v, &vlen) < 0) goto done;
        PyObject *key = ks ? PySequence_Fast_GET_ITEM(ks, i) : Py_None;
        if (key != Py_None && bytes_of(key, &kview, &kheld, &k, &klen) < 0) {
            if (vheld) PyBuffer_Release(&vview);
            goto done;
        }
        int64_t w = -1;
        if (vlen <= NMQ_MAX_PAYLOAD && klen <= NMQ_MAX_PAYLOAD) /* encode checks the exact limits */
            w = encode(base + pos, cap - pos, k, (int32_t)klen, v, (uint32_t)vlen, (uint32_t)vlen, NMQ_CODEC_NONE,
                       stamp, producer_id, first_sequence + (uint64_t)i, first_offset + (uint64_t)i);
        if (vheld) PyBuffer_Release(&vview);
        if (kheld) PyBuffer_Release(&kview);
        if (w < 0) goto done;
        pos += (uint64_t)w;
    }
    result = (int64_t)pos;
done:
    Py_XDECREF(vals);
    Py_XDECREF(ks);
    Py_XDECREF(ts);
    PyBuffer_Release(&out);
    return PyLong_FromLongLong(result);
fail:
    Py_XDECREF(vals);
    Py_XDECREF(ks);
    Py_XDECREF(ts);
    PyBuffer_Release(&out);
    return NULL;
}

PyDoc_STRVAR(scan_doc,
             "scan(buf, first_offset, max_records, scan) -> (count, nbytes, status)\n--\n\n"
             "nmq_record_scan over buf (any contiguous buffer; first_offset -1: not checked,\n"
             "max_records 0: no limit), called through its address `scan`, as plain ints.");

/* record.scan's one C call without cffi's per-call objects (a result struct, a buffer
 * wrapper, an enum and a named tuple cost more than the scan of a small batch). */
static PyObject *scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "scan() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    long long first = PyLong_AsLongLong(args[1]);
    if (first == -1 && PyErr_Occurred()) return NULL;
    unsigned long long max_records = PyLong_AsUnsignedLongLong(args[2]);
    if (max_records == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    nmq_scan_fn fn = (nmq_scan_fn)PyLong_AsVoidPtr(args[3]);
    if (!fn) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "scan: no scanner address");
        return NULL;
    }
    Py_buffer view;
    const char *p;
    Py_ssize_t len;
    int held;
    if (bytes_of(args[0], &view, &held, &p, &len) < 0) {
        PyErr_Format(PyExc_TypeError, "scan: a bytes-like object is required, not '%.100s'", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    nmq_scan_result res;
    int rc;
    if (len > 65536) { /* a long CRC pass: let other threads run meanwhile, as the cffi call did */
        Py_BEGIN_ALLOW_THREADS
        rc = fn(p, (uint64_t)len, (int64_t)first, (uint64_t)max_records, &res);
        Py_END_ALLOW_THREADS
    } else {
        rc = fn(p, (uint64_t)len, (int64_t)first, (uint64_t)max_records, &res);
    }
    if (held) PyBuffer_Release(&view);
    if (rc != 0) {
        PyErr_Format(PyExc_RuntimeError, "nmq_record_scan failed with status %d", rc);
        return NULL;
    }
    return Py_BuildValue("(KKi)", (unsigned long long)res.count, (unsigned long long)res.nbytes, (int)res.status);
}

static PyMethodDef methods[] = {
    {"encode_into", encode_into, METH_VARARGS, encode_into_doc},
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, scan_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nanomq._reccore",
    .m_doc = "Records encoded straight from Python lists, and scanned (see csrc/py/reccore.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__reccore(void) { return PyModule_Create(&module); }
