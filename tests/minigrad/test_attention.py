"""Causal multi-head self-attention: gradients (input and all four weights, with and without
dropout), a per-head loop reference for the forward, causality and batch independence.
IMPLS runs each check on the reference pair (the whole masked square) and on the fast CPU
pair with one query block and with causal block skipping over several blocks, the last one
shorter."""
import math
from functools import partial

import numpy as np
import pytest

import minigrad.cpu.attention as fast
from minigrad import attention_backward, attention_forward

C = 12
SHAPES = [(1, 1), (1, 4), (3, 1), (2, 5)]   # (B, T)
HEADS = [1, 3, 4]
# name: (forward, backward). At T = 5, fast_qb2 has blocks [0, 2), [2, 4), [4, 5).
IMPLS = {"reference": (attention_forward, attention_backward),
         "fast_qb64": (partial(fast.attention_forward, query_block=64), fast.attention_backward),
         "fast_qb2": (partial(fast.attention_forward, query_block=2), fast.attention_backward)}
FORWARDS = {**{name: f for name, (f, _) in IMPLS.items()},
            "fast_qb1": partial(fast.attention_forward, query_block=1)}


def attention_case(B, T, n_head, dropout_p=0.0, seed=0, impl="reference"):
    """(forward, backward, tensors, x) with weights large enough that softmax is far from uniform.
    With dropout, each forward call gets a fresh Generator with the same seed (the same mask)."""
    rng = np.random.default_rng(seed)
    tensors = {"x": rng.standard_normal((B, T, C)),
               "w_qkv": 0.5 * rng.standard_normal((C, 3 * C)), "b_qkv": 0.5 * rng.standard_normal(3 * C),
               "w_proj": 0.5 * rng.standard_normal((C, C)), "b_proj": 0.5 * rng.standard_normal(C)}
    attention_forward, attention_backward = IMPLS[impl]

    def forward(**t):
        return attention_forward(**t, n_head=n_head, dropout_p=dropout_p, seed=7)
    return forward, attention_backward, tensors, "x"


def attention_reference(x, w_qkv, b_qkv, w_proj, b_proj, n_head):
    """Hugging Face GPT-2's layout, one (batch, head, query position) at a time."""
    B, T, C = x.shape
    hs = C // n_head
    q, k, v = np.split(x @ w_qkv + b_qkv, 3, axis=-1)
    y = np.zeros_like(x)
    for b in range(B):
        for h in range(n_head):
            cols = slice(h * hs, (h + 1) * hs)
            for t in range(T):
                scores = k[b, : t + 1, cols] @ q[b, t, cols] / math.sqrt(hs)   # only the past
                p = np.exp(scores - scores.max())
                y[b, t, cols] = (p / p.sum()) @ v[b, : t + 1, cols]
    return y @ w_proj + b_proj


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}T{s[1]}")
@pytest.mark.parametrize("n_head", HEADS, ids=lambda h: f"H{h}")
def test_gradients_match_finite_differences(pair, n_head, shape, impl):
    """Backward == float64 central differences for x, w_qkv, b_qkv, w_proj, b_proj."""
    pair(*attention_case(*shape, n_head, impl=impl)).gradcheck()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(1, 4), (2, 5)], ids=lambda s: f"B{s[0]}T{s[1]}")
def test_gradients_with_dropout_match_finite_differences(pair, shape, impl):
    """The same with attention dropout, the mask fixed by the seed."""
    pair(*attention_case(*shape, n_head=3, dropout_p=0.2, impl=impl)).gradcheck()


@pytest.mark.parametrize("impl", FORWARDS)
@pytest.mark.parametrize("n_head", HEADS, ids=lambda h: f"H{h}")
def test_forward_matches_per_head_loop(n_head, impl):
    """Head split, causal mask, softmax and projections as in GPT-2; dropout off in eval."""
    _, _, t, _ = attention_case(2, 5, n_head)
    expected = attention_reference(**t, n_head=n_head)
    out, _ = FORWARDS[impl](**t, n_head=n_head)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    out_eval, _ = FORWARDS[impl](**t, n_head=n_head, dropout_p=0.5, seed=0, train=False)
    np.testing.assert_allclose(out_eval, expected, rtol=1e-12, atol=1e-12)


def test_float32_block_skipping_equals_whole_square():
    """float32, T = 37 in blocks of 8 (the last one short): output and every gradient equal the
    one-block computation of the whole square to float32 rounding."""
    rng = np.random.default_rng(3)
    B, T, n_head = 2, 37, 3
    t = {"x": rng.standard_normal((B, T, C)), "w_qkv": 0.5 * rng.standard_normal((C, 3 * C)),
         "b_qkv": 0.5 * rng.standard_normal(3 * C), "w_proj": 0.5 * rng.standard_normal((C, C)),
         "b_proj": 0.5 * rng.standard_normal(C)}
    t = {name: value.astype(np.float32) for name, value in t.items()}
    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    results = []
    for query_block in (T, 8):
        out, cache = fast.attention_forward(**t, n_head=n_head, query_block=query_block)
        grads = [np.zeros_like(t[n]) for n in ("w_qkv", "b_qkv", "w_proj", "b_proj")]
        results.append([out, fast.attention_backward(dout, cache, *grads), *grads])
    for whole, blocked in zip(*results):
        assert blocked.dtype == np.float32
        np.testing.assert_allclose(blocked, whole, rtol=2e-5, atol=2e-5 * np.abs(whole).max())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("t", range(5))
def test_future_positions_get_no_gradient(t, impl):
    """d out[:, t] / d x[:, t'] is exactly 0 for t' > t, analytically (dout nonzero only at t)
    and by perturbation (changing x[:, t+1:] leaves out[:, :t+1] bit-identical)."""
    forward, backward, tensors, _ = attention_case(2, 5, n_head=3, impl=impl)
    out, cache = forward(**tensors)
    dout = np.zeros_like(out)
    dout[:, t] = np.random.default_rng(1).standard_normal(dout[:, t].shape)
    grads = [np.zeros_like(tensors[n]) for n in ("w_qkv", "b_qkv", "w_proj", "b_proj")]
    dx = backward(dout, cache, *grads)
    assert np.all(dx[:, t + 1:] == 0)
    assert np.all(np.abs(dx[:, : t + 1]).sum(axis=-1) > 0)
    tensors["x"][:, t + 1:] += 1.0
    np.testing.assert_array_equal(forward(**tensors)[0][:, : t + 1], out[:, : t + 1])


def test_batch_rows_are_independent():
    """Changing batch row 1 of x leaves out[0] bit-identical."""
    forward, _, tensors, _ = attention_case(2, 5, n_head=3)
    out0 = forward(**tensors)[0][0].copy()
    tensors["x"][1] = np.random.default_rng(9).standard_normal(tensors["x"][1].shape)
    np.testing.assert_array_equal(forward(**tensors)[0][0], out0)


@pytest.mark.parametrize("impl", IMPLS)
def test_backward_accumulates_weight_grads(pair, impl):
    """Calling backward twice into the same grad arrays doubles all four."""
    pair(*attention_case(2, 5, n_head=3, impl=impl)).check_accumulates()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dropout_p", [0.0, 0.2])
def test_float32_stays_float32(pair, dropout_p, impl):
    """float32 in: float32 output, dx and weight grads, no float64 on the way."""
    pair(*attention_case(2, 5, n_head=3, dropout_p=dropout_p, impl=impl)).check_dtype(np.float32)
