"""Attention on the CPU: the reference pair's math (minigrad/attention.py), computing only the
causal half of the square.

Two exact rewrites make it cheaper without changing the math:
- q is scaled by 1/sqrt(hs) once, (T, hs) per head, instead of the (T, T) scores.
- Causal block skipping: the queries are taken in blocks of QUERY_BLOCK rows, and the block
  of rows [s, e) is scored only against keys [0, t0 + e): every later key is in its future,
  where the mask makes probs exactly 0, so those columns contribute nothing forward or
  backward. With n blocks this computes (n + 1) / 2n of the square (5/8 at T = 256 in blocks
  of 64), and the softmax passes shrink by as much. Only the block's diagonal (bq, bq) corner
  needs the mask.
q, k and v are copied once into head-major layout, so each (T, hs) head is a compact matrix
for BLAS, and y, dq, dk, dv are written in place through head views. The dropout mask is made
for the whole square, as the reference makes it, and sliced per block: the same mask.
"""
import math

from ..attention import causal_mask, heads
from ..backend import get_array_module
from ..dropout import dropout_mask
from .linear import linear_backward, linear_forward

QUERY_BLOCK = 64


def query_blocks(T, query_block):
    """[(s, e)]: row ranges of the query blocks, covering 0..T."""
    return [(s, min(s + query_block, T)) for s in range(0, T, query_block)]


def attention_forward(x, w_qkv, b_qkv, w_proj, b_proj, n_head, dropout_p=0.0, seed=0, train=True,
                      kv_cache=None, t0=0, first_row=0, query_block=QUERY_BLOCK):
    """The reference's signature (see minigrad/attention.py), plus the block size."""
    xp = get_array_module(x)
    B, T, C = x.shape
    hs = C // n_head
    qkv, qkv_cache = linear_forward(x, w_qkv, b_qkv)                 # (B, T, 3C)
    q = xp.multiply(heads(qkv[..., :C], n_head), 1.0 / math.sqrt(hs))  # (B, H, T, hs) q / sqrt(hs)
    if kv_cache is None:
        k = xp.ascontiguousarray(heads(qkv[..., C:2 * C], n_head))     # (B, H, T, hs)
        v = xp.ascontiguousarray(heads(qkv[..., 2 * C:], n_head))      # (B, H, T, hs)
    else:
        k, v = kv_cache                                               # (B, H, block_size, hs)
        k[:, :, t0:t0 + T] = heads(qkv[..., C:2 * C], n_head)
        v[:, :, t0:t0 + T] = heads(qkv[..., 2 * C:], n_head)
    bq = min(query_block, T)
    corner = causal_mask(xp, bq, bq, x.dtype)                          # (bq, bq) diagonal corner
    drop = train and dropout_p > 0.0
    mask = dropout_mask((B, n_head, T, t0 + T), dropout_p, seed, x.dtype, xp, first_row) if drop else None
    y = xp.empty((B, T, C), dtype=x.dtype)                            # heads side by side
    probs, probs_dropped, drop_masks = [], [], []
    for s, e in query_blocks(T, query_block):
        S = t0 + e                                                    # keys this block may see
        p = q[:, :, s:e] @ k[:, :, :S].transpose(0, 1, 3, 2)          # (B, H, e-s, S) scores
        p[..., t0 + s:S] += corner[:e - s, :e - s]
        p -= p.max(axis=-1, keepdims=True)                            # softmax, in place
        xp.exp(p, out=p)
        p /= p.sum(axis=-1, keepdims=True)
        m = mask[:, :, s:e, :S] if drop else None                     # (B, H, e-s, S)
        p_dropped = p * m if drop else p
        xp.matmul(p_dropped, v[:, :, :S], out=heads(y, n_head)[:, :, s:e])  # (B, H, e-s, hs)
        probs.append(p)
        probs_dropped.append(p_dropped)
        drop_masks.append(m)
    out, proj_cache = linear_forward(y, w_proj, b_proj)               # (B, T, C)
    cache = (qkv_cache, q, k, v, probs, probs_dropped, drop_masks, proj_cache, n_head, query_block)
    return out, cache


def attention_backward(dout, cache, dw_qkv, db_qkv, dw_proj, db_proj):
    """dout (B, T, C); accumulates the four weight gradients; returns dx (B, T, C)."""
    xp = get_array_module(dout)
    qkv_cache, q, k, v, probs, probs_dropped, drop_masks, proj_cache, n_head, query_block = cache
    B, T, C = dout.shape
    hs = C // n_head
    dy = xp.ascontiguousarray(heads(linear_backward(dout, proj_cache, dw_proj, db_proj), n_head))  # (B, H, T, hs)
    dqkv = xp.empty((B, T, 3 * C), dtype=dout.dtype)                  # dq, dk, dv side by side
    dq, dk, dv = (heads(dqkv[..., i * C:(i + 1) * C], n_head) for i in range(3))   # (B, H, T, hs) views
    # Blocks in reverse: the last one spans every key, so it writes dk and dv; the others add.
    for i, (s, e) in reversed(list(enumerate(query_blocks(T, query_block)))):
        p, dys = probs[i], dy[:, :, s:e]                              # (B, H, e-s, e), (B, H, e-s, hs)
        dp = dys @ v[:, :, :e].transpose(0, 1, 3, 2)                   # (B, H, e-s, e) dprobs
        if drop_masks[i] is not None:
            dp *= drop_masks[i]                                       # through dropout
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
