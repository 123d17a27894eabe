"""Generation: the KV cache against the plain forward, and the sampling rules."""
import re
from pathlib import Path

import numpy as np
import pytest

from gpt.config import GPTConfig
from gpt.generate import KVCache, forward_cached, generate, next_token_logits, sample_next
from gpt.model import GPT
from minigrad import Backend, kernels

V = 50                       # real vocabulary; the head is padded to 64 rows
BLOCK = 16


def tiny_model(seed=0, dtype="float32", vocab_size=V):
    """A random 2-layer model, sharpened so its logits spread over several units like a trained
    model's (at init they are all within ~0.1 of each other and ties would be too close)."""
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, vocab_size=vocab_size)
    model = GPT(cfg, Backend("cpu", dtype), seed=seed)
    model.params *= 8.0
    return model


def random_ids(n, seed=0):
    return np.random.default_rng(seed).integers(0, V, n).tolist()


# ----------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_cached_logits_equal_full_forward_at_every_step_past_the_window(dtype, tol):
    """Teacher-forced: after every prefix of a 3-window-long sequence, the cached path's
    next-token logits equal a full forward over the last block_size tokens."""
    model = tiny_model(dtype=dtype)
    ids = random_ids(3 * BLOCK)
    cache = KVCache(model)
    for n in range(1, len(ids) + 1):
        cached = next_token_logits(model, ids[:n], cache)
        full = next_token_logits(model, ids[:n])
        assert cached.shape == full.shape == (V,)
        assert cached.dtype == full.dtype == np.dtype(dtype)
        scale = np.abs(full).max()
        assert np.abs(cached - full).max() <= tol * scale, f"step {n}"
        assert cache.length == min(n, BLOCK)


@pytest.mark.parametrize("kind", ["fast", "reference"])
def test_the_cache_runs_the_models_own_blocks(kind):
    """A decode step goes through the ops the model was built with, the same attention op as
    training: once per layer, handed that layer's cache and the position offset."""
    ops = kernels("cpu", kind)
    calls = []
    attention = ops.attention_forward

    def recording(*args, kv_cache=None, t0=0, **kw):
        calls.append((kv_cache is not None, t0))
        return attention(*args, kv_cache=kv_cache, t0=t0, **kw)
    ops.attention_forward = recording
    model = GPT(GPTConfig(n_layer=3, n_head=2, n_embd=16, block_size=BLOCK, vocab_size=V), Backend("cpu", "float64"),
                ops=ops)
    cache = KVCache(model)
    forward_cached(model, np.array([random_ids(4)]), cache)
    forward_cached(model, np.array([[7]]), cache)
    assert calls == [(True, 0)] * 3 + [(True, 4)] * 3


def test_prefill_then_decode_equals_one_prefill():
    """Prefilling 5 tokens then decoding 3 one by one leaves the same cache and logits as
    prefilling all 8: prefill and decode are the same computation."""
    model = tiny_model()
    idx = np.array([random_ids(8)])                                  # (1, 8)
    whole, stepped = KVCache(model), KVCache(model)
    logits_whole = forward_cached(model, idx, whole)
    forward_cached(model, idx[:, :5], stepped)
    for t in range(5, 8):
        logits_stepped = forward_cached(model, idx[:, t:t + 1], stepped)
    np.testing.assert_allclose(logits_stepped, logits_whole, rtol=0, atol=1e-5 * np.abs(logits_whole).max())
    np.testing.assert_allclose(stepped.k[:, :, :, :8], whole.k[:, :, :, :8], atol=1e-5)
    np.testing.assert_allclose(stepped.v[:, :, :, :8], whole.v[:, :, :, :8], atol=1e-5)


def test_forward_cached_batches_and_refuses_to_overflow():
    model = tiny_model()
    idx = np.array([random_ids(4, seed=1), random_ids(4, seed=2)])   # (2, 4)
    logits = forward_cached(model, idx, KVCache(model, batch_size=2))
    for b in range(2):
        np.testing.assert_allclose(logits[b], next_token_logits(model, idx[b].tolist()),
                                   atol=1e-5 * np.abs(logits).max())
    cache = KVCache(model)
    forward_cached(model, np.array([random_ids(BLOCK)]), cache)
    with pytest.raises(ValueError, match="exceed block_size"):
        forward_cached(model, np.array([[1]]), cache)


@pytest.mark.parametrize("prompt_len", [1, 5, BLOCK, 2 * BLOCK + 3])
def test_greedy_with_and_without_cache_gives_identical_tokens(prompt_len):
    model = tiny_model(seed=1)
    prompt = random_ids(prompt_len, seed=prompt_len)
    with_cache = list(generate(model, prompt, 3 * BLOCK, temperature=0))
    without = list(generate(model, prompt, 3 * BLOCK, temperature=0, use_cache=False))
    assert with_cache == without
    assert len(with_cache) == 3 * BLOCK


def test_sampling_with_and_without_cache_gives_identical_tokens():
    model = tiny_model(seed=2)
    kwargs = dict(temperature=0.9, top_k=20, top_p=0.95, seed=7)
    assert (list(generate(model, [3], 2 * BLOCK, **kwargs))
            == list(generate(model, [3], 2 * BLOCK, use_cache=False, **kwargs)))


