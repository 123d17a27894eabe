"""Inverted dropout: zero each element with probability p and scale survivors by 1/(1-p),
so the expected activation is unchanged and evaluation needs no rescaling.

forward:  mask = (uniform >= p) / (1 - p),  out = x * mask      (identity at eval or p == 0)
backward: dx = dout * mask
"""


def dropout_mask(shape, p, rng, dtype):
    """(shape) array of 0 (probability p) and 1 / (1 - p), drawn from the Generator `rng`."""
    mask = (rng.random(shape, dtype=dtype) >= p).astype(dtype)           # (...) 0/1
    mask *= 1.0 / (1.0 - p)
    return mask


def dropout_forward(x, p, rng, train=True):
    """x (...), p in [0, 1), rng a Generator of x's array module -> out (...)."""
    if not train or p == 0.0:
        return x, None
    mask = dropout_mask(x.shape, p, rng, x.dtype)                       # (...)
    return x * mask, mask


def dropout_backward(dout, cache):
    """dout (...) -> dx (...)."""
    mask = cache
    return dout if mask is None else dout * mask
