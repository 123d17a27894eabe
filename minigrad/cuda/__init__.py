"""Fused CUDA kernels for the GPU path, with the reference signatures.

    ops = minigrad.kernels("cuda", "fast")       # calls fast_ops() below

Each layer module here holds the device version of the reference module of the same name
(minigrad/<layer>.py): Python that allocates the outputs and launches kernels from src/*.cu
(one CuPy RawModule per float type, minigrad/cuda/module.py) or cuBLAS (gemm.py). The
reference pair is each kernel's specification: selftest.py holds every op to it, on random
inputs with odd shapes, and fast_ops() runs those checks once per process on first use, so
an op whose kernels fail to compile or disagree with the reference on this GPU is replaced
by the reference pair, with a one-line warning.

Importing this package imports no CuPy; cuda_ops() and fast_ops() do.
"""


def cuda_ops():
    """{op name: CUDA function} for the ops this package's layer modules define (minigrad.ops),
    unchecked. Imports CuPy."""
    from ..ops import collect
    return collect(__name__)


def fast_ops(tf32=True, check=True):
    """{op name: CUDA function}. tf32: float32 matrix products on TF32 tensor cores.
    check: run the self-test on these ops first (once per process and TF32 mode) and leave
    out those that fail it, so that the caller's reference ops stand in for them."""
    from . import gemm
    ops = cuda_ops()
    if check:
        from .selftest import failing_ops
        for name in failing_ops(ops, tf32):
            ops.pop(name, None)
    gemm.ALLOW_TF32 = tf32                     # after the self-test, which sets its own modes
    return ops
