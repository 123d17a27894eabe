"""Checkpoints, and the atomic writes of a run's other files.

A checkpoint (ckpt.npz) is a NumPy .npz: an uncompressed zip of .npy arrays,

    params   (N,)    float32 or float64   the flat parameter buffer
    adam_m   (N,)    the same dtype       AdamW's first moments
    adam_v   (N,)    the same dtype       AdamW's second moments
    curve    (S, 7)  float64              the loss curve up to this step, one row per step
                                          (CURVE_FIELDS; NaN where a step has no value)
    meta     (M,)    uint8                a UTF-8 JSON object: format, step, config, options,
                                          tokenizer, elapsed, local_vocab, and
                                          sha256: {array name: hex digest of its bytes}

The loss curve lives inside the checkpoint, so the curve a resumed run continues is the
checkpoint's own by construction; loss_curve.json is a copy for people and plots.

Every checkpoint read is untrusted (load_checkpoint): each array's .npy header is checked
against the zip entry's size before anything is allocated, so memory and work are bounded by
the file; the arrays' digests are verified; the metadata's structure, types and ranges are
checked, and its config must account for exactly the parameters stored; the parameters must
be finite. Anything wrong is a CheckpointError with one line.

Writes go through gpt.files.atomic. The checkpoint being replaced is kept as ckpt.prev.npz (a
hard link made before the rename, so ckpt.npz exists at every moment), and load_latest falls
back to it, with a warning, when the newest is unusable.
"""
import hashlib
import json
import math
import os
import shutil
import sys
import zipfile
import zlib
from dataclasses import dataclass, fields
from tokenize import TokenError

import numpy as np

from ..config import GPTConfig
from ..errors import CheckpointError
from ..model import buffer_size
from .atomic import atomic_write, replacing
from .untrusted import MAX_SIZE, is_clean_text, is_count, short_repr, strict_json

CHECKPOINT_NAME = "ckpt.npz"
PREVIOUS_NAME = "ckpt.prev.npz"
FORMAT = 2                       # the version of the layout above
CURVE_FIELDS = ("step", "train_loss", "val_loss", "lr", "grad_norm", "tokens", "elapsed")
STATE_NAMES = ("params", "adam_m", "adam_v")
STATE_DTYPES = (np.dtype("<f4"), np.dtype("<f8"))     # of params, adam_m, adam_v
MAX_META_BYTES = 64 << 20        # the JSON header; a GPT-2 checkpoint's is a few hundred KiB


# ----------------------------------------------------------------------------- saving


