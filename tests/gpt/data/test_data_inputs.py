"""Untrusted data inputs: what --data may be (FIFOs, sockets, devices, links, URLs, binary
files), escaping control characters for the terminal, and the tokenized cache verifying
itself (checksum, id range, malformed metadata, failed writes)."""
import errno
import hashlib
import io
import json
import os
import signal
import socket

import numpy as np
import pytest
from hypothesis import given, strategies as st

from bpe import ByteTokenizer, GPT2Tokenizer
from gpt.data.corpus import DataError, list_documents, load_byte_corpus, looks_binary
from gpt.data.token_cache import load_bpe_corpus
from gpt.errors import UserError
from gpt.run.terminal import TerminalWriter, printable
from sample import TextStream

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer.default()


@pytest.fixture
def no_hang():
    """Fail, instead of hanging the suite, if a test blocks (opening a FIFO blocks)."""
    def blocked(signum, frame):
        raise TimeoutError("blocked for 20 s: was a FIFO opened?")
    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------- what --data may be


@pytest.fixture
def unix_socket(tmp_path):
    def make(path):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        made.append(s)
        return path
    made = []
    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("loader", [load_byte_corpus, lambda p: load_bpe_corpus(p, ByteTokenizer(), "unused")],
                         ids=["byte", "bpe"])
@pytest.mark.usefixtures("no_hang")
def test_a_fifo_as_data_is_refused_without_opening_it(tmp_path, loader):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(DataError) as e:
        loader(str(tmp_path / "pipe"))
    assert "is a FIFO (named pipe), not a file" in one_line(e)


@pytest.mark.usefixtures("no_hang")
def test_sockets_and_devices_are_refused_by_name(tmp_path, unix_socket):
    with pytest.raises(DataError) as e:
        list_documents(str(unix_socket(tmp_path / "s")))
    assert "is a socket, not a file" in one_line(e)
    with pytest.raises(DataError) as e:
        list_documents("/dev/null")
    assert "/dev/null is a character device, not a file" in one_line(e)


@pytest.mark.usefixtures("no_hang")
def test_a_directory_skips_what_is_not_a_regular_file_with_warnings(tmp_path, unix_socket, capsys):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "sub" / "b.md").write_text("b")
    os.mkfifo(d / "pipe.txt")
    unix_socket(d / "sock.txt")
    os.symlink(d / "a.txt", d / "link.txt")                   # a link to a file: followed
    os.symlink(d / "absent.txt", d / "dangling.txt")
    os.symlink(d / "loop2.txt", d / "loop1.txt")
    os.symlink(d / "loop1.txt", d / "loop2.txt")
    os.symlink(d / "sub", d / "linked_dir")                   # a link to a directory: not followed
    os.mkfifo(d / "pipe.bin")                                 # not a text file name: ignored quietly
    docs = list_documents(str(d))
    assert docs == [str(d / n) for n in ("a.txt", "link.txt", "sub/b.md")]
    warnings = capsys.readouterr().err.splitlines()
    expected = {"pipe.txt": "a FIFO (named pipe)", "sock.txt": "a socket", "dangling.txt": "dangling symbolic link",
                "loop1.txt": "symbolic link loop", "loop2.txt": "symbolic link loop",
                "linked_dir": "links to directories are not followed"}
    assert len(warnings) == len(expected)
    for name, words in expected.items():
        line = next(w for w in warnings if f"{d / name}:" in w)
        assert line.startswith("warning: skipped ") and words in line
    assert load_byte_corpus(str(d)).tobytes() == b"a\n\na\n\nb"


@pytest.mark.parametrize("url", ["https://example.com/corpus.txt", "http://x/y", "ftp://host/c.txt",
                                 "s3://bucket/corpus.txt", "gs://bucket/c"])
def test_a_url_is_not_read(url):
    with pytest.raises(DataError) as e:
        list_documents(url)
    message = one_line(e)
    assert "URLs are not read" in message and "curl -o" in message


