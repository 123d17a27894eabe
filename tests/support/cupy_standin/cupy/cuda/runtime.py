"""cupy.cuda.runtime is cupy_backends.cuda.api.runtime (as in CuPy, which re-exports it)."""
import sys

from cupy_backends.cuda.api import runtime

sys.modules[__name__] = runtime
