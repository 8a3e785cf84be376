/*
 * ringcore.c — nanomq._ringcore: Ring.push() and Ring.pop() as CPython methods.
 *
 * Why not cffi here: one message per call is bounded by call overhead, not by the
 * ring. Through cffi a push costs a Python method frame plus a cffi call (≈ 110 ns
 * with a bytes argument), and a pop a frame, a cffi call and an mmap slice; measured
 * between two pinned processes that capped one-per-call traffic near 1 M msg/s. As
 * methods of a C base type, push passes the bytes' buffer straight to nmq_ring_push
 * and pop builds the bytes object from the record in one step — no frame, no cffi
 * conversion, no intermediate slice.
 *
 * This module does not link the ring: csrc/ring.c lives in the cffi module
 * (nanomq._native), and ring.py hands us the addresses of nmq_ring_push and
 * nmq_ring_peek and of the handle, with the objects that own them (kept alive
 * here). Everything else — errors, blocking waits, peeks — stays in ring.py: a
 * failure calls back Ring._fail(rc, size), which raises the right exception.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

#include "../nanomq.h"
#include "pymodule.h"

typedef int (*push_fn)(nmq_ring *r, const void *data, uint32_t len);
typedef int64_t (*peek_fn)(nmq_ring *r);

typedef struct {
    PyObject_HEAD
    nmq_ring *ring;       /* the handle (owned by `keep`) */
    const char *base;     /* first byte of the mapped region (owned by `keep`) */
    push_fn push;
    peek_fn peek;
    PyObject *keep;       /* whatever owns ring and base: kept alive while we are */
    PyObject *peek_view;  /* Ring._peek_view: a record handed out by peek(), or None */
} RingCore;

static int core_traverse(RingCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->keep);
    Py_VISIT(self->peek_view);
    return 0;
}

static int core_clear(RingCore *self) {
    Py_CLEAR(self->keep);
    Py_CLEAR(self->peek_view);
    return 0;
}

static void core_dealloc(RingCore *self) {
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *core_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    RingCore *self = (RingCore *)type->tp_alloc(type, 0);
    if (self) {
        self->peek_view = Py_NewRef(Py_None);
    }
    return (PyObject *)self;
}

/* _bind(ring, base, push, peek, keep): addresses as ints, keep owns them. */
static PyObject *core_bind(RingCore *self, PyObject *args) {
    unsigned long long ring, base, push, peek;
    PyObject *keep;
    if (!PyArg_ParseTuple(args, "KKKKO:_bind", &ring, &base, &push, &peek, &keep)) return NULL;
    if (!ring || !base || !push || !peek) {
        PyErr_SetString(PyExc_ValueError, "_bind: a null address");
        return NULL;
    }
    self->ring = (nmq_ring *)(uintptr_t)ring;
    self->base = (const char *)(uintptr_t)base;
    self->push = (push_fn)(uintptr_t)push;
    self->peek = (peek_fn)(uintptr_t)peek;
    Py_XSETREF(self->keep, Py_NewRef(keep));
    Py_RETURN_NONE;
}

static PyObject *fail(RingCore *self, long long rc, Py_ssize_t size) {
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_fail", "Ln", rc, size);
    if (r) { /* _fail always raises; be safe if it did not */
        Py_DECREF(r);
        PyErr_Format(PyExc_RuntimeError, "ring call failed with status %lld", rc);
    }
    return NULL;
}

static int unbound(RingCore *self) {
    if (self->ring) return 0;
    PyErr_SetString(PyExc_RuntimeError, "ring handle is not bound");
    return 1;
}

PyDoc_STRVAR(push_doc, "push(data) -> bool\n--\n\nAppend one record without blocking; False when the ring is full.");

static PyObject *core_push(RingCore *self, PyObject *data) {
    if (unbound(self)) return NULL;
    int rc;
    Py_ssize_t n;
    if (PyBytes_CheckExact(data)) {
        n = PyBytes_GET_SIZE(data);
        if (n > UINT32_MAX) return fail(self, NMQ_ETOOBIG, n);
        rc = self->push(self->ring, PyBytes_AS_STRING(data), (uint32_t)n);
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
        n = view.len;
        rc = n > UINT32_MAX ? NMQ_ETOOBIG : self->push(self->ring, view.buf, (uint32_t)n);
        PyBuffer_Release(&view);
    }
    if (rc == NMQ_OK) Py_RETURN_TRUE;
    if (rc == NMQ_AGAIN) Py_RETURN_FALSE;
    return fail(self, rc, n);
}

PyDoc_STRVAR(pop_doc, "pop() -> bytes | None\n--\n\nTake one record without blocking; None when the ring is empty.");

static PyObject *core_pop(RingCore *self, PyObject *unused) {
    (void)unused;
    if (unbound(self)) return NULL;
    if (self->peek_view && self->peek_view != Py_None) { /* a peeked record is given back first: Ring._drop_peek */
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_drop_peek", NULL);
        if (!r) return NULL;
        Py_DECREF(r);
    }
    int64_t ref = self->peek(self->ring);
    if (ref > 0) {
        /* The record stays held (not overwritten) until the next consumer call, so
         * the bytes can be copied after the call returned. */
        uint64_t off = (uint64_t)ref >> NMQ_REF_LEN_BITS;
        Py_ssize_t len = (Py_ssize_t)(ref & ((1 << NMQ_REF_LEN_BITS) - 1));
        return PyBytes_FromStringAndSize(self->base + off, len);
    }
    if (ref == NMQ_AGAIN) Py_RETURN_NONE;
    return fail(self, ref, 0);
}

static PyMethodDef core_methods[] = {
    {"_bind", (PyCFunction)core_bind, METH_VARARGS, "Bind to a ring handle (ring.py's business)."},
    {"push", (PyCFunction)core_push, METH_O, push_doc},
    {"pop", (PyCFunction)core_pop, METH_NOARGS, pop_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef core_members[] = {
    {"_peek_view", T_OBJECT, offsetof(RingCore, peek_view), 0, "the record peek() handed out, or None"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RingCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nanomq._ringcore.RingCore",
    .tp_doc = PyDoc_STR("The C base of nanomq.Ring: its one-message push and pop."),
    .tp_basicsize = sizeof(RingCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = core_new,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_members = core_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nanomq._ringcore",
    .m_doc = "Ring.push and Ring.pop as CPython methods (see csrc/py/ringcore.c).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__ringcore(void) { return nmq_module_with_type(&module, &RingCoreType, "RingCore"); }
