"""Data parallelism across CPU cores, inside one process.

NumPy's elementwise work runs on one core, and OpenBLAS's own threads are slow on the many
small per-head matmuls of attention (on the 2-core machine this was written on, a 6-layer
384-wide step took 41 s with 2 BLAS threads and 2.9 s with 1). So instead of spreading each
operation over the cores, the batch is split by rows into one shard per core, and each shard's
forward and backward runs on its own thread with single-threaded BLAS. NumPy releases the GIL
inside its loops and BLAS calls, so the shards really run at the same time.

Each worker owns a `GPT.replica()`: it shares the parameters and has its own gradients and
activations. Worker 0 is the model itself. With n_s of the n batch rows in shard s,
    loss = sum_s (n_s / n) loss_s,   so   d loss / d params = sum_s (n_s / n) d loss_s / d params,
which is what backward(dloss * n_s / n) accumulates; the other workers' gradients are then added
into the model's. The result equals one pass over the whole batch up to float rounding, and it
is deterministic: every shard and the order of the sums are fixed.
On CUDA (or with one worker) the whole batch goes through the model as it is.
"""
import contextvars
import os
from concurrent.futures import ThreadPoolExecutor


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                       # macOS, Windows
        return os.cpu_count() or 1


class DataParallel:
    """Runs forward + backward of a batch over up to `n_workers` threads (CPU only).

    A shard gets at least `min_tokens` tokens (default 2 x n_embd): a matmul with a (C, kC)
    weight needs a few C rows for single-threaded BLAS to approach its peak, and below that
    two threads on halves lose to BLAS's own threads on the whole (measured here: GPT-2 124M,
    C=768, at B=4, T=64 ran at 204 tokens/s as one shard, 125-144 as two shards of 128 rows).
    Such a batch runs as one shard with BLAS's own threads and no extra gradient buffer.
    Replicas are made when a batch first needs them."""

    def __init__(self, model, n_workers=None, min_tokens=None):
        self.model = model
        n = n_workers or available_cores()
        self.n_workers = n if model.backend.name == "cpu" else 1
        self.min_tokens = min_tokens or 2 * model.config.n_embd
        self.replicas = [model]
        self.pool = ThreadPoolExecutor(self.n_workers) if self.n_workers > 1 else None
        self.blas = None
        if self.pool is not None:
            from threadpoolctl import ThreadpoolController
            self.blas = ThreadpoolController()

    def _shards(self, batch_size, seq_len):
        """Row slices, one per worker, each with at least one row and min_tokens tokens."""
        n = max(1, min(self.n_workers, batch_size, batch_size * seq_len // self.min_tokens))
        while len(self.replicas) < n:
            self.replicas.append(self.model.replica())
        bounds = [round(i * batch_size / n) for i in range(n + 1)]
        return [slice(bounds[i], bounds[i + 1]) for i in range(n)]

    def _run(self, work, shards, batch_size):
        """Apply work(worker, rows, fraction) to every shard; returns the weighted loss."""
        jobs = [(i, rows, (rows.stop - rows.start) / batch_size) for i, rows in enumerate(shards)]
        if len(jobs) == 1:
            return work(*jobs[0])
        contexts = [contextvars.copy_context() for _ in jobs]    # the caller's np.errstate etc.
        with self.blas.limit(limits=1, user_api="blas"):
            return sum(self.pool.map(lambda ctx, job: ctx.run(work, *job), contexts, jobs))

    def forward_backward(self, x, y, dloss=1.0, train=True, rng_for=None):
        """x, y (B, T) host int arrays. Adds d(dloss * loss)/d params into model.grads and
        returns the loss (a float). rng_for(worker) gives each worker's dropout Generator."""
        asarray = self.model.backend.asarray

        def work(i, rows, fraction):
            replica = self.replicas[i]
            if i > 0:
                replica.zero_grad()
            _, loss = replica.forward(asarray(x[rows]), asarray(y[rows]), train=train,
                                      rng=rng_for(i) if rng_for else None, return_logits=False)
            replica.backward(dloss * fraction)
            return loss * fraction

        shards = self._shards(*x.shape)
        loss = self._run(work, shards, len(x))
        used = self.replicas[1:len(shards)]
        if used:                                         # sum the workers' gradients, in parallel parts
            grads, n = self.model.grads, self.model.grads.size
            bounds = [n * i // self.n_workers for i in range(self.n_workers + 1)]

            def add_part(part):
                for replica in used:
                    grads[bounds[part]:bounds[part + 1]] += replica.grads[bounds[part]:bounds[part + 1]]
            list(self.pool.map(add_part, range(self.n_workers)))
        return loss

    def loss(self, x, y):
        """The loss of a batch, no gradients (for evaluation)."""
        asarray = self.model.backend.asarray

        def work(i, rows, fraction):
            replica = self.replicas[i]
            _, loss = replica.forward(asarray(x[rows]), asarray(y[rows]), keep_cache=False, return_logits=False)
            return loss * fraction

        return self._run(work, self._shards(*x.shape), len(x))
