"""Cross-entropy on the CPU: the reference pair's math (minigrad/crossentropy.py), in place.

The softmax is computed in the logits' own memory (the shared contract lets forward reuse
it), and backward turns those probabilities into the gradient where they lie, so the whole
loss needs no (N, Vp) array of its own. The padding columns are set to -inf before the exp
(probability 0, gradient 0) instead of being sliced off.
"""
from ..backend import get_array_module


def cross_entropy_forward(logits, targets, ignore_index=-1, vocab_size=None):
    """logits (B, T, Vp), overwritten; targets (B, T) int -> loss (0-d array, logits' dtype)."""
    xp = get_array_module(logits)
    Vp = logits.shape[-1]
    V = Vp if vocab_size is None else vocab_size
    probs = logits.reshape(-1, Vp)                      # (N, Vp) logits, then probabilities
    t = targets.reshape(-1)                             # (N,)
    valid = t != ignore_index                           # (N,) bool
    n_valid = int(valid.sum())
    rows = xp.arange(t.shape[0])
    t_safe = xp.where(valid, t, 0)
    probs -= probs[:, :V].max(axis=1, keepdims=True)    # (N, Vp) shifted logits, max 0
    probs[:, V:] = -xp.inf                              # padding: exp(-inf) = 0, no probability
    target_z = probs[rows, t_safe]                      # (N,) shifted target logits
    xp.exp(probs, out=probs)
    sumexp = probs.sum(axis=1)                          # (N,) in [1, V]
    probs *= (1.0 / sumexp)[:, None]                    # (N, Vp) softmax
    nll = xp.log(sumexp) - target_z                     # (N,)
    loss = (nll * valid).sum() / max(n_valid, 1)
    return loss, (probs, rows, t_safe, valid, n_valid, logits.shape)


def cross_entropy_backward(dloss, cache):
    """dloss: upstream scalar (1.0 for the loss itself) -> dlogits (B, T, Vp), in the cache's memory."""
    probs, rows, t_safe, valid, n_valid, shape = cache
    dz = probs                                          # (N, Vp) reused in place; padding stays 0
    dz[rows, t_safe] -= 1.0
    dz *= (valid * (float(dloss) / max(n_valid, 1)))[:, None].astype(dz.dtype)
    return dz.reshape(shape)
