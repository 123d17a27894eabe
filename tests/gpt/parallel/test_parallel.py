"""Data-parallel CPU worker processes give the gradients and loss of one pass over the whole batch."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpt.config import GPTConfig
from gpt.model import GPT
from gpt.parallel.workers import DataParallel, WorkerError, model_buffers
from minigrad import AdamW, Backend

CFG = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=50)


def batch(B, T=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, CFG.vocab_size, (B, T)), rng.integers(0, CFG.vocab_size, (B, T))


def shared_model(dtype, n_workers=2):
    """GPT(CFG) on shared-memory buffers, ready for n_workers worker processes."""
    backend = Backend("cpu", dtype)
    return GPT(CFG, backend, seed=1, **model_buffers(CFG, backend, n_workers))


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
    model = shared_model(dtype, workers)
    loss = DataParallel(model, workers, min_tokens=1).forward_backward(x, y)
    assert model.grads.dtype == np.dtype(dtype)
    assert abs(loss - ref_loss) <= rtol * abs(ref_loss)
    scale = np.abs(ref_grads).max()
    assert np.abs(model.grads - ref_grads).max() <= rtol * scale


def test_dropout_masks_do_not_depend_on_how_the_batch_is_split():
    """With dropout, 3 workers (or a shard's rows given at their place in the batch) draw the
    masks of one pass over the whole batch: the same loss and gradients in float64."""
    config = CFG.replace(dropout=0.2)
    x, y = batch(5)
    whole = GPT(config, Backend("cpu", "float64"), seed=1)
    _, ref_loss = whole.forward(x, y, train=True, dropout_seed=77)
    whole.backward()
    backend = Backend("cpu", "float64")
    model = GPT(config, backend, seed=1, **model_buffers(config, backend, 3))
    loss = DataParallel(model, 3, min_tokens=1).forward_backward(x, y, dropout_seed=77)
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    assert np.abs(model.grads - whole.grads).max() <= 1e-12 * np.abs(whole.grads).max()
    other_seed = GPT(config, Backend("cpu", "float64"), seed=1)
    _, other = other_seed.forward(x, y, train=True, dropout_seed=78)
    assert abs(float(other) - float(ref_loss)) > 1e-6                 # the masks do matter
    halves = GPT(config, Backend("cpu", "float64"), seed=1)           # rows 2..4 at their place
    _, tail = halves.forward(x[2:], y[2:], train=True, dropout_seed=77, first_row=2)
    _, head = halves.forward(x[:2], y[:2], train=True, dropout_seed=77, first_row=0)
    assert abs((2 * float(head) + 3 * float(tail)) / 5 - float(ref_loss)) <= 1e-12


def test_gradients_accumulate_across_calls():
    x, y = batch(4)
    _, ref_grads = reference("float64", x, y)
    model = shared_model("float64", 2)
    parallel = DataParallel(model, 2, min_tokens=1)
    parallel.forward_backward(x, y, dloss=0.5)
    parallel.forward_backward(x, y, dloss=0.5)           # two half micro-batches = one batch
    assert np.allclose(model.grads, ref_grads, rtol=0, atol=1e-12 * np.abs(ref_grads).max())


def test_loss_only_matches_forward():
    x, y = batch(4)
    model = shared_model("float64", 2)
    assert abs(DataParallel(model, 2, min_tokens=1).loss(x, y) - model.forward(x, y)[1]) < 1e-12
    assert not model.grads.any()


def test_errstate_of_the_caller_applies_in_workers():
    x, y = batch(4)
    model = shared_model("float32", 2)
    model.params[...] = 1e30                             # overflows everywhere
    with np.errstate(all="raise"), pytest.raises(FloatingPointError):
        DataParallel(model, 2, min_tokens=1).loss(x, y)


def test_small_batches_run_as_one_shard():
    model = shared_model("float64", 2)
    parallel = DataParallel(model, 2, min_tokens=32)
    assert len(parallel._shards(3, 8)) == 1 and not parallel.processes    # 24 tokens: one shard, no workers
    assert len(parallel._shards(8, 8)) == 2 and len(parallel.processes) == 1   # 64 tokens: two
    assert DataParallel(model, 2).min_tokens == 2 * CFG.n_embd                 # the default
    parallel.close()


def test_workers_see_parameter_updates():
    """The parameters live in shared memory: changing them here (as AdamW does, in place)
    changes what the worker processes compute."""
    x, y = batch(4)
    model = shared_model("float64", 2)
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
    model = shared_model("float64", 2)
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
        "from gpt.config import GPTConfig\nfrom gpt.model import GPT\n"
        "from gpt.parallel.workers import DataParallel, model_buffers\n"
        "from minigrad import Backend\n"
        "cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=50)\n"
        "backend = Backend('cpu', 'float64')\n"
        "p = DataParallel(GPT(cfg, backend, **model_buffers(cfg, backend, 3)), 3, min_tokens=1)\n"
        "x = np.zeros((4, 8), dtype=np.int64)\n"
        "p.loss(x, x)\n"
        "print(' '.join(str(w.pid) for w in p.processes), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    pids = [int(pid) for pid in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)

    model = shared_model("float64", 2)
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
    model = shared_model("float64", 2)
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


def test_workers_need_a_model_on_shared_buffers():
    """A model on private buffers cannot be shared with forked workers: a clear ValueError at
    construction, not wrong gradients later; one worker needs no shared memory."""
    model = GPT(CFG, Backend("cpu", "float64"), seed=1)
    with pytest.raises(ValueError, match="model_buffers"):
        DataParallel(model, 2)
    assert DataParallel(model, 1).n_workers == 1


@pytest.mark.parametrize("optimizer_first", [True, False])
def test_the_optimizer_can_be_built_before_or_after_the_workers(optimizer_first):
    """The buffers never move, so an AdamW made before the workers updates the parameters the
    workers compute with, exactly as one made after them."""
    x, y = batch(4)
    model = shared_model("float64")
    optimizer = AdamW(model.params, model.grads, model.decay_mask()) if optimizer_first else None
    workers = DataParallel(model, 2, min_tokens=1)
    optimizer = optimizer or AdamW(model.params, model.grads, model.decay_mask())
    reference_model = GPT(CFG, Backend("cpu", "float64"), seed=1)
    reference_optimizer = AdamW(reference_model.params, reference_model.grads, reference_model.decay_mask())
    for _ in range(2):
        model.zero_grad()
        workers.forward_backward(x, y)
        optimizer.step(1e-2)
        reference_model.zero_grad()
        reference_model.forward(x, y)
        reference_model.backward()
        reference_optimizer.step(1e-2)
    np.testing.assert_allclose(model.params, reference_model.params, rtol=0, atol=1e-10)
    assert abs(workers.loss(x, y) - reference_model.forward(x, y)[1]) < 1e-12
    workers.close()
