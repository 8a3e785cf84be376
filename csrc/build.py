"""cffi builder for nanomq._native (API / out-of-line mode), run at install time.

The declarations come from csrc/nanomq.h verbatim — the one copy that both cdef()
and the C compiler read — so they cannot drift apart.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = sorted(p.name for p in HERE.glob("*.c"))
CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing"]

ffibuilder = FFI()
ffibuilder.cdef(HERE.joinpath("nanomq.h").read_text())
ffibuilder.set_source(
    "nanomq._native",
    '#include "nmq_internal.h"',
    # setuptools wants paths relative to setup.py
    sources=[f"csrc/{name}" for name in SOURCES],
    include_dirs=["csrc"],
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
