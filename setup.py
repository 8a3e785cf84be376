# cffi_modules cannot be declared in pyproject.toml alone yet; metadata lives there.
from setuptools import setup

setup(cffi_modules=["csrc/build.py:ffibuilder"])
