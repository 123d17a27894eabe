"""train.py, sample.py and export with --device cuda, end to end, against the CPU path.

Each command runs in a subprocess under the CuPy stand-in (tests/support/cupy_standin on
PYTHONPATH), and also on a real GPU when this machine has one. In float64 the CUDA path's
losses, samples and parameters equal the CPU path's to rounding, dropout included (both
devices draw the same hash masks); a resumed run equals an uninterrupted one exactly.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigrad.backend import _probe_cuda

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "support" / "cupy_standin"
MODEL = ["--preset", "tiny", "--n-embd", "16", "--n-head", "2", "--block-size", "16"]
RUN = ["--batch-size", "3", "--eval-steps", "2", "--log-interval", "1", "--warmup-steps", "2", "--dtype", "float64",
       "--workers", "1"]
FAST = MODEL + RUN


def _real_gpu():
    return _probe_cuda()[0]


@pytest.fixture(scope="module")
def selftest_cache(tmp_path_factory):
    """One self-test cache for this module's runs: each device (the stand-in, the GPU) is
    checked once, by the first run that uses it."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(params=["standin", "gpu"])
def cuda(request, selftest_cache):
    """Runs a script with --device cuda: under the stand-in, or on this machine's GPU."""
    if request.param == "gpu" and not _real_gpu():
        pytest.skip("no CUDA GPU here; the stand-in runs the same commands")
    env = dict(os.environ, XDG_CACHE_HOME=selftest_cache)
    if request.param == "standin":
        env["PYTHONPATH"] = os.pathsep.join([str(STANDIN), env.get("PYTHONPATH", "")])
    def run_cuda(script, *args):
        result = run(script, *args, "--device", "cuda", env=env)
        assert script != "train.py" or "device: cuda (cupy" in result.stdout, result.stdout
        return result
    return run_cuda


def run(script, *args, env=None):
    command = [sys.executable, *(["-m", script] if script.startswith("gpt.") else [str(ROOT / script)])]
    result = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: minigrad.cuda" not in result.stderr, result.stderr
    return result


def cpu(*args):
    return run(*args, "--device", "cpu")


def curve(out_dir):
    return json.loads((Path(out_dir) / "loss_curve.json").read_text())


def params(out_dir):
    return np.load(Path(out_dir) / "ckpt.npz")["params"]


def assert_same_run(a, b, exact=False):
    for x, y in zip(curve(a), curve(b), strict=True):
        for key in ("train_loss", "val_loss", "grad_norm"):
            if exact:
                assert x[key] == y[key], (key, x, y)
            elif x[key] is not None:
                assert x[key] == pytest.approx(y[key], rel=1e-9), (key, x, y)
    if exact:
        np.testing.assert_array_equal(params(a), params(b))
    else:
        np.testing.assert_allclose(params(a), params(b), rtol=1e-8, atol=1e-10)


def samples(stdout):
    return [line for line in stdout.splitlines() if not line.startswith(("device:", "data:"))]


def test_training_with_dropout_eval_checkpoint_and_samples(cuda, tmp_path):
    args = [*FAST, "--dropout", "0.1", "--max-steps", "4", "--eval-interval", "2", "--sample-tokens", "12",
            "--temperature", "0"]
    gpu = cuda("train.py", *args, "--out-dir", tmp_path / "gpu")
    host = cpu("train.py", *args, "--out-dir", tmp_path / "cpu")
    assert_same_run(tmp_path / "gpu", tmp_path / "cpu")
    assert [r["val_loss"] is not None for r in curve(tmp_path / "gpu")] == [False, True, False, True]
    gpu_text = [line for line in samples(gpu.stdout) if "sample" in line or "---" in line]
    assert gpu_text and gpu_text == [line for line in samples(host.stdout) if "sample" in line or "---" in line]


def test_resume_equals_the_uninterrupted_run_exactly(cuda, tmp_path):
    args = [*FAST, "--max-steps", "4", "--eval-interval", "2", "--sample-tokens", "0"]
    cuda("train.py", *args, "--out-dir", tmp_path / "straight")
    cuda("train.py", *args, "--max-steps", "2", "--out-dir", tmp_path / "resumed")
    cuda("train.py", *args, "--resume", "--out-dir", tmp_path / "resumed")
    assert_same_run(tmp_path / "straight", tmp_path / "resumed", exact=True)


