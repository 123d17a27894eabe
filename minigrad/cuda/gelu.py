"""GELU on the GPU: the reference's signatures (minigrad/gelu.py), kernels in src/elementwise.cu.

Backward recomputes tanh from x, as the reference does.
"""
import cupy

from .module import i64, launch_elementwise


def gelu_forward(x, keep_grad=True):
    """x (...) -> out (...)."""
    out = cupy.empty(x.shape, dtype=x.dtype)
    launch_elementwise("gelu_forward", x.dtype, x.size, x, out, i64(x.size))
    return out, (x if keep_grad else None)


def gelu_backward(dout, cache):
    """dout (...) -> dx (...) = dout * gelu'(x)."""
    x = cache
    dx = cupy.empty(dout.shape, dtype=dout.dtype)
    launch_elementwise("gelu_backward", dout.dtype, dout.size, dout, x, dx, i64(dout.size))
    return dx
