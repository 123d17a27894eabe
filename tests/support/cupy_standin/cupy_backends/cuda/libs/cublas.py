"""Fake cuBLAS binding (cupy_backends.cuda.libs.cublas): GEMMs computed by NumPy on fake device
memory. See _standin/cublas.py."""
from _standin import cublas as _cublas
from _standin.names import install as _install

_install(__name__, _cublas.TABLE)
