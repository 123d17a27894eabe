"""What a run survives, end to end: a checkpoint it cannot write, Ctrl-C, kill -9 at any moment,
a dead worker, a closed stdout, crafted checkpoints and options given to every command. The
checkpoint format, atomic writes and the run directory are tested at their modules
(tests/gpt/files/test_checkpoint.py, test_atomic.py, tests/gpt/run/test_rundir.py)."""
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from checkpoints import rewrite, stored
from runs import FAST, ROOT, assert_clean_error, digest, run_cli

import train
from gpt.errors import CheckpointError
from gpt.files.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, load_checkpoint, load_latest

# ---------------------------------------------------------------------------- a run that cannot write


def _limited_file_size(limit):
    """preexec_fn: files above `limit` bytes fail with EFBIG (as a full disk fails a write)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_run_that_cannot_write_its_checkpoint_stops_with_one_line(tmp_path):
    """The kernel refuses the checkpoint's bytes (a file size limit, as a full disk would): one
    line, exit 2, the previous checkpoint intact and no partial file."""
    out = tmp_path / "run"
    assert run_cli(*FAST, "--max-steps", "2", "--out-dir", out).returncode == 0
    before = digest(out / CHECKPOINT_NAME)
    size = os.path.getsize(out / CHECKPOINT_NAME)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--resume", "--max-steps", "4",
                             "--out-dir", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            preexec_fn=_limited_file_size(size - 1000))
    assert_clean_error(result, "cannot write", "ckpt.npz", "File too large")
    assert digest(out / CHECKPOINT_NAME) == before
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert run_cli("--resume", "--max-steps", "4", "--out-dir", out).returncode == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_out_dir_is_one_line(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert_clean_error(run_cli(*FAST, "--max-steps", "2", "--out-dir", out), "permission")
    finally:
        out.chmod(0o755)


def test_out_dir_naming_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    assert_clean_error(run_cli(*FAST, "--max-steps", "2", "--out-dir", tmp_path / "f"), "is a file")


# ---------------------------------------------------------------------------- interruptions


def test_ctrl_c_during_the_last_sample_names_the_checkpoint(tmp_path, monkeypatch, capsys):
    def interrupted_sample(self, label):
        if label == "after training":
            raise KeyboardInterrupt
    monkeypatch.setattr(train.Trainer, "sample", interrupted_sample)
    out = tmp_path / "run"
    assert train.main(FAST + ["--max-steps", "2", "--out-dir", str(out)]) == 130
    err = capsys.readouterr().err
    assert "the checkpoint of step 2 is in" in err and "nothing was saved" not in err


# ---------------------------------------------------------------------------- kills and faults


def _final_state(out):
    final = load_checkpoint(str(out / CHECKPOINT_NAME))
    return final.meta["step"], final.arrays, [(r["step"], r["train_loss"], r["val_loss"]) for r in final.history]


def _kill_at(out, args, moment):
    """Start a run and kill -9 it at `moment`: ('step', n, delay) some delay (s) after it prints
    step n's line, or ('saving',) while a checkpoint's temporary file exists. -> False if the
    run finished first (only possible for 'saving': the poller missed every save)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args, "--out-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=env, text=True)
    stuck = threading.Timer(300, proc.kill)                  # a run that hangs fails the trial, never the suite
    stuck.start()
    try:
        if moment[0] == "step":
            _, n, delay = moment
            for line in proc.stdout:
                if line.startswith(f"step {n}:"):
                    break
            end = time.perf_counter() + delay                # on the order of a step: inside the save
            while time.perf_counter() < end:                 # or the steps after it
                pass
        else:
            while proc.poll() is None and not (out.is_dir()
                                               and any(n.startswith(".ckpt.npz.") for n in os.listdir(out))):
                pass
        finished = proc.poll() is not None
        proc.kill()
    finally:
        stuck.cancel()
        proc.wait()
        proc.stdout.close()
    return not finished