def test_dangling_link_and_missing_path(tmp_path):
    os.symlink(tmp_path / "absent.txt", tmp_path / "link.txt")
    with pytest.raises(DataError, match="dangling symbolic link"):
        list_documents(str(tmp_path / "link.txt"))
    with pytest.raises(DataError, match="no such file or directory"):
        list_documents(str(tmp_path / "absent.txt"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_is_one_line(tmp_path, gpt2):
    path = tmp_path / "secret.txt"
    path.write_text(TEXT)
    path.chmod(0)
    for load in (load_byte_corpus, lambda p: load_bpe_corpus(p, gpt2, str(tmp_path / "cache"))):
        with pytest.raises(DataError) as e:
            load(str(path))
        assert "Permission denied" in one_line(e) and "secret.txt" in str(e.value)


# ---------------------------------------------------------------------------- binary files


def test_looks_binary():
    rng = np.random.default_rng(0)
    assert looks_binary(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert looks_binary(b"text\0text")
    assert looks_binary(bytes(range(1, 32)) * 10, utf8=False)      # control bytes
    assert not looks_binary(TEXT.encode()) and not looks_binary(b"")
    assert not looks_binary("naïve café — 日本語 😀\r\n\f\t".encode() * 100)
    latin1 = "Où est la bibliothèque ? Près de la gare.\n".encode("latin-1") * 100
    assert not looks_binary(latin1)
    greek = "Καλημέρα κόσμε\n".encode("iso8859-7") * 100      # not UTF-8: binary to BPE, not to bytes
    assert looks_binary(greek) and not looks_binary(greek, utf8=False)


def test_a_binary_file_is_trained_on_after_a_warning(tmp_path, gpt2, capsys):
    path = tmp_path / "model.bin"
    data = bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8))
    path.write_bytes(data)
    assert load_byte_corpus(str(path)).tobytes() == data
    warning = capsys.readouterr().err
    assert warning.startswith(f"warning: {path} looks like a binary file") and warning.count("\n") == 1
    assert len(load_bpe_corpus(str(path), gpt2, str(tmp_path / "cache"))) > 0
    assert f"warning: {path} looks like a binary file" in capsys.readouterr().err
    (tmp_path / "c.txt").write_text(TEXT)
    load_byte_corpus(str(tmp_path / "c.txt"))
    load_bpe_corpus(str(tmp_path / "c.txt"), gpt2, str(tmp_path / "cache"))
    assert "warning" not in capsys.readouterr().err


# ---------------------------------------------------------------------------- the terminal


def test_printable_escapes_control_characters_and_keeps_text():
    assert printable("red \x1b[31mRED\x1b[0m\a") == "red \\x1b[31mRED\\x1b[0m\\x07"
    assert printable("over\rwrite \x7f \x9b2J \x00") == "over\\x0dwrite \\x7f \\x9b2J \\x00"
    text = "lines\n\ttabs, naïve 日本語 😀 \\x1b"
    assert printable(text) == text


@given(st.text())
def test_printable_output_holds_no_control_character_but_newline_and_tab(text):
    shown = printable(text)
    assert not any(ord(c) < 32 and c not in "\n\t" or 0x7f <= ord(c) <= 0x9f for c in shown)
    assert shown.count("\n") == text.count("\n")


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), GPT2Tokenizer.default()], ids=["byte", "gpt2"])
def test_a_stream_to_a_terminal_is_escaped_piece_by_piece(tokenizer):
    text = "clear\x1b[2J screen\n\x07 é 😀"
    out = io.StringIO()
    stream = TextStream(tokenizer, TerminalWriter(out))
    for token in tokenizer.encode(text):
        stream.write(token)
    stream.close()
    assert out.getvalue() == printable(text) + "\n" == "clear\\x1b[2J screen\n\\x07 é 😀\n"


# ---------------------------------------------------------------------------- the tokenized cache


def cached_corpus(tmp_path, tokenizer):
    """A corpus tokenized into its cache -> (load(), the .bin path, the .json path)."""
    src = tmp_path / "corpus.txt"
    src.write_text(TEXT)
    cache = tmp_path / "cache"

    def load():
        return load_bpe_corpus(str(src), tokenizer, str(cache))
    load()
    return load, next(cache.glob("*.bin")), next(cache.glob("*.json"))


def assert_rebuilt(load, gpt2, capsys, *words):
    capsys.readouterr()
    tokens = load()
    printed = capsys.readouterr()
    warnings = [line for line in printed.err.splitlines() if "warning" in line]      # and the progress bar
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), printed.err
    assert all(w in warnings[0] for w in words), warnings[0]
    assert "tokenized 1 file" in printed.out
    assert tokens.tolist() == gpt2.encode_ordinary(TEXT)
    capsys.readouterr()
    load()
    assert "using the tokenized cache" in capsys.readouterr().out


