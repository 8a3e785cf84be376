# cffi_modules cannot be declared in pyproject.toml alone yet; metadata lives there.
# nanomq._ringcore is the ring's one-message push/pop as CPython methods (csrc/py/ringcore.c),
# nanomq._logcore the log's one-record append (csrc/py/logcore.c), nanomq._msgcore the
# Subscriber's message building (csrc/py/msgcore.c), nanomq._reccore records encoded from
# Python lists (csrc/py/reccore.c).
from setuptools import Extension, setup

CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror"]
setup(
    cffi_modules=["csrc/build.py:ffibuilder"],
    ext_modules=[
        Extension("nanomq._ringcore", ["csrc/py/ringcore.c"], extra_compile_args=CFLAGS),
        Extension("nanomq._logcore", ["csrc/py/logcore.c"], extra_compile_args=CFLAGS),
        Extension("nanomq._msgcore", ["csrc/py/msgcore.c"], extra_compile_args=CFLAGS),
        Extension("nanomq._reccore", ["csrc/py/reccore.c"], extra_compile_args=CFLAGS),
    ],
)
