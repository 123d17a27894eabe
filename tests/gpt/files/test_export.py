"""Hugging Face GPT-2 export and import, and the hand-written safetensors reader/writer.

The transformers comparisons run where `torch` and `transformers` are installed (see
requirements-dev.txt) and are skipped with the reason otherwise."""
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from models import CPU, small_model

from bpe import ByteTokenizer, GPT2Tokenizer
from gpt.config import GPTConfig
from gpt.data.tokenizers import LocalVocab
from gpt.files.checkpoint import save_checkpoint
from gpt.files.hf import PREFIX, WEIGHTS_NAME, HFFormatError, export_hf, load_hf_gpt2, read_hf_config, read_hf_weights
from gpt.files.safetensors import SafetensorsError, load_file, read_header, save_file
from minigrad import AdamW

ROOT = Path(__file__).resolve().parents[3]
def trained_model(steps=5):
    """A model that took a few AdamW steps on random data, so no parameter is at its init value."""
    model = small_model(vocab_size=100, seed=1)
    opt = AdamW(model.params, model.grads, model.decay_mask(), betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = rng.integers(0, 100, (4, 16))
        model.zero_grad()
        model.forward(x, np.roll(x, -1, axis=1))
        model.backward()
        opt.step(3e-3)
    return model


# ----------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip_keeps_dtypes_shapes_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"w": rng.normal(size=(3, 5)).astype(np.float32), "h": rng.normal(size=7).astype(np.float16),
               "d": rng.normal(size=(2, 2, 2)), "i": np.arange(4, dtype=np.int64), "b": np.array([True, False]),
               "empty": np.zeros((0, 3), np.float32), "scalar": np.array(2.5, np.float32)}
    path = tmp_path / "t.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    header, metadata, start = read_header(path)
    assert metadata == {"format": "pt"} and start % 8 == 0
    assert header["w"] == {"dtype": "F32", "shape": [3, 5], "data_offsets": [0, 60]}
    back = load_file(path)
    assert back.keys() == tensors.keys()
    for name, array in tensors.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)


def test_bf16_is_widened_to_float32_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 1e-3], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")              # truncate to bfloat16
    header = json.dumps({"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bits.tobytes())
    out = load_file(path)["x"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, (bits.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_allclose(out, values, rtol=1e-2)


def test_matches_the_reference_safetensors_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package is not installed")
    tensors = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.float16)}
    save_file(tensors, tmp_path / "ours.safetensors")
    st.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"format": "pt"})
    for name, a in st.load_file(str(tmp_path / "ours.safetensors")).items():
        np.testing.assert_array_equal(a, tensors[name])
    for name, a in load_file(tmp_path / "theirs.safetensors").items():
        np.testing.assert_array_equal(a, tensors[name])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "short", "bad_offsets"])
def test_malformed_safetensors_raise(tmp_path, damage):
    path = tmp_path / "t.safetensors"
    save_file({"w": np.ones((4, 4), np.float32)}, path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-10])
    elif damage == "garbage":
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"not json at all!" + data)
    elif damage == "short":
        path.write_bytes(data[:5])
    else:
        path.write_bytes(data.replace(b"[0,64]", b"[0,60]"))
    with pytest.raises(SafetensorsError):
        load_file(path)


# ----------------------------------------------------------------------------- export / import


def test_export_then_import_is_bit_identical(tmp_path):
    model = trained_model()
    export_hf(model, tmp_path, GPT2Tokenizer.default())
    back = load_hf_gpt2(tmp_path, CPU)
    assert back.config == model.config
    np.testing.assert_array_equal(back.params, model.params)         # padding rows included (zero)
    assert load_hf_gpt2(tmp_path, CPU, dropout=0.2).config == model.config.replace(dropout=0.2)


def test_exported_files(tmp_path):
    model = small_model(vocab_size=50257)
    export_hf(model, tmp_path, GPT2Tokenizer.default())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert (config["n_layer"], config["n_head"], config["n_embd"]) == (2, 2, 32)
    assert config["n_positions"] == config["n_ctx"] == 16 and config["vocab_size"] == 50257
    assert config["activation_function"] == "gelu_new" and config["layer_norm_epsilon"] == 1e-5
    assert config["tie_word_embeddings"] is True and config["bos_token_id"] == config["eos_token_id"] == 50256
    header, metadata, _ = read_header(tmp_path / WEIGHTS_NAME)
    assert metadata == {"format": "pt"}
    assert header[PREFIX + "wte.weight"] == {**header[PREFIX + "wte.weight"], "dtype": "F32", "shape": [50257, 32]}
    assert "lm_head.weight" not in header
    assert set(header) == {PREFIX + name for name in model.p}
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / name).read_bytes() == (ROOT / "bpe" / "assets" / "gpt2" / name).read_bytes()


