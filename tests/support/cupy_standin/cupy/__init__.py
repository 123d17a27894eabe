"""Fake `cupy` (the cupy stand-in): NumPy-backed, strict about CuPy's real API, counting kernel
launches, syncs and transfers. Put tests/support/cupy_standin first on sys.path to get it; see standin.py."""
from _standin import functions as _functions
from _standin.names import install as _install
from cupy import cuda, random  # noqa: F401  (real CuPy imports both eagerly)

_install(__name__, _functions.TABLE, _functions.resolve)
