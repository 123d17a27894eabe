"""GPT2Tokenizer against tiktoken's "gpt2" encoding: real corpora, generated text, long
strings and special tokens. Skipped (with a message) where tiktoken is not installed.

The comparison on the whole of ../shared/corpus/large.txt takes about a minute, so it
runs only with BPE_FULL=1; by default a few MB sampled across the file are compared.
"""

import os
import random
import time

import pytest
from hypothesis import given, settings, strategies as st
from tiktoken_ref import ROOT, gpt2_encoding, tiktoken_or_skip

from bpe import DisallowedSpecialTokenError, GPT2Tokenizer

tiktoken_or_skip()

TINY = ROOT / "data" / "tiny_shakespeare.txt"
LARGE = ROOT.parent / "shared" / "corpus" / "large.txt"
EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def ours():
    return GPT2Tokenizer.default()


@pytest.fixture(scope="module")
def ref():
    return gpt2_encoding()


def test_bundled_corpus(ours, ref):
    if not TINY.exists():
        pytest.skip(f"{TINY} is absent")
    text = TINY.read_text(encoding="utf-8")
    ids = ours.encode_ordinary(text)
    assert ids == ref.encode_ordinary(text)
    assert ours.decode(ids) == text


def test_large_corpus_sample(ours, ref):
    """8 slices of 384 KiB spread evenly over large.txt (its prose, code, dictionary...)."""
    if not LARGE.exists():
        pytest.skip(f"{LARGE} is absent (it lives in the project's ../shared)")
    size, slice_bytes = LARGE.stat().st_size, 384 << 10
    with LARGE.open("rb") as f:
        for k in range(8):
            f.seek(k * (size - slice_bytes) // 7)
            text = f.read(slice_bytes).decode("utf-8", errors="ignore")  # a cut character at either end
            ids = ours.encode_ordinary(text)
            assert ids == ref.encode_ordinary(text), f"slice {k}"
            assert ours.decode(ids) == text


@pytest.mark.skipif(os.environ.get("BPE_FULL") != "1",
                    reason="set BPE_FULL=1 to compare all of large.txt (about a minute)")
def test_large_corpus_whole(ours, ref):
    if not LARGE.exists():
        pytest.skip(f"{LARGE} is absent (it lives in the project's ../shared)")
    text = LARGE.read_text(encoding="utf-8")
    ids = ours.encode_corpus(text, show_progress=False)
    assert ids.tolist() == ref.encode_ordinary(text)


# --- generated text ---------------------------------------------------------------------

WHITESPACE = " \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2001\u2007\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_QUITE_WHITESPACE = "\u200b\u180e\u2060\ufeff\x1c\x1d\x1e\x1f"  # not \s for either regex engine
FRAGMENTS = [
    # words, cases, contractions (only lower-case ones are split off)
    "hello", "Hello", "WORLD", "a", "I", "don't", "DON'T", "it's", "It'S", "we're", "WE'RE", "they've",
    "I'm", "I'M", "you'll", "YOU'LL", "he'd", "HE'D", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'", "’s",
    # numbers: ASCII and other scripts, fractions, superscripts, roman numerals
    "0", "7", "42", "2024", "3.14", "1,000", "²", "½", "٣", "०१", "Ⅻ", "①", "𝟘",
    # punctuation and symbols, alone and in runs
    ".", ",", "!", "?", "...", "--", "—", "(", ")", "[]", "{}", '"', "<|", "|>", "<", "|", "@#$%", "->", "://",
    # accents and combining marks, precomposed or not
    "é", "e\u0301", "\u0301", "\u0300\u0323", "naïve", "Ågström", "ệ", "ﬁ",
    # non-Latin scripts
    "中文", "日本語", "ひらがな", "한국어", "Привет", "مرحبا", "שלום", "हिन्दी", "ไทย",
    # emoji, skin tones, zero-width joiners, variation selectors, flags
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "🏳️\u200d🌈", "\u200d", "\ufe0f", "🇫🇷",
    # control characters and odd code points
    "\x00", "\x01", "\x1b", "\x7f", "\ufffd", "\U0010ffff", "\ue000",
    EOT, "<|endoftext", "endoftext|>",
    *NOT_QUITE_WHITESPACE,
]
whitespace_runs = st.text(alphabet=WHITESPACE, min_size=1, max_size=6)
pieces = st.one_of(st.sampled_from(FRAGMENTS), whitespace_runs, st.sampled_from(FRAGMENTS).map(lambda f: " " + f),
                   st.text(max_size=4))
gpt2_text = st.lists(pieces, max_size=40).map("".join)
any_text = st.text(max_size=60)
SETTINGS = settings(max_examples=300, deadline=None)


@SETTINGS
@given(gpt2_text)
def test_generated_text_matches_tiktoken(ours, ref, text):
    ids = ours.encode_ordinary(text)
    assert ids == ref.encode_ordinary(text)
    assert ours.decode(ids) == text
    for allowed in ("all", {EOT}):
        assert ours.encode(text, allowed_special=allowed) == ref.encode(text, allowed_special=allowed)
    assert ours.encode(text, disallowed_special=()) == ref.encode(text, disallowed_special=()) == ids
    if EOT in text:
        with pytest.raises(ValueError):
            ref.encode(text)
        with pytest.raises(DisallowedSpecialTokenError):
            ours.encode(text)
    else:
        assert ours.encode(text) == ids


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_arbitrary_unicode_matches_tiktoken(ours, ref, text):
    ids = ours.encode_ordinary(text)
    assert ids == ref.encode_ordinary(text)
    assert ours.decode(ids) == text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50256), max_size=30))
def test_decoding_any_ids_matches_tiktoken(ours, ref, ids):
    assert ours.decode_bytes(ids) == ref.decode_bytes(ids)
    assert ours.decode(ids) == ref.decode(ids)  # invalid UTF-8 -> U+FFFD in both


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\ud83d\ude00 x", "x \ud83d"])
def test_lone_surrogates_are_replaced_like_tiktoken(ours, ref, text):
    assert ours.encode_ordinary(text) == ref.encode_ordinary(text)
    assert ours.encode(text) == ref.encode(text)


def _random_word(n: int) -> str:
    rng = random.Random(0)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))


LONG_STRINGS = {
    "1e6 x 'a'": lambda: "a" * 10**6,
    "1e6 spaces": lambda: " " * 10**6,
    "1e6-letter word": lambda: _random_word(10**6),
    "2e5 x '.'": lambda: "." * 200_000,
    "5e4 x 'ab 1'": lambda: "ab 1" * 50_000,
}


@pytest.mark.parametrize("name", LONG_STRINGS)
def test_long_repetitive_strings_are_fast_and_match(ours, ref, name):
    """One pre-token of a million bytes goes through the O(n log n) merge; the simple
    O(n^2) loop would take hours. The bound is loose because CI machines are shared."""
    text = LONG_STRINGS[name]()
    start = time.perf_counter()
    ids = ours.encode_ordinary(text)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"{name}: {elapsed:.1f} s"
    assert ids == ref.encode_ordinary(text)
