"""Softmax cross-entropy over the vocabulary, fused and mean-reduced.

forward:  loss = -(1/N) sum_{n not ignored} log softmax(logits_n)[target_n]
          computed as logsumexp(z) - z[target] with z shifted by its row max, so logits
          around +-1e4 neither overflow nor lose the answer.
backward: dlogits_n = (softmax(logits_n) - onehot(target_n)) * dloss / N   (0 for ignored rows)
N counts the positions whose target is not `ignore_index`. No one-hot array is ever built.
`vocab_size` < logits.shape[-1] treats the extra (padding) columns as absent: they get no
probability and zero gradient.
"""
from .backend import get_array_module


def cross_entropy_forward(logits, targets, ignore_index=-1, vocab_size=None, overwrite_logits=False):
    """logits (B, T, Vp), targets (B, T) int -> loss (0-d array, logits' dtype).

    The cache holds the softmax probabilities, which backward overwrites with the gradient:
    call backward at most once per forward. overwrite_logits=True computes them in the logits'
    own memory (saving a (B*T, Vp) array) when the caller no longer needs the logits.
    """
    xp = get_array_module(logits)
    Vp = logits.shape[-1]
    V = Vp if vocab_size is None else vocab_size
    z = logits.reshape(-1, Vp)                          # (N, Vp)
    t = targets.reshape(-1)                             # (N,)
    valid = t != ignore_index                           # (N,) bool
    n_valid = int(valid.sum())
    rows = xp.arange(t.shape[0])
    t_safe = xp.where(valid, t, 0)
    row_max = z[:, :V].max(axis=1, keepdims=True)       # (N, 1)
    probs = z if overwrite_logits else xp.empty_like(z)
    xp.subtract(z, row_max, out=probs)                  # (N, Vp) shifted logits, max 0
    probs[:, V:] = -xp.inf                              # padding: exp(-inf) = 0, no probability
    target_z = probs[rows, t_safe]                      # (N,) shifted target logits
    xp.exp(probs, out=probs)
    sumexp = probs.sum(axis=1)                          # (N,) in [1, V]
    probs *= (1.0 / sumexp)[:, None]                    # (N, Vp) softmax
    nll = xp.log(sumexp) - target_z                     # (N,)
    loss = (nll * valid).sum() / max(n_valid, 1)
    return loss, (probs, rows, t_safe, valid, n_valid, logits.shape)


def cross_entropy_backward(dloss, cache):
    """dloss: upstream scalar (1.0 for the loss itself) -> dlogits (B, T, Vp)."""
    probs, rows, t_safe, valid, n_valid, shape = cache
    dz = probs                                          # (N, Vp) reused in place; padding stays 0
    dz[rows, t_safe] -= 1.0
    dz *= (valid * (float(dloss) / max(n_valid, 1)))[:, None].astype(dz.dtype)
    return dz.reshape(shape)