def test_padding_columns_are_never_sampled():
    """Make the padding rows of wte (ids 50..63) dominate every logit: nothing outside the real
    vocabulary may come out, greedy or sampled, cached or not."""
    model = tiny_model()
    model.p["wte.weight"][V:] = 50.0 * model.p["ln_f.bias"] + 50.0
    for use_cache in (True, False):
        for temperature in (0.0, 1.0, 5.0):
            out = list(generate(model, [1, 2], 30, temperature=temperature, use_cache=use_cache))
            assert out and max(out) < V


def test_vocab_size_limits_the_ids_sampled():
    """A tokenizer smaller than the model's head: only its ids may come out."""
    model = tiny_model()
    for temperature in (0.0, 5.0):
        out = list(generate(model, [1], 40, temperature=temperature, vocab_size=7))
        assert len(out) == 40 and max(out) < 7


def test_generate_is_a_stream():
    """Tokens come out one by one, before the rest are computed."""
    model = tiny_model()
    stream = generate(model, [1], 1000)
    first = next(stream)
    assert isinstance(first, int) and 0 <= first < V
    stream.close()


# ----------------------------------------------------------------------------- sampling rules


def test_temperature_zero_is_greedy():
    model = tiny_model(seed=3)
    ids = [4, 5]
    for _ in range(20):                                   # the argmax loop, written out
        ids.append(int(np.argmax(next_token_logits(model, ids))))
    for kwargs in ({}, {"top_k": 3}, {"top_p": 0.5}, {"seed": 99}):
        assert list(generate(model, [4, 5], 20, temperature=0, **kwargs)) == ids[2:]


def test_same_seed_same_sample_different_seed_different_sample():
    model = tiny_model(seed=4)
    a = list(generate(model, [1], 40, temperature=1.5, seed=11))
    b = list(generate(model, [1], 40, temperature=1.5, seed=11))
    c = list(generate(model, [1], 40, temperature=1.5, seed=12))
    assert a == b
    assert a != c


def test_stops_at_eot_without_yielding_it():
    model = tiny_model(seed=5)
    greedy = list(generate(model, [1], 30, temperature=0))
    eot = greedy[4]
    cut = greedy.index(eot)
    assert list(generate(model, [1], 30, temperature=0, eot_token=eot)) == greedy[:cut]
    assert list(generate(model, [1], 30, temperature=0, eot_token=V + 1)) == greedy   # an id never drawn


def test_max_new_tokens_counts_new_tokens():
    model = tiny_model()
    assert len(list(generate(model, [1, 2, 3], 7))) == 7
    assert list(generate(model, [1, 2, 3], 0)) == []


def draws(logits, n=3000, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    return np.array([sample_next(logits, rng=rng, **kwargs) for _ in range(n)])


def nucleus(probs, top_p):
    """The smallest set of most likely ids whose probability adds up to at least top_p, by brute force."""
    order = np.argsort(-probs)
    for n in range(1, probs.size + 1):
        if probs[order[:n]].sum() >= top_p:
            return set(order[:n].tolist())
    return set(order.tolist())


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize("k", [1, 2, 5, 12])
def test_top_k_only_emits_the_k_most_likely(k):
    logits = np.random.default_rng(k).normal(0, 1, 30).astype(np.float32)
    top = set(np.argsort(-logits)[:k].tolist())
    seen = set(draws(logits, temperature=3.0, top_k=k).tolist())   # flat: every kept token shows up
    assert seen == top


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.6, 0.9, 0.99])
def test_top_p_only_emits_the_smallest_nucleus(top_p):
    logits = np.random.default_rng(int(top_p * 100)).normal(0, 2, 30)
    allowed = nucleus(softmax(logits), top_p)
    seen = set(draws(logits, n=6000, top_p=top_p).tolist())
    assert seen <= allowed
    assert len(seen) >= 0.8 * len(allowed)                # not a smaller set either


def test_top_p_applies_after_temperature_and_top_k():
    logits = np.random.default_rng(3).normal(0, 2, 40)
    temperature, k, top_p = 1.7, 10, 0.8
    z = logits / temperature
    top = np.argsort(-z)[:k]
    probs = np.zeros_like(z)
    probs[top] = softmax(z[top])
    allowed = nucleus(probs, top_p)
    seen = set(draws(logits, temperature=temperature, top_k=k, top_p=top_p).tolist())
    assert seen <= allowed and len(seen) >= 0.8 * len(allowed)


def test_top_p_one_and_top_k_vocab_keep_everything():
    logits = np.zeros(6)
    assert set(draws(logits, n=600, top_p=1.0, top_k=6).tolist()) == set(range(6))


def test_draws_follow_the_softmax_distribution():
    """Frequencies of 40,000 draws match softmax(logits / T) within 4 standard deviations."""
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0])
    n, temperature = 40_000, 0.7
    counts = np.bincount(draws(logits, n=n, temperature=temperature), minlength=5)
    p = softmax(logits / temperature)
    assert np.all(np.abs(counts - n * p) <= 4 * np.sqrt(n * p * (1 - p)) + 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -0.1}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k"), ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
])
def test_bad_sampling_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        next(generate(tiny_model(), [1], 5, **kwargs))


def test_empty_prompt_raises():
    with pytest.raises(ValueError, match="at least one token"):
        next(generate(tiny_model(), [], 5))


def test_inference_code_uses_only_functions_cupy_has():
    """generate.py runs on CuPy too: every xp.<name> it calls must exist there."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    source = (Path(__file__).resolve().parents[2] / "gpt" / "generate.py").read_text()
    names = set(re.findall(r"\bxp\.(\w+)", source))
    assert names and all(hasattr(cupy, n) for n in names), sorted(n for n in names if not hasattr(cupy, n))
