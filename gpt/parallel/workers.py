"""Data parallelism across CPU cores: one worker process per core, parameters in shared memory.

NumPy's elementwise work runs on one core, and OpenBLAS's own threads are slow on the many
small per-head matmuls of attention (on the 2-core machine this was written on, a 6-layer
384-wide step took 41 s with 2 BLAS threads and 2.9 s with 1). So instead of spreading each
operation over the cores, the batch is split by rows into one shard per core, and each shard's
forward and backward runs in its own process with single-threaded BLAS.

Processes, not threads: threads share one interpreter lock, and every NumPy call hands it over
and takes it back. With large arrays that costs little, but on small models the handovers
dominate: at 4 layers x 128 wide, B = 12, T = 64, two threads reached 0.65 of two cores, two
processes 0.97 (measured here). So the parameters and every worker's gradients live in
anonymous shared memory (`model_buffers` allocates them and the model is built on them), the
workers are forked once and stay, and per step they receive their rows and send back a loss,
a few kilobytes through a pipe.

Worker 0 is this process, running the model itself; worker i > 0 owns a replica: a GPT over
the same parameter buffer, with its own gradients and activations. With n_s of the n batch rows
in shard s,
    loss = sum_s (n_s / n) loss_s,   so   d loss / d params = sum_s (n_s / n) d loss_s / d params,
which is what backward(dloss * n_s / n) accumulates; the workers' gradients are then added into
the model's, each worker summing one slice of the buffer. The result equals one pass over the
whole batch up to float rounding, and it is deterministic: every shard and the order of the
sums are fixed. On CUDA, off Linux (forking is only safe there with every BLAS NumPy ships), or
with one worker, the whole batch goes through the model as it is.
"""
import mmap
import multiprocessing
import signal
import sys

import numpy as np

from bpe.corpus import available_cores

from ..errors import UserError
from ..model import GPT, buffer_size


class WorkerError(UserError):
    """A data-parallel worker process died (killed, or out of memory)."""


def shared_zeros(n, dtype):
    """(n,) zeros in anonymous shared memory: processes forked later see the same pages."""
    dtype = np.dtype(dtype)
    return np.frombuffer(mmap.mmap(-1, max(n * dtype.itemsize, 1)), dtype=dtype, count=n)


def is_shared(a):
    """True when the array's memory is a shared mapping from shared_zeros."""
    base = a.base if isinstance(a, np.ndarray) else None
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def usable_workers(backend, requested=None):
    """How many worker processes a run gets: `requested` (default: every core) on the CPU
    under Linux, where forking is safe with every BLAS NumPy ships; 1 elsewhere and on CUDA."""
    if backend.name != "cpu" or not sys.platform.startswith("linux"):
        return 1
    return requested or available_cores()


def model_buffers(config, backend, n_workers):
    """{"params", "grads"}: flat zero buffers for GPT(config, backend, **buffers), in shared
    memory when n_workers > 1, so that forked workers share them."""
    n = buffer_size(config)
    zeros = shared_zeros if n_workers > 1 else backend.xp.zeros
    return {"params": zeros(n, backend.dtype), "grads": zeros(n, backend.dtype)}


def replica(model):
    """A GPT over the model's parameter buffer with gradients of its own (in shared memory)."""
    return GPT(model.config, model.backend, seed=None, ops=model.ops, params=model.params,
               grads=shared_zeros(model.grads.size, model.grads.dtype))


def _serve(conn, twin, all_grads, other_ends):
    """A worker process's loop: run the requests `conn` brings on `twin` (its replica), reply
    with (result, error)."""
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # the main process's to handle:
        signal.signal(stop, signal.SIG_IGN)          # it finishes the step and saves
    for end in other_ends:                           # so that the main process exiting ends us
        end.close()
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1, user_api="blas")
    while True:
        try:
            request = conn.recv()
        except EOFError:                             # the main process is gone
            return
        if request is None:
            return
        op, errstate, args = request
        try:
            with np.errstate(**errstate):
                conn.send((_OPS[op](twin, all_grads, *args), None))
        except Exception as e:                       # raised again in the main process
            conn.send((None, e))


def _forward_backward(model, all_grads, x, y, dloss, fraction, train, seed, first_row, zero_grads):
    """Add d(dloss * fraction * loss(x, y))/d params into model.grads (zeroed first if asked:
    a worker's own buffer holds only this batch; the model's accumulates micro-batches).
    x's rows are rows first_row.. of the whole batch (their dropout masks, gpt.model)."""
    if zero_grads:
        model.zero_grad()
    _, loss = model.forward(x, y, train=train, dropout_seed=seed, return_logits=False, first_row=first_row)
    model.backward(dloss * fraction)
    return loss * fraction


def _loss(model, all_grads, x, y, fraction):
    return model.forward(x, y, keep_cache=False, return_logits=False)[1] * fraction


def _sum_grads(model, all_grads, lo, hi, n_used):
    """all_grads[0][lo:hi] += the other used workers' gradients there (in worker order)."""
    for grads in all_grads[1:n_used]:
        all_grads[0][lo:hi] += grads[lo:hi]


_OPS = {"forward_backward": _forward_backward, "loss": _loss, "sum_grads": _sum_grads}


