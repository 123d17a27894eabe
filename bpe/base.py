"""The interface every tokenizer here offers, and the parts they share.

Subclasses provide ``encode_ordinary`` and pass their id -> bytes table and special
tokens to ``__init__``; encoding with special tokens, decoding, and whole-corpus encoding
are the same for all of them.
"""

from collections.abc import Iterable

import numpy as np

from . import corpus
from .special import ENDOFTEXT, check_disallowed, resolve_special, split_on_special


def replace_surrogates(text: str) -> str:
    """Replace lone surrogates (not encodable as UTF-8) by U+FFFD, as tiktoken does; a
    surrogate pair written as two code points becomes the character it stands for."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Tokenizer:
    """Text <-> token ids. ``name`` is a short label, ``identity`` also pins the exact
    vocabulary (a data cache built with one tokenizer is stale for any other)."""

    name: str
    identity: str

    def __init__(self, tokens: list[bytes], special_tokens: dict[str, int]):
        self._tokens = tokens  # id -> the bytes it decodes to
        self.special_tokens = dict(special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def eot_token(self) -> int | None:
        """The id of ``<|endoftext|>``, or None when the vocabulary has none."""
        return self.special_tokens.get(ENDOFTEXT)

    @property
    def token_dtype(self) -> type[np.unsignedinteger]:
        """The smallest of uint16/uint32 that holds every id."""
        return np.uint16 if self.vocab_size <= 1 << 16 else np.uint32

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` with no special tokens: their text is encoded like any other."""
        raise NotImplementedError

    def encode(self, text: str, *, allowed_special=frozenset(), disallowed_special="all") -> list[int]:
        """Encode ``text``, handling special tokens as tiktoken does (see ``bpe.special``)."""
        allowed, disallowed = resolve_special(self.special_tokens, allowed_special, disallowed_special)
        check_disallowed(text, disallowed)
        return self._encode_segments(split_on_special(text, allowed))

    def _encode_segments(self, segments: Iterable[str | int]) -> list[int]:
        """Encode a sequence of text pieces and special-token ids, in order."""
        ids: list[int] = []
        for segment in segments:
            if isinstance(segment, int):
                ids.append(segment)
            else:
                ids.extend(self.encode_ordinary(segment))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes the ids stand for. ValueError for an id outside 0..vocab_size-1."""
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        if ids and not (min(ids) >= 0 and max(ids) < self.vocab_size):
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise ValueError(f"token id {bad} is out of range for tokenizer {self.name} "
                             f"(ids are 0..{self.vocab_size - 1})")
        return b"".join(map(self._tokens.__getitem__, ids))

    def decode(self, ids: Iterable[int]) -> str:
        """The text the ids stand for. Never fails for valid ids: bytes that are not valid
        UTF-8 (e.g. half of a multi-byte character) become U+FFFD, as in GPT-2."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def encode_corpus(self, text_or_documents, *, num_workers: int | None = None, show_progress: bool = True,
                      allowed_special=frozenset(), chunk_chars: int = corpus.CHUNK_CHARS) -> np.ndarray:
        """Encode a whole corpus on all cores; see ``bpe.corpus.encode_corpus``."""
        return corpus.encode_corpus(self, text_or_documents, num_workers=num_workers, show_progress=show_progress,
                                    allowed_special=allowed_special, chunk_chars=chunk_chars)