def test_kill_9_at_ten_moments_loses_nothing(tmp_path):
    """kill -9 a run at 10 moments: 5 just after the lines of random steps (each step line is
    followed by a save and 25 more steps before the next), 5 while a checkpoint is being
    written (its temporary file exists). After each kill the checkpoint loads and --resume
    completes, and the final state equals that of a run never interrupted. The moments are
    observed in the run's output and files, never guessed from the clock."""
    args = [*FAST, "--max-steps", "400", "--eval-interval", "25", "--workers", "1"]
    reference = tmp_path / "reference"
    assert run_cli(*args, "--out-dir", reference).returncode == 0
    ref_step, ref_arrays, ref_curve = _final_state(reference)
    rng = random.Random(0)
    for trial in range(10):
        out = tmp_path / f"killed{trial}"
        if trial % 2:                                                # mid-checkpoint
            for attempt in range(5):                                 # a run whose saves all slipped by is rerun
                shutil.rmtree(out, ignore_errors=True)
                if _kill_at(out, args, ("saving",)):
                    break
            else:
                pytest.fail(f"trial {trial}: 5 runs ended without the poller seeing a checkpoint being written")
        else:                                                        # a step's line, ≥ 100 steps before the end
            assert _kill_at(out, args, ("step", 25 * rng.randint(1, 12), rng.uniform(0, 0.01))), trial
        if (out / CHECKPOINT_NAME).exists() or (out / PREVIOUS_NAME).exists():
            assert load_latest(str(out)).meta["step"] > 0
            resumed = run_cli("--resume", "--out-dir", out)
        else:                                                        # killed before the first save
            resumed = run_cli(*args, "--out-dir", out)
        assert resumed.returncode == 0, resumed.stderr
        step, arrays, curve = _final_state(out)
        assert step == ref_step and curve == ref_curve, trial
        for name in ("params", "adam_m", "adam_v"):
            assert np.array_equal(arrays[name], ref_arrays[name]), (trial, name)
        assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_a_dead_worker_process_saves_the_last_completed_step(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *FAST, "--batch-size", "16",
                             "--n-embd", "16", "--n-head", "2", "--workers", "2", "--max-steps", "100000",
                             "--eval-interval", "100000", "--out-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    children = f"/proc/{proc.pid}/task/{proc.pid}/children"
    deadline = time.time() + 60
    workers = []
    while not workers and time.time() < deadline:
        time.sleep(0.2)
        workers = open(children).read().split() if os.path.exists(children) else []
    time.sleep(1.0)
    os.kill(int(workers[0]), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=60)
    assert_clean_error(subprocess.CompletedProcess([], proc.returncode, stdout, stderr),
                       "worker process 1 died", "saved step", "--resume")
    saved = int(stderr.split("saved step ")[1].split()[0])
    assert load_checkpoint(str(out / CHECKPOINT_NAME)).meta["step"] == saved > 0


def test_a_closed_stdout_does_not_stop_the_run(tmp_path):
    """`train.py | head -1`: the reader leaves, the run trains and saves to the end."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *FAST, "--max-steps", "30",
                             "--sample-tokens", "50", "--eval-interval", "10", "--out-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.readline()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0
    assert load_checkpoint(str(out / CHECKPOINT_NAME)).meta["step"] == 30


def test_a_broken_loss_curve_json_never_blocks_resume(tmp_path):
    out = tmp_path / "run"
    assert train.main(FAST + ["--max-steps", "3", "--out-dir", str(out)]) == 0
    (out / "loss_curve.json").write_text("{broken")
    assert train.main(["--resume", "--max-steps", "5", "--out-dir", str(out)]) == 0
    curve = json.loads((out / "loss_curve.json").read_text())
    assert [r["step"] for r in curve] == [1, 2, 3, 4, 5]


def test_a_checkpoint_of_another_format_is_refused_without_calling_it_corrupt(tmp_path):
    """A format-1 checkpoint (no format field, no digests, no curve inside) is one line naming
    its format, and never advice to delete it."""
    out = tmp_path / "run"
    assert train.main(FAST + ["--max-steps", "3", "--out-dir", str(out)]) == 0
    loaded = load_checkpoint(str(out / CHECKPOINT_NAME))
    rewrite(out / CHECKPOINT_NAME, loaded.arrays,
            {k: v for k, v in loaded.meta.items() if k not in ("format", "sha256")})
    result = run_cli("--resume", "--max-steps", "5", "--out-dir", out)
    assert_clean_error(result, "is of format 1", "reads format 2")
    assert "delete" not in result.stderr and "corrupt" not in result.stderr


@pytest.mark.parametrize("tool", ["resume", "sample", "export"])
def test_non_finite_checkpoints_are_refused_everywhere(tmp_path, tool):
    out = tmp_path / "run"
    assert train.main(FAST + ["--max-steps", "2", "--out-dir", str(out)]) == 0
    loaded = load_checkpoint(str(out / CHECKPOINT_NAME))
    arrays = stored(loaded)
    arrays["params"][0] = np.nan
    rewrite(out / CHECKPOINT_NAME, arrays, loaded.meta, redigest=True)
    command = {"resume": ["train.py", "--resume"], "sample": ["sample.py", "--max-new-tokens", "3"],
               "export": ["-m", "gpt.export", "--hf-dir", str(tmp_path / "hf")]}[tool]
    result = subprocess.run([sys.executable, *command, "--out-dir", str(out)], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert_clean_error(result, "NaN or infinite")


def test_crafted_saved_options_are_one_line(tmp_path):
    out = tmp_path / "run"
    assert train.main(FAST + ["--max-steps", "2", "--out-dir", str(out)]) == 0
    loaded = load_checkpoint(str(out / CHECKPOINT_NAME))
    for key, value in (("batch_size", "16"), ("batch_size", -4), ("lr", None), ("sampling", "shuffled"),
                       ("local_vocab", 1), ("data", "a\0b"), ("prompt", "\ud800"), ("zero", 2)):
        rewrite(out / CHECKPOINT_NAME, stored(loaded),
                {**loaded.meta, "options": {**loaded.meta["options"], key: value}})
        with pytest.raises(CheckpointError, match=f"option {key}"):
            train.resolve_options(["--resume", "--out-dir", str(out)])


def test_a_url_as_data_says_to_download_it(tmp_path):
    assert_clean_error(run_cli("--data", "https://example.com/corpus.txt", "--out-dir", tmp_path / "o"),
                       "URLs are not read", "download")


def test_started_by_mpirun_without_mpi4py_is_one_line(tmp_path):
    """A launcher's variables but no mpi4py: one line saying what to install."""
    script = ("import sys; sys.modules['mpi4py'] = None; import train; "
              "sys.exit(train.main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", script, *FAST, "--out-dir", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "OMPI_COMM_WORLD_SIZE": "2"})
    assert_clean_error(result, "mpi4py is not installed", ".[mpi]")
