"""Dropout on the GPU: the reference's signatures (minigrad/dropout.py), kernels in
src/elementwise.cu. No mask is stored: the cache is the site's (p, seed) and the place of the
tensor's first element in the batch, and backward recomputes the same hash.
"""
import cupy

from ..dropout import GOLDEN, M32, keep_threshold, mix32
from .module import i64, launch_elementwise, real, u32


def dropout_args(p, seed, dtype, first=0):
    """The kernels' dropout parameters: (seed, second, threshold, scale, first), with first the
    flat batch index of the tensor's element 0 (minigrad/dropout.py)."""
    return (u32(seed), u32(mix32((seed + GOLDEN) & M32)), u32(keep_threshold(p)), real(dtype, 1.0 / (1.0 - p)),
            i64(first))


def _apply(x, p, seed, first):
    out = cupy.empty(x.shape, dtype=x.dtype)
    launch_elementwise("dropout_apply", x.dtype, x.size, x, out, i64(x.size), *dropout_args(p, seed, x.dtype, first))
    return out


def dropout_forward(x, p, seed, train=True, first_row=0):
    """x (b, ...), p in [0, 1), seed the site's seed, first_row the batch row of x[0] -> out."""
    if not train or p == 0.0:
        return x, None
    first = first_row * (x.size // x.shape[0])
    return _apply(x, p, seed, first), (p, seed, first)


def dropout_backward(dout, cache):
    """dout (...) -> dx (...): the forward's mask, recomputed."""
    return dout if cache is None else _apply(dout, *cache)
