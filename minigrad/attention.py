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

Generation passes a KV cache: this layer's keys and values of the t0 positions seen so far.
The T new positions t0..t0+T-1 write their k, v into it and attend over all S = t0 + T
cached positions; new position t0 + i may see keys 0..t0+i.
"""
import math

from .backend import get_array_module
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward


def causal_mask(xp, T, S, dtype):
    """(T, S) additive mask for T queries at positions S-T..S-1 over S keys: 0 where the key
    is at or before the query's position, -inf where it is in the future."""
    return xp.triu(xp.full((T, S), -xp.inf, dtype=dtype), k=S - T + 1)


def heads(a, n_head):
    """(B, T, C) -> (B, H, T, hs) view: head h is columns h*hs..(h+1)*hs of every row."""
    B, T, C = a.shape
    return a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(a):
    """(B, H, T, hs) -> (B, T, C): the heads side by side again."""
    B, H, T, hs = a.shape
    return a.transpose(0, 2, 1, 3).reshape(B, T, H * hs)


def attention_forward(x, w_qkv, b_qkv, w_proj, b_proj, n_head, dropout_p=0.0, seed=0, train=True,
                      kv_cache=None, t0=0, first_row=0):
    """x (B, T, C), w_qkv (C, 3C), b_qkv (3C,), w_proj (C, C), b_proj (C,) -> out (B, T, C).

    dropout_p drops attention probabilities in training (seed: the dropout site's seed;
    first_row: the batch row of x[0], minigrad/dropout.py).
    kv_cache: None, or (k, v), each (B, H, block_size, hs), filled at positions 0..t0-1; the
    new keys and values are written at t0..t0+T-1 (inference only: no backward then).
    """
    xp = get_array_module(x)
    B, T, C = x.shape
    hs = C // n_head
    qkv, qkv_cache = linear_forward(x, w_qkv, b_qkv)                 # (B, T, 3C)
    q = heads(qkv[..., :C], n_head)                                   # (B, H, T, hs)
    k = heads(qkv[..., C:2 * C], n_head)                              # (B, H, T, hs)
    v = heads(qkv[..., 2 * C:], n_head)                               # (B, H, T, hs)
    if kv_cache is not None:
        k_cache, v_cache = kv_cache                                   # (B, H, block_size, hs)
        k_cache[:, :, t0:t0 + T] = k
        v_cache[:, :, t0:t0 + T] = v
        k, v = k_cache[:, :, :t0 + T], v_cache[:, :, :t0 + T]         # (B, H, S, hs)
    S = k.shape[2]
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)              # (B, H, T, S)
    scores = scores + causal_mask(xp, T, S, x.dtype)
    probs = xp.exp(scores - scores.max(axis=-1, keepdims=True))       # (B, H, T, S) softmax
    probs = probs / probs.sum(axis=-1, keepdims=True)
    probs_dropped, drop_cache = dropout_forward(probs, dropout_p, seed, train, first_row)
    y = merge_heads(probs_dropped @ v)                                # (B, T, C)
    out, proj_cache = linear_forward(y, w_proj, b_proj)               # (B, T, C)
    return out, (qkv_cache, q, k, v, probs, probs_dropped, drop_cache, proj_cache, n_head)


def attention_backward(dout, cache, dw_qkv, db_qkv, dw_proj, db_proj):
    """dout (B, T, C); accumulates the four weight gradients; returns dx (B, T, C)."""
    xp = get_array_module(dout)
    qkv_cache, q, k, v, probs, probs_dropped, drop_cache, proj_cache, n_head = cache
    hs = q.shape[-1]
    dy = heads(linear_backward(dout, proj_cache, dw_proj, db_proj), n_head)   # (B, H, T, hs)
    dprobs = dropout_backward(dy @ v.transpose(0, 1, 3, 2), drop_cache)       # (B, H, T, T)
    dv = probs_dropped.transpose(0, 1, 3, 2) @ dy                              # (B, H, T, hs)
    dscores = probs * (dprobs - (dprobs * probs).sum(axis=-1, keepdims=True))  # (B, H, T, T)
    dq = dscores @ k / math.sqrt(hs)                                           # (B, H, T, hs)
    dk = dscores.transpose(0, 1, 3, 2) @ q / math.sqrt(hs)                     # (B, H, T, hs)
    dqkv = xp.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)  # (B, T, 3C)
    return linear_backward(dqkv, qkv_cache, dw_qkv, db_qkv)
