"""Autoregressive generation: sampling rules, a KV cache, and a streaming generator.

A GPT produces text one token at a time: run the model on the sequence so far, turn the
logits of the last position into a probability distribution, draw the next token, append
it, repeat. Two things make this practical:

**The KV cache.** In causal attention a position only looks at itself and the past, so
the keys and values of earlier tokens never change once computed. Instead of re-running
the whole sequence for each new token (attention O(T^2) per token, O(T^3) for the whole
text), we keep every layer's keys and values in preallocated arrays

    k, v: (L, B, H, block_size, hs)

and run the model on the *new* tokens only:

    prefill  the prompt in one forward pass over its T tokens, filling cache[:, :, :, :T]
    decode   one token at position t: per layer ln_1, q/k/v of that token (1 x C @ C x 3C),
             write k, v into cache slot t, attend q over slots 0..t, c_proj, ln_2, MLP

Both are the same function (`forward_cached`) on a different number of new tokens, and it
runs the model's own blocks (`GPT.transformer_forward`), whose attention takes the cache and
the position offset, so generation and training cannot drift apart. A decode step costs O(t)
attention plus the weight matmuls of a single token, instead of the whole model over the
whole sequence.

**The context window.** GPT-2 adds a *learned absolute* position embedding wpe[t] to each
token, and every cached key and value is computed from a residual stream that contains it.
Once the sequence is longer than block_size, the model (as trained) can only be run on the
last block_size tokens, at positions 0..block_size-1: each token's position drops by one
every time the window slides, so every cached key and value is stale. Shifting the cache
left would keep keys computed at the wrong positions and give the model inputs it never
saw in training. So we do the correct thing: when the window slides, the cache is emptied
and the last block_size tokens are prefilled again. Past the window every token therefore
costs one full forward over block_size tokens (the same as having no cache), but the result
equals the no-cache model on the last block_size tokens exactly, which the tests check.

Sampling happens on the host in float64, over the real vocabulary only (the padding
columns of the output head are never sampled).
"""
import math

import numpy as np

# ----------------------------------------------------------------------------- sampling


def check_sampling(temperature=1.0, top_k=None, top_p=None):
    """Raise ValueError (one line) if the sampling settings are out of range."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """logits (V,) host array -> one token id (a Python int).

    temperature 0:  greedy, argmax(logits) (top_k and top_p do not matter then).
    otherwise:      p = softmax(logits / temperature), restricted to
      top_k:        the k most likely tokens, then
      top_p:        the nucleus: the smallest set of most likely tokens whose probability
                    (renormalized after top_k) adds up to at least top_p,
    renormalized, and one token is drawn from it with `rng` (a numpy Generator).
    """
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature                      # (V,)
    if top_k is not None and top_k < z.size:
        keep = np.argpartition(-z, top_k - 1)[:top_k]                # (k,) the k largest, unordered
    else:
        keep = np.arange(z.size)                                     # (V,)
    if top_p is not None and top_p < 1:
        keep = keep[np.argsort(-z[keep], kind="stable")]             # most likely first
    p = np.exp(z[keep] - z[keep].max())                              # softmax over the kept tokens
    p /= p.sum()
    if top_p is not None and top_p < 1:
        n = int(np.searchsorted(np.cumsum(p), top_p)) + 1            # first prefix with mass >= top_p
        keep, p = keep[:n], p[:n] / p[:n].sum()
    cdf = np.cumsum(p)                                               # inverse-CDF draw
    i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return int(keep[min(i, keep.size - 1)])


# ----------------------------------------------------------------------------- KV cache


class KVCache:
    """Keys and values of every layer for the tokens of the current window.

    k, v:    (L, B, H, block_size, hs) arrays on the model's device, preallocated
    length:  how many positions are filled (the next token goes to position `length`)
    start:   where the window begins in the whole sequence (0 until the text outgrows
             block_size; see the module docstring)
    """

    def __init__(self, model, batch_size=1):
        cfg, backend = model.config, model.backend
        shape = (cfg.n_layer, batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.k = backend.xp.empty(shape, dtype=backend.dtype)
        self.v = backend.xp.empty(shape, dtype=backend.dtype)
        self.length = 0
        self.start = 0

    def reset(self, start=0):
        """Forget every cached position; the window now begins at sequence index `start`."""
        self.length, self.start = 0, start


def forward_cached(model, idx, cache):
    """Run the model on new tokens only; prefill and decode are both this function.

    idx (B, T) int ids on the model's device, for positions cache.length .. cache.length+T-1
    (T = the prompt for a prefill, T = 1 for a decode step; cache.length + T <= block_size).
    The model's own blocks run, their attention reading and extending the cache.
    Returns logits (B, vocab_size) for the position after the last new token: the real
    vocabulary only, computed from the last position alone (the tied head is position-wise,
    so the other positions' logits are never needed).
    """
    cfg, p = model.config, model.p
    x, _ = model.transformer_forward(idx, keep_grad=False, kv_cache=cache)          # (B, T, C)
    logits, _ = model.ops.linear_forward(x[:, -1], p["wte.weight"][: cfg.vocab_size].T, None)  # (B, V)
    return logits


def next_token_logits(model, ids, cache=None):
    """ids: the whole sequence so far (a list of ints) -> host logits (vocab_size,) of the next token.

    The model sees the window ids[-block_size:]. Without a cache this is one full forward
    over the window. With a cache (one KVCache per growing sequence) only the tokens the
    cache has not seen are run; when the window has slid since the last call, the cache
    is emptied and the window prefilled again (see the module docstring for why).
    """
    cfg, backend = model.config, model.backend
    start = max(0, len(ids) - cfg.block_size)                            # the window is ids[start:]
    if cache is None:
        window = backend.asarray(np.array([ids[start:]], dtype=np.int64))   # (1, T)
        logits, _ = model.forward(window)                                # (1, T, padded V)
        return backend.to_host(logits[0, -1, : cfg.vocab_size])
    if cache.start != start:
        cache.reset(start)
    new = backend.asarray(np.array([ids[start + cache.length:]], dtype=np.int64))   # (1, T_new)
    return backend.to_host(forward_cached(model, new, cache)[0])


def generate(model, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, seed=0,
             top_p=None, eot_token=None, use_cache=True, vocab_size=None):
    """Yield up to max_new_tokens new token ids after prompt_ids, one at a time, as they are made.

    prompt_ids: a non-empty list of ints (only its last block_size tokens are seen).
    temperature / top_k / top_p: see sample_next; temperature 0 is greedy.
    seed: the same seed (and settings) gives the same tokens.
    eot_token: generation stops when this id is drawn (it is not yielded); None never stops early.
    use_cache: False recomputes the whole window for every token (the reference the tests
    compare the cache against; the same tokens, slower).
    vocab_size: sample only ids below this (default: the model's vocab_size), e.g. a tokenizer's
    vocabulary when the model's head was made wider than it.
    """
    check_sampling(temperature, top_k, top_p)
    if len(prompt_ids) == 0:
        raise ValueError("the prompt must hold at least one token")
    rng = np.random.default_rng(seed)
    cache = KVCache(model) if use_cache else None
    ids = list(prompt_ids)
    for _ in range(max_new_tokens):
        logits = next_token_logits(model, ids, cache)[:vocab_size]     # (V,)
        token = sample_next(logits, temperature, top_k, top_p, rng)
        if token == eot_token:
            return
        ids.append(token)
        yield token
