"""Hugging Face GPT-2 format, out and in (the export command is gpt/export.py).

export_hf(model, DIR) writes a directory that `transformers.GPT2LMHeadModel.from_pretrained(DIR)`
loads:

    config.json         a GPT2Config (model_type "gpt2", n_layer, n_head, n_embd, n_positions, ...)
    model.safetensors   float32 weights named as GPT2LMHeadModel saves them: "transformer.wte.weight",
                        "transformer.h.0.attn.c_attn.weight", ... (no "lm_head.weight": the head is
                        tied to wte, and transformers re-ties it on load)
    vocab.json, merges.txt, tokenizer_config.json
                        for a model trained with the GPT-2 tokenizer, so GPT2TokenizerFast loads too
    README.txt          for a byte-level model: the tokenizer is raw UTF-8 bytes (id = byte value)

Our parameter names and layouts *are* GPT-2's (including Conv1D's (in, out) weights used as
x @ W + b), so both directions are copies: add or strip the "transformer." prefix, drop or
restore the vocabulary padding rows of wte.

`load_hf_gpt2(dir, backend)` reads such a directory back (ours, or a real GPT-2 checkpoint from
the Hugging Face hub, whose tensors are un-prefixed and may be F16/BF16) into a GPT.
"""
import json
import os
import shutil
from typing import NamedTuple

import numpy as np

from bpe import ByteTokenizer
from bpe.gpt2 import ASSETS

from ..config import GPTConfig
from ..data.tokenizers import LocalVocab
from ..errors import HFFormatError
from ..model import GPT, parameter_shapes
from .safetensors import SafetensorsError, load_file, read_header, save_file
from .untrusted import MAX_SIZE, short_repr, strict_json

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"      # a checkpoint split into shards
PREFIX = "transformer."                                   # GPT2LMHeadModel's name for the GPT2Model inside
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh")             # transformers' names for GELU's tanh form
LOCAL_VOCAB_NAME = "local_vocab.json"                     # see export_hf


# ----------------------------------------------------------------------------- export


def hf_config(cfg: GPTConfig, eot_token=None):
    """GPTConfig -> the dict of a transformers GPT2Config (config.json)."""
    out = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_embd": cfg.n_embd,
        "n_inner": None,                       # None means 4 * n_embd
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,               # older transformers versions read this name
        "vocab_size": cfg.vocab_size,          # the real vocabulary; our padding is dropped
        "activation_function": "gelu_new",     # GELU, tanh approximation
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    if eot_token is not None:
        out.update(bos_token_id=eot_token, eos_token_id=eot_token)
    return out


def export_hf(model, hf_dir, tokenizer=None, bpe_files=None):
    """Write `model` as a Hugging Face GPT-2 directory (see the module docstring).

    tokenizer: the model's tokenizer, deciding what else goes into hf_dir:
      a BPE tokenizer (GPT2Tokenizer)  its vocab.json + merges.txt (bpe_files = (vocab path,
                                       merges path), default GPT-2's bundled files) and
                                       tokenizer_config.json; bos/eos = its end-of-text id
      ByteTokenizer                    README.txt: ids are UTF-8 byte values
      LocalVocab (projected BPE)       local_vocab.json (model id -> GPT-2 id) and a README.txt;
                                       no tokenizer files, since the ids are not the BPE's
      None                             config and weights only
    """
    cfg = model.config
    os.makedirs(hf_dir, exist_ok=True)
    is_bpe = tokenizer is not None and not isinstance(tokenizer, (ByteTokenizer, LocalVocab))
    with open(os.path.join(hf_dir, "config.json"), "w") as f:
        json.dump(hf_config(cfg, tokenizer.eot_token if is_bpe else None), f, indent=2)
    tensors = {PREFIX + name: np.asarray(value, dtype=np.float32) for name, value in model.state_dict().items()}
    save_file(tensors, os.path.join(hf_dir, WEIGHTS_NAME), metadata={"format": "pt"})
    if is_bpe:
        _write_bpe_tokenizer(hf_dir, bpe_files, cfg.block_size)
    elif isinstance(tokenizer, ByteTokenizer):
        _write_readme(hf_dir, "The tokenizer is raw UTF-8 bytes: token id = byte value (0..255).\n"
                              "Encode: list(text.encode('utf-8')); decode: bytes(ids).decode('utf-8', 'replace').\n"
                              "There is no end-of-text token.\n")
    elif isinstance(tokenizer, LocalVocab):
        with open(os.path.join(hf_dir, LOCAL_VOCAB_NAME), "w") as f:
            json.dump(tokenizer.to_base.tolist(), f)
        _write_readme(hf_dir, f"This model was trained on a projected GPT-2 vocabulary of {tokenizer.vocab_size} ids.\n"
                              f"{LOCAL_VOCAB_NAME} maps each model id (its index) to a GPT-2 token id: encode\n"
                              "with the GPT-2 tokenizer and map GPT-2 ids to model ids; decode by mapping model\n"
                              "ids back through the list and decoding with the GPT-2 tokenizer.\n")


