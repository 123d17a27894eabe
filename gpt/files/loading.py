"""A model to train or sample from, with its tokenizer: from one of our checkpoints (train.py
--out-dir, ckpt.npz) or from a Hugging Face GPT-2 directory (--init-from).

`load_model` serves train.py (--resume, --init-from), sample.py and `python -m gpt.export`, so
they find the same tokenizer in the same place and fail with the same error:

    checkpoint      the tokenizer its options name (tokenizer, bpe_vocab, bpe_merges) and its
                    local vocabulary, if any; the files must still give the identity it was
                    trained with (else CheckpointError)
    HF directory    vocab.json + merges.txt (BPE), else local_vocab.json (a projected GPT-2
                    vocabulary, as gpt.export writes it), else bytes for a 256-token model
                    (else HFFormatError)

Both spell the tokenizer as a checkpoint's meta does ({"options": {...}, "local_vocab": ...}),
and `tokenizer_from_meta` builds it.
"""
import os
from dataclasses import dataclass

from minigrad import Backend, DeviceError

from ..config import GPTConfig
from ..data.tokenizers import tokenizer_from_meta
from ..errors import CheckpointError, DeviceChoiceError, HFFormatError, TokenizerChoiceError
from ..model import GPT
from .checkpoint import Checkpoint, load_latest
from .hf import LOCAL_VOCAB_NAME, file_in_dir, load_hf_gpt2, read_hf_config, read_json_file

TOKENIZER_OPTIONS = ("tokenizer", "bpe_vocab", "bpe_merges")


def open_backend(device="auto", dtype="float32"):
    """minigrad's Backend, its DeviceError (no GPU, unknown dtype) as a DeviceChoiceError."""
    try:
        return Backend(device, dtype)
    except DeviceError as e:
        raise DeviceChoiceError(str(e)) from None


@dataclass
class Loaded:
    model: GPT
    tokenizer: object
    checkpoint: Checkpoint | None = None    # what a checkpoint held (arrays, meta, history); None for HF


def read_checkpoint(out_dir, moments=True) -> Checkpoint:
    """out_dir's checkpoint (gpt.files.checkpoint.load_latest); CheckpointError when it is missing or
    unusable."""
    return load_latest(out_dir, moments)


def hf_tokenizer_meta(hf_dir, vocab_size):
    """The tokenizer a Hugging Face directory holds, as {"options": {...}, "local_vocab": ...}
    (a checkpoint's spelling), or None when it has no tokenizer files and vocab_size is not 256."""
    vocab, merges, local = (file_in_dir(hf_dir, n) for n in ("vocab.json", "merges.txt", LOCAL_VOCAB_NAME))
    if os.path.isfile(vocab) and os.path.isfile(merges):
        return {"options": {"tokenizer": "gpt2", "bpe_vocab": vocab, "bpe_merges": merges}, "local_vocab": None}
    if os.path.isfile(local):
        mapping = read_json_file(local)
        if not (isinstance(mapping, list) and mapping and all(type(i) is int and i >= 0 for i in mapping)
                and mapping == sorted(set(mapping))):
            raise HFFormatError(f"{local}: expected a sorted list of distinct GPT-2 token ids")
        return {"options": {"tokenizer": "gpt2", "bpe_vocab": None, "bpe_merges": None}, "local_vocab": mapping}
    if vocab_size == 256:
        return {"options": {"tokenizer": "byte", "bpe_vocab": None, "bpe_merges": None}, "local_vocab": None}
    return None


def no_tokenizer_error(hf_dir, vocab_size):
    return HFFormatError(f"{hf_dir} has no vocab.json + merges.txt (nor {LOCAL_VOCAB_NAME}) for its {vocab_size} "
                         "token ids; add the model's tokenizer files there")


def _same_tokenizer_options(a, b):
    def key(o):
        return tuple(os.path.abspath(o[k]) if k != "tokenizer" and o.get(k) else o.get(k) for k in TOKENIZER_OPTIONS)
    return key(a) == key(b)


def load_model(backend, out_dir=None, hf_dir=None, *, checkpoint=None, tokenizer_options=None, ops=None,
               make_buffers=None, dropout=None) -> Loaded:
    """Our checkpoint in out_dir, or the Hugging Face directory hf_dir -> Loaded(model, tokenizer,
    checkpoint) (the checkpoint only when loading one).

    checkpoint: a Checkpoint already read from out_dir (train.py --resume reads its options first).
    tokenizer_options: HF only: {"tokenizer", "bpe_vocab", "bpe_merges"} to use instead of the
    directory's own tokenizer (train.py --init-from with --tokenizer); options equal to the
    directory's own keep its tokenizer (with its local vocabulary, if any).
    ops: the model's kernels (minigrad.kernels). make_buffers: config -> {"params", "grads"}
    buffers to build the model on (gpt.parallel.model_buffers). dropout: HF only, overrides
    config.json's.
    Raises CheckpointError / HFFormatError (both UserErrors) with a one-line reason."""
    if hf_dir is not None:
        return _load_hf(backend, hf_dir, tokenizer_options, ops, make_buffers, dropout)
    checkpoint = checkpoint or read_checkpoint(out_dir, moments=False)
    meta, path = checkpoint.meta, checkpoint.path
    try:
        tokenizer = tokenizer_from_meta(meta)
    except TokenizerChoiceError as e:
        raise CheckpointError(f"cannot rebuild the tokenizer of {path}: {e}") from None
    if meta.get("tokenizer", tokenizer.identity) != tokenizer.identity:
        raise CheckpointError(f"{path} was trained with tokenizer {meta['tokenizer']}, but its tokenizer files "
                              f"now give {tokenizer.identity}; restore those files or use another --out-dir")
    config = GPTConfig.from_dict(meta["config"])        # load_latest checked it fits the parameters
    if config.vocab_size < tokenizer.vocab_size:
        raise CheckpointError(f"{path}: its model has {config.vocab_size} token ids, fewer than its {tokenizer.name} "
                              f"tokenizer's {tokenizer.vocab_size}; the checkpoint is corrupted")
    model = GPT(config, backend, seed=None, ops=ops, **(make_buffers(config) if make_buffers else {}))
    model.params[...] = backend.asarray(checkpoint.arrays["params"], dtype=backend.dtype)
    return Loaded(model, tokenizer, checkpoint)


def _load_hf(backend, hf_dir, tokenizer_options, ops, make_buffers, dropout):
    vocab_size = read_hf_config(hf_dir).vocab_size
    own = hf_tokenizer_meta(hf_dir, vocab_size)
    if tokenizer_options is not None and not (own and _same_tokenizer_options(tokenizer_options, own["options"])):
        spec = {"options": {k: tokenizer_options.get(k) for k in TOKENIZER_OPTIONS}, "local_vocab": None}
    elif own is None:
        raise no_tokenizer_error(hf_dir, vocab_size)
    else:
        spec = own
    try:
        tokenizer = tokenizer_from_meta(spec)
    except TokenizerChoiceError as e:
        raise HFFormatError(f"{hf_dir}: {e}") from None
    if vocab_size < tokenizer.vocab_size:
        raise HFFormatError(f"{hf_dir} has {vocab_size} token ids, fewer than the {tokenizer.name} "
                            f"tokenizer's {tokenizer.vocab_size}; it was trained with another tokenizer")
    model = load_hf_gpt2(hf_dir, backend, dropout=dropout, ops=ops, make_buffers=make_buffers)
    return Loaded(model, tokenizer)
