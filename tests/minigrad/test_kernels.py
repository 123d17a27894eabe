"""Every fast implementation equals its reference pair (minigrad.kernels: "fast" vs "reference").

For each op the fast CPU version and the reference get the same inputs and the same upstream
gradient; the outputs, the input gradient and every weight gradient must agree to 1e-12 of
the tensor's scale in float64 and to float32 rounding in float32 (relative error as in
minigrad.gradcheck.compare: max |fast - reference| / max |reference|). Shapes include B=1,
T=1, T not a multiple of the attention's query block, and odd widths. The dispatch point
itself is checked too: which module each op comes from, and that unknown names are refused.
"""
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest

import minigrad.cpu.attention
import minigrad.cpu.gelu
from gpt.config import GPTConfig
from gpt.generate import KVCache, forward_cached
from gpt.model import GPT, tensor_views
from minigrad import OP_NAMES, AdamW, Backend, kernels
from minigrad.cpu.optim import CHUNK
from minigrad.gradcheck import compare

REF, FAST = kernels("cpu", "reference"), kernels("cpu", "fast")
BOUND = {np.float64: 1e-12, np.float32: 2e-6}
DTYPES = [np.float64, np.float32]
ROWS = [(1, 1), (1, 7), (3, 1), (2, 67)]          # (B, T): 67 is not a multiple of 64 (or 2)


def assert_same(fast, reference, dtype, what):
    """fast == reference to BOUND[dtype] of the reference's scale, in the same dtype."""
    fast, reference = np.asarray(fast), np.asarray(reference)
    assert fast.dtype == reference.dtype == dtype, what
    assert fast.shape == reference.shape, what
    _, rel = compare(fast.astype(np.float64), reference.astype(np.float64))
    assert rel <= BOUND[dtype], f"{what}: relative difference {rel:.2e} > {BOUND[dtype]}"


def run_pair(ops, name, inputs, weights, dout, **kw):
    """ops.<name>_forward(*inputs, *weights, **kw), then backward with dout into fresh zero
    grads -> (out, dx, [weight grads])."""
    out, cache = getattr(ops, name + "_forward")(*[a.copy() for a in inputs], *weights, **kw)
    out = out.copy()                    # the fast cross-entropy reuses this memory in backward
    grads = [np.zeros_like(w) for w in weights]
    dx = getattr(ops, name + "_backward")(dout.copy(), cache, *grads)
    return out, dx, grads


