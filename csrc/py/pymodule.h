/*
 * pymodule.h — what the CPython extensions under csrc/py/ share.
 */
#ifndef NANOMQ_PY_PYMODULE_H
#define NANOMQ_PY_PYMODULE_H

#include <Python.h>
#include <stdint.h>
/* nanomq.h (no include guard: cffi reads it too) is included before this header. */

/* nmq_record_scan's signature: the extensions call it through the address nanomq.record gives
 * (record.SCAN_ADDRESS), as the log's and the ring's C methods call theirs. */
typedef int (*nmq_scan_fn)(const void *buf, uint64_t len, int64_t first_offset, uint64_t max_records,
                           nmq_scan_result *out);

/* The module `def` with its one type added under `name`; NULL with an exception set. */
static inline PyObject *nmq_module_with_type(PyModuleDef *def, PyTypeObject *type, const char *name) {
    if (PyType_Ready(type) < 0) return NULL;
    PyObject *m = PyModule_Create(def);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, name, (PyObject *)type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

#endif
