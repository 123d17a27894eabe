"""Fused softmax cross-entropy, reference and fast (the `ops` fixture): gradients, a float64
log-softmax reference, stability at +-1e4, ignore_index, and padded vocabulary columns.
The fast forward computes in the logits' memory (the pair's contract allows it), so every
call here hands it a copy."""
from functools import partial

import numpy as np
import pytest

from minigrad import kernels

SHAPES = [(1, 1), (1, 4), (3, 1), (2, 5)]   # (B, T)
V, VP = 9, 12                              # real vocabulary, padded logits width
IGNORE = -100


def forward_on_copy(ops):
    """ops' cross_entropy_forward on a copy of the logits (which it may overwrite)."""
    return lambda logits, *args, **kw: ops.cross_entropy_forward(logits.copy(), *args, **kw)


def ce_case(ops, B, T, ignore=False, padded=False, seed=0):
    """(forward, backward, tensors, x): every third position from the second on is ignored."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, V, (B, T))
    if ignore:
        targets.flat[1::3] = IGNORE
    forward = partial(forward_on_copy(ops), targets=targets, ignore_index=IGNORE,
                      vocab_size=V if padded else None)
    logits = 2 * rng.standard_normal((B, T, VP if padded else V))
    return forward, ops.cross_entropy_backward, {"logits": logits}, "logits"


def ce_reference(logits, targets, ignore_index=IGNORE, vocab_size=None):
    """(loss, dlogits) in float64: log-softmax over the first vocab_size columns, mean over the
    non-ignored positions, gradient (softmax - onehot) / N on those rows and 0 everywhere else."""
    width = logits.shape[-1]
    V = vocab_size or width
    z = logits.reshape(-1, width)[:, :V].astype(np.float64)
    t = targets.reshape(-1)
    keep = t != ignore_index
    grad = np.zeros((t.size, width))
    if not keep.any():
        return 0.0, grad.reshape(logits.shape)
    shifted = z[keep] - z[keep].max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    onehot = np.eye(V)[t[keep]]
    grad[keep, :V] = (np.exp(logp) - onehot) / keep.sum()
    return -np.mean(np.sum(logp * onehot, axis=1)), grad.reshape(logits.shape)


def run(ops, logits, targets, **kw):
    """(loss, dlogits) from minigrad, dloss = 1."""
    loss, cache = forward_on_copy(ops)(logits, targets, ignore_index=IGNORE, **kw)
    return loss, ops.cross_entropy_backward(1.0, cache)


VARIANTS = {"plain": {}, "ignore": {"ignore": True}, "padded": {"padded": True},
            "ignore_padded": {"ignore": True, "padded": True}}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}T{s[1]}")
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_match_finite_differences(pair, ops, variant, shape):
    """Backward (with a random upstream dloss) == float64 central differences."""
    pair(*ce_case(ops, *shape, **VARIANTS[variant])).gradcheck()


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_log_softmax_reference(ops, variant):
    """Loss and gradient equal the direct float64 log-softmax computation."""
    forward, _, tensors, _ = ce_case(ops, 3, 4, **VARIANTS[variant])
    logits, kw = tensors["logits"], forward.keywords
    loss, dlogits = run(ops, logits, kw["targets"], vocab_size=kw["vocab_size"])
    ref_loss, ref_grad = ce_reference(logits, kw["targets"], vocab_size=kw["vocab_size"])
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(dlogits, ref_grad, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_stable_for_logits_around_1e4(ops, dtype, rtol):
    """Logits near +-1e4 (exp overflows unshifted) give a finite loss and gradient equal to the
    reference computed from shifted logits."""
    rng = np.random.default_rng(1)
    logits = (1e4 * rng.choice([-1.0, 1.0], (2, 3, V)) + 3 * rng.standard_normal((2, 3, V))).astype(dtype)
    targets = rng.integers(0, V, (2, 3))
    loss, dlogits = run(ops, logits, targets)
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    ref_loss, ref_grad = ce_reference(logits, targets)
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    np.testing.assert_allclose(dlogits, ref_grad, rtol=rtol, atol=rtol / targets.size)


def test_ignored_positions_are_excluded(ops):
    """Ignored rows get exactly zero gradient and the loss is the mean over the other rows,
    whatever the ignored rows' logits hold."""
    forward, _, tensors, _ = ce_case(ops, 3, 4, ignore=True)
    logits, targets = tensors["logits"], forward.keywords["targets"]
    ignored = targets == IGNORE
    logits[ignored] = 1e4
    loss, dlogits = run(ops, logits, targets)
    assert np.all(dlogits[ignored] == 0)
    kept_loss, kept_grad = run(ops, logits[~ignored][None], targets[~ignored][None])
    np.testing.assert_allclose(loss, kept_loss, rtol=1e-14)
    np.testing.assert_allclose(dlogits[~ignored], kept_grad[0], rtol=1e-14, atol=1e-17)


