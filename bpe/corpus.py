"""Encoding a whole corpus on all cores, for the training data pipeline.

The corpus (one text, or a list of documents joined by ``<|endoftext|>``) is cut into
jobs of about ``chunk_chars`` characters. Text is cut only where GPT-2's pre-tokenizer is
guaranteed to start a new piece (``pretokenize.split_at_safe_cuts``) and at special
tokens, so encoding the jobs separately and concatenating the ids gives exactly the ids of
encoding everything at once. A pool of worker processes encodes the jobs in order while a
tqdm bar (on stderr) counts characters.
"""

import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
from tqdm import tqdm

from .errors import CorpusError
from .pretokenize import split_at_safe_cuts
from .special import resolve_special, split_on_special

CHUNK_CHARS = 1 << 20  # characters per job: large enough to amortize IPC, small enough to balance

Job = list[str | int]  # text to encode, and special-token ids, in order


def encode_corpus(tokenizer, text_or_documents: str | Iterable[str], *, num_workers: int | None = None,
                  show_progress: bool = True, allowed_special=frozenset(),
                  chunk_chars: int = CHUNK_CHARS) -> np.ndarray:
    """Encode a corpus into one array of ids (``tokenizer.token_dtype``: uint16 when the
    vocabulary fits).

    ``text_or_documents``: a string, or an iterable of document strings that are joined
    with ``tokenizer.eot_token`` between them (sequence packing; a tokenizer without one,
    like ``ByteTokenizer``, concatenates them as they are).
    Each document is encoded like ``tokenizer.encode(doc, allowed_special=allowed_special,
    disallowed_special=())``: by default special-token text in the corpus is plain text.
    ``num_workers``: processes to use (default: all available cores; 1 encodes in this
    process). ``show_progress``: draw a progress bar on stderr.
    """
    documents = [text_or_documents] if isinstance(text_or_documents, str) else list(text_or_documents)
    allowed, _ = resolve_special(tokenizer.special_tokens, allowed_special, ())
    jobs = _plan_jobs(documents, tokenizer.eot_token, allowed, chunk_chars)
    total = sum(map(len, documents))
    workers = num_workers or available_cores()
    dtype = tokenizer.token_dtype

    arrays = []
    with _encoded_jobs(tokenizer, dtype, jobs, workers if total > chunk_chars else 1) as results, \
            tqdm(total=total, unit="char", unit_scale=True, desc=f"encoding with {tokenizer.name}",
                 disable=not show_progress) as bar:
        for ids, chars in results:
            arrays.append(ids)
            bar.update(chars)
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)


def _plan_jobs(documents: list[str], eot_token: int | None, allowed: dict[str, int], chunk_chars: int) -> Iterator[Job]:
    job: Job = []
    chars = 0
    for n, document in enumerate(documents):
        if n > 0 and eot_token is not None:
            job.append(eot_token)
        for segment in split_on_special(document, allowed):
            for piece in [segment] if isinstance(segment, int) else split_at_safe_cuts(segment, chunk_chars):
                job.append(piece)
                chars += 0 if isinstance(piece, int) else len(piece)
                if chars >= chunk_chars:
                    yield job
                    job, chars = [], 0
    if job:
        yield job


@contextmanager
def _encoded_jobs(tokenizer, dtype, jobs: Iterator[Job], workers: int) -> Iterator[Iterator[tuple[np.ndarray, int]]]:
    """(ids, characters) for each job, in job order: from a pool of ``workers``
    processes, or computed in this process when ``workers`` is 1."""
    if workers == 1:
        yield (_encode_job(tokenizer, dtype, job) for job in jobs)
        return
    with multiprocessing.Pool(workers, initializer=_init_worker, initargs=(tokenizer, dtype)) as pool:
        yield pool.imap(_encode_job_in_worker, jobs)


def _encode_job(tokenizer, dtype, job: Job) -> tuple[np.ndarray, int]:
    ids = tokenizer._encode_segments(job)
    return np.array(ids, dtype=dtype), sum(len(piece) for piece in job if isinstance(piece, str))


_worker_state: tuple = ()  # (tokenizer, dtype), set once in each worker process


def _init_worker(tokenizer, dtype) -> None:
    global _worker_state
    _worker_state = (tokenizer, dtype)


def _encode_job_in_worker(job: Job) -> tuple[np.ndarray, int]:
    return _encode_job(*_worker_state, job)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask on Linux, else all cores)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def read_text(path) -> str:
    """A text file as str. Bytes that are not UTF-8 become U+FFFD, with a one-line warning on
    stderr giving the offset of the first bad byte; an unreadable file raises CorpusError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CorpusError(f"cannot read corpus file '{path}': {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        print(f"warning: '{path}' is not valid UTF-8 (first invalid byte at offset {e.start}); "
              "invalid bytes were replaced by U+FFFD", file=sys.stderr)
        return data.decode("utf-8", errors="replace")
