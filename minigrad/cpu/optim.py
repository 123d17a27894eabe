"""The AdamW update on the CPU: the reference's math (minigrad/optim.py) in cache-sized chunks,
optionally on several threads.

The update walks the flat buffers in chunks of CHUNK elements: the four arrays of a chunk
stay in cache across the dozen passes the formulas take, and the only temporaries are one
chunk-sized scratch array per thread. The bias corrections are folded into two scalars,
    p -= step_size * m / (sqrt(v) * rsqrt_bias2 + eps),
    step_size = lr / (1 - b1^t),  rsqrt_bias2 = 1 / sqrt(1 - b2^t),
which is the reference's p -= lr * m_hat / (sqrt(v_hat) + eps). With threads > 1 the buffers
are split into that many parts updated at the same time (NumPy releases the interpreter lock
inside its loops).
"""
import math
from concurrent.futures import ThreadPoolExecutor

from ..backend import get_array_module

CHUNK = 1 << 16


class ChunkedAdamW:
    """A callable with the reference adamw_update's signature."""

    def __init__(self, threads=1):
        self.threads = max(1, threads)
        self._pool = None                                # made on first use, after any fork

    def __call__(self, params, grads, m, v, decay_ranges, lr, t, beta1, beta2, eps, weight_decay):
        for start, stop in decay_ranges:
            params[start:stop] *= 1.0 - lr * weight_decay                # p -= lr wd p
        step_size = lr / (1.0 - beta1 ** t)
        rsqrt_bias2 = 1.0 / math.sqrt(1.0 - beta2 ** t)
        bounds = [params.size * i // self.threads for i in range(self.threads + 1)]
        parts = list(zip(bounds[:-1], bounds[1:]))       # [(start, stop)] updated side by side

        def update(part):
            _update_range(params, grads, m, v, *part, step_size, rsqrt_bias2, beta1, beta2, eps)
        if self.threads == 1:
            update(parts[0])
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads)
            list(self._pool.map(update, parts))


def _update_range(params, grads, m, v, start, stop, step_size, rsqrt_bias2, beta1, beta2, eps):
    """The Adam update of params[start:stop], one chunk at a time, in place."""
    xp = get_array_module(params)
    scratch = xp.empty(min(CHUNK, stop - start), dtype=params.dtype)
    for lo in range(start, stop, CHUNK):
        c = slice(lo, min(lo + CHUNK, stop))
        p, g, mc, vc, s = params[c], grads[c], m[c], v[c], scratch[: min(CHUNK, stop - lo)]
        mc *= beta1
        xp.multiply(g, 1.0 - beta1, out=s)
        mc += s                                          # m = b1 m + (1 - b1) g
        vc *= beta2
        xp.multiply(g, g, out=s)
        s *= 1.0 - beta2
        vc += s                                          # v = b2 v + (1 - b2) g^2
        xp.sqrt(vc, out=s)
        s *= rsqrt_bias2
        s += eps                                         # sqrt(v_hat) + eps
        xp.divide(mc, s, out=s)
        s *= step_size                                   # lr * m_hat / (sqrt(v_hat) + eps)
        p -= s


def clip_grad_norm(grads, max_norm, total=None):
    """The reference's clipping with the norm read back as a Python float: free on the CPU,
    and the scaling pass is skipped when the norm is within bounds."""
    xp = get_array_module(grads)
    squares = xp.reshape(xp.dot(grads, grads), (1,))
    norm = math.sqrt(float((squares if total is None else total(squares))[0]))
    if max_norm > 0 and norm > max_norm:
        grads *= max_norm / (norm + 1e-6)
    return norm
