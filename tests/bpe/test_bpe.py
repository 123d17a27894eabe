"""Behaviour of the tokenizers that needs no reference implementation: the public
interface, special tokens, decoding, the byte tokenizer, and the building blocks."""

import numpy as np
import pytest
import regex
from hypothesis import given, settings, strategies as st
from tiktoken_ref import SHARED_GPT2

from bpe import ByteTokenizer, DisallowedSpecialTokenError, GPT2Tokenizer
from bpe.byte_level import BYTE_TO_CHAR, bytes_to_token, token_to_bytes
from bpe.merge import merge_long, merge_short
from bpe.pretokenize import GPT2_PATTERN, pretokenize

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer.default()


def test_gpt2_basics(gpt2):
    assert gpt2.vocab_size == 50257
    assert gpt2.eot_token == 50256
    assert gpt2.special_tokens == {EOT: 50256}
    assert gpt2.token_dtype == np.uint16
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.decode([15496, 995]) == "Hello world"
    assert gpt2.name == "bpe-50257"
    assert regex.fullmatch(r"bpe-50257-[0-9a-f]{16}", gpt2.identity)


def test_openai_file_names_give_the_same_tokenizer(gpt2):
    if not (SHARED_GPT2 / "encoder.json").exists():
        pytest.skip(f"{SHARED_GPT2} is absent")
    openai = GPT2Tokenizer.from_files(SHARED_GPT2 / "encoder.json", SHARED_GPT2 / "vocab.bpe")
    assert openai.identity == gpt2.identity
    text = "The identity hashes content, not file formatting: \u00e9 \U0001f600"
    assert openai.encode(text) == gpt2.encode(text)


def test_special_token_semantics(gpt2):
    text = f"a{EOT}b"
    with pytest.raises(DisallowedSpecialTokenError, match="allowed_special"):
        gpt2.encode(text)
    assert isinstance(DisallowedSpecialTokenError("x"), ValueError)
    as_special = gpt2.encode("a") + [50256] + gpt2.encode("b")
    assert gpt2.encode(text, allowed_special="all") == as_special
    assert gpt2.encode(text, allowed_special={EOT}) == as_special
    as_text = gpt2.encode_ordinary(text)
    assert 50256 not in as_text and gpt2.decode(as_text) == text
    assert gpt2.encode(text, disallowed_special=()) == as_text
    assert gpt2.encode(EOT + EOT, allowed_special="all") == [50256, 50256]
    with pytest.raises(ValueError, match="not special tokens"):
        gpt2.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(TypeError, match='"all"'):
        gpt2.encode("x", allowed_special="everything")


def test_decode_replaces_invalid_utf8_and_rejects_bad_ids(gpt2):
    emoji = gpt2.encode("😀")
    assert len(emoji) == 2  # a 4-byte character split over two tokens
    assert gpt2.decode(emoji[:1]) == "\ufffd"
    assert gpt2.decode_bytes(emoji[:1]) == "😀".encode()[:3]
    assert gpt2.decode(np.array(emoji, dtype=np.uint16)) == "😀"
    assert gpt2.decode([]) == ""
    for bad in (-1, 50257, 10**9):
        with pytest.raises(ValueError, match=f"token id {bad} is out of range"):
            gpt2.decode([15496, bad])


def test_byte_tokenizer():
    tok = ByteTokenizer()
    text = f"héllo {EOT} 😀\n"
    ids = list(text.encode("utf-8"))
    assert tok.encode(text) == tok.encode_ordinary(text) == tok.encode(text, allowed_special="all") == ids
    assert tok.decode(ids) == text and tok.decode_bytes(ids) == text.encode()
    assert tok.decode([0xF0, 0x9F]) == "\ufffd"
    assert (tok.vocab_size, tok.eot_token, tok.name, tok.identity) == (256, None, "byte-256", "byte-256")
    assert tok.special_tokens == {}
    with pytest.raises(ValueError, match="token id 256 is out of range"):
        tok.decode([256])
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode("x", allowed_special={EOT})


@given(st.text(max_size=50))
def test_byte_tokenizer_round_trip(text):
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(text)) == text


def test_byte_level_table():
    assert len(set(BYTE_TO_CHAR.values())) == 256
    assert bytes_to_token(b" the\n") == "\u0120the\u010a"  # Ġ the Ċ
    assert all(c.isprintable() and not c.isspace() for c in BYTE_TO_CHAR.values())
    data = bytes(range(256))
    assert token_to_bytes(bytes_to_token(data)) == data
    with pytest.raises(ValueError):
        token_to_bytes("a b")  # a raw space is not in the table


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(alphabet="ab .", max_size=300).map(str.encode))
def test_heap_merge_equals_simple_merge(gpt2, piece):
    ranks = gpt2._merge_ranks
    assert merge_long(piece, ranks) == merge_short(piece, ranks)
    assert b"".join(merge_long(piece, ranks)) == piece


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_pattern_equals_tiktokens_spelling(text):
    """The readable GPT-2 pattern gives the same pieces as tiktoken's possessive one."""
    tiktoken_pattern = regex.compile(r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++"""
                                     r"""|\s++$|\s+(?!\S)|\s""")
    assert pretokenize(text) == tiktoken_pattern.findall(text)
    assert "".join(pretokenize(text)) == text


def test_pretokenize_examples():
    assert pretokenize("Hello  world\n") == ["Hello", " ", " world", "\n"]
    assert pretokenize("I'm DON'T 42x") == ["I", "'m", " DON", "'", "T", " 42", "x"]
    assert GPT2_PATTERN.findall("a\n\nb") == ["a", "\n", "\n", "b"]


def test_cache_stays_bounded(gpt2, monkeypatch):
    tok = GPT2Tokenizer.default()
    monkeypatch.setattr(type(tok._cache), "MAX_ENTRIES", 100)
    text = " ".join(f"w{i}" for i in range(1000))
    assert tok.encode(text) == gpt2.encode(text)
    assert len(tok._cache) <= 100
    long_piece = "x" * 1000
    tok.encode(long_piece)
    assert long_piece not in tok._cache


def test_pickling_sends_tables_not_the_cache(gpt2):
    """Worker processes started with "spawn" (macOS, Windows) receive a pickled tokenizer."""
    import pickle

    gpt2.encode("warm the cache")
    copy = pickle.loads(pickle.dumps(gpt2))
    assert len(copy._cache) == 0
    assert copy.encode("warm the cache, then more") == gpt2.encode("warm the cache, then more")
