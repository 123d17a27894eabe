"""GPT-2's byte-level BPE tokenizer, in pure Python, identical to tiktoken's "gpt2".

Encoding ``text``:

1. pre-tokenize it with GPT-2's regex (``pretokenize``): words with their leading
   space, numbers, runs of punctuation, whitespace;
2. for each piece, take its UTF-8 bytes; if those bytes are a token, that is the answer
   (as in tiktoken); otherwise run the BPE merge loop (``merge.bpe_merge``) on them;
3. map each resulting byte string to its id.

Step 2 is the slow part, and real text repeats the same pieces endlessly, so results are
kept in a dict from piece to ids. Decoding concatenates the bytes of each id.
"""

from functools import cache
from itertools import chain
from pathlib import Path

from .base import Tokenizer, replace_surrogates
from .files import BPEFiles, read_bpe_files
from .merge import bpe_merge
from .pretokenize import pretokenize, split_at_safe_cuts

ASSETS = Path(__file__).parent / "assets" / "gpt2"


class GPT2Tokenizer(Tokenizer):
    """Byte-level BPE from ``vocab.json`` + ``merges.txt``.

    ``name`` is ``"bpe-<vocab size>"``; ``identity`` adds the first 16 hex digits of a
    sha256 of the parsed vocabulary and merges.
    """

    CHUNK_CHARS = 1 << 16

    def __init__(self, files: BPEFiles):
        super().__init__(files.tokens, files.special_tokens)
        special_ids = set(files.special_tokens.values())
        self._encoder = {data: i for i, data in enumerate(files.tokens) if i not in special_ids}  # bytes -> id
        self._merge_ranks = files.merge_ranks
        self._cache = _PieceCache(self._encode_piece)
        self.name = f"bpe-{self.vocab_size}"
        self.identity = f"{self.name}-{files.digest[:16]}"

    @classmethod
    def from_files(cls, vocab_path: str | Path, merges_path: str | Path) -> "GPT2Tokenizer":
        """Load Hugging Face's ``vocab.json`` + ``merges.txt`` (or OpenAI's ``encoder.json``
        + ``vocab.bpe``). Raises ``TokenizerFileError`` for a missing or malformed file."""
        return cls(read_bpe_files(vocab_path, merges_path))

    @classmethod
    def default(cls) -> "GPT2Tokenizer":
        """GPT-2's own tokenizer, from the copy of its files bundled in ``bpe/assets/gpt2``
        (read once per process; the tables are never modified, so instances share them)."""
        return cls(_bundled_gpt2_files())

    def encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        try:
            # Long text goes in chunks, so that the list of pieces stays small and each
            # chunk of plain ASCII is a compact (fast) string of its own.
            for chunk in split_at_safe_cuts(text, self.CHUNK_CHARS):
                ids.extend(chain.from_iterable(map(self._cache.__getitem__, pretokenize(chunk))))
        except UnicodeEncodeError:  # lone surrogates
            return self.encode_ordinary(replace_surrogates(text))
        return ids

    def __getstate__(self) -> dict:
        # Pickled for worker processes (under "spawn"): send the tables, not the cache.
        return {**self.__dict__, "_cache": _PieceCache(self._encode_piece)}

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        data = piece.encode("utf-8")
        token = self._encoder.get(data)
        if token is not None:
            return (token,)
        return tuple(map(self._encoder.__getitem__, bpe_merge(data, self._merge_ranks)))


@cache
def _bundled_gpt2_files() -> BPEFiles:
    return read_bpe_files(ASSETS / "vocab.json", ASSETS / "merges.txt")


class _PieceCache(dict):
    """piece -> ids, filled on demand by ``encode_piece`` (dict's ``__missing__`` hook, so
    a hit costs one C-level lookup). Very long pieces are not kept, and the whole cache
    is dropped when it reaches ``MAX_ENTRIES``, so memory stays bounded on any input."""

    MAX_ENTRIES = 1 << 20
    MAX_PIECE_CHARS = 256

    def __init__(self, encode_piece):
        super().__init__()
        self.encode_piece = encode_piece

    def __missing__(self, piece: str) -> tuple[int, ...]:
        ids = self.encode_piece(piece)
        if len(piece) <= self.MAX_PIECE_CHARS:
            if len(self) >= self.MAX_ENTRIES:
                self.clear()
            self[piece] = ids
        return ids