def test_gradient_accumulation(cuda, tmp_path):
    args = [*FAST, "--batch-size", "2", "--grad-accum", "2", "--max-steps", "3", "--sample-tokens", "0"]
    cuda("train.py", *args, "--out-dir", tmp_path / "gpu")
    cpu("train.py", *args, "--out-dir", tmp_path / "cpu")
    assert_same_run(tmp_path / "gpu", tmp_path / "cpu")


def test_gpt2_tokenizer_with_a_local_vocabulary(cuda, tmp_path):
    args = [*FAST, "--tokenizer", "gpt2", "--local-vocab", "--max-steps", "2", "--sample-tokens", "0"]
    cuda("train.py", *args, "--out-dir", tmp_path / "gpu")
    cpu("train.py", *args, "--out-dir", tmp_path / "cpu")
    assert_same_run(tmp_path / "gpu", tmp_path / "cpu")


def test_export_init_from_and_sampling_with_and_without_the_kv_cache(cuda, tmp_path):
    cuda("train.py", *FAST, "--max-steps", "3", "--sample-tokens", "0", "--out-dir", tmp_path / "run")
    run("gpt.export", "--out-dir", tmp_path / "run", "--hf-dir", tmp_path / "hf")
    args = [*RUN, "--max-steps", "2", "--sample-tokens", "0", "--init-from", tmp_path / "hf"]
    cuda("train.py", *args, "--out-dir", tmp_path / "gpu")
    cpu("train.py", *args, "--out-dir", tmp_path / "cpu")
    assert_same_run(tmp_path / "gpu", tmp_path / "cpu")
    generated = {}
    for name, device_run in (("gpu", cuda), ("cpu", cpu)):
        for cache in ([], ["--no-kv-cache"]):
            result = device_run("sample.py", "--out-dir", tmp_path / "run", "--prompt", "ROMEO:", "--temperature", "0",
                                "--max-new-tokens", "20", *cache)
            generated[name, bool(cache)] = result.stdout
    assert len(set(generated.values())) == 1, generated


# The run of the out-of-memory tests: as train.py, or with the memory estimate turned off so that
# the step itself runs out (gpt.run.memory.available() None: nothing is known, nothing is checked).
TRAIN_WITHOUT_ESTIMATE = ("import sys, gpt.run.memory, train; gpt.run.memory.available = lambda backend: None; "
                          "sys.exit(train.main(sys.argv[1:]))")


@pytest.mark.parametrize("estimate", [True, False], ids=["refused-by-the-estimate", "out-of-memory-in-a-step"])
def test_out_of_device_memory_is_one_line_and_keeps_the_checkpoint(tmp_path, estimate):
    """A run that does not fit the GPU (the stand-in's, shrunk to 20 MB): exit 2, one line
    with what was asked, what the device has and what to lower; the checkpoint is unchanged.
    The memory estimate refuses it before allocating; without the estimate, the step's
    allocation fails with the same kind of line."""
    env = dict(os.environ, PYTHONPATH=str(STANDIN), XDG_CACHE_HOME=str(tmp_path / "cache"))
    args = [*FAST, "--batch-size", "512", "--sample-tokens", "0", "--out-dir", tmp_path, "--device", "cuda"]
    run("train.py", *args, "--max-steps", "2", env=env)
    saved = params(tmp_path)
    env["CUPY_STANDIN_MEMORY_LIMIT"] = str(20 * 10**6)
    script = [str(ROOT / "train.py")] if estimate else ["-c", TRAIN_WITHOUT_ESTIMATE]
    result = subprocess.run([sys.executable, *script, *map(str, args), "--resume", "--max-steps", "4"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    line = errors[0]
    if estimate:
        assert line.startswith("error: the run needs about ") and "but the GPU has 19 MiB available" in line
    else:
        assert line.startswith("error: the GPU ran out of memory: an allocation of ") and "of its 19 MiB" in line
    assert "--batch-size" in line and "--grad-accum" in line
    np.testing.assert_array_equal(params(tmp_path), saved)
