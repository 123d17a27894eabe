"""ZeRO stage 1 (`--zero 1`): AdamW's state sharded over the ranks.

The gradient sum is a reduce-scatter (rank r receives the summed gradient of its slice of the
flat buffer), rank r clips by the global norm (the slices' squares summed over the ranks) and
updates the parameters, m and v of its slice, and an all-gather puts the updated parameters on
every rank. Each rank keeps 1/N of AdamW's moments; checkpoints gather them into the usual file.
The collectives are the world's (gpt.parallel.ranks).
"""


class ZeroShard:
    """ZeRO stage 1 over a flat buffer of n elements: rank r owns the slice [lo, hi), the r-th
    of world.size slices of ceil(n / size) elements (the last ones may be shorter or empty)."""

    def __init__(self, world, n):
        chunk = -(-n // world.size)
        bounds = [(min(r * chunk, n), min((r + 1) * chunk, n)) for r in range(world.size)]
        self.world, self.counts = world, [hi - lo for lo, hi in bounds]
        self.lo, self.hi = bounds[world.rank]
        self.owned = slice(self.lo, self.hi)

    def reduce_scatter(self, grads, grad_shard):
        """grad_shard (hi - lo,) := the sum over the ranks of grads[lo:hi]."""
        self.world.reduce_scatter(grads, grad_shard, self.counts)

    def clip(self, grad_shard, max_norm, xp):
        """Scale every rank's slice so that the whole gradient's norm is <= max_norm (as
        minigrad.optim.clip_grad_norm does on one buffer) -> the norm (0-d, on the device)."""
        squares = self.world.allreduce(xp.reshape(xp.dot(grad_shard, grad_shard), (1,)))
        norm = xp.sqrt(squares[0])
        if max_norm > 0:
            grad_shard *= xp.where(norm > max_norm, max_norm / (norm + 1e-6), 1.0).astype(grad_shard.dtype)
        return norm

    def allgather(self, params):
        """Every rank's updated slice of params, onto every rank."""
        self.world.allgather_slices(params, self.counts)

    def gather(self, shard_host):
        """The ranks' host slices (of m or v) -> the whole array on rank 0, None elsewhere."""
        return self.world.gather_slices(shard_host, self.counts)