def check_pair(name, inputs, weights, dout_shape, dtype, rng, fast_ops=FAST, **kw):
    """The fast pair and the reference pair on the same data agree on everything they return."""
    inputs = [a.astype(dtype) if a.dtype.kind == "f" else a for a in inputs]
    weights = [w.astype(dtype) for w in weights]
    dout = np.asarray(rng.standard_normal(dout_shape)).astype(dtype)
    fast = run_pair(fast_ops, name, inputs, weights, dout, **kw)
    ref = run_pair(REF, name, inputs, weights, dout, **kw)
    assert_same(fast[0], ref[0], dtype, f"{name} forward")
    if ref[1] is not None:
        assert_same(fast[1], ref[1], dtype, f"{name} input gradient")
    for i, (f, r) in enumerate(zip(fast[2], ref[2])):
        assert_same(f, r, dtype, f"{name} weight gradient {i}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("B, T", ROWS)
@pytest.mark.parametrize("n_in, n_out, bias", [(5, 3, True), (9, 1, False), (16, 33, True)])
def test_linear(dtype, B, T, n_in, n_out, bias):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((B, T, n_in)), rng.standard_normal((n_in, n_out)), rng.standard_normal(n_out)
    weights = [w, b] if bias else [w]
    if bias:
        check_pair("linear", [x], weights, (B, T, n_out), dtype, rng)
    else:
        out_f, cf = FAST.linear_forward(x.astype(dtype), w.astype(dtype), None)
        out_r, cr = REF.linear_forward(x.astype(dtype), w.astype(dtype), None)
        assert_same(out_f, out_r, dtype, "linear forward")
        dout = rng.standard_normal((B, T, n_out)).astype(dtype)
        dw_f, dw_r = np.zeros((n_in, n_out), dtype), np.zeros((n_in, n_out), dtype)
        assert_same(FAST.linear_backward(dout, cf, dw_f, None), REF.linear_backward(dout, cr, dw_r, None), dtype, "dx")
        assert_same(dw_f, dw_r, dtype, "dw")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_linear_tied_head(dtype):
    """The tied head: w and dw are transposed views of the embedding and its gradient (the
    fast backward accumulates into dw.T); both add into what dw already holds."""
    rng = np.random.default_rng(1)
    wte = rng.standard_normal((11, 6)).astype(dtype)
    x = rng.standard_normal((2, 3, 6)).astype(dtype)
    dout = rng.standard_normal((2, 3, 11)).astype(dtype)
    results = []
    for ops in (FAST, REF):
        dwte = np.ones_like(wte)                        # accumulates on top of this
        out, cache = ops.linear_forward(x, wte.T, None)
        dx = ops.linear_backward(dout, cache, dwte.T, None)
        results.append((out, dx, dwte))
    for f, r, what in zip(*results, ("out", "dx", "dwte")):
        assert_same(f, r, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("B, T", ROWS)
@pytest.mark.parametrize("C", [1, 5, 48])
def test_layernorm(dtype, B, T, C):
    rng = np.random.default_rng(2)
    x = 2 * rng.standard_normal((B, T, C)) + 0.5
    weights = [1 + 0.3 * rng.standard_normal(C), rng.standard_normal(C)]
    check_pair("layernorm", [x], weights, (B, T, C), dtype, rng)


@pytest.mark.parametrize("chunk", [None, 10], ids=["one_block", "row_blocks"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("B, T", ROWS)
@pytest.mark.parametrize("C", [1, 5, 64])
def test_gelu(dtype, B, T, C, chunk, monkeypatch):
    """Also with the fast GELU's passes in blocks of a couple of rows (a shorter last block)."""
    if chunk is not None:
        monkeypatch.setattr(minigrad.cpu.gelu, "CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(3)
    check_pair("gelu", [3 * rng.standard_normal((B, T, C))], [], (B, T, C), dtype, rng)


def attention_weights(rng, C):
    return [0.5 * rng.standard_normal((C, 3 * C)), 0.5 * rng.standard_normal(3 * C),
            0.5 * rng.standard_normal((C, C)), 0.5 * rng.standard_normal(C)]


@pytest.mark.parametrize("query_block", [64, 2], ids=lambda b: f"qb{b}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("B, T", ROWS)
@pytest.mark.parametrize("C, n_head", [(12, 3), (9, 3), (10, 2)])
def test_attention(dtype, B, T, C, n_head, query_block):
    blocked = SimpleNamespace(**{**vars(FAST), "attention_forward": partial(
        minigrad.cpu.attention.attention_forward, query_block=query_block)})
    rng = np.random.default_rng(4)
    check_pair("attention", [rng.standard_normal((B, T, C))], attention_weights(rng, C), (B, T, C), dtype, rng,
               fast_ops=blocked, n_head=n_head)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("B, T", [(1, 1), (2, 67)])
def test_attention_with_dropout(dtype, B, T):
    """Both draw the dropout mask for the whole (B, H, T, T) square from the same Generator
    state, so with the same seed they drop the same probabilities."""
    rng = np.random.default_rng(5)
    C, n_head = 12, 3
    inputs, weights = [rng.standard_normal((B, T, C))], attention_weights(rng, C)
    dout = rng.standard_normal((B, T, C)).astype(dtype)
    results = []
    for ops in (FAST, REF):
        kw = dict(n_head=n_head, dropout_p=0.3, seed=6)
        results.append(run_pair(ops, "attention", [inputs[0].astype(dtype)], [w.astype(dtype) for w in weights],
                                dout, **kw))
    (f_out, f_dx, f_grads), (r_out, r_dx, r_grads) = results
    assert_same(f_out, r_out, dtype, "forward")
    assert_same(f_dx, r_dx, dtype, "dx")
    for f, r in zip(f_grads, r_grads):
        assert_same(f, r, dtype, "weight gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("t0, T", [(0, 5), (3, 1), (4, 70), (69, 1)])
def test_attention_with_a_kv_cache(dtype, t0, T):
    """New positions t0..t0+T-1 over a cache filled at 0..t0-1: the fast and reference outputs
    agree, both equal the last T rows of attention over the whole sequence, and both leave the
    same keys and values in the cache."""
    rng = np.random.default_rng(7)
    B, C, n_head, block = 2, 12, 3, 80
    x = rng.standard_normal((B, t0 + T, C)).astype(dtype)
    weights = [w.astype(dtype) for w in attention_weights(rng, C)]
    whole, _ = REF.attention_forward(x, *weights, n_head)
    caches = []
    for ops in (FAST, REF):
        kv = tuple(np.zeros((B, n_head, block, C // n_head), dtype) for _ in range(2))
        if t0:
            ops.attention_forward(x[:, :t0], *weights, n_head, kv_cache=kv, t0=0)
        out, _ = ops.attention_forward(x[:, t0:], *weights, n_head, kv_cache=kv, t0=t0)
        assert_same(out, whole[:, t0:], dtype, f"{ops.kind} cached output")
        caches.append(kv)
    for f, r in zip(*caches):
        assert_same(f, r, dtype, "cached keys/values")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("B, T", ROWS)
@pytest.mark.parametrize("V, Vp, ignore", [(7, 7, False), (9, 12, True), (50, 64, False)])
def test_cross_entropy(dtype, B, T, V, Vp, ignore):
    rng = np.random.default_rng(8)
    logits = (3 * rng.standard_normal((B, T, Vp))).astype(dtype)
    targets = rng.integers(0, V, (B, T))
    if ignore:
        targets.flat[1::3] = -1
    results = []
    for ops in (FAST, REF):
        loss, cache = ops.cross_entropy_forward(logits.copy(), targets, vocab_size=V)
        results.append((np.asarray(loss), ops.cross_entropy_backward(0.7, cache)))
    assert_same(results[0][0], results[1][0], dtype, "loss")
    assert_same(results[0][1], results[1][1], dtype, "dlogits")


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n", [1, 37, 2 * CHUNK + 5])
def test_adamw_update(dtype, n, threads):
    """Five steps of the chunked, threaded update against the one vectorized update: the same
    parameters and moments, with weight decay on some ranges of the buffer only."""
    rng = np.random.default_rng(9)
    start = rng.standard_normal(n).astype(dtype)
    mask = np.zeros(n, bool)
    mask[n // 3: n // 2 + 1] = mask[-1] = True
    grads = [(rng.standard_normal(n) * np.where(rng.random(n) < 0.2, 1e-6, 1.0)).astype(dtype) for _ in range(5)]
    runs = []
    for ops in (kernels("cpu", "fast", threads=threads), REF):
        p, g = start.copy(), np.zeros(n, dtype)
        opt = AdamW(p, g, mask, betas=(0.8, 0.99), weight_decay=0.1, ops=ops)
        for step, grad in enumerate(grads):
            g[...] = grad
            opt.step(1e-2 / (step + 1))
        runs.append((p, opt.m, opt.v))
    for f, r, what in zip(*runs, "pmv"):
        assert_same(f, r, dtype, what)


@pytest.mark.parametrize("dtype, dropout", [(np.float64, 0.0), (np.float64, 0.2), (np.float32, 0.0)])
@pytest.mark.parametrize("B, T", [(1, 1), (2, 67)])
def test_whole_model(dtype, dropout, B, T):
    """The model on fast ops and on reference ops: the same logits, loss and every gradient
    (dropout masks too: both draw them alike)."""
    cfg = GPTConfig(n_layer=2, n_head=3, n_embd=18, block_size=80, vocab_size=37, dropout=dropout)
    backend = Backend("cpu", np.dtype(dtype).name)
    rng = np.random.default_rng(10)
    x, y = rng.integers(0, 37, (B, T)), rng.integers(0, 37, (B, T))
    results = []
    for ops in (FAST, REF):
        model = GPT(cfg, backend, seed=3, ops=ops)
        logits, loss = model.forward(x, y, train=True, dropout_seed=11)
        model.backward()
        results.append((logits, np.asarray(loss, dtype), tensor_views(model.grads.copy(), model.shapes)))
    (f_logits, f_loss, f_grads), (r_logits, r_loss, r_grads) = results
    assert_same(f_logits, r_logits, dtype, "logits")
    assert_same(f_loss, r_loss, dtype, "loss")
    for name in r_grads:
        if name != "wte.weight":                            # its padding rows are 0 in both
            assert_same(f_grads[name], r_grads[name], dtype, name)
    assert_same(f_grads["wte.weight"][:37], r_grads["wte.weight"][:37], dtype, "wte.weight")


@pytest.mark.parametrize("B, prompt", [(1, 5), (2, 1)])
def test_generation_with_a_kv_cache(B, prompt):
    """Prefill and decode through the fast and the reference blocks give the same logits."""
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=29)
    backend = Backend("cpu", "float64")
    idx = np.random.default_rng(12).integers(0, 29, (B, 12))
    runs = []
    for ops in (FAST, REF):
        model = GPT(cfg, backend, seed=4, ops=ops)
        cache = KVCache(model, batch_size=B)
        logits = [forward_cached(model, idx[:, :prompt], cache)]
        logits += [forward_cached(model, idx[:, t:t + 1], cache) for t in range(prompt, 12)]
        runs.append(logits)
    for f, r in zip(*runs):
        assert_same(f, r, np.float64, "logits")


def test_dispatch_picks_each_devices_implementations():
    """kernels() hands out every op; 'fast' on the CPU takes minigrad/cpu/ where it has one,
    the reference elsewhere; 'reference' is the reference everywhere, CUDA included (CUDA's
    fast ops: tests/minigrad/test_cuda.py)."""
    for ops in (FAST, REF, kernels("cuda", "reference")):
        assert all(callable(getattr(ops, name)) for name in OP_NAMES)
    cpu_modules = {name: getattr(FAST, name).__module__ for name in OP_NAMES if name != "adamw_update"}
    assert cpu_modules["attention_forward"] == "minigrad.cpu.attention"
    assert cpu_modules["embedding_forward"] == "minigrad.embedding"
    assert all(getattr(REF, name).__module__.count(".") == 1 for name in OP_NAMES)      # minigrad.<layer>
    assert type(FAST.adamw_update).__module__ == "minigrad.cpu.optim"
    with pytest.raises(ValueError, match="fast, reference"):
        kernels("cpu", "quick")
    with pytest.raises(ValueError, match="cpu or cuda"):
        kernels("tpu")
