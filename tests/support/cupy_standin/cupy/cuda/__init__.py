"""Fake cupy.cuda (cupy stand-in): one fake H200, streams, events, memory."""
from _standin import cuda_namespace as _namespace
from _standin.names import install as _install
from cupy.cuda import compiler, device, memory, runtime, stream  # noqa: F401
from cupy_backends.cuda.api import driver  # noqa: F401

_install(__name__, _namespace.CUDA, _namespace.lazy_cuda)