def test_byte_level_export_says_how_to_tokenize(tmp_path):
    export_hf(small_model(vocab_size=256), tmp_path, ByteTokenizer())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["vocab_size"] == 256 and "eos_token_id" not in config
    assert "UTF-8 bytes" in (tmp_path / "README.txt").read_text()
    assert not (tmp_path / "vocab.json").exists()


def test_local_vocab_export_writes_the_id_map(tmp_path):
    to_base = [10, 200, 3000, 50256]
    export_hf(small_model(vocab_size=4), tmp_path, LocalVocab(GPT2Tokenizer.default(), to_base))
    assert json.loads((tmp_path / "local_vocab.json").read_text()) == to_base
    assert not (tmp_path / "vocab.json").exists()


def test_reads_un_prefixed_f16_checkpoints_with_mask_buffers(tmp_path):
    """The hub's original gpt2 files: GPT2Model names, attention-mask buffers, half precision."""
    model = trained_model()
    export_hf(model, tmp_path)
    tensors = {name: value.astype(np.float16) for name, value in model.state_dict().items()}
    tensors["h.0.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), np.float16))
    tensors["h.0.attn.masked_bias"] = np.array(-1e4, np.float16)
    tensors["lm_head.weight"] = tensors["wte.weight"]
    save_file(tensors, tmp_path / WEIGHTS_NAME)
    back = load_hf_gpt2(tmp_path, CPU)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], value.astype(np.float16).astype(np.float32))


