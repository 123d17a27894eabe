"""Fake cupy.cuda.nccl (cupy stand-in): what `from cupy_backends.cuda.libs.nccl import *` gives
the real module when libnccl loads; collectives through MPI. See _standin/nccl.py."""
from _standin import nccl as _nccl
from _standin.names import install as _install

_install(__name__, _nccl.TABLE)