def _write_bpe_tokenizer(hf_dir, bpe_files, max_length):
    """Copy the BPE files under Hugging Face's names (OpenAI's encoder.json / vocab.bpe have
    the same formats as vocab.json / merges.txt) and say how GPT2Tokenizer should use them."""
    vocab, merges = bpe_files or (ASSETS / "vocab.json", ASSETS / "merges.txt")
    shutil.copyfile(vocab, os.path.join(hf_dir, "vocab.json"))
    shutil.copyfile(merges, os.path.join(hf_dir, "merges.txt"))
    eot = "<|endoftext|>"
    with open(os.path.join(hf_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GPT2Tokenizer", "model_max_length": max_length, "add_prefix_space": False,
                   "bos_token": eot, "eos_token": eot, "unk_token": eot}, f, indent=2)


def _write_readme(hf_dir, text):
    with open(os.path.join(hf_dir, "README.txt"), "w") as f:
        f.write("A GPT-2 model exported by this project (load it with transformers.GPT2LMHeadModel).\n\n" + text)


# ----------------------------------------------------------------------------- import


# Every file of the directory is untrusted, and the work is ordered so that it stays bounded by
# the files' sizes: config.json is checked field by field, then the safetensors headers are read
# (no tensor data), then the config is held against the headers' names and shapes; only then is
# the model allocated (n_layer x 12 n_embd^2 floats: the config alone must never decide that).

SIZE_FIELDS = {                   # GPTConfig field: (config.json name, GPT2Config default)
    "n_layer": ("n_layer", 12), "n_head": ("n_head", 12), "n_embd": ("n_embd", 768),
    "block_size": ("n_positions", 1024), "vocab_size": ("vocab_size", 50257),
}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


class HFTensor(NamedTuple):
    """A tensor as a safetensors header describes it, before any of its data is read."""
    path: str                     # the file holding it
    stored: str                   # its name in that file ("transformer.h.0.ln_1.weight" or "h.0.ln_1.weight")
    dtype: str                    # a safetensors dtype name
    shape: tuple


