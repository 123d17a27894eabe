"""Bad vocabulary and merges files: each raises TokenizerFileError with one line that
names the file and says what is wrong."""

import json

import pytest

from bpe import GPT2Tokenizer, TokenizerFileError
from bpe.byte_level import BYTE_TO_CHAR
from bpe.files import write_bpe_files

EOT = "<|endoftext|>"
MERGES = [(b"a", b"b"), (b"ab", b"c"), (b" ", b"abc")]


@pytest.fixture
def files(tmp_path):
    """A small valid vocabulary: 256 bytes, 3 merges, <|endoftext|> = 259."""
    tokens = [bytes([b]) for b in range(256)] + [a + b for a, b in MERGES]
    return write_bpe_files(tmp_path, tokens, MERGES, {EOT: len(tokens)})


def load_error(vocab_path, merges_path) -> str:
    with pytest.raises(TokenizerFileError) as info:
        GPT2Tokenizer.from_files(vocab_path, merges_path)
    message = str(info.value)
    assert "\n" not in message
    return message


def edit_vocab(path, change):
    vocab = json.loads(path.read_text(encoding="utf-8"))
    change(vocab)
    path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")


def test_small_files_load_and_round_trip(files):
    tok = GPT2Tokenizer.from_files(*files)
    assert tok.vocab_size == 260 and tok.eot_token == 259
    assert tok.encode(" abc abcd") == [259 - 1, 259 - 1, ord("d")]
    assert tok.decode(tok.encode("héllo abc")) == "héllo abc"
    assert issubclass(TokenizerFileError, ValueError)


def test_missing_files(files, tmp_path):
    vocab, merges = files
    assert "cannot read vocab file" in load_error(tmp_path / "nope.json", merges)
    assert "cannot read merges file" in load_error(vocab, tmp_path / "nope.txt")
    assert "cannot read vocab file" in load_error(tmp_path, merges)  # a directory


def test_malformed_json(files):
    vocab, merges = files
    vocab.write_text('{"a": 0,', encoding="utf-8")
    message = load_error(vocab, merges)
    assert "is not valid JSON" in message and str(vocab) in message
    vocab.write_text("[1, 2]", encoding="utf-8")
    assert "JSON object" in load_error(vocab, merges)
    vocab.write_bytes(b'{"\xff": 0}')
    assert "not UTF-8" in load_error(vocab, merges)


def test_ids_must_be_contiguous_integers(files):
    vocab, merges = files
    edit_vocab(vocab, lambda v: v.update({EOT: 300}))
    assert "is 300, outside 0..259" in load_error(vocab, merges)
    edit_vocab(vocab, lambda v: v.update({EOT: -1}))
    assert "is -1, outside 0..259" in load_error(vocab, merges)
    edit_vocab(vocab, lambda v: v.update({EOT: 0}))
    assert "id 0 is given to both" in load_error(vocab, merges)
    edit_vocab(vocab, lambda v: v.update({EOT: "259"}))
    assert "not an integer" in load_error(vocab, merges)


def test_merge_lines_must_be_two_tokens(files):
    vocab, merges = files
    merges.write_text("#version: 0.2\na b\nab c d\n", encoding="utf-8")
    message = load_error(vocab, merges)
    assert "line 3" in message and "expected two tokens" in message
    merges.write_text("#version: 0.2\nab\n", encoding="utf-8")
    assert "line 2" in load_error(vocab, merges)


def test_merge_parts_and_results_must_be_in_vocab(files):
    vocab, merges = files
    merges.write_text("#version: 0.2\na b\nab x\n", encoding="utf-8")  # "abx" is not a token
    message = load_error(vocab, merges)
    assert "line 3" in message and "'abx'" in message and "is not in vocab file" in message
    merges.write_text("#version: 0.2\na b\nzz c\n", encoding="utf-8")  # "zz" is not a token
    assert "'zz'" in load_error(vocab, merges)


def test_vocab_token_not_made_by_any_merge(files):
    vocab, merges = files
    merges.write_text("#version: 0.2\na b\nab c\n", encoding="utf-8")  # nothing makes "Ġabc"
    message = load_error(vocab, merges)
    assert "'Ġabc'" in message and "not made by any merge" in message


def test_vocab_needs_every_byte(files):
    vocab, merges = files
    edit_vocab(vocab, lambda v: (v.pop(BYTE_TO_CHAR[0]), v.update({EOT: 0})))
    assert "no token for byte 0x00" in load_error(vocab, merges)


def test_characters_outside_the_byte_alphabet(files):
    vocab, merges = files
    edit_vocab(vocab, lambda v: v.update({"中": 260, "a中": 261}))  # not spelled with GPT-2's byte table
    merges.write_text(merges.read_text(encoding="utf-8") + "a 中\n", encoding="utf-8")
    message = load_error(vocab, merges)
    assert "line 5" in message and "byte-to-unicode" in message


@pytest.mark.parametrize("entry, word", [
    ('"<|x|>": ' + "9" * 5000, "number too long to be an id"),           # past json's 4300-digit limit
    ('"<|x|>": ' + "9" * 4000, "outside 0..260"),
    ('"<|x|>": ' + "[" * 100_000 + "]" * 100_000, "nests too deeply"),
    ('"<|x|>": NaN', "not an integer"),
    ('"<|x|>": 260.0', "not an integer"),
    ('"<|\\ud800|>": 260', "not valid Unicode"),                            # a lone surrogate, spelled in JSON
    ('"a\\udfff": 260', "not valid Unicode"),
])
def test_crafted_vocab_entries(files, entry, word):
    """Each crafted entry added to a valid vocab.json gives one short line (no traceback)."""
    vocab, merges = files
    vocab.write_text(vocab.read_text(encoding="utf-8")[:-1] + ", " + entry + "}", encoding="utf-8")
    message = load_error(vocab, merges)
    assert word in message and len(message) < 300


def test_messages_quote_huge_tokens_and_lines_briefly(files):
    vocab, merges = files
    edit_vocab(vocab, lambda v: v.update({"q" * 100_000: 260}))
    message = load_error(vocab, merges)
    assert "qqq..." in message and len(message) < 400
    edit_vocab(vocab, lambda v: v.pop("q" * 100_000))
    merges.write_text("#version: 0.2\na b\n" + "x" * 100_000 + " y\n", encoding="utf-8")
    message = load_error(vocab, merges)
    assert "line 3" in message and "xxx..." in message and len(message) < 400
