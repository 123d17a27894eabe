"""Exceptions raised by the tokenizers, so callers can catch our errors specifically."""


class TokenizerFileError(ValueError):
    """A vocabulary or merges file is missing, unreadable or malformed.

    The message names the file (and line, where there is one), says what is wrong
    and how to fix it, so a command-line tool can print it as a single line.
    """


class DisallowedSpecialTokenError(ValueError):
    """`encode` met the text of a special token (e.g. ``<|endoftext|>``) that it was
    not allowed to encode as one; raised where tiktoken raises its ValueError."""


class CorpusError(ValueError):
    """The corpus given to ``bpe.train`` is missing, unreadable or empty."""
