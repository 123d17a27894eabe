"""BPE training: the incremental algorithm picks exactly the pairs a brute-force recount
picks, the files it writes load and round-trip, and the CLI reports bad input in one line."""

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st
from tiktoken_ref import ROOT

from bpe import GPT2Tokenizer
from bpe.pretokenize import pretokenize
from bpe.train import count_words, learn_merges, main, train

TINY = ROOT / "data" / "tiny_shakespeare.txt"


@pytest.fixture(scope="module")
def corpus():
    text = (TINY.read_text(encoding="utf-8")[:30_000] if TINY.exists()
            else "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 500)
    return text + "\nNaïve café, 東京 😀 ünïcödé, 3.14159 and 42!\n"


def brute_force_merges(text: str, num_merges: int) -> list[tuple[bytes, bytes]]:
    """Recount every pair from scratch before each merge; ties go to the smallest bytes."""
    counts = Counter(piece.encode() for piece in pretokenize(text))
    words = {word: [bytes([b]) for b in word] for word in counts}
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for word, parts in words.items():
            for pair in zip(parts, parts[1:]):
                pairs[pair] += counts[word]
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for word, parts in words.items():
            merged, i = [], 0
            while i < len(parts):
                if parts[i : i + 2] == list(best):
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            words[word] = merged
    return merges


def test_merges_match_brute_force(corpus):
    learned = learn_merges(count_words([corpus]), 80, show_progress=False)
    assert learned == brute_force_merges(corpus, 80)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="ab c\n'1é", max_size=60), st.integers(1, 20))
def test_merges_match_brute_force_on_small_texts(text, num_merges):
    """Small alphabets make many ties, repeats like "aaaa" and words that run out of pairs."""
    assert learn_merges(count_words([text]), num_merges, show_progress=False) == brute_force_merges(text, num_merges)


def test_ties_go_to_the_smallest_bytes():
    # pieces "ba" and " ab": the pairs (b,a), ( ,a), (a,b) all occur once; b" " sorts first.
    # Then (b,a) and ( a,b) occur once each, and b" a" < b"b".
    assert learn_merges(count_words(["ba ab"]), 3, show_progress=False) == [(b" ", b"a"), (b" a", b"b"), (b"b", b"a")]


def test_trained_tokenizer_round_trips(corpus, tmp_path):
    tok = train([corpus], 400, tmp_path, show_progress=False)
    assert isinstance(tok, GPT2Tokenizer)
    assert tok.vocab_size == 400 and tok.eot_token == 399
    for text in (corpus, "unseen words: xylophone 🦜 \t\n  ", "<|endoftext|> as text"):
        assert tok.decode(tok.encode_ordinary(text)) == text
    assert len(tok.encode_ordinary(corpus)) < 0.6 * len(corpus.encode())  # it learned something
    again = train([corpus], 400, tmp_path / "again", show_progress=False)
    assert again.identity == tok.identity
    assert (tmp_path / "merges.txt").read_bytes() == (tmp_path / "again" / "merges.txt").read_bytes()


def test_small_corpus_runs_out_of_pairs(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abab", encoding="utf-8")
    main(["--input", str(corpus), "--vocab-size", "1000", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert "ran out of pairs" in err and "259 ids" in err  # "ab", "abab"


def test_directory_of_documents(tmp_path, capsys):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "one.txt").write_text("hello hello", encoding="utf-8")
    (tmp_path / "docs" / "sub" / "two.txt").write_text("yellow<|endoftext|>fellow", encoding="utf-8")
    (tmp_path / "docs" / ".hidden").write_bytes(b"\xff\xfe never read")
    main(["--input", str(tmp_path / "docs"), "--vocab-size", "262", "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert captured.err == "" and "262 ids" in captured.out
    tok = GPT2Tokenizer.from_files(tmp_path / "out" / "vocab.json", tmp_path / "out" / "merges.txt")
    assert tok.encode("<|endoftext|>", allowed_special="all") == [261]


def test_invalid_utf8_is_replaced_with_a_warning(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"good text \xff\xfe and more good text")
    main(["--input", str(corpus), "--vocab-size", "260", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("warning:") and str(corpus) in err and "offset 10" in err


def cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_cli_errors(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    out = ["--out", str(tmp_path / "out")]
    assert "at least 257" in cli_error(["--input", str(corpus), "--vocab-size", "255", *out], capsys)
    assert "at least 257" in cli_error(["--input", str(corpus), "--vocab-size", "256", *out], capsys)
    assert "invalid int value" in cli_error(["--input", str(corpus), "--vocab-size", "many", *out], capsys)
    assert "required" in cli_error(["--input", str(corpus)], capsys)
    assert "does not exist" in cli_error(["--input", str(tmp_path / "nope.txt"), "--vocab-size", "300", *out], capsys)
    assert "holds no files" in cli_error(["--input", str(tmp_path / "empty"), "--vocab-size", "300", *out], capsys)
    assert "is empty" in cli_error(["--input", str(tmp_path / "empty.txt"), "--vocab-size", "300", *out], capsys)
    assert "cannot write" in cli_error(["--input", str(corpus), "--vocab-size", "300", "--out", str(corpus)], capsys)


def test_cli_runs_as_a_module(tmp_path):
    """The real entry point: a one-line error with exit code 2 and no traceback."""
    run = subprocess.run([sys.executable, "-m", "bpe.train", "--input", str(tmp_path / "nope"), "--vocab-size", "300",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("error: --input") and "Traceback" not in run.stderr
