"""The optimizer on CUDA: the reference's signatures (minigrad/optim.py).

clip_grad_norm is three kernels and no sync: per-block sums of squares over a fixed grid,
one block that adds them and decides the scale, and the scaling; the norm stays on the
device. adamw_update is one kernel over the flat buffers, with the weight-decayed ranges
as a table of bounds (uploaded once per distinct table).
"""
import functools

import cupy
import numpy as np

from .module import i32, i64, launch, launch_elementwise, real

NORM_BLOCKS = 1024               # src/optim.cu


def clip_grad_norm(grads, max_norm, total=None):
    """Scale flat grads in place to norm <= max_norm (max_norm <= 0: no clipping) -> the norm
    before clipping, a 0-d device array. total: as the reference's; it sums the (NORM_BLOCKS,)
    float64 partial sums of squares over the slices' holders, which clip_scale then adds."""
    partial = cupy.empty(NORM_BLOCKS, dtype=cupy.float64)
    launch("sum_squares", grads.dtype, NORM_BLOCKS, 256, grads, partial, i64(grads.size))
    if total is not None:
        partial = total(partial)
    norm_scale = cupy.empty(2, dtype=grads.dtype)
    launch("clip_scale", grads.dtype, 1, 1024, partial, norm_scale, np.float64(max_norm))
    if max_norm > 0:
        launch_elementwise("scale_by", grads.dtype, grads.size, grads, norm_scale, i64(grads.size))
    return norm_scale[0]


@functools.cache
def _decay_bounds(ranges):
    """The sorted starts and stops of `ranges` (a tuple of pairs), on the device."""
    return cupy.asarray(np.array([edge for pair in ranges for edge in pair] or [0], dtype=np.int64))


def adamw_update(params, grads, m, v, decay_ranges, lr, t, beta1, beta2, eps, weight_decay):
    """One AdamW step t over flat buffers, in place (the reference's arguments)."""
    ranges = tuple(map(tuple, decay_ranges))
    bounds = _decay_bounds(ranges)
    T = params.dtype
    launch_elementwise("adamw_update", T, params.size, params, grads, m, v, bounds, i32(2 * len(ranges)),
                       i64(params.size), real(T, lr), real(T, beta1), real(T, 1.0 - beta1), real(T, beta2),
                       real(T, 1.0 - beta2), real(T, eps), real(T, 1.0 - lr * weight_decay),
                       real(T, 1.0 - beta1 ** t), real(T, 1.0 - beta2 ** t))
