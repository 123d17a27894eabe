"""Data-parallel CPU threads give the gradients and loss of one pass over the whole batch."""
import numpy as np
import pytest

from gpt.config import GPTConfig
from gpt.model import GPT
from gpt.parallel import DataParallel
from minigrad import Backend

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
def test_threads_equal_one_pass_over_the_batch(dtype, rtol, B, workers):
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
    assert len(parallel._shards(3, 8)) == 1 and len(parallel.replicas) == 1    # 24 tokens: one shard
    assert len(parallel._shards(8, 8)) == 2 and len(parallel.replicas) == 2    # 64 tokens: two
    assert DataParallel(model, 2).min_tokens == 2 * CFG.n_embd                 # the default
