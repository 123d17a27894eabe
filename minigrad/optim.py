"""AdamW on one flat parameter buffer, the learning-rate schedule, and gradient clipping.

AdamW (Loshchilov & Hutter; as torch.optim.AdamW), at step t = 1, 2, ...:
  p  <- p - lr * wd * p                         decoupled weight decay (2-D weights only)
  m  <- b1 m + (1 - b1) g                       first moment
  v  <- b2 v + (1 - b2) g^2                     second moment
  p  <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
"""
import math

from .backend import get_array_module


def adamw_update(params, grads, m, v, decay_ranges, lr, t, beta1, beta2, eps, weight_decay):
    """One AdamW step t (1, 2, ...) over flat buffers, in place: params, grads, m, v all (P,).

    decay_ranges: [(start, stop)] of the flat buffer where weight decay applies (the 2-D
    tensors, each one contiguous range)."""
    xp = get_array_module(params)
    for start, stop in decay_ranges:
        params[start:stop] *= 1.0 - lr * weight_decay               # p -= lr wd p
    m *= beta1
    m += (1.0 - beta1) * grads                                      # (P,) first moment
    v *= beta2
    v += (1.0 - beta2) * grads * grads                              # (P,) second moment
    m_hat = m / (1.0 - beta1 ** t)                                  # (P,) bias-corrected
    v_hat = v / (1.0 - beta2 ** t)                                  # (P,)
    params -= lr * m_hat / (xp.sqrt(v_hat) + eps)


class AdamW:
    """AdamW's state (m, v, step count) and hyperparameters for flat `params` and `grads`.

    decay_mask: a flat boolean array of the same size, true where weight decay applies
    (2-D weights) and false elsewhere (biases, LayerNorm). `ops` (from minigrad.kernels)
    chooses the implementation of the update; the default is the reference above.
    """

    def __init__(self, params, grads, decay_mask, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, ops=None):
        xp = get_array_module(params)
        self.params, self.grads = params, grads
        self.decay_ranges = true_runs(decay_mask)       # [(start, stop)] where the mask is true
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = xp.zeros_like(params)                  # first moment
        self.v = xp.zeros_like(params)                  # second moment
        self.t = 0                                      # steps taken
        self.update = adamw_update if ops is None else ops.adamw_update

    def step(self, lr):
        self.t += 1
        self.update(self.params, self.grads, self.m, self.v, self.decay_ranges, lr, self.t,
                    self.beta1, self.beta2, self.eps, self.weight_decay)

    def state_dict(self):
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state):
        self.m[...] = state["m"]
        self.v[...] = state["v"]
        self.t = int(state["t"])


def true_runs(mask):
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


def clip_grad_norm(grads, max_norm, total=None):
    """Scale flat `grads` in place so that ||g||_2 <= max_norm (max_norm <= 0: no clipping),
    where g is the whole gradient: `grads` itself, or, when `grads` is one slice of it (ZeRO),
    what total(squares) makes of this slice's sum of squares (an array, summed in place over
    the slices' holders).

    Returns the norm before clipping as a 0-d array of grads' module: on a GPU it stays on
    the device (no sync), and so does the decision to scale. A NaN norm scales nothing; an
    infinite one zeroes the gradient (the run then stops as diverged: the norm is logged).
    """
    xp = get_array_module(grads)
    squares = xp.reshape(xp.dot(grads, grads), (1,))
    norm = xp.sqrt((squares if total is None else total(squares))[0])    # 0-d
    if max_norm > 0:
        grads *= xp.where(norm > max_norm, max_norm / (norm + 1e-6), 1.0).astype(grads.dtype)
    return norm
