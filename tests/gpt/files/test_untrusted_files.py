"""Crafted and corrupted files: safetensors headers, Hugging Face directories, shard indexes.

Every file is untrusted, so each problem must be one line of the project's own error
(SafetensorsError, HFFormatError), found with work and memory bounded by the files' sizes,
without opening anything outside the directory given. The hypothesis tests throw random
headers and random byte flips at the readers and hold them to that. (Checkpoints are fuzzed
in their own tests; tokenizer files in test_bpe_files.py.)"""
import json
import math
import os
import shutil
import struct
import time
import tracemalloc
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from models import CPU, small_model

from gpt.files.hf import (
    MAX_SIZE,
    PREFIX,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    HFFormatError,
    export_hf,
    load_hf_gpt2,
    read_hf_config,
)
from gpt.files.safetensors import DTYPES, MAX_HEADER_BYTES, SafetensorsError, load_file, read_header, save_file
from gpt.model import GPT

MAX_MESSAGE = 500                  # characters: tmp paths are long, some messages name two files
FUZZ = settings(max_examples=150, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def one_line(error_type, call, *args):
    """The message of the error_type that call(*args) raises, checked to be one short line."""
    with pytest.raises(error_type) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and len(message) < MAX_MESSAGE, message
    return message


def write_raw(path, header, data=b"", length=None):
    """A safetensors file from parts: header is a dict (dumped as JSON, NaN and inf spelled as
    Python's json spells them) or the header's bytes; length overrides the 8-byte prefix."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def f32(shape, offsets):
    return {"dtype": "F32", "shape": shape, "data_offsets": offsets}


def one(shape, offsets):
    """A header of one float32 tensor "w"."""
    return {"w": f32(shape, offsets)}


class Peak:
    """Peak Python-tracked memory (NumPy's buffers included; memory maps are not) in a block."""

    def __enter__(self):
        tracemalloc.start()
        return self

    def __exit__(self, *exc):
        self.bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


# ----------------------------------------------------------------------------- safetensors, crafted


CRAFTED_HEADERS = [
    (one([2], [0, float("inf")]), b"\0" * 8, "Infinity is not a JSON number"),
    (one([2], [0, float("nan")]), b"\0" * 8, "NaN is not a JSON number"),
    (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 1e400]}}', b"\0" * 8, "'1e400' is not a finite number"),
    (one([2], [0, 10 ** 30]), b"\0" * 8, "integer of 31 digits"),
    (one([2], [8, 0]), b"\0" * 8, "begin <= end"),
    (one([2], [-8, 0]), b"\0" * 8, "data_offsets"),
    (one([2], [0, 8.0]), b"\0" * 8, "data_offsets"),
    (one([2], [0]), b"\0" * 8, "data_offsets"),
    (one([2], [0, True]), b"\0" * 8, "data_offsets"),
    (one([-1, 2], [0, 8]), b"\0" * 8, "non-negative integers"),
    (one([2.0], [0, 8]), b"\0" * 8, "shape [2.0]"),
    (one([True, 2], [0, 8]), b"\0" * 8, "shape"),
    (one("2", [0, 8]), b"\0" * 8, "shape"),
    (one([1] * 33, [0, 4]), b"\0" * 4, "at most 32"),
    (one([0, 2 ** 62], [0, 0]), b"", "too large"),                            # empty, yet no array can have it
    (one([2 ** 20, 2 ** 20], [0, 8]), b"\0" * 8, "needs 4398046511104 bytes"),
    (one([3], [0, 8]), b"\0" * 8, "needs 12 bytes"),
    (one([4], [0, 16]), b"\0" * 8, "truncated"),
    ({"w": {"dtype": "F8", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2, "dtype 'F8'"),
    ({"w": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "dtype"),
    ({"w": {"dtype": "F32", "shape": [2]}}, b"", "exactly dtype, shape and data_offsets"),
    ({"w": {**f32([2], [0, 8]), "extra": 1}}, b"\0" * 8, "exactly"),
    ({"w": [0, 8]}, b"\0" * 8, "not an object"),
    ({"a": f32([2], [0, 8]), "b": f32([2], [4, 12])}, b"\0" * 12, "overlaps"),
    ({"a": f32([2], [0, 8]), "b": f32([2], [12, 20])}, b"\0" * 20, "hole at bytes 8..12"),
    ({"a": f32([2], [0, 8])}, b"\0" * 12, "holds 12 bytes of data"),           # trailing bytes
    ({"a": f32([2], [0, 8]), "__metadata__": {"format": 1}}, b"\0" * 8, "__metadata__"),
    ({"a": f32([2], [0, 8]), "__metadata__": ["pt"]}, b"\0" * 8, "__metadata__"),
    (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": {}}', b"\0" * 8, "'a' appears twice"),
    (b"[" * 100_000 + b"]" * 100_000, b"", "nested too deeply"),
    (b'{"a": \xff}', b"", "not UTF-8"),
    (b"[1, 2]", b"", "not a JSON object"),
    (b"null", b"", "not a JSON object"),
    (b"{oops", b"", "not valid JSON"),
]


@pytest.mark.parametrize("header, data, word", CRAFTED_HEADERS, ids=[word for *_, word in CRAFTED_HEADERS])
def test_crafted_headers_give_one_line(tmp_path, header, data, word):
    path = write_raw(tmp_path / "t.safetensors", header, data)
    message = one_line(SafetensorsError, load_file, path)
    assert word in message and message.startswith(str(path))
    assert word in one_line(SafetensorsError, read_header, path)             # the header alone tells


@pytest.mark.parametrize("length, word", [(10 ** 6, "has only"), (MAX_HEADER_BYTES + 1, "implausible"),
                                          (2 ** 64 - 1, "implausible")])
def test_header_length_past_the_file_is_truncation(tmp_path, length, word):
    path = write_raw(tmp_path / "t.safetensors", {"a": f32([2], [0, 8])}, b"\0" * 8, length=length)
    assert word in one_line(SafetensorsError, load_file, path)


def test_messages_quote_huge_names_and_values_briefly(tmp_path):
    name = "x" * 100_000
    path = write_raw(tmp_path / "t.safetensors", {name: {"dtype": "Q" * 100_000, "shape": [2], "data_offsets": [0, 8]}},
                     b"\0" * 8)
    message = one_line(SafetensorsError, load_file, path)
    assert "xxxx..." in message and "QQQQ..." in message
    path = write_raw(path, {"w": f32(list(range(1000)), [0, 8])}, b"\0" * 8)
    assert "..." in one_line(SafetensorsError, load_file, path)


def test_empty_and_zero_size_tensors_still_load(tmp_path):
    path = write_raw(tmp_path / "t.safetensors", {"e": f32([0, 3], [0, 0]), "__metadata__": None})
    assert load_file(path)["e"].shape == (0, 3)
    assert load_file(write_raw(path, {}, b"")) == {}


# ----------------------------------------------------------------------------- safetensors, fuzzed

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=10)
COUNTS = st.integers(-2, 40) | st.sampled_from([2 ** 31, 2 ** 62, 2 ** 63, 2 ** 64 - 1]) | JSON_SCALARS


@st.composite
def headers(draw):
    """-> (header, data): up to four consistent entries (their offsets tiling the data), the
    fields of up to two of them replaced by random JSON, plus random keys (__metadata__ among
    them); the data is usually of the size the entries need."""
    header, offset = {}, 0
    for i in range(draw(st.integers(0, 4))):
        dtype = draw(st.sampled_from(sorted(DTYPES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = math.prod(shape) * DTYPES[dtype].itemsize
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    for i in draw(st.lists(st.integers(0, 3), max_size=2)):
        if f"t{i}" in header:
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))
            header[f"t{i}"][field] = draw(st.lists(COUNTS, max_size=3) | JSON_VALUES)
    extra = draw(st.dictionaries(st.text(max_size=6) | st.just("__metadata__"),
                                 JSON_VALUES | st.dictionaries(st.text(max_size=4), st.text(max_size=4)), max_size=2))
    header.update(extra)
    data = draw(st.binary(min_size=offset, max_size=offset) | st.binary(max_size=64))
    return header, data


def check_reader(path):
    """load_file(path) returns what read_header describes, or raises a one-line
    SafetensorsError naming the file; Python-tracked memory stays within a small multiple of
    the file's size (the memory map itself is not counted: it is the file)."""
    size = os.path.getsize(path)
    with Peak() as peak:
        try:
            arrays = load_file(path)
        except SafetensorsError as e:
            message = str(e)
            event("SafetensorsError")
            assert "\n" not in message and len(message) < MAX_MESSAGE and message.startswith(str(path)), message
        else:
            event("loads")
            header, _, _ = read_header(path)
            assert set(arrays) == set(header)
            for name, array in arrays.items():
                assert array.shape == tuple(header[name]["shape"])
    assert peak.bytes < 2**20 + 64 * size, (peak.bytes, size)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(headers(), st.none() | st.integers(0, 2 ** 64 - 1))
def test_fuzz_random_headers(scratch, header_data, length):
    header, data = header_data
    check_reader(write_raw(scratch / "random.safetensors", json.dumps(header).encode(), data, length))


BYTES = st.sampled_from(b"0123456789-.e") | st.integers(0, 255)    # a digit keeps JSON valid, changes a number
VALID = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "h": np.ones(5, np.float16),
         "e": np.zeros((0, 3), np.float32), "i": np.arange(3, dtype=np.int64), "b": np.array([True, False])}


@FUZZ
@given(st.data())
def test_fuzz_byte_flips_and_truncations(scratch, data):
    path = scratch / "flipped.safetensors"
    save_file(VALID, path, metadata={"format": "pt"})
    raw = bytearray(path.read_bytes())
    header_end = 8 + struct.unpack("<Q", raw[:8])[0]
    where = st.integers(0, header_end - 1) | st.integers(0, len(raw) - 1)   # mostly the header
    for position, value in data.draw(st.lists(st.tuples(where, BYTES), min_size=1, max_size=4)):
        raw[position] = value
    cut = data.draw(st.none() | st.integers(0, len(raw)))
    path.write_bytes(bytes(raw[:cut]))
    check_reader(path)


# ----------------------------------------------------------------------------- Hugging Face config.json


@pytest.fixture
def hf_dir(tmp_path):
    """A small exported model (2 layers, width 32, vocabulary 100, context 16)."""
    export_hf(small_model(), tmp_path / "hf")
    return tmp_path / "hf"


def edit_config(hf_dir, **changes):
    path = hf_dir / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))          # NaN and inf as Python's json spells them


@pytest.mark.parametrize("changes, word", [
    ({"n_layer": 2.0}, "n_layer is 2.0, not an integer"),
    ({"n_layer": True}, "n_layer is True, not an integer"),
    ({"n_embd": "32"}, "n_embd is '32', not an integer"),
    ({"n_head": None}, "n_head is None, not an integer"),
    ({"n_positions": -16}, "n_positions is -16; it must be from 1"),
    ({"vocab_size": 0}, "vocab_size is 0; it must be from 1"),
    ({"n_embd": MAX_SIZE + 1}, "must be from 1 to 2,147,483,647"),
    ({"n_layer": 10 ** 30}, "integer of 31 digits"),
    ({"n_layer": float("nan")}, "NaN is not a JSON number"),
    ({"resid_pdrop": float("inf")}, "Infinity is not a JSON number"),
    ({"resid_pdrop": "0.1"}, "resid_pdrop is '0.1', not a number"),
    ({"n_head": 3}, "divisible"),
    ({"model_type": "x" * 10 ** 5}, "model_type is 'xxx"),
    ({"layer_norm_epsilon": [1e-5] * 10 ** 5}, "layer_norm_epsilon"),
])
def test_bad_config_sizes_give_one_line(hf_dir, changes, word):
    edit_config(hf_dir, **changes)
    assert word in one_line(HFFormatError, read_hf_config, hf_dir)
    assert word in one_line(HFFormatError, load_hf_gpt2, hf_dir, CPU)


@pytest.mark.parametrize("text, word", ids=["duplicate", "inf", "deep"], argvalues=[
    ('{"model_type": "gpt2", "n_layer": 2, "n_layer": 3}', "'n_layer' appears twice"),
    ('{"model_type": "gpt2", "resid_pdrop": 1e400}', "'1e400' is not a finite number"),
    ('{"model_type": "gpt2", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
])
def test_crafted_config_json(hf_dir, text, word):
    (hf_dir / "config.json").write_text(text)
    assert word in one_line(HFFormatError, read_hf_config, hf_dir)


def test_a_huge_config_is_refused_from_the_headers_alone(hf_dir):
    """A few hundred bytes claiming 10**9 layers (or a width of 10**9) fail before any model is
    built: n_layer alone would mean 12 * 10**9 tensors and 10**19 floats."""
    for changes, word in [({"n_layer": 10 ** 9}, "n_layer 1000000000, but the weights hold 2 layers"),
                          ({"n_embd": 10 ** 9 - 1, "n_head": 1}, "shape"),
                          ({"vocab_size": MAX_SIZE}, "wte.weight has shape")]:
        export_hf(small_model(), hf_dir)
        edit_config(hf_dir, **changes)
        assert os.path.getsize(hf_dir / "config.json") < 1000
        start = time.perf_counter()
        with Peak() as peak:
            assert word in one_line(HFFormatError, load_hf_gpt2, hf_dir, CPU)
        assert time.perf_counter() - start < 1.0 and peak.bytes < 2**20


# ----------------------------------------------------------------------------- weights against the config


def rewrite_weights(hf_dir, change):
    path = hf_dir / WEIGHTS_NAME
    state = {name: np.array(value) for name, value in load_file(path).items()}
    change(state)
    save_file(state, path)


@pytest.mark.parametrize("change, word", [
    (lambda s: s.update({"h.0.ln_1.weight": s[PREFIX + "h.0.ln_1.weight"]}), "stored twice"),
    (lambda s: s.update({"lm_head.weight": np.zeros((100, 16), np.float32)}), "lm_head.weight has shape [100, 16]"),
    (lambda s: s[PREFIX + "h.1.ln_2.bias"].__setitem__(3, np.nan), "h.1.ln_2.bias' holds NaN"),
    (lambda s: s[PREFIX + "wpe.weight"].__setitem__((0, 0), np.inf), "wpe.weight' holds NaN or infinite"),
    (lambda s: s.update({PREFIX + "ln_f.bias": np.zeros(32, np.int32)}), "expected floating point"),
])
def test_weights_that_do_not_fit_give_one_line(hf_dir, change, word):
    rewrite_weights(hf_dir, change)
    assert word in one_line(HFFormatError, load_hf_gpt2, hf_dir, CPU)


# ----------------------------------------------------------------------------- shard indexes and links


def shard(hf_dir, index=None):
    """Split the directory's weights into two shards with an index (default: the right one,
    else `index(weight_map)` -> the index to write)."""
    state = load_file(hf_dir / WEIGHTS_NAME)
    (hf_dir / WEIGHTS_NAME).unlink()
    names = sorted(state)
    parts = {"model-1.safetensors": names[: len(names) // 2], "model-2.safetensors": names[len(names) // 2:]}
    for file, part in parts.items():
        save_file({n: np.array(state[n]) for n in part}, hf_dir / file)
    weight_map = {n: file for file, part in parts.items() for n in part}
    (hf_dir / WEIGHTS_INDEX_NAME).write_text(json.dumps(index(weight_map) if index else {"weight_map": weight_map}))


def test_sharded_directory_loads(hf_dir):
    expected = load_hf_gpt2(hf_dir, CPU).params
    shard(hf_dir)
    np.testing.assert_array_equal(load_hf_gpt2(hf_dir, CPU).params, expected)


def moved(weight_map, shard_name):
    """Every tensor of model-2 placed in `shard_name` instead."""
    return {"weight_map": {n: shard_name if f == "model-2.safetensors" else f for n, f in weight_map.items()}}


@pytest.mark.parametrize("index, word", [
    (lambda m: moved(m, "/etc/passwd"), "'/etc/passwd' is not a file name"),
    (lambda m: moved(m, "../outside.safetensors"), "is not a file name"),
    (lambda m: moved(m, "sub/model-2.safetensors"), "is not a file name"),
    (lambda m: moved(m, ".."), "is not a file name"),
    (lambda m: moved(m, "model-2.safetensors\0"), "is not a file name"),
    (lambda m: moved(m, "model-3.safetensors"), "'model-3.safetensors' is not a file in"),
    (lambda m: moved(m, "model-1.safetensors"), "disagree"),                 # model-2's tensors said to be in 1
    (lambda m: {"weight_map": {**m, "extra": "model-1.safetensors"}}, "places 'extra' in that shard"),
    (lambda m: {"weight_map": {n: f for n, f in m.items() if not n.endswith("ln_f.bias")}}, "does not place"),
    (lambda m: {"weight_map": list(m)}, "weight_map"),
    (lambda m: {"weight_map": {n: 1 for n in m}}, "weight_map"),
    (lambda m: {"weight_map": {}}, "weight_map"),
    (lambda m: m, "weight_map"),                                               # no "weight_map" key
    (lambda m: [m], "weight_map"),
])
def test_bad_shard_indexes_give_one_line(hf_dir, index, word):
    shard(hf_dir, index)
    assert word in one_line(HFFormatError, load_hf_gpt2, hf_dir, CPU)


SECRET = "not-to-be-shown 1234"


@pytest.fixture
def outside(tmp_path):
    """Files outside the model directory that a crafted one may try to reach."""
    (tmp_path / "secret.json").write_text(json.dumps({"model_type": SECRET, "n_layer": SECRET}))
    save_file({"x": np.ones(3, np.float32)}, tmp_path / "other.safetensors", metadata={"note": SECRET})
    return tmp_path


@pytest.mark.parametrize("link, target, sharded", [
    ("config.json", "secret.json", False), (WEIGHTS_NAME, "other.safetensors", False),
    (WEIGHTS_INDEX_NAME, "secret.json", True), ("model-2.safetensors", "other.safetensors", True),
])
def test_links_out_of_the_directory_are_refused(hf_dir, outside, link, target, sharded):
    if sharded:
        shard(hf_dir)
    (hf_dir / link).unlink()
    os.symlink(outside / target, hf_dir / link)
    message = one_line(HFFormatError, load_hf_gpt2, hf_dir, CPU)
    assert "outside" in message and "refusing" in message and SECRET not in message


def test_links_inside_the_directory_and_the_hub_cache_layout_load(tmp_path, hf_dir):
    expected = load_hf_gpt2(hf_dir, CPU).params
    (hf_dir / "weights").mkdir()
    (hf_dir / WEIGHTS_NAME).rename(hf_dir / "weights" / "w.safetensors")
    os.symlink(os.path.join("weights", "w.safetensors"), hf_dir / WEIGHTS_NAME)
    np.testing.assert_array_equal(load_hf_gpt2(hf_dir, CPU).params, expected)
    # The Hugging Face cache: models--org--name/snapshots/REVISION/* link to ../../blobs/HASH.
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    for name, blob in (("config.json", "1f2e"), (WEIGHTS_NAME, "3d4c")):
        shutil.copyfile(hf_dir / name, repo / "blobs" / blob)
        os.symlink(os.path.join("..", "..", "blobs", blob), repo / "snapshots" / "abc123" / name)
    np.testing.assert_array_equal(load_hf_gpt2(repo / "snapshots" / "abc123", CPU).params, expected)


# ----------------------------------------------------------------------------- Hugging Face directory, fuzzed


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The bytes of a small exported model's config.json and model.safetensors."""
    hf = tmp_path_factory.mktemp("pristine")
    export_hf(small_model(), hf)
    return (hf / "config.json").read_bytes(), (hf / WEIGHTS_NAME).read_bytes()


CONFIG_FIELDS = ["model_type", "n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "n_inner",
                 "resid_pdrop", "layer_norm_epsilon", "activation_function", "tie_word_embeddings"]


@FUZZ
@given(st.data())
def test_fuzz_hf_directory(pristine, scratch, data):
    """Random field values and byte flips in config.json, byte flips and truncation in
    model.safetensors: a loaded model or one HFFormatError line, within bounded memory."""
    config, weights = bytearray(pristine[0]), bytearray(pristine[1])
    changes = data.draw(st.dictionaries(st.sampled_from(CONFIG_FIELDS), JSON_VALUES | COUNTS, max_size=2))
    config = bytearray(json.dumps({**json.loads(config), **changes}).encode())
    header_end = 8 + struct.unpack("<Q", weights[:8])[0]
    for blob, where in ((config, st.integers(0, len(config) - 1)),
                        (weights, st.integers(0, header_end - 1) | st.integers(0, len(weights) - 1))):
        for position, value in data.draw(st.lists(st.tuples(where, BYTES), max_size=3)):
            blob[position] = value
    weights = weights[:data.draw(st.none() | st.integers(0, len(weights)))]
    hf = scratch / "hf"
    hf.mkdir(exist_ok=True)
    (hf / "config.json").write_bytes(bytes(config))
    (hf / WEIGHTS_NAME).write_bytes(bytes(weights))
    with Peak() as peak:
        try:
            assert isinstance(load_hf_gpt2(hf, CPU), GPT)
            event("loads")
        except HFFormatError as e:
            event("HFFormatError")
            assert "\n" not in str(e) and len(str(e)) < MAX_MESSAGE, str(e)
    assert peak.bytes < 2**20 + 16 * len(pristine[1]), peak.bytes


# ----------------------------------------------------------------------------- the tokenizer of a directory


@pytest.mark.parametrize("text, word", ids=["out-of-range", "bool", "deep", "huge-int"], argvalues=[
    ("[0, 5, 99999999]", "has only"), ("[true, 5]", "sorted list"), ("[" * 100000, "nested too deeply"),
    ("[0, " + "9" * 30 + "]", "digits"),
])
def test_a_crafted_local_vocab_json_is_one_line(hf_dir, text, word):
    from gpt.files.loading import load_model, open_backend
    (hf_dir / "local_vocab.json").write_text(text)
    message = one_line(HFFormatError, load_model, open_backend("cpu"), None, str(hf_dir))
    assert word in message


def test_a_tokenizer_file_linked_from_outside_is_refused(hf_dir, outside):
    from gpt.files.loading import hf_tokenizer_meta
    os.symlink(outside / "secret.json", hf_dir / "local_vocab.json")
    message = one_line(HFFormatError, hf_tokenizer_meta, str(hf_dir), 100)
    assert "outside" in message and SECRET not in message