def digest(array):
    """Hex sha256 of an array's bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def curve_array(history):
    """loss_curve.json records -> the (S, 7) float64 array a checkpoint stores."""
    rows = [[np.nan if r.get(k) is None else r[k] for k in CURVE_FIELDS] for r in history]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(CURVE_FIELDS))


def curve_records(curve):
    """The inverse of curve_array: rows -> records (step and tokens as ints, NaN as None)."""
    records = []
    for row in curve.tolist():
        r = {k: (None if math.isnan(v) else v) for k, v in zip(CURVE_FIELDS, row)}
        r["step"], r["tokens"] = int(r["step"]), int(r["tokens"])
        records.append(r)
    return records


def save_checkpoint(path, params, adam_m, adam_v, meta, history=(), keep_previous=True):
    """Write a checkpoint atomically. params, adam_m, adam_v: flat host arrays; meta: a JSON-
    serializable dict (format and digests are added); history: the loss curve's records.
    keep_previous: keep the checkpoint being replaced as ckpt.prev.npz (pass False when it is
    not known to be good). Parameters that are not all finite are never written."""
    if not np.isfinite(params).all():
        raise CheckpointError(f"not saving {path}: the parameters hold non-finite values (the run diverged); "
                              "the previous checkpoint is unchanged")
    arrays = {"params": params, "adam_m": adam_m, "adam_v": adam_v, "curve": curve_array(history)}
    meta = {**meta, "format": FORMAT, "sha256": {name: digest(a) for name, a in arrays.items()}}
    header = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with atomic_write(path) as f:
        np.savez(f, **arrays, meta=header)
        if keep_previous and os.path.isfile(path):
            _keep_as_previous(path)


def _keep_as_previous(path):
    """ckpt.prev.npz := the current ckpt.npz, which stays in place (a hard link, renamed over
    the old ckpt.prev.npz; a copy where the file system has no hard links)."""
    previous = os.path.join(os.path.dirname(path), PREVIOUS_NAME)
    if os.path.isfile(previous) and os.path.samefile(path, previous):
        return                  # a save killed between the link and the rename: kept already
    with replacing(previous) as tmp:
        os.remove(tmp)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)


# ----------------------------------------------------------------------------- loading


@dataclass
class Checkpoint:
    arrays: dict      # params, adam_m and adam_v (flat host arrays; the moments only when asked)
    meta: dict        # the JSON header
    history: list     # the loss curve's records
    path: str         # the file it came from
    stamp: tuple = ()  # that file's (inode, size, mtime) when it was read

    def changed(self):
        """True when self.path is no longer the file that was read (another run saved since)."""
        return _stamp(self.path) != self.stamp


def _stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return st.st_ino, st.st_size, st.st_mtime_ns


def load_latest(out_dir, moments=True, warn=None):
    """out_dir's ckpt.npz, or ckpt.prev.npz (with a warning) when the newest is unusable.
    moments: also read AdamW's moments (a resumed run needs them; sampling does not).
    Raises CheckpointError for the newest when neither can be used."""
    warn = warn or (lambda message: print(message, file=sys.stderr))
    path, previous = (os.path.join(out_dir, n) for n in (CHECKPOINT_NAME, PREVIOUS_NAME))
    if not os.path.isfile(path) and not os.path.isfile(previous):
        raise CheckpointError(f"no checkpoint in {out_dir} (expected {path}); "
                              f"train one first: python train.py --out-dir {out_dir}")
    try:
        return load_checkpoint(path, moments)
    except CheckpointError as newest:
        if not os.path.isfile(previous):
            raise
        try:
            kept = load_checkpoint(previous, moments)
        except CheckpointError:
            raise newest from None
        warn(f"warning: {newest}; using the previous checkpoint {previous} (step {kept.meta['step']})")
        return kept


def load_checkpoint(path, moments=True):
    """One checkpoint file -> Checkpoint; CheckpointError with one line if it is unusable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}; train without --resume first")
    names = STATE_NAMES if moments else STATE_NAMES[:1]
    stamp = _stamp(path)
    try:
        with zipfile.ZipFile(path) as z:
            meta = _read_meta(z, path)
            if not (is_count(meta.get("format")) and meta["format"] == FORMAT):   # format 1: no curve, no digests
                raise CheckpointError(f"checkpoint {path} is of format {short_repr(meta.get('format', 1))}; this "
                                      f"version reads format {FORMAT}: resume it with the version that wrote it, "
                                      "or start a new run in another --out-dir")
            arrays = {name: _read_array(z, name, path) for name in names + ("curve",)}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, ValueError, KeyError,
            NotImplementedError, RuntimeError, OverflowError) as e:
        raise _corrupt(path, f"it is truncated or not a checkpoint ({type(e).__name__})") from None
    _check_meta(meta, arrays, path)
    curve = arrays.pop("curve")
    if not np.isfinite(arrays["params"]).all():
        bad = int(np.size(arrays["params"]) - np.isfinite(arrays["params"]).sum())
        raise CheckpointError(f"{path}: {bad:,} parameters are NaN or infinite; it cannot be resumed, sampled "
                              "or exported: use an earlier checkpoint or another --out-dir")
    return Checkpoint(arrays, meta, curve_records(curve), path, stamp)


def _corrupt(path, what):
    return CheckpointError(f"checkpoint {path} is corrupted: {what}; delete it, or point --out-dir at another run")


def _member(z, name, path, dtypes):
    """-> (open .npy entry positioned at its data, shape, dtype), checked against the entry's size."""
    try:
        info = z.getinfo(f"{name}.npy")
    except KeyError:
        raise _corrupt(path, f"it has no {name!r} array") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise _corrupt(path, f"its {name!r} array is compressed, which this project never writes")
    if info.file_size != info.compress_size or info.header_offset + info.file_size > os.path.getsize(path):
        raise _corrupt(path, f"its {name!r} entry claims more bytes than the file holds")
    f = z.open(info)
    try:                                  # the header is a Python literal, parsed by ast.literal_eval
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"version {version}")
        shape, fortran, dtype = read_header(f)
    except (ValueError, SyntaxError, TokenError, TypeError, RecursionError):
        f.close()
        raise _corrupt(path, f"its {name!r} array has a malformed .npy header") from None
    if fortran or dtype not in dtypes or dtype.hasobject:
        raise _corrupt(path, f"its {name!r} array has the wrong layout or dtype ({dtype})")
    if math.prod(shape) * dtype.itemsize != info.file_size - f.tell():
        raise _corrupt(path, f"its {name!r} array's shape {list(shape)} does not fit the bytes stored")
    return f, shape, dtype