class DataParallel:
    """Runs forward + backward of a batch over up to `n_workers` processes (CPU on Linux).

    A shard gets at least `min_tokens` tokens (default 2 x n_embd). Every extra worker costs a
    gradient buffer as large as the model, and single-threaded BLAS needs a few C rows per
    matmul to approach its peak; below that, one shard on BLAS's own threads is as fast and
    saves the memory (GPT-2 124M, C=768, at B=4, T=64: 166 tokens/s as one shard, 167 as two;
    at B=4, T=256 two shards would run at 235 instead of 186 tokens/s, for 475 MiB more, and
    the default keeps one). The worker processes are started when a batch first needs them,
    and end with this object or with the program.

    With more than one worker the model must be built on model_buffers(config, backend,
    n_workers), so that its parameters and gradients are in shared memory."""

    def __init__(self, model, n_workers=None, min_tokens=None):
        self.pipes = []                                   # one per worker process
        self.processes = []
        self.model = model
        self.n_workers = usable_workers(model.backend, n_workers)
        if self.n_workers > 1 and not (is_shared(model.params) and is_shared(model.grads)):
            raise ValueError("DataParallel with more than one worker needs a model built on "
                             "model_buffers(config, backend, n_workers) (shared memory)")
        self.min_tokens = min_tokens or 2 * model.config.n_embd
        self.all_grads = [model.grads]                    # the model's, then each worker's
        self.blas = None

    def _start_workers(self):
        from threadpoolctl import ThreadpoolController
        self.blas = ThreadpoolController()
        replicas = [replica(self.model) for _ in range(self.n_workers - 1)]
        self.all_grads = all_grads = [self.model.grads] + [r.grads for r in replicas]
        fork = multiprocessing.get_context("fork")
        ends = [fork.Pipe() for _ in replicas]
        for i, twin in enumerate(replicas):
            mine, theirs = ends[i]
            others = [end for j, pair in enumerate(ends) for end in pair if j != i] + [mine]
            p = fork.Process(target=_serve, args=(theirs, twin, all_grads, others), daemon=True)
            p.start()
            theirs.close()
            self.processes.append(p)
            self.pipes.append(mine)

    def close(self):
        """Stop the worker processes (also done at exit)."""
        for conn, p in zip(self.pipes, self.processes):
            try:
                conn.send(None)
            except OSError:
                pass
            p.join(timeout=5)
            conn.close()
        self.pipes, self.processes = [], []

    def __del__(self):
        self.close()

    def _shards(self, batch_size, seq_len):
        """Row slices, one per worker, each with at least one row and min_tokens tokens (the
        worker processes are started here when a batch first needs them)."""
        n = max(1, min(self.n_workers, batch_size, batch_size * seq_len // self.min_tokens))
        if n > 1 and not self.processes:
            self._start_workers()
        bounds = [round(i * batch_size / n) for i in range(n + 1)]
        return [slice(bounds[i], bounds[i + 1]) for i in range(n)]

    def _run(self, op, jobs):
        """Send jobs[i] (an argument tuple) to worker i > 0, run jobs[0] here with single-threaded
        BLAS, and return every worker's result in order. The workers use this process's
        np.errstate; an exception in any worker is raised here after all have answered."""
        errstate = np.geterr()
        for i, (conn, args) in enumerate(zip(self.pipes, jobs[1:]), start=1):
            try:
                conn.send((op, errstate, args))
            except OSError:                              # it died since the last batch
                raise self._died(i) from None
        results, error = [None], None
        try:
            with self.blas.limit(limits=1, user_api="blas"):
                results[0] = _OPS[op](self.model, self.all_grads, *jobs[0])
        except Exception as e:
            error = e
        for i, conn in enumerate(self.pipes[:len(jobs) - 1], start=1):
            try:
                result, worker_error = conn.recv()
            except (EOFError, OSError):                  # it died: killed, or out of memory
                raise self._died(i) from None
            results.append(result)
            error = error or worker_error
        if error is not None:
            raise error
        return results

    def _died(self, i):
        """The WorkerError for worker i, which has died; the others are stopped (the next
        batch starts fresh ones)."""
        process = self.processes[i - 1]
        process.join(timeout=5)
        self.close()
        return WorkerError(f"data-parallel worker process {i} died (exit status {process.exitcode}; "
                           "a negative status is the signal that killed it, -9 often the "
                           "out-of-memory killer); try a smaller --batch-size or --workers 1")

    def _to_device(self, x, y):
        """Host batches x, y (B, T) -> device arrays, in one host-to-device copy."""
        xy = self.model.backend.asarray(np.stack([x, y]))               # (2, B, T)
        return xy[0], xy[1]

    def forward_backward(self, x, y, dloss=1.0, train=True, dropout_seed=0, first_row=0):
        """x, y (B, T) host int arrays. Adds d(dloss * loss)/d params into model.grads and
        returns the loss (a 0-d array on the model's device, or a float). dropout_seed: the
        batch's; first_row: the row of the whole batch that x[0] is (under mpirun, this rank's
        first), so that every shard draws the whole batch's dropout masks."""
        shards = self._shards(*x.shape)
        if len(shards) == 1:
            x, y = self._to_device(x, y)
            return _forward_backward(self.model, self.all_grads, x, y, dloss, 1.0, train, dropout_seed, first_row,
                                     zero_grads=False)
        jobs = [(x[rows], y[rows], dloss, (rows.stop - rows.start) / len(x), train,
                 dropout_seed, first_row + rows.start, i > 0) for i, rows in enumerate(shards)]
        loss = sum(self._run("forward_backward", jobs))
        n = self.model.grads.size                        # sum the workers' gradients, a slice each
        bounds = [n * i // len(shards) for i in range(len(shards) + 1)]
        self._run("sum_grads", [(bounds[i], bounds[i + 1], len(shards)) for i in range(len(shards))])
        return loss

    def loss(self, x, y):
        """The loss of a batch, no gradients (for evaluation)."""
        shards = self._shards(*x.shape)
        if len(shards) == 1:
            return _loss(self.model, self.all_grads, *self._to_device(x, y), 1.0)
        return sum(self._run("loss", [(x[rows], y[rows], (rows.stop - rows.start) / len(x)) for rows in shards]))
