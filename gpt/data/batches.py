"""Token stream -> train/validation split -> batches of windows.

Batches are windows of T+1 consecutive tokens (inputs x = window[:-1], targets
y = window[1:]), picked either at random or in order; the choice depends only on
(seed, step, micro-step), so a resumed run sees the same data.
"""
import numpy as np

from ..errors import DataError


def split_tokens(tokens, val_fraction, block_size):
    """Split by position: the last val_fraction of the stream is validation.

    Both parts must hold at least one window of block_size + 1 tokens (validation may be
    empty when val_fraction == 0)."""
    need = block_size + 1
    n = len(tokens)
    if n < need:
        raise DataError(f"the corpus has {n:,} tokens, fewer than one window of --block-size + 1 = {need}; "
                        "use more text or a smaller --block-size")
    n_val = int(n * val_fraction)
    train, val = tokens[: n - n_val], tokens[n - n_val:]
    if len(train) < need or (val_fraction > 0 and len(val) < need):
        raise DataError(f"the corpus ({n:,} tokens) is too short to split into train and validation parts "
                        f"of at least {need} tokens each; use more text, a smaller --block-size, "
                        "or change --val-fraction")
    return train, val


def _seeded_rng(*key):
    return np.random.default_rng(np.random.SeedSequence(list(key)))


class BatchSampler:
    """Batches (x, y) of shape (B, T), int64, on the host, deterministic in (seed, step, micro).

    'random': each row is a window starting at a uniformly random position.
    'sequential': the stream is cut into consecutive windows (stride T); the k-th row drawn
    over the whole run takes window k (wrapping around at the end: an epoch).
    """

    def __init__(self, tokens, batch_size, block_size, sampling="random", seed=0):
        self.tokens, self.B, self.T = tokens, batch_size, block_size
        self.sampling, self.seed = sampling, seed
        self.n_windows = (len(tokens) - 1) // block_size      # sequential windows per epoch

    def starts(self, step, micro, grad_accum):
        """(B,) start offsets of the windows for optimizer step `step`, micro-batch `micro`."""
        if self.sampling == "random":
            rng = _seeded_rng(self.seed, step, micro)
            return rng.integers(0, len(self.tokens) - self.T, size=self.B)
        first_row = (step * grad_accum + micro) * self.B
        return ((first_row + np.arange(self.B)) % self.n_windows) * self.T

    def get(self, step, micro=0, grad_accum=1):
        return self.windows(self.starts(step, micro, grad_accum))

    def windows(self, starts):
        offsets = np.asarray(starts)[:, None] + np.arange(self.T + 1)    # (B, T+1)
        w = np.asarray(self.tokens[offsets], dtype=np.int64)
        return w[:, :-1], w[:, 1:]

    def eval_batches(self, n_batches):
        """The same n_batches random windows every time (so validation losses compare)."""
        for i in range(n_batches):
            rng = _seeded_rng(self.seed, 2**31 - 1, i)
            yield self.windows(rng.integers(0, len(self.tokens) - self.T, size=self.B))
