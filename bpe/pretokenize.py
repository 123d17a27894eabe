"""GPT-2's pre-tokenization: the regex that cuts text into pieces before BPE, and where
text can be cut into chunks that encode independently.

BPE never merges across a pre-token boundary. GPT-2's pattern, tried left to right at
each position, takes the first alternative that matches:

    's|'t|'re|'ve|'m|'ll|'d     English contractions (lower case only)
    ' ?\\p{L}+'                 a run of letters, with at most one leading space
    ' ?\\p{N}+'                 a run of digits/numerals, with at most one leading space
    ' ?[^\\s\\p{L}\\p{N}]+'       a run of other symbols, with at most one leading space
    '\\s+(?!\\S)'                whitespace, leaving its last character to what follows
                                (all of it at the end of the text)
    '\\s+'                      that last character, when the next piece cannot take it
                                as its leading space (only " " can): "a\\nb" -> "a", "\\n", "b"

So "Hello  world\\n" becomes ["Hello", " ", " world", "\\n"]. tiktoken writes the same
pattern with possessive quantifiers and an extra ``\\s++$``; the pieces are identical.
"""

from collections.abc import Iterator

import regex

GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

# A non-space character followed by whitespace. Cutting the text right after it is safe:
# every alternative above that contains a non-space character stops before whitespace,
# so the piece holding it ends there, in the whole text and in the left chunk alike (no
# lookahead sees past it); and the right chunk starts with the whitespace, where the
# scan of the whole text starts a new piece too (the pattern never looks behind).
# Cutting after a newline is NOT safe in general: "a\n\nb" pre-tokenizes to
# ["a", "\n", "\n", "b"], but a left chunk "a\n\n" ends in the single piece "\n\n".
_SAFE_CUT = regex.compile(r"\S(?=\s)")


def pretokenize(text: str) -> list[str]:
    """The pre-tokens of ``text``, in order; joined they give ``text`` back."""
    return GPT2_PATTERN.findall(text)


def split_at_safe_cuts(text: str, chunk_chars: int) -> Iterator[str]:
    """Cut ``text`` into chunks of about ``chunk_chars`` characters (more when no safe cut
    is near) such that pre-tokenizing each chunk gives exactly the pieces of the whole."""
    start = 0
    while len(text) - start > chunk_chars:
        cut = _SAFE_CUT.search(text, start + chunk_chars)
        if cut is None:
            break
        yield text[start : cut.end()]
        start = cut.end()
    if start < len(text):
        yield text[start:]
