"""gpt.run.rundir and gpt.run.files: an --out-dir belongs to one run; what a killed run left is
removed; the lock file is read safely."""
import json
import os
import subprocess
import sys
import time

import pytest
from checkpoints import rewrite, stored, tiny_checkpoint
from runs import FAST, ROOT, assert_clean_error, digest, run_cli

import train
from gpt.files.checkpoint import CHECKPOINT_NAME, load_checkpoint
from gpt.run.files import remove_stale_temporaries


def test_stale_temporaries_are_recognised(tmp_path):
    for name in (".ckpt.npz.abc_12xy.tmp", "ckpt.npz.tmp", ".loss_curve.json.0a1b2c3d.tmp",
                 ".corpus-0123abcd-gpt2.bin.k2j3h4g5.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    for name in ("notes.tmp", "ckpt.npz", ".hidden.tmp", ".notes.txt.abcdefgh.tmp"):    # not ours: kept
        (tmp_path / name).write_bytes(b"keep")
    assert remove_stale_temporaries(str(tmp_path)) == 4
    assert sorted(os.listdir(tmp_path)) == [".hidden.tmp", ".notes.txt.abcdefgh.tmp", "ckpt.npz", "notes.tmp"]


def test_claiming_an_out_dir_removes_what_a_killed_run_left(tmp_path, capsys):
    from gpt.run.rundir import claim_out_dir
    (tmp_path / ".ckpt.npz.abcdefgh.tmp").write_bytes(b"partial")
    claim_out_dir(str(tmp_path)).release()
    assert not (tmp_path / ".ckpt.npz.abcdefgh.tmp").exists()
    assert "removed 1 temporary file" in capsys.readouterr().out


@pytest.mark.parametrize("holder, shown", [
    ('{"pid": 1e400, "host": "h", "started": "t"}', "not recorded"),      # json: inf; strict: refused
    ({"pid": "7", "host": "h", "started": "t"}, "does not say"),
    ({"pid": 7, "host": "evil\n\x1b[2Jhost", "started": "t"}, "pid 7 on host evil \\x1b[2Jhost"),
    ("not json", "not recorded"),
])
def test_a_crafted_lock_file_is_quoted_safely(tmp_path, holder, shown):
    import fcntl

    from gpt.run.rundir import LOCK_NAME, RunDirError, claim_out_dir
    lock = tmp_path / LOCK_NAME
    lock.write_text(holder if isinstance(holder, str) else json.dumps(holder))
    with open(lock) as f:
        fcntl.flock(f, fcntl.LOCK_EX)                                # held by "another run"
        with pytest.raises(RunDirError) as e:
            claim_out_dir(str(tmp_path))
    assert shown in str(e.value) and "\n" not in str(e.value) and "\x1b" not in str(e.value)


def test_a_new_run_never_replaces_an_existing_one(tmp_path):
    out = tmp_path / "run"
    assert train.main(FAST + ["--max-steps", "2", "--out-dir", str(out)]) == 0
    before = {name: digest(out / name) for name in os.listdir(out) if (out / name).is_file()}
    assert_clean_error(run_cli(*FAST, "--max-steps", "3", "--out-dir", out), "--resume", "--overwrite",
                       "another --out-dir")
    assert {name: digest(out / name) for name in os.listdir(out) if (out / name).is_file()} == before
    assert_clean_error(run_cli("--resume", "--overwrite", "--out-dir", out), "choose one")
    assert train.main(FAST + ["--max-steps", "3", "--overwrite", "--out-dir", str(out)]) == 0
    replaced = load_checkpoint(str(out / CHECKPOINT_NAME))
    assert replaced.meta["step"] == 3 and [r["step"] for r in replaced.history] == [1, 2, 3]


def test_resume_continues_where_it_was_read_from(tmp_path):
    """A checkpoint's saved out_dir (another run's) is never where a resumed run writes."""
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    assert train.main(FAST + ["--max-steps", "2", "--out-dir", str(out)]) == 0
    loaded = load_checkpoint(str(out / CHECKPOINT_NAME))
    rewrite(out / CHECKPOINT_NAME, stored(loaded), {**loaded.meta, "options": {**loaded.meta["options"],
                                                                             "out_dir": str(elsewhere)}})
    assert train.main(["--resume", "--max-steps", "3", "--out-dir", str(out)]) == 0
    assert load_checkpoint(str(out / CHECKPOINT_NAME)).meta["step"] == 3 and not elsewhere.exists()


def test_a_checkpoint_knows_when_another_run_replaced_it(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    tiny_checkpoint(path)
    loaded = load_checkpoint(str(path))
    assert not loaded.changed()
    tiny_checkpoint(path, step=4)
    assert loaded.changed()


def test_overwrite_deletes_nothing_until_the_new_run_is_built(tmp_path):
    out = tmp_path / "run"
    assert train.main(FAST + ["--max-steps", "2", "--out-dir", str(out)]) == 0
    before = digest(out / CHECKPOINT_NAME)
    assert_clean_error(run_cli(*FAST, "--overwrite", "--n-embd", "30", "--n-head", "4", "--out-dir", out), "divisible")
    assert_clean_error(run_cli(*FAST, "--overwrite", "--batch-size", "10000000", "--out-dir", out), "needs about")
    assert digest(out / CHECKPOINT_NAME) == before


def test_two_runs_on_one_out_dir(tmp_path):
    """The second run is refused, naming the first's pid and host; the first finishes intact."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *FAST, "--max-steps", "400",
                              "--eval-interval", "50", "--out-dir", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 60
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = run_cli(*FAST, "--max-steps", "400", "--out-dir", out)
    assert_clean_error(second, "in use by another run", f"pid {first.pid}", "host")
    resumed = run_cli("--resume", "--out-dir", out)                 # --resume is refused too
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    if resumed.returncode != 0:                                     # it may have started after the end
        assert_clean_error(resumed, "in use by another run")
    final = load_checkpoint(str(out / CHECKPOINT_NAME))
    assert final.meta["step"] == 400 and len(final.history) == 400
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == final.meta["config"]
