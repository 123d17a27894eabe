"""AdamW on one flat parameter buffer, the learning-rate schedule, and gradient clipping.

AdamW (Loshchilov & Hutter; as torch.optim.AdamW), at step t = 1, 2, ...:
  p  <- p - lr * wd * mask * p                  decoupled weight decay (2-D weights only)
  m  <- b1 m + (1 - b1) g                       first moment
  v  <- b2 v + (1 - b2) g^2                     second moment
  p  <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
"""
import math

from .backend import get_array_module


class AdamW:
    """params, grads: flat 1-D arrays of equal size; decay_mask: same size, 1 where weight
    decay applies and 0 elsewhere (biases, LayerNorm). Updates `params` in place."""

    def __init__(self, params, grads, decay_mask, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        xp = get_array_module(params)
        self.params, self.grads = params, grads
        self.decay_mask = decay_mask.astype(params.dtype)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = xp.zeros_like(params)                  # first moment
        self.v = xp.zeros_like(params)                  # second moment
        self.t = 0                                      # steps taken
        self._scratch = xp.empty_like(params)           # one temporary, reused every step

    def step(self, lr):
        xp = get_array_module(self.params)
        self.t += 1
        p, g, m, v, s = self.params, self.grads, self.m, self.v, self._scratch
        b1, b2 = self.beta1, self.beta2
        if self.weight_decay:
            xp.multiply(self.decay_mask, lr * self.weight_decay, out=s)
            s *= p
            p -= s                                      # p -= lr wd mask p
        m *= b1
        xp.multiply(g, 1.0 - b1, out=s)
        m += s                                          # m = b1 m + (1 - b1) g
        v *= b2
        xp.multiply(g, g, out=s)
        s *= 1.0 - b2
        v += s                                          # v = b2 v + (1 - b2) g^2
        bias1 = 1.0 - b1 ** self.t
        bias2 = 1.0 - b2 ** self.t
        xp.sqrt(v, out=s)
        s *= 1.0 / math.sqrt(bias2)
        s += self.eps                                   # sqrt(v_hat) + eps
        xp.divide(m, s, out=s)
        s *= lr / bias1                                 # lr * m_hat / (sqrt(v_hat) + eps)
        p -= s

    def state_dict(self):
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state):
        self.m[...] = state["m"]
        self.v[...] = state["v"]
        self.t = int(state["t"])


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
