"""Special tokens such as ``<|endoftext|>``, with tiktoken's semantics.

A special token is a vocabulary entry that BPE never produces; only its exact text,
when allowed, becomes its id.

- ``encode_ordinary(text)`` treats special-token text as ordinary text:
  ``"<|endoftext|>"`` -> ``"<|"``, ``"endoftext"``, ``"|>"`` -> [27, 91, 437, 1659, 5239, 91, 29].
- ``encode(text, allowed_special=..., disallowed_special=...)``:
  the text of a token in ``allowed_special`` (``"all"``: every special token) becomes its id;
  if the text contains a token in ``disallowed_special`` (``"all"``, the default: every
  special token not allowed) it raises ``DisallowedSpecialTokenError``; a special token
  in neither set is ordinary text. So by default ``encode`` refuses ``<|endoftext|>``,
  and ``disallowed_special=()`` makes it equal ``encode_ordinary``.
"""

from functools import lru_cache

import regex

from .errors import DisallowedSpecialTokenError

ENDOFTEXT = "<|endoftext|>"


def resolve_special(special_tokens: dict[str, int], allowed_special,
                    disallowed_special) -> tuple[dict[str, int], frozenset[str]]:
    """Turn the two arguments of ``encode`` into {allowed text: id} and the disallowed texts."""
    allowed = _names(special_tokens, allowed_special, "allowed_special")
    disallowed = _names(special_tokens, disallowed_special, "disallowed_special")
    if disallowed_special == "all":
        disallowed -= allowed
    return {name: special_tokens[name] for name in allowed}, disallowed


def check_disallowed(text: str, disallowed: frozenset[str]) -> None:
    if disallowed and (found := _special_regex(disallowed).search(text)):
        token = found.group()
        raise DisallowedSpecialTokenError(
            f"Encountered text corresponding to disallowed special token {token!r}. "
            f"To encode it as the special token, pass allowed_special={{{token!r}}} (or \"all\"); "
            "to encode it as ordinary text, pass disallowed_special=() or use encode_ordinary."
        )


def split_on_special(text: str, allowed: dict[str, int]) -> list[str | int]:
    """Cut ``text`` at the allowed special tokens: the pieces of text between them (never
    empty) and the ids of the special tokens, in order."""
    if not allowed:
        return [text] if text else []
    segments: list[str | int] = []
    start = 0
    for found in _special_regex(frozenset(allowed)).finditer(text):
        if found.start() > start:
            segments.append(text[start : found.start()])
        segments.append(allowed[found.group()])
        start = found.end()
    if start < len(text):
        segments.append(text[start:])
    return segments


def _names(special_tokens: dict[str, int], spec, argument: str) -> frozenset[str]:
    if spec == "all":
        return frozenset(special_tokens)
    if isinstance(spec, str):
        raise TypeError(f'{argument} must be "all" or a collection of special-token strings, not the string {spec!r}')
    names = frozenset(spec)
    unknown = names - special_tokens.keys()
    if unknown:
        raise ValueError(
            f"{argument} names {sorted(unknown)}, which are not special tokens of this tokenizer "
            f"(it has {sorted(special_tokens) or 'none'})"
        )
    return names


@lru_cache(maxsize=16)
def _special_regex(names: frozenset[str]) -> regex.Pattern:
    # Longest first, so that a token that is a prefix of another never wins over it.
    return regex.compile("|".join(regex.escape(name) for name in sorted(names, key=lambda n: (-len(n), n))))