def test_reads_sharded_checkpoints(tmp_path):
    model = trained_model()
    export_hf(model, tmp_path)
    state = read_hf_weights(tmp_path)
    (tmp_path / WEIGHTS_NAME).unlink()
    names = sorted(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, part in shards.items():
        save_file({PREFIX + n: state[n] for n in part}, tmp_path / shard)
    index = {"weight_map": {PREFIX + n: shard for shard, part in shards.items() for n in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    np.testing.assert_array_equal(load_hf_gpt2(tmp_path, CPU).params, model.params)


def _break(tmp_path, what):
    """An exported directory, then damaged in one way."""
    export_hf(small_model(), tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    if what == "no config":
        config_path.unlink()
    elif what == "bad json":
        config_path.write_text("{not json")
    elif what == "no weights":
        (tmp_path / WEIGHTS_NAME).unlink()
    elif what == "pickle only":
        (tmp_path / WEIGHTS_NAME).rename(tmp_path / "pytorch_model.bin")
    elif what in ("llama", "relu", "eps", "untied config", "n_inner"):
        field, value = {"llama": ("model_type", "llama"), "relu": ("activation_function", "relu"),
                        "eps": ("layer_norm_epsilon", 1e-6), "untied config": ("tie_word_embeddings", False),
                        "n_inner": ("n_inner", 100)}[what]
        config[field] = value
        config_path.write_text(json.dumps(config))
    elif what == "wrong size":
        config["n_embd"], config["n_head"] = 64, 4
        config_path.write_text(json.dumps(config))
    elif what == "wrong vocab":
        config["vocab_size"] = 99
        config_path.write_text(json.dumps(config))
    else:
        state = load_file(tmp_path / WEIGHTS_NAME)
        if what == "missing tensor":
            state.pop(PREFIX + "h.1.mlp.c_fc.bias")
        elif what == "extra tensor":
            state[PREFIX + "h.2.ln_1.weight"] = np.ones(32, np.float32)
        elif what == "untied head":
            state["lm_head.weight"] = state[PREFIX + "wte.weight"] + 1
        elif what == "int weights":
            state[PREFIX + "ln_f.bias"] = np.zeros(32, np.int32)
        save_file(dict(state), tmp_path / "new.safetensors")
        (tmp_path / "new.safetensors").replace(tmp_path / WEIGHTS_NAME)


@pytest.mark.parametrize("what, message", [
    ("no config", "no config.json"), ("bad json", "JSON"), ("no weights", "no model.safetensors"),
    ("pickle only", "pytorch_model.bin"), ("llama", "model_type is 'llama'"), ("relu", "activation_function"),
    ("eps", "layer_norm_epsilon"), ("untied config", "tie_word_embeddings"), ("n_inner", "n_inner"),
    ("wrong size", "shape"), ("wrong vocab", "wte.weight has shape"), ("missing tensor", "missing 'h.1.mlp.c_fc.bias'"),
    ("extra tensor", "unexpected tensor 'h.2.ln_1.weight'"), ("untied head", "lm_head.weight differs"),
    ("int weights", "floating point"),
])
def test_bad_hf_directories_raise_a_clear_error(tmp_path, what, message):
    _break(tmp_path, what)
    with pytest.raises(HFFormatError, match=message) as info:
        load_hf_gpt2(tmp_path, CPU)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_read_hf_config_fills_gpt2_defaults(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert read_hf_config(tmp_path) == GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024,
                                                 vocab_size=50257, dropout=0.1)


def test_export_cli(tmp_path):
    model = small_model(vocab_size=256)
    meta = {"step": 0, "config": model.config.to_dict(), "options": {"tokenizer": "byte"}, "tokenizer": "byte-256"}
    zeros = np.zeros_like(model.params)
    save_checkpoint(str(tmp_path / "ckpt.npz"), model.params, zeros, zeros, meta)
    run = subprocess.run([sys.executable, "-m", "gpt.export", "--out-dir", str(tmp_path),
                          "--hf-dir", str(tmp_path / "hf")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(load_hf_gpt2(tmp_path / "hf", CPU).params, model.params)
    run = subprocess.run([sys.executable, "-m", "gpt.export", "--out-dir", str(tmp_path / "none"),
                          "--hf-dir", str(tmp_path / "x")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.startswith("error: no checkpoint") and "Traceback" not in run.stderr


# ----------------------------------------------------------------------------- against transformers


@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -r requirements-dev.txt)",
                                exc_type=ImportError)
    transformers = pytest.importorskip("transformers",
                                       reason="transformers is not installed (pip install -r requirements-dev.txt)",
                                       exc_type=ImportError)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return torch, transformers


def hf_logits(hf, hf_dir, idx):
    torch, transformers = hf
    model = transformers.GPT2LMHeadModel.from_pretrained(hf_dir)
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(idx)).logits.numpy()


@pytest.mark.parametrize("which", ["random init, GPT-2 vocabulary", "trained a few steps"])
def test_transformers_gives_our_logits(hf, tmp_path, which):
    model = small_model(vocab_size=50257) if which.startswith("random") else trained_model()
    export_hf(model, tmp_path, GPT2Tokenizer.default() if which.startswith("random") else None)
    V = model.config.vocab_size
    idx = np.random.default_rng(0).integers(0, V, (2, 16))
    ours, _ = model.forward(idx)
    ours = ours[..., :V]                                   # (2, 16, V)
    theirs = hf_logits(hf, str(tmp_path), idx)
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() < 1e-5 * max(1.0, np.abs(ours).max())


def test_transformers_checkpoint_loads_into_our_model(hf, tmp_path):
    """The other direction: a GPT2LMHeadModel saved by transformers itself."""
    torch, transformers = hf
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=24, vocab_size=77,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    transformers.GPT2LMHeadModel(config).save_pretrained(str(tmp_path))
    model = load_hf_gpt2(tmp_path, CPU)
    assert model.config == GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=24, vocab_size=77, dropout=0.0)
    idx = np.random.default_rng(1).integers(0, 77, (2, 24))
    ours = model.forward(idx)[0][..., :77]
    theirs = hf_logits(hf, str(tmp_path), idx)
    assert np.abs(theirs - ours).max() < 1e-5 * max(1.0, np.abs(ours).max())


def test_transformers_tokenizer_loads_the_exported_files(hf, tmp_path):
    _, transformers = hf
    export_hf(small_model(vocab_size=50257), tmp_path, GPT2Tokenizer.default())
    theirs = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path))
    text = "Hello world, it's 2024!\n  Ünïcödé 😀<|endoftext|>"
    ours = GPT2Tokenizer.default().encode(text, allowed_special="all")
    assert theirs.encode(text) == ours and theirs.eos_token_id == 50256
    assert theirs.model_max_length == 16
