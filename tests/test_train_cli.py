"""train.py end to end: learning, resume, Ctrl-C, output files, and every bad input."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from runs import CORPUS, FAST, ROOT, assert_clean_error, digest, run_cli

import sample
import train
from gpt.config import GPTConfig
from gpt.errors import CheckpointError, HFFormatError
from gpt.export import export_checkpoint
from gpt.files.checkpoint import load_checkpoint, save_checkpoint
from gpt.files.hf import export_hf
from gpt.model import GPT
from minigrad import Backend


def test_tiny_model_learns_the_bundled_corpus(tmp_path):
    out = tmp_path / "run"
    assert train.main(FAST[:-2] + ["--n-embd", "64", "--max-steps", "60", "--lr", "3e-3", "--warmup-steps", "5",
                                   "--eval-interval", "30", "--out-dir", str(out)]) == 0
    curve = json.loads((out / "loss_curve.json").read_text())
    assert len(curve) == 60
    start, end = curve[0]["train_loss"], np.mean([r["train_loss"] for r in curve[-5:]])
    assert abs(start - math.log(256)) < 0.3              # starts at chance for 256 bytes
    assert end < 0.6 * math.log(256), end                # and falls well below it
    assert curve[-1]["val_loss"] < 0.6 * math.log(256)
    for name in ("ckpt.npz", "loss_curve.json", "loss_curve.svg", "config.json"):
        assert (out / name).is_file()
    assert (out / "loss_curve.svg").read_text().startswith("<svg")


def _interrupting_step(stop_at):
    """A Trainer.train_step that asks the run to stop after step `stop_at`, exactly as the
    SIGINT handler does."""
    original = train.Trainer.train_step

    def step(self):
        result = original(self)
        if self.step + 1 == stop_at:
            self.stop.signum = signal.SIGINT
        return result
    return step


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, monkeypatch):
    # 16 x 128 tokens per micro-batch: enough for two data-parallel workers (gpt/parallel.py)
    args = FAST + ["--max-steps", "12", "--eval-interval", "5", "--dropout", "0.1", "--grad-accum", "2",
                   "--batch-size", "16", "--block-size", "128", "--workers", "2"]
    assert train.main(args + ["--out-dir", str(tmp_path / "full")]) == 0
    with monkeypatch.context() as m:
        m.setattr(train.Trainer, "train_step", _interrupting_step(7))
        assert train.main(args + ["--out-dir", str(tmp_path / "split")]) == 130
    assert load_checkpoint(str(tmp_path / "split" / "ckpt.npz")).meta["step"] == 7
    assert train.main(["--resume", "--out-dir", str(tmp_path / "split")]) == 0
    full = load_checkpoint(str(tmp_path / "full" / "ckpt.npz"))
    split = load_checkpoint(str(tmp_path / "split" / "ckpt.npz"))
    assert full.meta["step"] == split.meta["step"] == 12
    for key in ("params", "adam_m", "adam_v"):
        assert np.array_equal(full.arrays[key], split.arrays[key]), key
    curve = json.loads((tmp_path / "split" / "loss_curve.json").read_text())
    assert [r["step"] for r in curve] == list(range(1, 13))


def test_resume_can_extend_a_finished_run(tmp_path):
    out = str(tmp_path / "run")
    assert train.main(FAST + ["--max-steps", "3", "--out-dir", out]) == 0
    assert train.main(["--resume", "--max-steps", "5", "--out-dir", out]) == 0
    assert load_checkpoint(os.path.join(out, "ckpt.npz")).meta["step"] == 5


def start_run(out, *extra):
    """A long train.py run in a subprocess, returned once it is training."""
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *FAST, "--max-steps", "100000",
                             "--eval-interval", "100000", "--out-dir", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 60
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)                                       # let a few steps run
    return proc


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_saves_a_checkpoint_and_exits(tmp_path, stop):
    """Ctrl-C, a scheduler's SIGTERM, a dropped terminal's SIGHUP: the step finishes, the run
    saves and exits with 128 + the signal's number."""
    out = tmp_path / "run"
    proc = start_run(out)
    proc.send_signal(stop)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + stop, stderr
    assert "Traceback" not in stderr
    assert f"stopped by {stop.name}: saved step" in stdout
    step = load_checkpoint(str(out / "ckpt.npz")).meta["step"]
    assert 0 < step < 100000


