"""Fake NCCL binding (cupy_backends.cuda.libs.nccl): communicators over MPI.COMM_WORLD whose
collectives mpi4py performs on the fake device memory. See _standin/nccl.py."""
from _standin import nccl as _nccl
from _standin.names import install as _install

_install(__name__, _nccl.TABLE)
