"""Tokenizers for the GPT-2 trainer, in pure Python (plus ``regex`` and numpy).

- ``ByteTokenizer``: 256 ids, one per UTF-8 byte.
- ``GPT2Tokenizer``: GPT-2's byte-level BPE from ``vocab.json`` + ``merges.txt``,
  identical to tiktoken's "gpt2" encoding; ``GPT2Tokenizer.default()`` loads the bundled
  GPT-2 files.
- ``python -m bpe.train``: learn merges for a corpus of your own.

See bpe/README.md.
"""

from .base import Tokenizer
from .byte import ByteTokenizer
from .errors import CorpusError, DisallowedSpecialTokenError, TokenizerFileError
from .gpt2 import GPT2Tokenizer

__all__ = ["Tokenizer", "ByteTokenizer", "GPT2Tokenizer", "TokenizerFileError", "DisallowedSpecialTokenError",
           "CorpusError"]
