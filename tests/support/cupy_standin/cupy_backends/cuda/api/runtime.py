"""Fake CUDA runtime API (cupy_backends.cuda.api.runtime, alias cupy.cuda.runtime)."""
from _standin import cuda_namespace as _namespace
from _standin.names import install as _install

_install(__name__, _namespace.RUNTIME, names_of="cupy.cuda.runtime")
