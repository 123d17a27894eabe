"""Inverted dropout: zero each element with probability p and scale survivors by 1/(1-p),
so the expected activation is unchanged and evaluation needs no rescaling.

forward:  mask = (uniform >= p) / (1 - p),  out = x * mask      (identity at eval or p == 0)
backward: dx = dout * mask
"""


def dropout_forward(x, p, rng, train=True):
    """x (...), p in [0, 1), rng a Generator of x's array module -> out (...)."""
    if not train or p == 0.0:
        return x, None
    mask = (rng.random(x.shape, dtype=x.dtype) >= p).astype(x.dtype)   # (...) 0/1
    mask *= 1.0 / (1.0 - p)
    return x * mask, mask


def dropout_backward(dout, cache):
    """dout (...) -> dx (...)."""
    mask = cache
    return dout if mask is None else dout * mask
