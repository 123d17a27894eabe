"""A BPE corpus -> its token stream, tokenized once and cached.

A BPE corpus (gpt.data.corpus finds its documents, joined with <|endoftext|>) is tokenized
on all cores into a cached binary (uint16 when the vocabulary fits) plus a JSON metadata file:

    {"format": 2, "tokenizer": identity, "sources": [[abs path, size, mtime_ns], ...],
     "dtype": "uint16", "tokens": n, "sha256": hex digest of the .bin file}

The cache is reused while the source files and tokenizer are unchanged, and rebuilt silently
when they changed. It is a derived file, read as untrusted: on every use its checksum is
verified and its ids are checked against the vocabulary (one pass over the file, chunk by
chunk); a cache that fails (corrupted, truncated, malformed metadata) is rebuilt with a
warning. Its files are written atomically (gpt.files.atomic).
"""
import contextlib
import hashlib
import os

import numpy as np

from bpe import CorpusError
from bpe.corpus import read_text

from ..errors import DataError
from ..files.atomic import atomic_write, write_error, write_json
from ..files.checkpoint import digest
from ..files.untrusted import is_count, strict_json
from .corpus import _stat_document, list_documents, warn, warn_if_binary

CACHE_FORMAT = 2
CHUNK_BYTES = 1 << 24               # the cache check reads the .bin in pieces of this size


def load_bpe_corpus(path, tokenizer, cache_dir):
    """Token stream of a file or directory under a BPE tokenizer, via the cache in cache_dir.

    Returns a read-only memmap of tokenizer.token_dtype."""
    docs = list_documents(path)
    stats = [_stat_document(d) for d in docs]
    sources = [[os.path.abspath(d), st.st_size, st.st_mtime_ns] for d, st in zip(docs, stats)]
    if not any(size for _, size, _ in sources):
        raise DataError(f"--data {path}: the corpus is empty")
    warn_if_binary(docs, utf8=True)
    dtype = np.dtype(tokenizer.token_dtype)
    meta = {"format": CACHE_FORMAT, "tokenizer": tokenizer.identity, "sources": sources, "dtype": dtype.name}
    key = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:8]
    stem = os.path.join(cache_dir, f"{os.path.basename(os.path.normpath(path))}-{key}-{tokenizer.name}")
    bin_path, meta_path = stem + ".bin", stem + ".json"
    cached = _read_cache_meta(meta_path)
    if cached is _MALFORMED:
        warn(f"the tokenized cache's metadata {meta_path} is malformed; rebuilding the cache")
    elif cached is not None and {k: cached.get(k) for k in meta} == meta:       # else stale: rebuilt quietly
        problem = _cache_problem(bin_path, cached, dtype, tokenizer.vocab_size)
        if problem is None:
            print(f"data: using the tokenized cache {bin_path}")
            return np.memmap(bin_path, dtype=dtype, mode="r")
        warn(f"the tokenized cache {bin_path} cannot be used ({problem}); rebuilding it")
    try:
        texts = [read_text(d) for d in docs]
    except CorpusError as e:                                            # an unreadable file
        raise DataError(str(e)) from None
    tokens = tokenizer.encode_corpus(texts).astype(dtype, copy=False)
    _write_cache(bin_path, meta_path, tokens, {**meta, "tokens": int(tokens.size),
                                               "sha256": digest(tokens)})
    print(f"data: tokenized {len(docs)} file(s) into {tokens.size:,} tokens, cached at {bin_path}")
    return np.memmap(bin_path, dtype=dtype, mode="r")


_MALFORMED = object()       # _read_cache_meta's answer for metadata that is not a JSON object


def _read_cache_meta(meta_path):
    """The metadata as a dict; None when there is none; _MALFORMED when it cannot be used."""
    try:
        with open(meta_path, "rb") as f:
            meta = strict_json(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):                                      # UnicodeDecodeError, strict_json's
        return _MALFORMED
    return meta if isinstance(meta, dict) else _MALFORMED


def _cache_problem(bin_path, cached, dtype, vocab_size):
    """None when bin_path holds the tokens `cached` describes, else what is wrong, in words.

    One pass over the file, chunk by chunk: its SHA-256 and its largest id (every id must be
    below vocab_size)."""
    n, expected = cached.get("tokens"), cached.get("sha256")
    if not is_count(n, 1) or not isinstance(expected, str):
        return "malformed metadata"
    try:
        with open(bin_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != n * dtype.itemsize:
                return f"{size:,} bytes where {n:,} tokens need {n * dtype.itemsize:,}"
            sha, top = hashlib.sha256(), 0
            while chunk := f.read(CHUNK_BYTES):
                sha.update(chunk)
                top = max(top, int(np.frombuffer(chunk, dtype).max()))
    except OSError as e:
        return e.strerror or str(e)
    if sha.hexdigest() != expected:
        return "its checksum does not match: the file was changed or corrupted"
    if top >= vocab_size:
        return f"it holds token id {top}, outside the vocabulary of {vocab_size:,}"
    return None


def _write_cache(bin_path, meta_path, tokens, meta):
    """Replace the cache: tokens to bin_path, then meta to meta_path (written last: it marks
    the cache valid). Each write is atomic; a WriteError (one line) when the disk refuses."""
    directory = os.path.dirname(bin_path)
    try:
        os.makedirs(directory, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(meta_path)                                        # the old cache is invalid from here
    except OSError as e:
        raise write_error(f"cannot write the tokenized cache in {directory}", e, directory) from None
    with atomic_write(bin_path) as f:
        tokens.tofile(f)
    write_json(meta_path, meta)
