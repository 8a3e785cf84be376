/*
 * logcore.c — nanomq._logcore: Log.append() as a CPython method.
 *
 * Why not cffi here: one append per call is bounded by call overhead, not by the
 * log. Through cffi the C append with its nine arguments costs ≈ 600 ns a call here
 * (argument conversion and a GIL release and re-acquire), the Python method around it
 * ≈ 1 µs in all, which put "one 100-byte append per call" at 0.85-1.3 M/s. As a method
 * of a C base type the common call — append(value), append(value, key) or
 * append(value, key=key) with bytes, fsync "never" or "interval" — goes straight to
 * nmq_seg_append.
 *
 * This module does not link the log: csrc/log.c lives in the cffi module
 * (nanomq._native), and log.py hands us the addresses of the writer and of
 * nmq_seg_append, with the object that owns the writer (kept alive here). Every other
 * call — keywords, other buffer types, fsync "always", and any status but success
 * (a full segment to roll, a closed or failed log, a record over the limits) — goes to
 * the Python implementation Log._append_py, which redoes it (a failed C append wrote
 * nothing) and raises what it must.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "../nanomq.h"
#include "pymodule.h"

typedef int64_t (*append_fn)(nmq_seg *s, const void *value, uint32_t vlen, const void *key, int32_t klen,
                             int64_t ts, int32_t ts_now, uint64_t producer_id, uint64_t sequence);

/* Above this many bytes the copy is worth releasing the GIL for (as the cffi call did). */
#define RELEASE_GIL_BYTES 16384

typedef struct {
    PyObject_HEAD
    nmq_seg *seg;     /* the writer (owned by `keep`); NULL until bound */
    append_fn append; /* nmq_seg_append */
    int fast;         /* 0: every call takes the Python path (fsync "always") */
    PyObject *keep;   /* whatever owns seg: kept alive while we are */
} LogCore;

static int core_traverse(LogCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->keep);
    return 0;
}

static int core_clear(LogCore *self) {
    Py_CLEAR(self->keep);
    return 0;
}

static void core_dealloc(LogCore *self) {
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *core_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    return type->tp_alloc(type, 0);
}

/* _bind(seg, append, fast, keep): addresses as ints, keep owns the writer. */
static PyObject *core_bind(LogCore *self, PyObject *args) {
    unsigned long long seg, append;
    int fast;
    PyObject *keep;
    if (!PyArg_ParseTuple(args, "KKpO:_bind", &seg, &append, &fast, &keep)) return NULL;
    if (!seg || !append) {
        PyErr_SetString(PyExc_ValueError, "_bind: a null address");
        return NULL;
    }
    self->seg = (nmq_seg *)(uintptr_t)seg;
    self->append = (append_fn)(uintptr_t)append;
    self->fast = fast;
    Py_XSETREF(self->keep, Py_NewRef(keep));
    Py_RETURN_NONE;
}

static PyObject *slow(LogCore *self, PyObject *const *args, size_t nargs, PyObject *kwnames) {
    PyObject *meth = PyObject_GetAttrString((PyObject *)self, "_append_py");
    if (!meth) return NULL;
    PyObject *r = PyObject_Vectorcall(meth, args, nargs, kwnames);
    Py_DECREF(meth);
    return r;
}

PyDoc_STRVAR(append_doc,
             "append(value, key=None, *, timestamp_ns=None, producer_id=0, sequence=0) -> int\n--\n\n"
             "Append one record; returns its offset, durable per the fsync policy when it returns.");

/* The key of append(value, key) or append(value, key=key): 1 with *key set (Py_None for
 * none), 0 for any other form of call. */
static int plain_call(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **key) {
    if (!kwnames) {
        if (nargs == 1 || nargs == 2) {
            *key = nargs == 2 ? args[1] : Py_None;
            return 1;
        }
        return 0;
    }
    if (nargs == 1 && PyTuple_GET_SIZE(kwnames) == 1 &&
        PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "key") == 0) {
        *key = args[1];
        return 1;
    }
    return 0;
}

static PyObject *core_append(LogCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *k;
    if (self->seg && self->fast && plain_call(args, nargs, kwnames, &k) && PyBytes_CheckExact(args[0]) &&
        (k == Py_None || PyBytes_CheckExact(k))) {
        Py_ssize_t vlen = PyBytes_GET_SIZE(args[0]);
        const char *key = NULL;
        Py_ssize_t klen = -1;
        if (k != Py_None) {
            key = PyBytes_AS_STRING(k);
            klen = PyBytes_GET_SIZE(k);
        }
        /* Lengths past the record limits are refused by nmq_seg_append (NMQ_ETOOBIG); only
         * what would not fit its parameter types is sent to the slow path here. */
        if (vlen <= (Py_ssize_t)UINT32_MAX && klen <= (Py_ssize_t)INT32_MAX) {
            int64_t off;
            if (vlen + (klen > 0 ? klen : 0) > RELEASE_GIL_BYTES) {
                Py_BEGIN_ALLOW_THREADS
                off = self->append(self->seg, PyBytes_AS_STRING(args[0]), (uint32_t)vlen, key, (int32_t)klen, 0, 1,
                                   0, 0);
                Py_END_ALLOW_THREADS
            } else {
                off = self->append(self->seg, PyBytes_AS_STRING(args[0]), (uint32_t)vlen, key, (int32_t)klen, 0, 1, 0,
                                   0);
            }
            if (off >= 0) return PyLong_FromLongLong(off);
        }
    }
    return slow(self, args, (size_t)nargs, kwnames);
}

static PyMethodDef core_methods[] = {
    {"_bind", (PyCFunction)core_bind, METH_VARARGS, "Bind to a log writer (log.py's business)."},
    {"append", (PyCFunction)(void (*)(void))core_append, METH_FASTCALL | METH_KEYWORDS, append_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LogCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nanomq._logcore.LogCore",
    .tp_doc = PyDoc_STR("The C base of nanomq.log.Log: its one-record append."),
    .tp_basicsize = sizeof(LogCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = core_new,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nanomq._logcore",
    .m_doc = "Log.append as a CPython method (see csrc/py/logcore.c).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__logcore(void) { return nmq_module_with_type(&module, &LogCoreType, "LogCore"); }
