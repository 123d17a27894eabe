"""encode_corpus: cutting text only at safe points, in parallel, gives exactly the ids of
encoding it all at once."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from tiktoken_ref import ROOT

from bpe import ByteTokenizer, GPT2Tokenizer
from bpe.pretokenize import pretokenize, split_at_safe_cuts

EOT = "<|endoftext|>"
TINY = ROOT / "data" / "tiny_shakespeare.txt"
tricky_text = st.text(alphabet=" \t\n\r\xa0\u3000ab1'.,😀é\u0301", max_size=80)


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer.default()


@pytest.fixture(scope="module")
def sample():
    """About 200 kB of Shakespeare with some whitespace runs and non-ASCII thrown in."""
    text = TINY.read_text(encoding="utf-8")[:200_000] if TINY.exists() else "To be, or not to be?\n" * 10_000
    return text.replace("\n\n", "\n \t\n\n  ").replace("e", "é", 500) + " 😀  \n"


@settings(max_examples=300, deadline=None)
@given(tricky_text, st.integers(1, 10))
def test_safe_cuts_keep_every_piece(text, chunk_chars):
    chunks = list(split_at_safe_cuts(text, chunk_chars))
    assert "".join(chunks) == text and all(chunks)
    assert [piece for chunk in chunks for piece in pretokenize(chunk)] == pretokenize(text)


def test_cuts_are_found_in_real_text(sample):
    chunks = list(split_at_safe_cuts(sample, 1000))
    assert len(chunks) > len(sample) // 2000
    assert all(len(chunk) < 2000 for chunk in chunks)


@pytest.mark.parametrize("num_workers", [1, 2])
def test_parallel_equals_serial(gpt2, sample, num_workers):
    ids = gpt2.encode_corpus(sample, num_workers=num_workers, show_progress=False, chunk_chars=5000)
    assert ids.dtype == np.uint16
    assert ids.tolist() == gpt2.encode_ordinary(sample)


def test_documents_are_joined_with_endoftext(gpt2, sample):
    docs = [sample[:70_000], "", f"a {EOT} b", sample[70_000:]]
    ids = gpt2.encode_corpus(docs, num_workers=2, show_progress=False, chunk_chars=5000)
    expected = []
    for n, doc in enumerate(docs):
        expected += ([gpt2.eot_token] if n else []) + gpt2.encode_ordinary(doc)
    assert ids.tolist() == expected

    as_special = gpt2.encode_corpus(docs, num_workers=2, show_progress=False, chunk_chars=5000, allowed_special="all")
    assert as_special.tolist() == gpt2.encode(f"{EOT}".join(docs), allowed_special="all")


def test_small_inputs(gpt2):
    assert gpt2.encode_corpus([], show_progress=False).tolist() == []
    assert gpt2.encode_corpus("", show_progress=False).tolist() == []
    assert gpt2.encode_corpus(["a", "b"], show_progress=False).tolist() == [64, 50256, 65]


def test_byte_tokenizer_concatenates_documents():
    ids = ByteTokenizer().encode_corpus(["ab", "é"], show_progress=False)
    assert ids.dtype == np.uint16 and ids.tolist() == list("abé".encode())


def test_progress_bar_goes_to_stderr(gpt2, capfd):
    gpt2.encode_corpus("hello world", show_progress=True)
    out, err = capfd.readouterr()
    assert out == "" and "encoding with bpe-50257" in err