def test_a_second_signal_stops_at_once_and_says_what_was_saved(tmp_path):
    """A second signal during a long save/step stops at once; the message names the checkpoint
    written earlier in the run instead of claiming nothing was saved."""
    out = tmp_path / "run"
    proc = start_run(out, "--eval-interval", "3")        # a checkpoint every 3 steps
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "nothing was saved" not in stderr + stdout
    saved = load_checkpoint(str(out / "ckpt.npz")).meta["step"]
    assert ("stopped at once by a second SIGTERM; the checkpoint of step" in stderr
            or f"stopped by SIGTERM: saved step {saved}" in stdout)


def test_help_explains_every_flag():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--data", "--device", "--dtype", "--seed", "--batch-size", "--grad-accum", "--max-steps", "--lr",
                 "--min-lr", "--warmup-steps", "--weight-decay", "--beta1", "--beta2", "--grad-clip",
                 "--eval-interval", "--eval-steps", "--val-fraction", "--sampling", "--target-loss", "--out-dir",
                 "--resume", "--prompt", "--sample-tokens", "--log-interval", "--n-layer", "--n-head", "--n-embd",
                 "--block-size", "--dropout", "--vocab-size", "--preset"):
        assert flag in result.stdout


def test_output_shows_what_the_run_does(tmp_path):
    result = run_cli(*FAST[:-4], "--sample-tokens", "20", "--max-steps", "4", "--eval-interval", "2",
                     "--out-dir", tmp_path / "run", "--prompt", "ROMEO:")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ("device: cpu", "parameters", "tokens per step: 4 x 32 x 1 = 128", "first training window:",
                 "sample before training", "sample after training", "val loss", "ROMEO:"):
        assert text in out, text
    assert "tok_s" in result.stderr                      # the progress bar


def test_sequential_sampling_and_target_loss(tmp_path):
    out = tmp_path / "run"
    assert train.main(FAST + ["--sampling", "sequential", "--max-steps", "50", "--eval-interval", "2",
                              "--target-loss", "5.0", "--out-dir", str(out)]) == 0
    curve = json.loads((out / "loss_curve.json").read_text())
    assert len(curve) < 50 and curve[-1]["val_loss"] <= 5.0


def test_directory_of_text_files_is_one_corpus(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    text = open(CORPUS, encoding="utf-8").read()
    (docs / "a.txt").write_text(text[:20000])
    (docs / "b.md").write_text(text[20000:40000])
    (docs / "skip.bin").write_bytes(b"\x00" * 100)
    assert train.main(FAST + ["--data", str(docs), "--max-steps", "2", "--out-dir", str(tmp_path / "run")]) == 0


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def trained(tmp_path):
    """A finished 2-step run, for the --resume error cases."""
    out = tmp_path / "trained"
    assert train.main(FAST + ["--max-steps", "2", "--out-dir", str(out)]) == 0
    return out


def test_missing_data_path(tmp_path):
    assert_clean_error(run_cli("--data", tmp_path / "nope.txt", "--out-dir", tmp_path / "o"), "no such file")


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    assert_clean_error(run_cli("--data", tmp_path / "empty.txt", "--out-dir", tmp_path / "o"), "empty")


def test_corpus_shorter_than_a_window(tmp_path):
    (tmp_path / "short.txt").write_text("x" * 32)
    assert_clean_error(run_cli(*FAST, "--data", tmp_path / "short.txt", "--out-dir", tmp_path / "o"), "block-size")


def test_corpus_too_short_to_split(tmp_path):
    (tmp_path / "short.txt").write_text("x" * 100)
    assert_clean_error(run_cli(*FAST, "--data", tmp_path / "short.txt", "--out-dir", tmp_path / "o"), "val-fraction")


def test_directory_without_text_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"abc")
    assert_clean_error(run_cli("--data", tmp_path / "d", "--out-dir", tmp_path / "o"), "no text files")


def test_cuda_without_a_gpu(tmp_path):
    from minigrad.backend import _probe_cuda
    if _probe_cuda()[0]:
        pytest.skip("a CUDA device is available here")
    assert_clean_error(run_cli("--device", "cuda", "--out-dir", tmp_path / "o"), "--device cuda")


def test_n_embd_not_divisible_by_n_head(tmp_path):
    assert_clean_error(run_cli("--n-embd", "100", "--n-head", "3", "--out-dir", tmp_path / "o"), "divisible")


