"""The gradient sync between ranks, and whose AdamW state is whose: one interface, two ways.

    sync = gradient_sync(world, n, zero)           # Replicated, or ZeroOne with --zero 1
    grads = sync.optimizer_grads(model.grads)      # what AdamW updates from
    norm = sync.reduce_and_clip(model.grads, grads, max_norm, ops)
    optimizer.step(lr); sync.after_step(model.params)

Replicated: every rank keeps all of AdamW's state; the gradient is all-reduced (a sum over
the ranks, each of which weighted its rows by n_r / B: gpt.parallel.ranks) and clipped by
the clip op; every rank takes the same step.

ZeroOne, ZeRO stage 1 (`--zero 1`): the optimizer state is sharded. The gradient sum is a
reduce-scatter (rank r receives the summed gradient of its slice of the flat buffer), rank r
clips by the global norm (the slices' squares summed over the ranks) and updates the
parameters, m and v of its slice, and an all-gather puts the updated parameters on every
rank. Each rank keeps 1/N of AdamW's moments; checkpoints gather them into the usual file.
Without mpirun the world is one rank and Replicated's collectives are no-ops.
"""
from minigrad import get_array_module


class Replicated:
    """Every rank all of AdamW's state: owned is the whole flat buffer."""
    owned = slice(None)

    def __init__(self, world):
        self.world = world

    def optimizer_grads(self, model_grads):
        return model_grads

    def reduce_and_clip(self, model_grads, grads, max_norm, ops):
        """The ranks' terms summed into the whole batch's gradient, clipped -> its norm (0-d)."""
        self.world.allreduce(model_grads)
        return ops.clip_grad_norm(model_grads, max_norm)

    def after_step(self, params):
        """Every rank took the same step: nothing to send."""

    def gather(self, host_slice):
        return host_slice


class ZeroOne:
    """ZeRO stage 1 over a flat buffer of n elements: rank r owns the slice [lo, hi), the r-th
    of world.size slices of ceil(n / size) elements (the last ones may be shorter or empty)."""

    def __init__(self, world, n):
        chunk = -(-n // world.size)
        bounds = [(min(r * chunk, n), min((r + 1) * chunk, n)) for r in range(world.size)]
        self.world, self.counts = world, [hi - lo for lo, hi in bounds]
        self.owned = slice(*bounds[world.rank])

    def optimizer_grads(self, model_grads):
        """A gradient slice of this rank's own, which the reduce-scatter fills."""
        return get_array_module(model_grads).zeros_like(model_grads[self.owned])

    def reduce_and_clip(self, model_grads, grads, max_norm, ops):
        """grads (hi - lo,) := the sum over the ranks of model_grads[lo:hi], scaled so that the
        whole gradient's norm is <= max_norm (the clip op, its squares summed over the ranks)
        -> the norm."""
        self.world.reduce_scatter(model_grads, grads, self.counts)
        return ops.clip_grad_norm(grads, max_norm, total=self.world.allreduce)

    def after_step(self, params):
        """Every rank's updated slice of params, onto every rank."""
        self.world.allgather_slices(params, self.counts)

    def gather(self, host_slice):
        """The ranks' host slices (of m or v) -> the whole array on rank 0, None elsewhere."""
        return self.world.gather_slices(host_slice, self.counts)


def gradient_sync(world, n, zero=0):
    """The sync for a flat buffer of n elements: ZeroOne with --zero 1, else Replicated."""
    return ZeroOne(world, n) if zero else Replicated(world)
