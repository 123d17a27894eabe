"""The elementwise and per-row pairs: embedding, linear, layernorm, GELU, dropout.

Each pair, reference and fast (the `ops` fixture), is checked against float64 central
differences (minigrad.gradcheck) for its input and every weight, on shapes that include B=1
and T=1; against a direct reference for its forward; for accumulation into the weight grads;
and for keeping float32 float32.
"""
import math
from functools import partial

import numpy as np
import pytest

import minigrad.cpu.gelu
from minigrad import dropout_backward, dropout_forward, embedding_backward, embedding_forward, kernels
from minigrad.dropout import GOLDEN, dropout_mask, element_hash, keep_threshold, mix32, site_seed

SHAPES = [(1, 1), (1, 4), (3, 1), (2, 5)]   # (B, T)
V, BLOCK, C, OUT = 7, 6, 5, 3               # vocab, context, width, linear output width
DROP_P, DROP_SEED = 0.3, 5


def embedding_case(ops, rng, B, T):
    idx = rng.integers(0, V, (B, T))
    idx.flat[-1] = idx.flat[0]                  # at least one repeated id once B*T > 1
    tensors = {"wte": rng.standard_normal((V, C)), "wpe": rng.standard_normal((BLOCK, C))}
    return partial(ops.embedding_forward, idx), ops.embedding_backward, tensors, None


def linear_case(ops, rng, B, T, bias=True):
    tensors = {"x": rng.standard_normal((B, T, C)), "w": rng.standard_normal((C, OUT))}
    if bias:
        tensors["b"] = rng.standard_normal(OUT)
        return ops.linear_forward, ops.linear_backward, tensors, "x"
    return partial(ops.linear_forward, b=None), partial(ops.linear_backward, db=None), tensors, "x"


def layernorm_case(ops, rng, B, T):
    tensors = {"x": 2 * rng.standard_normal((B, T, C)) + 0.5,
               "weight": 1 + 0.3 * rng.standard_normal(C), "bias": rng.standard_normal(C)}
    return ops.layernorm_forward, ops.layernorm_backward, tensors, "x"


def gelu_case(ops, rng, B, T):
    return ops.gelu_forward, ops.gelu_backward, {"x": 2 * rng.standard_normal((B, T, C))}, "x"


def dropout_case(ops, rng, B, T):
    """A fresh Generator with the same seed on every forward call: every call draws the same mask."""
    def forward(x):
        return ops.dropout_forward(x, DROP_P, DROP_SEED)
    return forward, ops.dropout_backward, {"x": rng.standard_normal((B, T, C))}, "x"


CASES = {"embedding": embedding_case, "linear": linear_case,
         "linear_nobias": partial(linear_case, bias=False), "layernorm": layernorm_case,
         "gelu": gelu_case, "dropout": dropout_case}
WEIGHTED = ["embedding", "linear", "linear_nobias", "layernorm"]


def make(pair, ops, name, B=2, T=5, seed=0):
    return pair(*CASES[name](ops, np.random.default_rng(seed), B, T))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}T{s[1]}")
@pytest.mark.parametrize("name", CASES)
def test_gradients_match_finite_differences(pair, ops, name, shape):
    """Backward == float64 central differences for the input and every weight."""
    make(pair, ops, name, *shape).gradcheck()


@pytest.mark.parametrize("name", WEIGHTED)
def test_backward_accumulates_weight_grads(pair, ops, name):
    """Calling backward twice into the same grad arrays doubles them."""
    make(pair, ops, name).check_accumulates()


@pytest.mark.parametrize("name", CASES)
def test_float32_stays_float32(pair, ops, name):
    """float32 in: float32 output, input gradient and weight gradients, no float64 on the way."""
    make(pair, ops, name).check_dtype(np.float32)


def test_forwards_match_direct_formulas(ops):
    """Each forward equals its textbook formula written out independently."""
    linear_forward, layernorm_forward, gelu_forward = ops.linear_forward, ops.layernorm_forward, ops.gelu_forward
    embedding_forward = ops.embedding_forward
    rng = np.random.default_rng(2)
    B, T = 2, 4
    x, w, b = rng.standard_normal((B, T, C)), rng.standard_normal((C, OUT)), rng.standard_normal(OUT)
    np.testing.assert_allclose(linear_forward(x, w, b)[0], np.einsum("btc,co->bto", x, w) + b, rtol=1e-12)
    np.testing.assert_allclose(linear_forward(x, w, None)[0], np.einsum("btc,co->bto", x, w), rtol=1e-12)

    g, beta = rng.standard_normal(C), rng.standard_normal(C)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(layernorm_forward(x, g, beta)[0], (x - mu) / np.sqrt(var + 1e-5) * g + beta,
                               rtol=1e-12, atol=1e-12)

    gelu = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(gelu_forward(x)[0], gelu, rtol=1e-12, atol=1e-15)

    idx = rng.integers(0, V, (B, T))
    wte, wpe = rng.standard_normal((V, C)), rng.standard_normal((BLOCK, C))
    expected = np.array([[wte[idx[i, t]] + wpe[t] for t in range(T)] for i in range(B)])
    np.testing.assert_array_equal(embedding_forward(idx, wte, wpe)[0], expected)


