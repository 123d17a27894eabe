"""Reading and writing byte-level BPE files: ``vocab.json`` + ``merges.txt``.

The format is Hugging Face's, which is OpenAI's ``encoder.json`` + ``vocab.bpe`` under
other names:

- ``vocab.json``: a JSON object from token string to id, ids 0..N-1 with no gaps. Token
  strings spell bytes with the table in ``byte_level`` (``"Ġthe"`` is ``b" the"``).
  Entries of the form ``<|...|>`` that no merge produces are special tokens.
- ``merges.txt``: an optional ``#version`` first line, then one merge per line, two
  token strings separated by a space, in the order they were learned (line order = rank).

Everything that can be wrong with them raises ``TokenizerFileError`` with a one-line
message naming the file, the line where there is one, and what to do.
"""

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

from .byte_level import BYTE_TO_CHAR, bytes_to_token, token_to_bytes
from .errors import TokenizerFileError


class BPEFiles(NamedTuple):
    """A vocabulary and its merges, as the encoder needs them."""

    tokens: list[bytes]  # id -> the bytes it decodes to (a special token: its UTF-8 text)
    merge_ranks: dict[bytes, int]  # bytes of a token made by a merge -> that merge's line order
    special_tokens: dict[str, int]  # e.g. {"<|endoftext|>": 50256}
    digest: str  # sha256 of the parsed content (the same for vocab.json and encoder.json)


def _is_special_token(token: str) -> bool:
    return len(token) > 4 and token.startswith("<|") and token.endswith("|>")


def read_bpe_files(vocab_path: str | Path, merges_path: str | Path) -> BPEFiles:
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    vocab = _read_vocab(vocab_path)
    spelled = {token: _token_bytes(token) for token in vocab}  # token -> its bytes, None if not byte-level
    merges = _read_merges(merges_path, spelled, vocab_path)

    missing = [b for b, c in BYTE_TO_CHAR.items() if c not in vocab]
    if missing:
        raise TokenizerFileError(
            f"vocab file '{vocab_path}' has no token for byte 0x{missing[0]:02x} ({BYTE_TO_CHAR[missing[0]]!r}); "
            "a byte-level BPE vocabulary needs all 256 single-byte tokens"
        )
    merge_ranks: dict[bytes, int] = {}
    for rank, (left, right) in enumerate(merges):
        merge_ranks.setdefault(spelled[left + right], rank)  # if two lines make one token, the first counts

    tokens: list[bytes] = [b""] * len(vocab)
    special_tokens: dict[str, int] = {}
    for token, i in vocab.items():
        data = spelled[token]
        if data is not None and (len(data) == 1 or data in merge_ranks):
            tokens[i] = data
        elif _is_special_token(token):
            tokens[i] = token.encode("utf-8")
            special_tokens[token] = i
        else:
            raise TokenizerFileError(
                f"vocab file '{vocab_path}': token {_show(token)} (id {i}) is not a single byte, not made by any "
                f"merge in '{merges_path}', and not a special token like <|endoftext|>; "
                "check that the vocab and merges files belong together"
            )

    content = json.dumps([sorted(vocab, key=vocab.__getitem__), [f"{a} {b}" for a, b in merges]], ensure_ascii=False)
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
    return BPEFiles(tokens, merge_ranks, special_tokens, digest)


