/*
 * pymodule.h — what the CPython extensions under csrc/py/ share.
 */
#ifndef NANOMQ_PY_PYMODULE_H
#define NANOMQ_PY_PYMODULE_H

#include <Python.h>

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
