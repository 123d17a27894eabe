"""Which tokenizer a run uses, the local-vocabulary projection of a BPE corpus, and prompts.

A run names its tokenizer with options ('byte' or 'gpt2', optionally other BPE files); a
checkpoint stores those options, so `tokenizer_from_meta` rebuilds exactly the tokenizer a
model was trained with (for train.py --resume and sample.py).
"""
import hashlib
import sys

import numpy as np

from bpe import ByteTokenizer, GPT2Tokenizer, TokenizerFileError

from ..errors import TokenizerChoiceError


def make_tokenizer(name, bpe_vocab=None, bpe_merges=None):
    """'byte' -> ByteTokenizer; 'gpt2' -> GPT-2 BPE from the bundled files, or from
    bpe_vocab + bpe_merges (vocab.json/merges.txt or encoder.json/vocab.bpe)."""
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

    def project(self, base_ids):
        """Base ids (array) -> (local ids, how many base ids were left out for having no local id)."""
        base_ids = np.asarray(base_ids, dtype=np.int64)
        local = np.searchsorted(self.to_base, base_ids).clip(0, len(self.to_base) - 1)
        known = self.to_base[local] == base_ids
        return local[known].astype(self.token_dtype), int((~known).sum())

    def encode(self, text, **special):
        local, self.last_skipped = self.project(self.base.encode(text, **special))
        return local.tolist()

    def decode_bytes(self, ids):
        return self.base.decode_bytes(self.to_base[np.asarray(ids, dtype=np.int64)].tolist())

    def decode(self, ids):
        return self.base.decode(self.to_base[np.asarray(ids, dtype=np.int64)].tolist())


def tokenizer_from_meta(meta):
    """The tokenizer a checkpoint was trained with (its meta dict from load_checkpoint)."""
    o = meta["options"]
    tokenizer = make_tokenizer(o["tokenizer"], o.get("bpe_vocab"), o.get("bpe_merges"))
    if meta.get("local_vocab") is not None:
        if max(meta["local_vocab"]) >= tokenizer.vocab_size:
            raise TokenizerChoiceError(f"the local vocabulary names token id {max(meta['local_vocab'])}, but the "
                                       f"{tokenizer.name} tokenizer has only {tokenizer.vocab_size} ids")
        tokenizer = LocalVocab(tokenizer, meta["local_vocab"])
    return tokenizer


def encode_prompt(text, tokenizer, block_size, note=None):
    """Prompt text -> ids (at least one; at most block_size, the latest).

    `<|endoftext|>` in the text is the end-of-text token. An empty prompt starts a new document:
    the end-of-text token when the tokenizer has one, else a newline. Tokens a LocalVocab does not
    have are left out, and a prompt longer than block_size keeps its last block_size tokens;
    either way note(message) is called (default: print it to stderr)."""
    note = note or (lambda message: print(message, file=sys.stderr))
    ids = tokenizer.encode(text, allowed_special="all")
    if getattr(tokenizer, "last_skipped", 0):               # a LocalVocab drops unseen tokens
        note(f"note: {tokenizer.last_skipped} prompt token(s) are not in the model's vocabulary "
             "and were left out")
    if not ids:
        ids = [tokenizer.eot_token] if tokenizer.eot_token is not None else tokenizer.encode("\n")
    if len(ids) > block_size:
        note(f"note: the prompt is {len(ids)} tokens, longer than the model's context window of "
             f"{block_size}; only its last {block_size} tokens are used")
        ids = ids[-block_size:]
    return ids
