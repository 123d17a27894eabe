"""The byte-level tokenizer: every UTF-8 byte is a token, so ids are 0..255."""

from .base import Tokenizer, replace_surrogates


class ByteTokenizer(Tokenizer):
    """256 ids, one per byte value; no merges and no special tokens (``eot_token`` is None).

    ``encode(text) == encode_ordinary(text) == list(text.encode("utf-8"))``.
    """

    name = identity = "byte-256"

    def __init__(self):
        super().__init__([bytes([b]) for b in range(256)], special_tokens={})

    def encode_ordinary(self, text: str) -> list[int]:
        try:
            return list(text.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates
            return list(replace_surrogates(text).encode("utf-8"))
