"""LayerNorm kernels: the reference's signatures (minigrad/layernorm.py).

forward is one kernel (one block per row), and so is the residual add fused with it. The
backward is two: one pass over the rows computes dx and each block's partial column sums
for dweight and dbias, a second adds those partials in block order (no atomics, so the
sums are the same on every run).
"""
import cupy

from .. import layernorm as reference
from ..layernorm import EPS
from .module import i32, launch, real

LN_COLS = 8                      # columns per thread (src/layernorm.cu)
BACKWARD_BLOCKS = 1024           # row groups of the backward: a fixed split, whatever the device


MAX_THREADS = 512                # the backward holds ~5 x LN_COLS values a thread: 128 double
                                 # registers, so 512 threads fill a block's 65,536
MAX_C = LN_COLS * MAX_THREADS    # wider rows (n_embd > 4096) run the reference pair


def _threads(C):
    """Threads per row: a multiple of 32 that gives each at most LN_COLS columns."""
    threads = -(-C // LN_COLS)                                       # ceil(C / LN_COLS)
    return 32 * -(-threads // 32)                                    # whole warps


def _forward(x, a, weight, bias, eps):
    """s = x (+ a), and layernorm(s) -> (s, out, cache)."""
    C = x.shape[-1]
    N = x.size // C
    out = cupy.empty(x.shape, dtype=x.dtype)                             # (..., C)
    xhat = cupy.empty(x.shape, dtype=x.dtype)                            # (..., C)
    rstd = cupy.empty((*x.shape[:-1], 1), dtype=x.dtype)                 # (..., 1)
    if a is None:
        s = x
        launch("layernorm_forward", x.dtype, N, _threads(C), x, weight, bias, out, xhat, rstd, i32(C),
               real(x.dtype, eps))
    else:
        s = cupy.empty(x.shape, dtype=x.dtype)
        launch("residual_layernorm_forward", x.dtype, N, _threads(C), x, a, s, weight, bias, out, xhat, rstd,
               i32(C), real(x.dtype, eps))
    return s, out, (xhat, rstd, weight)


def layernorm_forward(x, weight, bias, eps=EPS):
    """x (..., C), weight (C,), bias (C,) -> out (..., C)."""
    if x.shape[-1] > MAX_C:
        return reference.layernorm_forward(x, weight, bias, eps)
    _, out, cache = _forward(x, None, weight, bias, eps)
    return out, cache


def residual_layernorm_forward(x, a, weight, bias, eps=EPS):
    """x, a (..., C) -> (x + a, layernorm(x + a), cache), in one kernel."""
    if x.shape[-1] > MAX_C:
        return reference.residual_layernorm_forward(x, a, weight, bias, eps)
    return _forward(x, a, weight, bias, eps)


def layernorm_backward(dout, cache, dweight, dbias):
    """dout (..., C); accumulates dweight (C,), dbias (C,); returns dx (..., C)."""
    if dout.shape[-1] > MAX_C:                       # the reference's cache has the same layout
        return reference.layernorm_backward(dout, cache, dweight, dbias)
    xhat, rstd, weight = cache
    C = dout.shape[-1]
    N = dout.size // C
    blocks = min(N, BACKWARD_BLOCKS)
    rows_per_block = -(-N // blocks)
    blocks = -(-N // rows_per_block)
    dx = cupy.empty(dout.shape, dtype=dout.dtype)
    partial = cupy.empty((blocks, 2, C), dtype=dout.dtype)              # dweight, dbias per block
    launch("layernorm_backward", dout.dtype, blocks, _threads(C), dout, xhat, rstd, weight, dx, partial,
           i32(N), i32(C), i32(rows_per_block))
    launch("layernorm_param_grads", dout.dtype, -(-2 * C // 256), 256, partial, dweight, dbias, i32(blocks),
           i32(C))
    return dx
