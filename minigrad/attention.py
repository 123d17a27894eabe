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

Two exact rewrites make it cheaper without changing the math:
- q is scaled by 1/sqrt(hs) once, (T, hs) per head, instead of the (T, T) scores.
- Causal block skipping: the queries are taken in blocks of `query_block` rows, and the block
  of rows [s, e) is scored only against keys [0, e): every key after e is in its future, where
  the mask makes probs exactly 0, so those columns contribute nothing forward or backward.
  With n blocks this computes (n + 1) / 2n of the square (5/8 at T = 256 in blocks of 64),
  and the softmax passes shrink by as much. Only the diagonal (bq, bq) corner needs the mask.
"""
import math

from .backend import get_array_module
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward

QUERY_BLOCK = 64


def causal_mask(xp, T, dtype):
    """(T, T) additive mask: 0 on and below the diagonal, -inf above (the future)."""
    return xp.triu(xp.full((T, T), -xp.inf, dtype=dtype), k=1)


def query_blocks(T, query_block):
    """[(s, e)]: row ranges of the query blocks, covering 0..T."""
    return [(s, min(s + query_block, T)) for s in range(0, T, query_block)]


def heads(a, n_head):
    """(B, T, C) -> (B, H, T, hs) view: head h is columns h*hs..(h+1)*hs of every row."""
    B, T, C = a.shape
    return a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def attention_forward(x, w_qkv, b_qkv, w_proj, b_proj, n_head, dropout_p=0.0, rng=None, train=True,
                      query_block=QUERY_BLOCK):
    """x (B, T, C), w_qkv (C, 3C), b_qkv (3C,), w_proj (C, C), b_proj (C,) -> out (B, T, C).

    dropout_p drops attention probabilities in training (rng: a Generator of x's module).
    """
    xp = get_array_module(x)
    B, T, C = x.shape
    hs = C // n_head
    qkv, qkv_cache = linear_forward(x, w_qkv, b_qkv)                 # (B, T, 3C)
    # One copy into head-major layout: each (T, hs) head slice becomes contiguous, so the
    # batched matmuls below run BLAS on compact matrices. q is scaled on the way.
    q = xp.multiply(heads(qkv[..., :C], n_head), 1.0 / math.sqrt(hs))  # (B, H, T, hs) q / sqrt(hs)
    k = xp.ascontiguousarray(heads(qkv[..., C:2 * C], n_head))         # (B, H, T, hs)
    v = xp.ascontiguousarray(heads(qkv[..., 2 * C:], n_head))          # (B, H, T, hs)
    mask = causal_mask(xp, min(query_block, T), x.dtype)               # (bq, bq) diagonal corner
    y = xp.empty((B, T, C), dtype=x.dtype)                            # heads side by side
    probs, probs_dropped, drop_caches = [], [], []
    for s, e in query_blocks(T, query_block):
        p = q[:, :, s:e] @ k[:, :, :e].transpose(0, 1, 3, 2)          # (B, H, e-s, e) scores
        p[..., s:e] += mask[:e - s, :e - s]
        p -= p.max(axis=-1, keepdims=True)                            # softmax, in place
        xp.exp(p, out=p)
        p /= p.sum(axis=-1, keepdims=True)
        p_dropped, drop_cache = dropout_forward(p, dropout_p, rng, train)
        xp.matmul(p_dropped, v[:, :, :e], out=heads(y, n_head)[:, :, s:e])  # (B, H, e-s, hs)
        probs.append(p)
        probs_dropped.append(p_dropped)
        drop_caches.append(drop_cache)
    out, proj_cache = linear_forward(y, w_proj, b_proj)               # (B, T, C)
    cache = (qkv_cache, q, k, v, probs, probs_dropped, drop_caches, proj_cache, n_head, query_block)
    return out, cache


def attention_backward(dout, cache, dw_qkv, db_qkv, dw_proj, db_proj):
    """dout (B, T, C); accumulates the four weight gradients; returns dx (B, T, C)."""
    xp = get_array_module(dout)
    qkv_cache, q, k, v, probs, probs_dropped, drop_caches, proj_cache, n_head, query_block = cache
    B, T, C = dout.shape
    hs = C // n_head
    dy = xp.ascontiguousarray(heads(linear_backward(dout, proj_cache, dw_proj, db_proj), n_head))  # (B, H, T, hs)
    dqkv = xp.empty((B, T, 3 * C), dtype=dout.dtype)                  # dq, dk, dv side by side
    dq, dk, dv = (heads(dqkv[..., i * C:(i + 1) * C], n_head) for i in range(3))   # (B, H, T, hs) views
    # Blocks in reverse: the last one spans every key, so it writes dk and dv; the others add.
    for i, (s, e) in reversed(list(enumerate(query_blocks(T, query_block)))):
        p, dys = probs[i], dy[:, :, s:e]                              # (B, H, e-s, e), (B, H, e-s, hs)
        dp = dys @ v[:, :, :e].transpose(0, 1, 3, 2)                   # (B, H, e-s, e) dprobs
        dp = dropout_backward(dp, drop_caches[i])
        # softmax backward: dscores = probs * (dprobs - rowsum(dprobs * probs)), in place
        dp -= xp.einsum("bhij,bhij->bhi", dp, p)[..., None]           # row sums of dprobs * probs
        dp *= p
        xp.matmul(dp, k[:, :, :e], out=dq[:, :, s:e])                 # d(q / sqrt(hs))
        if e == T:
            xp.matmul(probs_dropped[i].transpose(0, 1, 3, 2), dys, out=dv)
            xp.matmul(dp.transpose(0, 1, 3, 2), q[:, :, s:e], out=dk)
        else:
            dv[:, :, :e] += probs_dropped[i].transpose(0, 1, 3, 2) @ dys
            dk[:, :, :e] += dp.transpose(0, 1, 3, 2) @ q[:, :, s:e]
    dq *= 1.0 / math.sqrt(hs)                                         # through q's scaling
    return linear_backward(dqkv, qkv_cache, dw_qkv, db_qkv)
