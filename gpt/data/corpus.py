"""Corpus -> token stream: the documents of --data, and the byte-level stream.

--data is a regular text file or a directory of them; anything else (a FIFO, a socket, a
device, a URL) is refused before it is opened, since opening a FIFO blocks until a writer
comes. A directory's text files are found by their suffix, recursively, in sorted path order;
links to files are followed, links to directories are not (so the walk cannot loop), and an
entry that is not a readable regular file is skipped with a warning. A file that looks binary
is trained on, after a warning.

A byte-level corpus file *is* its token stream: it is memory-mapped as uint8 and never
copied (uint8 ids are always < 256, the byte vocabulary: nothing to check). A directory's
documents are joined with a blank line. BPE corpora go through gpt.data.token_cache, batches
through gpt.data.batches.
"""
import errno
import os
import re
import stat
import sys

import numpy as np

from ..errors import DataError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
BINARY_SAMPLE_BYTES = 64 * 1024     # looks_binary judges a file by its first bytes

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
