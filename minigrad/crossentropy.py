"""Softmax cross-entropy over the vocabulary, fused and mean-reduced.

forward:  loss = -(1/N) sum_{n not ignored} log softmax(logits_n)[target_n]
          computed as logsumexp(z) - z[target] with z shifted by its row max, so logits
          around +-1e4 neither overflow nor lose the answer.
backward: dlogits_n = (softmax(logits_n) - onehot(target_n)) * dloss / N   (0 for ignored rows)
N counts the positions whose target is not `ignore_index`. No one-hot array is ever built.
`vocab_size` < logits.shape[-1] treats the extra (padding) columns as absent: they get no
probability and zero gradient.

Contract shared by every implementation of this pair: forward may reuse the memory of
`logits` (a caller that still needs them passes a copy), and backward may reuse the cache's
memory (call it at most once per forward). This one does neither.
"""
from .backend import get_array_module


def cross_entropy_forward(logits, targets, ignore_index=-1, vocab_size=None):
    """logits (B, T, Vp), targets (B, T) int -> loss (0-d array, logits' dtype)."""
    xp = get_array_module(logits)
    Vp = logits.shape[-1]
    V = Vp if vocab_size is None else vocab_size
    z = logits.reshape(-1, Vp)[:, :V]                   # (N, V) the real vocabulary
    t = targets.reshape(-1)                             # (N,)
    valid = t != ignore_index                           # (N,) bool
    n_valid = max(int(valid.sum()), 1)
    t_safe = xp.where(valid, t, 0)                      # (N,) ignored rows point at id 0
    shifted = z - z.max(axis=1, keepdims=True)          # (N, V) max 0 in every row
    exps = xp.exp(shifted)                              # (N, V)
    sumexp = exps.sum(axis=1)                           # (N,) in [1, V]
    target_z = shifted[xp.arange(t.shape[0]), t_safe]   # (N,)
    nll = xp.log(sumexp) - target_z                     # (N,) -log softmax[target]
    loss = (nll * valid).sum() / n_valid
    probs = exps / sumexp[:, None]                      # (N, V) softmax
    return loss, (probs, t_safe, valid, n_valid, logits.shape)


def cross_entropy_backward(dloss, cache):
    """dloss: upstream scalar (1.0 for the loss itself) -> dlogits (B, T, Vp)."""
    xp = get_array_module(cache[0])
    probs, t_safe, valid, n_valid, shape = cache
    N, V = probs.shape
    onehot_rows = xp.arange(N)
    dz = xp.zeros((N, shape[-1]), dtype=probs.dtype)    # (N, Vp) padding columns stay 0
    dz[:, :V] = probs
    dz[onehot_rows, t_safe] -= 1.0                      # softmax - onehot(target)
    scale = (valid * (float(dloss) / n_valid)).astype(dz.dtype)   # (N,) 0 on ignored rows
    dz *= scale[:, None]
    return dz.reshape(shape)
