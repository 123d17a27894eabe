"""sample.py end to end (subprocesses), plus its streaming UTF-8 decoder in process."""
import contextlib
import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bpe import ByteTokenizer, GPT2Tokenizer
from gpt.config import GPTConfig
from gpt.data.tokenizers import LocalVocab, encode_prompt
from gpt.files.checkpoint import save_checkpoint
from gpt.files.hf import export_hf
from gpt.model import GPT
from minigrad import Backend
from sample import TextStream

ROOT = Path(__file__).resolve().parents[1]

BLOCK = 16


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A byte-level checkpoint as train.py writes it (a random, sharpened model)."""
    out = tmp_path_factory.mktemp("run")
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, vocab_size=256), Backend("cpu"), seed=0)
    model.params *= 8.0
    meta = {"step": 0, "config": model.config.to_dict(), "options": {"tokenizer": "byte"}, "tokenizer": "byte-256"}
    zeros = np.zeros_like(model.params)
    save_checkpoint(str(out / "ckpt.npz"), model.params, zeros, zeros, meta)
    export_hf(model, out / "hf", ByteTokenizer())
    return out


def sample(*args, stdin=None):
    return subprocess.run([sys.executable, "sample.py", *map(str, args)], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)


def assert_usage_error(run, *words):
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
    assert "Traceback" not in run.stderr
    for word in words:
        assert word in run.stderr


def test_prints_prompt_and_continuation_reproducibly(run_dir):
    args = ("--out-dir", run_dir, "--prompt", "Hi", "--max-new-tokens", 20, "--seed", 3, "--top-k", 50, "--top-p", 0.95)
    first, second = sample(*args), sample(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Hi") and first.stdout == second.stdout
    assert sample("--out-dir", run_dir, "--prompt", "Hi", "--max-new-tokens", 20, "--seed", 4).stdout != first.stdout


def test_greedy_is_the_same_with_and_without_kv_cache_and_from_the_hf_export(run_dir):
    runs = [sample("--out-dir", run_dir, "--prompt", "abc", "--max-new-tokens", 40, "--temperature", 0),
            sample("--out-dir", run_dir, "--prompt", "abc", "--max-new-tokens", 40, "--temperature", 0,
                   "--no-kv-cache"),
            sample("--init-from", run_dir / "hf", "--prompt", "abc", "--max-new-tokens", 40, "--temperature", 0),
            sample("--out-dir", run_dir, "--prompt", "abc", "--max-new-tokens", 40, "--temperature", 0,
                   "--kernels", "reference")]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout == runs[3].stdout


def test_num_samples(run_dir):
    run = sample("--out-dir", run_dir, "--prompt", "x", "--max-new-tokens", 5, "--num-samples", 3)
    assert run.returncode == 0 and run.stdout.count("--- sample ") == 3


def test_control_characters_are_escaped_on_a_terminal_and_kept_in_a_pipe(run_dir):
    args = [sys.executable, "sample.py", "--out-dir", run_dir, "--prompt", "a\x1b[2Jb\x07", "--max-new-tokens", 0]
    piped = subprocess.run(list(map(str, args)), cwd=ROOT, capture_output=True, timeout=120)
    assert piped.returncode == 0 and piped.stdout == b"a\x1b[2Jb\x07\n"         # a file gets the exact text
    terminal, child_end = pty.openpty()
    try:
        run = subprocess.run(list(map(str, args)), cwd=ROOT, stdout=child_end, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(child_end)
    assert run.returncode == 0, run.stderr
    shown = b""
    with contextlib.suppress(OSError):                       # EIO once the child's end is closed and drained
        while piece := os.read(terminal, 4096):
            shown += piece
    os.close(terminal)
    assert shown.startswith(b"a\\x1b[2Jb\\x07\r\n") and b"\x1b" not in shown


def test_long_prompt_keeps_its_last_tokens_with_a_note(run_dir):
    run = sample("--out-dir", run_dir, "--prompt", "y" * 40, "--max-new-tokens", 5)
    assert run.returncode == 0, run.stderr
    assert "note: the prompt is 40 tokens" in run.stderr and f"last {BLOCK} tokens" in run.stderr


def test_interactive_loop_exits_on_empty_line_and_on_eof(run_dir):
    run = sample("--out-dir", run_dir, "--interactive", "--max-new-tokens", 5, stdin="first\nsecond\n\nnever\n")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("> ") == 3                       # two prompts answered, the empty line quits
    run = sample("--out-dir", run_dir, "--interactive", "--max-new-tokens", 5, stdin="only")
    assert run.returncode == 0 and run.stdout.count("> ") == 2


@pytest.mark.parametrize("args, words", [
    (("--top-p", 0), ["--top-p", "(0, 1]"]), (("--top-p", 1.5), ["--top-p"]), (("--top-k", 0), ["--top-k", ">= 1"]),
    (("--temperature", -1), ["--temperature", ">= 0"]), (("--max-new-tokens", "many"), ["--max-new-tokens", "number"]),
    (("--device", "tpu"), ["--device"]), (("--kernels", "slow"), ["--kernels"]),
])
def test_bad_flags(run_dir, args, words):
    assert_usage_error(sample("--out-dir", run_dir, *args), *words)


def test_missing_checkpoint(tmp_path):
    assert_usage_error(sample("--out-dir", tmp_path), "no checkpoint in", "train.py")


def test_init_from_a_directory_that_is_not_gpt2(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert_usage_error(sample("--init-from", tmp_path), "model_type", "gpt2")
    assert_usage_error(sample("--init-from", tmp_path / "absent"), "no config.json")


# ----------------------------------------------------------------------------- in process


class FlushCounter(io.StringIO):
    flushes = 0

    def flush(self):
        self.flushes += 1


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), GPT2Tokenizer.default()], ids=["byte", "gpt2"])
def test_text_stream_decodes_multibyte_characters_split_across_tokens(tokenizer):
    text = "naïve café — 日本語 😀🎉 done"
    out = FlushCounter()
    stream = TextStream(tokenizer, out)
    ids = tokenizer.encode(text)
    for token in ids:
        stream.write(token)
    stream.close()
    assert out.getvalue() == text + "\n"
    assert out.flushes >= len(ids)                           # every token is flushed as it arrives
    if isinstance(tokenizer, ByteTokenizer):
        assert len(ids) > len(text)                          # it did split characters over tokens


def test_text_stream_through_a_local_vocabulary():
    base = GPT2Tokenizer.default()
    text = "hello world 😀"
    local = LocalVocab.from_corpus(base, np.array(base.encode(text)))
    out = io.StringIO()
    stream = TextStream(local, out)
    for token in local.encode(text):
        stream.write(token)
    stream.close()
    assert out.getvalue() == text + "\n"


def test_empty_prompt_starts_a_document():
    assert encode_prompt("", GPT2Tokenizer.default(), 16) == [50256]
    assert encode_prompt("", ByteTokenizer(), 16) == [10]
    assert encode_prompt("a<|endoftext|>b", GPT2Tokenizer.default(), 16) == [64, 50256, 65]


def test_stdout_closed_early_ends_quietly(run_dir):
    """`sample.py | head -c 5`: no traceback, and the status a closed pipe gives (141)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "sample.py"), "--out-dir", str(run_dir),
                             "--max-new-tokens", "2000", "--num-samples", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.read(5)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
