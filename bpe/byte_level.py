"""GPT-2's reversible table between the 256 byte values and 256 printable characters.

Byte-level BPE works on bytes, but GPT-2 stores its vocabulary as JSON text. So every
byte is shown as one printable Unicode character: the 188 bytes that are already
printable and not a space (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves,
and the other 68 (control characters, space, DEL, NBSP, soft hyphen...) are shifted to
U+0100 and up, in byte order. That is why a leading space shows up as ``Ġ`` (U+0120, the
33rd shifted byte: 0x20) and a newline as ``Ċ`` in ``vocab.json`` and ``merges.txt``.
"""


def _byte_to_char() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    for n, b in enumerate(shifted):
        table[b] = chr(256 + n)
    return dict(sorted(table.items()))


BYTE_TO_CHAR: dict[int, str] = _byte_to_char()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_CHAR.items()}


# str.translate table for token_to_bytes: each table character -> the byte it stands
# for (as a code point < 256); the raw characters of the 68 shifted bytes -> U+FFFD, which
# like every other character outside the table then fails to encode as Latin-1.
_TO_LATIN1 = {ord(c): b for c, b in CHAR_TO_BYTE.items()} | {b: 0xFFFD for b, c in BYTE_TO_CHAR.items() if ord(c) != b}


def bytes_to_token(data: bytes) -> str:
    """The vocabulary spelling of a byte string, e.g. ``b" the"`` -> ``"Ġthe"``."""
    return "".join(BYTE_TO_CHAR[b] for b in data)


def token_to_bytes(token: str) -> bytes:
    """The bytes a vocabulary string stands for, e.g. ``"Ġthe"`` -> ``b" the"``.
    ValueError if it has a character outside the table."""
    try:
        return token.translate(_TO_LATIN1).encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{token!r} has characters outside GPT-2's byte-to-unicode table") from None
