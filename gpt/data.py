"""Corpus -> token stream -> train/validation split -> batches of windows.

A byte-level corpus file *is* its token stream: it is memory-mapped as uint8 and never
copied. A directory of text files is one corpus of documents in sorted path order; for the
byte tokenizer they are joined with a blank line, for BPE with <|endoftext|>. A BPE corpus is
tokenized once, on all cores, into a cached binary (uint16 when the vocabulary fits) plus a
JSON metadata file; the cache is reused while the source files and tokenizer are unchanged
and rebuilt otherwise. Batches are windows of T+1 consecutive
tokens (inputs x = window[:-1], targets y = window[1:]), picked either at random or in order;
the choice depends only on (seed, step, micro-step), so a resumed run sees the same data.
"""
import hashlib
import json
import os

import numpy as np

from bpe import CorpusError
from bpe.corpus import read_text

from .checkpoint import write_json
from .errors import DataError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def list_documents(path):
    """A text file -> [path]; a directory -> its text files (recursive, sorted)."""
    if not os.path.exists(path):
        raise DataError(f"--data {path}: no such file or directory")
    if os.path.isfile(path):
        return [path]
    docs = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(path)
        for name in names
        if name.lower().endswith(TEXT_SUFFIXES)
    )
    if not docs:
        raise DataError(f"--data {path}: the directory has no text files ({', '.join(TEXT_SUFFIXES)})")
    return docs


def load_byte_corpus(path):
    """Byte-level token stream (uint8) of a file or a directory of text files."""
    docs = list_documents(path)
    if len(docs) == 1:
        if os.path.getsize(docs[0]) == 0:
            raise DataError(f"--data {docs[0]}: the file is empty")
        return np.memmap(docs[0], dtype=np.uint8, mode="r")
    parts = []
    for doc in docs:
        with open(doc, "rb") as f:
            parts.append(f.read())
    data = b"\n\n".join(p for p in parts if p)
    if not data:
        raise DataError(f"--data {path}: every text file in the directory is empty")
    return np.frombuffer(data, dtype=np.uint8)


def load_bpe_corpus(path, tokenizer, cache_dir):
    """Token stream of a file or directory under a BPE tokenizer, via the cache in cache_dir.

    Returns a read-only memmap of tokenizer.token_dtype."""
    docs = list_documents(path)
    stats = [os.stat(d) for d in docs]
    sources = [[os.path.abspath(d), st.st_size, st.st_mtime_ns] for d, st in zip(docs, stats)]
    if not any(size for _, size, _ in sources):
        raise DataError(f"--data {path}: the corpus is empty")
    dtype = np.dtype(tokenizer.token_dtype)
    meta = {"format": 1, "tokenizer": tokenizer.identity, "sources": sources, "dtype": dtype.name}
    key = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:8]
    stem = os.path.join(cache_dir, f"{os.path.basename(os.path.normpath(path))}-{key}-{tokenizer.name}")
    bin_path, meta_path = stem + ".bin", stem + ".json"
    cached = _read_cache_meta(meta_path)
    if (cached is not None and {k: cached.get(k) for k in meta} == meta
            and os.path.exists(bin_path) and os.path.getsize(bin_path) == cached["tokens"] * dtype.itemsize):
        print(f"data: using the tokenized cache {bin_path}")
    else:
        try:
            texts = [read_text(d) for d in docs]
        except CorpusError as e:                                        # an unreadable file
            raise DataError(str(e)) from None
        tokens = tokenizer.encode_corpus(texts).astype(dtype, copy=False)
        os.makedirs(cache_dir, exist_ok=True)
        if os.path.exists(meta_path):
            os.remove(meta_path)                                        # the old cache is invalid from here
        tokens.tofile(bin_path + ".tmp")
        os.replace(bin_path + ".tmp", bin_path)
        write_json(meta_path, {**meta, "tokens": int(tokens.size)})     # written last: marks the cache valid
        print(f"data: tokenized {len(docs)} file(s) into {tokens.size:,} tokens, cached at {bin_path}")
    return np.memmap(bin_path, dtype=dtype, mode="r")


def _read_cache_meta(meta_path):
    try:
        with open(meta_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def split_tokens(tokens, val_fraction, block_size):
    """Split by position: the last val_fraction of the stream is validation.

    Both parts must hold at least one window of block_size + 1 tokens (validation may be
    empty when val_fraction == 0)."""
    need = block_size + 1
    n = len(tokens)
    if n < need:
        raise DataError(f"the corpus has {n:,} tokens, fewer than one window of --block-size + 1 = {need}; "
                        "use more text or a smaller --block-size")
    n_val = int(n * val_fraction)
    train, val = tokens[: n - n_val], tokens[n - n_val:]
    if len(train) < need or (val_fraction > 0 and len(val) < need):
        raise DataError(f"the corpus ({n:,} tokens) is too short to split into train and validation parts "
                        f"of at least {need} tokens each; use more text, a smaller --block-size, "
                        "or change --val-fraction")
    return train, val


def _seeded_rng(*key):
    return np.random.default_rng(np.random.SeedSequence(list(key)))


class BatchSampler:
    """Batches (x, y) of shape (B, T), int64, on the host, deterministic in (seed, step, micro).

    'random': each row is a window starting at a uniformly random position.
    'sequential': the stream is cut into consecutive windows (stride T); the k-th row drawn
    over the whole run takes window k (wrapping around at the end: an epoch).
    """

    def __init__(self, tokens, batch_size, block_size, sampling="random", seed=0):
        self.tokens, self.B, self.T = tokens, batch_size, block_size
        self.sampling, self.seed = sampling, seed
        self.n_windows = (len(tokens) - 1) // block_size      # sequential windows per epoch

    def starts(self, step, micro, grad_accum):
        """(B,) start offsets of the windows for optimizer step `step`, micro-batch `micro`."""
        if self.sampling == "random":
            rng = _seeded_rng(self.seed, step, micro)
            return rng.integers(0, len(self.tokens) - self.T, size=self.B)
        first_row = (step * grad_accum + micro) * self.B
        return ((first_row + np.arange(self.B)) % self.n_windows) * self.T

    def get(self, step, micro=0, grad_accum=1):
        return self.windows(self.starts(step, micro, grad_accum))

    def windows(self, starts):
        offsets = np.asarray(starts)[:, None] + np.arange(self.T + 1)    # (B, T+1)
        w = np.asarray(self.tokens[offsets], dtype=np.int64)
        return w[:, :-1], w[:, 1:]

    def eval_batches(self, n_batches):
        """The same n_batches random windows every time (so validation losses compare)."""
        for i in range(n_batches):
            rng = _seeded_rng(self.seed, 2**31 - 1, i)
            yield self.windows(rng.integers(0, len(self.tokens) - self.T, size=self.B))
