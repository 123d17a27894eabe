"""Checkpoints: one .npz file holding the flat parameters, AdamW's moments and a JSON header
(step, config, tokenizer identity, training settings, data position); and the atomic writes
of the run's other files.

Writes are atomic: the file is written under a temporary name, then renamed over the old one,
so a crash mid-write leaves the previous file intact (the checkpoint is also flushed to disk
before the rename).
"""
import json
import os
import zipfile

import numpy as np

from .errors import CheckpointError

CHECKPOINT_NAME = "ckpt.npz"


def save_checkpoint(path, params, adam_m, adam_v, meta):
    """params, adam_m, adam_v: flat host arrays; meta: a JSON-serializable dict."""
    tmp = f"{path}.tmp"
    header = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with open(tmp, "wb") as f:
        np.savez(f, params=params, adam_m=adam_m, adam_v=adam_v, meta=header)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text(path, text):
    """Write `text` to `path` atomically (a temporary file renamed over it)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path, obj):
    """Write `obj` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=1))


def load_checkpoint(path):
    """-> (dict of flat host arrays 'params', 'adam_m', 'adam_v', meta dict)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}; train without --resume first")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("params", "adam_m", "adam_v")}
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} is corrupted or truncated ({type(e).__name__}); "
            "delete it, or point --out-dir at another run") from None
    return arrays, meta
