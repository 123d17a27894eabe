"""Corpus -> token stream -> train/validation split -> batches of windows.

--data is a regular text file or a directory of them; anything else (a FIFO, a socket, a
device, a URL) is refused before it is opened, since opening a FIFO blocks until a writer
comes. A directory's text files are found by their suffix, recursively, in sorted path order;
links to files are followed, links to directories are not (so the walk cannot loop), and an
entry that is not a readable regular file is skipped with a warning. A file that looks binary
is trained on, after a warning.

A byte-level corpus file *is* its token stream: it is memory-mapped as uint8 and never
copied (uint8 ids are always < 256, the byte vocabulary: nothing to check). A directory's
documents are joined with a blank line for the byte tokenizer, with <|endoftext|> for BPE.
A BPE corpus is tokenized once, on all cores, into a cached binary (uint16 when the
vocabulary fits) plus a JSON metadata file:

    {"format": 2, "tokenizer": identity, "sources": [[abs path, size, mtime_ns], ...],
     "dtype": "uint16", "tokens": n, "sha256": hex digest of the .bin file}

The cache is reused while the source files and tokenizer are unchanged, and rebuilt silently
when they changed. It is a derived file, read as untrusted: on every use its checksum is
verified and its ids are checked against the vocabulary (one pass over the file, chunk by
chunk); a cache that fails (corrupted, truncated, malformed metadata) is rebuilt with a
warning. Its files are written atomically (gpt.checkpoint.atomic_write).

Batches are windows of T+1 consecutive tokens (inputs x = window[:-1], targets
y = window[1:]), picked either at random or in order; the choice depends only on
(seed, step, micro-step), so a resumed run sees the same data.
"""
import contextlib
import errno
import hashlib
import os
import re
import stat
import sys

import numpy as np

from bpe import CorpusError
from bpe.corpus import read_text

from .checkpoint import atomic_write, digest, write_error, write_json
from .errors import DataError
from .untrusted import is_count, strict_json

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
BINARY_SAMPLE_BYTES = 64 * 1024     # looks_binary judges a file by its first bytes
CACHE_FORMAT = 2
CHUNK_BYTES = 1 << 24               # the cache check reads the .bin in pieces of this size

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Characters of text that are not text: C0 controls except \t \n \f \r, DEL, and U+FFFD, the
# replacement for bytes that are not UTF-8.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\ufffd]")


def warn(message):
    """A one-line warning on stderr (like bpe's warning for text that is not UTF-8)."""
    print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------- finding the documents


def list_documents(path):
    """A text file -> [path]; a directory -> its text files (recursive, sorted).

    DataError for a path that is missing, a URL, or not a file or directory. Entries of a
    directory that cannot be read as regular files are skipped with a warning."""
    st = _stat_data(path)
    if stat.S_ISREG(st.st_mode):
        return [path]
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(f"--data {path} is {_kind(st.st_mode)}, not a file; "
                        "pass a text file or a directory of text files")
    docs = []
    for root, dirs, names in os.walk(path, onerror=lambda e: _unlisted(path, e)):
        for name in dirs:
            if os.path.islink(os.path.join(root, name)):
                warn(f"skipped {os.path.join(root, name)}: links to directories are not followed; "
                     "pass the directory itself as --data")
        docs += [p for p in (os.path.join(root, n) for n in names if n.lower().endswith(TEXT_SUFFIXES))
                 if _is_regular_file(p)]
    if not docs:
        raise DataError(f"--data {path}: the directory has no text files ({', '.join(TEXT_SUFFIXES)})")
    return sorted(docs)


def is_url(path):
    """True for text like https://host/file (never read: the file should be downloaded first)."""
    return bool(_URL.match(path)) and not os.path.exists(path)