@pytest.mark.parametrize("flag,value", [
    ("--n-layer", "0"), ("--n-head", "-2"), ("--n-embd", "0"), ("--block-size", "-1"), ("--batch-size", "0"),
    ("--max-steps", "0"), ("--max-steps", "-5"), ("--lr", "0"), ("--lr", "-1e-3"), ("--lr", "nan"),
    ("--grad-accum", "0"), ("--eval-interval", "0"), ("--dropout", "1.0"), ("--dropout", "-0.1"),
    ("--val-fraction", "1"), ("--weight-decay", "-1"), ("--beta2", "1.5"), ("--batch-size", "many"),
])
def test_zero_or_negative_sizes_rates_and_steps(tmp_path, capsys, flag, value):
    code = train.main([flag, value, "--out-dir", str(tmp_path / "o")])      # in-process: fast
    result = subprocess.CompletedProcess([], code, *capsys.readouterr())
    assert_clean_error(result, flag)
    assert not (tmp_path / "o").exists()


def test_resume_without_a_checkpoint(tmp_path):
    assert_clean_error(run_cli("--resume", "--out-dir", tmp_path / "none"), "no checkpoint")


def test_resume_from_a_truncated_checkpoint(trained):
    ckpt = trained / "ckpt.npz"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    before = digest(ckpt)
    assert_clean_error(run_cli("--resume", "--out-dir", trained), "corrupted")
    assert digest(ckpt) == before


@pytest.mark.parametrize("flags,word", [(["--n-embd", "64"], "n_embd"), (["--block-size", "16"], "block_size"),
                                        (["--tokenizer", "gpt2"], "tokenizer"), (["--seed", "5"], "seed")])
def test_resume_with_a_different_config_or_tokenizer(trained, flags, word):
    before = digest(trained / "ckpt.npz")
    assert_clean_error(run_cli("--resume", *flags, "--out-dir", trained), word)
    assert digest(trained / "ckpt.npz") == before


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = run_cli(*FAST, "--max-steps", "200", "--eval-interval", "1", "--lr", "1e30", "--warmup-steps", "0",
                     "--grad-clip", "0", "--out-dir", out)
    assert_clean_error(result, "at step")
    failed_step = int(result.stderr.split("at step ")[1].split(";")[0])
    kept = load_checkpoint(str(out / "ckpt.npz"))
    assert kept.meta["step"] == failed_step - 1
    assert np.all(np.isfinite(kept.arrays["params"]))


# ---------------------------------------------------------------------------- --init-from


def test_init_from_a_hugging_face_directory_continues_training(tmp_path, trained):
    hf = tmp_path / "hf"
    export_checkpoint(str(trained), str(hf))
    opts, saved = train.resolve_options(["--init-from", str(hf), "--out-dir", str(tmp_path / "ft"),
                                         "--max-steps", "2", "--sample-tokens", "0"])
    trainer = train.Trainer(opts, saved)
    assert opts.tokenizer == "byte"                          # a 256-token model without BPE files
    exported = load_checkpoint(str(trained / "ckpt.npz")).arrays
    assert np.array_equal(trainer.backend.to_host(trainer.model.params), exported["params"])
    assert trainer.run() == 0


def test_init_from_rejects_model_flags_and_missing_directories(tmp_path, trained, capsys):
    hf = tmp_path / "hf"
    export_checkpoint(str(trained), str(hf))
    assert train.main(["--init-from", str(hf), "--n-layer", "3", "--out-dir", str(tmp_path / "o")]) == 2
    assert "drop --n-layer" in capsys.readouterr().err
    assert_clean_error(run_cli("--init-from", tmp_path / "missing", "--out-dir", tmp_path / "o"))