def write_bpe_files(out_dir: str | Path, tokens: list[bytes], merges: list[tuple[bytes, bytes]],
                    special_tokens: dict[str, int]) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` into ``out_dir``; return their paths.

    ``tokens`` are the non-special tokens by id; ``special_tokens`` give their own ids.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = {bytes_to_token(t): i for i, t in enumerate(tokens)}
    vocab.update(special_tokens)
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = [f"{bytes_to_token(a)} {bytes_to_token(b)}\n" for a, b in merges]
    merges_path.write_text("#version: 0.2\n" + "".join(lines), encoding="utf-8")
    return vocab_path, merges_path


def _token_bytes(token: str) -> bytes | None:
    """The bytes a token string spells, or None if it uses characters outside the table."""
    try:
        return token_to_bytes(token)
    except ValueError:
        return None


def _show(value) -> str:
    """repr(value), cut short past 60 characters: a message quotes a file without dumping it."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_unicode(token: str) -> bool:
    """False for a string with a lone surrogate (JSON can spell one: "\\ud800"), which no
    UTF-8 text holds and no encoder can write."""
    try:
        token.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_text(path: Path, what: str, expected: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as e:
        raise TokenizerFileError(f"cannot read {what} file '{path}': {e.strerror or e}; "
                                 f"give the path of {expected}") from None
    except UnicodeDecodeError as e:
        raise TokenizerFileError(f"{what} file '{path}' is not UTF-8 text (bad byte at offset {e.start}); "
                                 f"give the path of {expected}") from None


def _read_vocab(path: Path) -> dict[str, int]:
    expected = "a vocab.json (or encoder.json) file"
    text = _read_text(path, "vocab", expected)
    try:
        vocab = json.loads(text)
    except json.JSONDecodeError as e:
        raise TokenizerFileError(f"vocab file '{path}' is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}; "
                                 f"give the path of {expected}") from None
    except RecursionError:
        raise TokenizerFileError(f"vocab file '{path}' nests too deeply to be a vocabulary; "
                                 f"give the path of {expected}") from None
    except ValueError:  # json's limit on the digits of an int (4300)
        raise TokenizerFileError(f"vocab file '{path}' has a number too long to be an id; "
                                 f"give the path of {expected}") from None
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerFileError(f"vocab file '{path}' must hold a non-empty JSON object "
                                 "mapping token strings to ids, like vocab.json")
    by_id: dict[int, str] = {}
    for token, i in vocab.items():
        if type(i) is not int:
            raise TokenizerFileError(f"vocab file '{path}': the id of token {_show(token)} is {_show(i)}, "
                                     "not an integer")
        if not 0 <= i < len(vocab):  # with the ids distinct (below), 0..N-1 then has no gaps
            raise TokenizerFileError(
                f"vocab file '{path}': the id of token {_show(token)} is {_show(i)}, outside 0..{len(vocab) - 1}; "
                f"the {len(vocab)} ids must be 0..{len(vocab) - 1} with no gaps"
            )
        if i in by_id:
            raise TokenizerFileError(f"vocab file '{path}': id {i} is given to both {_show(by_id[i])} "
                                     f"and {_show(token)}; each id must be used once")
        if not _is_unicode(token):
            raise TokenizerFileError(f"vocab file '{path}': token {_show(token)} (id {i}) is not valid Unicode "
                                     "(a lone surrogate \\u escape)")
        by_id[i] = token
    return vocab


def _read_merges(path: Path, spelled: dict[str, bytes | None], vocab_path: Path) -> list[tuple[str, str]]:
    """The merges as (left, right) token strings, in order, checked against the vocabulary."""
    lines = _read_text(path, "merges", "a merges.txt (or vocab.bpe) file").splitlines()
    merges = []
    for number, line in enumerate(lines, start=1):
        if (number == 1 and line.startswith("#version")) or not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerFileError(f"merges file '{path}' line {number}: expected two tokens separated by a space, "
                                     f"got {_show(line)}")
        left, right = parts
        for token in (left, right, left + right):
            if token not in spelled:
                raise TokenizerFileError(
                    f"merges file '{path}' line {number}: token {_show(token)} of merge {_show(line)} "
                    f"is not in vocab file '{vocab_path}'; check that the vocab and merges files belong together"
                )
        if spelled[left + right] is None:
            raise TokenizerFileError(
                f"merges file '{path}' line {number}: {_show(line)} has characters outside GPT-2's byte-to-unicode "
                "alphabet; is this a byte-level BPE file?"
            )
        merges.append((left, right))
    return merges
