"""No lost work: checkpoints that survive kills, full disks and crafted files; an --out-dir that
belongs to one run; a run that outlives its terminal and its worker processes."""
import errno
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
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from runs import FAST, ROOT, assert_clean_error, digest, run_cli

import train
from gpt.config import GPTConfig
from gpt.errors import CheckpointError
from gpt.files import checkpoint as ckpt
from gpt.files.atomic import WriteError, write_text
from gpt.files.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, load_checkpoint, load_latest, save_checkpoint
from gpt.model import GPT
from gpt.run.files import remove_stale_temporaries
from minigrad import Backend

TINY = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=256)


def tiny_checkpoint(path, step=3, history=None, **meta_changes):
    """A valid checkpoint of a 1-layer model -> its params."""
    model = GPT(TINY, Backend("cpu", "float64"), seed=0)
    params = model.params.copy()
    meta = {"step": step, "config": TINY.to_dict(), "elapsed": 1.5, "tokenizer": "byte", "local_vocab": None,
            "options": {"tokenizer": "byte", "bpe_vocab": None, "bpe_merges": None}, **meta_changes}
    history = history if history is not None else [
        {"step": s, "train_loss": 5.0 - s, "val_loss": None if s % 2 else 4.0, "lr": 1e-3, "grad_norm": 1.0,
         "tokens": 64 * s, "elapsed": 0.5 * s} for s in range(1, step + 1)]
    save_checkpoint(str(path), params, params * 0.5, params ** 2, meta, history)
    return params


def stored(loaded):
    """A loaded checkpoint's arrays as a file stores them (the curve as its array)."""
    return {**loaded.arrays, "curve": ckpt.curve_array(loaded.history)}


def rewrite(path, arrays, meta, redigest=False):
    """Write a crafted checkpoint from `arrays` and `meta` as given, with digests that match
    when asked (a crafted file may well carry matching ones)."""
    if redigest:
        meta = {**meta, "sha256": {name: ckpt.digest(a) for name, a in arrays.items()}}
    with open(path, "wb") as f:
        np.savez(f, **arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))


# ---------------------------------------------------------------------------- the format


def test_a_checkpoint_round_trips_with_its_curve_and_digests(tmp_path):
    params = tiny_checkpoint(tmp_path / CHECKPOINT_NAME)
    loaded = load_checkpoint(str(tmp_path / CHECKPOINT_NAME))
    assert np.array_equal(loaded.arrays["params"], params) and np.array_equal(loaded.arrays["adam_v"], params ** 2)
    assert [r["step"] for r in loaded.history] == [1, 2, 3]
    assert loaded.history[0]["val_loss"] is None and loaded.history[1]["val_loss"] == 4.0
    assert set(loaded.meta["sha256"]) == {"params", "adam_m", "adam_v", "curve"}
    assert "adam_m" not in load_checkpoint(str(tmp_path / CHECKPOINT_NAME), moments=False).arrays


def _flip_in_array(path, name):
    """Change one byte inside the data of array `name` (a stored zip entry), keeping the zip's CRC
    consistent, so only the metadata's digest can tell."""
    with zipfile.ZipFile(path) as z:
        entries = {i.filename: z.read(i) for i in z.infolist()}
    data = bytearray(entries[f"{name}.npy"])
    data[-3] ^= 0x40
    entries[f"{name}.npy"] = bytes(data)
    with zipfile.ZipFile(path, "w") as z:
        for filename, content in entries.items():
            z.writestr(filename, content)


@pytest.mark.parametrize("name", ["params", "adam_v", "curve"])
def test_the_digests_catch_damage_the_zip_does_not(tmp_path, name):
    path = tmp_path / CHECKPOINT_NAME
    tiny_checkpoint(path)
    _flip_in_array(path, name)
    with pytest.raises(CheckpointError, match=f"digest of its '{name}'"):
        load_checkpoint(str(path))


def test_an_unusable_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    tiny_checkpoint(tmp_path / CHECKPOINT_NAME, step=3)
    tiny_checkpoint(tmp_path / CHECKPOINT_NAME, step=4)             # step 3 becomes ckpt.prev.npz
    assert load_checkpoint(str(tmp_path / PREVIOUS_NAME)).meta["step"] == 3
    _flip_in_array(tmp_path / CHECKPOINT_NAME, "params")
    warnings = []
    kept = load_latest(str(tmp_path), warn=warnings.append)
    assert kept.meta["step"] == 3 and kept.path.endswith(PREVIOUS_NAME)
    assert len(warnings) == 1 and "digest" in warnings[0] and "previous checkpoint" in warnings[0]
    (tmp_path / PREVIOUS_NAME).write_bytes(b"junk")                 # both unusable: the newest's error
    with pytest.raises(CheckpointError, match="digest"):
        load_latest(str(tmp_path), warn=warnings.append)


