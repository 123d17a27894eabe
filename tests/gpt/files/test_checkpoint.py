"""gpt.files.checkpoint: the format round trips, damage and crafted files are one line, the previous
checkpoint is the fallback."""
import os
import zipfile

import numpy as np
import pytest
from checkpoints import rewrite, stored, tiny_checkpoint
from hypothesis import HealthCheck, given, settings, strategies as st
from runs import FAST, digest

import train
from gpt.errors import CheckpointError
from gpt.files.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, load_checkpoint, load_latest, save_checkpoint
from minigrad import Backend


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


def test_a_save_after_one_killed_between_link_and_rename(tmp_path):
    """Killed after ckpt.prev.npz became a link to ckpt.npz but before the new ckpt.npz: the
    next save keeps that previous checkpoint and leaves no temporary file (renaming a link over
    its own twin is a no-op that would leave the temporary behind)."""
    tiny_checkpoint(tmp_path / CHECKPOINT_NAME, step=3)
    os.link(tmp_path / CHECKPOINT_NAME, tmp_path / PREVIOUS_NAME)
    tiny_checkpoint(tmp_path / CHECKPOINT_NAME, step=4)
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME, PREVIOUS_NAME]
    assert load_checkpoint(str(tmp_path / PREVIOUS_NAME)).meta["step"] == 3


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
