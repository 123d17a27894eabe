"""An --out-dir belongs to one run at a time.

claim_out_dir(out_dir, resume, overwrite) is called before a run writes anything:

    - out_dir must be a directory (it is created when missing);
    - a run that is not --resume'd refuses a directory that already holds a checkpoint,
      changing nothing, unless --overwrite says to replace that run (remove_run_files, once
      the new run is built);
    - the run then holds an exclusive lock (flock) on out_dir/.lock for its lifetime; a second
      run on the same directory is refused with one line naming the holder's pid and host.
      The kernel drops the lock when the holder's process ends, however it ends (kill -9
      included), so a lock is never stale; the file itself stays;
    - temporary files that a killed run left behind are removed (under the lock, they cannot
      be another live run's).

Every refusal is a RunDirError: one line, and exit status 2 from the command-line tools.
"""
import json
import os
import socket
import time

from ..errors import UserError
from ..files.atomic import write_error
from ..files.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME
from ..files.untrusted import is_count, strict_json
from .files import CACHE_NAME, LOCK_NAME, RUN_FILES, remove_stale_temporaries
from .terminal import printable

try:
    import fcntl
except ImportError:                    # Windows: no flock; the run there is not locked
    fcntl = None



class RunDirError(UserError):
    """The --out-dir cannot be used by this run; the message says why and what to do."""


class RunDir:
    """A claimed --out-dir: holds its lock until release() or the end of the process."""

    def __init__(self, path, lock_fd):
        self.path, self._lock_fd = path, lock_fd

    def release(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)                     # closing the file drops the flock
            self._lock_fd = None


def has_checkpoint(out_dir):
    return any(os.path.isfile(os.path.join(out_dir, n)) for n in (CHECKPOINT_NAME, PREVIOUS_NAME))


def _refuse_existing_run(out_dir):
    raise RunDirError(f"--out-dir {out_dir} already holds a run's checkpoint; add --resume to continue it, "
                      "--overwrite to replace it, or choose another --out-dir")


def claim_out_dir(out_dir, resume=False, overwrite=False):
    """Make out_dir this run's (see the module docstring) -> RunDir."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise RunDirError(f"--out-dir {out_dir} is a file, not a directory; choose another --out-dir")
    if not (resume or overwrite) and has_checkpoint(out_dir):      # refused before touching anything
        _refuse_if_locked(out_dir)                      # a live run there: that is the news
        _refuse_existing_run(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        lock_fd = os.open(os.path.join(out_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise write_error(f"cannot use --out-dir {out_dir}", e, out_dir) from None
    run_dir = RunDir(out_dir, lock_fd)
    try:
        _lock(lock_fd, out_dir)
        if not (resume or overwrite) and has_checkpoint(out_dir):    # a run that ended meanwhile
            _refuse_existing_run(out_dir)
        removed = remove_stale_temporaries(out_dir) + remove_stale_temporaries(os.path.join(out_dir, CACHE_NAME))
        if removed:
            print(f"note: removed {removed} temporary file(s) that an interrupted run left in {out_dir}")
    except OSError as e:
        run_dir.release()
        raise write_error(f"cannot use --out-dir {out_dir}", e, out_dir) from None
    except BaseException:
        run_dir.release()
        raise
    return run_dir


def _refuse_if_locked(out_dir):
    """RunDirError naming the holder if a live run holds out_dir's lock (the file is not created)."""
    try:
        fd = os.open(os.path.join(out_dir, LOCK_NAME), os.O_RDWR)
    except OSError:
        return
    try:
        _lock(fd, out_dir, record=False)
    finally:
        os.close(fd)


def remove_run_files(out_dir):
    """--overwrite: the previous run's checkpoints, curve, plot and config go (the new run
    calls this once it is built, so that a bad option or a run that does not fit deletes
    nothing)."""
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        try:
            if os.path.isfile(path):
                os.remove(path)
        except OSError as e:
            raise write_error(f"cannot remove {path} (--overwrite)", e, out_dir) from None


def _lock(fd, out_dir, record=True):
    """Take the exclusive lock on the open lock file `fd` and (if `record`) write who holds it."""
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunDirError(f"--out-dir {out_dir} is in use by another run ({_holder(fd)}); wait for it to "
                          "finish, stop it, or choose another --out-dir") from None
    except OSError as e:                                # a file system without locks
        raise RunDirError(f"cannot lock --out-dir {out_dir}: {e.strerror or e}; choose a directory on a "
                          "local file system") from None
    if not record:
        return
    holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode(), 0)


def _holder(fd):
    """'pid 123 on host h, started ...' from the lock file (written by the holder)."""
    try:
        info = strict_json(os.pread(fd, 4096, 0).decode("utf-8"))
        pid, host, started = info["pid"], info["host"], info["started"]
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid is not recorded yet"
    if not (is_count(pid) and isinstance(host, str) and isinstance(started, str)):
        return "its lock file does not say which"
    return f"pid {pid} on host {printable(host[:64])}, started {printable(started[:20])}".replace("\n", " ")