def test_embedding_scatter_add_with_repeated_ids():
    """dwte sums every row of a repeated id (an explicit loop as reference); dwpe sums over batch."""
    rng = np.random.default_rng(3)
    B, T = 4, 6
    idx = rng.integers(0, 3, (B, T))                 # 24 positions over 3 ids: many repeats
    assert len(np.unique(idx)) < idx.size
    wte, wpe = rng.standard_normal((V, C)), rng.standard_normal((BLOCK, C))
    dout = rng.standard_normal((B, T, C))
    _, cache = embedding_forward(idx, wte, wpe)
    dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)
    assert embedding_backward(dout, cache, dwte, dwpe) is None
    ref_wte, ref_wpe = np.zeros_like(wte), np.zeros_like(wpe)
    for i in range(B):
        for t in range(T):
            ref_wte[idx[i, t]] += dout[i, t]
            ref_wpe[t] += dout[i, t]
    np.testing.assert_allclose(dwte, ref_wte, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dwpe, ref_wpe, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("p, train", [(0.0, True), (0.5, False)])
def test_dropout_off_is_identity(p, train):
    """p == 0 or evaluation returns the input itself, and backward passes dout through."""
    x, dout = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    out, cache = dropout_forward(x, p, 0, train)
    assert out is x
    assert dropout_backward(dout, cache) is dout


def test_dropout_zeroes_fraction_p_and_rescales_survivors():
    """On 10^6 elements the zeroed fraction is p (within 5 sigma); survivors are x / (1 - p);
    backward zeroes the same positions and scales the rest the same way."""
    p, n = 0.25, 1000
    rng = np.random.default_rng(4)
    x = rng.uniform(1, 2, (n, n)).astype(np.float32)        # no zeros of its own
    out, cache = dropout_forward(x, p, 12345)
    dropped = out == 0
    assert abs(dropped.mean() - p) < 5 * math.sqrt(p * (1 - p) / x.size)
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1 - p), rtol=1e-6)
    dout = rng.uniform(1, 2, (n, n)).astype(np.float32)
    dx = dropout_backward(dout, cache)
    np.testing.assert_array_equal(dx == 0, dropped)
    np.testing.assert_allclose(dx[~dropped], dout[~dropped] / (1 - p), rtol=1e-6)


def test_dropout_hash_is_the_documented_integer_function():
    """The array hash equals lowbias32 applied twice to Python ints (the formula a CUDA kernel
    computes per element), and masks depend on the seed and on nothing else."""
    seed, n = 0xDEADBEEF, 1000
    hashed = element_hash(np, seed, n)
    second = mix32((seed + GOLDEN) & 0xFFFFFFFF)
    for i in (0, 1, 2, 500, 999):
        assert int(hashed[i]) == mix32(mix32(i ^ seed) ^ second)
    a, b = dropout_mask((n,), 0.5, seed, np.float32, np), dropout_mask((n,), 0.5, seed + 1, np.float32, np)
    np.testing.assert_array_equal(a, dropout_mask((n,), 0.5, seed, np.float32, np))
    assert 0.4 < np.mean((a > 0) == (b > 0)) < 0.6                 # another seed: independent
    sites = {site_seed(7, site) for site in range(1000)}
    assert len(sites) == 1000                                      # every site its own seed


def test_dropout_keeps_a_fraction_of_exactly_the_threshold():
    """An element is kept when its top 24 hash bits reach round(p * 2^24); the mask is 0 or
    exactly 1 / (1 - p) in the array's dtype."""
    p, n, seed = 0.1, 4096, 3
    mask = dropout_mask((n,), p, seed, np.float64, np)
    kept = (element_hash(np, seed, n) >> np.uint32(8)) >= keep_threshold(p)
    np.testing.assert_array_equal(mask, np.where(kept, 1.0 / (1.0 - p), 0.0))


FAST = kernels("cpu", "fast")


@pytest.mark.parametrize("shape", [(2, 5), (3, 1)], ids=lambda s: f"B{s[0]}T{s[1]}")
def test_gelu_in_row_blocks_matches_finite_differences(pair, shape, monkeypatch):
    """The fast GELU's check with its passes run over blocks of 2 rows (C = 5): several blocks,
    and a shorter last one when the row count is odd."""
    monkeypatch.setattr(minigrad.cpu.gelu, "CHUNK_ELEMENTS", 2 * C)
    make(pair, FAST, "gelu", *shape).gradcheck()


def test_float32_gelu_in_row_blocks_equals_one_block(pair, monkeypatch):
    """float32 at 37 x 5: blocks of 3 rows give the output and gradient of one block over
    everything, bit for bit (the same operations on the same elements)."""
    results = []
    for chunk in (10 ** 9, 3 * C):
        monkeypatch.setattr(minigrad.cpu.gelu, "CHUNK_ELEMENTS", chunk)
        p = pair(*CASES["gelu"](FAST, np.random.default_rng(4), 37, 1))
        p.tensors = {n: a.astype(np.float32) for n, a in p.tensors.items()}
        dout = np.random.default_rng(5).standard_normal((37, 1, C)).astype(np.float32)
        out, dx, _ = p.run(dout)
        results.append((out, dx))
    for whole, blocked in zip(*results):
        assert blocked.dtype == np.float32
        np.testing.assert_array_equal(blocked, whole)


def test_gelu_inference_path_gives_the_same_output(ops):
    """keep_grad=False skips the cache, not the forward: the output is bit-identical."""
    x = 3 * np.random.default_rng(2).standard_normal((4, 7)).astype(np.float32)
    out, cache = ops.gelu_forward(x)
    out_inference, no_cache = ops.gelu_forward(x, keep_grad=False)
    np.testing.assert_array_equal(out_inference, out)
    assert no_cache is None and cache.size == x.size
