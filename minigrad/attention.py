"""Causal multi-head self-attention, GPT-2 style, with its two projections.

forward (H heads of size hs = C / H):
  q, k, v  = split(x @ W_qkv + b_qkv)                 each (B, H, T, hs)
  scores   = q @ k^T / sqrt(hs) + causal_mask          (B, H, T, T), mask = -inf above the diagonal
  probs    = softmax(scores)  (then dropout, in training)
  y        = probs @ v                                 (B, H, T, hs) -> (B, T, C)
  out      = y @ W_proj + b_proj
backward, in reverse:
  dy       = linear_backward(dout)                     (B, T, C) -> (B, H, T, hs)
  dprobs   = dy @ v^T,   dv = probs^T @ dy
  dscores  = probs * (dprobs - sum_j dprobs * probs)   softmax backward, row by row;
             masked entries have probs == 0, so the future gets exactly zero gradient
  dq       = dscores @ k / sqrt(hs),   dk = dscores^T @ q / sqrt(hs)
  dx       = linear_backward(concat(dq, dk, dv))
"""
import math

from .backend import get_array_module
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward


def causal_mask(xp, T, dtype):
    """(T, T) additive mask: 0 on and below the diagonal, -inf above (the future)."""
    return xp.triu(xp.full((T, T), -xp.inf, dtype=dtype), k=1)


def attention_forward(x, w_qkv, b_qkv, w_proj, b_proj, n_head, dropout_p=0.0, rng=None, train=True):
    """x (B, T, C), w_qkv (C, 3C), b_qkv (3C,), w_proj (C, C), b_proj (C,) -> out (B, T, C).

    dropout_p drops attention probabilities in training (rng: a Generator of x's module).
    """
    xp = get_array_module(x)
    B, T, C = x.shape
    hs = C // n_head
    qkv, qkv_cache = linear_forward(x, w_qkv, b_qkv)                 # (B, T, 3C)
    # One copy into head-major layout: NumPy's batched matmul is only fast (BLAS per head)
    # on contiguous (T, hs) slices; on strided views it falls back to a slow loop.
    qkv = xp.ascontiguousarray(qkv.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4))  # (3, B, H, T, hs)
    q, k, v = qkv[0], qkv[1], qkv[2]                                  # (B, H, T, hs)
    scale = 1.0 / math.sqrt(hs)
    probs = q @ k.transpose(0, 1, 3, 2)                               # (B, H, T, T) scores
    probs *= scale
    probs += causal_mask(xp, T, x.dtype)
    probs -= probs.max(axis=-1, keepdims=True)                        # softmax, in place
    xp.exp(probs, out=probs)
    probs /= probs.sum(axis=-1, keepdims=True)
    probs_dropped, drop_cache = dropout_forward(probs, dropout_p, rng, train)
    y = probs_dropped @ v                                             # (B, H, T, hs)
    y = y.transpose(0, 2, 1, 3).reshape(B, T, C)                      # heads side by side
    out, proj_cache = linear_forward(y, w_proj, b_proj)               # (B, T, C)
    cache = (qkv_cache, q, k, v, probs, probs_dropped, drop_cache, proj_cache, n_head)
    return out, cache


def attention_backward(dout, cache, dw_qkv, db_qkv, dw_proj, db_proj):
    """dout (B, T, C); accumulates the four weight gradients; returns dx (B, T, C)."""
    xp = get_array_module(dout)
    qkv_cache, q, k, v, probs, probs_dropped, drop_cache, proj_cache, n_head = cache
    B, T, C = dout.shape
    hs = C // n_head
    scale = 1.0 / math.sqrt(hs)
    dy = linear_backward(dout, proj_cache, dw_proj, db_proj)          # (B, T, C)
    dy = xp.ascontiguousarray(dy.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3))   # (B, H, T, hs)
    dqkv = xp.empty((3, B, n_head, T, hs), dtype=dout.dtype)          # dq, dk, dv
    xp.matmul(probs_dropped.transpose(0, 1, 3, 2), dy, out=dqkv[2])   # dv = probs^T @ dy
    dprobs = dy @ v.transpose(0, 1, 3, 2)                             # (B, H, T, T)
    dprobs = dropout_backward(dprobs, drop_cache)
    # softmax backward: dscores = probs * (dprobs - rowsum(dprobs * probs)), computed in place
    dscores = dprobs
    dscores -= (dscores * probs).sum(axis=-1, keepdims=True)
    dscores *= probs
    dscores *= scale
    xp.matmul(dscores, k, out=dqkv[0])                                # dq
    xp.matmul(dscores.transpose(0, 1, 3, 2), q, out=dqkv[1])          # dk
    dqkv = dqkv.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * C)         # (B, T, 3C)
    return linear_backward(dqkv, qkv_cache, dw_qkv, db_qkv)
