"""Which tokenizer a run uses, and the local-vocabulary projection of a BPE corpus.

A run names its tokenizer with options ('byte' or 'gpt2', optionally other BPE files); a
checkpoint stores those options, so `tokenizer_from_meta` rebuilds exactly the tokenizer a
model was trained with (for train.py --resume and sample.py).
"""
import hashlib

import numpy as np


class TokenizerChoiceError(ValueError):
    """The tokenizer options or files cannot be used; the message says why."""


def make_tokenizer(name, bpe_vocab=None, bpe_merges=None):
    """'byte' -> ByteTokenizer; 'gpt2' -> GPT-2 BPE from the bundled files, or from
    bpe_vocab + bpe_merges (vocab.json/merges.txt or encoder.json/vocab.bpe)."""
    from bpe import ByteTokenizer, GPT2Tokenizer, TokenizerFileError
    if name == "byte":
        if bpe_vocab or bpe_merges:
            raise TokenizerChoiceError("--bpe-vocab/--bpe-merges need --tokenizer gpt2")
        return ByteTokenizer()
    if bool(bpe_vocab) != bool(bpe_merges):
        raise TokenizerChoiceError("give --bpe-vocab and --bpe-merges together")
    try:
        return GPT2Tokenizer.from_files(bpe_vocab, bpe_merges) if bpe_vocab else GPT2Tokenizer.default()
    except TokenizerFileError as e:
        raise TokenizerChoiceError(str(e)) from None


class LocalVocab:
    """A tokenizer restricted to the ids a corpus actually uses, renumbered 0..n-1.

    `to_base` (n,) holds the base (e.g. GPT-2) id of every local id, sorted ascending, so
    a model's output head is only as wide as the corpus needs. Encoding maps base ids to
    local ones (a base id the corpus never used has no local id and is skipped, with a
    count in `last_skipped`); decoding maps back and decodes with the base tokenizer.
    """

    def __init__(self, base, to_base):
        self.base = base
        self.to_base = np.asarray(to_base, dtype=np.int64)          # (n,) local -> base id
        digest = hashlib.sha256(self.to_base.tobytes()).hexdigest()[:16]
        self.name = f"{base.name}-local{len(self.to_base)}"
        self.identity = f"{base.identity}+local-{len(self.to_base)}-{digest}"
        self.last_skipped = 0

    @classmethod
    def from_corpus(cls, base, tokens):
        """The ids present in `tokens` (and the base's end-of-text token, if any)."""
        used = np.unique(np.asarray(tokens))
        if base.eot_token is not None:
            used = np.union1d(used, [base.eot_token])
        return cls(base, used)

    @property
    def vocab_size(self):
        return len(self.to_base)

    @property
    def eot_token(self):
        eot = self.base.eot_token
        return None if eot is None else int(np.searchsorted(self.to_base, eot))

    @property
    def token_dtype(self):
        return np.uint16 if self.vocab_size <= 1 << 16 else np.uint32

    def to_local(self, base_ids):
        """Base ids (array) -> local ids; every id must be in the local vocabulary."""
        base_ids = np.asarray(base_ids)
        local = np.searchsorted(self.to_base, base_ids)
        return local.astype(self.token_dtype)

    def encode(self, text, **special):
        base_ids = np.asarray(self.base.encode(text, **special), dtype=np.int64)
        local = np.searchsorted(self.to_base, base_ids).clip(0, len(self.to_base) - 1)
        known = self.to_base[local] == base_ids
        self.last_skipped = int((~known).sum())
        return local[known].tolist()

    def decode_bytes(self, ids):
        return self.base.decode_bytes(self.to_base[np.asarray(ids, dtype=np.int64)].tolist())

    def decode(self, ids):
        return self.base.decode(self.to_base[np.asarray(ids, dtype=np.int64)].tolist())


def tokenizer_from_meta(meta):
    """The tokenizer a checkpoint was trained with (its meta dict from load_checkpoint)."""
    o = meta["options"]
    tokenizer = make_tokenizer(o["tokenizer"], o.get("bpe_vocab"), o.get("bpe_merges"))
    if meta.get("local_vocab") is not None:
        tokenizer = LocalVocab(tokenizer, meta["local_vocab"])
    return tokenizer
