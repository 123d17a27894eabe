"""AdamW on one flat parameter buffer, the learning-rate schedule, and gradient clipping.

AdamW (Loshchilov & Hutter; as torch.optim.AdamW), at step t = 1, 2, ...:
  p  <- p - lr * wd * mask * p                  decoupled weight decay (2-D weights only)
  m  <- b1 m + (1 - b1) g                       first moment
  v  <- b2 v + (1 - b2) g^2                     second moment
  p  <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
"""
import math
from concurrent.futures import ThreadPoolExecutor

from .backend import get_array_module


class AdamW:
    """params, grads: flat 1-D arrays of equal size; decay_mask: same size, true where weight
    decay applies (2-D weights) and false elsewhere (biases, LayerNorm). Updates `params` in place.

    The update walks the flat buffers in chunks of CHUNK elements: the four arrays of a chunk
    stay in cache across the dozen passes the formulas take, and the only temporaries are
    chunk-sized scratch arrays. Weight decay is applied to the runs of the mask (whole tensors,
    since each tensor is one contiguous range), so no parameter-sized mask is kept either.
    threads > 1 (NumPy) splits the buffers into that many parts updated at the same time
    (NumPy releases the GIL inside its loops).
    """

    CHUNK = 1 << 16

    def __init__(self, params, grads, decay_mask, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, threads=1):
        xp = get_array_module(params)
        self.params, self.grads = params, grads
        self.decay_ranges = _true_runs(decay_mask)      # [(start, stop)] where the mask is true
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = xp.zeros_like(params)                  # first moment
        self.v = xp.zeros_like(params)                  # second moment
        self.t = 0                                      # steps taken
        n_parts = threads if xp.__name__ == "numpy" else 1
        bounds = [params.size * i // n_parts for i in range(n_parts + 1)]
        self._parts = list(zip(bounds[:-1], bounds[1:]))  # [(start, stop)] updated side by side
        self._pool = ThreadPoolExecutor(n_parts) if n_parts > 1 else None

    def step(self, lr):
        self.t += 1
        if self.weight_decay:
            for start, stop in self.decay_ranges:
                self.params[start:stop] *= 1.0 - lr * self.weight_decay    # p -= lr wd p
        step_size = lr / (1.0 - self.beta1 ** self.t)
        rsqrt_bias2 = 1.0 / math.sqrt(1.0 - self.beta2 ** self.t)
        if self._pool is None:
            self._update_range(*self._parts[0], step_size, rsqrt_bias2)
        else:
            list(self._pool.map(lambda part: self._update_range(*part, step_size, rsqrt_bias2), self._parts))

    def _update_range(self, start, stop, step_size, rsqrt_bias2):
        xp = get_array_module(self.params)
        scratch = xp.empty(min(self.CHUNK, stop - start), dtype=self.params.dtype)
        for lo in range(start, stop, self.CHUNK):
            chunk = slice(lo, min(lo + self.CHUNK, stop))
            self._update(self.params[chunk], self.grads[chunk], self.m[chunk], self.v[chunk],
                         scratch, step_size, rsqrt_bias2)

    def _update(self, p, g, m, v, scratch, step_size, rsqrt_bias2):
        """The Adam update of one chunk, in place: p -= step_size * m / (sqrt(v) rsqrt_bias2 + eps)."""
        xp = get_array_module(p)
        s = scratch[: p.size]
        b1, b2 = self.beta1, self.beta2
        m *= b1
        xp.multiply(g, 1.0 - b1, out=s)
        m += s                                          # m = b1 m + (1 - b1) g
        v *= b2
        xp.multiply(g, g, out=s)
        s *= 1.0 - b2
        v += s                                          # v = b2 v + (1 - b2) g^2
        xp.sqrt(v, out=s)
        s *= rsqrt_bias2
        s += self.eps                                   # sqrt(v_hat) + eps
        xp.divide(m, s, out=s)
        s *= step_size                                  # lr * m_hat / (sqrt(v_hat) + eps)
        p -= s

    def state_dict(self):
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state):
        self.m[...] = state["m"]
        self.v[...] = state["v"]
        self.t = int(state["t"])


def _true_runs(mask):
    """[(start, stop)] of the runs of true values in a 1-D boolean array."""
    xp = get_array_module(mask)
    false = xp.zeros(1, dtype=bool)
    padded = xp.concatenate((false, mask.astype(bool), false))
    edges = xp.flatnonzero(padded[1:] != padded[:-1]).tolist()   # run starts and stops, alternating
    return list(zip(edges[::2], edges[1::2]))


def lr_at(step, max_lr, min_lr, warmup_steps, max_steps):
    """Learning rate for 0-based `step`: linear warm-up to max_lr over warmup_steps, then
    cosine decay to min_lr at max_steps (and min_lr after).

    step 0 -> max_lr / warmup_steps;  step warmup_steps -> max_lr;
    midway through the decay -> (max_lr + min_lr) / 2;  step max_steps -> min_lr.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def clip_grad_norm(grads, max_norm):
    """Scale flat `grads` in place so that ||grads||_2 <= max_norm (max_norm <= 0: no clipping).

    Returns the norm before clipping, as a Python float.
    """
    xp = get_array_module(grads)
    norm = math.sqrt(float(xp.dot(grads, grads)))
    if max_norm > 0 and norm > max_norm:
        grads *= max_norm / (norm + 1e-6)
    return norm
