"""Data-parallel CPU worker processes give the gradients and loss of one pass over the whole batch."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpt.config import GPTConfig
from gpt.model import GPT
from gpt.parallel import DataParallel, WorkerError
from minigrad import Backend

ROOT = Path(__file__).resolve().parents[1]
CFG = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=50)


def batch(B, T=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, CFG.vocab_size, (B, T)), rng.integers(0, CFG.vocab_size, (B, T))


def reference(dtype, x, y):
    model = GPT(CFG, Backend("cpu", dtype), seed=1)
    _, loss = model.forward(x, y)
    model.backward()
    return loss, model.grads.copy()


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("B,workers", [(4, 2), (3, 2), (5, 3), (1, 2)])
def test_workers_equal_one_pass_over_the_batch(dtype, rtol, B, workers):
    x, y = batch(B)
    ref_loss, ref_grads = reference(dtype, x, y)
    model = GPT(CFG, Backend("cpu", dtype), seed=1)
    loss = DataParallel(model, workers, min_tokens=1).forward_backward(x, y)
    assert model.grads.dtype == np.dtype(dtype)
    assert abs(loss - ref_loss) <= rtol * abs(ref_loss)
    scale = np.abs(ref_grads).max()
    assert np.abs(model.grads - ref_grads).max() <= rtol * scale


def test_gradients_accumulate_across_calls():
    x, y = batch(4)
    _, ref_grads = reference("float64", x, y)
    model = GPT(CFG, Backend("cpu", "float64"), seed=1)
    parallel = DataParallel(model, 2, min_tokens=1)
    parallel.forward_backward(x, y, dloss=0.5)
    parallel.forward_backward(x, y, dloss=0.5)           # two half micro-batches = one batch
    assert np.allclose(model.grads, ref_grads, rtol=0, atol=1e-12 * np.abs(ref_grads).max())


def test_loss_only_matches_forward():
    x, y = batch(4)
    model = GPT(CFG, Backend("cpu", "float64"), seed=1)
    assert abs(DataParallel(model, 2, min_tokens=1).loss(x, y) - model.forward(x, y)[1]) < 1e-12
    assert not model.grads.any()


def test_errstate_of_the_caller_applies_in_workers():
    x, y = batch(4)
    model = GPT(CFG, Backend("cpu", "float32"), seed=1)
    model.params[...] = 1e30                             # overflows everywhere
    with np.errstate(all="raise"), pytest.raises(FloatingPointError):
        DataParallel(model, 2, min_tokens=1).loss(x, y)


def test_small_batches_run_as_one_shard():
    model = GPT(CFG, Backend("cpu", "float64"), seed=1)
    parallel = DataParallel(model, 2, min_tokens=32)
    assert len(parallel._shards(3, 8)) == 1 and not parallel.processes    # 24 tokens: one shard, no workers
    assert len(parallel._shards(8, 8)) == 2 and len(parallel.processes) == 1   # 64 tokens: two
    assert DataParallel(model, 2).min_tokens == 2 * CFG.n_embd                 # the default
    parallel.close()


def test_workers_see_parameter_updates():
    """The parameters live in shared memory: changing them here (as AdamW does, in place)
    changes what the worker processes compute."""
    x, y = batch(4)
    model = GPT(CFG, Backend("cpu", "float64"), seed=1)
    parallel = DataParallel(model, 2, min_tokens=1)
    parallel.forward_backward(x, y)
    model.params *= 1.5
    model.zero_grad()
    loss = parallel.forward_backward(x, y)
    reference_model = GPT(CFG, Backend("cpu", "float64"), seed=1)
    reference_model.params *= 1.5
    _, ref_loss = reference_model.forward(x, y)
    reference_model.backward()
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    assert np.allclose(model.grads, reference_model.grads, rtol=0, atol=1e-12 * np.abs(reference_model.grads).max())
    parallel.close()


def test_an_error_in_a_worker_is_raised_here_and_the_workers_go_on():
    """A bad token id in the second shard fails inside the worker process: the same exception
    type comes back, and the next batch still works (requests and replies stay paired)."""
    x, y = batch(4)
    model = GPT(CFG, Backend("cpu", "float64"), seed=1)
    parallel = DataParallel(model, 2, min_tokens=1)
    bad = x.copy()
    bad[3, 0] = 10 ** 6                                  # in rows 2..3, the worker's shard
    with pytest.raises(IndexError):
        parallel.forward_backward(bad, y)
    assert abs(parallel.loss(x, y) - model.forward(x, y)[1]) < 1e-12
    parallel.close()


def test_worker_processes_end_with_the_program():
    """The workers end on close(), and when the main process exits, even by SIGKILL."""
    code = (
        "import os, signal, sys, numpy as np\n"
        "sys.path.insert(0, %r)\n"
        "from gpt.config import GPTConfig\nfrom gpt.model import GPT\nfrom gpt.parallel import DataParallel\n"
        "from minigrad import Backend\n"
        "cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=50)\n"
        "p = DataParallel(GPT(cfg, Backend('cpu', 'float64')), 3, min_tokens=1)\n"
        "x = np.zeros((4, 8), dtype=np.int64)\n"
        "p.loss(x, x)\n"
        "print(' '.join(str(w.pid) for w in p.processes), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n") % str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    pids = [int(pid) for pid in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)

    model = GPT(CFG, Backend("cpu", "float64"), seed=1)
    parallel = DataParallel(model, 2, min_tokens=1)
    parallel.loss(*batch(4))
    (worker,) = parallel.processes
    parallel.close()
    assert not worker.is_alive() and worker.exitcode == 0


def _alive(pid):
    """True while `pid` exists and is not a zombie (an orphan is reaped by init)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_dead_worker_is_one_clear_error():
    """A worker killed mid-run (as the out-of-memory killer would) gives a WorkerError naming
    the signal, not a hang or an EOFError."""
    model = GPT(CFG, Backend("cpu", "float64"), seed=1)
    parallel = DataParallel(model, 2, min_tokens=1)
    x, y = batch(4)
    parallel.loss(x, y)
    os.kill(parallel.processes[0].pid, signal.SIGKILL)
    parallel.processes[0].join(timeout=10)
    with pytest.raises(WorkerError, match="status -9"):
        parallel.forward_backward(x, y)
    assert not parallel.processes
    assert abs(parallel.loss(x, y) - model.forward(x, y)[1]) < 1e-12     # fresh workers
    parallel.close()
