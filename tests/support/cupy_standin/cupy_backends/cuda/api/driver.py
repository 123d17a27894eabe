"""Fake CUDA driver API (cupy_backends.cuda.api.driver, alias cupy.cuda.driver)."""
from _standin import cuda_namespace as _namespace
from _standin.names import install as _install

_install(__name__, _namespace.DRIVER, names_of="cupy.cuda.driver")