def read_hf_config(hf_dir) -> GPTConfig:
    """hf_dir/config.json (a transformers GPT2Config) -> GPTConfig.

    Missing fields take GPT2Config's defaults, as transformers does. Raises HFFormatError when
    the file is absent or unreadable, when a size is not an integer from 1 to MAX_SIZE, or when
    it describes a model that is not exactly our GPT-2 (another architecture, another
    activation or LayerNorm epsilon, untied head, ...)."""
    path = file_in_dir(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise HFFormatError(f"{hf_dir}: no config.json; expected a Hugging Face GPT-2 directory "
                            f"(config.json + {WEIGHTS_NAME})")
    hf = read_json_file(path)
    if not isinstance(hf, dict) or hf.get("model_type") != "gpt2":
        kind = hf.get("model_type") if isinstance(hf, dict) else None
        raise HFFormatError(f"{path}: model_type is {short_repr(kind)}, not 'gpt2'; only GPT-2 models can be loaded")
    sizes = {field: _size(path, name, hf.get(name, default)) for field, (name, default) in SIZE_FIELDS.items()}
    required = {                       # field: (value this project's GPT-2 needs, GPT2Config default)
        "activation_function": (GELU_TANH, "gelu_new"),
        "layer_norm_epsilon": ((1e-5,), 1e-5),
        "n_inner": ((None, 4 * sizes["n_embd"]), None),
        "scale_attn_weights": ((True,), True),
        "scale_attn_by_inverse_layer_idx": ((False,), False),
        "add_cross_attention": ((False,), False),
        "tie_word_embeddings": ((True,), True),
    }
    for field, (allowed, default) in required.items():
        if hf.get(field, default) not in allowed:
            raise HFFormatError(f"{path}: {field} is {short_repr(hf[field])}; this project's GPT-2 needs "
                                f"{' or '.join(map(repr, allowed))}")
    dropout = hf.get("resid_pdrop", 0.1)
    if type(dropout) not in (int, float):
        raise HFFormatError(f"{path}: resid_pdrop is {short_repr(dropout)}, not a number")
    cfg = GPTConfig(**sizes, dropout=float(dropout))
    try:
        cfg.validate()
    except ValueError as e:
        raise HFFormatError(f"{path}: not a usable GPT-2 config ({e})") from None
    return cfg


def _size(path, name, value):
    """A size field of config.json: an int (not a bool, float or string) from 1 to MAX_SIZE."""
    if type(value) is not int:
        raise HFFormatError(f"{path}: {name} is {short_repr(value)}, not an integer")
    if not 1 <= value <= MAX_SIZE:
        raise HFFormatError(f"{path}: {name} is {short_repr(value)}; it must be from 1 to {MAX_SIZE:,}")
    return value


def read_json_file(path):
    try:
        with open(path, "rb") as f:
            return strict_json(f.read().decode("utf-8"))
    except OSError as e:
        raise HFFormatError(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:                              # UnicodeDecodeError, strict_json's errors
        raise HFFormatError(f"{path}: cannot read it as JSON ({e})") from None


def file_in_dir(hf_dir, name):
    """hf_dir/name, after checking that it does not lead out of hf_dir through a link. A snapshot
    of the Hugging Face cache (.../models--org--name/snapshots/REVISION) is made of links into
    .../models--org--name/blobs, so there the whole models--org--name folder counts."""
    root = os.path.realpath(hf_dir)
    if os.path.basename(os.path.dirname(root)) == "snapshots":
        root = os.path.dirname(os.path.dirname(root))
    path = os.path.join(hf_dir, name)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise HFFormatError(f"{path} is a link to a file outside {hf_dir}; refusing to read it")
    return path


def _weight_files(hf_dir):
    """{path: None} for model.safetensors, else {shard path: the stored tensor names the index
    places in it} from model.safetensors.index.json."""
    single = file_in_dir(hf_dir, WEIGHTS_NAME)
    if os.path.isfile(single):
        return {single: None}
    index = file_in_dir(hf_dir, WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        return _read_shard_index(hf_dir, index)
    pickled = [n for n in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")
               if os.path.isfile(os.path.join(hf_dir, n))]
    hint = (f"; it has only {pickled[0]}: re-save it with transformers' "
            "model.save_pretrained(dir, safe_serialization=True)") if pickled else ""
    raise HFFormatError(f"{hf_dir}: no {WEIGHTS_NAME}{hint}")


def _read_shard_index(hf_dir, index):
    """The index is {"weight_map": {tensor name: shard file name}, ...}; each shard must be a
    plain file name (no folder, no "..") of a file in hf_dir."""
    weight_map = read_json_file(index)
    weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
    if not (isinstance(weight_map, dict) and weight_map and all(isinstance(s, str) for s in weight_map.values())):
        raise HFFormatError(f"{index}: expected a JSON object with a non-empty \"weight_map\" from tensor names "
                            "to shard file names")
    shards = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, set()).add(name)
    files = {}
    for shard, names in shards.items():
        if shard in ("", ".", "..") or os.path.basename(shard) != shard or "\0" in shard:
            raise HFFormatError(f"{index}: shard {short_repr(shard)} is not a file name; shards must be "
                                f"files in {hf_dir} itself")
        path = file_in_dir(hf_dir, shard)
        if not os.path.isfile(path):
            raise HFFormatError(f"{index}: shard {short_repr(shard)} is not a file in {hf_dir}")
        files[path] = names
    return files


def read_hf_tensors(hf_dir):
    """{name as in our state dict: HFTensor} from the headers of model.safetensors (or its
    shards, each holding exactly the tensors the index places in it); no tensor data is read.

    Accepts GPT2LMHeadModel names ("transformer.h.0...") and GPT2Model names ("h.0..."), and
    skips the attention-mask buffers old checkpoints carry (".attn.bias" of 4 dims,
    ".attn.masked_bias")."""
    tensors = {}
    for path, listed in _weight_files(hf_dir).items():
        try:
            header, _, _ = read_header(path)
        except (SafetensorsError, OSError) as e:
            raise HFFormatError(str(e)) from None
        if listed is not None and set(header) != listed:
            stray = sorted(set(header) ^ listed)[0]
            raise HFFormatError(f"{os.path.join(hf_dir, WEIGHTS_INDEX_NAME)} and {path} disagree: the index "
                                f"{'does not place' if stray in header else 'places'} {short_repr(stray)} "
                                "in that shard")
        for stored, info in header.items():
            name = stored[len(PREFIX):] if stored.startswith(PREFIX) else stored
            if name.endswith(".attn.masked_bias") or (name.endswith(".attn.bias") and len(info["shape"]) == 4):
                continue                                       # causal-mask buffers, not parameters
            if name in tensors:
                raise HFFormatError(f"{hf_dir}: tensor {short_repr(name)} is stored twice, as "
                                    f"{short_repr(tensors[name].stored)} and {short_repr(stored)}")
            tensors[name] = HFTensor(path, stored, info["dtype"], tuple(info["shape"]))
    return tensors


def check_tensors(hf_dir, cfg, tensors):
    """Raise HFFormatError unless `tensors` (read_hf_tensors) are exactly the model `cfg`
    describes: the same names, the shapes cfg implies (wte without padding), floating point.
    A "lm_head.weight" must have wte's shape (read_hf_weights checks it repeats wte).

    The work is bounded by the header, not by cfg: n_layer is held against the layers present
    before the names it implies are listed."""
    layers = {name.split(".")[1] for name in tensors if name.startswith("h.")}
    if cfg.n_layer > len(layers):
        raise HFFormatError(f"{hf_dir}: config.json has n_layer {cfg.n_layer}, but the weights hold "
                            f"{len(layers)} layers")
    expected = dict(parameter_shapes(cfg))
    expected["wte.weight"] = (cfg.vocab_size, cfg.n_embd)                # the file has no padding
    head = tensors.get("lm_head.weight")
    if head is not None and head.shape != expected["wte.weight"]:
        raise HFFormatError(f"{hf_dir}: lm_head.weight has shape {list(head.shape)}, not wte.weight's "
                            f"{list(expected['wte.weight'])}; this project's GPT-2 ties the head to wte")
    missing = [n for n in expected if n not in tensors]
    unexpected = [n for n in tensors if n not in expected and n != "lm_head.weight"]
    if missing or unexpected:
        what = f"is missing {missing[0]!r}" if missing else f"has an unexpected tensor {short_repr(unexpected[0])}"
        raise HFFormatError(f"{hf_dir}: the weights do not match config.json: it {what} "
                            f"({len(missing)} missing, {len(unexpected)} unexpected)")
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise HFFormatError(f"{hf_dir}: {name} has shape {short_repr(list(tensors[name].shape))}, "
                                f"config.json implies {list(shape)}")
        if tensors[name].dtype not in FLOAT_DTYPES:
            raise HFFormatError(f"{hf_dir}: {name} is {tensors[name].dtype}, expected floating point "
                                f"({', '.join(FLOAT_DTYPES)})")


def read_hf_weights(hf_dir, tensors=None):
    """{name as in our state dict: host array} from model.safetensors (or its shards).

    tensors: read_hf_tensors(hf_dir), if already read. Every value must be finite, and a
    "lm_head.weight" must repeat wte (an untied head is an error); it is not returned."""
    tensors = read_hf_tensors(hf_dir) if tensors is None else tensors
    by_file = {}
    for name, tensor in tensors.items():
        by_file.setdefault(tensor.path, {})[tensor.stored] = name
    state = {}
    for path, names in by_file.items():
        try:
            arrays = load_file(path)
        except (SafetensorsError, OSError) as e:
            raise HFFormatError(str(e)) from None
        state.update((name, arrays[stored]) for stored, name in names.items())
    for name, value in state.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise HFFormatError(f"{hf_dir}: {short_repr(name)} holds NaN or infinite values; the file is corrupted")
    head = state.pop("lm_head.weight", None)
    if head is not None and "wte.weight" in state and not np.array_equal(head, state["wte.weight"]):
        raise HFFormatError(f"{hf_dir}: lm_head.weight differs from wte.weight; this project's GPT-2 "
                            "ties the output head to the token embedding")
    return state


def load_hf_gpt2(hf_dir, backend, dropout=None, ops=None, make_buffers=None) -> GPT:
    """A Hugging Face GPT-2 directory -> GPT on `backend`, weights converted to backend.dtype.

    dropout: overrides config.json's resid_pdrop (which is GPT-2's 0.1 for OpenAI's weights).
    ops: the model's kernels (minigrad.kernels; default the fast ones). make_buffers: config ->
    {"params", "grads"} zero buffers to build the model on (gpt.parallel.model_buffers).
    Raises HFFormatError (a ValueError) with a one-line reason when files are missing or do
    not describe exactly the model the config promises; that is known from config.json and the
    safetensors headers alone, before the model is allocated or any tensor data is read."""
    cfg = read_hf_config(hf_dir)
    if dropout is not None:
        cfg = cfg.replace(dropout=dropout)
    tensors = read_hf_tensors(hf_dir)
    check_tensors(hf_dir, cfg, tensors)
    state = read_hf_weights(hf_dir, tensors)
    model = GPT(cfg, backend, seed=None, ops=ops, **(make_buffers(cfg) if make_buffers else {}))
    model.load_state_dict(state)
    return model
