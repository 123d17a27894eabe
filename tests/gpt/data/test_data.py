"""Corpora and batches: byte and BPE token streams, the tokenized cache, local vocabulary,
splits and the batch sampler."""
import copy
import json
import os

import numpy as np
import pytest

import train
from bpe import GPT2Tokenizer
from gpt.data.batches import BatchSampler, split_tokens
from gpt.data.corpus import DataError, load_byte_corpus
from gpt.data.token_cache import load_bpe_corpus
from gpt.data.tokenizers import LocalVocab, tokenizer_from_meta
from gpt.files.checkpoint import load_checkpoint

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer.default()


def test_byte_corpus_is_the_file_itself(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("héllo".encode())
    tokens = load_byte_corpus(str(path))
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint8
    assert tokens.tolist() == list("héllo".encode())


def test_bpe_corpus_matches_the_tokenizer_and_is_cached(tmp_path, gpt2, capsys):
    src = tmp_path / "corpus.txt"
    src.write_text(TEXT)
    cache = tmp_path / "cache"
    tokens = load_bpe_corpus(str(src), gpt2, str(cache))
    assert tokens.dtype == np.uint16 and tokens.tolist() == gpt2.encode_ordinary(TEXT)
    meta = json.loads(next(cache.glob("*.json")).read_text())
    assert meta["tokenizer"] == gpt2.identity and meta["tokens"] == len(tokens)
    capsys.readouterr()
    load_bpe_corpus(str(src), gpt2, str(cache))
    assert "using the tokenized cache" in capsys.readouterr().out
    src.write_text(TEXT + "Enough.\n")                       # the source changed: rebuild
    os.utime(src, ns=(1, 1))
    tokens = load_bpe_corpus(str(src), gpt2, str(cache))
    assert "tokenized 1 file" in capsys.readouterr().out
    assert tokens.tolist() == gpt2.encode_ordinary(TEXT + "Enough.\n")


def test_cache_is_rebuilt_for_another_tokenizer(tmp_path, gpt2, capsys):
    src = tmp_path / "corpus.txt"
    src.write_text(TEXT)
    load_bpe_corpus(str(src), gpt2, str(tmp_path / "cache"))
    other = copy.copy(gpt2)
    other.identity = gpt2.identity + "-changed"             # same name, other vocabulary files
    capsys.readouterr()
    load_bpe_corpus(str(src), other, str(tmp_path / "cache"))
    assert "tokenized 1 file" in capsys.readouterr().out


def test_directory_documents_are_joined_with_endoftext(tmp_path, gpt2):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "1.txt").write_text("Hello world")
    (tmp_path / "d" / "2.txt").write_text("Goodbye")
    tokens = load_bpe_corpus(str(tmp_path / "d"), gpt2, str(tmp_path / "cache")).tolist()
    assert tokens == gpt2.encode_ordinary("Hello world") + [gpt2.eot_token] + gpt2.encode_ordinary("Goodbye")


def test_invalid_utf8_is_replaced_with_a_warning(tmp_path, gpt2, capsys):
    src = tmp_path / "bad.txt"
    src.write_bytes(b"good text \xff\xfe more")
    tokens = load_bpe_corpus(str(src), gpt2, str(tmp_path / "cache"))
    assert "offset 10" in capsys.readouterr().err
    assert gpt2.decode(tokens.tolist()) == "good text \ufffd\ufffd more"


def test_local_vocab_round_trips(gpt2):
    ids = gpt2.encode_ordinary(TEXT)
    local = LocalVocab.from_corpus(gpt2, ids)
    assert local.vocab_size == len(set(ids)) + 1              # + <|endoftext|>
    local_ids = local.to_local(ids)
    assert local_ids.max() < local.vocab_size
    assert local.decode(local_ids.tolist()) == TEXT
    assert local.decode([local.eot_token]) == "<|endoftext|>"
    assert local.encode("Speak, zebra") == local.to_local(gpt2.encode("Speak,")).tolist()   # unknown skipped
    assert local.last_skipped == len(gpt2.encode(" zebra")) == 2


