"""Attention on CUDA: the reference's signature and math (minigrad/attention.py).

forward: the qkv GEMM; one kernel splits it into heads and adds the bias (writing k and v
straight into the KV cache when there is one); the scores q k^T are one strided-batched
GEMM over all B*H heads; one kernel does the scale, the causal mask, the softmax and the
dropout; probs @ v is another batched GEMM; one kernel merges the heads; the projection.
backward runs the same in reverse, with the softmax backward (through the recomputed
dropout mask) in one kernel and dq, dk, dv merged into one (B, T, 3C) buffer by another.
The whole T x T square is computed: on a GPU, skipping the masked blocks would cost more
launches than it saves.
"""
import math

import cupy

from .dropout import dropout_args
from .gemm import gemm
from .linear import linear_backward, linear_forward
from .module import i32, i64, launch, launch_elementwise, real

ROWS_PER_BLOCK = 8               # softmax rows per block: one warp each


def _softmax_args(rows, T, S, t0, hs, drop, p, seed, first, dtype):
    dropout = dropout_args(p, seed, dtype, first) if drop else dropout_args(0.0, 0, dtype)
    return (i64(rows), i32(T), i32(S), i32(t0), real(dtype, 1.0 / math.sqrt(hs)), i32(drop), *dropout)


def attention_forward(x, w_qkv, b_qkv, w_proj, b_proj, n_head, dropout_p=0.0, seed=0, train=True,
                      kv_cache=None, t0=0, first_row=0):
    """x (B, T, C) -> out (B, T, C); kv_cache None or (k, v), each (B, H, block_size, hs);
    first_row: the batch row of x[0] (the dropout mask's place, minigrad/dropout.py)."""
    B, T, C = x.shape
    H, hs = n_head, C // n_head
    if kv_cache is None and t0 != 0:
        raise ValueError("attention_forward: an offset t0 needs a kv_cache")
    if kv_cache is not None and t0 + T > kv_cache[0].shape[2]:
        raise ValueError(f"attention_forward: {t0} + {T} positions exceed the cache's {kv_cache[0].shape[2]}")
    qkv, qkv_cache = linear_forward(x, w_qkv, None)                     # (B, T, 3C), bias below
    q = cupy.empty((B, H, T, hs), dtype=x.dtype)
    if kv_cache is None:
        k, v = cupy.empty((B, H, T, hs), dtype=x.dtype), cupy.empty((B, H, T, hs), dtype=x.dtype)
    else:
        k, v = kv_cache                                                 # (B, H, block_size, hs)
    launch_elementwise("qkv_split", x.dtype, qkv.size, qkv, b_qkv, q, k, v, i32(B), i32(T), i32(H), i32(hs),
                       i32(k.shape[2]), i32(t0))
    S = t0 + T
    k, v = k[:, :, :S], v[:, :, :S]                                     # (B, H, S, hs) views
    att = cupy.empty((B, H, T, S), dtype=x.dtype)
    gemm(q, k.transpose(0, 1, 3, 2), att)                               # scores q k^T, unscaled
    drop = train and dropout_p > 0.0
    dropped = cupy.empty_like(att) if drop else att
    rows = B * H * T
    first = first_row * H * T * S                                       # flat index of att[0, 0, 0, 0]
    launch("softmax_forward", x.dtype, -(-rows // ROWS_PER_BLOCK), 32 * ROWS_PER_BLOCK, att, dropped,
           *_softmax_args(rows, T, S, t0, hs, drop, dropout_p, seed, first, x.dtype))
    y_heads = cupy.empty((B, H, T, hs), dtype=x.dtype)
    gemm(dropped, v, y_heads)                                           # (B, H, T, hs)
    y = cupy.empty((B, T, C), dtype=x.dtype)
    launch_elementwise("merge_heads", x.dtype, y.size, y_heads, y, i32(B), i32(T), i32(H), i32(hs))
    out, proj_cache = linear_forward(y, w_proj, b_proj)                 # (B, T, C)
    dropout = (dropout_p, seed, first) if drop else None
    return out, (qkv_cache, q, k, v, att, dropped, dropout, proj_cache, n_head)


def attention_backward(dout, cache, dw_qkv, db_qkv, dw_proj, db_proj):
    """dout (B, T, C); accumulates the four weight gradients; returns dx (B, T, C)."""
    qkv_cache, q, k, v, probs, dropped, dropout, proj_cache, n_head = cache
    B, T, C = dout.shape
    H, hs = n_head, C // n_head
    dy = linear_backward(dout, proj_cache, dw_proj, db_proj)            # (B, T, C)
    dy_heads = cupy.empty((B, H, T, hs), dtype=dout.dtype)
    launch_elementwise("split_heads", dout.dtype, dy.size, dy, dy_heads, i32(B), i32(T), i32(H), i32(hs))
    dp = cupy.empty((B, H, T, T), dtype=dout.dtype)
    gemm(dy_heads, v.transpose(0, 1, 3, 2), dp)                         # d dropped probs
    dv = cupy.empty((B, H, T, hs), dtype=dout.dtype)
    gemm(dropped.transpose(0, 1, 3, 2), dy_heads, dv)
    rows = B * H * T
    p, seed, first = dropout if dropout else (0.0, 0, 0)
    launch("softmax_backward", dout.dtype, -(-rows // ROWS_PER_BLOCK), 32 * ROWS_PER_BLOCK, dp, probs,
           *_softmax_args(rows, T, T, 0, hs, dropout is not None, p, seed, first, dout.dtype))   # dp -> d scores
    dq = cupy.empty((B, H, T, hs), dtype=dout.dtype)
    gemm(dp, k, dq)
    dk = cupy.empty((B, H, T, hs), dtype=dout.dtype)
    gemm(dp.transpose(0, 1, 3, 2), q, dk)
    dqkv = cupy.empty((B, T, 3 * C), dtype=dout.dtype)
    launch_elementwise("merge_qkv_heads", dout.dtype, dqkv.size, dq, dk, dv, dqkv, i32(B), i32(T), i32(H), i32(hs))
    return linear_backward(dqkv, qkv_cache, dw_qkv, db_qkv)
