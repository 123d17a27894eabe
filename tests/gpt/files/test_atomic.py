"""gpt.files.atomic: a failed write leaves the previous file and no temporary; write errors are
one line; files keep the usual permissions."""
import errno
import os

import numpy as np
import pytest
from checkpoints import tiny_checkpoint
from runs import digest

from gpt.files.atomic import WriteError, write_text
from gpt.files.checkpoint import CHECKPOINT_NAME


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT_NAME
    tiny_checkpoint(path)
    before = digest(path)

    def disk_full(f, **arrays):
        f.write(b"x" * 1000)                                        # a partial file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(WriteError, match="No space left on device; the disk is full") as e:
        tiny_checkpoint(path, step=9)
    assert "\n" not in str(e.value) and "previous version is unchanged" in str(e.value)
    assert digest(path) == before
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME]


def test_permission_and_read_only_errors_are_one_line(tmp_path, monkeypatch):
    """As root the kernel lets every write through, so the refusal is simulated where it
    happens: creating the temporary file."""
    import tempfile
    for error, words in ((errno.EACCES, "no permission to write"), (errno.EROFS, "read-only")):
        def refuse(*args, **kwargs):
            raise OSError(error, os.strerror(error))
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        with pytest.raises(WriteError, match=words):
            write_text(str(tmp_path / "config.json"), "{}")
    assert os.listdir(tmp_path) == []


def test_files_keep_the_usual_permissions(tmp_path):
    """Temporary files are made 0600; the files they become get what open() gives (umask)."""
    old = os.umask(0o022)
    try:
        write_text(str(tmp_path / "config.json"), "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644