def test_split_and_window_errors():
    tokens = np.arange(100)
    train_part, val = split_tokens(tokens, 0.2, 10)
    assert len(train_part) == 80 and val.tolist() == list(range(80, 100))
    with pytest.raises(DataError, match="block-size"):
        split_tokens(tokens, 0.1, 100)
    with pytest.raises(DataError, match="val-fraction"):
        split_tokens(tokens, 0.05, 10)


def test_batches_are_shifted_windows_and_deterministic():
    tokens = np.arange(1000)
    sampler = BatchSampler(tokens, batch_size=4, block_size=8, seed=3)
    x, y = sampler.get(step=5, micro=1)
    assert x.shape == y.shape == (4, 8) and x.dtype == np.int64
    assert np.array_equal(y, x + 1)                          # targets are the next tokens
    assert np.array_equal(sampler.get(5, 1)[0], x)           # same (seed, step, micro): same batch
    assert not np.array_equal(sampler.get(6, 1)[0], x)


def test_sequential_batches_walk_the_corpus_in_order():
    tokens = np.arange(100)
    sampler = BatchSampler(tokens, batch_size=2, block_size=10, sampling="sequential")
    starts = [sampler.get(step)[0][:, 0].tolist() for step in range(6)]
    assert starts == [[0, 10], [20, 30], [40, 50], [60, 70], [80, 0], [10, 20]]   # 9 windows, then wrap


FAST = ["--preset", "tiny", "--n-embd", "32", "--n-head", "2", "--block-size", "16", "--batch-size", "4",
        "--sample-tokens", "5", "--eval-steps", "1", "--max-steps", "2"]


def test_training_with_gpt2_full_vocabulary(tmp_path, capsys):
    (tmp_path / "c.txt").write_text(TEXT)
    out = tmp_path / "run"
    assert train.main(FAST + ["--tokenizer", "gpt2", "--data", str(tmp_path / "c.txt"), "--out-dir", str(out)]) == 0
    meta = load_checkpoint(str(out / "ckpt.npz")).meta
    assert meta["config"]["vocab_size"] == 50257 and meta["local_vocab"] is None
    assert "vocab_size=50257" in capsys.readouterr().out


def test_training_with_local_vocab_saves_the_mapping(tmp_path, gpt2):
    (tmp_path / "c.txt").write_text(TEXT)
    out = tmp_path / "run"
    assert train.main(FAST + ["--tokenizer", "gpt2", "--local-vocab", "--data", str(tmp_path / "c.txt"),
                              "--out-dir", str(out)]) == 0
    meta = load_checkpoint(str(out / "ckpt.npz")).meta
    mapping = meta["local_vocab"]
    assert meta["config"]["vocab_size"] == len(mapping) == len(set(gpt2.encode_ordinary(TEXT))) + 1
    tokenizer = tokenizer_from_meta(meta)
    assert tokenizer.identity == meta["tokenizer"]
    assert tokenizer.decode(tokenizer.encode("Speak, speak.")) == "Speak, speak."


def test_show_window_prints_ids_and_text_then_exits(tmp_path, capsys, gpt2):
    (tmp_path / "c.txt").write_text(TEXT)
    out = tmp_path / "run"
    assert train.main(["--tokenizer", "gpt2", "--data", str(tmp_path / "c.txt"), "--block-size", "16",
                       "--show-window", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    ids = json.loads(printed.split("ids: ")[1].splitlines()[0])
    assert len(ids) == 16 and gpt2.decode(ids) in printed
    assert not (out / "ckpt.npz").exists()


@pytest.mark.parametrize("flags,word", [
    (["--bpe-vocab", "nope.json", "--bpe-merges", "nope.txt"], "nope"),
    (["--bpe-vocab", "x.json"], "together"),
    (["--local-vocab"], "--local-vocab"),
    (["--tokenizer", "byte", "--bpe-vocab", "a", "--bpe-merges", "b"], "--tokenizer gpt2"),
])
def test_bad_tokenizer_options(tmp_path, capsys, flags, word):
    assert train.main(flags + ["--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and word in err and len(err.splitlines()) == 1
