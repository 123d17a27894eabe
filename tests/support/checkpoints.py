"""Shared by the tests of checkpoints: a valid tiny one, and crafted ones."""
import json

import numpy as np

from gpt.config import GPTConfig
from gpt.files import checkpoint as ckpt
from gpt.files.checkpoint import save_checkpoint
from gpt.model import GPT
from minigrad import Backend

TINY = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=256)


def tiny_checkpoint(path, step=3, history=None, **meta_changes):
    """A valid checkpoint of a 1-layer model -> its params."""
    model = GPT(TINY, Backend("cpu", "float64"), seed=0)
    params = model.params.copy()
    meta = {"step": step, "config": TINY.to_dict(), "elapsed": 1.5, "tokenizer": "byte", "local_vocab": None,
            "options": {"tokenizer": "byte", "bpe_vocab": None, "bpe_merges": None}, **meta_changes}
    history = history if history is not None else [
        {"step": s, "train_loss": 5.0 - s, "val_loss": None if s % 2 else 4.0, "lr": 1e-3, "grad_norm": 1.0,
         "tokens": 64 * s, "elapsed": 0.5 * s} for s in range(1, step + 1)]
    save_checkpoint(str(path), params, params * 0.5, params ** 2, meta, history)
    return params


def stored(loaded):
    """A loaded checkpoint's arrays as a file stores them (the curve as its array)."""
    return {**loaded.arrays, "curve": ckpt.curve_array(loaded.history)}


def rewrite(path, arrays, meta, redigest=False):
    """Write a crafted checkpoint from `arrays` and `meta` as given, with digests that match
    when asked (a crafted file may well carry matching ones)."""
    if redigest:
        meta = {**meta, "sha256": {name: ckpt.digest(a) for name, a in arrays.items()}}
    with open(path, "wb") as f:
        np.savez(f, **arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