def test_init_from_an_exported_local_vocabulary_model(tmp_path):
    """train.py finds a projected vocabulary's local_vocab.json in a Hugging Face directory, as
    sample.py does, and the continued run resumes with it."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(open(CORPUS, encoding="utf-8").read()[:20000])
    bpe = FAST[:-6] + ["--tokenizer", "gpt2", "--data", str(corpus)]
    assert train.main(bpe + ["--local-vocab", "--max-steps", "2", "--out-dir", str(tmp_path / "a")]) == 0
    export_checkpoint(str(tmp_path / "a"), str(tmp_path / "hf"))
    first = load_checkpoint(str(tmp_path / "a" / "ckpt.npz")).meta
    out = str(tmp_path / "b")
    assert train.main(["--data", str(corpus), "--init-from", str(tmp_path / "hf"), "--batch-size", "4",
                       "--sample-tokens", "5", "--eval-steps", "2", "--max-steps", "2", "--out-dir", out]) == 0
    meta = load_checkpoint(os.path.join(out, "ckpt.npz")).meta
    assert meta["tokenizer"] == first["tokenizer"] and meta["local_vocab"] == first["local_vocab"]
    assert train.main(["--resume", "--max-steps", "3", "--out-dir", out]) == 0
    assert load_checkpoint(os.path.join(out, "ckpt.npz")).meta["step"] == 3


def test_tokenizer_mismatches_are_the_same_error_in_train_and_sample(tmp_path, trained):
    saved = load_checkpoint(str(trained / "ckpt.npz"))
    arrays, meta = saved.arrays, saved.meta
    meta["tokenizer"] = "byte-999"                         # not what the tokenizer options give now
    save_checkpoint(str(trained / "ckpt.npz"), arrays["params"], arrays["adam_m"], arrays["adam_v"], meta)
    sample_options = {**sample.DEFAULTS, "out_dir": str(trained), "device": "cpu"}
    with pytest.raises(CheckpointError, match="byte-999") as from_train:
        train.Trainer(*train.resolve_options(["--resume", "--out-dir", str(trained)]))
    with pytest.raises(CheckpointError, match="byte-999") as from_sample:
        sample.run(sample_options)
    assert str(from_train.value) == str(from_sample.value)
    hf = tmp_path / "hf"                                   # 300 ids and no tokenizer files
    export_hf(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=300), Backend("cpu")), hf)
    with pytest.raises(HFFormatError, match="tokenizer files"):
        train.resolve_options(["--init-from", str(hf), "--out-dir", str(tmp_path / "o")])
    with pytest.raises(HFFormatError, match="tokenizer files"):
        sample.run({**sample_options, "init_from": str(hf)})
    assert_clean_error(run_cli("--init-from", hf, "--out-dir", tmp_path / "o"), "tokenizer files")


def test_reference_kernels_train_to_the_same_losses(tmp_path):
    args = FAST + ["--max-steps", "6", "--eval-interval", "3", "--dropout", "0.1", "--grad-accum", "2"]
    curves = {}
    for kind in ("fast", "reference"):
        assert train.main(args + ["--kernels", kind, "--out-dir", str(tmp_path / kind)]) == 0
        curves[kind] = json.loads((tmp_path / kind / "loss_curve.json").read_text())
    for key in ("train_loss", "grad_norm"):
        np.testing.assert_allclose([r[key] for r in curves["reference"]], [r[key] for r in curves["fast"]],
                                   rtol=1e-4, err_msg=key)
    assert load_checkpoint(str(tmp_path / "reference" / "ckpt.npz")).meta["options"]["kernels"] == "reference"


def test_more_workers_than_cores_are_capped_with_a_note(tmp_path):
    """--workers 64 on this machine forks one worker per usable core at most, and says so."""
    from bpe.corpus import available_cores
    result = run_cli(*FAST, "--max-steps", "1", "--workers", "64", "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"note: --workers 64 is more than the {available_cores()} cores this process may use" in result.stdout
    workers = f", {available_cores()} worker processes" if available_cores() > 1 else ""
    assert f"float32{workers})" in result.stdout


def test_resume_may_read_the_data_from_another_path(tmp_path, monkeypatch):
    """--data is where the corpus is, not what the run is: a resumed run accepts the same file by
    a relative path, or a copy elsewhere."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(open(CORPUS, "rb").read()[:200_000])
    out = tmp_path / "run"
    assert train.main(FAST + ["--data", str(corpus), "--max-steps", "2", "--out-dir", str(out)]) == 0
    monkeypatch.chdir(tmp_path)
    assert train.main(["--resume", "--data", "corpus.txt", "--max-steps", "3", "--out-dir", str(out)]) == 0
    moved = tmp_path / "elsewhere" / "corpus.txt"
    moved.parent.mkdir()
    moved.write_bytes(corpus.read_bytes())
    assert train.main(["--resume", "--data", str(moved), "--max-steps", "4", "--out-dir", str(out)]) == 0
    assert load_checkpoint(str(out / "ckpt.npz")).meta["step"] == 4


def test_training_time_starts_with_the_loop(tmp_path, monkeypatch):
    """The curve's elapsed seconds count training only: the setup and the sample before it do not
    (a fake clock that the sample moves 1,000 s)."""
    from gpt.run import steplog
    now = [0.0]

    def clock():                                  # 1 ms a reading, and 1,000 s for the sample
        now[0] += 0.001
        return now[0]
    monkeypatch.setattr(steplog, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(train.Trainer, "sample", lambda self, label: now.__setitem__(0, now[0] + 1000.0))
    out = tmp_path / "run"
    assert train.main(FAST + ["--max-steps", "3", "--out-dir", str(out)]) == 0
    elapsed = [r["elapsed"] for r in load_checkpoint(str(out / "ckpt.npz")).history]
    assert len(elapsed) == 3 and 0 < max(elapsed) < 1.0, elapsed