def _stat_data(path):
    """os.stat of --data (following links), or a DataError saying why there is none."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if is_url(path):
            raise DataError(f"--data {path}: URLs are not read; download the file first "
                            "(e.g. curl -o corpus.txt URL) and pass its path") from None
        if os.path.islink(path):
            raise DataError(f"--data {path} is a dangling symbolic link (its target does not exist)") from None
        raise DataError(f"--data {path}: no such file or directory") from None
    except OSError as e:
        raise DataError(f"--data {path}: {_why(e)}") from None


def _is_regular_file(path):
    """True for a regular file (or a link to one); otherwise False, with a warning."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        warn(f"skipped {path}: {_why(e)}")
        return False
    if not stat.S_ISREG(mode):
        warn(f"skipped {path}: it is {_kind(mode)}, not a file")
        return False
    return True


def _unlisted(top, error):
    """os.walk's onerror: --data itself unreadable is an error, a subdirectory a warning."""
    if error.filename == top:
        raise DataError(f"--data {top}: cannot list the directory ({error.strerror})")
    warn(f"skipped {error.filename}: cannot list the directory ({error.strerror})")


def _kind(mode):
    """What a file that is neither regular nor a directory is, in words."""
    kinds = [(stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]
    return next((words for test, words in kinds if test(mode)), "not a regular file")


def _why(error):
    """An OSError from os.stat, in words."""
    if error.errno == errno.ELOOP:
        return "a symbolic link loop"
    if error.errno == errno.ENOENT:
        return "a dangling symbolic link (its target does not exist)"
    return error.strerror or str(error)


# ---------------------------------------------------------------------------- binary files


def looks_binary(sample, utf8=True):
    """True when bytes (a file's first BINARY_SAMPLE_BYTES) look like a binary file, not text.

    Text never holds a NUL byte. Otherwise it is binary when more than 30% of the characters
    are controls other than tab, newline, form feed and carriage return, or (utf8: for a
    tokenizer that reads UTF-8, like BPE) bytes that are not UTF-8, decoded as U+FFFD. Random
    bytes score about 55% (11% without utf8, but hold a NUL within a few hundred bytes);
    Latin-1 text a few percent; UTF-8 text nothing."""
    if b"\0" in sample:
        return True
    text = sample.decode("utf-8", errors="replace") if utf8 else sample.decode("latin-1")   # latin-1: byte = char
    return len(_NOT_TEXT.findall(text)) > 0.3 * len(text)


def warn_if_binary(docs, utf8):
    """A warning for each document whose first bytes look binary (see looks_binary);
    DataError if one cannot be read."""
    for doc in docs:
        try:
            with open(doc, "rb") as f:
                sample = f.read(BINARY_SAMPLE_BYTES)
        except OSError as e:
            raise _unreadable(doc, e) from None
        if looks_binary(sample, utf8):
            warn(f"{doc} looks like a binary file, not text (NUL bytes, or mostly control bytes"
                 f"{' and invalid UTF-8' if utf8 else ''} in its first 64 KiB); training on it anyway")


def _stat_document(doc):
    try:
        return os.stat(doc)
    except OSError as e:                               # removed or changed since it was listed
        raise _unreadable(doc, e) from None


def _unreadable(doc, error):
    return DataError(f"cannot read corpus file '{doc}': {error.strerror or error}")


# ---------------------------------------------------------------------------- byte-level corpus


def load_byte_corpus(path):
    """Byte-level token stream (uint8) of a file or a directory of text files."""
    docs = list_documents(path)
    warn_if_binary(docs, utf8=False)
    if len(docs) == 1:
        if os.path.getsize(docs[0]) == 0:
            raise DataError(f"--data {docs[0]}: the file is empty")
        try:
            return np.memmap(docs[0], dtype=np.uint8, mode="r")
        except OSError as e:
            raise _unreadable(docs[0], e) from None
    parts = []
    for doc in docs:
        try:
            with open(doc, "rb") as f:
                parts.append(f.read())
        except OSError as e:
            raise _unreadable(doc, e) from None
    data = b"\n\n".join(p for p in parts if p)
    if not data:
        raise DataError(f"--data {path}: every text file in the directory is empty")
    return np.frombuffer(data, dtype=np.uint8)


# ---------------------------------------------------------------------------- BPE corpus and its cache


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
