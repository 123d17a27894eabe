"""Fake cupy.cuda.compiler (cupy stand-in): only CompileException (nothing is compiled)."""
from _standin import cuda_namespace as _namespace
from _standin.names import install as _install

_install(__name__, _namespace.COMPILER)
