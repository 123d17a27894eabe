"""Autoregressive sampling from a trained GPT."""
import numpy as np


def sample_next(logits, temperature=1.0, top_k=None, rng=None):
    """logits (V,) host float array -> one token id. temperature 0 means greedy."""
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z[z < kth] = -np.inf
    z -= z.max()
    probs = np.exp(z)
    probs /= probs.sum()
    return int(rng.choice(z.size, p=probs))


def generate(model, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, seed=0):
    """Yield max_new_tokens new ids after prompt_ids (a list of ints), one at a time.

    Each step runs the model on the last block_size tokens and samples from the logits of
    the last position (only the real vocabulary, never the padding)."""
    cfg, backend = model.config, model.backend
    rng = np.random.default_rng(seed)
    ids = list(prompt_ids)
    for _ in range(max_new_tokens):
        window = backend.asarray(np.array([ids[-cfg.block_size:]], dtype=np.int64))
        logits, _ = model.forward(window)
        last = backend.to_host(logits[0, -1, : cfg.vocab_size])
        token = sample_next(last, temperature, top_k, rng)
        ids.append(token)
        yield token
