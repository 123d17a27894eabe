"""Atomic writes: a file holds exactly its new contents, flushed to disk, or its old ones.

Every write goes to a temporary file with a unique name in the same directory, flushed to
disk, then renamed over the old file (and the directory flushed, so the rename survives a
power cut). A crash mid-write leaves the previous file intact, and an OSError (full disk,
read-only file system, permissions) removes the temporary file and becomes one WriteError
line. This module knows nothing of what the files hold
(gpt.run.files removes what a killed run left behind).
"""
import errno
import json
import os
import tempfile
from contextlib import contextmanager

from ..errors import UserError


class WriteError(UserError):
    """A file of the run could not be written; the previous version is intact."""


# ----------------------------------------------------------------------------- atomic writes


def write_error(what, e, directory, after=""):
    """The WriteError for an OSError `e` while writing into `directory`: what failed, why, what
    to do (and `after`, what it leaves), in one line."""
    return WriteError(f"{what}: {e.strerror or e}; {_write_advice(e, directory)}{after}")


def _write_advice(e, directory):
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full: free some space or choose another --out-dir"
    if e.errno == errno.EROFS:
        return "the file system is read-only: choose another --out-dir"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {directory}: fix its permissions or choose another --out-dir"
    if e.errno == errno.EFBIG:
        return "the file is larger than this system allows (see ulimit -f)"
    return "choose another --out-dir"


@contextmanager
def replacing(path):
    """with replacing(path) as tmp: create the file `tmp` (a unique name beside `path`); on
    success it is renamed over `path` at once, on any error it is removed and `path` is left
    untouched. An OSError becomes a WriteError: one line naming the file and what to do."""
    directory = os.path.dirname(path) or "."
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())             # mkstemp's 0600 -> what open() would have made
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(directory)                  # the rename itself survives a power cut
    except OSError as e:
        raise write_error(f"cannot write {path}", e, directory, "; the previous version is unchanged") from None
    finally:
        if tmp is not None:
            try:
                os.remove(tmp)
            except OSError:
                pass


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:                                  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path, mode="wb"):
    """with atomic_write(path) as f: write to f; `path` then holds exactly what was written,
    flushed to disk, or (on any error) what it held before (see replacing)."""
    with replacing(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_text(path, text):
    """Write `text` to `path` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path, obj):
    """Write `obj` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=1))