def test_non_finite_parameters_are_never_saved_nor_loaded(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    params = tiny_checkpoint(path)
    before = digest(path)
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(str(path), np.full_like(params, np.nan), params, params, {"step": 4})
    assert digest(path) == before
    arrays = {"params": params.copy(), "adam_m": params, "adam_v": params, "curve": np.zeros((0, 7))}
    arrays["params"][5] = np.inf
    rewrite(path, arrays, load_checkpoint(str(path)).meta, redigest=True)
    with pytest.raises(CheckpointError, match="1 parameters are NaN or infinite"):
        load_checkpoint(str(path))


@pytest.mark.parametrize("change,word", [
    (lambda m: m.pop("step"), "step"),
    (lambda m: m.update(step="7"), "step"),
    (lambda m: m.update(step=True), "step"),
    (lambda m: m.pop("config"), "config"),
    (lambda m: m["config"].update(n_layer=2), "parameters but its config needs"),
    (lambda m: m["config"].update(n_embd=10**6), "parameters but its config needs"),   # no 48 GiB model first
    (lambda m: m["config"].update(n_embd=2**40), "n_embd"),
    (lambda m: m["config"].update(n_layer=2**31 - 1), "parameters but its config needs"),   # counted at once
    (lambda m: m["options"].update(bpe_vocab="vocab\0.json"), "bpe_vocab"),
    (lambda m: m.pop("tokenizer"), "tokenizer identity"),
    (lambda m: m["config"].update(n_head=3), "divisible"),
    (lambda m: m["config"].update(dropout="0.1"), "dropout"),
    (lambda m: m["config"].update(vocab_size=-1), "vocab_size"),
    (lambda m: m.update(options=[]), "options"),
    (lambda m: m["options"].update(tokenizer="llama"), "tokenizer"),
    (lambda m: m["options"].update(bpe_vocab=3), "bpe_vocab"),
    (lambda m: m.update(local_vocab=[3, 1]), "local vocabulary"),
    (lambda m: m.update(elapsed=float("nan")), "not valid JSON"),                    # NaN is not JSON
    (lambda m: m.update(sha256=None), "digests"),
])
def test_malformed_metadata_is_one_line(tmp_path, change, word):
    path = tmp_path / CHECKPOINT_NAME
    tiny_checkpoint(path)
    loaded = load_checkpoint(str(path))
    meta = loaded.meta
    change(meta)
    rewrite(path, stored(loaded), meta)
    with pytest.raises(CheckpointError, match=word) as e:
        load_checkpoint(str(path))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", [np.nan, np.inf, -1.0, 2.5])
def test_a_crafted_loss_curve_is_one_line(tmp_path, value):
    path = tmp_path / CHECKPOINT_NAME
    tiny_checkpoint(path)
    loaded = load_checkpoint(str(path))
    arrays = stored(loaded)
    arrays["curve"][1, 0] = value                                   # a step that is not a step
    rewrite(path, arrays, loaded.meta, redigest=True)
    with pytest.raises(CheckpointError, match="not whole numbers"):
        load_checkpoint(str(path))


def test_a_zip_entry_claiming_more_than_the_file_is_refused(tmp_path):
    """The zip's central directory says how big an entry is; a crafted one claims 4 GiB in a
    small file, and no 4 GiB array is allocated for it."""
    path = tmp_path / CHECKPOINT_NAME
    tiny_checkpoint(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        z.getinfo("params.npy")                                   # the entry exists
    central = [i for i in range(len(data) - 4) if data[i:i + 4] == b"PK\x01\x02"
               and data[i + 46:i + 56] == b"params.npy"][0]
    data[central + 20:central + 28] = (0xFFFFFFF0).to_bytes(4, "little") * 2   # compressed and plain sizes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_checkpoint(str(path))


def test_a_gpt2_tokenizer_on_a_byte_sized_model_is_one_line(tmp_path):
    from gpt.files.loading import load_model
    path = tmp_path / CHECKPOINT_NAME
    from gpt.data.tokenizers import make_tokenizer
    tiny_checkpoint(path, tokenizer=make_tokenizer("gpt2").identity,
                    options={"tokenizer": "gpt2", "bpe_vocab": None, "bpe_merges": None})
    with pytest.raises(CheckpointError, match="its model has 256 token ids, fewer than"):
        load_model(Backend("cpu"), out_dir=str(tmp_path))


def test_array_headers_are_checked_against_the_file_before_allocating(tmp_path):
    """A .npy header claiming 10**12 parameters in a small entry: refused, nothing allocated."""
    path = tmp_path / CHECKPOINT_NAME
    tiny_checkpoint(path)
    with zipfile.ZipFile(path) as z:
        entries = {i.filename: z.read(i) for i in z.infolist()}
    raw = entries["params.npy"]
    entries["params.npy"] = raw.replace(b"'shape': (", b"'shape': (1000000000000", 1)
    with zipfile.ZipFile(path, "w") as z:
        for filename, content in entries.items():
            z.writestr(filename, content)
    with pytest.raises(CheckpointError, match="does not fit the bytes stored"):
        load_checkpoint(str(path))


@pytest.fixture(scope="module")
def valid_checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / CHECKPOINT_NAME
    tiny_checkpoint(path)
    return path.read_bytes()


def _loads_or_refuses(tmp_path, data):
    path = tmp_path / "fuzzed.npz"
    path.write_bytes(data)
    try:
        loaded = load_checkpoint(str(path))
    except CheckpointError as e:
        assert "\n" not in str(e)
    else:
        assert np.isfinite(loaded.arrays["params"]).all()


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10**9)))
def test_fuzzed_checkpoint_bytes_give_only_one_line_errors(tmp_path, valid_checkpoint_bytes, flips, cut):
    data = bytearray(valid_checkpoint_bytes)
    for where, bits in flips:
        data[where % len(data)] ^= bits
    if cut is not None:
        data = data[: cut % len(data)]
    _loads_or_refuses(tmp_path, bytes(data))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                    | st.text(max_size=8), lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["step", "config", "options", "elapsed", "local_vocab", "sha256", "format",
                              "tokenizer", "n_layer", "n_embd", "dropout", "vocab_size"]), value=JSON)