def test_all_ignored_gives_zero_loss_and_gradient(ops):
    """No valid position: loss 0 (not NaN) and an all-zero gradient."""
    logits = np.random.default_rng(2).standard_normal((2, 3, V))
    loss, dlogits = run(ops, logits, np.full((2, 3), IGNORE))
    assert loss == 0
    assert np.all(dlogits == 0) and dlogits.shape == logits.shape


def test_padded_columns_get_no_gradient_and_no_mass(ops):
    """Columns past vocab_size get exactly zero gradient and, even when large, leave loss and
    gradient as if they were sliced off."""
    forward, _, tensors, _ = ce_case(ops, 2, 5, padded=True)
    logits, targets = tensors["logits"], forward.keywords["targets"]
    logits[..., V:] = 50.0
    loss, dlogits = run(ops, logits, targets, vocab_size=V)
    assert dlogits.shape == logits.shape
    assert np.all(dlogits[..., V:] == 0)
    sliced_loss, sliced_grad = run(ops, logits[..., :V].copy(), targets)
    np.testing.assert_allclose(loss, sliced_loss, rtol=1e-14)
    np.testing.assert_allclose(dlogits[..., :V], sliced_grad, rtol=1e-14, atol=1e-17)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_small_integer_targets(ops, dtype):
    """Targets straight from a uint8/uint16 token stream give the same loss and gradient as int64
    (the default ignore_index -1 is out of range for unsigned types)."""
    rng = np.random.default_rng(5)
    logits, targets = rng.standard_normal((2, 3, V)), rng.integers(0, V, (2, 3))
    loss, cache = forward_on_copy(ops)(logits, targets.astype(dtype))
    ref_loss, ref_cache = forward_on_copy(ops)(logits, targets)
    assert loss == ref_loss
    np.testing.assert_array_equal(ops.cross_entropy_backward(1.0, cache), ops.cross_entropy_backward(1.0, ref_cache))


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_stays_float32(pair, ops, variant):
    """float32 logits: float32 loss and gradient, no float64 on the way."""
    pair(*ce_case(ops, 2, 5, **VARIANTS[variant])).check_dtype(np.float32)


def test_fast_forward_reuses_the_logits_memory():
    """The fast pair computes the softmax and then the gradient in the logits' own memory; the
    reference leaves the logits alone. Both give the same loss and gradient."""
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((2, 3, 16)).astype(np.float32)
    targets = rng.integers(0, 12, (2, 3))
    reference, fast = kernels("cpu", "reference"), kernels("cpu", "fast")
    kept = logits.copy()
    loss, cache = reference.cross_entropy_forward(kept, targets, vocab_size=12)
    grad = reference.cross_entropy_backward(1.0, cache)
    np.testing.assert_array_equal(kept, logits)
    scratch = logits.copy()
    loss_inplace, cache_inplace = fast.cross_entropy_forward(scratch, targets, vocab_size=12)
    grad_inplace = fast.cross_entropy_backward(1.0, cache_inplace)
    np.testing.assert_allclose(loss_inplace, loss, rtol=1e-6)
    np.testing.assert_allclose(grad_inplace, grad, rtol=1e-5, atol=1e-7)
    assert np.shares_memory(grad_inplace, scratch)