def _read_array(z, name, path):
    dtypes = (np.dtype("<f8"),) if name == "curve" else STATE_DTYPES
    f, shape, dtype = _member(z, name, path, dtypes)
    with f:
        array = np.empty(shape, dtype)
        view = memoryview(array.reshape(-1)).cast("B")
        filled = 0
        while filled < len(view):                        # zipfile checks the entry's CRC at its end
            n = f.readinto(view[filled:])
            if not n:
                raise _corrupt(path, f"its {name!r} array is truncated")
            filled += n
    return array


def _read_meta(z, path):
    f, shape, _ = _member(z, "meta", path, (np.dtype("u1"),))
    with f:
        if len(shape) != 1 or shape[0] > MAX_META_BYTES:
            raise _corrupt(path, "its metadata has the wrong shape or size")
        raw = f.read(shape[0])
    try:
        meta = strict_json(raw.decode("utf-8"))
    except ValueError as e:                              # UnicodeDecodeError, strict_json's errors
        raise _corrupt(path, f"its metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise _corrupt(path, "its metadata is not a JSON object")
    return meta


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_meta(meta, arrays, path):
    """The metadata's structure, types and ranges, and its agreement with the arrays."""
    def need(ok, what):
        if not ok:
            raise _corrupt(path, what)
    need(is_count(meta.get("step"), hi=MAX_SIZE), "its step is not a non-negative integer")
    config = meta.get("config")
    need(isinstance(config, dict), "it has no model config")
    for f in fields(GPTConfig):
        value = config.get(f.name)
        if f.name == "dropout":
            need(_is_number(value) and 0 <= value < 1, "its config's dropout is not in [0, 1)")
        else:
            need(is_count(value, 1, MAX_SIZE), f"its config's {f.name} is not an integer from 1 to {MAX_SIZE:,}")
    need(config["n_embd"] % config["n_head"] == 0, "its config's n_embd is not divisible by n_head")
    options = meta.get("options")
    need(isinstance(options, dict), "it has no training options")
    need(options.get("tokenizer") in ("byte", "gpt2"), "its options name no known tokenizer")
    for key in ("bpe_vocab", "bpe_merges"):
        need(options.get(key) is None or is_clean_text(options[key]), f"its option {key} is not a path")
    need(isinstance(meta.get("tokenizer"), str), "it names no tokenizer identity")
    need(_is_number(meta.get("elapsed", 0.0)) and meta.get("elapsed", 0.0) >= 0, "its elapsed time is not a number")
    local = meta.get("local_vocab")
    need(local is None or (isinstance(local, list) and 0 < len(local) <= config["vocab_size"]
                           and all(is_count(i) for i in local) and local == sorted(set(local))),
         "its local vocabulary is not a sorted list of distinct token ids")
    params = arrays["params"]
    n = buffer_size(GPTConfig.from_dict(config))
    need(params.ndim == 1 and params.size == n,
         f"it holds {params.size:,} parameters but its config needs {n:,}")
    for name in ("adam_m", "adam_v"):
        if name in arrays:
            need(arrays[name].shape == params.shape and arrays[name].dtype == params.dtype,
                 f"its {name} does not match the parameters")
    sha = meta.get("sha256")
    need(isinstance(sha, dict), "it has no array digests")
    curve = arrays["curve"]
    need(curve.ndim == 2 and curve.shape[1] == len(CURVE_FIELDS), "its loss curve has the wrong shape")
    counts = curve[:, [CURVE_FIELDS.index("step"), CURVE_FIELDS.index("tokens")]]
    need(bool(np.all((counts >= 0) & (counts < 2**53) & (counts == np.floor(counts)))),
         "its loss curve's steps or token counts are not whole numbers")
    for name, array in arrays.items():
        need(sha.get(name) == digest(array), f"the digest of its {name!r} array does not match (damaged on disk?)")
