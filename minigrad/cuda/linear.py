"""Linear layer on cuBLAS: the reference's signature (minigrad/linear.py).

forward: one GEMM, then the bias kernel. backward: dx = dout @ W^T and dW += x^T @ dout are
GEMMs (the second accumulates with beta = 1), and db += the column sums of dout is a GEMM
with a ones vector: three calls, no atomics, no copies, whatever the strides of W (the
tied head passes wte^T).
"""
import functools

import cupy

from .gemm import gemm
from .module import i32, i64, launch_elementwise


@functools.lru_cache(maxsize=8)
def _ones(n, dtype):
    """(n,) ones on the device, kept for the few sizes a run uses (column sums as a product)."""
    return cupy.ones(n, dtype=dtype)


def linear_forward(x, w, b):
    """x (..., IN), w (IN, OUT), b (OUT,) or None -> out (..., OUT)."""
    x2 = x.reshape(-1, x.shape[-1])                              # (N, IN)
    out = cupy.empty((x2.shape[0], w.shape[1]), dtype=x.dtype)   # (N, OUT)
    gemm(x2, w, out)
    if b is not None:
        launch_elementwise("add_bias", x.dtype, out.size, out, b, i64(out.size), i32(w.shape[1]))
    return out.reshape(*x.shape[:-1], w.shape[1]), (x, w)


def linear_backward(dout, cache, dw, db):
    """dout (..., OUT); accumulates dw (IN, OUT) and db (OUT,) (or None); returns dx (..., IN)."""
    x, w = cache
    x2 = x.reshape(-1, x.shape[-1])                              # (N, IN)
    dout2 = dout.reshape(-1, dout.shape[-1])                     # (N, OUT)
    gemm(x2.T, dout2, dw, beta=1.0)             # dw += x^T dout
    if db is not None:                                           # db += 1^T dout, full precision
        gemm(_ones(dout2.shape[0], dout.dtype)[None, :], dout2, db[None, :], beta=1.0, tf32=False)
    dx = cupy.empty(x2.shape, dtype=dout.dtype)
    gemm(dout2, w.T, dx)                        # dx = dout W^T
    return dx.reshape(x.shape)