def test_a_valid_cache_is_used_quietly(tmp_path, gpt2, capsys):
    load, _, meta_path = cached_corpus(tmp_path, gpt2)
    assert json.loads(meta_path.read_text())["format"] == 2
    capsys.readouterr()
    assert load().tolist() == gpt2.encode_ordinary(TEXT)
    out = capsys.readouterr()
    assert "using the tokenized cache" in out.out and out.err == ""


def test_a_cache_corrupted_in_place_is_rebuilt(tmp_path, gpt2, capsys):
    load, bin_path, _ = cached_corpus(tmp_path, gpt2)
    data = bytearray(bin_path.read_bytes())
    data[len(data) // 2] ^= 0x01                              # same size, one bit off
    bin_path.write_bytes(bytes(data))
    assert_rebuilt(load, gpt2, capsys, "checksum does not match", str(bin_path))


def test_a_cache_with_ids_outside_the_vocabulary_is_rebuilt(tmp_path, gpt2, capsys):
    load, bin_path, meta_path = cached_corpus(tmp_path, gpt2)
    tokens = np.fromfile(bin_path, np.uint16)
    tokens[3] = 60000                                         # GPT-2 has 50,257 ids
    tokens.tofile(bin_path)
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = hashlib.sha256(tokens).hexdigest()     # a checksum that agrees
    meta_path.write_text(json.dumps(meta))
    assert_rebuilt(load, gpt2, capsys, "token id 60000", "50,257")


def test_a_truncated_cache_is_rebuilt(tmp_path, gpt2, capsys):
    load, bin_path, _ = cached_corpus(tmp_path, gpt2)
    bin_path.write_bytes(bin_path.read_bytes()[:-2])
    assert_rebuilt(load, gpt2, capsys, "bytes where")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "[" * 100_000, "\xff"])
def test_malformed_cache_metadata_is_rebuilt(tmp_path, gpt2, capsys, text):
    load, _, meta_path = cached_corpus(tmp_path, gpt2)
    meta_path.write_bytes(text.encode("latin-1"))
    assert_rebuilt(load, gpt2, capsys, "malformed")


@pytest.mark.parametrize("field,value", [("tokens", "12"), ("tokens", -1), ("tokens", True), ("sha256", None)])
def test_cache_metadata_with_bad_values_is_rebuilt(tmp_path, gpt2, capsys, field, value):
    load, _, meta_path = cached_corpus(tmp_path, gpt2)
    meta = json.loads(meta_path.read_text())
    meta[field] = value
    meta_path.write_text(json.dumps(meta))
    assert_rebuilt(load, gpt2, capsys, "malformed")


def test_a_failed_cache_write_is_one_line_and_leaves_no_file(tmp_path, gpt2, monkeypatch):
    src = tmp_path / "corpus.txt"
    src.write_text(TEXT)
    cache = tmp_path / "cache"

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(UserError) as e:
        load_bpe_corpus(str(src), gpt2, str(cache))
    assert "No space left on device" in one_line(e) and str(cache) in str(e.value)
    assert os.listdir(cache) == []                            # no temporary, no half cache
    monkeypatch.undo()
    assert load_bpe_corpus(str(src), gpt2, str(cache)).tolist() == gpt2.encode_ordinary(TEXT)


def test_a_cache_directory_that_cannot_be_made_is_one_line(tmp_path, gpt2):
    (tmp_path / "corpus.txt").write_text(TEXT)
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    with pytest.raises(UserError) as e:
        load_bpe_corpus(str(tmp_path / "corpus.txt"), gpt2, str(tmp_path / "cache"))
    assert "cannot write the tokenized cache" in one_line(e)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only directories")
def test_a_read_only_cache_directory_is_one_line(tmp_path, gpt2):
    (tmp_path / "corpus.txt").write_text(TEXT)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache").chmod(0o500)
    try:
        with pytest.raises(UserError) as e:
            load_bpe_corpus(str(tmp_path / "corpus.txt"), gpt2, str(tmp_path / "cache"))
        assert "Permission denied" in one_line(e)
        assert os.listdir(tmp_path / "cache") == []
    finally:
        (tmp_path / "cache").chmod(0o700)