def test_fuzzed_metadata_gives_only_one_line_errors(tmp_path, field, value):
    path = tmp_path / CHECKPOINT_NAME
    tiny_checkpoint(path)
    loaded = load_checkpoint(str(path))
    meta = loaded.meta
    (meta["config"] if field in ("n_layer", "n_embd", "dropout", "vocab_size") else meta)[field] = value
    rewrite(tmp_path / "fuzzed.npz", stored(loaded), meta)
    _loads_or_refuses(tmp_path, (tmp_path / "fuzzed.npz").read_bytes())


# ---------------------------------------------------------------------------- writes


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


def test_a_save_after_one_killed_between_link_and_rename(tmp_path):
    """Killed after ckpt.prev.npz became a link to ckpt.npz but before the new ckpt.npz: the
    next save keeps that previous checkpoint and leaves no temporary file (renaming a link over
    its own twin is a no-op that would leave the temporary behind)."""
    tiny_checkpoint(tmp_path / CHECKPOINT_NAME, step=3)
    os.link(tmp_path / CHECKPOINT_NAME, tmp_path / PREVIOUS_NAME)
    tiny_checkpoint(tmp_path / CHECKPOINT_NAME, step=4)
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME, PREVIOUS_NAME]
    assert load_checkpoint(str(tmp_path / PREVIOUS_NAME)).meta["step"] == 3


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


# ---------------------------------------------------------------------------- one run per out-dir


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


def test_ctrl_c_during_the_last_sample_names_the_checkpoint(tmp_path, monkeypatch, capsys):
    def interrupted_sample(self, label):
        if label == "after training":
            raise KeyboardInterrupt
    monkeypatch.setattr(train.Trainer, "sample", interrupted_sample)
    out = tmp_path / "run"
    assert train.main(FAST + ["--max-steps", "2", "--out-dir", str(out)]) == 130
    err = capsys.readouterr().err
    assert "the checkpoint of step 2 is in" in err and "nothing was saved" not in err


def test_a_fallback_then_two_saves_never_keep_the_damaged_file(tmp_path):
    """Resumed from ckpt.prev.npz (the newest was damaged): the next save must not keep the
    damaged file as ckpt.prev.npz; the one after keeps the good one."""
    out = tmp_path / "run"
    assert train.main(FAST + ["--max-steps", "2", "--eval-interval", "1", "--out-dir", str(out)]) == 0
    _flip_in_array(out / CHECKPOINT_NAME, "params")
    assert train.main(["--resume", "--max-steps", "3", "--out-dir", str(out)]) == 0
    assert load_checkpoint(str(out / CHECKPOINT_NAME)).meta["step"] == 3
    assert load_checkpoint(str(out / PREVIOUS_NAME)).meta["step"] == 2     # this session's step 2, which loads
    assert train.main(["--resume", "--max-steps", "4", "--out-dir", str(out)]) == 0
    assert load_checkpoint(str(out / PREVIOUS_NAME)).meta["step"] == 3


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
